"""Writers: JSONL and Parquet output with deterministic names, atomic files and explicit modes.

File names come from the task, not from a counter or a clock: ``part-<key>.<ext>`` where ``key``
hashes the reader's file-group key and the task id, both deterministic from the input listing.
Re-running a pipeline therefore targets the same files, which is what makes the modes meaningful
(a flow stages its writers instead, see :meth:`_Writer.stage_into`):

* ``"error"`` (default): a target that already exists raises :class:`OutputExistsError` naming it;
* ``"overwrite"``: the target is replaced atomically;
* ``"ignore"``: an existing target is kept as is (counted as written: it holds this task's rows
  from an earlier identical run) and the ``files_skipped_existing`` metric says so.

Every file is written through :func:`~curator_stages.io.filesystem.atomic_write`, so a failure
leaves no file that looks complete (on object stores: one upload per file, no temporary object
and no rename). An empty batch writes no file but still emits a task with its
stats. Side outputs: a batch's ``metadata["dropped_documents"]`` (a table with a ``drop_reason``
column, put there by filters that keep what they drop) goes to ``dropped_output``, and
``metadata["quarantine"]`` records (from a reader without ``quarantine_dir``) go to
``quarantine_output``. A ``tokens`` column (from a token counter) is summed into the
``tokens_written`` metric: the tokens of exactly the rows written.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, BinaryIO, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator_stages.io.compression import CompressedWriter, extension_for, infer_codec
from curator_stages.io.filesystem import (
    OutputExistsError,
    OutputWriteError,
    atomic_write,
    join,
    resolve,
)
from curator_stages.io.output_manifest import OUTPUT_SUBDIRS
from curator_stages.io.partition import FILE_GROUP_KEY
from curator_stages.io.quarantine import (
    QUARANTINE_FILES_KEY,
    QUARANTINE_KEY,
    encode_records,
    quarantine_file_name,
)
from curator_stages.resources import Resources
from curator_stages.stage import ProcessingStage, record_metrics
from curator_stages.tasks import (DOCUMENTS_WRITTEN, DROP_REASON_COLUMN, DROPPED_DOCUMENTS_KEY,
                                  TOKENS_COLUMN, TOKENS_WRITTEN, DocumentBatch, FileGroupTask,
                                  rows_table)

MODES = ("error", "overwrite", "ignore")


def output_key(task: DocumentBatch) -> str:
    """The stable part of a task's output file names."""
    basis = f"{task.metadata.get(FILE_GROUP_KEY, '')}|{task.task_id}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


class _Writer(ProcessingStage[DocumentBatch, FileGroupTask]):
    """Common writer logic; subclasses encode a table onto a binary stream."""

    resources = Resources(cpus=1.0)
    extension = ""
    #: (output, attempt location, snapshot) once a flow staged this writer (stage_into).
    _staging: tuple[str, str, str] | None = None

    def __init__(self, path: str, mode: str = "error", compression: str | None = None,
                 drop_columns: Sequence[str] | None = None, dropped_output: str | None = None,
                 quarantine_output: str | None = None,
                 storage_options: dict[str, Any] | None = None, name: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(
                f"stage {name or self.stage_name!r}: mode must be one of {MODES}, got {mode!r}"
            )
        self.path = path
        self.mode = mode
        self.compression = compression
        self.drop_columns = list(drop_columns or [])
        self.dropped_output = dropped_output
        self.quarantine_output = quarantine_output
        self.storage_options = dict(storage_options or {})
        if name:
            self.name = name

    def stage_into(self, output: str, attempt: str, snapshot: str) -> None:
        """Write what would go under ``output`` under ``attempt`` instead, with ``snapshot`` in
        every file name (``part-<snapshot>-<key>``): how a flow stages a run's files for its
        publish (:mod:`~curator_stages.io.output_commit`). Not part of the stage's identity:
        ``snapshot`` is the fingerprint of that identity. Refused for a path the publish could
        not place: one outside ``output``'s ``data/``, ``quarantine/`` and ``dropped/``."""
        output = output.rstrip("/")
        for where in (self.path, self.dropped_output, self.quarantine_output):
            if where and not any(where.rstrip("/") == f"{output}/{sub}" or
                                 where.startswith(f"{output}/{sub}/") for sub in OUTPUT_SUBDIRS):
                raise ValueError(f"stage {self.stage_name!r}: writes to {where!r}, outside the "
                                 f"flow's output folders {output}/{{{','.join(OUTPUT_SUBDIRS)}}}"
                                 "; write under them")
        self._staging = (output, attempt.rstrip("/"), snapshot)

    def _place(self, directory: str, name: str) -> str:
        if self._staging is None:
            return join(directory, name)
        output, attempt, _ = self._staging
        return join(attempt + directory.rstrip("/")[len(output):], name)

    def ray_stage_spec(self) -> dict[str, Any]:
        return {"is_actor_stage": False}

    # subclasses -------------------------------------------------------------
    def file_name(self, key: str) -> str:
        raise NotImplementedError

    def encode(self, table: pa.Table, handle: BinaryIO) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------
    def process(self, task: DocumentBatch) -> FileGroupTask:
        key = output_key(task)
        if self._staging is not None:
            key = f"{self._staging[2]}-{key}"
        table = task.to_pyarrow()
        drop = [c for c in self.drop_columns if c in table.column_names]
        if drop:
            table = table.drop_columns(drop)
        written: list[str] = []
        skipped = 0
        if table.num_rows:
            target = self._place(self.path, self.file_name(key))
            skipped += self._write(target, lambda h, t=table: self.encode(t, h))
            written.append(target)
        meta = dict(task.metadata)
        dropped = meta.pop(DROPPED_DOCUMENTS_KEY, None)
        if isinstance(dropped, list):  # JSON rows (how filters keep them: metadata is JSON)
            dropped = rows_table(dropped) if dropped else None
        dropped_written = 0
        if self.dropped_output and dropped is not None and dropped.num_rows:
            if DROP_REASON_COLUMN not in dropped.column_names:
                raise ValueError(
                    f"stage {self.stage_name!r}: metadata[{DROPPED_DOCUMENTS_KEY!r}] of task "
                    f"{task.task_id!r} lacks a {DROP_REASON_COLUMN!r} column; the stage that "
                    "dropped the rows must say why"
                )
            target = self._place(self.dropped_output, self.file_name(key))
            skipped += self._write(target, lambda h, t=dropped: self.encode(t, h))
            meta["dropped_files"] = [*meta.get("dropped_files", []), target]
            dropped_written = dropped.num_rows
        records = meta.pop(QUARANTINE_KEY, None) if self.quarantine_output else None
        if records:
            target = self._place(self.quarantine_output, quarantine_file_name(key))
            payload = encode_records(records)
            skipped += self._write(target, lambda h: h.write(payload))
            meta[QUARANTINE_FILES_KEY] = [*meta.get(QUARANTINE_FILES_KEY, []), target]
        out = FileGroupTask(task_id=task.task_id, dataset_name=task.dataset_name, data=written,
                            _metadata=meta, _stage_perf=list(task._stage_perf))
        metrics: dict[str, float] = {DOCUMENTS_WRITTEN: table.num_rows}
        if TOKENS_COLUMN in table.column_names and pa.types.is_integer(
                table.schema.field(TOKENS_COLUMN).type):  # a token counter's column
            metrics[TOKENS_WRITTEN] = int(pc.sum(table.column(TOKENS_COLUMN)).as_py() or 0)
        if dropped_written:
            metrics["dropped_documents_written"] = dropped_written
        if skipped:
            metrics["files_skipped_existing"] = skipped
        record_metrics(out, **metrics)
        return out

    def _write(self, target: str, encode) -> int:
        """Write one file honouring the mode; 1 when skipped because it exists (mode ignore)."""
        if self.mode != "overwrite":
            fs, stripped = resolve(target, self.storage_options)
            try:
                present = fs.exists(stripped)
            except OSError as exc:  # a store failing past its retries
                raise OutputWriteError(
                    f"stage {self.stage_name!r}: cannot check whether {target!r} exists: "
                    f"{exc.strerror or exc} (errno {exc.errno}); the store kept failing after "
                    "retries: check it and re-run (nothing was written)") from exc
            if present:
                if self.mode == "ignore":
                    return 1
                raise OutputExistsError(
                    f"stage {self.stage_name!r}: output file {target!r} already exists (mode "
                    "'error'); use mode='overwrite' to replace it, mode='ignore' to keep it, "
                    "or write to a new path"
                )
        atomic_write(target, encode, stage_name=self.stage_name,
                     storage_options=self.storage_options)
        return 0


class JsonlWriter(_Writer):
    """Write each batch to ``<path>/part-<key>.jsonl[.gz|.zst]``, one JSON object per line.

    ``compression``: ``None`` (default), ``"gzip"`` or ``"zstd"``. Values JSON cannot express
    (timestamps, bytes) are written as strings. Output bytes are deterministic for given rows.
    """

    name = "jsonl_writer"

    def __init__(self, path: str, mode: str = "error", compression: str | None = None,
                 drop_columns: Sequence[str] | None = None, dropped_output: str | None = None,
                 quarantine_output: str | None = None,
                 storage_options: dict[str, Any] | None = None, name: str | None = None) -> None:
        super().__init__(path, mode, compression, drop_columns, dropped_output,
                         quarantine_output, storage_options, name)
        self._codec  # validate the compression name now, not at the first write

    @property
    def _codec(self) -> str | None:
        return infer_codec("", self.compression) if self.compression not in (None, "infer") else None

    def file_name(self, key: str) -> str:
        return f"part-{key}.jsonl{extension_for(self._codec)}"

    def encode(self, table: pa.Table, handle: BinaryIO) -> None:
        dumps = json.dumps
        with CompressedWriter(handle, self._codec) as out:
            for batch in table.to_batches(max_chunksize=8192):
                buf = io.StringIO()
                for row in batch.to_pylist():
                    buf.write(dumps(row, ensure_ascii=False, default=str))
                    buf.write("\n")
                out.write(buf.getvalue().encode("utf-8"))


class ParquetWriter(_Writer):
    """Write each batch to ``<path>/part-<key>.parquet`` (``compression`` defaults to zstd)."""

    name = "parquet_writer"

    def __init__(self, path: str, mode: str = "error", compression: str | None = "zstd",
                 drop_columns: Sequence[str] | None = None, dropped_output: str | None = None,
                 quarantine_output: str | None = None, row_group_size: int | None = None,
                 storage_options: dict[str, Any] | None = None, name: str | None = None) -> None:
        super().__init__(path, mode, compression, drop_columns, dropped_output,
                         quarantine_output, storage_options, name)
        self.row_group_size = row_group_size

    def file_name(self, key: str) -> str:
        return f"part-{key}.parquet"

    def encode(self, table: pa.Table, handle: BinaryIO) -> None:
        pq.write_table(table, handle, compression=self.compression or "none",
                       row_group_size=self.row_group_size)


__all__ = ["DROPPED_DOCUMENTS_KEY", "DROP_REASON_COLUMN", "JsonlWriter", "MODES",
           "OutputExistsError", "ParquetWriter", "output_key"]
