"""Micro-benchmark of the heuristic filter rules and stages on synthetic English-like prose.

    python benchmarks/bench_filters.py [--docs 20000] [--batch 1000] [--words 400]

Prints docs/s for each rule on its own (fresh features, so it pays for every intermediate it
needs), for each preset stage, for the full Gopher+C4 stage (shared features), and for the
modifiers. Single process, one core; rates are documents per CPU-second of this process
(``time.process_time``), so a busy shared machine distorts them less than wall time would. The corpus is generated (Zipf-distributed vocabulary with
the English stop words, sentences, paragraphs) plus ~10% junk documents (repetitive, symbol-
heavy, short, boilerplate) so that rules take both branches.
"""

from __future__ import annotations

import argparse
import random
import time

import pyarrow as pa

from curator_stages.tasks import DocumentBatch
from curator_stages.text.filters import (
    HeuristicFilter,
    TextFeatures,
    c4_quality,
    default_quality,
    default_quality_rules,
    gopher_quality,
    gopher_repetition,
)
from curator_stages.text.modifiers import (
    C4BoilerplateLineRemover,
    TextNormalizer,
    UnicodeRepair,
    UrlRemover,
    WhitespaceNormalizer,
)

_STOP = ["the", "of", "and", "to", "a", "in", "that", "is", "with", "for", "as", "be", "have",
         "on", "it", "was", "by", "this", "are", "from"]
_SYLLABLES = ["ka", "ter", "lo", "mi", "an", "sel", "dor", "ve", "ri", "ton", "ba", "gre", "us",
              "per", "in", "cal", "mo", "st", "ne", "ix"]


def make_vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return _STOP + sorted(words)


def prose(rng: random.Random, vocab: list[str], n_words: int) -> str:
    """Zipf-like English-ish prose: sentences of 6-25 words, paragraphs of 3-7 sentences."""
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=n_words)
    out, sentence, paragraph = [], [], []
    target = rng.randint(6, 25)
    for w in words:
        sentence.append(w)
        if len(sentence) >= target:
            s = " ".join(sentence)
            paragraph.append(s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!"]))
            sentence, target = [], rng.randint(6, 25)
            if len(paragraph) >= rng.randint(3, 7):
                out.append(" ".join(paragraph))
                paragraph = []
    if sentence:
        paragraph.append(" ".join(sentence) + ".")
    if paragraph:
        out.append(" ".join(paragraph))
    return "\n\n".join(out)


def junk(rng: random.Random, vocab: list[str]) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # repetitive
        line = prose(rng, vocab, 12)
        return "\n".join([line] * rng.randint(5, 30))
    if kind == 1:  # hashtags and ellipses
        return " ".join(f"#{rng.choice(vocab)}..." for _ in range(rng.randint(60, 200)))
    if kind == 2:  # too short
        return prose(rng, vocab, rng.randint(3, 40))
    if kind == 3:  # boilerplate lines with URLs
        return "\n".join(f"- https://example.com/{rng.choice(vocab)}/{i} Home | Privacy Policy"
                         for i in range(rng.randint(10, 50)))
    return "{ lorem ipsum } " + prose(rng, vocab, 200)


def make_corpus(n_docs: int, mean_words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = make_vocabulary(rng)
    docs = []
    for _ in range(n_docs):
        if rng.random() < 0.1:
            docs.append(junk(rng, vocab))
        else:
            docs.append(prose(rng, vocab, max(10, int(rng.expovariate(1 / mean_words)))))
    return docs


def _time_batches(fn, batches) -> float:
    start = time.process_time()
    for b in batches:
        fn(b)
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1000, help="documents per DocumentBatch")
    ap.add_argument("--words", type=int, default=400, help="mean words per good document")
    args = ap.parse_args()

    t0 = time.perf_counter()
    docs = make_corpus(args.docs, args.words)
    print(f"corpus: {len(docs)} docs, {sum(map(len, docs)) / 1e6:.1f} M chars, "
          f"generated in {time.perf_counter() - t0:.1f}s; batch={args.batch}")
    arrays = [pa.array(docs[i : i + args.batch], type=pa.string())
              for i in range(0, len(docs), args.batch)]
    n = len(docs)

    print("\nper rule (fresh features: each rule pays for its own intermediates)")
    for rule in default_quality_rules():
        dt = _time_batches(lambda a: rule.score(TextFeatures(a)), arrays)
        print(f"  {rule.name:32s} {n / dt:>12,.0f} docs/s")

    def tasks():
        return [DocumentBatch(task_id=f"b{i}", dataset_name="bench", data=pa.table({"text": a}))
                for i, a in enumerate(arrays)]

    print("\nstages (HeuristicFilter.run on DocumentBatch, mode=filter)")
    stages: list[tuple[str, HeuristicFilter]] = [
        ("gopher_quality", gopher_quality()),
        ("gopher_repetition", gopher_repetition()),
        ("c4_quality", c4_quality()),
        ("default_quality (Gopher+C4, all 25 rules)", default_quality()),
    ]
    for label, stage in stages:
        batch = tasks()
        start = time.process_time()
        out = stage.run(batch)
        dt = time.process_time() - start
        kept = sum(t.num_items for t in out)
        print(f"  {label:42s} {n / dt:>10,.0f} docs/s  kept {kept}/{n}")

    print("\nmodifiers")
    for stage in [WhitespaceNormalizer(), UrlRemover(), UnicodeRepair(),
                  C4BoilerplateLineRemover(), TextNormalizer()]:
        batch = tasks()
        start = time.process_time()
        stage.run(batch)
        dt = time.process_time() - start
        print(f"  {stage.stage_name:32s} {n / dt:>12,.0f} docs/s")


if __name__ == "__main__":
    main()
