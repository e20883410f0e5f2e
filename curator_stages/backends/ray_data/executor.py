"""Run a whole pipeline as one streaming Ray Data plan and collect its output tasks.

:func:`apply_stages` assembles the plan (global stages cut the stream and are fitted here);
:func:`streamed_tasks` pulls its outputs and, whatever happens, ends the execution so that a
failed or abandoned plan's actors give their CPUs back before anything else (a retry) runs.

The executor reuses an initialised Ray (the normal case under a Prefect worker, or
``RAY_ADDRESS``) and shuts down only a Ray it started itself: a long-lived cluster must stay
up between runs, and a fresh ``ray.init`` costs seconds every time.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from curator_stages.backends.ray_data.adapter import (
    BatchFn,
    RayDataStageAdapter,
    companion_map,
    fuses_after,
)
from curator_stages.backends.ray_data.errors import surfaced_stage_errors
from curator_stages.backends.ray_data.plan_context import (
    data_context_for_plan,
    default_progress_bars,
)
from curator_stages.backends.ray_data.workers import (
    ensure_setup_on_node,
    stage_key,
    worker_metadata,
)
from curator_stages.execution import ExecutionResult
from curator_stages.io.scratch import scratch_root
from curator_stages.runtime.worker_memory import return_freed_memory
from curator_stages.pipeline import Pipeline, decompose
from curator_stages.plan.cluster_resources import ClusterResources, workers_fitting
from curator_stages.plan.stage_plan import StagePlan, gpu_request
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import EmptyTask, Task

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

logger = logging.getLogger(__name__)


def _run_setup_on_node(stage: ProcessingStage, key: str) -> str:
    """Body of the per-node Ray task: the node-wide setup of one stage, if not done yet."""
    import ray

    ensure_setup_on_node(stage, key, worker_metadata(stage, "node"))
    return ray.get_runtime_context().get_node_id()


class RayDataExecutor:
    """Executes stages over initial tasks on Ray Data and returns the output tasks.

    ``progress_bars``: ``None`` shows Ray Data's bars on a terminal and none otherwise (off a
    terminal Ray Data would print a progress dump every 10 s); ``True``/``False`` force it.
    ``scratch_dir``: where dedup fits keep their compact columns; on a cluster of several nodes
    give a path every node reads and writes (``s3://...``, a shared mount). Default: a local
    temporary directory.
    """

    def __init__(self, ignore_head_node: bool = False,
                 ray_init_kwargs: dict[str, Any] | None = None,
                 progress_bars: bool | None = None,
                 op_resource_reservation: bool = False,
                 scratch_dir: str | None = None) -> None:
        self.scratch_dir = scratch_dir
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
        address = kwargs.pop("address", None) or os.environ.get("RAY_ADDRESS")
        if address and address != "local":
            # Joining goes the runtime's one way (loopback kept, token sent). A joined cluster
            # is never stopped: ray.shutdown() in a driver that joined only detaches it.
            from curator_stages.runtime.ray_cluster import join_cluster

            kwargs.pop("warm", None)
            join_cluster(address, **kwargs)
        else:
            from curator_stages.runtime.ray_cluster import start_local_ray

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

        cluster = ClusterResources.from_ray()
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
                initial_tasks: Iterable[Task] | None = None) -> ExecutionResult:
        """Run all stages as one streaming plan; returns the tasks the last stage emits.

        The result is a list of those tasks with a ``.summary`` (documents read, out, dropped
        by reason, quarantined). Ray Data's settings for the plan are restored when it ends
        (:func:`data_context_for_plan`).
        """
        import ray.data

        execution = (stages.execution_stages() if isinstance(stages, Pipeline)
                     else decompose(stages))
        seeds = list(initial_tasks) if initial_tasks is not None else []
        if not seeds:
            # Named after the pipeline: output tasks derive their ids from the seed's.
            name = stages.name if isinstance(stages, Pipeline) else "pipeline"
            seeds = [EmptyTask(task_id=name, dataset_name=name)]
        started = self._ensure_ray()
        progress = (self.progress_bars if self.progress_bars is not None
                    else default_progress_bars())
        try:
            with data_context_for_plan(progress_bars=progress,
                                       op_resource_reservation=self.op_resource_reservation):
                self.setup_nodes(execution)
                self.plans = []
                dataset = ray.data.from_items(seeds)  # inside: the plan copies the settings
                # Global stages materialise and fit their upstream here: a stage's error on
                # the way comes out as itself, as it does in the stage task.
                with surfaced_stage_errors():
                    dataset = apply_stages(dataset, execution, self.ignore_head_node,
                                           plans=self.plans, scratch=self.scratch_dir)
                with streamed_tasks(dataset) as tasks:
                    result = ExecutionResult(tasks)
            logger.info("pipeline finished: %s", result.summary.to_text())
            return result
        finally:
            if started:
                import ray

                ray.shutdown()


@contextlib.contextmanager
def streamed_tasks(dataset: "ray.data.Dataset") -> Iterator[Iterator[Any]]:
    """Run ``dataset``'s plan and yield its output tasks; the execution ends with the block.

    Ray Data shuts a failed execution down without killing its actors: they go when the last
    reference to the executor goes. Those references sit in the dataset that ran, in the
    frames of the error, and in whatever keeps the error (Prefect keeps a failed attempt's
    exception while it retries), so the failed attempt's actors kept their CPUs and the retry
    waited forever. Here a copy of the dataset runs (the caller's dataset never holds the
    executor), the error's frames are released (:func:`.errors.release_frames`), and an
    iteration the caller abandons is closed, which makes Ray Data shut down with ``force``.
    Stage errors come out as themselves (:func:`surfaced_stage_errors`).
    """
    run = copy.copy(dataset)  # Dataset's own pickling state: the same plan, no executor
    thread_prefix = executor_thread_prefix(run)
    batches = iter(run.iter_batches(batch_size=None, batch_format="numpy"))

    def items() -> Iterator[Any]:
        for batch in batches:
            yield from batch["item"]

    tasks = items()
    try:
        with surfaced_stage_errors():
            yield tasks
    finally:
        tasks.close()
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # an abandoned iteration: Ray Data shuts the executor down (force=True)
        del run, batches, tasks
        # Finished or failed, the executor sits in reference cycles with the pool's actor
        # handles: free them now, so the next plan (or the retry) gets the CPUs.
        _join_executor_threads(thread_prefix)
        gc.collect()


#: Name prefix of Ray Data's streaming executor thread (guarded in test_ray_private_guards).
EXECUTOR_THREAD_PREFIX = "StreamingExecutor-"
#: How long an ended execution's executor thread may take to stop before the collection (it
#: stops within a scheduling step; a loaded machine stretches that step).
EXECUTOR_JOIN_S = 60.0


def executor_thread_prefix(dataset: "ray.data.Dataset") -> str:
    """The name prefix of the executor threads that run ``dataset`` (any run index)."""
    return f"{EXECUTOR_THREAD_PREFIX}{dataset.get_dataset_id().rsplit('_', 1)[0]}_"


def _join_executor_threads(prefix: str) -> None:
    """Wait (bounded) for the executor threads of one dataset still ending after its plan ended.

    The executor is a thread, and while it runs its frames hold the executor and its actor
    handles; a collection made before it ended freed nothing, and nothing collected again while
    the caller only waited, so the ended plan's actors kept their CPUs. Only this dataset's
    threads are joined: a plan running beside it is not waited for.
    """
    me = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not me and thread.name.startswith(prefix):
            thread.join(timeout=EXECUTOR_JOIN_S)


def prepare_parts_fn(stage: GlobalStage) -> BatchFn:
    """Batch function: ``stage.map_local`` of each document task, kept in its metadata."""
    from curator_stages.tasks import DocumentBatch

    key = stage.prepared_key

    def prepare(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for task in batch["item"]:
            if isinstance(task, DocumentBatch):
                # set_metadata gives the task a new dict: fan-out siblings may share their
                # parent's metadata object.
                task.set_metadata(key, stage.map_local(task))
        return batch

    prepare.__name__ = prepare.__qualname__ = f"{type(stage).__name__}Prepare"
    return prepare


def strip_parts_fn(key: str) -> BatchFn:
    """Batch function: removes the streamed fit parts before the tasks go on."""

    def strip(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for task in batch["item"]:
            if isinstance(task, Task):
                task.remove_metadata(key)
        return batch

    strip.__name__ = strip.__qualname__ = "DropPreparedParts"
    return strip


def _then(first: BatchFn | None, second: BatchFn) -> BatchFn:
    if first is None:
        return second

    def both(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return second(first(batch))

    both.__name__ = both.__qualname__ = f"{first.__name__}+{second.__name__}"
    return both


def _fitted(stage: GlobalStage, dataset: "ray.data.Dataset",
            scratch: str | None) -> ProcessingStage:
    with scratch_root(scratch):
        per_task = stage.fit(dataset)
    return_freed_memory()  # the fit's temporaries: the driver holds on through the next pass
    if not isinstance(per_task, ProcessingStage):
        raise TypeError(f"global stage {stage.stage_name!r}: fit() must return a ProcessingStage, "
                        f"got {type(per_task).__name__}")
    return per_task


def apply_stages(dataset: "ray.data.Dataset",
                 stages: Iterable[ProcessingStage | GlobalStage | Any],
                 ignore_head_node: bool = False,
                 plans: list[StagePlan] | None = None,
                 before: BatchFn | None = None,
                 after: BatchFn | None = None,
                 scratch: str | None = None) -> "ray.data.Dataset":
    """Add a sequence of execution stages (composites decomposed) to ``dataset``'s plan.

    A :class:`GlobalStage` cuts the stream: ``fit`` is called once on the upstream dataset, and
    the per-task stage it returns is applied like any other. When the global stage is the
    plan's first (a flow's dedup stage task, which reads a checkpoint), the upstream is read
    twice, streaming: once by the fit, once by the per-task stage. After other stages, their
    output is materialised once, and a global stage that ``prepare_in_stream`` gets its
    per-task parts computed before the cut, inside the upstream stage's tasks. When ``plans``
    is given, each stage's :class:`StagePlan` is appended to it, in order. ``before`` runs on
    every input row ahead of the first stage and ``after`` on every output row of the last,
    each fused into that stage's Ray tasks where Ray Data allows it. ``scratch``: where the
    fits keep their compact columns (a directory every worker reads and writes; default a local
    temporary one, see :mod:`curator_stages.io.scratch`).
    """
    # Tasks travel as pickled Python objects by design. Said on this plan's own copy of the
    # context (a public DeveloperAPI property), not the process-wide one: it stops Ray Data's
    # "Failed to convert column 'item'" warning in the workers (see plan_context).
    dataset.context.enable_fallback_to_arrow_object_ext_type = True
    ds = dataset
    execution = list(decompose(stages))
    pending_before = before
    last: RayDataStageAdapter | None = None
    for i, stage in enumerate(execution):
        if isinstance(stage, GlobalStage) and last is None:
            # Nothing runs ahead of the barrier in this plan: the upstream is the plan's source
            # (a checkpoint's files and their loader, or the seed tasks), cheap to read twice.
            # The fit reads it once and keeps only its compact columns (row keys, hashes,
            # signatures, embeddings); the per-task stage reads it again, streaming, with the
            # loader fused into its tasks. No copy of the documents is ever held.
            upstream = ds if pending_before is None else ds.map_batches(
                pending_before, batch_size=1, batch_format="numpy", zero_copy_batch=True)
            stage = _fitted(stage, upstream, scratch)
        elif isinstance(stage, GlobalStage):
            if stage.prepare_in_stream:
                prepare = prepare_parts_fn(stage)
                if last is not None and last.plan is not None:
                    ds = companion_map(ds, prepare, last.map_kwargs, last.plan, batch_size=None,
                                       fuse=fuses_after(last.plan))
                else:
                    pending_before = _then(pending_before, prepare)
            if pending_before is not None:  # no stage ahead of the barrier to fuse with
                ds = ds.map_batches(pending_before, batch_size=1, batch_format="numpy",
                                    zero_copy_batch=True)
                pending_before = None
            ds = ds.materialize()  # the stages ahead run once: their output is read twice
            per_task = _fitted(stage, ds, scratch)
            if stage.prepare_in_stream:
                pending_before = strip_parts_fn(stage.prepared_key)
            stage = per_task
        adapter = RayDataStageAdapter(stage)
        ds = adapter.process_dataset(ds, ignore_head_node=ignore_head_node,
                                     before=pending_before,
                                     after=after if i == len(execution) - 1 else None)
        pending_before = None
        last = adapter
        if plans is not None and adapter.plan is not None:
            plans.append(adapter.plan)
    if not execution:
        for fn in (before, after):
            if fn is not None:
                ds = ds.map_batches(fn, batch_size=1, batch_format="numpy", zero_copy_batch=True)
    return ds
