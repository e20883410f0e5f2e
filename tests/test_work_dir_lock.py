"""One run at a time per work directory: a second run is refused at once, naming the holder;
the holder is never harmed; a dead holder's lock is free.

Before the lock, two runs on one work directory removed each other's in-progress temporary
checkpoints as "stale", and one failed with a misleading "free space" hint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curator_stages import checkpoints as ckpt
from curator_stages.orchestration.work_dir_lock import (
    HOLDER_FILE,
    LOCK_FILE,
    WorkDirBusyError,
    work_dir_lock,
)
from tests import fault_helpers as fh

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"


def test_lock_refuses_a_second_holder_and_frees_itself(tmp_path):
    work = tmp_path / "work"
    with work_dir_lock(str(work)) as held:
        assert held
        holder = json.loads((work / HOLDER_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with work_dir_lock(str(work)) as again:  # the same thread re-enters
            assert again
        assert (work / LOCK_FILE).exists()  # ... without releasing the outer hold
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                with work_dir_lock(str(work)):
                    pass
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        [err] = errors
        assert isinstance(err, WorkDirBusyError)
        message = str(err)
        assert f"pid {os.getpid()}" in message and str(work) in message
        assert "--work-dir" in message and "Wait" in message
    assert list(work.iterdir()) == []  # lock and holder record removed
    with work_dir_lock(str(work)):  # free again
        pass


def test_lock_of_a_killed_holder_is_free(tmp_path):
    work = tmp_path / "work"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from curator_stages.orchestration.work_dir_lock import work_dir_lock
        with work_dir_lock({str(work)!r}):
            print("held", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(WorkDirBusyError, match=f"pid {proc.pid}"):
            with work_dir_lock(str(work)):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (work / LOCK_FILE).exists()  # left behind by the killed holder, but not held
    with work_dir_lock(str(work)) as held:
        assert held


def test_url_work_dir_takes_no_lock_and_keeps_young_temporaries():
    with work_dir_lock("memory://lock-test/work") as held:
        assert held is False
    import fsspec

    fs = fsspec.filesystem("memory")
    final = "memory://lock-test/work/0123456789abcdef-stage"
    fs.pipe("/lock-test/work/0123456789abcdef-stage.tmp-aaaaaaaa/part-1.parquet", b"x")
    assert ckpt.remove_stale_temporaries(final) == []  # maybe another run's live attempt
    assert fs.exists("/lock-test/work/0123456789abcdef-stage.tmp-aaaaaaaa/part-1.parquet")


def flow_env(ray_cluster) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return fh.join_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO))


def test_two_concurrent_runs_on_one_work_dir(ray_cluster, prefect_harness, tmp_path):
    """Run A holds the work dir (paused mid-run with SIGSTOP, so B surely overlaps it); run B
    on the same work dir is refused at once, naming A; A then finishes with a correct output."""
    work = tmp_path / "work"

    def cmd(out: Path) -> list[str]:
        return [sys.executable, str(FLOW_SCRIPT), "--input", str(SAMPLE / "shard-00002.jsonl.gz"),
                "--output", str(out), "--work-dir", str(work), "--fuzzy-num-perm", "32",
                "--retries", "0"]

    log_a = open(tmp_path / "a.log", "w")
    run_a = subprocess.Popen(cmd(tmp_path / "out-a"), env=flow_env(ray_cluster),
                             stdout=log_a, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def a_holds_the_lock():
            if run_a.poll() is not None:
                raise AssertionError(f"run A ended early: {(tmp_path / 'a.log').read_text()[-3000:]}")
            try:
                return json.loads((work / HOLDER_FILE).read_text())["pid"] == run_a.pid
            except (OSError, ValueError, KeyError):
                return False

        fh.wait_for(a_holds_the_lock, 300, "run A to take the work dir's lock")
        os.kill(run_a.pid, signal.SIGSTOP)  # A keeps its lock (and its stage task) meanwhile
        try:
            run_b = subprocess.run(cmd(tmp_path / "out-b"), env=flow_env(ray_cluster),
                                   capture_output=True, text=True, timeout=400, cwd=tmp_path)
            assert run_a.poll() is None  # B ended while A was still mid-run
        finally:
            os.kill(run_a.pid, signal.SIGCONT)
        run_a.wait(timeout=600)
    finally:
        if run_a.poll() is None:
            run_a.kill()
        log_a.close()
    text_b = run_b.stdout + run_b.stderr
    assert run_b.returncode != 0
    assert "is in use by another run" in text_b and f"pid {run_a.pid}" in text_b, text_b[-3000:]
    assert "--work-dir" in text_b
    assert not (tmp_path / "out-b" / "data").exists()  # B wrote nothing

    assert run_a.returncode == 0, (tmp_path / "a.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "out-a" / "run_summary.json").read_text())
    assert summary["identity"]["holds"]
    assert [t["status"] for t in summary["stage_tasks"]] == ["Completed"] * 4
    rows = sum(pq.read_metadata(f).num_rows for f in (tmp_path / "out-a" / "data").iterdir())
    assert rows == summary["documents_written"] > 0
    assert len(checkpoints := [d for d in work.iterdir() if ckpt.is_complete(str(d))]) == 4
    assert sorted(p.name for p in work.iterdir()) == sorted(d.name for d in checkpoints)
