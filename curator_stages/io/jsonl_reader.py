"""JSONL reading: one document per line, bad lines quarantined, never lost.

Accounting contract (what the run summary checks): every non-blank line of the input is either a
document in the output batch or a quarantine record, and ``documents_read`` =
documents + ``documents_quarantined``. Blank (whitespace-only) lines are skipped and not counted:
they carry no record, and JSONL writers commonly end files with one. Line numbers are physical,
1-based line numbers of the decompressed file, blank lines included, so ``sed -n 17p`` finds them.
"""

from __future__ import annotations

import io
import json
import re
from functools import partial
from typing import Any, Iterable, Iterator, Sequence

import fsspec

from curator_stages.io.filesystem import storage_options_for
from curator_stages.io.batch_builder import BatchBuilder
from curator_stages.io.byte_ranges import ByteRange
from curator_stages.io.compression import (
    COMPRESSED_STREAM_ERRORS,
    decoded_bytes,
    infer_codec,
    open_decompressed,
    verified_bytes,
)
from curator_stages.io.partition import DEFAULT_MIN_RANGE_BYTES, FilePartitioningStage
from curator_stages.io.quarantine import (
    DEFAULT_RAW_CAP,
    REASON_SURROGATE,
    REASON_TRUNCATED,
    REASON_UNVERIFIED,
    MalformedRecordError,
    ReaderAccountingError,
)
from curator_stages.io.input_check import FORMAT_EXTENSIONS, JSONL
from curator_stages.io.file_read_stage import FileReadStage
from curator_stages.stage import CompositeStage, ProcessingStage
from curator_stages.tasks import DocumentBatch, FileGroupTask

#: A JSON escape of a UTF-16 surrogate (``\\ud800``-``\\udfff``): the only way a line that is
#: valid UTF-8 can give Python a string Arrow cannot hold. Lines without one skip the check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

#: Default largest document, as the bytes of its JSON line: above it a line is quarantined
#: unread. A stage holds its documents in memory several times over, and one 200 MB line took a
#: run to 5 GB; web pages and books stay well below this.
DEFAULT_MAX_DOCUMENT_BYTES = 8 << 20
#: Bytes read at a time while skipping the rest of an oversized line.
_SKIP_CHUNK = 1 << 20

#: What a directory or glob input takes (``.json`` is one JSON document, not JSON Lines).
JSONL_EXTENSIONS = FORMAT_EXTENSIONS[JSONL]


class JsonlReadStage(FileReadStage):
    """Read the files of a :class:`FileGroupTask` as JSONL into one :class:`DocumentBatch`.

    Output columns: ``id`` (``<path relative to input root>:<line>``, or ``str(record[id_field])``),
    ``text``, ``source_file`` (the path as listed), ``source_line`` (1-based physical line) and one
    column per name in ``fields`` (missing -> null; values of mixed types are kept as JSON strings).

    A line is quarantined (or, with ``strict=True``, raises :class:`MalformedRecordError` naming the
    file and line) when it is not UTF-8, not valid JSON, not a JSON object, lacks ``text_field``,
    has a non-string text, lacks a usable ``id_field``, or holds a lone UTF-16 surrogate (valid
    JSON, not valid Unicode: Arrow would refuse the whole batch) in its text, id or a kept field.
    A compressed file that is truncated, corrupt or followed by garbage adds one record with
    reason ``"truncated/corrupt compressed stream"`` at the line where decoding stopped. Only
    what a codec verified becomes a document: the lines of every gzip member (zstd frame) that
    ended and passed its check. Deflate has no checksum before a member's end, and zlib decodes
    damaged data into plausible JSON lines, often up to the member's end, so every line decoded
    from the damaged member is quarantined with its raw bytes (reason ``"unverified: ..."``):
    salvaged, never written as a document. Per file, records read = documents + quarantine records is
    checked, and for compressed files decoded bytes = bytes of the lines read; a mismatch raises
    :class:`ReaderAccountingError`. Files stream line by line, each line read in pieces of at
    most ``max_document_bytes``: a longer line (a huge document, a file with no line breaks) is
    quarantined with its size and first bytes, and the rest of it is skipped unheld, so memory
    stays bounded by ``max_document_bytes`` whatever the input holds.

    Compression: ``"infer"`` (from ``.gz``/``.zst`` extensions), ``None``, ``"gzip"`` or ``"zstd"``.
    """

    name = "jsonl_read"

    def __init__(self, text_field: str = "text", id_field: str | None = None,
                 fields: Sequence[str] | None = None, compression: str | None = "infer",
                 strict: bool = False, quarantine_dir: str | None = None,
                 storage_options: dict[str, Any] | None = None,
                 max_quarantine_raw_bytes: int = DEFAULT_RAW_CAP, name: str | None = None,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        super().__init__(text_field, id_field, fields, strict, quarantine_dir, storage_options,
                         max_quarantine_raw_bytes, name)
        infer_codec("x", compression)  # validate early
        if isinstance(max_document_bytes, bool) or not isinstance(max_document_bytes, int) \
                or max_document_bytes < 1:
            raise ValueError(f"stage {self.stage_name!r}: max_document_bytes must be an integer "
                             f">= 1, got {max_document_bytes!r}")
        self.compression = compression
        self.max_document_bytes = max_document_bytes

    def read_file(self, path: str, rel: str, builder: BatchBuilder,
                  quarantine: list[dict[str, Any]], byte_range: ByteRange | None = None) -> int:
        docs_before, quarantined_before = len(builder), len(quarantine)
        try:
            return self._read_lines(path, rel, builder, quarantine, byte_range, None)
        except _Unverified as damage:  # read again, distrusting what the damaged member gave
            builder.truncate(docs_before)
            del quarantine[quarantined_before:]
            return self._read_lines(path, rel, builder, quarantine, byte_range, damage.verified)

    def _read_lines(self, path: str, rel: str, builder: BatchBuilder,
                    quarantine: list[dict[str, Any]], byte_range: ByteRange | None,
                    trusted: int | None) -> int:
        """One pass over the file; with ``trusted`` (decoded bytes a codec verified before the
        damage), every line that ends after that point is quarantined unparsed."""
        codec = infer_codec(path, self.compression)
        if byte_range is not None and codec is not None:
            raise ValueError(f"stage {self.stage_name!r}: {path} is {codec}-compressed and cannot "
                             "be read from a byte range; the partitioner splits plain files only")
        text_field, id_field, fields = self.text_field, self.id_field, self.fields
        loads = json.loads
        add = builder.add
        read = 0
        first_line = byte_range.first_line if byte_range is not None else 1
        lineno = first_line - 1
        consumed = 0
        limit = self.max_document_bytes
        with fsspec.open(path, "rb", **storage_options_for(path, self.storage_options)) as raw:
            lines: Iterable[bytes]
            if byte_range is None:
                stream = open_decompressed(raw, codec)
                source = _line_source(stream)
                lines = iter(partial(source.readline, limit + 1), b"")
            else:
                raw.seek(byte_range.start)
                stream = source = _line_source(raw)
                lines = _lines_within(source, byte_range.end - byte_range.start, limit + 1)
            try:
                for lineno, line in enumerate(lines, first_line):
                    consumed += len(line)
                    if len(line) > limit and line[-1:] != b"\n":
                        skipped, ended = _skip_line(source)
                        consumed += skipped
                        size = len(line) + skipped - ended
                        read += 1
                        self._bad(quarantine, path, lineno,
                                  f"document too large: its line holds {size} bytes, more than "
                                  f"max_document_bytes={limit}; split the document or raise "
                                  "the limit", line, size)
                        continue
                    stripped = line.strip()
                    if not stripped:
                        continue
                    read += 1
                    if trusted is not None and consumed > trusted:
                        self._bad(quarantine, path, lineno, f"{REASON_UNVERIFIED} (only the first "
                                  f"{trusted} decoded bytes passed a {codec} check)", line)
                        continue
                    try:
                        decoded = stripped.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self._bad(quarantine, path, lineno, f"invalid UTF-8: {exc.reason} at byte {exc.start}", line)
                        continue
                    try:
                        record = loads(decoded)
                    except ValueError as exc:
                        self._bad(quarantine, path, lineno, f"invalid JSON: {exc}", line)
                        continue
                    except RecursionError:
                        self._bad(quarantine, path, lineno, "invalid JSON: nested too deeply", line)
                        continue
                    if type(record) is not dict:
                        self._bad(quarantine, path, lineno,
                                  f"not a JSON object (got {type(record).__name__})", line)
                        continue
                    text = record.get(text_field)
                    if type(text) is not str:
                        if text_field not in record:
                            reason = f"missing text field {text_field!r}"
                        else:
                            reason = f"text field {text_field!r} is not a string (got {_json_type(text)})"
                        self._bad(quarantine, path, lineno, reason, line)
                        continue
                    if id_field is None:
                        doc_id = f"{rel}:{lineno}"
                    else:
                        raw_id = record.get(id_field)
                        if type(raw_id) not in (str, int) or raw_id == "":
                            self._bad(quarantine, path, lineno,
                                      f"id field {id_field!r} missing or not a string/integer", line)
                            continue
                        doc_id = str(raw_id)
                    extras = [record.get(f) for f in fields] if fields else None
                    if _SURROGATE_ESCAPE.search(stripped):
                        bad_field = _lone_surrogate_field(
                            [text_field, id_field or "id", *fields], [text, doc_id, *(extras or [])])
                        if bad_field is not None:
                            self._bad(quarantine, path, lineno,
                                      f"{'text' if bad_field == text_field else 'id' if bad_field == (id_field or 'id') else ''}"
                                      f"{' ' if bad_field in (text_field, id_field or 'id') else ''}"
                                      f"field {bad_field!r} {REASON_SURROGATE}", line)
                            continue
                    add(doc_id, text, path, lineno, extras)
            except COMPRESSED_STREAM_ERRORS as exc:
                verified = verified_bytes(stream)
                if (trusted is None and not self.strict and verified is not None
                        and consumed > verified):
                    raise _Unverified(verified) from exc
                read += 1
                self._bad(quarantine, path, lineno + 1, f"{REASON_TRUNCATED}: {exc}", None)
            else:
                if byte_range is not None and consumed != byte_range.end - byte_range.start:
                    raise ReaderAccountingError(
                        f"stage {self.stage_name!r}: {path}: bytes {byte_range.start}-"
                        f"{byte_range.end} held {consumed} bytes of whole lines; the file "
                        "changed after it was partitioned (rerun on a stable input)"
                    )
                produced = decoded_bytes(stream)
                if produced is not None and produced != consumed:
                    raise ReaderAccountingError(
                        f"stage {self.stage_name!r}: {path}: the decompressor produced {produced} "
                        f"bytes but the lines read hold {consumed}; decoded data was lost inside "
                        "the reader (a bug: report it with this file)"
                    )
        return read


class _Unverified(Exception):
    """A damaged compressed stream gave lines after the last point its codec verified."""

    def __init__(self, verified: int) -> None:
        super().__init__(verified)
        self.verified = verified


def _lines_within(f: Any, length: int, most: int) -> Iterator[bytes]:
    """The lines of ``f`` (each at most ``most`` bytes, as ``readline(most)``) from its position
    until ``length`` bytes are consumed.

    Ranges end at a line start, so the last line ends exactly there; a line that runs past the
    end (the file changed) is yielded whole and the caller's byte count catches it. The end is
    kept as a file position, so a caller that skips the rest of an oversized line is followed."""
    end = f.tell() + length
    while f.tell() < end:
        line = f.readline(most)
        if not line:
            return
        yield line


def _line_source(f: Any) -> io.BufferedIOBase:
    """A buffered reader of ``f`` whose C ``readline(size)`` bounds every line read.

    fsspec's local wrapper holds one (attribute ``f``; about twice as fast as the wrapper's
    Python ``readline``, guarded by tests/test_input_hazards.py), a decompressed stream is one;
    other fsspec files (S3) have a ``readline`` without a size and are wrapped."""
    inner = getattr(f, "f", None)
    if isinstance(inner, io.BufferedIOBase):
        return inner
    if isinstance(f, io.BufferedIOBase):
        return f
    return io.BufferedReader(f, _SKIP_CHUNK)  # type: ignore[arg-type]


def _skip_line(f: Any) -> tuple[int, bool]:
    """Read ``f`` up to and including the next line break in bounded pieces (an oversized line
    is never held whole); return (bytes skipped, whether a line break ended them)."""
    skipped = 0
    while True:
        piece = f.readline(_SKIP_CHUNK)
        skipped += len(piece)
        if not piece or piece[-1:] == b"\n":
            return skipped, bool(piece)


def _lone_surrogate_field(names: list[str], values: list[Any]) -> str | None:
    """The first of ``names`` whose value holds a lone UTF-16 surrogate, or None.

    JSON allows ``"\\ud800"`` on its own; Python decodes it into a string that is not valid
    Unicode, and Arrow refuses the whole batch over it. Nested values are checked too.
    """
    for name, value in zip(names, values):
        if value is None or isinstance(value, (bool, int, float)):
            continue
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return name
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


class JsonlReader(CompositeStage):
    """Read JSONL files (plain, ``.gz``, ``.zst``): partition files, then read each group.

    Args: ``paths`` (file, directory, glob, list; any fsspec URL), ``files_per_group`` /
    ``bytes_per_group`` (group size), ``file_extensions`` (defaults to JSONL-like names),
    ``split_plain_files`` / ``min_tasks`` / ``min_range_bytes`` (large plain files are read as
    byte ranges by several tasks; ids and line numbers do not depend on the cut), and the
    :class:`JsonlReadStage` options ``text_field``, ``id_field``, ``fields``, ``compression``,
    ``strict``, ``quarantine_dir``, ``storage_options``, ``max_document_bytes``.
    """

    name = "jsonl_reader"

    def __init__(self, paths: str | Sequence[str], *, text_field: str = "text",
                 id_field: str | None = None, fields: Sequence[str] | None = None,
                 compression: str | None = "infer", strict: bool = False,
                 quarantine_dir: str | None = None, files_per_group: int | None = None,
                 bytes_per_group: int | None = None,
                 file_extensions: Sequence[str] | None = JSONL_EXTENSIONS,
                 storage_options: dict[str, Any] | None = None, name: str | None = None,
                 split_plain_files: bool = True, min_tasks: int | str = "auto",
                 min_range_bytes: int = DEFAULT_MIN_RANGE_BYTES,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        self.partition = FilePartitioningStage(
            paths, file_extensions=file_extensions, files_per_group=files_per_group,
            bytes_per_group=bytes_per_group, storage_options=storage_options,
            split_plain_files=split_plain_files, min_tasks=min_tasks,  # type: ignore[arg-type]
            min_range_bytes=min_range_bytes, compression=compression)
        self.read = JsonlReadStage(
            text_field=text_field, id_field=id_field, fields=fields, compression=compression,
            strict=strict, quarantine_dir=quarantine_dir, storage_options=storage_options,
            max_document_bytes=max_document_bytes)
        if name:
            self.name = name

    def decompose(self) -> list[ProcessingStage]:
        return [self.partition, self.read]


__all__ = ["DEFAULT_MAX_DOCUMENT_BYTES", "JSONL_EXTENSIONS", "FileReadStage", "JsonlReadStage", "JsonlReader"]
