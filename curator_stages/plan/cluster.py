"""Which cluster a plan is for: a declared one, the live one, or this machine."""

from __future__ import annotations

import os
import shutil
import subprocess

from curator_stages.plan.cluster_resources import ClusterResources, NodeResources

def local_cluster() -> ClusterResources:
    """The one node an embedded ``ray.init()`` would start here: all CPUs, visible GPUs.

    Used for a plan when no cluster is declared and no Ray is running, so that asking for a plan
    never pays Ray's start-up or leaves a cluster behind.
    """
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else (os.cpu_count() or 1))
    return ClusterResources((NodeResources("local", cpus=cpus, gpus=float(_local_gpu_count()),
                                           is_head=True),))


def _local_gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def resolve_cluster(cluster: ClusterResources | str | None = None) -> tuple[ClusterResources, str]:
    """(cluster, where it came from) for a plan.

    A declared cluster (a :class:`ClusterResources` or its text form) is used as given. With
    none: the live cluster's per-node totals when Ray is initialised in this process or
    ``RAY_ADDRESS`` names a running cluster (connecting to it, never starting one); otherwise
    the local machine as an embedded Ray would see it.
    """
    if isinstance(cluster, ClusterResources):
        return cluster, "declared"
    if isinstance(cluster, str):
        return ClusterResources.parse(cluster), "declared"
    if cluster is not None:
        raise TypeError(
            f"plan: cluster must be None, a ClusterResources or a text such as "
            f"'2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus', got {type(cluster).__name__}"
        )
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return local_cluster(), "local machine (embedded Ray)"
    if ray.is_initialized():
        return ClusterResources.from_ray(available=False), "live"
    if os.environ.get("RAY_ADDRESS"):
        # The runtime's one way of joining (loopback clusters, tokens, the warm local Ray).
        from curator_stages.runtime.ray_cluster import join_cluster

        join_cluster(os.environ["RAY_ADDRESS"], log_to_driver=False, include_dashboard=False,
                     logging_level="ERROR")
        try:
            return ClusterResources.from_ray(available=False), "live"
        finally:
            ray.shutdown()  # only disconnects this driver; the cluster keeps running
    return local_cluster(), "local machine (embedded Ray)"

