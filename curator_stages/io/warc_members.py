"""Gzip members of a ``.warc.gz`` file, as Common Crawl writes it (one member per record).

The members are inflated here, not by the WARC library: warcio's own gzip reader prints a
damaged member's error and ends the file without raising, losing every later record. Here a
member is inflated alone (zlib checks its CRC), and after damage the next member that starts a
WARC record is found by scanning, which is also how a byte range finds its first record.
"""

from __future__ import annotations

import zlib
from typing import Any

_GZIP_MAGIC = b"\x1f\x8b\x08"
_SCAN_CHUNK = 1 << 20
_READ_BLOCK = 256 << 10
_INFLATE_STEP = 4 << 20
#: Bytes of WARC and HTTP headers allowed on top of ``max_record_bytes`` of payload.
_HEADER_ALLOWANCE = 64 << 10
_SCAN_OVERLAP = 1024


def is_member_start(data: bytes) -> bool:
    """Whether ``data`` starts a gzip member that decompresses to a WARC record header."""
    try:
        return zlib.decompressobj(31).decompress(data, 8).startswith(b"WARC/")
    except zlib.error:
        return False


def member_at(f: Any, offset: int) -> bool:
    """Whether a WARC record's gzip member starts at ``offset`` (the file position is kept)."""
    here = f.tell()
    f.seek(offset)
    found = is_member_start(f.read(_SCAN_OVERLAP))
    f.seek(here)
    return found


def next_member(f: Any, pos: int, size: int) -> int:
    """The offset of the first gzip member at or after ``pos`` that starts a WARC record
    (``size`` when there is none). False starts (the magic bytes inside compressed data) fail
    the check: they do not decompress to ``WARC/``."""
    while pos < size:
        f.seek(pos)
        chunk = f.read(_SCAN_CHUNK + _SCAN_OVERLAP)
        if not chunk:
            return size
        at = chunk.find(_GZIP_MAGIC)
        limit = len(chunk) if len(chunk) < _SCAN_CHUNK + _SCAN_OVERLAP else _SCAN_CHUNK
        while 0 <= at < limit:
            if is_member_start(chunk[at:at + _SCAN_OVERLAP]):
                return pos + at
            at = chunk.find(_GZIP_MAGIC, at + 1)
        pos += limit
    return size


def inflate_member(f: Any, pos: int, cap: int) -> tuple[int, bytes, bool]:
    """(compressed length, the first ``cap`` + header bytes inflated, whether more was cut) of
    the gzip member at ``pos``. zlib checks the member's CRC; a cut member raises EOFError."""
    d = zlib.decompressobj(31)
    f.seek(pos)
    limit = cap + _HEADER_ALLOWANCE
    parts: list[bytes] = []
    kept, total_in, over = 0, 0, False
    while not d.eof:
        chunk = f.read(_READ_BLOCK)
        if not chunk:
            raise EOFError(f"member cut short at byte {pos + total_in} (end of file)")
        total_in += len(chunk)
        while chunk and not d.eof:
            out = d.decompress(chunk, _INFLATE_STEP)
            chunk = d.unconsumed_tail
            take = out[:max(limit - kept, 0)]
            if take:
                parts.append(take)
                kept += len(take)
            over = over or len(take) < len(out)
    return total_in - len(d.unused_data), b"".join(parts), over


__all__ = ["inflate_member", "is_member_start", "member_at", "next_member"]
