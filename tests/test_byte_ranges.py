"""Large plain JSONL files are read as byte ranges; ids, texts and quarantine lines do not change."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from curator_stages.io import JsonlReader
from curator_stages.io.byte_ranges import BYTE_RANGE, split_at_lines
from curator_stages.io.partition import UNSPLIT_REASON, FilePartitioningStage
from curator_stages.io.quarantine import QUARANTINE_KEY
from curator_stages.tasks import EmptyTask, FileGroupTask


def _write_corpus(path: Path, n: int = 400) -> list[bytes]:
    lines = []
    for i in range(n):
        if i % 37 == 5:
            lines.append(b"")  # blank lines count in line numbers, not as records
        else:
            lines.append(json.dumps({"text": f"document {i} " + "word " * (i % 13)}).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def _read(reader: JsonlReader) -> tuple[list[tuple], list[tuple], int, list[dict]]:
    tasks = reader.partition.process(EmptyTask())
    docs, bad, read = [], [], 0
    for task in tasks:
        out = reader.read.process(task)
        table = out.to_pyarrow()
        docs += list(zip(*(table.column(c).to_pylist() for c in ("id", "text", "source_line"))))
        bad += [(q["file"], q["line"], q["reason"]) for q in out.metadata.get(QUARANTINE_KEY, [])]
        read += int(out.__dict__["_pending_metrics"]["documents_read"])
    return docs, bad, read, [t.metadata for t in tasks]


def test_split_read_equals_whole_read_with_bad_lines_at_range_edges(tmp_path: Path):
    path = tmp_path / "big.jsonl"
    lines = _write_corpus(path)
    pieces = 7
    cuts = split_at_lines(str(path), path.stat().st_size, pieces)
    assert len(cuts) == pieces
    # Break the line just before and just at the start of each cut, keeping the byte length, so
    # the cuts stay where they are and each bad line sits on a range boundary.
    broken = set()
    for r in cuts[1:]:
        for lineno in (r.first_line - 1, r.first_line):
            if lines[lineno - 1]:
                lines[lineno - 1] = b"{" + b"x" * (len(lines[lineno - 1]) - 1)
                broken.add(lineno)
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert split_at_lines(str(path), path.stat().st_size, pieces) == cuts

    whole = _read(JsonlReader(str(path), split_plain_files=False))
    split = _read(JsonlReader(str(path), min_tasks=pieces, min_range_bytes=1))

    assert len(whole[3]) == 1 and BYTE_RANGE not in whole[3][0]
    assert len(split[3]) == pieces
    assert [m[BYTE_RANGE] for m in split[3]] == [r.to_list() for r in cuts]
    assert split[0] == whole[0]  # same ids, texts, line numbers, same order
    assert split[1] == whole[1]
    assert {line for _, line, _ in split[1]} == broken
    assert split[2] == whole[2] == sum(1 for x in lines if x)
    # ids are path:line of the physical line, whatever the cut
    assert all(doc_id == f"big.jsonl:{line}" for doc_id, _, line in split[0])


def test_line_numbers_survive_a_line_longer_than_a_range(tmp_path: Path):
    path = tmp_path / "long.jsonl"
    rows = [{"text": "a"}, {"text": "b" * 5000}, {"text": "c"}, {"text": "d"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cuts = split_at_lines(str(path), path.stat().st_size, 8)
    assert all(c.start < c.end for c in cuts)
    docs, bad, read, _ = _read(JsonlReader(str(path), min_tasks=8, min_range_bytes=1))
    assert [(d[0], d[1][:1]) for d in docs] == [
        ("long.jsonl:1", "a"), ("long.jsonl:2", "b"), ("long.jsonl:3", "c"), ("long.jsonl:4", "d")]
    assert bad == [] and read == 4


def test_auto_gives_at_least_twice_the_cpus_and_compressed_files_stay_whole(tmp_path: Path):
    _write_corpus(tmp_path / "a.jsonl", 2000)
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "small"}) + "\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        for i in range(2000):  # random text: the compressed file is large enough to split
            f.write(json.dumps({"text": os.urandom(60).hex()}) + "\n")
    stage = FilePartitioningStage(str(tmp_path), split_plain_files=True, min_range_bytes=1)
    tasks = stage.process(EmptyTask())
    assert stage.target_tasks() == 2 * len(os.sched_getaffinity(0))  # twice the usable CPUs
    assert len(tasks) >= stage.target_tasks()
    by_file: dict[str, list[FileGroupTask]] = {}
    for t in tasks:
        by_file.setdefault(Path(t.data[0]).name, []).append(t)
    assert len(by_file["a.jsonl"]) > 1
    gz = by_file["c.jsonl.gz"]
    assert len(gz) == 1 and BYTE_RANGE not in gz[0].metadata
    assert "gzip-compressed" in gz[0].metadata[UNSPLIT_REASON]
    assert len({t.metadata["file_group_key"] for t in tasks}) == len(tasks)


def test_bad_split_parameters_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="min_tasks"):
        FilePartitioningStage("x", min_tasks=0)
    with pytest.raises(ValueError, match="min_range_bytes"):
        FilePartitioningStage("x", min_range_bytes=0)
