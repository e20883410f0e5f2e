"""Ground-truth corpus for dedup tests: planted exact and near duplicates at known edit rates.

Documents are pseudo-English prose over a fixed random vocabulary, so unrelated documents share
common words but few long character runs. Near duplicates substitute a known fraction of words.
Ids look like reader ids ("shard-<k>.jsonl:<line>") and copies land in other shards, so
duplicates cross file and batch boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curator_stages.tasks import DocumentBatch

_SYLLABLES = ["ka", "to", "ri", "mun", "el", "sa", "po", "ven", "tir", "lo", "an", "qui", "dre",
              "bo", "ser", "ne", "ta", "mi", "gor", "lu", "phi", "ar", "sto", "ve", "nal", "du"]


def vocabulary(size: int = 4000, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES, rng.integers(1, 4))))
    return sorted(words)


@dataclass
class DedupCorpus:
    docs: dict[str, str] = field(default_factory=dict)              # id -> text
    family: dict[str, int] = field(default_factory=dict)            # id -> family (original's index)
    exact_groups: list[list[str]] = field(default_factory=list)     # planted exact-copy groups
    near_pairs: list[tuple[str, str, float]] = field(default_factory=list)  # (orig, copy, rate)
    far_pairs: list[tuple[str, str, float]] = field(default_factory=list)   # hard negatives

    def tasks(self, docs_per_task: int, order_seed: int | None = None) -> list[DocumentBatch]:
        ids = sorted(self.docs)
        if order_seed is not None:
            ids = list(np.random.default_rng(order_seed).permutation(ids))
        out = []
        for k in range(0, len(ids), docs_per_task):
            chunk = ids[k:k + docs_per_task]
            out.append(DocumentBatch(f"t{k}", "dedup_test",
                                     {"id": chunk, "text": [self.docs[i] for i in chunk]}))
        return out


def make_corpus(n_originals: int = 400, n_unrelated: int = 400, words_per_doc: int = 150,
                exact_copies: int = 60, near_rates: tuple[float, ...] = (0.01, 0.03, 0.05),
                near_per_rate: int = 60, far_rates: tuple[float, ...] = (0.10, 0.20),
                far_per_rate: int = 40, shards: int = 5, seed: int = 0) -> DedupCorpus:
    """Originals, unrelated documents, exact copies, near copies (``near_rates`` of words
    substituted) and far copies (``far_rates``: related but below a 0.8 Jaccard, the hard
    negatives that precision is measured on)."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    zipf = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    zipf /= zipf.sum()
    corpus = DedupCorpus()
    line = [0] * shards

    def new_id(shard: int) -> str:
        line[shard] += 1
        return f"shard-{shard}.jsonl:{line[shard]:06d}"

    def sentence_text(n_words: int) -> str:
        words = list(rng.choice(vocab, n_words, p=zipf))
        out, i = [], 0
        while i < len(words):
            k = int(rng.integers(8, 18))
            sent = words[i:i + k]
            out.append(sent[0].capitalize() + " " + " ".join(sent[1:]) + ".")
            i += k
        return " ".join(out)

    originals = []
    for f in range(n_originals + n_unrelated):
        doc_id = new_id(int(rng.integers(shards)))
        corpus.docs[doc_id] = sentence_text(words_per_doc + int(rng.integers(-30, 30)))
        corpus.family[doc_id] = f
        if f < n_originals:
            originals.append(doc_id)
    # Exact copies (sometimes with layout-only changes) into other shards.
    for j in range(exact_copies):
        src = originals[j]
        text = corpus.docs[src]
        if j % 3 == 1:
            text = "  " + text.replace(". ", ".\n\n", 2) + " \n"
        copy_id = new_id(int(rng.integers(shards)))
        corpus.docs[copy_id] = text
        corpus.family[copy_id] = corpus.family[src]
        corpus.exact_groups.append([src, copy_id])
    # Near copies: substitute a known fraction of words.
    k = exact_copies
    for rate, per_rate in [(r, near_per_rate) for r in near_rates] + [(r, far_per_rate) for r in far_rates]:
        for _ in range(per_rate):
            src = originals[k % len(originals)]
            k += 1
            words = corpus.docs[src].split(" ")
            n_sub = max(1, int(round(rate * len(words))))
            for pos in rng.choice(len(words), n_sub, replace=False):
                words[pos] = str(rng.choice(vocab))
            copy_id = new_id(int(rng.integers(shards)))
            corpus.docs[copy_id] = " ".join(words)
            corpus.family[copy_id] = corpus.family[src]
            (corpus.near_pairs if rate in near_rates else corpus.far_pairs).append((src, copy_id, rate))
    return corpus


def char_shingles(text: str, n: int = 5) -> set[str]:
    """Reference shingles (pure Python), independent of the implementation under test."""
    t = " ".join(text.lower().split())
    return {t[i:i + n] for i in range(len(t) - n + 1)} if len(t) >= n else ({t} if t else set())


def jaccard(x: set[str], y: set[str]) -> float:
    return len(x & y) / len(x | y) if (x or y) else 1.0


def _bench(num_docs: int) -> None:
    """Docs/s of language id, exact dedup fit and fuzzy dedup fit on this machine.

    Run: ``python -m tests.dedup_corpus 30000`` (starts a local Ray with the machine's CPUs).
    """
    import time

    import ray

    from curator_stages.backends.ray_data import apply_stages
    from curator_stages.text.dedup import ExactDuplicateRemover, FuzzyDuplicateRemover
    from curator_stages.text.language import LanguageIdentifier

    per = max(num_docs // 10, 1)
    corpus = make_corpus(n_originals=num_docs // 3, n_unrelated=num_docs - num_docs // 3 - per * 3 // 2,
                         exact_copies=per // 2, near_per_rate=per // 3)
    tasks = corpus.tasks(docs_per_task=1000)
    n = len(corpus.docs)
    chars = sum(len(t) for t in corpus.docs.values()) / n
    print(f"{n} docs, {len(tasks)} tasks, {chars:.0f} chars/doc")
    lang = LanguageIdentifier(mode="annotate")
    lang.setup()
    t0 = time.perf_counter()
    lang.run(tasks)
    print(f"langid, one process:          {n / (time.perf_counter() - t0):10.0f} docs/s")
    ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(tasks).materialize()
    ray.data.from_items(tasks[:2]).map_batches(lambda b: b).take_all()  # warm the workers
    t0 = time.perf_counter()
    apply_stages(ds, [LanguageIdentifier(mode="annotate")]).materialize()
    print(f"langid, Ray Data actor pool:  {n / (time.perf_counter() - t0):10.0f} docs/s")
    for stage in (ExactDuplicateRemover(), FuzzyDuplicateRemover()):
        t0 = time.perf_counter()
        filt = stage.fit(ds)
        dt = time.perf_counter() - t0
        print(f"{stage.stage_name} fit: {n / dt:10.0f} docs/s ({dt:.1f}s, removes {filt.remove.size})")
    ray.shutdown()


if __name__ == "__main__":
    import sys

    _bench(int(sys.argv[1]) if len(sys.argv) > 1 else 30000)
