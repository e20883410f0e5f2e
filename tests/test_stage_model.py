"""The stage model: tasks, resources, stage configuration, identity and the run() contract."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from curator_stages import (
    DocumentBatch,
    EmptyTask,
    FileGroupTask,
    ProcessingStage,
    Resources,
    StageInputError,
    processing_stage,
    record_drops,
)
from curator_stages.tasks import DROPPED_PREFIX, StagePerfStats


def _batch(n: int = 3) -> DocumentBatch:
    return DocumentBatch("t1", "ds", pd.DataFrame({"id": [str(i) for i in range(n)],
                                                   "text": ["a b c"] * n}))


class KeepShort(ProcessingStage):
    def __init__(self, max_len: int = 3):
        self.max_len = max_len

    def inputs(self):
        return [], ["text"]

    def process(self, task):
        keep = pa.array([len(t) <= self.max_len for t in task.data["text"].to_pylist()])
        kept = task.data.filter(keep)
        if kept.num_rows == 0:
            return None
        out = task.derive(kept)
        return record_drops(out, {"too_long": task.num_items - kept.num_rows})


def test_document_batch_from_pandas_and_num_items():
    batch = _batch(4)
    assert isinstance(batch.data, pa.Table)
    assert batch.num_items == 4 and batch.validate()
    assert batch.to_pandas()["id"].tolist() == ["0", "1", "2", "3"]
    assert FileGroupTask("f", "ds", ["a.jsonl", "b.jsonl"]).num_items == 2
    assert EmptyTask().num_items == 0


def test_derive_keeps_a_copy_of_history():
    parent = _batch()
    parent.add_stage_perf(StagePerfStats("read", 0.1, 0, 3))
    child = parent.derive(parent.data.slice(0, 1), task_id="c")
    assert [s.stage_name for s in child._stage_perf] == ["read"]
    child.add_stage_perf(StagePerfStats("filter", 0.1, 3, 1))
    assert len(parent._stage_perf) == 1, "a child must not append to its parent's history"
    assert child.task_id == "c" and child.num_items == 1


def test_resources_validation():
    with pytest.raises(ValueError, match="either gpus or gpu_memory_gb"):
        Resources(gpus=1, gpu_memory_gb=10)
    with pytest.raises(ValueError, match="cpus"):
        Resources(cpus=-1)
    assert Resources(gpu_memory_gb=20).gpus_for(80) == 0.25
    assert Resources(gpu_memory_gb=20).requires_gpu


def test_with_returns_configured_copy_and_rejects_unknown_fields():
    stage = KeepShort()
    other = stage.with_(name="short", batch_size=4, resources=Resources(cpus=2), max_len=9)
    assert (other.stage_name, other.batch_size, other.resources.cpus, other.max_len) == (
        "short", 4, 2, 9)
    assert stage.max_len == 3 and stage.stage_name == "keep_short"
    with pytest.raises(AttributeError, match="max_lenn"):
        stage.with_(max_lenn=1)


def test_identity_changes_with_params_not_with_execution_settings():
    base = KeepShort(3)
    assert base.identity_hash() == KeepShort(3).identity_hash()
    assert base.identity_hash() != KeepShort(4).identity_hash()
    assert base.identity_hash() == base.with_(batch_size=8, name="x").identity_hash()


def test_processing_stage_decorator():
    @processing_stage(name="upper", batch_size=2, spec={"is_fanout_stage": False})
    def upper_text(task):
        return task.derive(task.data.set_column(1, "text", pa.array(
            [t.upper() for t in task.data["text"].to_pylist()])))

    assert type(upper_text).__name__ == "UpperText"
    assert upper_text.stage_name == "upper" and upper_text.batch_size == 2
    assert upper_text.ray_stage_spec() == {"is_fanout_stage": False}
    [out] = upper_text.run([_batch(1)])
    assert out.data["text"].to_pylist() == ["A B C"]


def test_run_records_perf_stats_and_turns_a_drop_into_an_empty_batch():
    [kept] = KeepShort(5).run([_batch(2)])
    assert kept.num_items == 2
    assert kept._stage_perf[-1].stage_name == "keep_short"
    assert (kept._stage_perf[-1].num_items_in, kept._stage_perf[-1].num_items_out) == (2, 2)

    [dropped] = KeepShort(1).run([_batch(3)])
    assert dropped.num_items == 0, "a dropped batch must survive as an empty batch"
    stats = dropped._stage_perf[-1]
    assert stats.custom_metrics == {f"{DROPPED_PREFIX}keep_short": 3}
    assert stats.dropped_by_reason() == {"keep_short": 3}


def test_inputs_validation_names_stage_and_missing_column():
    task = DocumentBatch("t", "ds", pd.DataFrame({"id": ["1"]}))
    with pytest.raises(StageInputError, match=r"keep_short.*'text'"):
        KeepShort().run([task])
