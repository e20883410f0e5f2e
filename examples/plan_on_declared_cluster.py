"""Plan a pipeline on a declared cluster without starting Ray (docs/writing_stages.md, part 3).

The pipeline mixes the shapes a plan has to show: a fan-out stage (repartitioned after), cheap
stateless stages (fused into one operator), a CPU actor with ``setup``, a GPU actor, and a stage
that asks for more than any node has. Run it: ``python examples/plan_on_declared_cluster.py``.
"""

from __future__ import annotations

from typing import Any

from curator_stages import DocumentBatch, Pipeline, ProcessingStage, Resources, processing_stage
from curator_stages.backends.ray_data import UnschedulableStageError
from curator_stages.plan import PipelinePlan

CLUSTER = "2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"


@processing_stage(name="split_batch", spec={"is_fanout_stage": True})
def split_batch(task: DocumentBatch) -> list[DocumentBatch]:
    """Split a batch in two (a fan-out)."""
    table = task.to_pyarrow()
    half = table.num_rows // 2
    return [task.derive(table.slice(0, half)), task.derive(table.slice(half))]


@processing_stage(name="lowercase")
def lowercase(task: DocumentBatch) -> DocumentBatch:
    return task


@processing_stage(name="strip")
def strip(task: DocumentBatch) -> DocumentBatch:
    return task


class Classifier(ProcessingStage[DocumentBatch, DocumentBatch]):
    """A CPU model: 4 CPUs per actor, loaded once per actor in setup."""

    name = "classifier"
    resources = Resources(cpus=4)

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        self._model = object()

    def process(self, task: DocumentBatch) -> DocumentBatch:
        return task


class Embedder(ProcessingStage[DocumentBatch, DocumentBatch]):
    """A GPU model: one GPU per actor (so an actor stage, batch size 8)."""

    name = "embedder"
    resources = Resources(cpus=1, gpus=1)
    batch_size = 8

    def process(self, task: DocumentBatch) -> DocumentBatch:
        return task


def build_pipeline() -> Pipeline:
    return Pipeline("plan_example", [split_batch, lowercase, strip, Classifier(), Embedder()])


def main() -> PipelinePlan:
    pipeline = build_pipeline()
    plan = pipeline.plan(CLUSTER)
    print(plan.to_text())
    # Too big for every node: refused before anything runs, naming stage, request and cluster.
    too_big = Pipeline("too_big", [Classifier().with_(resources=Resources(cpus=32))])
    try:
        too_big.plan(CLUSTER)
    except UnschedulableStageError as exc:
        print(f"refused: {exc}")
    return plan


if __name__ == "__main__":
    main()
