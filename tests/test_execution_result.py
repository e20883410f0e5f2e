"""Every executor meets one protocol and returns one result: the same tasks, the same summary.

A caller that swaps LocalExecutor for MultiprocessExecutor or RayDataExecutor reads the same
``.summary`` (read = out + dropped + quarantined), so the counts never depend on where a
pipeline ran.
"""

from __future__ import annotations

import json
import sys

import pyarrow as pa
import pytest

from curator_stages import ExecutionResult, Executor, ProcessingStage, record_drops
from curator_stages.backends.local import LocalExecutor, MultiprocessExecutor
from curator_stages.io import JsonlReader


class DropShort(ProcessingStage):
    """Drops documents of fewer than three words (a module-level class: workers import it)."""

    name = "drop_short"

    def process(self, task):
        keep = pa.array([len(t.split()) >= 3 for t in task.data["text"].to_pylist()])
        kept = task.data.filter(keep)
        return record_drops(task.derive(kept), {"too_short": task.num_items - kept.num_rows})


def _corpus(root) -> str:
    root.mkdir()
    for f in range(3):
        lines = [json.dumps({"text": "one two three four" if i % 3 else "short"}) for i in range(7)]
        lines.insert(2, "{not json")  # quarantined with its file and line
        (root / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return str(root)


def _pipeline(tmp_path, corpus: str) -> list:
    reader = JsonlReader(corpus, files_per_group=1, quarantine_dir=str(tmp_path / "q"))
    return [reader, DropShort()]


def _run(executor: Executor, tmp_path, corpus: str) -> ExecutionResult:
    assert isinstance(executor, Executor)
    out = executor.execute(_pipeline(tmp_path, corpus))
    assert isinstance(out, ExecutionResult)
    return out


def _expected_summary() -> dict:
    # 3 files x 8 lines read: 1 malformed, 7 documents of which 3 (i = 0, 3, 6) are short.
    return {"documents_read": 24, "documents_out": 12, "documents_dropped": 9,
            "documents_quarantined": 3, "dropped_by_reason": {"too_short": 9}}


def _counts(out: ExecutionResult) -> dict:
    d = out.summary.to_dict()
    return {k: d[k] for k in _expected_summary()}


def test_local_and_multiprocess_executors_return_the_same_result(tmp_path):
    corpus = _corpus(tmp_path / "in")
    local = _run(LocalExecutor(), tmp_path, corpus)
    pooled = _run(MultiprocessExecutor(workers=2), tmp_path, corpus)
    assert _counts(local) == _counts(pooled) == _expected_summary()
    assert local.summary.balanced and pooled.summary.balanced
    assert sorted(t.num_items for t in local) == sorted(t.num_items for t in pooled) == [4] * 3


def test_ray_executor_returns_the_same_result(ray_cluster, tmp_path):
    import ray.cloudpickle

    from curator_stages.backends.ray_data import RayDataExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    corpus = _corpus(tmp_path / "in")
    out = _run(RayDataExecutor(), tmp_path, corpus)
    assert _counts(out) == _counts(_run(LocalExecutor(), tmp_path, corpus)) == _expected_summary()


@pytest.mark.parametrize("executor", [LocalExecutor, MultiprocessExecutor])
def test_summary_text_states_the_identity(executor, tmp_path):
    out = _run(executor(), tmp_path, _corpus(tmp_path / "in"))
    assert out.summary.to_text().splitlines()[0] == (
        "read 24 = out 12 + dropped 9 + quarantined 3")
