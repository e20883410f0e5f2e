"""Scale-out on an existing Ray cluster, started as separate processes like a real deployment.

Two nodes on this machine (``ray start --head`` on a free loopback port and a second
``ray start --address=...``), then the flow runs in a subprocess with ``RAY_ADDRESS`` pointing at
it (this test process already holds the session's Ray; a driver joins one cluster only). Checked:
stage work ran on both nodes; ``ignore_head_node`` keeps actor work off the head; the cluster is
still up afterwards (the flow only disconnected). The cluster's processes are stopped by their
ids (found by an environment marker only they carry), never by a global ``ray stop``, which
would also kill the session's cluster and other people's.

Pool sizing on multi-node clusters with logical GPUs is in tests/test_multinode.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests import fault_helpers as fh

REPO = Path(__file__).resolve().parents[1]
FAULT_FLOW = REPO / "tests" / "scripts" / "fault_flow.py"
MARKER = "CURATOR_TEST_RAY_CLUSTER"

PROBE = """
import json, ray
ray.init(address="{address}", log_to_driver=False)
nodes = [n for n in ray.nodes() if n["Alive"]]
print("NODES " + json.dumps([{{"id": n["NodeID"], "head": "node:__internal_head__" in n["Resources"],
                              "worker_node": "worker_node" in n["Resources"]}} for n in nodes]))
ray.shutdown()
"""


def cluster_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "PYTEST_"))}
    env.update({MARKER: token, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": str(REPO)})
    return env


def probe_nodes(address: str, env: dict[str, str]) -> list[dict]:
    res = subprocess.run([sys.executable, "-c", PROBE.format(address=address)], env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.split("NODES ", 1)[1].splitlines()[0])


def ray_start(args: list[str], env: dict[str, str]) -> None:
    res = subprocess.run(["ray", "start", *args, "--disable-usage-stats",
                          f"--dashboard-agent-listen-port={fh.free_port()}",
                          f"--metrics-export-port={fh.free_port()}"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, f"ray start {args} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}"


@pytest.fixture(scope="module")
def external_cluster():
    token = uuid.uuid4().hex
    env = cluster_env(token)
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths
    port = fh.free_port()
    address = f"127.0.0.1:{port}"
    try:
        ray_start(["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                   f"--temp-dir={temp_dir}"], env)
        ray_start([f"--address={address}", "--num-cpus=2", '--resources={"worker_node": 1}'],
                  env)
        nodes = fh.wait_for(lambda: (lambda n: n if len(n) == 2 else None)(
            probe_nodes(address, env)), 180, "both nodes of the test cluster to be alive",
            interval_s=1.0)
        yield {"address": address, "env": env,
               "head": next(n["id"] for n in nodes if n["head"]),
               "worker": next(n["id"] for n in nodes if n["worker_node"])}
    finally:
        fh.kill_pids(fh.pids_with_env(MARKER, token))
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_flow(cluster: dict, tmp_path: Path, name: str, *extra: str) -> tuple[dict, dict]:
    """Run the test flow against the cluster; returns (summary, stage -> node ids)."""
    from prefect.settings import PREFECT_API_URL

    inp = tmp_path / "in"
    if not inp.exists():
        inp.mkdir()
        for f in range(8):
            (inp / f"part-{f:02d}.jsonl").write_text("".join(
                json.dumps({"text": f"file {f} doc {d}"}) + "\n" for d in range(4)))
    rec = tmp_path / f"rec-{name}"
    rec.mkdir()
    env = {**cluster["env"], "RAY_ADDRESS": cluster["address"],
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    res = subprocess.run(
        [sys.executable, str(FAULT_FLOW), "--input", str(inp), "--output",
         str(tmp_path / f"out-{name}"), "--work-dir", str(tmp_path / f"work-{name}"),
         "--record-dir", str(rec), *extra],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads(res.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    where: dict[str, set[str]] = {}
    for p in rec.iterdir():
        stage, node = p.name.split("-")[:2]
        where.setdefault(stage, set()).add(node)
    return summary, where


def test_flow_on_existing_cluster_uses_both_nodes_and_leaves_it_running(
        external_cluster, prefect_harness, tmp_path):
    head, worker = external_cluster["head"], external_cluster["worker"]
    summary, where = run_flow(external_cluster, tmp_path, "spread")
    assert summary["identity"]["holds"] and summary["documents_written"] == 32
    assert set(where) == {"tag", "where", "slow_upper"}
    assert set().union(*where.values()) == {head, worker}, where

    # ignore_head_node: the actor stage (and the task stages) stay off the head.
    summary, where = run_flow(external_cluster, tmp_path, "off-head", "--ignore-head-node")
    assert summary["documents_written"] == 32
    assert where["where"] == {worker}, where
    assert set().union(*where.values()) == {worker}, where

    # The flow disconnected without shutting the cluster down: both nodes are still alive.
    nodes = probe_nodes(external_cluster["address"], external_cluster["env"])
    assert sorted(n["id"] for n in nodes) == sorted([head, worker])
