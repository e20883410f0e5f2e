"""Turn one stage into Ray Data work: a task function or an actor class, with resources and pool.

Read with :mod:`.workers` (what runs inside the workers), :mod:`.errors` (how a worker's error
comes back to the driver) and :mod:`curator_stages.plan.stage_plan` (how big the pool is). Why
each choice is made:

- Ray Data wraps our actor class in its own ``_MapWorker`` and never calls a
  ``__ray_shutdown__`` of ours; on a normal finish it deletes our instance, so teardown hangs
  off ``weakref.finalize``. On an aborted plan Ray kills the actor and nothing runs: teardown is
  best effort, and runs at most once.
- Ray Data waits forever on a request no node can satisfy, so the plan is checked against the
  live cluster's totals before ``map_batches`` is called (see
  :mod:`curator_stages.plan.stage_plan`). The pool is sized from totals, not from what is free
  at that moment: Ray Data's actor pool already grows into resources as they free up, and a
  plan that depends on the moment's load would differ from run to run.
- A worker whose ``setup``/``setup_on_node`` raises fails the plan at once with a
  :class:`StageSetupError` naming the stage, the node and the cause. Ray Data 2.60 does not
  restart an actor whose constructor raised and does not retry a task's user exception, so
  there is no restart loop; a transient cause is retried by the stage task's Prefect retries.
- Worker *deaths* (a killed or crashed process) are retried by Ray Data's own defaults in 2.60:
  tasks ``max_retries=-1``, actors ``max_restarts=-1`` and ``max_task_retries=-1``, and a
  retried map task re-yields its outputs under the same object ids, so nothing is duplicated
  (tests/test_faults.py kills workers mid-stage). The adapter sets no retry options of its own:
  Ray Data fuses adjacent maps only when their remote args are equal, and task options
  (``max_retries``) and actor options (``max_restarts``) can never be equal.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

# Re-exported: these lived here before errors.py and workers.py took them over.
from curator_stages.backends.ray_data.errors import (  # noqa: F401
    StageRunError,
    StageSetupError,
    setup_error,
    stage_error_from,
    stage_setup_error_from,
    surfaced_stage_errors,
)
from curator_stages.backends.ray_data.workers import (  # noqa: F401
    _PROCESS_SETUP_ERRORS,
    _PROCESS_STAGES,
    _task_mode_stage,
    _teardown_once,
    ensure_setup_on_node,
    node_info,
    stage_key,
    to_object_column,
    to_output_batch,
    worker_metadata,
)
from curator_stages.plan.cluster_resources import ClusterResources
from curator_stages.plan.stage_plan import (
    StagePlan,
    effective_batch_size,
    plan_stage,
    validate_spec,
)
from curator_stages.stage import ProcessingStage

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

logger = logging.getLogger(__name__)

#: A batch function over task rows: ``{"item": object array}`` in, the same shape out.
BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


# --------------------------------------------------------------------------- actor / task
def create_actor_from_stage(stage: ProcessingStage) -> type:
    """A callable class for ``map_batches``: one instance per actor, named ``<Stage>Actor``.

    The constructor runs ``setup_on_node`` (once per node) and ``setup``; ``__call__`` runs
    the stage on the batch's tasks; ``teardown`` runs when Ray Data releases the instance.
    """
    key = stage_key(stage)

    class _StageActor:
        def __init__(self) -> None:
            self._stage = stage
            meta = worker_metadata(stage, "actor")
            ensure_setup_on_node(stage, key, meta)
            try:
                stage.setup(meta)
            except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
                raise setup_error(stage, "setup", exc, meta) from exc
            self._teardown_guard: dict[str, bool] = {"done": False}
            self._finalizer = weakref.finalize(self, _teardown_once, stage, self._teardown_guard)

        def __call__(self, batch: dict[str, np.ndarray]) -> Any:
            return to_output_batch(self._stage.run(list(batch["item"])))

        def teardown(self) -> None:
            """Release the stage's resources now (also runs when the instance is deleted)."""
            self._finalizer()

    name = f"{type(stage).__name__}Actor"
    _StageActor.__name__ = name
    _StageActor.__qualname__ = name
    return _StageActor


def create_task_from_stage(stage: ProcessingStage) -> Callable[[dict[str, np.ndarray]], Any]:
    """A function for ``map_batches`` named ``<Stage>Task``.

    A task-mode stage that still overrides ``setup`` (the spec forced task mode) is set up
    once per worker process and torn down at process exit.
    """
    key = stage_key(stage)

    def run_stage(batch: dict[str, np.ndarray]) -> Any:
        ready = _task_mode_stage(stage, key)
        return to_output_batch(ready.run(list(batch["item"])))

    name = f"{type(stage).__name__}Task"
    run_stage.__name__ = name
    run_stage.__qualname__ = name
    return run_stage


# --------------------------------------------------------------------------- adapter
class RayDataStageAdapter:
    """Runs one :class:`ProcessingStage` over a Ray Data dataset of tasks."""

    def __init__(self, stage: ProcessingStage) -> None:
        if not isinstance(stage, ProcessingStage):
            raise TypeError(
                f"RayDataStageAdapter needs a ProcessingStage, got {type(stage).__name__} "
                f"({stage!r}); GlobalStage and CompositeStage go through apply_stages()"
            )
        self.stage = stage
        self.spec = validate_spec(stage)
        self._batch_size = effective_batch_size(stage)  # warns once for a GPU stage
        #: The plan chosen by the last :meth:`process_dataset` (for reports).
        self.plan: StagePlan | None = None
        #: The ``map_batches`` arguments of the last :meth:`process_dataset`.
        self.map_kwargs: dict[str, Any] = {}

    @property
    def batch_size(self) -> int | None:
        return self._batch_size

    def plan_for(self, cluster: ClusterResources, ignore_head_node: bool = False) -> StagePlan:
        """The plan on a given (live or declared) cluster, without running anything."""
        return plan_stage(self.stage, cluster, ignore_head_node, warn=False)

    def plan_live(self, ignore_head_node: bool = False) -> StagePlan:
        """The plan on the live cluster's totals: a request no node can ever satisfy fails now.

        Sized from totals, not from what is free this moment (see the module docstring); a
        worker that fits the totals but not the free resources waits in Ray's queue.
        """
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                f"stage {self.stage.stage_name!r}: Ray is not initialised; connect first "
                "(ray.init(...), RAY_ADDRESS, or run through RayDataExecutor) so the stage is "
                "planned against the cluster it will run on"
            )
        cluster = ClusterResources.from_ray()
        if hasattr(self.stage, "for_cluster"):  # a model stage fixes its device here, as in a plan
            self.stage = self.stage.for_cluster(cluster, ignore_head_node)
        return plan_stage(self.stage, cluster, ignore_head_node, warn=False)

    def process_dataset(self, dataset: "ray.data.Dataset", ignore_head_node: bool = False,
                        before: BatchFn | None = None,
                        after: BatchFn | None = None) -> "ray.data.Dataset":
        """Add this stage to ``dataset``'s plan (lazy); fails now if it could never run.

        ``before``/``after``: row-for-row batch functions (``{"item": tasks}`` in and out) that
        run in the same Ray task as the stage where Ray Data can fuse them: they get the
        stage's own CPU request, label selector and pool size. The stage task uses them to load
        its input checkpoint and write its output checkpoint inside the workers, so tasks are
        not shipped to a driver and back (see :func:`companion_map`).
        """
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        plan = self.plan_live(ignore_head_node)
        self.plan = plan
        kwargs: dict[str, Any] = {
            "batch_size": plan.batch_size,
            "batch_format": "numpy",
            "zero_copy_batch": True,
            "num_cpus": plan.cpus,
        }
        if plan.gpus > 0:
            kwargs["num_gpus"] = plan.gpus
        if ignore_head_node:
            selector = off_head_label_selector()
            if selector:
                kwargs["label_selector"] = selector
        if plan.mode == "actor":
            fn: Any = create_actor_from_stage(self.stage)
            if plan.fixed_pool:
                kwargs["compute"] = ActorPoolStrategy(size=plan.pool_max)
            else:
                kwargs["compute"] = ActorPoolStrategy(min_size=plan.pool_min,
                                                      max_size=plan.pool_max)
        else:
            fn = create_task_from_stage(self.stage)
            kwargs["compute"] = TaskPoolStrategy(size=plan.pool_max)
            if plan.max_calls_per_worker:
                kwargs["max_calls"] = plan.max_calls_per_worker
        if before is not None:
            dataset = companion_map(dataset, before, kwargs, plan, batch_size=1,
                                    fuse=plan.gpus <= 0)
        self.map_kwargs = kwargs
        out = dataset.map_batches(fn, **kwargs)
        if plan.is_fanout:
            out = out.repartition(target_num_rows_per_block=plan.rows_per_block_after_fanout)
        if after is not None:
            out = companion_map(out, after, kwargs, plan, batch_size=None,
                                fuse=fuses_after(plan))
        logger.info("stage plan: %s", plan.describe())
        return out


def companion_map(dataset: "ray.data.Dataset", fn: BatchFn, stage_kwargs: dict[str, Any],
                  plan: StagePlan, batch_size: int | None, fuse: bool) -> "ray.data.Dataset":
    """``fn`` as a task-pool ``map_batches`` placed so Ray Data fuses it with the stage's map.

    Ray fuses task->task maps of equal remote arguments and equal pool size, and a task map
    into a following actor map when the task pool's size is the actor pool's maximum. So a
    fusable companion gets the stage's CPUs, selector, ``max_calls`` and ``pool_max``. One that
    cannot fuse (after an actor, a fan-out or a GPU stage) asks for no CPU at all, so it never
    waits behind the CPUs the stage's own workers hold, and runs at most ``pool_max`` at once.
    """
    from ray.data import TaskPoolStrategy

    kwargs: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy",
                              "zero_copy_batch": True}
    if fuse:
        kwargs["num_cpus"] = plan.cpus
        for key in ("label_selector", "max_calls"):
            if key in stage_kwargs:
                kwargs[key] = stage_kwargs[key]
        kwargs["compute"] = TaskPoolStrategy(size=plan.pool_max)
    else:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        kwargs["num_cpus"] = 0
        kwargs["compute"] = TaskPoolStrategy(size=max(1, plan.pool_max or cpus))
    return dataset.map_batches(fn, **kwargs)


def off_head_label_selector() -> dict[str, str]:
    """A label selector that keeps workers off the head node.

    Ray schedules by resources and treats the head like any node; every node carries its id
    as the built-in label ``ray.io/node-id``, so "not the head's id" keeps work elsewhere.
    """
    heads = [n.node_id for n in ClusterResources.from_ray().nodes if n.is_head]
    return {"ray.io/node-id": f"!{heads[0]}"} if heads else {}


def fuses_after(plan: StagePlan) -> bool:
    """Whether a task map placed after this stage's map runs in the same Ray task."""
    return plan.gpus <= 0 and plan.mode != "actor" and not plan.is_fanout


