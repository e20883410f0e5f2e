"""The base of the file readers (JSONL, Parquet): one :class:`FileGroupTask` of files in, one
:class:`DocumentBatch` out, with the parameters, ids, quarantine routing, per-file accounting
and metrics every reader shares; a reader only says how one file is read (``read_file``)."""

from __future__ import annotations

from typing import Any, Sequence

from curator_stages.io.batch_builder import BatchBuilder
from curator_stages.io.byte_ranges import BYTE_RANGE, ByteRange
from curator_stages.io.input_check import JSONL, missing_text_field
from curator_stages.io.partition import (
    BAD_FILE_NAME,
    FILE_GROUP_KEY,
    INPUT_ROOT,
    file_group_key,
    relative_to_root,
)
from curator_stages.io.quarantine import (
    DEFAULT_RAW_CAP,
    MalformedRecordError,
    ReaderAccountingError,
    attach_quarantine,
    make_record,
)
from curator_stages.stage import ProcessingStage, record_metrics
from curator_stages.tasks import DOCUMENTS_QUARANTINED, DOCUMENTS_READ, DocumentBatch, FileGroupTask


class FileReadStage(ProcessingStage[FileGroupTask, DocumentBatch]):
    """Shared parts of the file readers: parameters, ids, quarantine routing and metrics."""

    def __init__(
        self,
        text_field: str = "text",
        id_field: str | None = None,
        fields: Sequence[str] | None = None,
        strict: bool = False,
        quarantine_dir: str | None = None,
        storage_options: dict[str, Any] | None = None,
        max_quarantine_raw_bytes: int = DEFAULT_RAW_CAP,
        name: str | None = None,
    ) -> None:
        self.text_field = text_field
        self.id_field = id_field
        self.fields = list(fields) if fields else []
        reserved = {"id", "text", "source_file", "source_line"}
        clash = [f for f in self.fields if f in reserved and f not in (text_field, id_field)]
        if clash:
            raise ValueError(
                f"stage {name or self.stage_name!r}: fields {clash} collide with the output columns "
                f"{sorted(reserved)}; rename them upstream or leave them out of fields"
            )
        self.strict = strict
        self.quarantine_dir = quarantine_dir
        self.storage_options = dict(storage_options or {})
        self.max_quarantine_raw_bytes = max_quarantine_raw_bytes
        if name:
            self.name = name

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], ["id", "text", "source_file", "source_line", *self.fields]

    def process(self, task: FileGroupTask) -> DocumentBatch:
        root = task.reader_options.get(INPUT_ROOT) or task.metadata.get(INPUT_ROOT)
        rels = [relative_to_root(p, root) for p in task.data]
        key = task.metadata.get(FILE_GROUP_KEY) or file_group_key(rels)
        builder = BatchBuilder(self.fields)
        quarantine: list[dict[str, Any]] = []
        read = 0
        byte_range = task.metadata.get(BYTE_RANGE)
        part = ByteRange.from_list(byte_range) if byte_range is not None else None
        if part is not None and len(task.data) != 1:
            raise ValueError(f"stage {self.stage_name!r}: task {task.task_id!r} has a byte range "
                             f"but {len(task.data)} files; a range belongs to exactly one file")
        for path, rel in zip(task.data, rels):
            if task.metadata.get(BAD_FILE_NAME):
                read += 1  # the file counts as one record read, and quarantined
                self._bad(quarantine, path, 0, "the file name is not valid UTF-8 (shown with its "
                          "bytes escaped); rename the file to read it", None)
                continue
            emitted, quarantined = len(builder), len(quarantine)
            # Whole files keep the four-argument call, so subclasses written before ranges work.
            n = (self.read_file(path, rel, builder, quarantine) if part is None
                 else self.read_file(path, rel, builder, quarantine, part))
            self.check_file_counts(path, n, len(builder) - emitted, len(quarantine) - quarantined)
            if (n and len(builder) == emitted and task.metadata.get("file_group_index") == 0
                    and path == task.data[0] and (part is None or part.start == 0)):
                self.refuse_first_file(path, quarantine[quarantined:])
            read += n
        meta = {**task.metadata, FILE_GROUP_KEY: key, INPUT_ROOT: root}
        attach_quarantine(meta, quarantine, key, self.quarantine_dir, stage_name=self.stage_name,
                          storage_options=self.storage_options)
        out = DocumentBatch(task_id=task.task_id, dataset_name=task.dataset_name,
                            data=builder.to_table(), _metadata=meta,
                            _stage_perf=list(task._stage_perf))
        record_metrics(out, **{DOCUMENTS_READ: read, DOCUMENTS_QUARANTINED: len(quarantine)})
        return out

    def read_file(self, path: str, rel: str, builder: BatchBuilder,
                  quarantine: list[dict[str, Any]], byte_range: ByteRange | None = None) -> int:
        """Append the file's documents and quarantine records; return the records counted as read.

        ``byte_range`` (from the partitioner) limits the read to part of a plain file; a reader
        that cannot read ranges must refuse it rather than read the whole file once per range."""
        raise NotImplementedError

    def refuse_first_file(self, path: str, records: list[dict[str, Any]]) -> None:
        """The input's first file gave no document: when every record lacks the text field,
        the run is reading the wrong field, and quarantining the whole input would only say so
        after the last file. Raise at once, naming the fields the records have."""
        if records and {r["reason"] for r in records} == {f"missing text field {self.text_field!r}"}:
            why = missing_text_field(path, JSONL, self.text_field, self.storage_options)
            raise ValueError(f"stage {self.stage_name!r}: every record of the first input file "
                             f"lacks the text field: {why or path}")

    def check_file_counts(self, path: str, read: int, emitted: int, quarantined: int) -> None:
        """Records read from one file = documents emitted + records quarantined, or an error.

        The run's identity is only as good as the reader's count: a line that a reader skips
        without quarantining it would vanish while the identity still holds.
        """
        if read != emitted + quarantined:
            raise ReaderAccountingError(
                f"stage {self.stage_name!r}: {path}: read {read} record(s) but emitted {emitted} "
                f"and quarantined {quarantined}; a record was lost inside the reader (a bug: "
                "report it with this file)"
            )

    def _bad(self, quarantine: list[dict[str, Any]], path: str, line: int, reason: str,
             raw: bytes | str | None, raw_size: int | None = None) -> None:
        if self.strict:
            raise MalformedRecordError(
                f"stage {self.stage_name!r}: {path} line {line}: {reason}; fix the input, or run "
                "with strict=False to quarantine bad records and continue"
            )
        quarantine.append(make_record(path, line, reason, raw, self.stage_name,
                                      self.max_quarantine_raw_bytes, raw_size))


__all__ = ["FileReadStage"]
