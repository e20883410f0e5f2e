"""The Ray Data backend: plan a stage on a cluster, adapt it to Ray Data, execute pipelines.

``planning`` is pure (usable against a declared cluster); ``adapter`` turns one stage into a
``map_batches`` call; ``executor`` runs a whole pipeline as one streaming plan.
"""

from curator_stages.backends.ray_data.adapter import (
    RayDataStageAdapter,
    StageSetupError,
    apply_stages,
    create_actor_from_stage,
    create_task_from_stage,
    surfaced_stage_errors,
)
from curator_stages.backends.ray_data.cluster import ClusterResources, NodeResources
from curator_stages.backends.ray_data.executor import RayDataExecutor
from curator_stages.backends.ray_data.planning import (
    StagePlan,
    UnschedulableStageError,
    plan_stage,
    will_fuse,
)

__all__ = [
    "ClusterResources",
    "NodeResources",
    "RayDataExecutor",
    "RayDataStageAdapter",
    "StageSetupError",
    "StagePlan",
    "UnschedulableStageError",
    "apply_stages",
    "create_actor_from_stage",
    "create_task_from_stage",
    "plan_stage",
    "surfaced_stage_errors",
    "will_fuse",
]
