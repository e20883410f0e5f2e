"""Quarantine: where records that cannot become documents go, so that none is silently lost.

A quarantine record is a plain dict::

    {"file": "/data/a.jsonl.gz", "line": 17, "reason": "invalid JSON: ...",
     "raw": "<up to 4 KiB of the line, undecodable bytes as \\xNN>", "raw_size": 123,
     "stage": "jsonl_read"}

Where records go (the simple, robust choice): a reader given ``quarantine_dir`` writes each file
group's records to ``<quarantine_dir>/quarantine-<file_group_key>.jsonl`` atomically (the name is
deterministic, so a re-run replaces rather than duplicates it). Without ``quarantine_dir`` the
records ride on the output task in ``metadata["quarantine"]`` and a writer given
``quarantine_output`` writes them. Either way the count is in the ``documents_quarantined`` metric.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from curator_stages.io.filesystem import atomic_write, join, storage_options_for

#: Default cap on the raw bytes kept per quarantined record.
DEFAULT_RAW_CAP = 4096
#: Task metadata key for in-memory quarantine records.
QUARANTINE_KEY = "quarantine"
#: Task metadata key listing quarantine files already written by a reader.
QUARANTINE_FILES_KEY = "quarantine_files"

REASON_TRUNCATED = "truncated/corrupt compressed stream"
REASON_UNVERIFIED = ("unverified: decoded from a damaged compressed member after its last "
                     "verified point")
REASON_SURROGATE = "is not valid Unicode (lone surrogate)"


class MalformedRecordError(ValueError):
    """A record could not be read and the reader runs with ``strict=True``."""


class ReaderAccountingError(RuntimeError):
    """A reader's own counts for one file disagree: a line was neither emitted nor quarantined.

    Never expected in operation; raised rather than letting the run's accounting identity
    "hold" over a document the reader lost.
    """


def make_record(file: str, line: int, reason: str, raw: bytes | str | None, stage: str,
                cap: int = DEFAULT_RAW_CAP, raw_size: int | None = None) -> dict[str, Any]:
    """One quarantine record; ``raw_size`` is the record's full size when ``raw`` holds only
    its start (an oversized line is never read whole)."""
    if raw is None:
        raw_bytes = b""
    elif isinstance(raw, str):
        raw_bytes = raw.encode("utf-8", "surrogatepass")
    else:
        raw_bytes = bytes(raw).rstrip(b"\r\n")
    return {
        "file": file,
        "line": int(line),
        "reason": reason,
        "raw": raw_bytes[:cap].decode("utf-8", "backslashreplace"),
        "raw_size": len(raw_bytes) if raw_size is None else int(raw_size),
        "stage": stage,
    }


def quarantine_file_name(key: str) -> str:
    return f"quarantine-{key}.jsonl"


def encode_records(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps(r, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n" for r in records
    )


def write_quarantine(directory: str, key: str, records: list[dict[str, Any]], *, stage_name: str,
                     storage_options: dict[str, Any] | None = None) -> str:
    """Write ``records`` atomically to ``<directory>/quarantine-<key>.jsonl``; return the path."""
    path = join(directory, quarantine_file_name(key))
    payload = encode_records(records)
    atomic_write(path, lambda f: f.write(payload), stage_name=stage_name,
                 storage_options=storage_options)
    return path


def attach_quarantine(meta: dict[str, Any], records: list[dict[str, Any]], key: str,
                      directory: str | None, *, stage_name: str,
                      storage_options: dict[str, Any] | None = None) -> None:
    """Put a reader's quarantine ``records`` where the run finds them: a file in ``directory``
    (named in ``meta``) when the reader has one, else into ``meta`` for the writer to stage."""
    if not records:
        return
    if directory:
        written = write_quarantine(directory, key, records, stage_name=stage_name,
                                   storage_options=storage_options)
        meta[QUARANTINE_FILES_KEY] = [*meta.get(QUARANTINE_FILES_KEY, []), written]
    else:
        meta[QUARANTINE_KEY] = [*meta.get(QUARANTINE_KEY, []), *records]


def read_quarantine(path: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The records of one quarantine file (for tests, reports and re-processing)."""
    import fsspec

    with fsspec.open(path, "rb", **storage_options_for(path, storage_options)) as f:
        return [json.loads(line) for line in f if line.strip()]
