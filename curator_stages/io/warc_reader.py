"""WARC reading: one document per HTML ``response`` record, every other record accounted for.

Records are parsed by warcio (:class:`warcio.archiveiterator.ArchiveIterator`); this module
decides what each record becomes and survives damage between records:

* an HTTP ``response`` whose payload is HTML (by its Content-Type, else by sniffing its
  first bytes) becomes a document;
* every other record is **skipped**, counted by kind in the run summary (``skipped.<kind>``):
  ``request``, ``metadata``, ``warcinfo``, ``revisit``, ``resource``... (the WARC type),
  ``non_html`` (images, PDF, CSS...), ``redirect`` (HTTP 3xx), ``http_error`` (other
  non-2xx statuses), ``non_http`` (a response without HTTP headers). They are not errors;
* a record that cannot be read (a damaged gzip member, a malformed header, a payload that
  does not decode) goes to **quarantine** with the file, its byte offset and the reason, and
  reading goes on at the next gzip member that starts a WARC record.

The contract of every reader holds per file: records read = documents + quarantined + skipped.

Records Common Crawl truncated (``WARC-Truncated``) are kept, with the reason in the
``truncated`` column; a payload over ``max_record_bytes`` is cut there and flagged ``length``
too, so memory stays bounded whatever a crawl holds.

Splits: a ``.warc.gz`` file in Common Crawl's layout (one gzip member per record) is cut into
byte ranges. A range owns the records whose member starts at or after its first member start
and before the next range's: its reader seeks to its start, finds the first gzip member there
that decompresses to ``WARC/`` and reads until a record starts at or past its end. Ids are
``<path relative to the input root>:<byte offset of the record>``, the same however the file is
cut. Plain ``.warc`` files are read whole (a record boundary cannot be found from the middle).

Output columns: ``id``, ``url``, ``warc_record_id``, ``crawl_date`` (the WARC-Date),
``content_type`` (the MIME type), ``charset`` (the one used to decode), ``charset_source``
(bom, header, meta, detected or fallback; see :mod:`curator_stages.io.charset`),
``truncated`` (null, or why the payload is incomplete), ``html``, ``source_file``,
``source_offset``.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, Sequence

import fsspec
import pyarrow as pa

from curator_stages.io.byte_ranges import BYTE_RANGE, ByteRange
from curator_stages.io.charset import decode_html
from curator_stages.io.filesystem import storage_options_for
from curator_stages.io.partition import (
    DEFAULT_MIN_RANGE_BYTES,
    FILE_GROUP_KEY,
    INPUT_ROOT,
    UNSPLIT_REASON,
    FilePartitioningStage,
    file_group_key,
    relative_to_root,
)
from curator_stages.io.quarantine import (
    DEFAULT_RAW_CAP,
    MalformedRecordError,
    ReaderAccountingError,
    attach_quarantine,
)
from curator_stages.io.warc_members import inflate_member, member_at, next_member
from curator_stages.stage import CompositeStage, ProcessingStage, record_metrics
from curator_stages.tasks import (
    DOCUMENTS_QUARANTINED,
    DOCUMENTS_READ,
    DOCUMENTS_SKIPPED,
    SKIPPED_PREFIX,
    DocumentBatch,
    FileGroupTask,
)

WARC_EXTENSIONS = (".warc.gz", ".warc")
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
#: Payload bytes kept per record; a longer payload is cut here and flagged ``length``.
DEFAULT_MAX_RECORD_BYTES = 32 << 20
#: Largest byte range of a ``.warc.gz`` file read by one task (~100 MB of HTML in memory).
DEFAULT_MAX_RANGE_BYTES = 32 << 20
#: Metric counting documents whose payload is incomplete (``WARC-Truncated`` or the cap).
RECORDS_TRUNCATED = "records_truncated"
SCHEMA = pa.schema([
    ("id", pa.string()), ("url", pa.string()), ("warc_record_id", pa.string()),
    ("crawl_date", pa.string()), ("content_type", pa.string()), ("charset", pa.string()),
    ("charset_source", pa.string()), ("truncated", pa.string()), ("html", pa.string()),
    ("source_file", pa.string()), ("source_offset", pa.int64()),
])


class WarcReadStage(ProcessingStage[FileGroupTask, DocumentBatch]):
    """Read the WARC files (or byte ranges of one) of a task into one :class:`DocumentBatch`.

    ``strict=True`` raises :class:`MalformedRecordError` at the first unreadable record instead
    of quarantining it. ``quarantine_dir``: write quarantine records there (else they ride on
    the task to the writer). ``max_record_bytes``: payload bytes kept per record.
    """

    name = "warc_read"

    def __init__(self, strict: bool = False, quarantine_dir: str | None = None,
                 storage_options: dict[str, Any] | None = None,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 max_quarantine_raw_bytes: int = DEFAULT_RAW_CAP, name: str | None = None) -> None:
        if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, int) \
                or max_record_bytes < 1024:
            raise ValueError(f"stage {name or self.name!r}: max_record_bytes must be an integer "
                             f">= 1024, got {max_record_bytes!r}")
        self.strict = strict
        self.quarantine_dir = quarantine_dir
        self.storage_options = dict(storage_options or {})
        self.max_record_bytes = max_record_bytes
        self.max_quarantine_raw_bytes = max_quarantine_raw_bytes
        if name:
            self.name = name

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], list(SCHEMA.names)

    def process(self, task: FileGroupTask) -> DocumentBatch:
        root = task.reader_options.get(INPUT_ROOT) or task.metadata.get(INPUT_ROOT)
        rels = [relative_to_root(p, root) for p in task.data]
        key = task.metadata.get(FILE_GROUP_KEY) or file_group_key(rels)
        byte_range = task.metadata.get(BYTE_RANGE)
        part = ByteRange.from_list(byte_range) if byte_range is not None else None
        if part is not None and len(task.data) != 1:
            raise ValueError(f"stage {self.stage_name!r}: task {task.task_id!r} has a byte range "
                             f"but {len(task.data)} files; a range belongs to exactly one file")
        rows: list[dict[str, Any]] = []
        quarantine: list[dict[str, Any]] = []
        skipped: dict[str, int] = {}
        read = 0
        for path, rel in zip(task.data, rels):
            before = (len(rows), len(quarantine), sum(skipped.values()))
            n = self.read_file(path, rel, rows, quarantine, skipped, part)
            got = (len(rows) - before[0], len(quarantine) - before[1],
                   sum(skipped.values()) - before[2])
            if n != sum(got):
                raise ReaderAccountingError(
                    f"stage {self.stage_name!r}: {path}: read {n} record(s) but emitted {got[0]}, "
                    f"quarantined {got[1]} and skipped {got[2]}; a record was lost inside the "
                    "reader (a bug: report it with this file)")
            read += n
        meta = {**task.metadata, FILE_GROUP_KEY: key, INPUT_ROOT: root}
        attach_quarantine(meta, quarantine, key, self.quarantine_dir, stage_name=self.stage_name,
                          storage_options=self.storage_options)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        out = DocumentBatch(task_id=task.task_id, dataset_name=task.dataset_name, data=table,
                            _metadata=meta, _stage_perf=list(task._stage_perf))
        truncated = sum(1 for r in rows if r["truncated"])
        record_metrics(out, **{DOCUMENTS_READ: read, DOCUMENTS_QUARANTINED: len(quarantine),
                               DOCUMENTS_SKIPPED: sum(skipped.values()),
                               **{f"{SKIPPED_PREFIX}{k}": v for k, v in skipped.items()},
                               **({RECORDS_TRUNCATED: truncated} if truncated else {})})
        return out

    # ------------------------------------------------------------------ one file
    def read_file(self, path: str, rel: str, rows: list[dict[str, Any]],
                  quarantine: list[dict[str, Any]], skipped: dict[str, int],
                  part: ByteRange | None = None) -> int:
        """Append the file's documents, quarantine records and skip counts; return the records
        read (each exactly once: a document, a quarantine record or a skip)."""
        with fsspec.open(path, "rb", **storage_options_for(path, self.storage_options)) as f:
            size = f.size if getattr(f, "size", None) is not None else f.seek(0, 2)
            if path.lower().endswith(".gz"):
                return self._read_members(f, path, rel, size, part, rows, quarantine, skipped)
            if part is not None:
                raise ValueError(f"stage {self.stage_name!r}: {path} is not a .warc.gz file and "
                                 "cannot be read from a byte range; the partitioner splits "
                                 ".warc.gz files only")
            return self._read_plain(f, path, rel, size, rows, quarantine, skipped)

    def _read_members(self, f: Any, path: str, rel: str, size: int, part: ByteRange | None,
                      rows: list[dict[str, Any]], quarantine: list[dict[str, Any]],
                      skipped: dict[str, int]) -> int:
        """One record per gzip member (Common Crawl's layout). Members are inflated here, with
        zlib checking each one's CRC, and each record is parsed by warcio: a damaged member is
        then an error at its own offset, where warcio's reader would end the file silently."""
        from warcio.archiveiterator import ArchiveIterator

        end = part.end if part is not None else size
        pos = 0 if part is None or part.start == 0 else next_member(f, part.start, size)
        read = 0
        while pos < end:
            read += 1
            try:
                length, data, over = inflate_member(f, pos, self.max_record_bytes)
            except (zlib.error, EOFError) as exc:
                nxt = next_member(f, pos + 1, size)
                self._bad(quarantine, f, path, pos, nxt - pos, f"damaged gzip member: {exc}")
                pos = nxt
                continue
            try:
                record = next(iter(ArchiveIterator(io.BytesIO(data))))
                self._record(record, path, rel, pos, over, rows, skipped)
            except _record_errors() as exc:
                self._bad(quarantine, f, path, pos, length, f"unreadable WARC record: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            pos += length
            if pos >= end and pos < size and not member_at(f, pos):
                end = pos + 1  # damage right after the range: no range starts there, read it
        return read

    def _read_plain(self, f: Any, path: str, rel: str, size: int,
                    rows: list[dict[str, Any]], quarantine: list[dict[str, Any]],
                    skipped: dict[str, int]) -> int:
        """An uncompressed WARC: warcio reads it in order; a record it cannot parse ends the
        file there (no record start can be told from content after it), quarantined whole."""
        from warcio.archiveiterator import ArchiveIterator

        read, at = 0, 0
        it = ArchiveIterator(f)
        try:
            for record in it:
                read += 1
                self._record(record, path, rel, at, False, rows, skipped)
                at = it.get_record_offset() + it.get_record_length()
        except _record_errors() as exc:
            read += 1
            self._bad(quarantine, f, path, at, size - at, f"unreadable WARC record (the rest of "
                      f"this plain WARC file): {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        return read

    def _record(self, record: Any, path: str, rel: str, offset: int, over: bool,
                rows: list[dict[str, Any]], skipped: dict[str, int]) -> None:
        kind = _skip_kind(record)
        if kind is None:
            http = record.http_headers
            content_type = http.get_header("Content-Type")
            body = record.content_stream().read(self.max_record_bytes + 1)
            truncated = record.rec_headers.get_header("WARC-Truncated")
            if over or len(body) > self.max_record_bytes:
                body, truncated = body[:self.max_record_bytes], truncated or "length"
            if not _mime(content_type) and not _looks_html(body):
                kind = "non_html"
            else:
                html, charset, source = decode_html(body, content_type)
                h = record.rec_headers
                rows.append({
                    "id": f"{rel}:{offset}", "url": h.get_header("WARC-Target-URI"),
                    "warc_record_id": h.get_header("WARC-Record-ID"),
                    "crawl_date": h.get_header("WARC-Date"),
                    "content_type": _mime(content_type) or "text/html", "charset": charset,
                    "charset_source": source, "truncated": truncated or None, "html": html,
                    "source_file": path, "source_offset": offset})
                return
        skipped[kind] = skipped.get(kind, 0) + 1

    def _bad(self, quarantine: list[dict[str, Any]], f: Any, path: str, offset: int,
             length: int, reason: str) -> None:
        if self.strict:
            raise MalformedRecordError(
                f"stage {self.stage_name!r}: {path} byte {offset}: {reason}; fix the input, or "
                "run with strict=False to quarantine bad records and continue")
        f.seek(offset)
        raw = f.read(min(length, self.max_quarantine_raw_bytes))
        quarantine.append({"file": path, "offset": int(offset), "length": int(length),
                           "reason": reason, "raw": raw.decode("utf-8", "backslashreplace"),
                           "raw_size": int(length), "stage": self.stage_name})


def _mime(content_type: str | None) -> str | None:
    """The MIME type if it is HTML; None otherwise (or when there is no Content-Type)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime if mime in HTML_TYPES else None


def _looks_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _skip_kind(record: Any) -> str | None:
    """Why a record is not a document (its kind), or None for a candidate HTML response."""
    if record.rec_type != "response":
        return record.rec_type or "unknown"
    http = record.http_headers
    if http is None or not (http.protocol or "").upper().startswith("HTTP"):
        return "non_http"
    status = http.get_statuscode() or ""
    if status.startswith("3"):
        return "redirect"
    if not status.startswith("2"):
        return "http_error"
    content_type = http.get_header("Content-Type")
    if content_type is not None and _mime(content_type) is None:
        return "non_html"
    return None


def _record_errors() -> tuple[type[BaseException], ...]:
    """What reading one record may raise on bad bytes (never a bug's NameError or TypeError):
    warcio's parse errors, a payload's content encoding that does not decode."""
    from warcio.exceptions import ArchiveLoadFailed
    from warcio.statusandheaders import StatusAndHeadersParserException

    errors: list[type[BaseException]] = [ArchiveLoadFailed, StatusAndHeadersParserException,
                                         ValueError, EOFError, OSError, zlib.error, StopIteration]
    try:
        import brotli

        errors.append(brotli.error)
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


class WarcPartitioningStage(FilePartitioningStage):
    """List WARC files; cut ``.warc.gz`` files into byte ranges (one task per range).

    Unlike line files, no pass over the file is needed: a range's reader finds its first
    record itself (:func:`next_member`), so cut points are plain byte offsets."""

    name = "warc_partitioning"

    def __init__(self, *args: Any, max_range_bytes: int = DEFAULT_MAX_RANGE_BYTES,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(max_range_bytes, bool) or not isinstance(max_range_bytes, int) \
                or max_range_bytes < self.min_range_bytes:
            raise ValueError(f"stage {self.stage_name!r}: max_range_bytes must be an integer "
                             f">= min_range_bytes ({self.min_range_bytes}), got {max_range_bytes!r}")
        self.max_range_bytes = max_range_bytes

    def split(self, files: list[tuple[str, int]]) -> tuple[
            list[tuple[str, int]], list[tuple[str, ByteRange]], dict[str, str]]:
        if not self.split_plain_files or not files:
            return files, [], {}
        # A range's pages are one batch in memory: at most max_range_bytes of compressed WARC.
        range_bytes = min(self.max_range_bytes, max(
            self.min_range_bytes, -(-sum(s for _, s in files) // self.target_tasks())))
        whole: list[tuple[str, int]] = []
        ranges: list[tuple[str, ByteRange]] = []
        unsplit: dict[str, str] = {}
        for path, size in files:
            pieces = -(-size // range_bytes)
            if pieces <= 1:
                whole.append((path, size))
            elif not path.lower().endswith(".gz"):
                unsplit[path] = "plain WARC: a record start cannot be found from the middle"
                whole.append((path, size))
            else:
                cuts = [size * i // pieces for i in range(pieces + 1)]
                ranges += [(path, ByteRange(s, e, 1)) for s, e in zip(cuts, cuts[1:])]
        return whole, ranges, unsplit


class WarcReader(CompositeStage):
    """Read WARC files (``.warc.gz`` as Common Crawl writes them, or ``.warc``), local or any
    fsspec URL (``s3://``): list and split, then read each part (:class:`WarcReadStage`).

    ``paths``: file, directory, glob or list; ``files_per_group`` / ``bytes_per_group``: group
    small files; ``split_files`` / ``min_tasks`` / ``min_range_bytes`` / ``max_range_bytes``:
    cut large ``.warc.gz`` files into byte ranges so every core reads and a task's pages stay a
    bounded batch; the rest as :class:`WarcReadStage`.
    """

    name = "warc_reader"

    def __init__(self, paths: str | Sequence[str], *, strict: bool = False,
                 quarantine_dir: str | None = None, files_per_group: int | None = None,
                 bytes_per_group: int | None = None,
                 file_extensions: Sequence[str] | None = WARC_EXTENSIONS,
                 storage_options: dict[str, Any] | None = None,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, split_files: bool = True,
                 min_tasks: int | str = "auto", min_range_bytes: int = DEFAULT_MIN_RANGE_BYTES,
                 max_range_bytes: int = DEFAULT_MAX_RANGE_BYTES,
                 name: str | None = None) -> None:
        self.partition = WarcPartitioningStage(
            paths, file_extensions=file_extensions, files_per_group=files_per_group,
            bytes_per_group=bytes_per_group, storage_options=storage_options,
            split_plain_files=split_files, min_tasks=min_tasks,  # type: ignore[arg-type]
            min_range_bytes=min_range_bytes, compression=None, max_range_bytes=max_range_bytes)
        self.read = WarcReadStage(strict=strict, quarantine_dir=quarantine_dir,
                                  storage_options=storage_options,
                                  max_record_bytes=max_record_bytes)
        if name:
            self.name = name

    def decompose(self) -> list[ProcessingStage]:
        return [self.partition, self.read]


__all__ = ["HTML_TYPES", "RECORDS_TRUNCATED", "UNSPLIT_REASON", "WARC_EXTENSIONS",
           "WarcPartitioningStage", "WarcReadStage", "WarcReader", "next_member"]
