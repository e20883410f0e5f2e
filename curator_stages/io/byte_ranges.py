"""Byte ranges of plain line-oriented files, cut at line starts, with their first line number.

Why: one large JSONL file (or a few of uneven size) is otherwise read by one task on one core
while the others idle. Cutting it into ranges lets every core read a part.

Why the partitioner counts lines: document ids and quarantine records name the physical line
number, and it must not depend on how the file was cut. A range reader cannot know how many lines
precede its start without reading them, so the partitioner makes one streaming pass over each
file it splits (``bytes.count`` in C, at disk speed, 8 MiB at a time, memory bounded by the
chunk) and gives every range its starting line. A reader then seeks to its range and numbers
lines from there. Compressed files cannot be entered in the middle, so they stay one range each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec

from curator_stages.io.filesystem import storage_options_for

#: Task metadata key of a read task that covers part of one file: ``[start, end, first_line]``.
BYTE_RANGE = "byte_range"
_CHUNK = 8 << 20


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of a file; ``first_line`` is the 1-based line number at ``start``."""

    start: int
    end: int
    first_line: int

    def to_list(self) -> list[int]:
        return [self.start, self.end, self.first_line]

    @classmethod
    def from_list(cls, value: Any) -> "ByteRange":
        start, end, first_line = (int(v) for v in value)
        if not 0 <= start <= end or first_line < 1:
            raise ValueError(f"invalid byte range {value!r}: need 0 <= start <= end, first_line >= 1")
        return cls(start, end, first_line)


def split_at_lines(path: str, size: int, pieces: int,
                   storage_options: dict[str, Any] | None = None) -> list[ByteRange]:
    """Cut ``path`` (``size`` bytes, plain) into at most ``pieces`` ranges that start at a line
    start, the cut points near ``size * i / pieces``. A range never starts inside a line: the
    cut moves to the byte after the next ``\\n``, so a very long line stays whole (and fewer
    ranges may come back)."""
    if pieces <= 1 or size <= 0:
        return [ByteRange(0, max(size, 0), 1)]
    targets = [size * i // pieces for i in range(1, pieces)]
    cuts: list[tuple[int, int]] = []  # (offset of a line start, its 1-based line number)
    lines_before = 0
    offset = 0
    t = 0
    with fsspec.open(path, "rb", **storage_options_for(path, storage_options)) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            end = offset + len(chunk)
            search_from = 0
            while t < len(targets) and targets[t] < end:
                at = max(targets[t] - offset, search_from)
                nl = chunk.find(b"\n", at)
                if nl < 0:
                    break  # the line goes on in the next chunk: look there
                cut = offset + nl + 1
                if cut < size and (not cuts or cut > cuts[-1][0]):
                    cuts.append((cut, lines_before + chunk.count(b"\n", 0, nl + 1) + 1))
                search_from = nl + 1
                t += 1
                while t < len(targets) and targets[t] < cut:
                    t += 1  # a long line swallowed these targets
            if t < len(targets) and targets[t] < end:
                targets[t] = end  # carry the unfinished search into the next chunk
            lines_before += chunk.count(b"\n")
            offset = end
    if offset != size:
        raise OSError(f"{path}: listed with {size} bytes but {offset} were read; "
                      "the file changed while the run started, so rerun")
    starts = [(0, 1), *cuts]
    ends = [c for c, _ in cuts] + [size]
    return [ByteRange(s, e, line) for (s, line), e in zip(starts, ends)]
