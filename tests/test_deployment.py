"""prefect.yaml end to end, as a user runs it: a Prefect server, a process work pool,
`prefect deploy --all`, a worker, `prefect deployment run` with a parameter override.

Everything runs in subprocesses with their own PREFECT_HOME and API URL, so the session's test
harness is untouched; servers and workers are stopped even when the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a process group this test started (by its id), politely, then firmly."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def run(cmd: list[str], env: dict[str, str], timeout: float = 180) -> str:
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.mark.slow
def test_deploy_and_run_through_a_worker(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
        PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),
        CURATOR_STAGES_HOME=str(REPO), PYTHONPATH=str(REPO),
        PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    server = worker = None
    try:
        server = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=open(logs / "server.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (logs / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(1)

        run([*PREFECT, "work-pool", "create", "curator-process", "--type", "process"], env)
        out = run([*PREFECT, "--no-prompt", "deploy", "--all"], env, timeout=300)
        assert "text-curation-daily" in out

        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "curator-process", "--limit", "1"],
            env=env, cwd=tmp_path, stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)

        output = tmp_path / "out"
        override = {"input": str(SAMPLE / "shard-00002.jsonl.gz"), "output": str(output),
                    "work_dir": str(tmp_path / "work"), "fuzzy_num_perm": 32, "num_cpus": 2}
        res = subprocess.run(
            [*PREFECT, "deployment", "run", "text-curation/text-curation-daily",
             "--param", f"params={json.dumps(override)}", "--watch", "--watch-timeout", "480"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=540)
        text = res.stdout + res.stderr
        assert res.returncode == 0, (text[-3000:] + "\n--- worker ---\n"
                                     + (logs / "worker.log").read_text()[-5000:])
        assert "Completed" in text

        summary = json.loads((output / "run_summary.json").read_text())
        assert summary["identity"]["holds"]
        assert summary["documents_read"] == 750 + 5  # one shard: 750 documents, 5 malformed
        files = sorted((output / "data").glob("*.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == summary["documents_written"] > 0

        # The web flow's deployment, on the same worker: one sample WARC file.
        web_out = tmp_path / "web-out"
        override = {"input": str(REPO / "data" / "web_sample" / "web-00001.warc.gz"),
                    "output": str(web_out), "work_dir": str(tmp_path / "web-work"),
                    "fuzzy_num_perm": 32, "num_cpus": 2}
        res = subprocess.run(
            [*PREFECT, "deployment", "run", "web-curation/web-curation",
             "--param", f"params={json.dumps(override)}", "--watch", "--watch-timeout", "480"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=540)
        text = res.stdout + res.stderr
        assert res.returncode == 0, (text[-3000:] + "\n--- worker ---\n"
                                     + (logs / "worker.log").read_text()[-5000:])
        web = json.loads((web_out / "run_summary.json").read_text())
        assert web["identity"]["holds"] and web["documents_quarantined"] >= 2
        assert web["documents_written"] > 0 and web["skipped_by_kind"]["request"] > 0
        assert web["tokens_written"] > 0
    finally:
        stop(worker)
        stop(server)
