"""Compressed streams for JSONL: gzip and zstd, read line by line and written deterministically.

Reading wraps the raw (fsspec) file in a decompressing reader and a ``BufferedReader`` so that
``for line in f`` streams: memory is bounded by the longest line, not by the file. The
decompressing raw stream is our own (see :class:`_DecompressingRawReader`): it hands over every
line decoded before a damaged spot and raises :class:`CorruptCompressedStreamError` on a truncated
file, so damage is reported instead of quietly losing the file's tail.

Writing uses a fixed gzip mtime of 0 (no timestamp in the header) so that the same rows always
give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO

import zstandard

#: Extensions -> codec name, longest first matters only for ``.zstd``/``.zst``.
_EXTENSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CODECS = ("gzip", "zstd")


#: Most decoded bytes one gzip ``decompress`` call may return (deflate expands up to ~1000x:
#: one 64 KiB input chunk of a highly repetitive stream would otherwise decode to 64 MiB at once).
_MAX_OUTPUT = 1 << 20


class CorruptCompressedStreamError(EOFError):
    """A compressed stream ended early or holds bytes its codec cannot decode."""


#: What a damaged compressed stream raises while being read (all caught by the readers).
COMPRESSED_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError,
)


def infer_codec(path: str, compression: str | None = "infer") -> str | None:
    """The codec for ``path``: explicit ``"gzip"``/``"zstd"``, ``None`` for plain, or from the extension."""
    if compression is None or compression == "none":
        return None
    if compression == "infer":
        lower = path.lower()
        for ext, codec in _EXTENSIONS.items():
            if lower.endswith(ext):
                return codec
        return None
    aliases = {"gz": "gzip", "gzip": "gzip", "zst": "zstd", "zstd": "zstd"}
    if compression not in aliases:
        raise ValueError(
            f"unknown compression {compression!r}; use 'infer', None, 'gzip' or 'zstd'"
        )
    return aliases[compression]


class _DecompressingRawReader(io.RawIOBase):
    """Decompress a stream of gzip members or zstd frames chunk by chunk.

    Returns decoded bytes as soon as it has any, so that a reader gets every line decoded before
    a damaged spot; raises :class:`CorruptCompressedStreamError` when the input ends in the middle
    of a member/frame (the standard library's ``GzipFile`` behind a large buffer would lose the
    last buffer's worth of good lines, and ``zstandard``'s ``stream_reader`` does not raise at all).

    Damage never costs the output decoded before it. A codec error discards the output of the
    ``decompress`` call that raised it (up to a chunk's worth: hundreds of good lines), so on an
    error the current member/frame is decoded again from its start (the raw file is seeked back;
    neither codec can resume mid-stream otherwise) up to the failing chunk, and the failing chunk
    is then fed one byte at a time: every byte decoded before the damaged one is handed over, and
    only then is the error raised. Bytes after a complete member/frame that do not start a new
    one (trailing garbage) raise too, after all output of the complete members.
    """

    def __init__(self, raw: BinaryIO, codec: str, chunk_size: int = 1 << 16) -> None:
        self._raw = raw
        self._codec = codec
        self._chunk = chunk_size
        self._obj = self._new()
        self._pending = b""
        self._in_member = False
        self._eof = False
        self._error: BaseException | None = None
        self._offset = 0          # raw bytes read so far
        self._member_start = 0    # raw offset where the current member/frame begins
        #: Input left over when a gzip call stopped at its output bound, and its raw offset.
        self._backlog: tuple[bytes, int] | None = None
        #: Decoded bytes handed over (or pending) in all; the reader checks its lines against it.
        self.bytes_decoded = 0
        #: Decoded bytes of the members/frames that ended and passed the codec's checks (gzip's
        #: CRC-32 and length; zstd's frame checks): what the reader may trust after damage.
        self.bytes_verified = 0

    def _new(self):
        if self._codec == "gzip":
            return zlib.decompressobj(wbits=31)
        return zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._eof:
            if self._error is not None:
                error, self._error = self._error, None
                self._eof = True
                raise error
            if self._backlog is not None:
                (data, start), self._backlog = self._backlog, None
                self._feed(data, start)
                continue
            data = self._raw.read(self._chunk)
            if not data:
                self._eof = True
                if self._in_member:
                    raise CorruptCompressedStreamError(
                        f"{self._codec} stream ended in the middle of a "
                        f"{'member' if self._codec == 'gzip' else 'frame'}")
                break
            start = self._offset
            self._offset += len(data)
            self._feed(data, start)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _emit(self, out: bytes) -> None:
        if out:
            self._pending += out
            self.bytes_decoded += len(out)

    def _feed(self, data: bytes, start: int) -> None:
        pos = 0
        while pos < len(data):
            self._in_member = True
            todo = data[pos:] if pos else data
            try:
                if self._codec == "gzip":  # bounded output: a gzip bomb is handed over in pieces
                    out = self._obj.decompress(todo, _MAX_OUTPUT)
                else:
                    out = self._obj.decompress(todo)
            except COMPRESSED_STREAM_ERRORS as exc:
                self._error = exc
                self._salvage(start + pos, todo)
                return
            self._emit(out)
            tail = self._obj.unconsumed_tail if self._codec == "gzip" else b""
            if tail:
                self._backlog = (tail, start + len(data) - len(tail))
                return
            if not self._obj.eof:
                return
            self._in_member = False
            self.bytes_verified = self.bytes_decoded
            rest = self._obj.unused_data
            pos = len(data) - len(rest)
            self._member_start = start + pos
            self._obj = self._new()
            if self._codec == "gzip" and rest and not rest.strip(b"\x00"):
                return  # zero padding after the last member, as gzip tolerates

    def _salvage(self, fail_at: int, failing: bytes) -> None:
        """Hand over what the failing ``decompress`` call decoded before the damaged byte."""
        if self._member_start == fail_at:
            obj = self._new()  # the failing input starts a member/frame: nothing to replay
        else:
            if not (getattr(self._raw, "seekable", lambda: False)()):
                self._error = CorruptCompressedStreamError(
                    f"{self._error}; lines decoded from the {len(failing)} compressed bytes "
                    "before it could not be recovered (the stream cannot seek back)")
                return
            resume = self._raw.tell()
            obj = self._new()
            self._raw.seek(self._member_start)
            todo = fail_at - self._member_start
            while todo > 0:  # the same input gives the same output, already handed over
                data = self._raw.read(min(self._chunk, todo))
                if not data:
                    return
                todo -= len(data)
                obj.decompress(data)
            self._raw.seek(resume)
        for i in range(len(failing)):
            try:
                out = obj.decompress(failing[i:i + 1])
            except COMPRESSED_STREAM_ERRORS:
                return
            self._emit(out)
            if obj.eof:  # pragma: no cover - a member cannot end inside a call that failed
                return


def open_decompressed(raw: BinaryIO, codec: str | None, buffer_size: int = 1 << 20) -> BinaryIO:
    """A buffered, line-iterable reader over ``raw`` decoded with ``codec``.

    For a compressed stream, ``decoded_bytes(stream)`` tells how many decoded bytes it produced,
    so a reader can check that its lines account for all of them.
    """
    if codec is None:
        return raw
    if codec in CODECS:
        return io.BufferedReader(_DecompressingRawReader(raw, codec), buffer_size)
    raise ValueError(f"unknown codec {codec!r}")


class CompressedWriter:
    """A context manager that writes compressed (or plain) bytes onto ``raw``, deterministically."""

    def __init__(self, raw: BinaryIO, codec: str | None, level: int | None = None) -> None:
        self._raw = raw
        self._codec = codec
        if codec is None:
            self._stream: BinaryIO = raw
        elif codec == "gzip":
            self._stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="",
                                         compresslevel=level if level is not None else 6)  # type: ignore[assignment]
        elif codec == "zstd":
            cctx = zstandard.ZstdCompressor(level=level if level is not None else 3)
            self._stream = cctx.stream_writer(raw, closefd=False)  # type: ignore[assignment]
        else:
            raise ValueError(f"unknown codec {codec!r}; use None, 'gzip' or 'zstd'")

    def write(self, data: bytes) -> int:
        return self._stream.write(data)

    def __enter__(self) -> "CompressedWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._codec is not None:  # closing ends the gzip member / zstd frame, not ``raw``
            self._stream.close()


def decoded_bytes(stream: BinaryIO) -> int | None:
    """Decoded bytes produced so far by a stream of :func:`open_decompressed` (None: plain)."""
    raw = getattr(stream, "raw", None)
    return raw.bytes_decoded if isinstance(raw, _DecompressingRawReader) else None


def verified_bytes(stream: BinaryIO) -> int | None:
    """Decoded bytes of the complete, checked members of a stream of :func:`open_decompressed`
    (None: plain)."""
    raw = getattr(stream, "raw", None)
    return raw.bytes_verified if isinstance(raw, _DecompressingRawReader) else None


def extension_for(codec: str | None) -> str:
    return {None: "", "gzip": ".gz", "zstd": ".zst"}[codec]
