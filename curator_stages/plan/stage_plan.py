"""How one stage will run on a cluster: a pure function from (stage, cluster) to a plan.

Planning needs no live Ray, so the same arithmetic serves the adapter (against the live
cluster) and a ``plan`` report against a *declared* cluster. It is also where the fail-fast
rule lives: Ray Data waits forever on a request that no node can satisfy, so an impossible
stage must be refused here, before anything runs, with a message a user can act on.

It lives with the plan, in the core, so that the plan never imports a backend; the Ray Data
backend imports it from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from curator_stages.plan.cluster_resources import ClusterResources, max_workers, workers_fitting
from curator_stages.stage import ProcessingStage, RayStageSpecKeys, overrides_setup

logger = logging.getLogger(__name__)

Mode = Literal["actor", "task"]

_VALID_SPEC_KEYS = {k.value for k in RayStageSpecKeys}
_INT_SPEC_KEYS = {
    RayStageSpecKeys.NUM_WORKERS.value,
    RayStageSpecKeys.MIN_WORKERS.value,
    RayStageSpecKeys.MAX_WORKERS.value,
    RayStageSpecKeys.MAX_CALLS_PER_WORKER.value,
    RayStageSpecKeys.ROWS_PER_BLOCK_AFTER_FANOUT.value,
}

#: Rows (tasks) per block after a fan-out stage unless the stage's spec says otherwise: one task
#: per block lets the next stage spread the children over all its workers.
DEFAULT_ROWS_PER_BLOCK_AFTER_FANOUT = 1


class UnschedulableStageError(ValueError):
    """A stage asks for more than the cluster can ever give one of its workers.

    ``stage_name`` and ``problem`` (the message without its fix) let a flow put its own fix, in
    its own parameters' terms, in place of the library's (:meth:`with_fix`).
    """

    def __init__(self, message: str, stage_name: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.stage_name = stage_name
        self.problem = problem

    def with_fix(self, fix: str) -> "UnschedulableStageError":
        """The same error with ``fix`` as its fix."""
        return UnschedulableStageError(f"{self.problem or self}. Fix: {fix}.", self.stage_name,
                                       self.problem)


@dataclass(frozen=True)
class StagePlan:
    """How the Ray Data backend will run one stage; what reports show as mode/pool/batch."""

    stage_name: str
    mode: Mode
    cpus: float
    gpus: float
    batch_size: int | None
    pool_min: int | None
    pool_max: int | None  # None: unbounded (task mode without a cap)
    is_fanout: bool = False
    rows_per_block_after_fanout: int | None = None
    max_calls_per_worker: int | None = None
    fixed_pool: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        if self.mode == "actor":
            pool = (f"{self.pool_max} actors" if self.fixed_pool
                    else f"{self.pool_min}..{self.pool_max} actors")
        else:
            pool = "unbounded tasks" if self.pool_max is None else f"<= {self.pool_max} tasks"
        text = (f"{self.stage_name}: {self.mode}, {pool}, cpus={self.cpus:g}, gpus={self.gpus:g}, "
                f"batch_size={self.batch_size}")
        if self.is_fanout:
            text += f", fan-out -> {self.rows_per_block_after_fanout} task(s)/block"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage_name, "mode": self.mode, "cpus": self.cpus, "gpus": self.gpus,
            "batch_size": self.batch_size, "pool_min": self.pool_min, "pool_max": self.pool_max,
            "fixed_pool": self.fixed_pool, "is_fanout": self.is_fanout,
            "rows_per_block_after_fanout": self.rows_per_block_after_fanout,
            "max_calls_per_worker": self.max_calls_per_worker,
        }


def validate_spec(stage: ProcessingStage) -> dict[str, Any]:
    """The stage's ``ray_stage_spec()`` with every key and value checked.

    A misspelt key would otherwise be ignored silently and the stage would run with defaults
    the user did not choose.
    """
    spec = stage.ray_stage_spec() or {}
    if not isinstance(spec, dict):
        raise ValueError(
            f"stage {stage.stage_name!r}: ray_stage_spec() must return a dict, "
            f"got {type(spec).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in spec.items():
        name = key.value if isinstance(key, RayStageSpecKeys) else key
        if name not in _VALID_SPEC_KEYS:
            raise ValueError(
                f"stage {stage.stage_name!r}: unknown ray_stage_spec key {name!r}; "
                f"valid keys are {sorted(_VALID_SPEC_KEYS)} (see RayStageSpecKeys)"
            )
        if name in _INT_SPEC_KEYS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"stage {stage.stage_name!r}: ray_stage_spec key {name!r} must be an "
                    f"integer >= 0 or None, got {value!r}"
                )
        out[name] = value
    return out


def effective_batch_size(stage: ProcessingStage, warn: bool = True) -> int | None:
    """The batch size the backend uses: a GPU stage never runs with ``None``.

    Ray Data refuses ``num_gpus > 0`` with ``batch_size=None``, and a whole block per call on a
    GPU is rarely what anyone meant, so 1 is used and the user is told.
    """
    if stage.batch_size is None and stage.resources.requires_gpu:
        if not warn:
            return 1
        logger.warning(
            "stage %r requires a GPU but has batch_size=None; using batch_size=1 "
            "(set batch_size on the stage, e.g. stage.with_(batch_size=8), to choose)",
            stage.stage_name,
        )
        return 1
    return stage.batch_size


def choose_mode(stage: ProcessingStage, spec: dict[str, Any] | None = None) -> Mode:
    """Actor when the spec says so (an explicit False wins), else when the stage needs a GPU
    or has per-worker state (overrides ``setup``); task otherwise."""
    spec = validate_spec(stage) if spec is None else spec
    explicit = spec.get(RayStageSpecKeys.IS_ACTOR_STAGE.value)
    if explicit is not None:
        return "actor" if explicit else "task"
    if stage.resources.requires_gpu or overrides_setup(stage):
        return "actor"
    return "task"


def gpu_request(stage: ProcessingStage, cluster: ClusterResources,
                ignore_head_node: bool = False) -> float:
    """GPUs per worker; a ``gpu_memory_gb`` request becomes a fraction of the smallest card."""
    resources = stage.resources
    if resources.gpus > 0 or resources.gpu_memory_gb <= 0:
        return resources.gpus
    cards = [n.gpu_memory_gb for n in cluster.usable_nodes(ignore_head_node)
             if n.gpus > 0 and n.gpu_memory_gb]
    return resources.gpus_for(min(cards) if cards else None)


def _unschedulable(stage: ProcessingStage, cpus: float, gpus: float, cluster: ClusterResources,
                   ignore_head_node: bool, why: str) -> UnschedulableStageError:
    fix = ("lower the stage's resources (stage.with_(resources=Resources(...))), "
           "add nodes, or run without ignore_head_node" if ignore_head_node else
           "lower the stage's resources (stage.with_(resources=Resources(...))) or add nodes")
    problem = (f"stage {stage.stage_name!r} cannot be scheduled: {why}; it asks for "
               f"cpus={cpus:g}, gpus={gpus:g} per worker; the cluster has "
               f"{cluster.describe(ignore_head_node)}")
    return UnschedulableStageError(f"{problem}. Fix: {fix}.", stage.stage_name, problem)


def plan_stage(stage: ProcessingStage, cluster: ClusterResources,
               ignore_head_node: bool = False, warn: bool = True) -> StagePlan:
    """Decide mode, resources, batch size and pool size of ``stage`` on ``cluster``.

    Raises :class:`UnschedulableStageError` when no (usable) node fits one worker, or when the
    pool the spec asks for cannot exist on this cluster: Ray Data would wait forever instead.
    ``warn=False`` silences the GPU batch-size warning for callers that already gave it.
    """
    spec = validate_spec(stage)
    mode = choose_mode(stage, spec)
    cpus = float(stage.resources.cpus)
    gpus = float(gpu_request(stage, cluster, ignore_head_node))
    batch_size = effective_batch_size(stage, warn=warn)
    fits = max_workers(cluster, cpus, gpus, ignore_head_node)
    if fits <= 0:
        biggest = [workers_fitting(n, cpus, gpus) for n in cluster.usable_nodes(ignore_head_node)]
        why = ("no node is usable" if not biggest
               else "no single node has enough resources for one worker")
        raise _unschedulable(stage, cpus, gpus, cluster, ignore_head_node, why)

    fixed = spec.get(RayStageSpecKeys.NUM_WORKERS.value)
    lo = spec.get(RayStageSpecKeys.MIN_WORKERS.value)
    hi = spec.get(RayStageSpecKeys.MAX_WORKERS.value)
    notes: list[str] = []
    if fixed is not None and (lo is not None or hi is not None):
        raise ValueError(
            f"stage {stage.stage_name!r}: ray_stage_spec sets num_workers={fixed} together with "
            f"min_workers={lo}/max_workers={hi}; give either a fixed size or a range"
        )
    if fixed == 0 or hi == 0:
        raise _unschedulable(stage, cpus, gpus, cluster, ignore_head_node,
                             "its ray_stage_spec caps the pool at 0 workers")

    if mode == "actor":
        if fixed is not None:
            if fixed > fits:
                raise _unschedulable(
                    stage, cpus, gpus, cluster, ignore_head_node,
                    f"it asks for a fixed pool of {fixed} actors but only {fits} fit")
            pool_min = pool_max = int(fixed)
        else:
            pool_min = int(lo) if lo is not None else 1
            pool_max = fits if hi is None else min(int(hi), fits)
            if hi is not None and hi > fits:
                notes.append(f"max_workers={hi} capped to {fits} by the cluster")
            if pool_min > fits:
                raise _unschedulable(
                    stage, cpus, gpus, cluster, ignore_head_node,
                    f"min_workers={pool_min} actors but only {fits} fit")
            if pool_min > pool_max:
                raise ValueError(
                    f"stage {stage.stage_name!r}: min_workers={pool_min} exceeds "
                    f"max_workers={pool_max}; fix the stage's ray_stage_spec"
                )
        if pool_max <= 0:  # pragma: no cover - guarded above; kept as the invariant
            raise _unschedulable(stage, cpus, gpus, cluster, ignore_head_node,
                                 "the actor pool would have 0 workers")
    else:
        pool_min = None
        cap = fixed if fixed is not None else hi
        pool_max = int(cap) if cap is not None else None

    is_fanout = bool(spec.get(RayStageSpecKeys.IS_FANOUT_STAGE.value, False))
    rows = spec.get(RayStageSpecKeys.ROWS_PER_BLOCK_AFTER_FANOUT.value)
    if is_fanout:
        rows = DEFAULT_ROWS_PER_BLOCK_AFTER_FANOUT if rows is None else int(rows)
        if rows <= 0:
            raise ValueError(
                f"stage {stage.stage_name!r}: rows_per_block_after_fanout must be >= 1, got {rows}"
            )
    else:
        rows = None
    max_calls = spec.get(RayStageSpecKeys.MAX_CALLS_PER_WORKER.value)
    if max_calls == 0:
        raise ValueError(
            f"stage {stage.stage_name!r}: max_calls_per_worker must be >= 1 or None, got 0"
        )
    if max_calls is not None and mode == "actor":
        notes.append("max_calls_per_worker applies to task mode only; actors are kept")

    return StagePlan(
        stage_name=stage.stage_name, mode=mode, cpus=cpus, gpus=gpus, batch_size=batch_size,
        pool_min=pool_min, pool_max=pool_max, is_fanout=is_fanout,
        rows_per_block_after_fanout=rows, max_calls_per_worker=max_calls,
        fixed_pool=fixed is not None and mode == "actor", notes=tuple(notes),
    )


def will_fuse(upstream: StagePlan, downstream: StagePlan) -> bool:
    """Whether Ray Data 2.60 fuses the map operators of two adjacent stages into one.

    Mirrors ``ray/data/_internal/logical/rules/operator_fusion.py``: the upstream must be a task
    pool (actor -> anything never fuses); task -> task needs equal pool sizes; task -> actor
    needs the task cap unset or equal to the actor pool's max; and the remote args must be
    equal (num_cpus, num_gpus, and max_calls, which we set only in task mode). A fan-out
    upstream is followed by a repartition, which absorbs that map, so the next stage is not
    fused with it.
    """
    if upstream.mode != "task" or upstream.is_fanout:
        return False
    if downstream.mode == "task":
        if upstream.pool_max != downstream.pool_max:
            return False
        if upstream.max_calls_per_worker != downstream.max_calls_per_worker:
            return False
    else:
        if upstream.pool_max is not None and upstream.pool_max != downstream.pool_max:
            return False
        if upstream.max_calls_per_worker is not None:
            return False
    return upstream.cpus == downstream.cpus and upstream.gpus == downstream.gpus
