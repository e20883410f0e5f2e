"""The pipeline plan: what a run will ask of the cluster, computed before any data is touched.

A data engineer wants to know, before paying for a run, how each stage will execute: actor or
task, CPUs/GPUs per worker, batch size, how big the actor pools get on *this* cluster, which
stages Ray Data fuses into one operator, where a fan-out is repartitioned, where the stream is
cut by a whole-dataset step (materialise), and where the Prefect flow writes checkpoints. This
package answers that with the backend's own arithmetic (``plan_stage`` and ``will_fuse`` from
:mod:`curator_stages.plan.stage_plan`, which the Ray Data backend imports from here), so the plan
and the run cannot disagree.

The cluster is the live one (per-node totals of ``ray.nodes()`` when Ray is initialised or
``RAY_ADDRESS`` names one), a declared one (``"2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"``), or,
with neither, the local machine an embedded Ray would start on. Declaring a cluster never starts
Ray.

The plan belongs to the core: it never imports Prefect, and a backend only to join the live
cluster that ``RAY_ADDRESS`` names (``resolve_cluster``). A flow publishes it as an artifact with
:func:`curator_stages.orchestration.plan_artifact.publish_plan_artifact`.

- :mod:`.model`: :class:`PlannedStage`, :class:`PipelinePlan` and their renderings;
- :mod:`.cluster_resources`: a cluster as pure data (nodes and their totals) and pool sizing;
- :mod:`.stage_plan`: how one stage runs on a cluster (mode, pool, fusion), shared with the
  backend;
- :mod:`.cluster`: which cluster a plan is for (declared, live, or this machine);
- :mod:`.planner`: :func:`plan_pipeline`, the arithmetic.
"""

from curator_stages.plan.cluster import local_cluster, resolve_cluster
from curator_stages.plan.model import PipelinePlan, PlannedStage
from curator_stages.plan.planner import plan_pipeline
from curator_stages.plan.stage_plan import UnschedulableStageError

__all__ = [
    "PipelinePlan",
    "PlannedStage",
    "UnschedulableStageError",
    "local_cluster",
    "plan_pipeline",
    "resolve_cluster",
]
