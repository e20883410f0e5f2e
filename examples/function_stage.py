"""A plain function turned into a stage with ``@processing_stage`` (docs/writing_stages.md).

Run it: ``python examples/function_stage.py``. It starts an embedded Ray when none is running.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curator_stages import DocumentBatch, Pipeline, processing_stage, record_drops
from curator_stages.backends.ray_data import RayDataExecutor


@processing_stage(name="add_char_count")
def add_char_count(task: DocumentBatch) -> DocumentBatch:
    """Add a ``char_count`` column: a stateless step, so the backend runs it as Ray tasks."""
    table = task.to_pyarrow()
    counts = pc.utf8_length(table["text"]).cast(pa.int64())
    return task.derive(table.append_column("char_count", counts))


@processing_stage(name="drop_short")
def drop_short(task: DocumentBatch) -> DocumentBatch:
    """Keep documents of at least 20 characters and record why the others went."""
    table = task.to_pyarrow()
    keep = pc.greater_equal(table["char_count"], 20)
    kept = table.filter(keep)
    out = task.derive(kept)
    return record_drops(out, {"too_short": table.num_rows - kept.num_rows})


def sample_batches() -> list[DocumentBatch]:
    texts = [
        "A short one.",
        "This document is long enough to keep.",
        "tiny",
        "Another document that passes the length rule.",
    ]
    table = pa.table({
        "id": [f"doc-{i}" for i in range(len(texts))],
        "text": texts,
    })
    return [DocumentBatch(task_id="batch-0", dataset_name="example", data=table)]


def main() -> list[DocumentBatch]:
    pipeline = Pipeline("function_stage_example", [add_char_count, drop_short])
    print(pipeline.plan().to_text())  # how it will run, before running it
    results = RayDataExecutor().execute(pipeline, sample_batches())
    for task in results:
        print(task.to_pandas()[["id", "char_count"]])
        for stats in task.stage_history:
            print(f"  {stats.stage_name}: {stats.num_items_in} in, {stats.num_items_out} out, "
                  f"drops {stats.dropped_by_reason()}")
    return results


if __name__ == "__main__":
    main()
