"""The reference flow on a Ray cluster it does not own, submitted from outside as a Ray Job.

A two-node cluster is started the way an operator would (``ray start --head`` with the dashboard,
whose job server takes Ray Jobs, and a worker node joining it), in its own process group, on
127.0.0.1 only, with token authentication (the token shared through ``RAY_AUTH_TOKEN``, as a
Kubernetes secret would share it). The flow then runs as the documented Ray Job: ``ray job submit
--address http://127.0.0.1:<dashboard port> -- python <checkout>/flows/text_curation.py ...``
from a process that is no member of the cluster (a Prefect worker outside it); the job's flow
process runs on the head node and finds the cluster through the ``RAY_ADDRESS`` the job gives
it. (A flow cannot run over the Ray Client, ``ray://``: Ray Data's streaming executor fails
there, so the flow refuses that address; tests/test_fail_fast.py.)
Checked: the run is complete and the cluster still has both nodes afterwards; a flow process
SIGKILLed mid-run fails its job, and the job submitted again resumes on the same cluster (the
finished stage task is Cached) and writes the same documents as an uninterrupted run; the
cluster outlives both.

One cluster for the module; its processes are stopped by their ids (found by an environment
marker only they carry), never by ``ray stop``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from tests import fault_helpers as fh
from tests.prefect_homes import clean_env, migrated_home
from tests.test_flow import FLOW_SCRIPT, SAMPLE, read_output
from tests.test_ray_cluster import probe_nodes

REPO = Path(__file__).resolve().parents[1]
LOOPBACK_START = REPO / "tests" / "scripts" / "loopback_ray_start.py"
MARKER = "CURATOR_TEST_EXTERNAL_CLUSTER"
NODE_MARKER = "CURATOR_TEST_EXTERNAL_NODE"
#: Carried by one submitted job's processes (its flow process and that job's Ray workers).
JOB_MARKER = "CURATOR_TEST_EXTERNAL_JOB"
#: The flow run's last line: too late to kill the flow mid-run.
FLOW_DONE = re.compile(r"Flow run '[^']*' - Finished in state")
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
           if not k.startswith(("RAY_ADDRESS", "PYTEST_", "RAY_AUTH_", "PYTHONPATH", "PREFECT_"))}
    env.update({MARKER: marker, "RAY_USAGE_STATS_ENABLED": "0", **auth_env(token)})
    temp_dir = tempfile.mkdtemp(prefix="xc-", dir="/tmp")  # short: Ray's socket paths
    port, client_port, dashboard_port = fh.free_port(), fh.free_port(), fh.free_port()
    address = f"127.0.0.1:{port}"
    try:
        # The head stays on loopback in Ray's single-machine mode; the worker node needs
        # multi-node mode, where only the wrapper keeps its explicit 127.0.0.1. The dashboard
        # (on loopback too) runs the job server that takes the flow as a Ray Job.
        start_node(["ray", "start", "--head", f"--port={port}", "--num-cpus=2",
                    f"--ray-client-server-port={client_port}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                    f"--temp-dir={temp_dir}"],
                   {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        start_node([sys.executable, str(LOOPBACK_START), "start", f"--address={address}",
                    "--num-cpus=2", '--resources={"worker_node": 1}'], env)
        nodes = fh.wait_for(lambda: (lambda n: n if len(n) == 2 else None)(
            probe_nodes(address, probe_env(env))), 180,
            "both nodes of the test cluster to be alive", interval_s=1.0)
        yield {"address": address, "jobs": f"http://127.0.0.1:{dashboard_port}", "env": env,
               "token": token, "marker": marker, "temp_dir": temp_dir,
               "nodes": sorted(n["id"] for n in nodes)}
    finally:
        fh.kill_pids(fh.pids_with_env(MARKER, marker))
        shutil.rmtree(temp_dir, ignore_errors=True)


def probe_env(env: dict[str, str]) -> dict[str, str]:
    """A probe joins by the GCS address: on Linux Ray would turn its 127.0.0.1 into the host's
    network address (where this cluster does not listen) unless single-machine mode is on."""
    return {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def alive_nodes(cluster: dict) -> list[str]:
    return sorted(n["id"] for n in probe_nodes(cluster["address"], probe_env(cluster["env"])))


def submitter_env(cluster: dict, tmp_path: Path) -> dict[str, str]:
    """The submitting side (a Prefect worker on another machine): its own environment (no
    cluster marker, no RAY_ADDRESS), only the job server's address and the shared token."""
    env = {k: v for k, v in clean_env(tmp_path).items()
           if not k.startswith(("RAY_AUTH_", "PYTHONPATH"))}
    env.pop(MARKER, None)
    return {**env, **auth_env(cluster["token"])}


def job_cli(cluster: dict, tmp_path: Path, *args: str, timeout: float = 600,
            log: Path | None = None) -> subprocess.CompletedProcess:
    """``ray job <args> --address <job server>`` from the submitting side."""
    cmd = ["ray", "job", args[0], "--address", cluster["jobs"], *args[1:]]
    if log is None:
        return subprocess.run(cmd, env=submitter_env(cluster, tmp_path), capture_output=True,
                              text=True, timeout=timeout)
    with open(log, "w") as f:
        return subprocess.run(cmd, env=submitter_env(cluster, tmp_path), stdout=f,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)


def submit_flow(cluster: dict, tmp_path: Path, out: Path, work: Path, job_id: str, *,
                wait: bool, log: Path | None = None) -> subprocess.CompletedProcess:
    """The documented submission: the flow's own command line, from the checkout the cluster's
    nodes have, as the entrypoint (no --ray-address: the job's RAY_ADDRESS names the cluster);
    the flow's Prefect home (here: a temporary API's) through runtime_env env_vars. PYTHONPATH
    goes in the entrypoint: the flow's own runtime_env sets it for the workers, and Ray refuses
    a job and a driver that both set one variable."""
    env_vars = {"PREFECT_HOME": str(migrated_home(tmp_path / "prefect-home")),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", JOB_MARKER: job_id}
    return job_cli(cluster, tmp_path, "submit", "--submission-id", job_id, "--runtime-env-json",
                   json.dumps({"env_vars": env_vars}), *([] if wait else ["--no-wait"]), "--",
                   "env", f"PYTHONPATH={REPO}", sys.executable, str(FLOW_SCRIPT),
                   "--input", str(INPUT),
                   "--output", str(out), "--work-dir", str(work), "--fuzzy-num-perm", "32",
                   "--retries", "0", log=log)


def driver_log(cluster: dict, job_id: str) -> str:
    """What the job's flow process printed so far (the head node's job driver log)."""
    paths = list(Path(cluster["temp_dir"]).glob(f"session_*/logs/job-driver-{job_id}.log"))
    return paths[0].read_text(errors="replace") if paths else ""


def finish(cluster: dict, tmp_path: Path, out: Path, work: Path, name: str) -> dict:
    """Submit the flow, wait for its job, and return its run summary."""
    job_id = f"{name}-{uuid.uuid4().hex[:8]}"
    log = tmp_path / f"{name}.log"
    res = submit_flow(cluster, tmp_path, out, work, job_id, wait=True, log=log)
    assert res.returncode == 0, log.read_text()[-4000:] + driver_log(cluster, job_id)[-4000:]
    return json.loads((out / "run_summary.json").read_text())


def command_line(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def job_status(cluster: dict, tmp_path: Path, job_id: str) -> str:
    """"succeeded", "failed" or "stopped" once the job has ended, else ""."""
    res = job_cli(cluster, tmp_path, "status", job_id, timeout=120)
    said = (res.stdout + res.stderr).lower()
    return next((s for s in ("succeeded", "failed", "stopped") if f"' {s}" in said), "")


def test_loopback_ray_start_wraps_a_real_function():
    """Guard for the private Ray function tests/scripts/loopback_ray_start.py wraps."""
    from ray._private import services

    assert services.resolve_ip_for_localhost("10.1.2.3") == "10.1.2.3"


def test_ray_token_mode_helper_is_where_we_expect():
    """Guard for the private Ray helper runtime.ray_cluster.join_cluster uses to switch token mode on."""
    import inspect

    from ray._private.authentication import authentication_token_setup as setup

    params = inspect.signature(setup.maybe_enable_token_auth_if_token_available).parameters
    assert "warn_if_disabled" in params


@pytest.mark.slow
def test_cluster_is_private(cluster):
    """Both nodes on loopback only, and a client without the token is refused."""
    pids = fh.pids_with_env(MARKER, cluster["marker"])
    assert pids and non_loopback_listeners(pids) == []
    # Ray's connect budget for a joining driver (RAY_gcs_server_port_wait_time_s: one try a
    # second, 20 by default) cut to three tries: every refused try is the same refusal.
    env = {**probe_env(cluster["env"]), "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_gcs_server_port_wait_time_s": "3"}
    env.pop(MARKER)
    res = subprocess.run([sys.executable, "-c", "import ray; ray.init(%r)" % cluster["address"]],
                         env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode != 0
    assert "AuthenticationError" in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_flow_as_a_ray_job_resumes_after_sigkill_and_leaves_the_cluster_up(cluster, tmp_path):
    clean_out, clean_work = tmp_path / "clean-out", tmp_path / "clean-work"
    clean = finish(cluster, tmp_path, clean_out, clean_work, "clean")
    assert clean["identity"]["holds"] and clean["documents_written"] > 0
    assert [t["status"] for t in clean["stage_tasks"]] == ["Completed"] * 4
    assert alive_nodes(cluster) == cluster["nodes"]  # the flow only disconnected

    # Kill the job's flow process once its first stage task has finished, then submit again.
    out, work = tmp_path / "out", tmp_path / "work"
    job_id = f"killed-{uuid.uuid4().hex[:8]}"
    res = submit_flow(cluster, tmp_path, out, work, job_id, wait=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    fh.wait_for(lambda: (lambda log: "[1/4]" in log or FLOW_DONE.search(log))(
        driver_log(cluster, job_id)), 600, "the first stage task to finish", interval_s=0.2)
    flow_pids = [pid for pid in fh.pids_with_env(JOB_MARKER, job_id)
                 if "text_curation.py" in command_line(pid)]
    assert flow_pids and not FLOW_DONE.search(driver_log(cluster, job_id)), \
        driver_log(cluster, job_id)[-4000:]
    fh.kill_pids(flow_pids)
    assert fh.wait_for(lambda: job_status(cluster, tmp_path, job_id), 300,
                       "the killed flow's job to end", interval_s=2.0) == "failed"
    assert not (out / "run_summary.json").exists()
    assert alive_nodes(cluster) == cluster["nodes"]  # a killed flow takes no node with it

    resumed = finish(cluster, tmp_path, out, work, "resumed")
    assert resumed["stage_tasks"][0]["status"] == "Cached", resumed["stage_tasks"]
    assert resumed["identity"]["holds"]
    assert resumed["documents_written"] == clean["documents_written"]
    assert read_output(out).equals(read_output(clean_out))
    assert alive_nodes(cluster) == cluster["nodes"]
