"""Checkpoints are plain data: nothing in a work directory is ever unpickled, and a work
directory resumes under any Prefect home (the manifest is the cache, not a Prefect record).

A work directory is shared storage: a pickle planted there used to run code as the user on the
next (cached) resume. Task files are now Parquet or JSON with a closed registry of task types,
a manifest listing anything else is refused, and Prefect keeps no result record of our data.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import ray.cloudpickle
from prefect import flow

from curator_stages import DocumentBatch, EmptyTask, FileGroupTask, ProcessingStage, StagePerfStats
from curator_stages import checkpoints as ckpt
from curator_stages.checkpoints.task_files import (
    UnsafeCheckpointError,
    UnsafeTaskError,
    read_task,
    write_task,
)
from tests import fault_helpers as fh
from tests.prefect_homes import migrated_home

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"
FAST = {"fuzzy_num_perm": 32, "retries": 0}

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class _Planted:
    """What an attacker pickles: loading it runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(checkpoint: Path, marker: Path, fmt: int | None = None) -> None:
    """Put a code-running pickle into ``checkpoint`` and list it first in its manifest."""
    (checkpoint / "part-planted.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    manifest_path = checkpoint / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"].insert(0, {"file": "part-planted.pkl", "task_type": "DocumentBatch",
                                 "num_items": 1})
    if fmt is not None:
        manifest["format"] = fmt
    manifest_path.write_text(json.dumps(manifest))


def checkpoints(work: Path) -> list[Path]:
    return sorted(d for d in work.iterdir() if d.is_dir() and (d / "manifest.json").exists())


# ----------------------------------------------------------------------------- task files
def test_every_task_type_is_stored_as_parquet_or_json_and_round_trips(tmp_path):
    history = [StagePerfStats("read", 0.5, 0, 2, {"documents_read": 2})]
    batch = DocumentBatch("t1", "ds", pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"]}),
                          _metadata={"dropped_documents": [{"id": "c", "drop_reason": "short"}],
                                     "quarantine_files": ["/q/a.jsonl"]},
                          _stage_perf=history)
    files = FileGroupTask("g1", "ds", ["/a", "/b"], reader_options={"k": 1},
                          _metadata={"input_root": "/"}, _stage_perf=history)
    empty = EmptyTask()
    for i, task in enumerate((batch, files, empty)):
        name = write_task(task, str(tmp_path / f"part-{i}"))
        assert name.endswith((".parquet", ".json")), name
        loaded = read_task(str(tmp_path / name))
        assert type(loaded) is type(task) and loaded.task_id == task.task_id
        assert loaded.metadata == task.metadata and loaded._stage_perf == task._stage_perf
    assert read_task(str(tmp_path / "part-1.json")) == files
    assert read_task(str(tmp_path / "part-0.parquet")).to_pandas().equals(batch.to_pandas())


def test_a_task_that_is_not_plain_data_is_refused_naming_stage_and_key(tmp_path):
    bad = DocumentBatch("t1", "ds", pa.table({"id": ["a"]}),
                        _metadata={"examples": pa.table({"id": ["b"]})},
                        _stage_perf=[StagePerfStats("my_filter")])
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        write_task(bad, str(tmp_path / "part-0"))
    assert isinstance(err.value, UnsafeTaskError)
    assert "stage 'my_filter'" in str(err.value) and "'examples'" in str(err.value)
    assert "pyarrow.lib.Table" in str(err.value)

    class Custom(FileGroupTask):
        pass

    with pytest.raises(UnsafeTaskError, match="Custom.*cannot be checkpointed"):
        write_task(Custom("t", "ds", []), str(tmp_path / "part-1"))
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing pickled instead


class SetInMetadata(ProcessingStage):
    """Puts a set (not JSON data) into the metadata of the task it returns."""

    name = "set_in_metadata"

    def __init__(self, attempts_dir: str) -> None:
        self.attempts_dir = attempts_dir

    def process(self, task):
        Path(self.attempts_dir, os.urandom(6).hex()).touch()
        return task.derive(task.data, seen={"a", "b"})


@flow(name="unsafe-metadata-test")
def unsafe_metadata_flow(attempts_dir: str, work_dir: str) -> None:
    from curator_stages.orchestration import (
        DatasetRef,
        RaySession,
        StageTaskOptions,
        run_stage_groups,
    )

    with RaySession():
        run_stage_groups([[SetInMetadata(attempts_dir)]], DatasetRef.seed("unsafe-metadata"),
                         work_dir, options=StageTaskOptions(retries=2))


def test_a_stage_task_with_unsafe_metadata_fails_once_naming_stage_and_key(
        ray_cluster, prefect_harness, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    state = unsafe_metadata_flow(str(attempts), str(tmp_path / "work"), return_state=True)
    assert state.is_failed()
    assert "UnsafeTaskError" in state.message, state.message
    assert "stage 'set_in_metadata'" in state.message and "key 'seen'" in state.message
    assert len(list(attempts.iterdir())) == 1  # permanent: retries=2 did not run it again
    assert list((tmp_path / "work").iterdir()) == []  # no checkpoint, nothing pickled


def test_a_pickle_is_refused_unread(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "part-000000.pkl"
    path.write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(UnsafeCheckpointError, match="never loads"):
        read_task(str(path))
    # A checkpoint whose manifest lists it is refused, not served.
    cp = tmp_path / "0123456789abcdef-stage"
    with ckpt.CheckpointWriter(str(cp)) as w:
        w.write(EmptyTask())
        w.commit(fingerprint="0" * 64, stages=["stage"])
    plant_pickle(cp, marker)
    with pytest.raises(UnsafeCheckpointError, match="part-planted.pkl"):
        ckpt.is_complete(str(cp))
    with pytest.raises(UnsafeCheckpointError):
        ckpt.read_tasks(str(cp))
    assert not marker.exists()


# ----------------------------------------------------------------------------- the flow
@pytest.fixture(scope="module")
def curated(ray_cluster, prefect_harness, tmp_path_factory):
    """One real run of flows/text_curation.py on one shard (reused by the tests below)."""
    from flows.text_curation import TextCurationParams, text_curation

    root = tmp_path_factory.mktemp("curated")
    params = TextCurationParams(input=str(SAMPLE / "shard-00002.jsonl.gz"),
                                output=str(root / "out"), work_dir=str(root / "work"), **FAST)
    summary = text_curation(params)
    return root, params, summary


def test_a_real_run_writes_no_pickle_anywhere(curated):
    root, _, summary = curated
    work = root / "work"
    found = [p for p in work.rglob("*") if p.is_file()]
    assert len(checkpoints(work)) == 4
    assert found and not [p for p in found if p.suffix not in (".parquet", ".json")], found
    # The quality filter's dropped examples are in its checkpoint, as JSON rows.
    quality = next(d for d in checkpoints(work) if d.name.endswith("-quality_filter"))
    [task] = ckpt.read_tasks(str(quality))
    examples = task.metadata["dropped_documents"]
    assert examples and all("drop_reason" in r and "text" in r for r in examples)
    assert not list((root / "work").glob("_prefect_results*"))
    assert summary["identity"]["holds"]


def test_planted_pickle_in_a_checkpoint_is_refused_and_never_run(curated, tmp_path):
    from flows.text_curation import text_curation

    root, params, _ = curated
    marker = tmp_path / "code-ran"
    for cp in checkpoints(root / "work"):
        plant_pickle(cp, marker)
    state = text_curation(params, return_state=True)
    assert state.is_failed()
    assert "never loads" in state.message and "part-planted.pkl" in state.message
    assert not marker.exists()
    # A checkpoint of the old format listing a pickle is not complete: recomputed, not loaded.
    for cp in checkpoints(root / "work"):
        manifest = json.loads((cp / "manifest.json").read_text())
        manifest["format"] = 1
        (cp / "manifest.json").write_text(json.dumps(manifest))
    state = text_curation(params, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert [t["status"] for t in summary["stage_tasks"]] == ["Completed"] * 4
    assert not marker.exists()
    assert not [p for p in (root / "work").rglob("*.pkl")]


# ----------------------------------------------------------------------------- Prefect homes
def flow_env(tmp_path: Path, home: str, ray_cluster) -> dict[str, str]:
    """A `python flows/text_curation.py` environment with its own PREFECT_HOME (migrated; a
    temporary API on it, no server), on this session's Ray cluster."""
    env = {k: v for k, v in fh.join_env().items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(migrated_home(tmp_path / home)), PYTHONPATH=str(REPO),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def test_work_dir_resumes_under_another_prefect_home(ray_cluster, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, str(FLOW_SCRIPT), "--input", str(SAMPLE / "shard-00002.jsonl.gz"),
           "--output", str(out), "--work-dir", str(work), "--fuzzy-num-perm", "32",
           "--retries", "0"]
    first = subprocess.run(cmd, env=flow_env(tmp_path, "home-a", ray_cluster), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    summary_a = json.loads((out / "run_summary.json").read_text())
    assert [t["status"] for t in summary_a["stage_tasks"]] == ["Completed"] * 4
    data_a = {p.name: p.read_bytes() for p in (out / "data").iterdir()}

    second = subprocess.run(cmd, env=flow_env(tmp_path, "home-b", ray_cluster), cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    text = second.stdout + second.stderr
    assert second.returncode == 0, text[-3000:]
    assert "outside of the base path" not in text
    summary_b = json.loads((out / "run_summary.json").read_text())
    assert [t["status"] for t in summary_b["stage_tasks"]] == ["Cached"] * 4
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == data_a
    for key in ("documents_read", "documents_written", "documents_dropped",
                "documents_quarantined", "dropped_by_reason"):
        assert summary_b[key] == summary_a[key], key
    # Neither Prefect home holds a result record of our data.
    for home in ("home-a", "home-b"):
        storage = tmp_path / home / "storage"
        assert not storage.exists() or not [p for p in storage.rglob("*") if p.is_file()]
