"""Dedup fits keep their compact columns in scratch files, where the caller says, and remove them.

Why: a fit must see every document's compact columns before it decides anything. Kept in Ray's
object store they cost memory for the whole fit, and that memory grows with the corpus; kept in
Parquet files (:mod:`curator_stages.io.scratch`) they cost disk, and a node's memory stays flat.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray.cloudpickle

from curator_stages.io.scratch import (
    read_scratch_table,
    scratch_directory,
    scratch_root,
    write_scratch_table,
)
from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup import ExactDuplicateRemover, FuzzyDuplicateRemover
from curator_stages.text.dedup import shuffle as shuffle_module
from curator_stages.text.dedup.pair_similarity import pair_similarity
from curator_stages.text.dedup.shuffle import (
    map_blocks,
    partition_reduce,
    shuffle_rounds,
    write_blocks,
)
from tests.dedup_corpus import make_corpus

# _numbers and _count (below) travel to Ray workers by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


def _numbers(batch, scale: int) -> pa.Table:
    values = np.concatenate([np.asarray(v, dtype=np.int64) for v in batch["value"]])
    return pa.table({"value": values, "scaled": values * scale, "key": values.astype(np.uint64)})


def _count(table: pa.Table | None) -> int:
    return 0 if table is None else table.num_rows


def test_written_blocks_are_files_the_shuffle_reads_column_by_column(ray_cluster, tmp_path):
    ds = ray_cluster.data.from_items([{"value": list(range(i * 10, i * 10 + 10))}
                                      for i in range(6)])
    files, rows, nbytes = write_blocks(ds, _numbers, {"scale": 3}, str(tmp_path))
    assert rows == 60 and len(files) == 6 and files == sorted(files)
    assert nbytes == 60 * 24  # three 8-byte columns
    assert all(f.startswith(str(tmp_path)) for f in files)
    assert read_scratch_table(files[0], ["scaled"]).column_names == ["scaled"]
    values = sorted(v for f in files for v in read_scratch_table(f).column("value").to_pylist())
    assert values == list(range(60))
    # The split tasks and the map tasks read the files themselves, the named columns only.
    counts = partition_reduce(files, "key", _count, num_partitions=3, columns=["key"])
    assert sum(counts) == 60 and len(counts) == 3
    # In rounds, every round keeps its own partitions' rows: each row reduced exactly once.
    in_rounds = partition_reduce(files, "key", _count, num_partitions=3, columns=["key"], rounds=4)
    assert sum(in_rounds) == 60 and len(in_rounds) == 12
    firsts = map_blocks(files, lambda t: t.slice(0, 1), columns=["value"])
    assert all(t.column_names == ["value"] for t in firsts)


def test_a_fit_writes_under_its_scratch_root_and_leaves_nothing(ray_cluster, corpus, tmp_path):
    tasks = corpus.tasks(docs_per_task=100)
    expected = FuzzyDuplicateRemover().find_duplicates(ray_cluster.data.from_items(tasks))
    root = tmp_path / "root"
    root.mkdir()
    with scratch_root(str(root)):
        got = FuzzyDuplicateRemover().find_duplicates(ray_cluster.data.from_items(tasks))
        exact = ExactDuplicateRemover().find_duplicates(ray_cluster.data.from_items(tasks))
    assert got.remove.equals(expected.remove) and len(got.remove) > 0
    assert exact[0].size > 0
    assert list(root.iterdir()) == []  # the fits removed their directories
    # The fit writes where it is told: a root that cannot hold a directory fails the fit.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with scratch_root(str(blocker)), pytest.raises(OSError):
        FuzzyDuplicateRemover().find_duplicates(ray_cluster.data.from_items(tasks))


def test_a_failed_fit_removes_its_scratch_directory(tmp_path):
    with scratch_root(str(tmp_path)), pytest.raises(RuntimeError, match="stage failed"):
        with scratch_directory("fuzzy_dedup") as directory:
            (tmp_path / directory.rsplit("/", 1)[-1] / "part.parquet").write_bytes(b"x")
            raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []


def test_shuffles_in_many_rounds_find_the_same_duplicates(ray_cluster, corpus, monkeypatch):
    """A shuffle larger than its share of the object store runs in rounds (each reads the scratch
    files again and keeps its own partitions, or LSH bands): the same answer as one round."""
    tasks = corpus.tasks(docs_per_task=100)
    fuzzy_one = FuzzyDuplicateRemover().find_duplicates(ray_cluster.data.from_items(tasks))
    exact_one, quarantine_one = ExactDuplicateRemover().find_duplicates(
        ray_cluster.data.from_items(tasks))
    assert fuzzy_one.bands > 3 and shuffle_rounds(10**6) == 1
    # A share of the store too small for any shuffle: as many rounds as allowed, one band each.
    monkeypatch.setattr(shuffle_module, "STORE_SHARE_PER_ROUND", 1e-12)
    assert shuffle_rounds(10**6) == shuffle_module.MAX_SHUFFLE_ROUNDS > 1
    fuzzy_many = FuzzyDuplicateRemover().find_duplicates(ray_cluster.data.from_items(tasks))
    assert fuzzy_many.candidate_pairs == fuzzy_one.candidate_pairs
    assert fuzzy_many.pairs.sort_by("a").equals(fuzzy_one.pairs.sort_by("a"))
    assert fuzzy_many.remove.equals(fuzzy_one.remove) and len(fuzzy_one.remove) > 0
    exact_many, quarantine_many = ExactDuplicateRemover().find_duplicates(
        ray_cluster.data.from_items(tasks))
    ids = list(corpus.docs)
    assert exact_many.contains(ids).tolist() == exact_one.contains(ids).tolist()
    assert exact_one.size > 0 and quarantine_many == quarantine_one


def test_pairs_are_compared_where_their_signatures_are_read(ray_cluster, tmp_path):
    """Verification joins each pair's two recomputed signatures in a reduce task (no signature
    reaches the driver): the same estimate as comparing them side by side, and NaN for a pair
    whose candidate the second read did not find."""
    rng = np.random.default_rng(7)
    num_perm, n = 16, 40
    keys = pa.array(sorted(f"doc-{i:03d}" for i in range(n)))
    base = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    sig = np.tile(base, (n, 1))
    noise = rng.random((n, num_perm)) < rng.random((n, 1))  # each row shares a different share
    sig[noise] = rng.integers(0, 2**32, size=int(noise.sum()), dtype=np.uint32)
    ca = rng.integers(0, n - 1, size=120)
    cb = np.minimum(ca + rng.integers(1, 5, size=120), n - 1)
    found = np.arange(n) != n - 1  # the last candidate is missing from the second read
    files = [write_scratch_table(pa.table({
        "id": keys.take(pa.array(rows)),
        "signature": pa.FixedSizeListArray.from_arrays(pa.array(sig[rows].ravel()), num_perm)}),
        str(tmp_path)) for rows in np.array_split(np.flatnonzero(found), 3)]
    sim = pair_similarity(files, ca, cb, keys, num_perm)
    expected = (sig[ca] == sig[cb]).mean(axis=1)
    complete = found[ca] & found[cb]
    assert 0 < (~complete).sum() < complete.sum()
    assert np.array_equal(sim[complete], expected[complete])
    assert np.isnan(sim[~complete]).all()
    assert len(set(expected[complete].round(3))) > 5  # the estimates differ pair to pair


def _fewer_on_second_read(batch, marks: str):
    """Each task's documents; on a task's second read, only its first half (the input changed)."""
    out = []
    for task in batch["item"]:
        mark = Path(marks) / task.task_id
        if mark.exists():
            task = DocumentBatch(task.task_id, task.dataset_name,
                                 task.data.slice(0, task.data.num_rows // 2))
        mark.touch()
        out.append(task)
    return {"item": np.array(out, dtype=object)}


def test_verification_refuses_an_input_that_changed_between_its_reads(ray_cluster, corpus,
                                                                      tmp_path):
    """The verification reads the input a second time; if the candidates it finds there are not
    the ones the first read found, the fit stops and says so instead of verifying part of them."""
    tasks = ray_cluster.data.from_items(corpus.tasks(docs_per_task=100)).map_batches(
        _fewer_on_second_read, batch_format="numpy", batch_size=None,
        fn_kwargs={"marks": str(tmp_path)})
    with pytest.raises(RuntimeError, match="the input changed during the fit"):
        FuzzyDuplicateRemover(name="fuzzy_dedup").find_duplicates(tasks)
