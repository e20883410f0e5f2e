"""The warm local Ray (``curator-stages ray start/status/stop``), with real processes.

One test walks the whole life of a warm Ray, because each step needs the one before (and a Ray
start costs seconds here): started by the CLI in its own state directory (so it never meets the
session's test cluster), private (loopback sockets, token refused without it), joined by the
reference flow through ``RAY_ADDRESS`` alone and by ``RayDataExecutor`` through
``RAY_ADDRESS=auto``, still the same processes afterwards, and gone after ``stop``. Cleanup
kills only the processes of the tree this test started, by pid.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.prefect_homes import migrated_home
from tests.test_process_safety import is_loopback

REPO = Path(__file__).resolve().parents[1]
FLOW = REPO / "flows" / "text_curation.py"
SAMPLE = REPO / "data" / "sample"
#: One shard: each run only has to show it joined the warm Ray and wrote a balanced output.
SHARD = SAMPLE / "shard-00003.jsonl.zst"

NO_TOKEN_JOIN = """
import ray
try:
    ray.init(address={address!r}, log_to_driver=False)
    print("CONNECTED")
except Exception as exc:
    print("REFUSED", type(exc).__name__)
"""

EXECUTOR_JOIN = """
import json, os, sys
sys.path.insert(0, {repo!r})
import psutil, ray
from benchmarks.pipeline import accounting, reference_stages
from curator_stages.backends.ray_data import RayDataExecutor

out = RayDataExecutor(progress_bars=False).execute(reference_stages({sample!r}, {out!r}))
print(json.dumps(dict(accounting(out), still_initialized=ray.is_initialized())))
"""


def warm_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment minus any Ray address or token (the session cluster's)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_", "PYTEST_", "PREFECT_API_URL"))}
    env.update(CURATOR_STAGES_RAY_DIR=str(tmp_path / "warm-ray"), PYTHONPATH=str(REPO),
               PREFECT_HOME=str(migrated_home(tmp_path / "prefect-home")),
               HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curator_stages.cli", "ray", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def tree_of(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.slow
def test_warm_ray_serves_runs_privately_outlives_them_and_stops_cleanly(tmp_path):
    env = warm_env(tmp_path)
    state_dir = tmp_path / "warm-ray"
    started = cli(env, "start", "--num-cpus", "2")
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((state_dir / "state.json").read_text())
    seen: dict[int, psutil.Process] = {}
    try:
        holder = psutil.Process(state["pid"])
        address = state["address"]
        token_file = Path(state["token_path"])
        # The export line is all a user needs; the token itself is never printed.
        assert f"export RAY_ADDRESS={address} RAY_AUTH_TOKEN_PATH={token_file}" in started.stdout
        assert address.startswith("127.0.0.1:")
        assert token_file.read_text().strip() not in started.stdout + started.stderr
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert not (tmp_path / "home" / ".ray").exists()

        again = cli(env, "start")
        assert again.returncode == 1 and "already running" in again.stderr, again.stderr
        status = cli(env, "status")
        assert status.returncode == 0 and address in status.stdout and "2 CPUs" in status.stdout

        for proc in tree_of(holder.pid):
            seen[proc.pid] = proc
        sockets = [(p.pid, p.name(), c.laddr.ip) for p in seen.values()
                   for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert any(name == "gcs_server" for _, name, _ in sockets), sockets
        exposed = [s for s in sockets if not is_loopback(s[2])]
        assert not exposed, f"the warm Ray listens beyond loopback: {exposed}"

        # Without the token (and with the loopback switch, so the address is really tried),
        # the GCS refuses the connection. Ray's own connect budget for a joining driver
        # (RAY_gcs_server_port_wait_time_s: one try a second, 20 by default) is cut to three
        # tries: each refused try logs the same refusal, so the first one is the proof.
        bare = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "CURATOR_STAGES_RAY_DIR": "/nx",
                "RAY_gcs_server_port_wait_time_s": "3"}
        refused = subprocess.run([sys.executable, "-c", NO_TOKEN_JOIN.format(address=address)],
                                 env=bare, capture_output=True, text=True, timeout=300,
                                 cwd=tmp_path)
        assert "CONNECTED" not in refused.stdout, refused.stdout
        assert "Authentication token is missing or incorrect" in refused.stderr

        # The reference flow joins by RAY_ADDRESS alone (the token is found by the address).
        out = tmp_path / "out"
        flow = subprocess.run(
            [sys.executable, str(FLOW), "--input", str(SHARD), "--output", str(out),
             "--work-dir", str(tmp_path / "work"), "--fuzzy-num-perm", "32", "--retries", "0"],
            env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=900,
            cwd=tmp_path)
        assert flow.returncode == 0, (flow.stdout + flow.stderr)[-4000:]
        assert f"connecting to the Ray cluster at {address}" in flow.stdout + flow.stderr
        assert list((out / "data").glob("*.parquet"))
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["documents_written"] > 0
        assert summary["documents_read"] == (summary["documents_written"]
                                             + summary["documents_dropped"]
                                             + summary["documents_quarantined"])

        # RayDataExecutor joins it through RAY_ADDRESS=auto (this user's warm Ray) and detaches.
        exe = subprocess.run(
            [sys.executable, "-c", EXECUTOR_JOIN.format(repo=str(REPO), sample=str(SHARD),
                                                        out=str(tmp_path / "exe-out"))],
            env={**env, "RAY_ADDRESS": "auto"}, capture_output=True, text=True, timeout=600,
            cwd=tmp_path)
        assert exe.returncode == 0, (exe.stdout + exe.stderr)[-4000:]
        result = json.loads(exe.stdout.strip().splitlines()[-1])
        assert result["documents_written"] > 0 and result["still_initialized"] is False

        # Neither run stopped it: the same holder, GCS and raylet are alive and serving.
        for proc in tree_of(holder.pid):
            seen.setdefault(proc.pid, proc)
        for name in ("gcs_server", "raylet"):
            procs = [p for p in seen.values() if p.is_running() and p.name() == name]
            assert len(procs) == 1, f"{name}: {procs}"
        assert holder.is_running() and holder.create_time() == state["create_time"]
        assert cli(env, "status").returncode == 0

        stopped = cli(env, "stop", timeout=120)
        assert stopped.returncode == 0 and address in stopped.stdout, stopped.stdout
        psutil.wait_procs(list(seen.values()), timeout=60)
        alive = [p for p in seen.values()
                 if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left running after stop: {alive}"
        assert not (state_dir / "state.json").exists() and not token_file.exists()
        assert cli(env, "status").returncode == 3
    finally:
        try:
            seen.update({p.pid: p for p in tree_of(state["pid"])})
        except psutil.Error:
            pass
        for proc in seen.values():
            try:
                proc.kill()
            except psutil.Error:
                pass


def test_a_state_file_another_user_could_write_is_not_trusted(tmp_path, monkeypatch):
    """A planted state file would point runs at a cluster and a token of someone else's choosing:
    a state directory or file writable by others is ignored, as if no warm Ray ran."""
    from curator_stages.runtime import warm as warm_ray

    folder = tmp_path / "warm-ray"
    folder.mkdir(mode=0o700)
    me = psutil.Process()
    state = folder / warm_ray.STATE_FILE
    state.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time(),
                                 "address": "127.0.0.1:1", "num_cpus": 1.0,
                                 "token_path": str(folder / warm_ray.TOKEN_FILE)}))
    state.chmod(0o600)
    monkeypatch.setenv(warm_ray.STATE_DIR_ENV, str(folder))
    assert warm_ray.recorded() is not None  # the live holder (this process), private files
    state.chmod(0o666)
    assert warm_ray.recorded() is None
    state.chmod(0o600)
    folder.chmod(0o777)
    assert warm_ray.recorded() is None
    with pytest.raises(warm_ray.WarmRayError, match="none runs"):
        warm_ray.resolve_auto("auto")  # never Ray's own search of the machine
