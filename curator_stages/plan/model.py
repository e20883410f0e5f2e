"""The plan's data model and its renderings (markdown for artifacts, rich text for a terminal,
a dict for JSON)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from curator_stages.plan.cluster_resources import ClusterResources

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

    def to_text(self, width: int = 80) -> str:
        """The plan as a rich table rendered for a terminal of ``width`` columns."""
        from rich.console import Console
        from rich.table import Table

        from rich.markup import escape

        from rich import box

        # No vertical rules, one space between columns: nine columns fit 80 (cells fold).
        table = Table(title=escape(f"Plan: {self.pipeline}"), caption=escape(self._cluster_line()),
                      show_lines=False, box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1),
                      show_edge=False)
        # 80 columns: CPUs and GPUs share one column ("1/0"); the batch size is left to the
        # markdown and JSON forms; long cells wrap at words.
        headers = self._HEADERS
        merged = headers.index("CPUs")
        keep = [i for i, h in enumerate(headers) if h not in ("GPUs", "batch")]
        for i in keep:
            header = "CPU/GPU" if i == merged else headers[i]
            table.add_column(header, overflow="fold",
                             no_wrap=header in ("#", "stage", "mode", "CPU/GPU"),
                             min_width=10 if header in ("pool", "Ray Data", "Prefect") else None,
                             justify="right" if header in ("#", "CPU/GPU") else "left")
        for row in self._rows():
            row[merged] = f"{row[merged]}/{row[merged + 1]}"
            table.add_row(*(escape(row[i]) for i in keep))
        console = Console(width=width, record=True, file=open(os.devnull, "w"),
                          color_system=None)
        console.print(table)
        for line in self._summary_lines():
            console.print(line, highlight=False, markup=False)
        return console.export_text()

    def print(self, file: Any = None) -> None:
        """Print the table to ``file`` (stdout), as wide as the terminal (80 columns when it is
        not one: a log, a pipe); long cells fold."""
        import sys

        width = shutil.get_terminal_size((80, 24)).columns
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

