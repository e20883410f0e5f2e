"""A three-node local cluster (head 2 CPUs, worker 2 CPUs, GPU node 2 CPUs + 2 logical GPUs).

Runs stages through the executor and prints one JSON line with where work ran and how pools
were sized, for tests/test_multinode.py to check.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import ray
from ray.cluster_utils import Cluster

from curator_stages import DocumentBatch, ProcessingStage, Resources
from curator_stages.backends.ray_data import RayDataExecutor, RayDataStageAdapter


class WhereAmI(ProcessingStage):
    """An actor stage recording the node of the actor that processed each task."""

    def __init__(self, marker_dir: str = ""):
        self.marker_dir = marker_dir

    def setup_on_node(self, node_info=None, worker_metadata=None):
        if self.marker_dir:
            Path(self.marker_dir, f"{node_info['node_id']}-{os.getpid()}").touch()

    def setup(self, worker_metadata=None):
        self._node = ray.get_runtime_context().get_node_id()

    def process(self, task):
        return task.derive(task.data, node=self._node)


class GpuWhereAmI(WhereAmI):
    resources = Resources(cpus=1, gpus=1)


def tasks(n):
    return [DocumentBatch(f"t{i}", "ds", pd.DataFrame({"id": [str(i)], "text": ["x"]}))
            for i in range(n)]


def main():
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=2)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    ray.data.DataContext.get_current().enable_progress_bars = False
    head_id = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
    result = {"head": head_id, "worker": worker.node_id, "gpu_node": gpu_node.node_id}

    marker_dir = tempfile.mkdtemp()
    executor = RayDataExecutor(ignore_head_node=True)
    out = executor.execute([WhereAmI(marker_dir)], tasks(12))
    result["off_head_nodes"] = sorted({t.metadata["node"] for t in out})
    result["off_head_pool_max"] = executor.plans[0].pool_max
    result["setup_on_node_nodes"] = sorted(p.name.split("-")[0] for p in Path(marker_dir).iterdir())

    big = WhereAmI().with_(resources=Resources(cpus=1.5))
    result["pool_max_cpus_1_5"] = RayDataStageAdapter(big).plan_live().pool_max
    result["pool_max_cpus_1_5_no_head"] = RayDataStageAdapter(big).plan_live(True).pool_max

    gpu_exec = RayDataExecutor()
    out = gpu_exec.execute([GpuWhereAmI()], tasks(6))
    result["gpu_nodes"] = sorted({t.metadata["node"] for t in out})
    result["gpu_pool_max"] = gpu_exec.plans[0].pool_max
    result["ray_still_up"] = ray.is_initialized()

    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
