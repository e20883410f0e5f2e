"""LocalExecutor and MultiprocessExecutor run the same stages as RayDataExecutor, same result.

The benchmark's baselines are only fair if they do the same work: same documents written,
same drops by reason (exact dedup included, fitted in process), accounting identity intact.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.pipeline import accounting, reference_stages
from curator_stages import processing_stage
from curator_stages.backends.local import LocalExecutor, MultiprocessExecutor
from curator_stages.stage import GlobalStage

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def _written_ids(out_dir: Path) -> set[str]:
    ids: set[str] = set()
    for f in sorted((out_dir / "data").glob("*.parquet")):
        ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return ids


@pytest.fixture(scope="module")
def local_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    tasks = LocalExecutor().execute(reference_stages(str(SAMPLE), str(out)))
    return accounting(tasks), _written_ids(out)


def test_local_executor_keeps_accounting_and_removes_exact_duplicates(local_result):
    counts, ids = local_result
    assert counts["identity_holds"]
    assert counts["documents_read"] > 0
    assert counts["dropped_by_reason"].get("exact_duplicate", 0) > 0
    assert len(ids) == counts["documents_written"]


def test_multiprocess_executor_matches_local(local_result, tmp_path):
    tasks = MultiprocessExecutor(workers=2, spill_dir=str(tmp_path / "spill")).execute(
        reference_stages(str(SAMPLE), str(tmp_path / "out")))
    counts, ids = local_result
    assert accounting(tasks) == counts
    assert _written_ids(tmp_path / "out") == ids
    assert not list((tmp_path / "spill").rglob("*.pkl"))  # spills cleaned up


def test_ray_executor_matches_local(ray_cluster, local_result, tmp_path):
    from curator_stages.backends.ray_data import RayDataExecutor

    tasks = RayDataExecutor(progress_bars=False).execute(
        reference_stages(str(SAMPLE), str(tmp_path / "out")))
    counts, ids = local_result
    assert accounting(tasks) == counts
    assert _written_ids(tmp_path / "out") == ids


def test_global_stage_without_local_fit_names_stage_and_fix():
    class NeedsRay(GlobalStage):
        name = "needs_ray"

        def fit(self, dataset):
            raise AssertionError("not called")

    with pytest.raises(NotImplementedError, match="needs_ray.*RayDataExecutor"):
        LocalExecutor().execute([NeedsRay()], initial_tasks=[])


def test_multiprocess_pool_ends_without_signals_when_the_work_succeeds(tmp_path, monkeypatch):
    """The pool's workers end by the task queue's end marker: ``Pool.terminate()`` would SIGTERM
    a worker that may still be starting with the parent's inherited handler (one that only
    records the signal keeps it alive, and the pool's join then waits forever)."""
    import multiprocessing.process

    import pyarrow as pa

    from curator_stages import DocumentBatch

    signalled: list[int] = []
    real = multiprocessing.process.BaseProcess.terminate

    def spy(self):
        signalled.append(self.pid)
        real(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", spy)

    batches = [DocumentBatch(f"b{i}", "d", pa.table({"id": [f"x{i}"], "text": ["y"]}))
               for i in range(3)]
    out = MultiprocessExecutor(workers=4, spill_dir=str(tmp_path)).execute([_same], batches)
    assert sorted(t.to_pyarrow().column("id")[0].as_py() for t in out) == ["x0", "x1", "x2"]
    assert signalled == []


@processing_stage(name="same")
def _same(task):
    return task
