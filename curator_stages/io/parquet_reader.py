"""Parquet reading with pyarrow: column selection, row-group selection, same output as JSONL.

A Parquet file has a schema, so most JSONL failure modes cannot happen row by row. What can:
a row whose text is null (quarantined, reason ``"text is null"``), a string value that is not
valid UTF-8 (a lone surrogate written by a lax tool: pyarrow reads it, then every later stage
fails on the whole batch; quarantined per row), and a file that is not readable
Parquet (one quarantine record for the file, or an error with ``strict=True``). A schema that lacks
the text column, or whose text column is not a string, is a configuration mistake and raises at
once, naming the file, the column and its type.
"""

from __future__ import annotations

from typing import Any, Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator_stages.io.filesystem import storage_options_for
from curator_stages.io.batch_builder import BASE_SCHEMA, BatchBuilder
from curator_stages.io.byte_ranges import ByteRange
from curator_stages.io.file_read_stage import FileReadStage
from curator_stages.io.partition import FilePartitioningStage
from curator_stages.io.quarantine import DEFAULT_RAW_CAP
from curator_stages.stage import CompositeStage, ProcessingStage

PARQUET_EXTENSIONS = (".parquet", ".pq")


class ParquetSchemaError(ValueError):
    """A Parquet file lacks the configured text/id column or has it with a non-string type."""


class ParquetReadStage(FileReadStage):
    """Read the Parquet files of a :class:`FileGroupTask` into one :class:`DocumentBatch`.

    Columns produced are those of the JSONL reader: ``id`` (``<relative path>:<row>`` with a
    1-based row number, or the ``id_field`` value as a string), ``text``, ``source_file``,
    ``source_line`` (the 1-based row number within the file) and the requested ``fields``. Only
    the needed columns are read; ``row_groups`` restricts reading to those row-group indices.
    Every row read counts in ``documents_read``.
    """

    name = "parquet_read"

    def __init__(self, text_field: str = "text", id_field: str | None = None,
                 fields: Sequence[str] | None = None, row_groups: Sequence[int] | None = None,
                 strict: bool = False, quarantine_dir: str | None = None,
                 storage_options: dict[str, Any] | None = None,
                 max_quarantine_raw_bytes: int = DEFAULT_RAW_CAP, name: str | None = None) -> None:
        super().__init__(text_field, id_field, fields, strict, quarantine_dir, storage_options,
                         max_quarantine_raw_bytes, name)
        self.row_groups = list(row_groups) if row_groups is not None else None

    def read_file(self, path: str, rel: str, builder: BatchBuilder,
                  quarantine: list[dict[str, Any]], byte_range: ByteRange | None = None) -> int:
        if byte_range is not None:
            raise ValueError(f"stage {self.stage_name!r}: {path}: Parquet is read by row groups, "
                             "not byte ranges; partition Parquet input with split_plain_files=False")
        wanted = [self.text_field, *([self.id_field] if self.id_field else []), *self.fields]
        columns = list(dict.fromkeys(wanted))
        with fsspec.open(path, "rb", **storage_options_for(path, self.storage_options)) as raw:
            try:
                pfile = pq.ParquetFile(raw)
                schema = pfile.schema_arrow
            except (pa.ArrowInvalid, OSError) as exc:
                self._bad(quarantine, path, 1, f"not a readable Parquet file: {exc}", None)
                return 1
            self._check_schema(path, schema)
            try:
                present = [c for c in columns if c in schema.names]
                meta = pfile.metadata
                offsets = [0]
                for i in range(meta.num_row_groups):
                    offsets.append(offsets[-1] + meta.row_group(i).num_rows)
                if self.row_groups is None:
                    table = pfile.read(columns=present)
                    rows = list(range(1, table.num_rows + 1))
                else:
                    bad = [g for g in self.row_groups if not 0 <= g < meta.num_row_groups]
                    if bad:
                        raise ValueError(
                            f"stage {self.stage_name!r}: {path} has {meta.num_row_groups} row "
                            f"groups; row_groups {bad} do not exist"
                        )
                    table = pfile.read_row_groups(self.row_groups, columns=present)
                    rows = [r + 1 for g in self.row_groups for r in range(offsets[g], offsets[g + 1])]
            except (pa.ArrowInvalid, OSError) as exc:
                self._bad(quarantine, path, 1, f"not a readable Parquet file: {exc}", None)
                return 1
        text = table.column(self.text_field)
        if pa.types.is_large_string(text.type):
            text = text.cast(pa.string())
        null_mask = text.is_null()
        n_null = pc.sum(null_mask).as_py() or 0
        if n_null:
            for i in pc.indices_nonzero(null_mask).to_pylist():
                self._bad(quarantine, path, rows[i], f"text field {self.text_field!r} is null", None)
        bad_rows: dict[int, str] = {}
        string_columns = [("text", self.text_field, text)]
        if self.id_field:
            string_columns.append(("id", self.id_field, table.column(self.id_field)))
        string_columns += [("", f, table.column(f)) for f in self.fields if f in table.column_names]
        for role, name, column in string_columns:
            for i in _invalid_utf8_rows(column):
                if i not in bad_rows and not null_mask[i].as_py():
                    bad_rows[i] = f"{role + ' ' if role else ''}field {name!r} is not valid UTF-8"
        for i in sorted(bad_rows):
            self._bad(quarantine, path, rows[i], bad_rows[i], None)
        if bad_rows:
            invalid = pa.array(np.isin(np.arange(table.num_rows), list(bad_rows)))
            null_mask = pc.or_(null_mask, invalid)
            n_null += len(bad_rows)
        keep = pc.invert(null_mask) if n_null else None
        if self.id_field:
            ids = pc.cast(table.column(self.id_field), pa.string())
        else:
            ids = pa.array([f"{rel}:{r}" for r in rows], pa.string())
        row_array = pa.array(rows, pa.int64())
        extras = []
        for f in self.fields:
            extras.append(table.column(f) if f in table.column_names
                          else pa.nulls(table.num_rows))
        if keep is not None:
            text, ids, row_array = text.filter(keep), ids.filter(keep), row_array.filter(keep)
            extras = [e.filter(keep) for e in extras]
        builder.add_arrow(ids, text, path, row_array, extras)
        return table.num_rows

    def _check_schema(self, path: str, schema: pa.Schema) -> None:
        for role, column in (("text_field", self.text_field), ("id_field", self.id_field)):
            if column is None:
                continue
            if column not in schema.names:
                raise ParquetSchemaError(
                    f"stage {self.stage_name!r}: {path} has no column {column!r} ({role}); "
                    f"its columns are {schema.names}; set {role} to one of them"
                )
        text_type = schema.field(self.text_field).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise ParquetSchemaError(
                f"stage {self.stage_name!r}: {path} column {self.text_field!r} (text_field) has type "
                f"{text_type}, not string; point text_field at a string column"
            )


def _invalid_utf8_rows(column: pa.ChunkedArray | pa.Array) -> list[int]:
    """Rows of a string column (also inside nested types) whose bytes are not valid UTF-8.

    The full validation runs in C; only a column that fails it is walked row by row.
    """
    try:
        column.validate(full=True)
        return []
    except pa.ArrowInvalid:
        pass
    bad: list[int] = []
    offset = 0
    for chunk in (column.chunks if isinstance(column, pa.ChunkedArray) else [column]):
        for i in range(len(chunk)):
            try:
                chunk.slice(i, 1).validate(full=True)
            except pa.ArrowInvalid:
                bad.append(offset + i)
        offset += len(chunk)
    return bad


class ParquetReader(CompositeStage):
    """Read Parquet files: partition files, then read each group (see :class:`ParquetReadStage`)."""

    name = "parquet_reader"

    def __init__(self, paths: str | Sequence[str], *, text_field: str = "text",
                 id_field: str | None = None, fields: Sequence[str] | None = None,
                 row_groups: Sequence[int] | None = None, strict: bool = False,
                 quarantine_dir: str | None = None, files_per_group: int | None = None,
                 bytes_per_group: int | None = None,
                 file_extensions: Sequence[str] | None = PARQUET_EXTENSIONS,
                 storage_options: dict[str, Any] | None = None, name: str | None = None) -> None:
        self.partition = FilePartitioningStage(
            paths, file_extensions=file_extensions, files_per_group=files_per_group,
            bytes_per_group=bytes_per_group, storage_options=storage_options)
        self.read = ParquetReadStage(
            text_field=text_field, id_field=id_field, fields=fields, row_groups=row_groups,
            strict=strict, quarantine_dir=quarantine_dir, storage_options=storage_options)
        if name:
            self.name = name

    def decompose(self) -> list[ProcessingStage]:
        return [self.partition, self.read]


__all__ = ["BASE_SCHEMA", "PARQUET_EXTENSIONS", "ParquetReadStage", "ParquetReader",
           "ParquetSchemaError"]
