"""prefect.yaml end to end, as a user runs it: a Prefect server, a process work pool,
`prefect deploy --all`, a worker, `prefect deployment run` with a parameter override.

Everything runs in subprocesses with their own PREFECT_HOME and API URL, so the session's test
harness is untouched; servers and workers are stopped even when the test fails.

Both deployments are run at once on the one worker (``--limit 2``), each watched by its own
``prefect deployment run --watch``: the web flow's run starts an embedded Ray, as the usage in
prefect.yaml does; the text flow's run joins the session's Ray cluster through a ``ray_address``
override (the worker has the cluster's token in its environment, as a worker beside a cluster
has), which also spares a second embedded Ray (the text flow's embedded run is tests/test_flow.py's
local run).
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

from tests import fault_helpers as fh
from tests.prefect_homes import clean_env

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


def watch(deployment: str, override: dict, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``prefect deployment run NAME --param params=... --watch``, its output in ``log``."""
    return subprocess.Popen(
        [*PREFECT, "deployment", "run", deployment,
         "--param", f"params={json.dumps(override)}", "--watch", "--watch-timeout", "480"],
        env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True)


def watched(proc: subprocess.Popen, log: Path, worker_log: Path) -> str:
    """Wait for a ``watch`` process; it must end in 0 with the run Completed."""
    try:
        proc.wait(timeout=540)
    finally:
        stop(proc)
    text = log.read_text()
    assert proc.returncode == 0, (text[-3000:] + "\n--- worker ---\n"
                                  + worker_log.read_text()[-5000:])
    assert "Completed" in text, text[-3000:]
    return text


@pytest.mark.slow
def test_deploy_and_run_through_a_worker(ray_cluster, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = clean_env(tmp_path, migrated=True)
    env.update(
        PREFECT_API_URL=api, DO_NOT_TRACK="1",
        PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),
        CURATOR_STAGES_HOME=str(REPO),
        PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5",
    )
    # The worker (and so each flow run it starts) has the session cluster's token; no
    # RAY_ADDRESS: a run joins that cluster only when its parameters say so.
    worker_env = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    worker_env.update(RAY_AUTH_MODE=fh.SESSION_CLUSTER["RAY_AUTH_MODE"],
                      RAY_AUTH_TOKEN=fh.SESSION_CLUSTER["RAY_AUTH_TOKEN"])
    logs = tmp_path / "logs"
    logs.mkdir()
    server = worker = None
    watchers: list[subprocess.Popen] = []
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
            time.sleep(0.5)

        run([*PREFECT, "work-pool", "create", "curator-process", "--type", "process"], env)
        # The worker starts while the deployments are made (it polls the pool meanwhile).
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "curator-process", "--limit", "2"],
            env=worker_env, cwd=tmp_path, stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        out = run([*PREFECT, "--no-prompt", "deploy", "--all"], env, timeout=300)
        assert "text-curation-daily" in out
        assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]

        # The text flow's deployment with a parameter override: one sample shard, on the
        # session's Ray cluster.
        output = tmp_path / "out"
        override = {"input": str(SAMPLE / "shard-00002.jsonl.gz"), "output": str(output),
                    "work_dir": str(tmp_path / "work"), "fuzzy_num_perm": 32,
                    "ray_address": fh.SESSION_CLUSTER["RAY_ADDRESS"]}
        watchers.append(watch("text-curation/text-curation-daily", override, env,
                              logs / "text-run.log"))
        # The web flow's deployment, on the same worker: one sample WARC file (embedded Ray).
        web_out = tmp_path / "web-out"
        override = {"input": str(REPO / "data" / "web_sample" / "web-00001.warc.gz"),
                    "output": str(web_out), "work_dir": str(tmp_path / "web-work"),
                    "fuzzy_num_perm": 32, "num_cpus": 2}
        watchers.append(watch("web-curation/web-curation", override, env, logs / "web-run.log"))

        watched(watchers[0], logs / "text-run.log", logs / "worker.log")
        summary = json.loads((output / "run_summary.json").read_text())
        assert summary["identity"]["holds"]
        assert summary["documents_read"] == 750 + 5  # one shard: 750 documents, 5 malformed
        files = sorted((output / "data").glob("*.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == summary["documents_written"] > 0

        watched(watchers[1], logs / "web-run.log", logs / "worker.log")
        web = json.loads((web_out / "run_summary.json").read_text())
        assert web["identity"]["holds"] and web["documents_quarantined"] >= 2
        assert web["documents_written"] > 0 and web["skipped_by_kind"]["request"] > 0
        assert web["tokens_written"] > 0
    finally:
        for proc in watchers:
            stop(proc)
        stop(worker)
        stop(server)
