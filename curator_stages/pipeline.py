"""An ordered list of stages, with composite stages decomposed into execution stages."""

from __future__ import annotations

from typing import Any, Iterable

from curator_stages.plan import PipelinePlan, plan_pipeline
from curator_stages.stage import CompositeStage, GlobalStage, ProcessingStage, decompose

AnyStage = ProcessingStage | CompositeStage | GlobalStage


class Pipeline:
    """The stages of one curation job, in order.

    Composite stages are kept as the user wrote them (for reports) and decomposed on demand into
    the execution stages that backends run.
    """

    def __init__(self, name: str, stages: Iterable[AnyStage] | None = None, description: str = ""):
        self.name = name
        self.description = description
        self.stages: list[AnyStage] = []
        for stage in stages or []:
            self.add_stage(stage)

    def add_stage(self, stage: AnyStage) -> "Pipeline":
        if not isinstance(stage, (ProcessingStage, CompositeStage, GlobalStage)):
            raise TypeError(
                f"pipeline {self.name!r}: {stage!r} is not a ProcessingStage, CompositeStage "
                "or GlobalStage; wrap plain functions with curator_stages.processing_stage"
            )
        self.stages.append(stage)
        return self

    def execution_stages(self) -> list[ProcessingStage | GlobalStage]:
        """Composite stages replaced by their parts, recursively."""
        return decompose(self.stages)

    def describe(self) -> str:
        """A readable listing: each stage with its resources, batch size and execution hints."""
        lines = [f"Pipeline {self.name!r}" + (f": {self.description}" if self.description else "")]
        for i, stage in enumerate(self.stages, 1):
            if isinstance(stage, CompositeStage):
                lines.append(f"{i}. {stage.stage_name} (composite)")
                for part in decompose([stage]):
                    lines.append(f"   - {_describe_one(part)}")
            else:
                lines.append(f"{i}. {_describe_one(stage)}")
        return "\n".join(lines)

    def plan(self, cluster: Any = None, ignore_head_node: bool = False,
             stage_task_groups: list[list[str]] | None = None) -> PipelinePlan:
        """How this pipeline will run (modes, pools, fusion, barriers, checkpoints), without data.

        ``cluster``: None (live Ray, else this machine), a ClusterResources, or a text such as
        ``"2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"``. Returns a
        :class:`curator_stages.plan.PipelinePlan`; see that module.
        """
        return plan_pipeline(self, cluster=cluster, ignore_head_node=ignore_head_node,
                             stage_task_groups=stage_task_groups)

    def __iter__(self):
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {[s.stage_name for s in self.stages]})"


def _describe_one(stage: ProcessingStage | GlobalStage) -> str:
    r = stage.resources
    res = f"cpus={r.cpus:g}"
    if r.gpus:
        res += f" gpus={r.gpus:g}"
    if r.gpu_memory_gb:
        res += f" gpu_memory_gb={r.gpu_memory_gb:g}"
    kind = "global" if isinstance(stage, GlobalStage) else type(stage).__name__
    spec = stage.ray_stage_spec() if isinstance(stage, ProcessingStage) else {}
    hints = ", ".join(f"{k}={v}" for k, v in spec.items())
    return (f"{stage.stage_name} [{kind}] {res} batch_size={stage.batch_size}"
            + (f" ({hints})" if hints else ""))
