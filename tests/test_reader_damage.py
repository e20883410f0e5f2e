"""Damaged input that must cost one quarantine record, never the good lines around it.

Compressed-stream damage (gzip and zstd, garbage after the end and bytes flipped mid-file), the
reader's own per-file count check, and records that are valid JSON but not valid Unicode (a lone
surrogate). Expectations are computed independently of the reader: from the pristine file, and
from how far a codec decodes the pristine bytes before the damaged offset.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curator_stages.io import JsonlReader, MalformedRecordError, ParquetReader
from curator_stages.io.batch_builder import BatchBuilder
from curator_stages.io.jsonl_reader import JsonlReadStage
from curator_stages.io.quarantine import ReaderAccountingError
from curator_stages.pipeline import Pipeline
from curator_stages.tasks import DOCUMENTS_QUARANTINED, DOCUMENTS_READ, EmptyTask

SHARDS = {"gzip": "shard-00002.jsonl.gz", "zstd": "shard-00003.jsonl.zst"}
TRUNCATED = "truncated/corrupt compressed stream"
UNVERIFIED = "unverified:"


def run_reader(reader) -> list:
    tasks = [EmptyTask()]
    for stage in Pipeline("t", [reader]).execution_stages():
        tasks = stage.run(tasks)
    return tasks


def docs(batches) -> list[tuple[int, str]]:
    return [(r["source_line"], r["text"]) for b in batches for r in b.to_pyarrow().to_pylist()]


def quarantine(batches) -> list[dict]:
    return [r for b in batches for r in b.metadata.get("quarantine", [])]


def metric(batches, key) -> int:
    return int(sum(b._stage_perf[-1].custom_metrics.get(key, 0) for b in batches))


def _decoder(codec: str):
    return zlib.decompressobj(wbits=31) if codec == "gzip" else zstandard.ZstdDecompressor().decompressobj()


def _complete_lines_before(codec: str, blob: bytes, offset: int) -> int:
    """Lines a codec can fully decode from the pristine bytes before ``offset``."""
    return _decoder(codec).decompress(blob[:offset]).count(b"\n")


def _pristine(repo_root: Path, tmp_path: Path, codec: str) -> tuple[bytes, list[tuple[int, str]]]:
    """The shard's bytes and the documents the reader gets from the undamaged shard."""
    src = repo_root / "data" / "sample" / SHARDS[codec]
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(src, clean / src.name)
    return src.read_bytes(), docs(run_reader(JsonlReader(str(clean))))


def _check_accounting(batches) -> None:
    read = metric(batches, DOCUMENTS_READ)
    assert read == sum(b.num_items for b in batches) + metric(batches, DOCUMENTS_QUARANTINED)
    assert metric(batches, DOCUMENTS_QUARANTINED) == len(quarantine(batches))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_garbage_after_the_end_loses_no_good_line(repo_root: Path, tmp_path: Path, codec):
    """Before: 150-190 good records of the 755-line shard were neither read nor quarantined."""
    blob, expected = _pristine(repo_root, tmp_path, codec)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / SHARDS[codec]).write_bytes(blob + bytes(range(0xA0, 0xB0)))
    batches = run_reader(JsonlReader(str(damaged)))
    assert docs(batches) == expected  # every document of the complete stream
    tail = [r for r in quarantine(batches) if r["reason"].startswith(TRUNCATED)]
    assert len(tail) == 1
    lines = _decoder(codec).decompress(blob).count(b"\n")
    assert tail[0]["line"] == lines + 1 and tail[0]["file"].endswith(SHARDS[codec])
    _check_accounting(batches)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("where", [0.3, 0.5, 0.7])
def test_bytes_flipped_mid_file_salvage_every_line_before_the_damage_unverified(
        repo_root: Path, tmp_path: Path, codec, where):
    """The shard is one member/frame: no line of it passed the codec's check, so none becomes a
    document, and every line decoded before the damage is salvaged into quarantine."""
    blob, expected_all = _pristine(repo_root, tmp_path, codec)
    offset = int(len(blob) * where)
    damaged_blob = bytearray(blob)
    for i in range(offset, offset + 16):
        damaged_blob[i] ^= 0xFF
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / SHARDS[codec]).write_bytes(bytes(damaged_blob))
    before = _complete_lines_before(codec, blob, offset)
    assert before > 100
    batches = run_reader(JsonlReader(str(damaged)))
    assert docs(batches) == []
    unverified = {r["line"]: r for r in quarantine(batches) if r["reason"].startswith(UNVERIFIED)}
    pristine = _decoder(codec).decompress(blob).split(b"\n")
    for line in range(1, before + 1):  # salvaged: size and the first 4 KiB, byte for byte
        if not pristine[line - 1].strip():
            continue  # a blank line is no record
        assert unverified[line]["raw_size"] == len(pristine[line - 1])
        cut = pristine[line - 1][:4096].decode("utf-8", "backslashreplace")
        assert unverified[line]["raw"] == cut
    tail = [r for r in quarantine(batches) if r["reason"].startswith(TRUNCATED)]
    assert len(tail) == 1 and tail[0]["line"] > before
    _check_accounting(batches)


def test_lines_zlib_decodes_from_damaged_data_are_never_documents(tmp_path: Path):
    """Before: damaged gzip files gave 38 and 27 documents that were garbage (zlib decodes
    damaged deflate data into plausible lines, often up to the member's end, where the CRC
    fails). Lines of the members that passed their check stay documents."""
    import random

    rng = random.Random(7)
    words = [f"w{i}" for i in range(300)]
    lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(40))}).encode()
             for _ in range(3000)]
    first = gzip.compress(b"\n".join(lines[:1000]) + b"\n")
    second = gzip.compress(b"\n".join(lines[1000:]) + b"\n")
    pristine = set(lines)
    for attempt in range(200):  # damage that zlib turns into JSON documents that never existed
        damaged = bytearray(second)
        at = rng.randrange(200, len(second) - 200)
        for i in range(at, at + 8):
            damaged[i] = rng.randrange(256)
        decoder, pieces = zlib.decompressobj(wbits=31), []
        try:
            for i in range(0, len(damaged), 256):
                pieces.append(decoder.decompress(bytes(damaged[i:i + 256])))
        except zlib.error:
            pass
        out = b"".join(pieces)
        made_up = [x for x in out.split(b"\n")[:-1] if x not in pristine and _is_doc(x)]
        if made_up:
            break
    else:
        pytest.fail("no damage that decodes to made-up documents was found")
    (tmp_path / "d.jsonl.gz").write_bytes(first + bytes(damaged))
    batches = run_reader(JsonlReader(str(tmp_path)))
    assert docs(batches) == [(i + 1, json.loads(x)["text"]) for i, x in enumerate(lines[:1000])]
    reasons = [r["reason"] for r in quarantine(batches)]
    assert reasons.count(reasons[-1]) == 1 and reasons[-1].startswith(TRUNCATED)
    assert all(r.startswith(UNVERIFIED) for r in reasons[:-1]) and len(reasons) > len(made_up)
    _check_accounting(batches)


def _is_doc(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("text"), str)


def test_damaged_second_gzip_member_keeps_all_of_the_first(tmp_path: Path):
    """Concatenated gzip members (pigz, log rotation): a damaged second member header cost the
    last chunk of the first member before."""
    first = [json.dumps({"text": f"first member line {i} " + "word " * 20}) for i in range(4000)]
    second = [json.dumps({"text": f"second member line {i}"}) for i in range(100)]
    one = gzip.compress(("\n".join(first) + "\n").encode())
    two = bytearray(gzip.compress(("\n".join(second) + "\n").encode()))
    two[0:2] = b"\x00\x00"  # not a gzip magic: the damage is where the second member starts
    (tmp_path / "m.jsonl.gz").write_bytes(one + bytes(two))
    batches = run_reader(JsonlReader(str(tmp_path)))
    assert [t for _, t in docs(batches)] == [json.loads(line)["text"] for line in first]
    assert [(r["line"], r["reason"].split(":")[0]) for r in quarantine(batches)] == [
        (len(first) + 1, TRUNCATED)]
    _check_accounting(batches)


def test_strict_mode_stops_at_the_damage_naming_the_line(tmp_path: Path):
    payload = b"".join(json.dumps({"text": f"line {i} " + "word " * 30}).encode() + b"\n"
                       for i in range(3000))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload)
                                           + b"\x00garbage-garbage")
    with pytest.raises(MalformedRecordError, match=f"a.jsonl.zst line 3001: {TRUNCATED}"):
        run_reader(JsonlReader(str(tmp_path), strict=True))


def test_reader_refuses_to_lose_a_line_it_counted(tmp_path: Path):
    """The per-file count check fires when a line is counted but neither emitted nor quarantined."""

    class Leaky(JsonlReadStage):
        def read_file(self, path, rel, builder: BatchBuilder, quarantine_list) -> int:
            n = super().read_file(path, rel, builder, quarantine_list)
            builder.ids.pop(), builder.texts.pop(), builder.files.pop(), builder.lines.pop()
            return n

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    stages = JsonlReader(str(tmp_path)).decompose()
    tasks = stages[0].run([EmptyTask()])
    with pytest.raises(ReaderAccountingError, match="a.jsonl: read 2 record"):
        Leaky().run(tasks)
    assert sum(t.num_items for t in stages[1].run(tasks)) == 2


def test_lone_surrogate_is_quarantined_with_file_and_line(tmp_path: Path):
    """Before: Arrow refused the whole file group over one valid-JSON record."""
    lines = [
        json.dumps({"text": "first good line", "meta": {"k": "v"}}),
        '{"text": "abc \\ud800 def"}',
        '{"text": "a pair is fine \\ud83d\\ude00", "meta": "x"}',
        '{"text": "good text, bad field", "meta": {"k": "\\udfff"}}',
        '{"text": "escaped backslash is no surrogate \\\\ud800"}',
        json.dumps({"text": "last good line"}),
    ]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    batches = run_reader(JsonlReader(str(tmp_path), fields=["meta"]))
    assert [line for line, _ in docs(batches)] == [1, 3, 5, 6]
    assert docs(batches)[1][1] == "a pair is fine \U0001F600"
    got = [(Path(r["file"]).name, r["line"], r["reason"]) for r in quarantine(batches)]
    assert got == [("s.jsonl", 2, "text field 'text' is not valid Unicode (lone surrogate)"),
                   ("s.jsonl", 4, "field 'meta' is not valid Unicode (lone surrogate)")]
    _check_accounting(batches)
    with pytest.raises(MalformedRecordError, match=r"s\.jsonl line 2: .*lone surrogate"):
        run_reader(JsonlReader(str(tmp_path), strict=True))


def test_lone_surrogate_in_a_user_id_is_quarantined(tmp_path: Path):
    (tmp_path / "s.jsonl").write_text('{"id": "a\\udc00", "text": "x"}\n{"id": "b", "text": "y"}\n')
    batches = run_reader(JsonlReader(str(tmp_path), id_field="id"))
    assert [r["id"] for b in batches for r in b.to_pyarrow().to_pylist()] == ["b"]
    assert [r["reason"] for r in quarantine(batches)] == [
        "id field 'id' is not valid Unicode (lone surrogate)"]


def test_invalid_utf8_in_parquet_strings_is_quarantined_per_row(tmp_path: Path):
    raw = pa.array([b"good one", b"bad \xed\xa0\x80 surrogate", b"good two"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), 3, raw.buffers())  # as a lax writer leaves it
    pq.write_table(pa.table({"text": text, "n": [1, 2, 3]}), tmp_path / "a.parquet")
    batches = run_reader(ParquetReader(str(tmp_path), fields=["n"]))
    assert [t for _, t in docs(batches)] == ["good one", "good two"]
    assert [(r["line"], r["reason"]) for r in quarantine(batches)] == [
        (2, "text field 'text' is not valid UTF-8")]
    batches[0].to_pyarrow().column("text").to_pylist()  # later stages can read every row
    _check_accounting(batches)


def test_a_stream_that_cannot_seek_back_says_what_it_could_not_recover():
    """Salvage re-reads the damaged member from its start; where the stream cannot seek, the
    error says that lines before the damage may be missing instead of hiding it."""
    import io

    from curator_stages.io.compression import CorruptCompressedStreamError, open_decompressed

    class OneWay(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b) -> int:
            return self._inner.readinto(b)

    import random

    rng = random.Random(0)
    payload = b"".join(json.dumps({"text": " ".join(f"w{rng.randrange(10**6)}" for _ in range(30))})
                       .encode() + b"\n" for _ in range(5000))
    blob = bytearray(zstandard.ZstdCompressor().compress(payload))
    assert len(blob) > 4 * 65536  # the damage lies chunks after the frame's start
    for i in range(len(blob) // 2, len(blob) // 2 + 16):
        blob[i] ^= 0xFF
    stream = open_decompressed(OneWay(bytes(blob)), "zstd")
    with pytest.raises(CorruptCompressedStreamError, match="cannot seek back"):
        for _ in stream:
            pass
