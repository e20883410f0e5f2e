"""Removal sets do not grow per worker (issue #23): the removed ids are split into buckets by
source file, and under Ray a filter task fetches only the bucket(s) of its own files from the
object store, while the decision stays that of the whole set."""

from __future__ import annotations

import sys

import ray.cloudpickle
import pytest

from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup import ExactDuplicateRemover, FuzzyDuplicateRemover, IdSet
from curator_stages.text.dedup import idset as idset_module
from curator_stages.text.dedup.idset import bucket_numbers
from curator_stages.text.dedup.rows import row_keys

# The remote filter task below travels to Ray workers by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

FILES = 12
ROWS_PER_FILE = 40


def file_tasks() -> list[DocumentBatch]:
    """One task per source file; text ``i % 60`` repeats across files (exact duplicates)."""
    tasks = []
    for f in range(FILES):
        rows = range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE)
        tasks.append(DocumentBatch(f"t{f}", "d", {
            "id": [f"doc{i:05d}" for i in rows],
            "text": [f"shared text number {i % 60} for the bucket test" for i in rows],
            "source_file": [f"/in/part-{f:02d}.jsonl"] * ROWS_PER_FILE,
            "source_line": list(range(ROWS_PER_FILE)),
        }))
    return tasks


def kept_ids(tasks: list[DocumentBatch]) -> list[str]:
    return sorted(i for t in tasks for i in t.to_pyarrow().column("id").to_pylist())


@pytest.fixture
def small_buckets(monkeypatch):
    """At most 50 removed ids per bucket: a few hundred ids make several buckets."""
    monkeypatch.setattr(idset_module, "IDS_PER_BUCKET", 50)


def test_buckets_change_neither_answer_nor_identity(small_buckets):
    keys = [k for t in file_tasks() for k in row_keys(t.to_pyarrow(), "id", "t").to_pylist()]
    removed = keys[::3]
    split = IdSet(removed)
    assert split.buckets == 4  # 160 ids, <= 50 per bucket
    idset_module.IDS_PER_BUCKET = 1_000_000
    whole = IdSet(reversed(removed))
    assert whole.buckets == 1
    assert split.identity() == whole.identity() and split.size == len(removed)
    assert split.contains(keys).tolist() == whole.contains(keys).tolist()
    assert split.contains(keys).sum() == len(removed)
    assert IdSet(removed[1:]).identity() != whole.identity()
    # one file's rows share one bucket
    one_file = row_keys(file_tasks()[5].to_pyarrow(), "id", "t").to_pylist()
    assert len(set(bucket_numbers(one_file, 4).tolist())) == 1


def test_a_filter_task_fetches_only_its_own_files_bucket(ray_cluster, small_buckets):
    tasks = file_tasks()
    expected = ExactDuplicateRemover().fit_local(tasks)  # in process: the buckets held here
    filt = ExactDuplicateRemover().fit(ray_cluster.data.from_items(tasks))
    remove = filt.remove
    assert remove.identity() == expected.remove.identity()
    assert remove.size == FILES * ROWS_PER_FILE - 60 and remove.buckets > 1

    @ray_cluster.remote
    def filter_task(stage, task):  # what a worker does with its copy of the stage
        out = stage.process(task)
        return kept_ids([out]), stage.remove.held_buckets, stage.remove.fetches

    for task in (tasks[0], tasks[7]):  # file 0 keeps all its rows, file 7 none
        keys = row_keys(task.to_pyarrow(), "id", "t").to_pylist()
        own = sorted(set(bucket_numbers(keys, remove.buckets).tolist()))
        kept, held, fetches = ray_cluster.get(filter_task.remote(filt, task))
        assert len(own) == 1 and held == own and fetches == 1
        assert kept == kept_ids([expected.process(task)]) and len(kept) in (0, ROWS_PER_FILE)
    # the driver's copy fetched nothing for those tasks
    assert remove.held_buckets == [] and remove.fetches == 0


def test_a_plan_with_several_buckets_removes_the_same_rows(ray_cluster, small_buckets):
    """Fit and filter inside one Ray Data plan (the stage, refs and all, shipped to workers):
    several buckets remove what one bucket does, and exact dedup what the in-process fit does."""
    from curator_stages.backends.ray_data.executor import apply_stages

    def plan_output(*stages) -> list[str]:
        plan = apply_stages(ray_cluster.data.from_items(file_tasks()), list(stages))
        return kept_ids([row["item"] for row in plan.take_all()])

    tasks = file_tasks()
    assert plan_output(ExactDuplicateRemover()) == kept_ids(
        ExactDuplicateRemover().fit_local(tasks).run(tasks))
    split = plan_output(ExactDuplicateRemover(), FuzzyDuplicateRemover())
    idset_module.IDS_PER_BUCKET = 1_000_000
    assert plan_output(ExactDuplicateRemover(), FuzzyDuplicateRemover()) == split
    assert 0 < len(split) <= 60


def test_fuzzy_verification_read_fetches_only_its_own_files_candidates(ray_cluster,
                                                                      small_buckets):
    """The signature read of fuzzy verification gets the candidates as a bucketed set: a task
    on one file fetches that file's bucket only, and recomputes exactly its candidates."""
    import numpy as np

    from curator_stages.text.dedup.fuzzy import _candidate_signatures_batch
    from curator_stages.text.dedup.minhash import permutations

    tasks = file_tasks()
    keys = [k for t in tasks for k in row_keys(t.to_pyarrow(), "id", "t").to_pylist()]
    candidates = keys[::2]
    wanted = IdSet(candidates).in_object_store()
    assert wanted.buckets > 1
    a, b = permutations(16, 1)

    @ray_cluster.remote
    def read_task(task, wanted):  # what one task of the verification read does
        out = _candidate_signatures_batch(
            {"item": np.array([task], dtype=object)}, text_field="text", id_field="id",
            ngram_size=5, word_ngrams=False, a=a, b=b, wanted=wanted, stage_name="fuzzy")
        return out.column("id").to_pylist(), wanted.held_buckets, wanted.fetches

    task = tasks[3]
    own_keys = row_keys(task.to_pyarrow(), "id", "t").to_pylist()
    own = sorted(set(bucket_numbers(own_keys, wanted.buckets).tolist()))
    ids, held, fetches = ray_cluster.get(read_task.remote(task, wanted))
    assert ids == [k for k in own_keys if k in set(candidates)] and len(ids) == ROWS_PER_FILE // 2
    assert held == own and len(own) == 1 and fetches == 1
