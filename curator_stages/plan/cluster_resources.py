"""The cluster as the planner sees it: nodes and what each offers, live or declared.

Pool sizing is a pure function of a :class:`ClusterResources` so that the same arithmetic serves
the live adapter (from ``ray.nodes()``, totals only) and ``plan`` on a declared cluster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

HEAD_NODE_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class NodeResources:
    node_id: str
    cpus: float
    gpus: float = 0.0
    is_head: bool = False
    gpu_memory_gb: float | None = None  # memory of one card, when known
    address: str = ""


@dataclass(frozen=True)
class ClusterResources:
    """The alive nodes of a cluster with their resource totals."""

    nodes: tuple[NodeResources, ...] = field(default_factory=tuple)

    def usable_nodes(self, ignore_head_node: bool = False) -> list[NodeResources]:
        return [n for n in self.nodes if not (ignore_head_node and n.is_head)]

    @property
    def total_cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def total_gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    def describe(self, ignore_head_node: bool = False) -> str:
        nodes = self.usable_nodes(ignore_head_node)
        if not nodes:
            return "no usable nodes" + (" (head node excluded)" if ignore_head_node else "")
        parts = [
            f"{n.node_id[:12]}{' (head)' if n.is_head else ''}: {n.cpus:g} CPUs, {n.gpus:g} GPUs"
            for n in nodes
        ]
        return f"{len(nodes)} node(s) [" + "; ".join(parts) + "]"

    @classmethod
    def parse(cls, text: str) -> "ClusterResources":
        """Parse a declared cluster like ``"2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"``.

        The first node listed is the head node.
        """
        nodes: list[NodeResources] = []
        for chunk in filter(None, (c.strip() for c in text.split(","))):
            m = re.fullmatch(
                r"(?:(\d+)\s*nodes?\s*x\s*)?([\d.]+)\s*cpus?(?:\s+([\d.]+)\s*gpus?)?"
                r"(?:\s+([\d.]+)\s*gb)?",
                chunk, flags=re.IGNORECASE,
            )
            if not m:
                raise ValueError(
                    f"cluster spec: cannot parse {chunk!r}; write e.g. "
                    "'2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus'"
                )
            count = int(m.group(1) or 1)
            for _ in range(count):
                nodes.append(NodeResources(
                    node_id=f"node-{len(nodes)}", cpus=float(m.group(2)),
                    gpus=float(m.group(3) or 0), is_head=not nodes,
                    gpu_memory_gb=float(m.group(4)) if m.group(4) else None,
                ))
        if not nodes:
            raise ValueError("cluster spec: no nodes given")
        return cls(tuple(nodes))

    @classmethod
    def from_ray(cls, available: bool = False) -> "ClusterResources":
        """The live cluster's alive nodes with their resource totals.

        Totals, never what is free right now: planning must give the same answer whatever else
        runs (Ray Data's actor pools grow into resources as they free up), and Ray 2.60 offers
        per-node availability only in ``ray._private``. ``available=True`` is refused rather
        than silently answered with totals.
        """
        import ray

        if available:
            raise ValueError(
                "ClusterResources.from_ray(available=True) is not supported: stages are planned "
                "from the cluster's totals; call from_ray() (or ray.available_resources() for "
                "the cluster-wide free amount)"
            )

        nodes = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            res: dict[str, Any] = node.get("Resources", {})
            nodes.append(NodeResources(
                node_id=node["NodeID"], cpus=float(res.get("CPU", 0.0)),
                gpus=float(res.get("GPU", 0.0)), is_head=HEAD_NODE_RESOURCE in res,
                address=node.get("NodeManagerAddress", ""),
            ))
        return cls(tuple(nodes))


def workers_fitting(node: NodeResources, cpus: float, gpus: float) -> int:
    """How many workers asking for (cpus, gpus) fit on one node."""
    limits = []
    if cpus > 0:
        limits.append(math.floor(node.cpus / cpus + 1e-9))
    if gpus > 0:
        limits.append(math.floor(node.gpus / gpus + 1e-9))
    if not limits:  # a zero-resource worker: bounded by CPUs as if it took one
        limits.append(math.floor(node.cpus))
    return max(0, min(limits))


def max_workers(cluster: ClusterResources, cpus: float, gpus: float,
                ignore_head_node: bool = False) -> int:
    """Workers of one request that fit on the cluster, node by node (a worker never spans nodes)."""
    return sum(workers_fitting(n, cpus, gpus) for n in cluster.usable_nodes(ignore_head_node))
