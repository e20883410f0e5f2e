"""Faults a long curation run must survive, or report clearly (docs/reliability.md).

- a Ray worker (task mode) or actor running a stage is SIGKILLed mid-stage: the run completes
  and its output equals a clean run's (no duplicate, no missing document);
- a stage's ``setup`` (model loading) raises: one StageSetupError naming the stage and the
  cause, quickly, with no restart loop;
- the flow process itself is SIGKILLed mid-run: the re-run resumes from the last complete
  checkpoint, never takes a half-written one as complete, and gives the clean output;
- the output location fails (disk full, not a directory): an error naming the path, nothing
  partial that looks complete, and a re-run after the fix succeeds.

The basic "a stage raises once and the Prefect retry completes" and "resume after a failed
stage" cases are in tests/test_orchestration.py.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle

from curator_stages.backends.ray_data import (
    RayDataExecutor,
    StageSetupError,
    apply_stages,
)
from curator_stages.io import JsonlWriter, ParquetWriter
from curator_stages.io.filesystem import OutputWriteError
from curator_stages import checkpoints as ckpt
from tests import fault_helpers as fh

ray.cloudpickle.register_pickle_by_value(fh)

REPO = Path(__file__).resolve().parents[1]
FAULT_FLOW = REPO / "tests" / "scripts" / "fault_flow.py"


# ----------------------------------------------------------------------------- helpers
class Killer(threading.Thread):
    """Waits for the blocked stage's pid, marks the kill (so the retry goes through), kills."""

    def __init__(self, pid_file: Path, killed_marker: Path, timeout_s: float = 180.0):
        super().__init__(daemon=True)
        self.pid_file, self.killed_marker, self.timeout_s = pid_file, killed_marker, timeout_s
        self.killed_pid: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            pid = fh.wait_for(lambda: fh.read_pid(self.pid_file), self.timeout_s,
                              "the stage to block and record its pid")
            self.killed_marker.touch()
            os.kill(pid, signal.SIGKILL)
            self.killed_pid = pid
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def run_plan(tasks, stages, blocks: int = 2):
    """The adapter path every backend uses: tasks in ``blocks`` Ray Data blocks, stages applied,
    output tasks pulled on the driver (several tasks per block, so a retried map task that had
    already produced part of its output would show up as duplicates)."""
    import ray.data

    ds = ray.data.from_items([{"item": t} for t in tasks], override_num_blocks=blocks)
    out = []
    for batch in apply_stages(ds, stages).iter_batches(batch_size=None, batch_format="numpy"):
        out.extend(batch["item"])
    return out


def clean_run(tasks, stage):
    """What a run without faults gives: the same stage, sequentially, in this process."""
    return stage.run([t.derive(t.data) for t in tasks])


# ----------------------------------------------------------------------------- worker kills
@pytest.mark.parametrize("actor", [False, True], ids=["task-worker", "actor"])
def test_worker_killed_mid_stage_run_completes_with_clean_output(ray_cluster, tmp_path, actor):
    pid_file, killed = tmp_path / "victim.pid", tmp_path / "killed"
    setups = tmp_path / "setups"
    setups.mkdir()
    cls = fh.BlockOnceActorStage if actor else fh.BlockOnceStage
    stage = cls(victim_task="t05", pid_file=str(pid_file), killed_marker=str(killed),
                actor=actor, setup_log=str(setups))
    tasks = fh.doc_batches(8)

    killer = Killer(pid_file, killed)
    killer.start()
    out = run_plan(tasks, [stage])
    killer.join(timeout=30)
    assert killer.error is None, killer.error
    assert killer.killed_pid is not None and not fh.pid_alive(killer.killed_pid)

    ids = [r[0] for r in fh.rows_of(out, ("id",))]
    assert len(ids) == len(set(ids)) == 40, "a duplicate or missing document after the kill"
    assert fh.rows_of(out) == fh.rows_of(clean_run(tasks, stage))
    # The victim's documents were processed again, by another process.
    victim = next(t for t in out if t.task_id == "t05").to_pyarrow()
    assert set(victim["worker_pid"].to_pylist()) == {victim["worker_pid"][0].as_py()}
    assert victim["worker_pid"][0].as_py() != killer.killed_pid
    if actor:  # Ray restarted the killed actor (setup ran again in a new process)
        setup_pids = {p.name.split("-")[0] for p in setups.iterdir()}
        assert str(killer.killed_pid) in setup_pids and len(setup_pids) >= 2


# ----------------------------------------------------------------------------- setup failure
@pytest.mark.parametrize("actor", [True, False], ids=["actor", "task-mode"])
def test_failing_setup_names_stage_and_cause_once_without_restart_loop(ray_cluster, tmp_path,
                                                                      actor):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    stage = fh.FailingSetupStage(str(attempts), actor=actor)
    started = time.monotonic()
    with pytest.raises(StageSetupError) as err:
        RayDataExecutor().execute([stage], fh.doc_batches(6))
    elapsed = time.monotonic() - started
    message = str(err.value)
    assert message.startswith("stage 'load_model': setup() failed")
    assert "FileNotFoundError: model weights /models/classifier.bin not found" in message
    assert message.count("model weights") == 1 and "\n" not in message
    assert err.value.stage_name == "load_model"
    assert elapsed < 120, f"setup failure took {elapsed:.0f}s to surface"
    # Ray does not restart a worker whose setup raised: at most one attempt per worker that
    # the pool started (2 CPUs -> at most 2 workers), and no new attempts after the error.
    count = len(list(attempts.iterdir()))
    assert 1 <= count <= 2
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # an observation window, not a synchronisation
        assert len(list(attempts.iterdir())) == count, "setup is being retried in a loop"
        time.sleep(0.2)


# ----------------------------------------------------------------------------- flow killed
def make_jsonl_input(root: Path, files: int = 6, per_file: int = 5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [json.dumps({"text": f"file {f} document {d} " + "words " * (d + 1)})
                 for d in range(per_file)]
        (root / f"part-{f:02d}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def output_rows(output: Path) -> list[tuple]:
    rows = []
    for path in sorted((output / "data").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            rows.append((rec["id"], rec["text"], rec["length"]))
    return sorted(rows)


def load_fault_flow():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_flow", FAULT_FLOW)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_flow"] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)
    return module


@pytest.fixture(scope="module")
def fault_flow_module():
    return load_fault_flow()


def clean_run_rows(tmp_root: Path) -> list[tuple]:
    """The output rows of an uninterrupted fault-flow run on ``make_jsonl_input``'s default
    input, what a resumed run must write. The run is made once per session (in process, on the
    session's Ray and Prefect API; needs both fixtures): the local-disk and the S3 resume tests
    compare against the same rows (a row's id names its file, not the directory). The rows are
    kept in tests.fault_helpers, which every test module shares (pytest imports this file as
    ``test_faults`` and other modules import it as ``tests.test_faults``: two module objects)."""
    cache = fh.SESSION_RESULTS
    if "clean_fault_rows" not in cache:
        clean_out = tmp_root / "clean-out"
        load_fault_flow().fault_flow(str(make_jsonl_input(tmp_root / "in")), str(clean_out),
                                     str(tmp_root / "clean-work"))
        cache["clean_fault_rows"] = output_rows(clean_out)
    return cache["clean_fault_rows"]


def subprocess_env(ray_cluster, **extra: str) -> dict[str, str]:
    """Environment of a flow subprocess: this session's Ray cluster and Prefect API."""
    from prefect.settings import PREFECT_API_URL

    return fh.join_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO), **extra)


def records(record_dir: Path, stage: str) -> list[str]:
    return sorted(p.name for p in record_dir.glob(f"{stage}-*"))


def test_flow_process_killed_mid_run_resumes_from_last_complete_checkpoint(
        ray_cluster, prefect_harness, tmp_path):
    inp = make_jsonl_input(tmp_path / "in")
    work, out, rec, block = (tmp_path / n for n in ("work", "out", "rec", "block"))
    rec.mkdir()
    block.mkdir()
    cmd = [sys.executable, str(FAULT_FLOW), "--input", str(inp), "--output", str(out),
           "--work-dir", str(work), "--record-dir", str(rec)]
    partial, complete = fh.kill_flow_when_blocked(
        cmd, subprocess_env(ray_cluster, CURATOR_FAULT_BLOCK_DIR=str(block)), REPO, tmp_path,
        block, lambda: [d for d in work.glob("*.tmp-*") if list(d.glob("part-*"))], 300,
        "stage 3 to block with part of its output written",
        before_kill=lambda: sorted(d.name for d in work.iterdir()
                                   if d.is_dir() and ckpt.is_complete(str(d))))
    # At the kill: stages 1-2 complete, stage 3 half-written (parts, no manifest).
    assert sorted(c.split("-", 1)[1] for c in complete) == [
        "file_partitioning+jsonl_read", "tag"], complete
    assert not ckpt.is_complete(str(partial[0]))
    manifests = {c: (work / c / "manifest.json").stat().st_mtime_ns for c in complete}
    tags_before = records(rec, "tag")
    assert len(tags_before) == 6

    summary = fh.run_flow_summary(cmd, subprocess_env(ray_cluster), REPO, 400)
    assert [t["status"] for t in summary["stage_tasks"]] == [
        "Cached", "Cached", "Completed", "Completed"]
    assert records(rec, "tag") == tags_before, "a stage before the crash ran again"
    assert {c: (work / c / "manifest.json").stat().st_mtime_ns for c in complete} == manifests
    assert not list(work.glob("*.tmp-*")), "the half-written checkpoint was not cleaned up"
    assert summary["identity"]["holds"] and summary["documents_written"] == 30

    rows = output_rows(out)
    assert len(rows) == len({r[0] for r in rows}) == 30
    assert rows == clean_run_rows(tmp_path / "clean")


# ----------------------------------------------------------------------------- output fails
def doc_table_batches(n: int = 3):
    return fh.doc_batches(n, per_task=20, prefix="w")


@pytest.mark.parametrize("writer_cls", [ParquetWriter, JsonlWriter])
def test_disk_full_while_writing_names_the_path_and_leaves_nothing_partial(writer_cls):
    root = f"failfs://out-{uuid.uuid4().hex[:8]}"
    full = {"capacity_bytes": 1500}
    writer = writer_cls(root, mode="error", storage_options=full)
    with pytest.raises(OutputWriteError) as err:
        writer.run(doc_table_batches())
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert f"stage {writer.stage_name!r}" in message and root.split("://")[1] in message
    assert "No space left on device" in message and "part-" in message
    # Whatever was written completely is valid; nothing partial sits under a final name or in
    # the staging area.
    listing = fh.failfs_listing(root)
    assert not [p for p in listing if "_staging" in p or "_tmp" in p], listing
    fs = fh.FailingFileSystem()
    for path in listing:
        with fs.open(path, "rb") as f:
            data = f.read()
        if writer_cls is ParquetWriter:
            pq.read_table(pa.BufferReader(data))  # a complete file, not a torn one
        else:
            [json.loads(line) for line in data.decode().splitlines()]
    # The fix: more space. The re-run (overwrite, as the flows write) writes every batch.
    again = writer_cls(root, mode="overwrite", storage_options={"capacity_bytes": None})
    out = again.run(doc_table_batches())
    assert sum(t._stage_perf[-1].custom_metrics["documents_written"] for t in out) == 60
    assert len(fh.failfs_listing(root)) == 3


def test_disk_full_while_checkpointing_names_it_and_leaves_no_checkpoint():
    final = f"failfs://work-{uuid.uuid4().hex[:8]}/0123456789abcdef-stage"
    fh.FailingFileSystem.default_capacity = 1500
    try:
        with pytest.raises(OSError) as err:
            with ckpt.CheckpointWriter(final) as writer:
                for task in doc_table_batches():
                    writer.write(task)
                writer.commit(fingerprint="0" * 64, stages=["stage"])
    finally:
        fh.FailingFileSystem.default_capacity = None
    assert err.value.errno == errno.ENOSPC
    assert final.split("://")[1] in str(err.value) and "No space left" in str(err.value)
    assert not ckpt.is_complete(final)
    assert fh.failfs_listing(final.rsplit("/", 1)[0]) == []  # the temporary dir is gone


def test_output_path_under_a_file_fails_clearly_and_rerun_after_fix_resumes(
        ray_cluster, prefect_harness, fault_flow_module, tmp_path):
    """The run holds its output's lock from the start, so an output under a file is found
    before any stage task (it used to fail in the writer, after three checkpoints)."""
    inp = make_jsonl_input(tmp_path / "in", files=2, per_file=3)
    blocker = tmp_path / "results"
    blocker.write_text("not a directory\n")
    out, work = blocker / "run1", tmp_path / "work"
    state = fault_flow_module.fault_flow(str(inp), str(out), str(work), return_state=True)
    assert state.is_failed()
    with pytest.raises(OSError) as err:
        state.result()
    assert str(out) in str(err.value) and "not a directory" in str(err.value).lower()
    assert "--output" in str(err.value) and err.value.errno == errno.ENOTDIR
    assert not [d for d in work.iterdir() if d.is_dir() and ckpt.is_complete(str(d))]

    blocker.unlink()  # the fix
    state = fault_flow_module.fault_flow(str(inp), str(out), str(work), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert [t["status"] for t in summary["stage_tasks"]] == ["Completed"] * 4
    assert len(output_rows(out)) == 6


def test_failing_setup_fails_the_stage_task_with_a_one_line_message(
        ray_cluster, prefect_harness, fault_flow_module, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    state = fault_flow_module.setup_failure_flow(str(attempts), str(tmp_path / "work"),
                                                 retries=1, return_state=True)
    assert state.is_failed()
    assert "StageSetupError: stage 'load_model': setup() failed" in state.message
    assert "FileNotFoundError: model weights" in state.message
    assert "Traceback" not in state.message and "ray::" not in state.message
    with pytest.raises(StageSetupError):
        state.result()
    # A setup failing with FileNotFoundError is permanent: retries=1 does not start a second
    # attempt of the stage task (see test_retry_policy.py); at most one setup per worker the
    # pool started, never a restart loop.
    assert 1 <= len(list(attempts.iterdir())) <= 2
    assert not [p for p in (tmp_path / "work").iterdir() if not p.name.startswith("_")]
