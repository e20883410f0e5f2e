"""Planning a pipeline: the backend's own arithmetic applied stage by stage, no data touched."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from curator_stages.plan.cluster_resources import ClusterResources, max_workers
from curator_stages.plan.stage_plan import (
    StagePlan,
    UnschedulableStageError,
    gpu_request,
    plan_stage,
    will_fuse,
)
from curator_stages.plan.cluster import resolve_cluster
from curator_stages.plan.model import PipelinePlan, PlannedStage
from curator_stages.stage import CompositeStage, GlobalStage, ProcessingStage, decompose


def plan_pipeline(
    pipeline: Iterable[Any],
    cluster: ClusterResources | str | None = None,
    ignore_head_node: bool = False,
    stage_task_groups: Sequence[Sequence[str]] | None = None,
    name: str | None = None,
) -> PipelinePlan:
    """Plan ``pipeline`` (a :class:`curator_stages.pipeline.Pipeline` or a list of stages) on
    ``cluster`` without processing any data.

    ``stage_task_groups`` lists the execution-stage names each Prefect stage task runs, in order,
    as the flow groups them; each group's end is a checkpoint, and Ray Data never fuses across it
    (each stage task is its own Ray Data plan). Raises :class:`UnschedulableStageError` naming the
    stage, its request and the cluster when a stage could never run.
    """
    resolved, source = resolve_cluster(cluster)
    # A Pipeline by its attributes, not isinstance: the pipeline imports the plan (Pipeline.plan),
    # so the plan must not import the pipeline.
    if hasattr(pipeline, "stages"):
        top = list(pipeline.stages)
        pipeline_name = name or pipeline.name
    else:
        top = list(pipeline)
        pipeline_name = name or "pipeline"
    parents: dict[int, str] = {}
    execution: list[ProcessingStage | GlobalStage] = []
    for stage in top:
        parts = decompose([stage])
        for part in parts:
            if isinstance(stage, CompositeStage):
                parents[id(part)] = stage.stage_name
            execution.append(part)
    _check_unique_names(pipeline_name, execution)
    group_of = _task_group_index(pipeline_name, execution, stage_task_groups)

    warnings: list[str] = []
    planned: list[PlannedStage] = []
    stage_plans: list[StagePlan | None] = []
    operator = 0
    segment = 0
    for i, stage in enumerate(execution):
        prev = planned[-1] if planned else None
        prev_plan = stage_plans[-1] if stage_plans else None
        notes: list[str] = []
        new_group = prev is None or group_of.get(stage.stage_name) != prev.task_group
        if prev is None or new_group or isinstance(stage, GlobalStage):
            segment += 1  # a new Ray Data plan: a stage task starts or a barrier cuts the stream
        if isinstance(stage, GlobalStage):
            sp = None
            gpus = float(gpu_request(stage, resolved, ignore_head_node))  # type: ignore[arg-type]
            fits = max_workers(resolved, stage.resources.cpus, gpus, ignore_head_node)
            if fits <= 0:
                problem = (f"stage {stage.stage_name!r} (global) cannot be scheduled: it asks "
                           f"for cpus={stage.resources.cpus:g}, gpus={gpus:g}; the cluster has "
                           f"{resolved.describe(ignore_head_node)}")
                raise UnschedulableStageError(
                    f"{problem}. Fix: lower the stage's resources "
                    "(stage.with_(resources=Resources(...))) or add nodes.",
                    stage.stage_name, problem)
            notes.append("upstream is materialised; fit() runs once, then the per-task stage it "
                         "returns is planned at run time")
            row = PlannedStage(
                index=i + 1, name=stage.stage_name, stage_class=type(stage).__name__,
                parent=parents.get(id(stage)), mode="global", cpus=stage.resources.cpus,
                gpus=gpus, batch_size=None, pool_min=None, pool_max=None, max_concurrent=fits,
                fixed_pool=False, is_fanout=False, rows_per_block_after_fanout=None,
                operator=0, segment=segment, task_group=group_of.get(stage.stage_name),
                checkpoint_after=False, notes=tuple(notes),
            )
        else:
            # A model stage fixes its device for this cluster (GPU where one exists) and says so.
            placed = (stage.for_cluster(resolved, ignore_head_node)
                      if hasattr(stage, "for_cluster") else stage)
            sp = plan_stage(placed, resolved, ignore_head_node, warn=False)
            notes.extend(getattr(placed, "plan_notes", ()))
            if stage.resources.requires_gpu and stage.batch_size is None:
                notes.append("GPU stage without batch_size: the backend uses 1")
            notes.extend(sp.notes)
            fuses = False
            if prev is not None and not new_group and prev.mode != "global" and prev_plan:
                fuses = will_fuse(prev_plan, sp)
                if (not fuses and prev_plan.is_fanout and sp.batch_size is None
                        and will_fuse(dataclasses.replace(prev_plan, is_fanout=False), sp)):
                    # Probed on Ray 2.60: map(fan-out) -> repartition -> map(batch_size=None)
                    # becomes one operator, and the repartition no longer spreads the children.
                    fuses = True
                    warnings.append(
                        f"stage {stage.stage_name!r} has batch_size=None right after fan-out "
                        f"stage {prev.name!r}: Ray Data fuses them into one operator and the "
                        "repartition no longer spreads the fan-out; give it a batch_size "
                        f"(e.g. {stage.stage_name}.with_(batch_size=1))"
                    )
            if not fuses:
                operator += 1
            row = PlannedStage(
                index=i + 1, name=stage.stage_name, stage_class=type(stage).__name__,
                parent=parents.get(id(stage)), mode=sp.mode, cpus=sp.cpus, gpus=sp.gpus,
                batch_size=sp.batch_size, pool_min=sp.pool_min, pool_max=sp.pool_max,
                max_concurrent=max_workers(resolved, sp.cpus, sp.gpus, ignore_head_node),
                fixed_pool=sp.fixed_pool, is_fanout=sp.is_fanout,
                rows_per_block_after_fanout=sp.rows_per_block_after_fanout,
                operator=operator, segment=segment, task_group=group_of.get(stage.stage_name),
                checkpoint_after=False, notes=tuple(notes),
            )
        if prev is not None and stage_task_groups is not None and new_group:
            planned[-1] = dataclasses.replace(planned[-1], checkpoint_after=True)
        planned.append(row)
        stage_plans.append(sp)
    if planned and stage_task_groups is not None:
        planned[-1] = dataclasses.replace(planned[-1], checkpoint_after=True)
    return PipelinePlan(
        pipeline=pipeline_name, cluster=resolved, cluster_source=source,
        ignore_head_node=ignore_head_node, stages=planned,
        task_groups=[list(g) for g in stage_task_groups] if stage_task_groups is not None else None,
        warnings=warnings,
    )


def _check_unique_names(pipeline_name: str, stages: list[Any]) -> None:
    seen: set[str] = set()
    for s in stages:
        if s.stage_name in seen:
            raise ValueError(
                f"pipeline {pipeline_name!r}: two execution stages are named {s.stage_name!r}; "
                "give one another name with stage.with_(name=...) so plans, checkpoints and "
                "reports can tell them apart"
            )
        seen.add(s.stage_name)


def _task_group_index(pipeline_name: str, stages: list[Any],
                      groups: Sequence[Sequence[str]] | None) -> dict[str, int]:
    """Stage name -> 1-based Prefect stage task, checking the groups cover the stages in order."""
    if groups is None:
        return {}
    flat = [name for group in groups for name in group]
    names = [s.stage_name for s in stages]
    if flat != names or any(not g for g in groups):
        raise ValueError(
            f"pipeline {pipeline_name!r}: stage_task_groups {[list(g) for g in groups]} must list "
            f"every execution stage once, in order, in non-empty groups; stages are {names}"
        )
    return {name: gi for gi, group in enumerate(groups, 1) for name in group}

