"""The ``datatrove`` peer: the harness's reference pipeline on datatrove's ``LocalPipelineExecutor``.

Why it is here: the issue asks for datatrove's local executor as a peer on the *same rules*, so
that the comparison is of executors, not of filters. The documents therefore go through
datatrove's own parts (``JsonlReader``, ``JsonlWriter``, ``LocalPipelineExecutor``: one task per
input file, ``workers`` processes) while the per-document work is the very same stage objects the
other variants run (:func:`benchmarks.pipeline.reference_stages`: ``TextNormalizer``,
``HeuristicFilter`` with every quality rule, ``ExactDuplicateRemover``), wrapped in one small
datatrove step (:class:`CuratorStages`) that turns each batch of datatrove ``Document``s into a
``DocumentBatch``, runs the stages and yields the survivors.

Exact dedup is a barrier, as in datatrove's own dedup recipes: a first executor reads, normalises,
filters, writes the survivors to ``work_dir`` and each task saves the remover's compact per-task
part (``map_local``: text hashes and row keys); the driver joins them (``reduce_local``: the same
"smallest id wins" decision as every other variant) and a second executor, depending on nothing
but those files, drops the duplicates and writes ``<output>/data/*.jsonl.gz`` with datatrove's
default writer (gzip). Ids are the harness's ``<file>:<line>`` so the output digest compares.

This module imports datatrove at the top: import it only when
:func:`benchmarks.variant.datatrove_version` is not None (the base install and CI never need datatrove).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.feather as feather
from datatrove.data import Document, DocumentsPipeline
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

#: Documents per DocumentBatch handed to the stages (a harness shard is 2,500 documents, one
#: task per shard in the other variants, so a batch is a whole shard there too).
BATCH_DOCUMENTS = 2500


def _input_adapter(self: Any, data: dict, path: str, id_in_file: int | str) -> dict:
    """The harness's ids: ``<path relative to the input root>:<1-based line>`` (as JsonlReader)."""
    line = int(id_in_file) + 1
    return {"text": data.get(self.text_key, ""), "id": f"{path}:{line}",
            "metadata": {"source_file": path, "source_line": line}}


class CuratorStages(PipelineStep):
    """A datatrove step that runs curator_stages processing stages on batches of documents.

    ``barrier`` (a GlobalStage) makes the step save ``barrier.map_local`` of its output to
    ``<barrier_dir>/<rank>.arrow`` for the driver's ``reduce_local``. Counts (documents in,
    dropped by reason, quarantined, out) go to ``<counts_dir>/<phase>-<rank>.json`` so the
    driver can check read = written + dropped + quarantined, as every variant does.
    """

    name = "curator_stages"
    type = "Filter"

    def __init__(self, stages: list[Any], phase: str, counts_dir: str,
                 barrier: Any = None, barrier_dir: str | None = None,
                 batch_documents: int = BATCH_DOCUMENTS):
        super().__init__()
        self.stages, self.phase, self.counts_dir = stages, phase, counts_dir
        self.barrier, self.barrier_dir = barrier, barrier_dir
        self.batch_documents = batch_documents

    def _setup(self) -> None:
        import socket

        info = {"node_id": socket.gethostname(), "node_ip": "127.0.0.1",
                "hostname": socket.gethostname()}
        for stage in self.stages:
            meta = {"stage_name": stage.stage_name, "mode": "datatrove",
                    "node_id": info["node_id"], "worker_id": f"datatrove-{os.getpid()}",
                    "pid": os.getpid(), "gpu_ids": []}
            stage.setup_on_node(info, meta)
            stage.setup(meta)

    def _batch(self, docs: list[Document], rank: int, n: int) -> Iterator[Document]:
        from curator_stages.tasks import DocumentBatch

        table = pa.table({
            "id": pa.array([d.id for d in docs], pa.string()),
            "text": pa.array([d.text for d in docs], pa.string()),
            "source_file": pa.array([d.metadata["source_file"] for d in docs], pa.string()),
            "source_line": pa.array([d.metadata["source_line"] for d in docs], pa.int64()),
        })
        tasks = [DocumentBatch(task_id=f"datatrove-{rank}-{n}", dataset_name="datatrove",
                               data=table)]
        with self.track_time("batch"):  # datatrove's per-step stats then show the stages' time
            for stage in self.stages:
                tasks = [out for t in tasks for out in stage.run([t])]
        self._out_tasks.extend(tasks)
        for task in tasks:
            if self.barrier is not None:
                self._barrier_parts.append(self.barrier.map_local(task))
            t = task.data
            for doc_id, text, src, line in zip(t.column("id").to_pylist(),
                                               t.column("text").to_pylist(),
                                               t.column("source_file").to_pylist(),
                                               t.column("source_line").to_pylist()):
                self._written += 1
                yield Document(text=text, id=doc_id,
                               metadata={"source_file": src, "source_line": line})

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from benchmarks.pipeline import accounting

        self._setup()
        self._out_tasks: list[Any] = []
        self._barrier_parts: list[pa.Table] = []
        self._written = 0
        read = n = 0
        docs: list[Document] = []
        for doc in data or ():
            read += 1
            docs.append(doc)
            if len(docs) >= self.batch_documents:
                yield from self._batch(docs, rank, n)
                docs, n = [], n + 1
        if docs:
            yield from self._batch(docs, rank, n)
        if self.barrier is not None:
            if self._barrier_parts:
                feather.write_feather(pa.concat_tables(self._barrier_parts),
                                      os.path.join(self.barrier_dir, f"{rank:05d}.arrow"))
        acc = accounting(self._out_tasks)
        counts = {"read": read, "out": self._written, "dropped_by_reason": acc["dropped_by_reason"],
                  "quarantined": acc["documents_quarantined"]}
        with open(os.path.join(self.counts_dir, f"{self.phase}-{rank:05d}.json"), "w") as f:
            json.dump(counts, f)
        for stage in self.stages:
            try:
                stage.teardown()
            except Exception:  # noqa: BLE001 - best effort, as the local executors do
                pass


def _input_files(input_path: str) -> list[str]:
    """The files the harness's JsonlReader reads: every file, hidden and ``_`` files skipped."""
    return sorted(p for p in os.listdir(input_path)
                  if not p.startswith(("_", ".")) and os.path.isfile(os.path.join(input_path, p)))


def run_datatrove(input_path: str, output_path: str, work_dir: str, workers: int) -> dict[str, Any]:
    """Run the reference pipeline on LocalPipelineExecutor; return the harness's accounting."""
    from benchmarks.pipeline import reference_stages
    from curator_stages.stage import GlobalStage

    stages = reference_stages(input_path, output_path)
    # The curator reader (partition + read) and writer are replaced by datatrove's.
    per_doc = [s for s in stages if type(s).__name__ in ("TextNormalizer", "HeuristicFilter")]
    dedup = next(s for s in stages if isinstance(s, GlobalStage))
    files = _input_files(input_path)
    counts_dir, barrier_dir = os.path.join(work_dir, "counts"), os.path.join(work_dir, "hashes")
    survivors = os.path.join(work_dir, "survivors")
    for d in (counts_dir, barrier_dir):
        os.makedirs(d, exist_ok=True)
    paths_file = os.path.join(work_dir, "input_files.txt")
    with open(paths_file, "w") as f:
        f.write("\n".join(files) + "\n")

    first = LocalPipelineExecutor(
        pipeline=[
            JsonlReader(input_path, paths_file=paths_file, adapter=_input_adapter,
                        add_file_path=False),
            CuratorStages(per_doc, "filter", counts_dir, barrier=dedup, barrier_dir=barrier_dir),
            JsonlWriter(survivors, compression=None),
        ],
        tasks=len(files), workers=workers, logging_dir=os.path.join(work_dir, "logs-filter"))
    first.run()
    parts = [feather.read_table(os.path.join(barrier_dir, p)) for p in sorted(os.listdir(barrier_dir))]
    dedup_filter = dedup.reduce_local(parts)
    n_survivor_files = len([p for p in os.listdir(survivors) if p.endswith(".jsonl")])
    second = LocalPipelineExecutor(
        pipeline=[
            JsonlReader(survivors, add_file_path=False),
            CuratorStages([dedup_filter], "dedup", counts_dir),
            JsonlWriter(os.path.join(output_path, "data")),
        ],
        tasks=max(n_survivor_files, 1), workers=workers,
        logging_dir=os.path.join(work_dir, "logs-dedup"))
    second.run()
    return _accounting(counts_dir)


def _accounting(counts_dir: str) -> dict[str, Any]:
    """read / written / dropped / quarantined summed over both executors' tasks."""
    phases: dict[str, dict[str, Any]] = {}
    for name in sorted(os.listdir(counts_dir)):
        phase = name.split("-", 1)[0]
        with open(os.path.join(counts_dir, name)) as f:
            c = json.load(f)
        p = phases.setdefault(phase, {"read": 0, "out": 0, "quarantined": 0, "dropped": {}})
        p["read"] += c["read"]
        p["out"] += c["out"]
        p["quarantined"] += c["quarantined"]
        for reason, value in c["dropped_by_reason"].items():
            p["dropped"][reason] = p["dropped"].get(reason, 0) + value
    filt, dedup = phases.get("filter", {}), phases.get("dedup", {})
    dropped: dict[str, int] = {}
    for p in (filt, dedup):
        for reason, value in p.get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + value
    read, written = filt.get("read", 0), dedup.get("out", 0)
    quarantined = filt.get("quarantined", 0) + dedup.get("quarantined", 0)
    total = sum(dropped.values())
    # The barrier loses nothing: what the first executor wrote, the second read.
    barrier_ok = filt.get("out") == dedup.get("read")
    return {"documents_read": read, "documents_written": written, "documents_dropped": total,
            "documents_quarantined": quarantined, "dropped_by_reason": dict(sorted(dropped.items())),
            "identity_holds": barrier_ok and read == written + total + quarantined}

