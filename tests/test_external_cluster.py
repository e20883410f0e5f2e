"""The reference flow on a Ray cluster it does not own, from a process outside that cluster.

A two-node cluster is started the way an operator would (``ray start --head`` and a worker node
joining it), in its own process group, on 127.0.0.1 only, with token authentication (the token
shared through ``RAY_AUTH_TOKEN``, as a Kubernetes secret would share it). The flow then runs
as ``python flows/text_curation.py --ray-address ray://127.0.0.1:<client port>``: a Ray Client
connection, so the flow process (a Prefect worker's flow run) never becomes a member of the
cluster. Checked: the run is complete and the cluster still has both nodes afterwards; a flow
process SIGKILLed mid-run and started again resumes on the same cluster (the finished stage task
is Cached) and writes the same documents as an uninterrupted run; the cluster outlives both.

One cluster for the module; its processes are stopped by their ids (found by an environment
marker only they carry), never by ``ray stop``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from tests import fault_helpers as fh
from tests.test_flow import FLOW_SCRIPT, SAMPLE, clean_env, read_output
from tests.test_ray_cluster import probe_nodes

REPO = Path(__file__).resolve().parents[1]
LOOPBACK_START = REPO / "tests" / "scripts" / "loopback_ray_start.py"
MARKER = "CURATOR_TEST_EXTERNAL_CLUSTER"
NODE_MARKER = "CURATOR_TEST_EXTERNAL_NODE"
INPUT = SAMPLE / "shard-00003.jsonl.zst"


def auth_env(token: str) -> dict[str, str]:
    """What both sides need for token authentication: the mode and the shared token."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def start_node(cmd: list[str], env: dict[str, str], attempts: int = 3) -> None:
    """``ray start`` in its own process group, like a separate host. Ray gives a node a fixed
    30 s to register, which a busy machine can miss: the processes of a failed attempt (found
    by a per-attempt marker) are stopped and the start is tried again (three attempts in all)."""
    for attempt in range(attempts):
        mark = uuid.uuid4().hex
        res = subprocess.run([*cmd, "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                              f"--dashboard-agent-listen-port={fh.free_port()}",
                              f"--metrics-export-port={fh.free_port()}"],
                             env={**env, NODE_MARKER: mark}, capture_output=True, text=True,
                             timeout=300, start_new_session=True)
        if res.returncode == 0:
            return
        fh.kill_pids(fh.pids_with_env(NODE_MARKER, mark))
    raise AssertionError(f"{cmd} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


def non_loopback_listeners(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            ip = c.laddr.ip.removeprefix("::ffff:")
            if c.status == psutil.CONN_LISTEN and not (ip.startswith("127.") or ip == "::1"):
                found.append(f"pid {pid} on {c.laddr.ip}:{c.laddr.port}")
    return found


@pytest.fixture(scope="module")
def cluster():
    marker = uuid.uuid4().hex
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "PYTEST_", "RAY_AUTH_", "PYTHONPATH"))}
    env.update({MARKER: marker, "RAY_USAGE_STATS_ENABLED": "0", **auth_env(token)})
    temp_dir = tempfile.mkdtemp(prefix="xc-", dir="/tmp")  # short: Ray's socket paths
    port, client_port = fh.free_port(), fh.free_port()
    address = f"127.0.0.1:{port}"
    try:
        # The head stays on loopback in Ray's single-machine mode; the worker node needs
        # multi-node mode, where only the wrapper keeps its explicit 127.0.0.1.
        start_node(["ray", "start", "--head", f"--port={port}", "--num-cpus=2",
                    f"--ray-client-server-port={client_port}", "--include-dashboard=false",
                    f"--temp-dir={temp_dir}"],
                   {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        start_node([sys.executable, str(LOOPBACK_START), "start", f"--address={address}",
                    "--num-cpus=2", '--resources={"worker_node": 1}'], env)
        nodes = fh.wait_for(lambda: (lambda n: n if len(n) == 2 else None)(
            probe_nodes(address, probe_env(env))), 180,
            "both nodes of the test cluster to be alive", interval_s=1.0)
        yield {"address": address, "client": f"ray://127.0.0.1:{client_port}", "env": env,
               "token": token, "marker": marker, "nodes": sorted(n["id"] for n in nodes)}
    finally:
        fh.kill_pids(fh.pids_with_env(MARKER, marker))
        shutil.rmtree(temp_dir, ignore_errors=True)


def probe_env(env: dict[str, str]) -> dict[str, str]:
    """A probe joins by the GCS address: on Linux Ray would turn its 127.0.0.1 into the host's
    network address (where this cluster does not listen) unless single-machine mode is on."""
    return {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def alive_nodes(cluster: dict) -> list[str]:
    return sorted(n["id"] for n in probe_nodes(cluster["address"], probe_env(cluster["env"])))


def flow_process(cluster: dict, tmp_path: Path, out: Path, work: Path,
                 log: Path) -> subprocess.Popen:
    """The flow as a Prefect worker on another machine runs it: its own environment (no
    cluster marker, no RAY_ADDRESS), only the client address and the shared token."""
    env = {k: v for k, v in clean_env(tmp_path).items() if not k.startswith("RAY_AUTH_")}
    env["RAY_AUTH_TOKEN"] = cluster["token"]  # the token only: the flow turns token mode on
    env.pop(MARKER, None)
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, str(FLOW_SCRIPT), "--input", str(INPUT), "--output", str(out),
             "--work-dir", str(work), "--fuzzy-num-perm", "32", "--retries", "0",
             "--ray-address", cluster["client"]],
            env=env, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, out: Path) -> dict:
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return json.loads((out / "run_summary.json").read_text())


def test_loopback_ray_start_wraps_a_real_function():
    """Guard for the private Ray function tests/scripts/loopback_ray_start.py wraps."""
    from ray._private import services

    assert services.resolve_ip_for_localhost("10.1.2.3") == "10.1.2.3"


def test_ray_token_mode_helper_is_where_we_expect():
    """Guard for the private Ray helper local_ray.join_cluster uses to switch token mode on."""
    import inspect

    from ray._private.authentication import authentication_token_setup as setup

    params = inspect.signature(setup.maybe_enable_token_auth_if_token_available).parameters
    assert "warn_if_disabled" in params


@pytest.mark.slow
def test_cluster_is_private(cluster):
    """Both nodes on loopback only, and a client without the token is refused."""
    pids = fh.pids_with_env(MARKER, cluster["marker"])
    assert pids and non_loopback_listeners(pids) == []
    env = {**probe_env(cluster["env"]), "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop(MARKER)
    res = subprocess.run([sys.executable, "-c", "import ray; ray.init(%r)" % cluster["address"]],
                         env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode != 0
    assert "AuthenticationError" in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_flow_over_ray_client_resumes_after_sigkill_and_leaves_the_cluster_up(cluster, tmp_path):
    clean_out, clean_work = tmp_path / "clean-out", tmp_path / "clean-work"
    log = tmp_path / "clean.log"
    clean = finish(flow_process(cluster, tmp_path, clean_out, clean_work, log), log, clean_out)
    assert clean["identity"]["holds"] and clean["documents_written"] > 0
    assert [t["status"] for t in clean["stage_tasks"]] == ["Completed"] * 4
    assert alive_nodes(cluster) == cluster["nodes"]  # the flow only disconnected

    # Kill the flow process once its first stage task has finished, then start it again.
    out, work = tmp_path / "out", tmp_path / "work"
    log = tmp_path / "killed.log"
    proc = flow_process(cluster, tmp_path, out, work, log)
    try:
        fh.wait_for(lambda: proc.poll() is not None or "[1/4]" in log.read_text(), 600,
                    "the first stage task to finish", interval_s=0.5)
        assert proc.poll() is None, log.read_text()[-4000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "run_summary.json").exists()
    assert alive_nodes(cluster) == cluster["nodes"]  # a killed client takes no node with it

    log = tmp_path / "resumed.log"
    resumed = finish(flow_process(cluster, tmp_path, out, work, log), log, out)
    assert resumed["stage_tasks"][0]["status"] == "Cached", resumed["stage_tasks"]
    assert resumed["identity"]["holds"]
    assert resumed["documents_written"] == clean["documents_written"]
    assert read_output(out).equals(read_output(clean_out))
    assert alive_nodes(cluster) == cluster["nodes"]
