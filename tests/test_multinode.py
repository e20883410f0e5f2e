"""Scheduling on a multi-node cluster (ray.cluster_utils in a subprocess, logical GPUs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "multinode_probe.py"


@pytest.fixture(scope="module")
def probe() -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ignore_head_node_keeps_actor_work_off_head(probe):
    assert probe["off_head_nodes"], "no work recorded"
    assert probe["head"] not in probe["off_head_nodes"]
    # 1-CPU workers on the two non-head nodes (2 CPUs each).
    assert probe["off_head_pool_max"] == 4


@pytest.mark.slow
def test_setup_on_node_runs_once_per_usable_node(probe):
    assert probe["setup_on_node_nodes"] == sorted([probe["worker"], probe["gpu_node"]])


@pytest.mark.slow
def test_pool_sizing_counts_per_node(probe):
    # 1.5 CPUs per worker: one per 2-CPU node (3), not 6 CPUs / 1.5 (4).
    assert probe["pool_max_cpus_1_5"] == 3
    assert probe["pool_max_cpus_1_5_no_head"] == 2


@pytest.mark.slow
def test_gpu_actors_only_on_gpu_nodes(probe):
    assert probe["gpu_nodes"] == [probe["gpu_node"]]
    assert probe["gpu_pool_max"] == 2
    assert probe["ray_still_up"], "the executor must not shut down a Ray it did not start"
