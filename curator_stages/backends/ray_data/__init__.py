"""The Ray Data backend: plan a stage on a cluster, adapt it to Ray Data, execute pipelines.

The per-stage arithmetic (mode, pool, fusion) is the core's :mod:`curator_stages.plan.stage_plan`,
shared with ``Pipeline.plan()`` and re-exported here; ``adapter`` turns one stage into a
``map_batches`` call; ``workers`` is what runs inside Ray's workers; ``errors`` brings a
worker's error back to the driver as itself; ``executor`` assembles and runs a whole pipeline
as one streaming plan and returns the core's ``ExecutionResult``; ``plan_context`` holds
the Ray Data settings of one plan, restored after it. Starting or joining Ray is
:mod:`curator_stages.runtime`'s.
"""

from curator_stages.backends.ray_data.adapter import (
    RayDataStageAdapter,
    create_actor_from_stage,
    create_task_from_stage,
)
from curator_stages.plan.cluster_resources import ClusterResources, NodeResources
from curator_stages.backends.ray_data.errors import (
    StageRunError,
    StageSetupError,
    surfaced_stage_errors,
)
from curator_stages.backends.ray_data.executor import RayDataExecutor, apply_stages, streamed_tasks
from curator_stages.backends.ray_data.plan_context import data_context_for_plan
from curator_stages.plan.stage_plan import (
    StagePlan,
    UnschedulableStageError,
    plan_stage,
    will_fuse,
)
from curator_stages.execution import ExecutionResult, ExecutionSummary

__all__ = [
    "ClusterResources",
    "ExecutionResult",
    "ExecutionSummary",
    "NodeResources",
    "RayDataExecutor",
    "RayDataStageAdapter",
    "StageRunError",
    "StageSetupError",
    "StagePlan",
    "UnschedulableStageError",
    "apply_stages",
    "data_context_for_plan",
    "create_actor_from_stage",
    "create_task_from_stage",
    "plan_stage",
    "streamed_tasks",
    "surfaced_stage_errors",
    "will_fuse",
]
