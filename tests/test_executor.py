"""RayDataExecutor end to end: fan-out, actor with setup, task filter, global dedup."""

from __future__ import annotations

import sys

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray.cloudpickle

from curator_stages import (
    CompositeStage,
    DocumentBatch,
    GlobalStage,
    Pipeline,
    ProcessingStage,
    record_drops,
)
from curator_stages.backends.ray_data import RayDataExecutor

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_BATCHES, DOCS_PER_BATCH = 4, 5


def _texts(batch: int) -> list[str]:
    # Documents 0 and 1 of every batch share a text across batches: global duplicates.
    return [f"common {d}" if d < 2 else f"unique {batch}-{d}" for d in range(DOCS_PER_BATCH)]


class MakeBatches(ProcessingStage):
    """EmptyTask -> N document batches (fan-out)."""

    def ray_stage_spec(self):
        return {"is_fanout_stage": True}

    def process(self, task):
        return [DocumentBatch(f"b{b}", "demo", pd.DataFrame({
            "id": [f"{b}-{d}" for d in range(DOCS_PER_BATCH)], "text": _texts(b)}))
            for b in range(N_BATCHES)]


class Tagger(ProcessingStage):
    """An actor stage: its setup builds state that process uses."""

    def __init__(self, tag: str):
        self.tag = tag

    def setup(self, worker_metadata=None):
        self._prefix = f"{self.tag}:"

    def process(self, task):
        return task.derive(task.data.append_column(
            "tag", pa.array([self._prefix + i for i in task.data["id"].to_pylist()])))


class DropOddDocs(ProcessingStage):
    """A task-mode filter: drops documents whose index in the batch is odd."""

    def process(self, task):
        keep = pa.array([int(i.split("-")[1]) % 2 == 0 for i in task.data["id"].to_pylist()])
        kept = task.data.filter(keep)
        return record_drops(task.derive(kept), {"odd": task.num_items - kept.num_rows})


class DropIds(ProcessingStage):
    def __init__(self, ids: list[str]):
        self.ids = sorted(ids)

    def process(self, task):
        kept = task.data.filter(pc.invert(pc.is_in(task.data["id"], pa.array(self.ids))))
        return record_drops(task.derive(kept), {"duplicate": task.num_items - kept.num_rows})


class ExactDedup(GlobalStage):
    """Keeps the smallest id of each text across the whole dataset."""

    def fit(self, dataset):
        first: dict[str, str] = {}
        dupes: list[str] = []
        rows = [(i, t) for task in dataset.to_pandas()["item"]
                for i, t in zip(task.data["id"].to_pylist(), task.data["text"].to_pylist())]
        for doc_id, text in sorted(rows):
            if text in first:
                dupes.append(doc_id)
            else:
                first[text] = doc_id
        return DropIds(dupes)


class TagAndFilter(CompositeStage):
    def decompose(self):
        return [Tagger("v1"), DropOddDocs()]


def _expected() -> dict[str, str]:
    docs = {f"{b}-{d}": t for b in range(N_BATCHES) for d, t in enumerate(_texts(b)) if d % 2 == 0}
    seen, keep = set(), {}
    for doc_id in sorted(docs):
        if docs[doc_id] not in seen:
            seen.add(docs[doc_id])
            keep[doc_id] = docs[doc_id]
    return keep


def test_pipeline_end_to_end_returns_expected_documents(ray_cluster):
    pipeline = Pipeline("demo", [MakeBatches(), TagAndFilter(), ExactDedup()])
    executor = RayDataExecutor()
    out = executor.execute(pipeline)

    assert all(isinstance(t, DocumentBatch) for t in out)
    assert len(out) == N_BATCHES
    docs = {i: (t, g) for task in out
            for i, t, g in zip(task.data["id"].to_pylist(), task.data["text"].to_pylist(),
                               task.data["tag"].to_pylist())}
    assert {i: t for i, (t, _) in docs.items()} == _expected()
    assert all(g == f"v1:{i}" for i, (_, g) in docs.items())
    # Accounting: every document is either returned or dropped with a reason.
    dropped = sum(n for task in out for s in task._stage_perf
                  for n in s.dropped_by_reason().values())
    assert len(docs) + dropped == N_BATCHES * DOCS_PER_BATCH
    modes = [(p.stage_name, p.mode) for p in executor.plans]
    assert modes == [("make_batches", "task"), ("tagger", "actor"),
                     ("drop_odd_docs", "task"), ("drop_ids", "task")]


def test_executor_leaves_session_ray_running(ray_cluster):
    out = RayDataExecutor().execute([DropOddDocs()], [DocumentBatch(
        "b", "demo", pd.DataFrame({"id": ["0-0", "0-1"], "text": ["a", "b"]}))])
    assert [t.num_items for t in out] == [1]
    assert ray_cluster.is_initialized()
    assert ray_cluster.get(ray_cluster.put(41)) == 41


def test_execute_restores_data_context_and_summarises_the_run(ray_cluster):
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_fallback_to_arrow_object_ext_type = None  # Ray Data's own default
    ctx.op_resource_reservation_enabled = True
    before = {name: getattr(ctx, name) for name in (
        "enable_fallback_to_arrow_object_ext_type", "op_resource_reservation_enabled",
        "enable_progress_bars")}

    out = RayDataExecutor().execute(Pipeline("demo", [MakeBatches(), DropOddDocs()]))

    after = {name: getattr(DataContext.get_current(), name) for name in before}
    assert after == before, "the plan's Ray Data settings leaked into the process"
    # The result is still a list of tasks, with public counts on it.
    assert isinstance(out, list) and len(out) == N_BATCHES
    docs = sum(t.num_items for t in out)
    assert out.summary.documents_out == docs
    assert out.summary.documents_dropped == N_BATCHES * DOCS_PER_BATCH - docs > 0
    assert set(out.summary.dropped_by_stage) == {"drop_odd_docs"}


class _Counted(ProcessingStage):
    """A task-mode stage with setup; records setup/teardown calls in this process."""

    calls: list = []

    def ray_stage_spec(self):
        return {"is_actor_stage": False}

    def setup(self, worker_metadata=None):
        _Counted.calls.append(("setup", self.stage_name))

    def teardown(self):
        _Counted.calls.append(("teardown", self.stage_name))

    def process(self, task):
        return task


def test_task_mode_stage_cache_releases_old_stages_and_keeps_none_without_setup(ray_cluster):
    from curator_stages.backends.ray_data import workers

    workers._PROCESS_STAGES.clear()
    _Counted.calls.clear()
    stages = [_Counted().with_(name=f"counted_{i}")
              for i in range(workers.PROCESS_STAGE_CACHE_SIZE + 1)]
    for stage in stages:
        key = workers.stage_key(stage)
        assert workers._task_mode_stage(stage, key) is stage
        assert workers._task_mode_stage(stage, key) is stage  # reused: set up once
    assert [c for c in _Counted.calls if c[0] == "setup"] == [
        ("setup", s.stage_name) for s in stages]
    # The least recently used stage was torn down and released; the newest are kept.
    assert ("teardown", "counted_0") in _Counted.calls
    assert len(workers._PROCESS_STAGES) == workers.PROCESS_STAGE_CACHE_SIZE
    assert all(entry[0] is not stages[0] for entry in workers._PROCESS_STAGES.values())
    # A stage without setup has nothing to reuse, so it is never kept (a dedup filter holds
    # its whole id set).
    plain = DropOddDocs()
    assert workers._task_mode_stage(plain, workers.stage_key(plain)) is plain
    assert all(entry[0] is not plain for entry in workers._PROCESS_STAGES.values())
    workers._teardown_cached()
