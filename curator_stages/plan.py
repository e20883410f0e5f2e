"""The pipeline plan: what a run will ask of the cluster, computed before any data is touched.

A data engineer wants to know, before paying for a run, how each stage will execute: actor or
task, CPUs/GPUs per worker, batch size, how big the actor pools get on *this* cluster, which
stages Ray Data fuses into one operator, where a fan-out is repartitioned, where the stream is
cut by a whole-dataset step (materialise), and where the Prefect flow writes checkpoints. This
module answers that with the backend's own arithmetic (``plan_stage`` and ``will_fuse`` from
:mod:`curator_stages.backends.ray_data.planning`), so the plan and the run cannot disagree.

The cluster is the live one (per-node totals of ``ray.nodes()`` when Ray is initialised or
``RAY_ADDRESS`` names one), a declared one (``"2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"``), or,
with neither, the local machine an embedded Ray would start on. Declaring a cluster never starts
Ray.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from curator_stages.backends.ray_data.cluster import ClusterResources, NodeResources, max_workers
from curator_stages.backends.ray_data.planning import (
    StagePlan,
    UnschedulableStageError,
    gpu_request,
    plan_stage,
    will_fuse,
)
from curator_stages.pipeline import decompose
from curator_stages.stage import CompositeStage, GlobalStage, ProcessingStage

if TYPE_CHECKING:  # pragma: no cover
    from curator_stages.pipeline import Pipeline

__all__ = [
    "PipelinePlan",
    "PlannedStage",
    "UnschedulableStageError",
    "local_cluster",
    "plan_pipeline",
    "publish_plan_artifact",
    "resolve_cluster",
]


# ---------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class PlannedStage:
    """One execution stage in the plan, with where it sits in Ray Data and in the flow."""

    index: int  # 1-based position among execution stages
    name: str
    stage_class: str
    parent: str | None  # the composite stage the user wrote, when this stage came from one
    mode: str  # "actor" | "task" | "global"
    cpus: float
    gpus: float
    batch_size: int | None
    pool_min: int | None
    pool_max: int | None  # None: unbounded tasks
    max_concurrent: int  # workers of this request the cluster can hold at once
    fixed_pool: bool
    is_fanout: bool
    rows_per_block_after_fanout: int | None
    operator: int  # 1-based Ray Data map operator; equal numbers = fused; 0 = global (driver fit)
    segment: int  # streaming segment (cut by materialise barriers and stage-task boundaries)
    task_group: int | None  # 1-based Prefect stage task, when the flow's grouping is known
    checkpoint_after: bool  # the stage task ends here: output written to disk
    notes: tuple[str, ...] = ()

    @property
    def pool(self) -> str:
        """The pool as a person reads it: ``1..10 actors``, ``4 actors``, ``unbounded``."""
        if self.mode == "global":
            return "driver (fit)"
        if self.mode == "actor":
            if self.fixed_pool:
                return f"{self.pool_max} actors"
            return f"{self.pool_min}..{self.pool_max} actors"
        if self.pool_max is None:
            return f"unbounded (<= {self.max_concurrent} at once)"
        return f"<= {self.pool_max} tasks"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        d["pool"] = self.pool
        return d


@dataclass
class PipelinePlan:
    """The plan of a whole pipeline on one cluster; render it with ``to_text``/``to_markdown``."""

    pipeline: str
    cluster: ClusterResources
    cluster_source: str  # "declared", "live" or "local machine"
    ignore_head_node: bool
    stages: list[PlannedStage]
    task_groups: list[list[str]] | None = None
    warnings: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- derived views
    @property
    def operators(self) -> list[list[str]]:
        """Stage names per Ray Data map operator, in order (a list of 2+ names = fused)."""
        groups: dict[int, list[str]] = {}
        for s in self.stages:
            if s.operator > 0:  # global stages are a driver-side fit, not a map operator
                groups.setdefault(s.operator, []).append(s.name)
        return [groups[k] for k in sorted(groups)]

    @property
    def fused(self) -> list[list[str]]:
        """Only the operators that fuse two or more stages."""
        return [g for g in self.operators if len(g) > 1]

    @property
    def repartitions(self) -> list[str]:
        """Stages after which a repartition is inserted (fan-out stages)."""
        return [s.name for s in self.stages if s.is_fanout]

    @property
    def barriers(self) -> list[str]:
        """Global stages: the upstream dataset is materialised before each."""
        return [s.name for s in self.stages if s.mode == "global"]

    @property
    def checkpoints(self) -> list[str]:
        """Stages after which the flow writes a checkpoint (end of a Prefect stage task)."""
        return [s.name for s in self.stages if s.checkpoint_after]

    def stage(self, name: str) -> PlannedStage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"plan of {self.pipeline!r} has no stage {name!r}; "
                       f"stages: {[s.name for s in self.stages]}")

    # -------------------------------------------------------------- rendering
    def _cluster_line(self) -> str:
        line = f"{self.cluster_source} cluster: {_cluster_summary(self.cluster)}"
        if self.ignore_head_node:
            line += " (head node excluded from work)"
        return line

    def _flow_line(self, s: PlannedStage) -> str:
        if s.task_group is None:
            return ""
        return f"task {s.task_group}" + (" → checkpoint" if s.checkpoint_after else "")

    def _ray_line(self, s: PlannedStage) -> str:
        if s.mode == "global":
            return "materialise, then fit"
        parts = [f"op {s.operator}"]
        if s.is_fanout:
            parts.append(f"fan-out → repartition({s.rows_per_block_after_fanout}/block)")
        return ", ".join(parts)

    def _rows(self) -> list[list[str]]:
        rows = []
        for s in self.stages:
            row = [
                str(s.index), s.name, s.mode, f"{s.cpus:g}", f"{s.gpus:g}",
                "-" if s.batch_size is None else str(s.batch_size),
                s.pool, self._ray_line(s),
            ]
            if self.task_groups is not None:
                row.append(self._flow_line(s))
            rows.append(row)
        return rows

    @property
    def _HEADERS(self) -> list[str]:
        headers = ["#", "stage", "mode", "CPUs", "GPUs", "batch", "pool", "Ray Data"]
        return headers + (["Prefect"] if self.task_groups is not None else [])

    def _summary_lines(self) -> list[str]:
        lines = []
        ops = self.operators
        lines.append(f"Ray Data map operators: {len(ops)} for {len(self.stages)} stages")
        for group in self.fused:
            lines.append("fused into one operator: " + " + ".join(group))
        for name in self.repartitions:
            lines.append(f"repartition after fan-out stage: {name}")
        for name in self.barriers:
            lines.append(f"materialise barrier before global stage: {name}")
        if self.task_groups is not None:
            lines.append(f"Prefect stage tasks: {len(self.task_groups)}; checkpoint after: "
                         + ", ".join(self.checkpoints))
        for s in self.stages:
            for note in s.notes:
                lines.append(f"note ({s.name}): {note}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return lines

    def to_markdown(self) -> str:
        """GitHub-flavoured markdown: a heading, the cluster, a stage table, then fusion notes."""
        out = [f"## Plan: {self.pipeline}", "", self._cluster_line(), ""]
        out.append("| " + " | ".join(self._HEADERS) + " |")
        out.append("|" + "|".join("---" for _ in self._HEADERS) + "|")
        for row in self._rows():
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        out.append("")
        out.extend(f"- {line}" for line in self._summary_lines())
        return "\n".join(out) + "\n"

    def to_text(self, width: int = 140) -> str:
        """The plan as a rich table rendered for a terminal of ``width`` columns."""
        from rich.console import Console
        from rich.table import Table

        from rich.markup import escape

        table = Table(title=escape(f"Plan: {self.pipeline}"), caption=escape(self._cluster_line()),
                      show_lines=False)
        for header in self._HEADERS:
            table.add_column(header, overflow="fold",
                             justify="right" if header in ("#", "CPUs", "GPUs", "batch") else "left")
        for row in self._rows():
            table.add_row(*(escape(c) for c in row))
        console = Console(width=width, record=True, file=open(os.devnull, "w"),
                          color_system=None)
        console.print(table)
        for line in self._summary_lines():
            console.print(line, highlight=False, markup=False)
        return console.export_text()

    def print(self, file: Any = None) -> None:
        """Print the table to ``file`` (stdout), as wide as the terminal but never cramped."""
        import sys

        width = max(shutil.get_terminal_size((140, 24)).columns, 140)
        (file or sys.stdout).write(self.to_text(width=width))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "cluster_source": self.cluster_source,
            "cluster": [dataclasses.asdict(n) for n in self.cluster.nodes],
            "ignore_head_node": self.ignore_head_node,
            "stages": [s.to_dict() for s in self.stages],
            "operators": self.operators,
            "fused": self.fused,
            "repartitions": self.repartitions,
            "barriers": self.barriers,
            "task_groups": self.task_groups,
            "checkpoints": self.checkpoints,
            "warnings": list(self.warnings),
        }


def _cluster_summary(cluster: ClusterResources) -> str:
    """``3 nodes, 40 CPUs, 2 GPUs [head 16 CPUs; 16 CPUs; 8 CPUs 2 GPUs]``."""
    parts = []
    for n in cluster.nodes:
        text = f"{n.cpus:g} CPUs" + (f" {n.gpus:g} GPUs" if n.gpus else "")
        if n.gpu_memory_gb:
            text += f" ({n.gpu_memory_gb:g} GB/GPU)"
        parts.append(("head " if n.is_head else "") + text)
    return (f"{len(cluster.nodes)} node(s), {cluster.total_cpus:g} CPUs, "
            f"{cluster.total_gpus:g} GPUs [" + "; ".join(parts) + "]")


# ---------------------------------------------------------------------------- cluster
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
        ray.init(address=os.environ["RAY_ADDRESS"], include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
        try:
            return ClusterResources.from_ray(available=False), "live"
        finally:
            ray.shutdown()  # only disconnects this driver; the cluster keeps running
    return local_cluster(), "local machine (embedded Ray)"


# ---------------------------------------------------------------------------- planning
def plan_pipeline(
    pipeline: "Pipeline | Iterable[Any]",
    cluster: ClusterResources | str | None = None,
    ignore_head_node: bool = False,
    stage_task_groups: Sequence[Sequence[str]] | None = None,
    name: str | None = None,
) -> PipelinePlan:
    """Plan ``pipeline`` on ``cluster`` without processing any data.

    ``stage_task_groups`` lists the execution-stage names each Prefect stage task runs, in order,
    as the flow groups them; each group's end is a checkpoint, and Ray Data never fuses across it
    (each stage task is its own Ray Data plan). Raises :class:`UnschedulableStageError` naming the
    stage, its request and the cluster when a stage could never run.
    """
    from curator_stages.pipeline import Pipeline

    resolved, source = resolve_cluster(cluster)
    if isinstance(pipeline, Pipeline):
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
                raise UnschedulableStageError(
                    f"stage {stage.stage_name!r} (global) cannot be scheduled: it asks for "
                    f"cpus={stage.resources.cpus:g}, gpus={gpus:g}; the cluster has "
                    f"{resolved.describe(ignore_head_node)}. Fix: lower the stage's resources "
                    "(stage.with_(resources=Resources(...))) or add nodes."
                )
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
            placed = stage.for_cluster(resolved) if hasattr(stage, "for_cluster") else stage
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


# ---------------------------------------------------------------------------- Prefect
def publish_plan_artifact(plan: PipelinePlan, key: str | None = None) -> str | None:
    """Publish the plan as a Prefect markdown artifact of the current flow run.

    Call it first thing in a flow so the plan is the run's first artifact. Outside a flow or
    task run there is nothing to attach it to, and it returns None instead of failing a local
    script. Returns the artifact id otherwise.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    from prefect.artifacts import create_markdown_artifact

    artifact_key = key or _artifact_key(f"plan-{plan.pipeline}")
    result = create_markdown_artifact(
        markdown=plan.to_markdown(), key=artifact_key,
        description=f"Execution plan of {plan.pipeline} on the {plan.cluster_source} cluster",
    )
    return str(getattr(result, "id", result)) if result is not None else None


def _artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    import re

    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "plan"
