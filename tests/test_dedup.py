"""Exact and fuzzy dedup against a corpus with planted duplicates (tests/dedup_corpus.py)."""

from __future__ import annotations

import itertools
import sys
import time
from collections import defaultdict

import numpy as np
import pytest
import ray.cloudpickle

from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup import (
    DuplicateIdFilter,
    ExactDuplicateRemover,
    FuzzyDuplicateRemover,
    IdSet,
    normalize_for_exact,
    optimal_bands,
)
from curator_stages.text.dedup.minhash import (
    minhash_signatures,
    normalize_for_shingles,
    permutations,
    shingle_hashes,
)
from tests.dedup_corpus import char_shingles, jaccard, make_corpus

# _Passthrough (below) travels to Ray workers by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


def _dataset(ray_cluster, tasks):
    return ray_cluster.data.from_items(tasks)


def _drops(tasks: list[DocumentBatch]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for t in tasks:
        for reason, n in t._stage_perf[-1].dropped_by_reason().items():
            out[reason] += n
    return dict(out)


# ---------------------------------------------------------------- pure parts (no Ray)
def test_idset_membership_and_identity():
    s = IdSet(["a", "b", "c:1"])
    assert "a" in s and "c:1" in s and "zz" not in s
    assert list(IdSet([]).contains(["a"])) == [False]
    assert IdSet(["c:1", "a", "b", "a"]).fingerprint == s.fingerprint and len(s) == 3


def test_optimal_bands_minimises_weighted_error():
    bands, rows = optimal_bands(0.8, 128)
    assert (bands, rows) == (9, 13)  # known optimum of the equal-weight criterion
    b2, r2 = optimal_bands(0.8, 256, 0.2, 0.8)
    assert b2 * r2 <= 256
    p = lambda s: 1 - (1 - s ** r2) ** b2  # noqa: E731
    assert p(0.85) > 0.95 and p(0.5) < 0.01


def test_minhash_estimates_jaccard(corpus):
    ids = sorted(corpus.docs)[:60]
    texts = [normalize_for_shingles(corpus.docs[i]) for i in ids]
    a, b = permutations(256, 1)
    h, c = shingle_hashes(texts, 5)
    sig = minhash_signatures(h, c, a, b)
    errs = []
    for x, y in itertools.combinations(range(len(ids)), 2):
        true = jaccard(char_shingles(corpus.docs[ids[x]]), char_shingles(corpus.docs[ids[y]]))
        errs.append(abs((sig[x] == sig[y]).mean() - true))
    # Near pairs as well (high similarity is where it matters).
    for src, dup, _ in corpus.near_pairs[:40]:
        hs, cs = shingle_hashes([normalize_for_shingles(corpus.docs[src]),
                                 normalize_for_shingles(corpus.docs[dup])], 5)
        s2 = minhash_signatures(hs, cs, a, b)
        errs.append(abs((s2[0] == s2[1]).mean()
                        - jaccard(char_shingles(corpus.docs[src]), char_shingles(corpus.docs[dup]))))
    assert np.mean(errs) < 0.03 and np.max(errs) < 0.15


def test_shingles_of_short_and_empty_texts():
    h, c = shingle_hashes(["", "abc", "abcdef"], 5)
    assert list(c) == [0, 1, 2]
    a, b = permutations(16, 0)
    sig = minhash_signatures(h, c, a, b)
    assert (sig[0] == 0xFFFFFFFF).all() and not (sig[1] == 0xFFFFFFFF).all()


def test_a_document_longer_than_the_chunk_budget_is_signed_in_slices_of_bounded_memory(corpus):
    """A web page of 200k characters: the same signature as the plain per-document minimum, and
    no (num_perm x shingles) buffer the length of the page (200k x 256 x 8 bytes = 400 MB)."""
    import tracemalloc

    docs = [corpus.docs[i] for i in sorted(corpus.docs)]
    long_text = normalize_for_shingles(" ".join(itertools.islice(itertools.cycle(docs), 400)))
    assert len(long_text) > 150_000
    texts = [normalize_for_shingles(docs[0]), long_text, "", normalize_for_shingles(docs[1])]
    a, b = permutations(256, 3)
    h, c = shingle_hashes(texts, 5)
    tracemalloc.start()
    try:
        sig = minhash_signatures(h, c, a, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"minhash of one long page peaked at {peak / 2**20:.0f} MB"
    ends = np.cumsum(c)
    with np.errstate(over="ignore"):
        for d, (end, n) in enumerate(zip(ends, c)):
            if n == 0:
                assert (sig[d] == 0xFFFFFFFF).all()
                continue
            x = h[end - n:end]
            direct = ((a[:, None] * x[None, :] + b[:, None]).min(axis=1) >> np.uint64(32))
            assert np.array_equal(sig[d], direct.astype(np.uint32)), d


# ---------------------------------------------------------------- exact dedup
def _expected_exact_removals(corpus) -> set[str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for doc_id, text in corpus.docs.items():
        groups[normalize_for_exact(text)].append(doc_id)
    return {i for ids in groups.values() for i in sorted(ids)[1:]}


def test_exact_dedup_keeps_smallest_id_across_batches_deterministically(ray_cluster, corpus):
    expected = _expected_exact_removals(corpus)
    assert len(expected) >= len(corpus.exact_groups)  # planted copies (some layout-only) found
    stage = ExactDuplicateRemover()
    assert isinstance(stage, GlobalStage)
    tasks_a = corpus.tasks(docs_per_task=50)
    tasks_b = corpus.tasks(docs_per_task=17, order_seed=3)
    t0 = time.perf_counter()
    filt_a = stage.fit(_dataset(ray_cluster, tasks_a))
    print(f"\nexact fit over {len(corpus.docs)} docs: {time.perf_counter() - t0:.2f}s")
    filt_b = stage.fit(_dataset(ray_cluster, tasks_b))
    assert isinstance(filt_a, DuplicateIdFilter)
    assert filt_a.remove.fingerprint == filt_b.remove.fingerprint  # same answer, any batching
    assert filt_a.identity_hash() == filt_b.identity_hash()
    out = filt_a.run(tasks_a)
    kept = {i for t in out for i in t.data.column("id").to_pylist()}
    assert set(corpus.docs) - kept == expected
    for src, copy_id in corpus.exact_groups:  # smallest id survives
        assert min(src, copy_id) in kept and max(src, copy_id) not in kept
    assert _drops(out) == {"exact_duplicate": len(expected)}
    assert sum(t.num_items for t in out) + len(expected) == len(corpus.docs)


def test_exact_dedup_normalize_switch_and_whole_batch_of_duplicates(ray_cluster):
    texts = {"a1": "Same text here.", "a2": "Same  text\nhere. ", "a3": "Same text here.",
             "b1": "Other text."}
    first = DocumentBatch("t1", "d", {"id": ["a1", "b1"], "text": [texts["a1"], texts["b1"]]})
    second = DocumentBatch("t2", "d", {"id": ["a2", "a3"], "text": [texts["a2"], texts["a3"]]})
    ds = _dataset(ray_cluster, [first, second])
    assert sorted(IdSet(["a2", "a3"]).contains(["a2", "a3"])) == [True, True]
    normalized = ExactDuplicateRemover().fit(ds)
    out = normalized.run([first, second])
    assert out[1].num_items == 0 and _drops(out) == {"exact_duplicate": 2}  # batch emptied, counted
    raw = ExactDuplicateRemover(normalize=False).fit(ds)
    kept = [i for t in raw.run([first, second]) for i in t.data.column("id").to_pylist()]
    assert kept == ["a1", "b1", "a2"]  # layout differences count when normalize=False


def test_exact_dedup_reports_missing_text_field(ray_cluster):
    task = DocumentBatch("t", "d", {"id": ["a"], "body": ["x"]})
    with pytest.raises(Exception, match="text_field"):
        ExactDuplicateRemover().fit(_dataset(ray_cluster, [task]))


# ---------------------------------------------------------------- fuzzy dedup
def _component_pairs(components: list[list[str]]) -> set[tuple[str, str]]:
    return {p for comp in components for p in itertools.combinations(sorted(comp), 2)}


def test_fuzzy_dedup_precision_recall_against_planted_pairs(ray_cluster, corpus):
    shingles = {i: char_shingles(t) for i, t in corpus.docs.items()}
    families: dict[int, list[str]] = defaultdict(list)
    for doc_id, fam in corpus.family.items():
        families[fam].append(doc_id)
    family_pairs = {p for ids in families.values() for p in itertools.combinations(sorted(ids), 2)}
    true_pairs = {p for p in family_pairs if jaccard(shingles[p[0]], shingles[p[1]]) >= 0.85}
    assert len(true_pairs) > 150

    stage = FuzzyDuplicateRemover(threshold=0.8)
    t0 = time.perf_counter()
    result = stage.find_duplicates(_dataset(ray_cluster, corpus.tasks(docs_per_task=64)))
    elapsed = time.perf_counter() - t0
    found = _component_pairs(result.components())
    recall = len(found & true_pairs) / len(true_pairs)
    # A found pair is right when its reference Jaccard is near the threshold or above (>= 0.75):
    # far copies (10%/20% of words substituted, Jaccard ~0.5-0.75) are the hard negatives.
    similar = {p for p in family_pairs if jaccard(shingles[p[0]], shingles[p[1]]) >= 0.75}
    precision = len(found & similar) / max(len(found), 1)
    far = {tuple(sorted((s, d))) for s, d, _ in corpus.far_pairs}
    far_below = {p for p in far if jaccard(shingles[p[0]], shingles[p[1]]) < 0.75}
    assert len(far_below) >= 40
    by_rate = {}
    for rate in sorted({r for _, _, r in corpus.near_pairs}):
        planted = {tuple(sorted((s, d))) for s, d, r in corpus.near_pairs if r == rate}
        by_rate[rate] = len(found & planted) / len(planted)
    print(f"\nfuzzy: {len(corpus.docs)} docs, bands x rows = {result.bands} x {result.rows}, "
          f"candidates {result.candidate_pairs}, verified {result.pairs.num_rows}, "
          f"precision {precision:.3f}, recall(J>=0.85) {recall:.3f}, "
          f"recall by edit rate {by_rate}, hard negatives found {len(found & far_below)}/"
          f"{len(far_below)}, {elapsed:.2f}s")
    assert recall >= 0.95
    assert precision >= 0.95
    # Every verified pair is similar by the reference Jaccard too (estimates are close).
    sims = [jaccard(shingles[a], shingles[b]) for a, b in
            zip(result.pairs.column("a").to_pylist(), result.pairs.column("b").to_pylist())]
    assert min(sims) >= 0.7


def test_fuzzy_filter_keeps_smallest_id_and_records_drops(ray_cluster, corpus):
    tasks = corpus.tasks(docs_per_task=100, order_seed=1)
    stage = FuzzyDuplicateRemover()
    result = stage.find_duplicates(_dataset(ray_cluster, tasks))
    filt = stage.fit(_dataset(ray_cluster, tasks))
    assert filt.remove.size == len(result.remove) > 0
    out = filt.run(tasks)
    kept = {i for t in out for i in t.data.column("id").to_pylist()}
    for comp in result.components():
        assert comp[0] in kept and not (set(comp[1:]) & kept)
    assert _drops(out) == {"fuzzy_duplicate": len(result.remove)}
    assert len(kept) + len(result.remove) == len(corpus.docs)


@pytest.mark.parametrize("verify", ["jaccard", "none"])
def test_fuzzy_verification_modes(ray_cluster, verify):
    small = make_corpus(n_originals=60, n_unrelated=60, exact_copies=10, near_per_rate=10, seed=5)
    result = FuzzyDuplicateRemover(verify=verify).find_duplicates(
        _dataset(ray_cluster, small.tasks(docs_per_task=40)))
    found = _component_pairs(result.components())
    planted = {tuple(sorted(g)) for g in small.exact_groups}
    assert planted <= found
    if verify == "jaccard":  # exact similarities match the reference shingles
        for a, b, s in zip(*(result.pairs.column(c).to_pylist() for c in ("a", "b", "similarity"))):
            assert s >= 0.8
            assert abs(s - jaccard(char_shingles(small.docs[a]), char_shingles(small.docs[b]))) < 0.02


def test_fuzzy_word_ngrams_and_empty_texts(ray_cluster):
    texts = {"a": "the quick brown fox jumps over the lazy dog near the river bank today",
             "b": "the quick brown fox jumps over the lazy dog near the river bank today!",
             "c": "completely unrelated words about tax law and shipping schedules in spring",
             "d": "", "e": "   "}
    task = DocumentBatch("t", "d", {"id": list(texts), "text": list(texts.values())})
    result = FuzzyDuplicateRemover(word_ngrams=True, ngram_size=3, verify="jaccard").find_duplicates(
        _dataset(ray_cluster, [task]))
    assert result.components() == [["a", "b"]]


def test_exact_then_fuzzy_through_apply_stages_accounts_for_every_document(ray_cluster, corpus):
    from curator_stages.backends.ray_data import apply_stages

    tasks = corpus.tasks(docs_per_task=128)
    ds = ray_cluster.data.from_items(tasks)
    out = [r["item"] for r in apply_stages(ds, [ExactDuplicateRemover(), FuzzyDuplicateRemover()]).take_all()]
    kept = sum(t.num_items for t in out)
    drops: dict[str, int] = defaultdict(int)
    for t in out:
        for stats in t._stage_perf:
            for reason, n in stats.dropped_by_reason().items():
                drops[reason] += n
    assert drops["exact_duplicate"] == len(_expected_exact_removals(corpus))
    assert drops["fuzzy_duplicate"] > 0
    assert kept + sum(drops.values()) == len(corpus.docs)


class _Passthrough(ProcessingStage):
    """Stands for the upstream stage the hashing fuses into (sent to workers by value)."""

    def process(self, task):
        return task


def test_exact_hashes_in_the_streaming_pass_same_answer_no_leftover_parts(ray_cluster, corpus):
    """Texts are hashed inside the upstream stage's tasks (before the barrier); the fit reads
    those parts, removes the same ids as an in-process fit, and no part leaves the stage."""
    from curator_stages.backends.ray_data import apply_stages

    tasks = corpus.tasks(docs_per_task=64)
    stage = ExactDuplicateRemover()
    ds = apply_stages(ray_cluster.data.from_items(tasks), [_Passthrough(), stage]).materialize()
    assert "MapBatches(_PassthroughTask)->MapBatches(ExactDuplicateRemoverPrepare)" in ds.stats()
    out = [r["item"] for r in ds.take_all()]
    removed = set(corpus.docs) - {i for t in out for i in t.data.column("id").to_pylist()}
    assert removed == _expected_exact_removals(corpus)
    ids = list(corpus.docs)
    local = stage.fit_local(tasks).remove  # the in-process fit, hashing every text itself
    assert removed == {i for i, gone in zip(ids, local.contains(ids)) if gone}
    assert all(stage.prepared_key not in t.metadata for t in out)
