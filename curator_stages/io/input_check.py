"""What a run can tell about its input before any work: each file's format, and whether the
records hold the text field the run was told to read.

The commonest first-hour mistakes end in a run that quarantines everything: a Parquet file read
as JSONL, a JSON array given as JSONL, the text under another key. Each is visible in the first
bytes of the first file, so parameter validation looks there (local files only: an object store
is not read during validation) and refuses the run in one line naming what to change.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import fsspec

from curator_stages.io.compression import infer_codec, open_decompressed
from curator_stages.io.filesystem import storage_options_for

JSONL = "jsonl"
PARQUET = "parquet"
#: Names a directory or glob input takes, per format (``.json`` is one JSON document, not JSONL).
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    JSONL: (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".ndjson", ".ndjson.gz",
            ".ndjson.zst"),
    PARQUET: (".parquet", ".pq"),
}
#: Records of the first file that the text-field check looks at.
SAMPLE_RECORDS = 1000
_PARQUET_MAGIC = b"PAR1"


class InputFormatError(ValueError):
    """An input file is in a format the flow cannot read (named in the message)."""


def extensions(formats: Sequence[str]) -> tuple[str, ...]:
    """The file name endings of ``formats`` (for listing directories and globs)."""
    return tuple(e for f in formats for e in FORMAT_EXTENSIONS[f])


def describe(formats: Sequence[str]) -> str:
    """``JSONL (.jsonl, ...) or Parquet (.parquet, .pq)``: what a directory input takes."""
    names = {JSONL: "JSONL", PARQUET: "Parquet"}
    return " or ".join(f"{names[f]} ({', '.join(FORMAT_EXTENSIONS[f])})" for f in formats)


def format_by_name(path: str) -> str | None:
    """The format a file's name says (case-insensitive), or None."""
    lower = path.lower()
    for fmt, ends in FORMAT_EXTENSIONS.items():
        if lower.endswith(ends):
            return fmt
    return None


def _suffix(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    return name[name.find("."):] if "." in name else "(no extension)"


def sniff(path: str, storage_options: dict[str, Any] | None = None) -> str:
    """The format of one explicitly named file by its name, else by its first bytes: Parquet
    starts with ``PAR1``; JSONL's first non-blank byte (after decompression) is ``{``. Raises
    :class:`InputFormatError` naming what the file looks like otherwise."""
    by_name = format_by_name(path)
    if by_name is not None:
        return by_name
    with fsspec.open(path, "rb", **storage_options_for(path, storage_options)) as raw:
        head = raw.read(4)
        if head == _PARQUET_MAGIC:
            return PARQUET
        raw.seek(0)
        start = open_decompressed(raw, infer_codec(path, "infer")).read(4096).lstrip()
    if start.startswith(b"{"):
        return JSONL
    what = ("a JSON array (one JSON document), not JSON Lines" if start.startswith(b"[")
            else "empty" if not start else "neither JSON Lines nor Parquet")
    raise InputFormatError(f"cannot read {path}: a {_suffix(path)} file that is {what}")


def sample_fields(path: str, fmt: str, limit: int = SAMPLE_RECORDS,
                  storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """{field: characters of string values} over the file's first ``limit`` records (0 for a
    field that is never a string): the fields a text could be under, largest first when sorted
    by the value. For Parquet, every column, with the stored size of the string ones (from the
    footer: nothing else is read)."""
    if fmt == PARQUET:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb", **storage_options_for(path, storage_options)) as raw:
            pfile = pq.ParquetFile(raw)
            meta = pfile.metadata
            sizes: dict[str, int] = {}
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                for j in range(group.num_columns):
                    column = group.column(j)
                    sizes[column.path_in_schema] = (sizes.get(column.path_in_schema, 0)
                                                    + column.total_uncompressed_size)
            return {f.name: (sizes.get(f.name, 0) or 1)
                    if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) else 0
                    for f in pfile.schema_arrow}
    counts: dict[str, int] = {}
    with fsspec.open(path, "rb", **storage_options_for(path, storage_options)) as raw:
        seen = 0
        for line in open_decompressed(raw, infer_codec(path, "infer")):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if type(record) is not dict:
                continue
            seen += 1
            for key, value in record.items():
                counts[key] = counts.get(key, 0) + (len(value) if isinstance(value, str) else 0)
            if seen >= limit:
                break
    return counts


def missing_text_field(path: str, fmt: str, text_field: str,
                       storage_options: dict[str, Any] | None = None) -> str | None:
    """Why ``text_field`` cannot be the text of ``path`` (no record of its first
    :data:`SAMPLE_RECORDS` has it), naming the fields they do have and the likeliest text field;
    None when some record has it, or the file has no readable record to judge by."""
    fields = sample_fields(path, fmt, storage_options=storage_options)
    if not fields or text_field in fields:
        return None
    name = os.path.basename(path)
    where = (f"{name} has no column {text_field!r}" if fmt == PARQUET else
             f"none of the first {SAMPLE_RECORDS} records of {name} has a field {text_field!r}")
    listed = ", ".join(sorted(fields)[:12]) + (", ..." if len(fields) > 12 else "")
    strings = [f for f, n in fields.items() if n]
    hint = f"; use --text-field {max(strings, key=lambda f: fields[f])}" if strings else ""
    return f"{where}; it has {listed}{hint}"


__all__ = ["FORMAT_EXTENSIONS", "InputFormatError", "JSONL", "PARQUET", "SAMPLE_RECORDS",
           "describe", "extensions", "format_by_name", "missing_text_field", "sample_fields",
           "sniff"]
