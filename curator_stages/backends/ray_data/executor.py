"""Run a whole pipeline as one streaming Ray Data plan and collect its output tasks.

The executor reuses an initialised Ray (the normal case under a Prefect worker, or
``RAY_ADDRESS``) and shuts down only a Ray it started itself: a long-lived cluster must stay
up between runs, and a fresh ``ray.init`` costs seconds every time.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from curator_stages.backends.ray_data.adapter import (
    apply_stages,
    ensure_setup_on_node,
    stage_key,
    surfaced_stage_errors,
    worker_metadata,
)
from curator_stages.backends.ray_data.cluster import ClusterResources, workers_fitting
from curator_stages.backends.ray_data.planning import StagePlan, gpu_request
from curator_stages.pipeline import Pipeline, decompose
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import EmptyTask, Task

logger = logging.getLogger(__name__)


def _run_setup_on_node(stage: ProcessingStage, key: str) -> str:
    """Body of the per-node Ray task: the node-wide setup of one stage, if not done yet."""
    import ray

    ensure_setup_on_node(stage, key, worker_metadata(stage, "node"))
    return ray.get_runtime_context().get_node_id()


class RayDataExecutor:
    """Executes stages over initial tasks on Ray Data and returns the output tasks.

    ``progress_bars``: ``None`` leaves Ray Data's setting alone; ``False`` quiets the bars
    (useful in logs of non-interactive runs).
    """

    def __init__(self, ignore_head_node: bool = False,
                 ray_init_kwargs: dict[str, Any] | None = None,
                 progress_bars: bool | None = None,
                 op_resource_reservation: bool = False) -> None:
        self.ignore_head_node = ignore_head_node
        #: Ray Data's per-operator resource reservation (off by default: see execute()).
        self.op_resource_reservation = op_resource_reservation
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.progress_bars = progress_bars
        #: Plans of the stages of the last run, in order (for reports).
        self.plans: list[StagePlan] = []

    # ------------------------------------------------------------------ Ray session
    def _ensure_ray(self) -> bool:
        """Initialise Ray if needed; True when this call started it (and so must stop it)."""
        import ray

        if ray.is_initialized():
            return False
        kwargs = dict(self.ray_init_kwargs)
        if kwargs.get("address") or os.environ.get("RAY_ADDRESS"):
            ray.init(**kwargs)
        else:
            from curator_stages.backends.ray_data.local_ray import start_local_ray

            kwargs.pop("address", None)
            start_local_ray(**kwargs)
        return True

    # ------------------------------------------------------------------ node setup
    def setup_nodes(self, stages: Iterable[ProcessingStage | GlobalStage]) -> dict[str, list[str]]:
        """Run ``setup_on_node`` of each stage once on every node that can host its workers.

        A Ray task pinned to each node (zero CPUs, so it never waits behind the pipeline)
        does it; workers later find the node's marker and skip it. Returns stage name -> node
        ids where setup ran or was already done.
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cluster = ClusterResources.from_ray(available=False)
        remote = ray.remote(num_cpus=0, max_retries=0)(_run_setup_on_node)
        pending: dict[str, list[Any]] = {}
        for stage in stages:
            if not isinstance(stage, ProcessingStage):
                continue  # a GlobalStage's per-task stage is set up by its workers
            if type(stage).setup_on_node is ProcessingStage.setup_on_node:
                continue
            gpus = gpu_request(stage, cluster, self.ignore_head_node)
            key = stage_key(stage)
            nodes = [n for n in cluster.usable_nodes(self.ignore_head_node)
                     if workers_fitting(n, stage.resources.cpus, gpus) > 0]
            pending[stage.stage_name] = [
                remote.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False),
                    name=f"{type(stage).__name__}SetupOnNode",
                ).remote(stage, key)
                for n in nodes
            ]
        with surfaced_stage_errors():
            return {name: ray.get(refs) for name, refs in pending.items()}

    # ------------------------------------------------------------------ run
    def execute(self, stages: Pipeline | Iterable[Any],
                initial_tasks: Iterable[Task] | None = None) -> list[Task]:
        """Run all stages as one streaming plan; returns the tasks the last stage emits."""
        import ray
        import ray.data

        execution = (stages.execution_stages() if isinstance(stages, Pipeline)
                     else decompose(stages))
        seeds = list(initial_tasks) if initial_tasks is not None else []
        if not seeds:
            seeds = [EmptyTask()]
        started = self._ensure_ray()
        try:
            context = ray.data.DataContext.get_current()
            if self.progress_bars is not None:
                context.enable_progress_bars = self.progress_bars
            # Ray Data's per-operator reservation splits a small budget (2 CPUs) between the
            # fan-out and the main map, so the main map ran 1 task while the other CPU idled,
            # and never queued tasks ahead. Off for this run: 200k docs, 2 CPUs, steady
            # 51.7-51.9 s vs 59.3-61.2 s (3 runs each), 3-7 tasks in flight instead of 1-2.
            saved_reservation = context.op_resource_reservation_enabled
            if not self.op_resource_reservation:
                context.op_resource_reservation_enabled = False
            self.setup_nodes(execution)
            self.plans = []
            dataset = ray.data.from_items(seeds)
            dataset = apply_stages(dataset, execution, self.ignore_head_node, plans=self.plans)
            out: list[Task] = []
            with surfaced_stage_errors():
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    out.extend(batch["item"])
            return out
        finally:
            if "saved_reservation" in locals():
                context.op_resource_reservation_enabled = saved_reservation
            if started:
                ray.shutdown()
