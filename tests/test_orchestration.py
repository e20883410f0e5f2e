"""The Prefect layer on real Ray and a real Prefect API: checkpoints, fingerprints, caching,
retries, resume, refresh, accounting and the Ray session rules."""

from __future__ import annotations

import json
import os
import pickle
import sys
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import ray.cloudpickle
import ray.data
from prefect import flow

from curator_stages import DocumentBatch, EmptyTask, FileGroupTask, ProcessingStage, StagePerfStats
from curator_stages.orchestration import (
    AccountingError,
    DatasetRef,
    HistoryAggregator,
    RaySession,
    StageTaskOptions,
    finish_run,
    input_fingerprint,
    output_location,
    run_stage_groups,
    stages_fingerprint,
    summarise,
)
from curator_stages import checkpoints as ckpt
from curator_stages.stage import record_drops, record_metrics
from curator_stages.tasks import DOCUMENTS_READ, DOCUMENTS_WRITTEN

# Stage classes and flows defined here travel to Ray workers by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ----------------------------------------------------------------------------- test stages
def _count(counter_dir: str, name: str) -> None:
    if counter_dir:
        Path(counter_dir, f"{name}-{uuid.uuid4().hex}").touch()


def executions(counter_dir: Path, name: str) -> int:
    return len(list(counter_dir.glob(f"{name}-*")))


class MakeDocs(ProcessingStage):
    """EmptyTask -> ``batches`` document batches (a fan-out source that records reads)."""

    name = "make_docs"

    def __init__(self, batches: int = 4, per_batch: int = 25, counter_dir: str = ""):
        self.batches, self.per_batch, self.counter_dir = batches, per_batch, counter_dir

    def ray_stage_spec(self):
        return {"is_fanout_stage": True}

    def process(self, task):
        _count(self.counter_dir, self.stage_name)
        out = []
        for b in range(self.batches):
            ids = [f"d{b:02d}-{i:03d}" for i in range(self.per_batch)]
            texts = ["x" * ((b * self.per_batch + i) % 17) for i in range(self.per_batch)]
            batch = DocumentBatch(f"batch-{b}", "docs", pd.DataFrame({"id": ids, "text": texts}))
            out.append(record_metrics(batch, **{DOCUMENTS_READ: self.per_batch}))
        return out


class DropShort(ProcessingStage):
    name = "drop_short"

    def __init__(self, min_len: int = 5, counter_dir: str = "", fail_marker: str = ""):
        self.min_len, self.counter_dir, self.fail_marker = min_len, counter_dir, fail_marker

    def process(self, task):
        _count(self.counter_dir, self.stage_name)
        if self.fail_marker and not os.path.exists(self.fail_marker):
            Path(self.fail_marker).touch()
            raise RuntimeError("injected failure (first attempt)")
        table = task.to_pyarrow()
        keep = pa.compute.greater_equal(pa.compute.utf8_length(table["text"]), self.min_len)
        kept = table.filter(keep)
        out = task.derive(kept)
        return record_drops(out, {"too_short": table.num_rows - kept.num_rows})


class Upper(ProcessingStage):
    name = "upper"

    def __init__(self, counter_dir: str = "", fail_marker: str = ""):
        self.counter_dir, self.fail_marker = counter_dir, fail_marker

    def process(self, task):
        _count(self.counter_dir, self.stage_name)
        if self.fail_marker and os.path.exists(self.fail_marker):
            raise RuntimeError("injected crash while the marker exists")
        df = task.to_pandas()
        df["text"] = df["text"].str.upper()
        return task.derive(df)


class CountWritten(ProcessingStage):
    name = "count_written"

    def __init__(self, counter_dir: str = "", lose: int = 0):
        self.counter_dir, self.lose = counter_dir, lose

    def process(self, task):
        _count(self.counter_dir, self.stage_name)
        return record_metrics(task, **{DOCUMENTS_WRITTEN: max(task.num_items - self.lose, 0)})


def pipeline_groups(counter_dir: Path, min_len: int = 5, fail_marker: str = "",
                    crash_marker: str = "", lose: int = 0, fused: bool = False):
    c = str(counter_dir)
    stages = [MakeDocs(counter_dir=c), DropShort(min_len, c, fail_marker),
              Upper(c, crash_marker), CountWritten(c, lose)]
    return [stages[:2], stages[2:]] if fused else [[s] for s in stages]


@flow(name="orchestration-test")
def pipeline_flow(counter_dir: str, work_dir: str, output: str, min_len: int = 5,
                  fail_marker: str = "", crash_marker: str = "", retries: int = 0,
                  refresh: bool = False, lose: int = 0, fused: bool = False):
    groups = pipeline_groups(Path(counter_dir), min_len, fail_marker, crash_marker, lose, fused)
    with RaySession():
        result = run_stage_groups(
            groups, DatasetRef.seed("seed-v1"), work_dir,
            options=StageTaskOptions(retries=retries, retry_delay_seconds=0),
            refresh=refresh, progress_key="orchestration-test-progress")
        finish_run(result, output, "orchestration test", "orchestration-test-summary")
    return result


def output_rows(result) -> pd.DataFrame:
    tables = [t.to_pyarrow() for t in ckpt.read_tasks(result.final.path)]
    return pa.concat_tables(tables).to_pandas().sort_values("id").reset_index(drop=True)


@pytest.fixture(scope="module")
def clean_rows(ray_cluster, prefect_harness, tmp_path_factory) -> pd.DataFrame:
    """The output rows of one uninterrupted run of the four-stage pipeline (defaults, no fault),
    made once for the module: what a retried or resumed run of it must give. (A fault marker
    that never fires changes a stage's identity, not its output.)"""
    root = tmp_path_factory.mktemp("clean-pipeline")
    (root / "counters").mkdir()
    return output_rows(pipeline_flow(str(root / "counters"), str(root / "work"),
                                     str(root / "out")))


@pytest.fixture()
def dirs(tmp_path):
    counters = tmp_path / "counters"
    counters.mkdir()
    return counters, str(tmp_path / "work"), str(tmp_path / "out")


# ----------------------------------------------------------------------------- pure units
def test_dataset_ref_is_small_frozen_picklable_and_hashable():
    ref = DatasetRef("/x/y", "ab" * 32, 3, 10, ("a",), json.dumps({"a": {"items_in": 1}}))
    assert pickle.loads(pickle.dumps(ref)) == ref
    assert hash(ref) == hash(DatasetRef("/x/y", "ab" * 32, 3, 10, ("a",)))
    assert ref.stats == {"a": {"items_in": 1}}
    with pytest.raises(Exception):
        ref.path = "/other"  # type: ignore[misc]
    assert DatasetRef.seed("f").is_seed


def test_fingerprint_changes_with_parameters_order_and_input(tmp_path):
    a, b = DropShort(5), Upper()
    base = stages_fingerprint("in", [a, b])
    assert base == stages_fingerprint("in", [DropShort(5), Upper()])
    assert base != stages_fingerprint("in", [DropShort(6), Upper()])
    assert base != stages_fingerprint("in", [b, a])
    assert base != stages_fingerprint("in2", [a, b])
    f = tmp_path / "a.jsonl"
    f.write_text("{}\n")
    fp1 = input_fingerprint([str(f)])
    f.write_text("{}\n{}\n")
    assert input_fingerprint([str(f)]) != fp1


def test_checkpoint_round_trip_is_atomic_and_keeps_history(tmp_path):
    batch = DocumentBatch("t1", "ds", pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"]}),
                          _metadata={"source": "s.jsonl"},
                          _stage_perf=[StagePerfStats("s", 0.5, 2, 2, {"documents_read": 2})])
    files = FileGroupTask("g1", "ds", ["/a", "/b"], reader_options={"k": 1})
    path = ckpt.checkpoint_path(str(tmp_path), "f" * 64, ["read", "filter"])
    assert path.endswith("ffffffffffffffff-read+filter")
    with pytest.raises(RuntimeError):
        with ckpt.CheckpointWriter(path) as w:
            w.write(batch)
            raise RuntimeError("crash mid-write")
    assert not os.path.exists(path) and list(tmp_path.iterdir()) == []
    with ckpt.CheckpointWriter(path) as w:
        w.write(batch)
        w.write(files)
        # Before commit nothing looks complete.
        assert not ckpt.is_complete(path)
        manifest = w.commit(fingerprint="f" * 64, stages=["read", "filter"])
    assert ckpt.is_complete(path) and manifest["num_tasks"] == 2
    assert manifest["num_documents"] == 2
    loaded = ckpt.read_tasks(path)
    assert loaded[0].to_pandas().equals(batch.to_pandas())
    assert loaded[0].metadata == {"source": "s.jsonl"} and loaded[0].task_id == "t1"
    assert loaded[0]._stage_perf == batch._stage_perf
    assert loaded[0]._stage_perf[0].stats_id == batch._stage_perf[0].stats_id
    assert sorted(os.listdir(path)) == ["manifest.json", "part-000000.parquet", "part-000001.json"]
    assert loaded[1] == files
    # A directory without manifest is incomplete and is not loadable.
    os.remove(os.path.join(path, "manifest.json"))
    assert not ckpt.is_complete(path)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ckpt.read_tasks(path)


def test_workers_write_checkpoint_parts_listed_in_task_order_orphans_removed(ray_cluster,
                                                                           tmp_path):
    from curator_stages.backends.ray_data import apply_stages

    tasks = [DocumentBatch(f"t{i}", "ds", pd.DataFrame({"id": [f"d{i}"], "text": ["x" * i]}),
                           _stage_perf=[StagePerfStats("make", 0.1, 0, 1, {"documents_read": 1})])
             for i in (3, 1, 2, 0)]
    path = ckpt.checkpoint_path(str(tmp_path), "e" * 64, ["upper"])
    history = HistoryAggregator()
    with ckpt.CheckpointWriter(path) as w:
        ds = apply_stages(ray.data.from_items([{"item": t} for t in tasks],
                                              override_num_blocks=2),
                          [Upper()], after=ckpt.parts_writer(w.tmp_path, "upper"))
        parts = [p for b in ds.iter_batches(batch_size=None, batch_format="numpy")
                 for p in b["item"]]
        # What comes back is a small record per file, never the documents themselves.
        assert all(isinstance(p, ckpt.CheckpointPart) for p in parts)
        for p in parts:
            w.add_part(p)
            history.add_task(p)
        # A part a failed attempt left behind is not listed, and is removed on commit.
        orphan = os.path.join(w.tmp_path, "part-000000000000-deadbeef.parquet")
        Path(orphan).write_bytes(b"half a task")
        manifest = w.commit(fingerprint="e" * 64, stages=["upper"])
    assert [f["task_id"] for f in manifest["files"]] == ["t0", "t1", "t2", "t3"]
    assert manifest["num_documents"] == 4 and manifest["num_tasks"] == 4
    assert sorted(os.listdir(path)) == sorted([*(f["file"] for f in manifest["files"]),
                                               "manifest.json"])
    loaded = ckpt.read_tasks(path)
    assert [t.task_id for t in loaded] == ["t0", "t1", "t2", "t3"]
    assert [t.to_pandas()["text"][0] for t in loaded] == ["", "X", "XX", "XXX"]
    assert history.stages["make"].items_out == 4 and history.num_items == 4


def test_history_aggregation_counts_fanned_out_records_once():
    parent = DocumentBatch("p", "ds", pd.DataFrame({"id": ["a", "b", "c"], "text": ["1", "2", "3"]}))
    parent.add_stage_perf(StagePerfStats("read", 0.1, 0, 3, {"documents_read": 3}))
    kids = [parent.derive(parent.data.slice(i, 1), task_id=f"k{i}") for i in range(3)]
    for k in kids:
        k.add_stage_perf(StagePerfStats("split", 0.0, 0, 1))
    agg = HistoryAggregator().add_tasks(kids)
    assert agg.stages["read"].metrics["documents_read"] == 3  # not 9
    assert agg.stages["split"].items_out == 3
    summary = summarise(agg.to_dict(), final_documents=3)
    assert summary.identity_holds and summary.documents_read == 3


# ----------------------------------------------------------------------------- Ray session
def test_ray_session_reuses_an_initialised_ray_and_never_shuts_it_down(ray_cluster):
    with RaySession() as session:
        assert not session.owns_connection and session.address
    assert ray_cluster.is_initialized()


# ----------------------------------------------------------------------------- flows
def test_flow_runs_stage_tasks_in_ray_and_writes_summary(ray_cluster, prefect_harness, dirs):
    counters, work, out = dirs
    state = pipeline_flow(str(counters), work, out, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    rows = output_rows(result)
    expected = [f"d{b:02d}-{i:03d}" for b in range(4) for i in range(25)
                if (b * 25 + i) % 17 >= 5]
    assert rows["id"].tolist() == sorted(expected)
    assert (rows["text"] == rows["text"].str.upper()).all()
    summary = json.loads(Path(out, "run_summary.json").read_text())
    assert summary["identity"]["holds"] and summary["documents_read"] == 100
    assert summary["documents_written"] == len(expected)
    assert summary["dropped_by_reason"] == {"too_short": 100 - len(expected)}
    assert [t["status"] for t in summary["stage_tasks"]] == ["Completed"] * 4
    # Each stage ran exactly once; each group is a checkpoint with a manifest.
    assert [executions(counters, n) for n in ("make_docs", "drop_short", "upper")] == [1, 4, 4]
    assert len([d for d in os.listdir(work) if not d.startswith("_")]) == 4


def test_rerun_is_served_from_cache_without_executing_stages(ray_cluster, prefect_harness, dirs):
    counters, work, out = dirs
    first = pipeline_flow(str(counters), work, out, fused=True)
    before = sorted(p.name for p in counters.iterdir())
    state = pipeline_flow(str(counters), work, out, fused=True, return_state=True)
    assert state.is_completed()
    assert sorted(p.name for p in counters.iterdir()) == before  # nothing executed again
    summary = json.loads(Path(out, "run_summary.json").read_text())
    assert [t["status"] for t in summary["stage_tasks"]] == ["Cached", "Cached"]
    assert output_rows(state.result()).equals(output_rows(first))


def test_retry_after_injected_failure_gives_the_clean_output(ray_cluster, prefect_harness,
                                                            dirs, tmp_path, clean_rows):
    counters, work, out = dirs
    marker = tmp_path / "failed-once"
    state = pipeline_flow(str(counters), work, out, fail_marker=str(marker), retries=2,
                          return_state=True)
    assert state.is_completed(), state.message
    assert marker.exists()  # the first attempt did fail
    rows = output_rows(state.result())
    assert rows["id"].is_unique
    assert rows.equals(clean_rows)
    # No temporary directories from the failed attempt are left.
    assert not [p for p in os.listdir(work) if ".tmp-" in p]


def test_resume_skips_finished_stages_and_parameter_change_recomputes(
        ray_cluster, prefect_harness, dirs, tmp_path, clean_rows):
    counters, work, out = dirs
    crash = tmp_path / "crash"
    crash.touch()
    state = pipeline_flow(str(counters), work, out, crash_marker=str(crash), return_state=True)
    assert state.is_failed()
    assert executions(counters, "make_docs") == 1 and executions(counters, "drop_short") == 4
    crash.unlink()  # "fix" the crash; same parameters otherwise -> the marker path is part of
    # Upper's identity, so pass it again: the stages before Upper are unchanged.
    state = pipeline_flow(str(counters), work, out, crash_marker=str(crash), return_state=True)
    assert state.is_completed(), state.message
    assert executions(counters, "make_docs") == 1 and executions(counters, "drop_short") == 4
    summary = json.loads(Path(out, "run_summary.json").read_text())
    assert [t["status"] for t in summary["stage_tasks"]][:2] == ["Cached", "Cached"]
    assert output_rows(state.result()).equals(clean_rows)

    # A changed parameter of stage 2 recomputes from stage 2 on, not stage 1.
    counters_before = executions(counters, "make_docs")
    upper_before = executions(counters, "upper")
    pipeline_flow(str(counters), work, out, crash_marker=str(crash), min_len=8)
    assert executions(counters, "make_docs") == counters_before
    assert executions(counters, "upper") == upper_before + 4

    # refresh recomputes everything.
    pipeline_flow(str(counters), work, out, crash_marker=str(crash), min_len=8, refresh=True)
    assert executions(counters, "make_docs") == counters_before + 1


def test_deleted_checkpoint_is_recomputed_not_a_dangling_cache_hit(ray_cluster, prefect_harness,
                                                                    dirs):
    counters, work, out = dirs
    result = pipeline_flow(str(counters), work, out, fused=True)
    ckpt.remove(result.refs[0].path)
    result2 = pipeline_flow(str(counters), work, out, fused=True)
    assert executions(counters, "make_docs") == 2
    assert ckpt.is_complete(result2.refs[0].path)
    summary = json.loads(Path(out, "run_summary.json").read_text())
    assert summary["stage_tasks"][0]["status"] == "Completed"


def test_broken_accounting_fails_the_run(ray_cluster, prefect_harness, dirs):
    counters, work, out = dirs
    state = pipeline_flow(str(counters), work, out, lose=1, fused=True, return_state=True)
    assert state.is_failed()
    with pytest.raises(AccountingError, match="accounting identity broken"):
        state.result()
    summary = json.loads(Path(out, "run_summary.json").read_text())
    assert summary["identity"]["holds"] is False


def test_artifacts_are_published(ray_cluster, prefect_harness, dirs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    counters, work, out = dirs
    state = pipeline_flow(str(counters), work, out, fused=True, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        task_runs = client.read_task_runs()
    keys = {a.key for a in arts}
    types = {a.type for a in arts}
    assert "orchestration-test-summary" in keys and "orchestration-test-progress" in keys
    assert {"table", "markdown", "progress"} <= types
    stage_tables = [a for a in arts if a.key and a.key.startswith("stage-")]
    assert len(stage_tables) == 2
    table = stage_tables[0].data if isinstance(stage_tables[0].data, list) else json.loads(
        stage_tables[0].data)
    assert {"mode", "pool", "batch_size", "documents_in", "dropped", "wall_time_s",
            "docs_per_s"} <= set(table[0])
    progress = [a for a in arts if a.type == "progress"][0]
    assert float(progress.data) == 100.0
    runs = [t for t in task_runs if t.flow_run_id == flow_run_id]
    assert runs and all("curator-stages" in t.tags for t in runs)
