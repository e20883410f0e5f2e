"""Accounting without traps: a stage that removes documents and says nothing still balances
``read = written + dropped + quarantined``; the difference is recorded as
``dropped.<stage_name>`` (rows removed from a batch, or whole batches a ``process_batch``
override leaves out). Reasons a stage does record are kept, and only the rest is attributed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from curator_stages import DocumentBatch, FileGroupTask, ProcessingStage, record_drops
from curator_stages.backends.local import LocalExecutor
from curator_stages.io import JsonlReader, ParquetWriter
from curator_stages.accounting import HistoryAggregator, summarise

# Ray workers cannot import this test module by name: ship its stage classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


class SilentHalf(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Keeps every second document and records no reason (the trap)."""

    name = "silent_half"

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        return task.derive(table.take(list(range(0, table.num_rows, 2))))


class DropEverySecondBatch(ProcessingStage[DocumentBatch, DocumentBatch]):
    """A batched override that leaves whole tasks out of what it returns."""

    name = "drop_second_batch"
    batch_size = 2

    def process(self, task):  # pragma: no cover - process_batch is the entry point
        return task

    def process_batch(self, tasks):
        return tasks[::2]


def _batch(task_id: str, n: int) -> DocumentBatch:
    return DocumentBatch(task_id, "docs", pa.table({"id": [f"{task_id}-{i}" for i in range(n)],
                                                    "text": ["x"] * n}))


def _dropped(tasks, stage_name: str) -> int:
    return sum(s.dropped_by_reason().get(stage_name, 0) for t in tasks
               for s in t.stage_history if s.stage_name == stage_name)


def test_rows_removed_without_a_reason_are_counted_under_the_stage_name():
    out = SilentHalf().run([_batch("a", 5)])
    assert out[0].num_items == 3
    stats = out[0].stage_history[-1]
    assert (stats.num_items_in, stats.num_items_out) == (5, 3)
    assert stats.dropped_by_reason() == {"silent_half": 2}


def test_recorded_reasons_are_kept_and_only_the_rest_is_attributed():
    class HalfExplained(ProcessingStage):
        name = "half_explained"

        def process(self, task):
            return record_drops(task.derive(task.data.slice(0, 1)), {"too_short": 2})

    stats = HalfExplained().run([_batch("a", 5)])[0].stage_history[-1]
    assert stats.dropped_by_reason() == {"too_short": 2, "half_explained": 2}


def test_a_batch_override_that_drops_whole_tasks_is_counted():
    tasks = [_batch(f"t{i}", i + 1) for i in range(4)]  # 1, 2, 3, 4 documents
    out = DropEverySecondBatch().run(tasks)
    assert sum(t.num_items for t in out) == 1 + 3
    assert _dropped(out, "drop_second_batch") == 2 + 4
    assert [t.num_items for t in out if t.stage_history[-1].num_items_out == 0] == [0, 0]

    class DropsAll(DropEverySecondBatch):
        name = "drops_all"

        def process_batch(self, tasks):
            return None

    assert _dropped(DropsAll().run(tasks), "drops_all") == 10


def test_stages_that_do_not_remove_documents_are_left_alone():
    class Grow(ProcessingStage):
        name = "grow"

        def process(self, task):
            return task.derive(pa.concat_tables([task.data, task.data]))

    class DropFiles(ProcessingStage):
        name = "drop_files"

        def process(self, task):
            return None

    assert Grow().run([_batch("a", 2)])[0].stage_history[-1].dropped_by_reason() == {}
    assert DropFiles().run([FileGroupTask("f", "docs", ["a.jsonl"])]) == []


def test_stage_history_is_a_read_only_view():
    task = SilentHalf().run([_batch("a", 4)])[0]
    history = task.stage_history
    assert isinstance(history, tuple) and history[-1].stage_name == "silent_half"


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_pipeline_with_silent_drops_balances_the_accounting_identity(backend, tmp_path,
                                                                        request):
    stages = [*JsonlReader(str(SAMPLE), text_field="text", files_per_group=1).decompose(),
              SilentHalf(), DropEverySecondBatch(),
              ParquetWriter(str(tmp_path / "out"), mode="overwrite")]
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
        from curator_stages.backends.ray_data import RayDataExecutor

        tasks = RayDataExecutor(progress_bars=False).execute(stages)
    else:
        tasks = LocalExecutor().execute(stages)
    summary = summarise(HistoryAggregator().add_tasks(tasks).to_dict())
    written = sum(pq.read_metadata(f).num_rows for f in (tmp_path / "out").glob("*.parquet"))
    assert summary.documents_read > 0 and summary.documents_written == written
    assert summary.dropped_by_reason.get("silent_half", 0) > 0
    assert summary.dropped_by_reason.get("drop_second_batch", 0) > 0
    summary.check()  # read = written + dropped + quarantined
