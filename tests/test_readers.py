"""Readers and file partitioning on real files: formats, quarantine, accounting, errors."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curator_stages.io import (
    FilePartitioningStage,
    JsonlReader,
    JsonlReadStage,
    MalformedRecordError,
    NoInputFilesError,
    ParquetReader,
    ParquetSchemaError,
    read_quarantine,
)
from curator_stages.pipeline import Pipeline
from curator_stages.tasks import DOCUMENTS_QUARANTINED, DOCUMENTS_READ, DocumentBatch, EmptyTask

DOCS = [{"text": f"document number {i} with some words", "meta": i} for i in range(7)]


def _lines(docs=DOCS) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


def run_reader(reader) -> list[DocumentBatch]:
    tasks = [EmptyTask()]
    for stage in Pipeline("t", [reader]).execution_stages():
        tasks = stage.run(tasks)
    return tasks


def metric(batches, key) -> int:
    return int(sum(b._stage_perf[-1].custom_metrics.get(key, 0) for b in batches))


def rows(batches) -> list[dict]:
    return [r for b in batches for r in b.to_pyarrow().to_pylist()]


@pytest.mark.parametrize("name,encode", [
    ("a.jsonl", lambda b: b),
    ("a.jsonl.gz", lambda b: gzip.compress(b)),
    ("a.jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_jsonl_plain_gzip_zstd_read_every_document(tmp_path: Path, name, encode):
    (tmp_path / name).write_bytes(encode(_lines()))
    batches = run_reader(JsonlReader(str(tmp_path), fields=["meta"]))
    got = rows(batches)
    assert [r["text"] for r in got] == [d["text"] for d in DOCS]
    assert [r["meta"] for r in got] == list(range(7))
    assert [r["source_line"] for r in got] == list(range(1, 8))
    assert [r["id"] for r in got] == [f"{name}:{i}" for i in range(1, 8)]
    assert batches[0].columns == ["id", "text", "source_file", "source_line", "meta"]
    assert metric(batches, DOCUMENTS_READ) == 7 and metric(batches, DOCUMENTS_QUARANTINED) == 0


def test_explicit_compression_overrides_extension(tmp_path: Path):
    (tmp_path / "data.jsonl").write_bytes(gzip.compress(_lines()))
    batches = run_reader(JsonlReader(str(tmp_path / "data.jsonl"), compression="gzip"))
    assert len(rows(batches)) == 7


MALFORMED = [
    (b'{"text": "broken', "invalid JSON"),
    (b'{"text": "caf\xe9 \xff"}', "invalid UTF-8"),
    (b'[1, 2, 3]', "not a JSON object"),
    (b'{"body": "no text key"}', "missing text field 'text'"),
    (b'{"text": 42}', "text field 'text' is not a string"),
    (b'{"text": null}', "text field 'text' is not a string"),
]


def test_each_malformed_line_is_quarantined_with_file_line_reason(tmp_path: Path):
    good = [json.dumps({"text": f"ok {i}"}).encode() for i in range(3)]
    lines = [good[0], *[m for m, _ in MALFORMED], b"", b"   ", good[1], good[2]]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    batches = run_reader(JsonlReader(str(tmp_path)))
    records = batches[0].metadata["quarantine"]
    assert [r["line"] for r in records] == list(range(2, 2 + len(MALFORMED)))
    for record, (raw, reason) in zip(records, MALFORMED):
        assert record["file"] == str(path)
        assert record["reason"].startswith(reason), record
        assert record["raw"].encode("utf-8", "backslashreplace") or raw
    assert [r["text"] for r in rows(batches)] == ["ok 0", "ok 1", "ok 2"]
    assert [r["source_line"] for r in rows(batches)] == [1, 10, 11]  # blank lines keep numbering
    # accounting: every non-blank line is read; read = valid + quarantined
    assert metric(batches, DOCUMENTS_READ) == 3 + len(MALFORMED)
    assert metric(batches, DOCUMENTS_QUARANTINED) == len(MALFORMED)


def test_quarantine_dir_gets_an_atomic_deterministic_file(tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.jsonl").write_bytes(b'{"text": "fine"}\nnot json\n' + b"x" * 10_000 + b"\n")
    qdir = tmp_path / "quarantine"
    first = run_reader(JsonlReader(str(src), quarantine_dir=str(qdir)))
    files = sorted(p.name for p in qdir.iterdir())
    assert len(files) == 1 and files[0].startswith("quarantine-") and files[0].endswith(".jsonl")
    assert "quarantine" not in first[0].metadata
    assert first[0].metadata["quarantine_files"] == [str(qdir / files[0])]
    records = read_quarantine(str(qdir / files[0]))
    assert [(r["line"], r["reason"].split(":")[0]) for r in records] == [
        (2, "invalid JSON"), (3, "invalid JSON")]
    assert records[1]["raw_size"] == 10_000 and len(records[1]["raw"]) == 4096  # capped
    run_reader(JsonlReader(str(src), quarantine_dir=str(qdir)))
    assert sorted(p.name for p in qdir.iterdir()) == files  # same name on a re-run, no temp left


def test_strict_mode_raises_naming_file_and_line(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}\n{oops\n')
    with pytest.raises(MalformedRecordError) as err:
        run_reader(JsonlReader(str(tmp_path), strict=True))
    assert str(path) in str(err.value) and "line 3" in str(err.value)
    assert "jsonl_read" in str(err.value)


def test_truncated_gzip_salvages_lines_before_damage_into_quarantine(tmp_path: Path):
    """A cut member never reached its CRC: its lines are salvaged into quarantine, unverified
    (zlib decodes damaged data into plausible lines), and the cut is one record more."""
    docs = [{"text": f"line {i} " + "word " * 20} for i in range(5000)]
    blob = gzip.compress(_lines(docs))
    (tmp_path / "t.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    batches = run_reader(JsonlReader(str(tmp_path)))
    assert rows(batches) == []
    records = batches[0].metadata["quarantine"]
    salvaged = [r for r in records if r["reason"].startswith("unverified:")]
    assert 0 < len(salvaged) < 5000
    assert [json.loads(r["raw"])["text"] for r in salvaged] == [
        d["text"] for d in docs[: len(salvaged)]]
    assert records[-1]["reason"].startswith("truncated/corrupt compressed stream")
    assert records[-1]["line"] == len(salvaged) + 1 and len(records) == len(salvaged) + 1
    assert metric(batches, DOCUMENTS_READ) == len(salvaged) + 1
    assert metric(batches, DOCUMENTS_QUARANTINED) == len(salvaged) + 1


def test_truncated_zstd_is_reported_not_silently_short(tmp_path: Path):
    docs = [{"text": f"line {i} " + "word " * 20} for i in range(5000)]
    blob = zstandard.ZstdCompressor().compress(_lines(docs))
    (tmp_path / "t.jsonl.zst").write_bytes(blob[: len(blob) // 2])
    batches = run_reader(JsonlReader(str(tmp_path)))
    reasons = [r["reason"] for r in batches[0].metadata["quarantine"]]
    assert reasons[-1].startswith("truncated/corrupt compressed stream")
    assert len(reasons) > 1 and all(r.startswith("unverified:") for r in reasons[:-1])


def test_truncated_gzip_in_strict_mode_raises(tmp_path: Path):
    blob = gzip.compress(_lines([{"text": "w " * 50}] * 2000))
    (tmp_path / "t.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MalformedRecordError, match="truncated/corrupt compressed stream"):
        run_reader(JsonlReader(str(tmp_path), strict=True))


def test_empty_file_gives_empty_batch_with_schema(tmp_path: Path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    batches = run_reader(JsonlReader(str(tmp_path)))
    assert len(batches) == 1 and batches[0].num_items == 0
    assert batches[0].columns == ["id", "text", "source_file", "source_line"]
    assert metric(batches, DOCUMENTS_READ) == 0


def test_fifty_megabyte_single_line_document(tmp_path: Path):
    big = "x" * (50 * 1024 * 1024)
    with open(tmp_path / "big.jsonl", "w") as f:
        f.write(json.dumps({"text": big}))
        f.write("\n" + json.dumps({"text": "small"}) + "\n")
    reader = JsonlReader(str(tmp_path), max_document_bytes=64 << 20)  # above the default
    texts = [r["text"] for r in rows(run_reader(reader))]  # may be 2 ranges
    assert len(texts[0]) == len(big) and texts[1] == "small"


def test_id_field_used_and_missing_id_quarantined(tmp_path: Path):
    (tmp_path / "ids.jsonl").write_text(
        '{"id": "abc", "text": "one"}\n{"id": 7, "text": "two"}\n{"text": "three"}\n')
    batches = run_reader(JsonlReader(str(tmp_path), id_field="id"))
    assert [r["id"] for r in rows(batches)] == ["abc", "7"]
    assert batches[0].metadata["quarantine"][0]["line"] == 3


def test_custom_text_field(tmp_path: Path):
    (tmp_path / "c.jsonl").write_text('{"content": "hello"}\n')
    assert rows(run_reader(JsonlReader(str(tmp_path), text_field="content")))[0]["text"] == "hello"


def test_glob_matching_nothing_fails_at_once_naming_the_pattern(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    pattern = str(tmp_path / "*.jsonl")
    with pytest.raises(NoInputFilesError) as err:
        run_reader(JsonlReader(pattern))
    assert pattern in str(err.value) and "file_partitioning" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_missing_path_and_empty_directory_fail_naming_the_path(tmp_path: Path):
    missing = str(tmp_path / "nope")
    with pytest.raises(NoInputFilesError, match="does not exist") as err:
        run_reader(JsonlReader(missing))
    assert missing in str(err.value)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(NoInputFilesError, match="holds no input files"):
        run_reader(JsonlReader(str(tmp_path / "emptydir")))


def test_partitioning_groups_sorts_filters_and_skips_hidden(tmp_path: Path):
    for i in (3, 1, 2, 0, 4):
        (tmp_path / f"f{i}.jsonl").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.jsonl.gz").write_bytes(b"x" * 100)
    (tmp_path / "notes.txt").write_text("skip me")
    (tmp_path / "_ground_truth.jsonl").write_text("skip me")
    (tmp_path / "_tmp.part.jsonl.abc").write_text("skip me")
    stage = FilePartitioningStage(str(tmp_path), file_extensions=[".jsonl", ".jsonl.gz"],
                                  files_per_group=2)
    assert stage.ray_stage_spec()["is_fanout_stage"] is True
    groups = stage.run([EmptyTask()])
    names = [[Path(p).name for p in g.data] for g in groups]
    assert names == [["f0.jsonl", "f1.jsonl"], ["f2.jsonl", "f3.jsonl"], ["f4.jsonl", "g.jsonl.gz"]]
    assert all(g.reader_options["input_root"] == str(tmp_path) for g in groups)
    assert [g.task_id for g in groups] == [g.task_id for g in stage.run([EmptyTask()])]
    by_bytes = FilePartitioningStage(str(tmp_path), file_extensions=[".jsonl"],
                                     bytes_per_group=250).run([EmptyTask()])
    assert [len(g.data) for g in by_bytes] == [2, 2, 1]


def test_ids_are_relative_to_the_input_root_across_subdirectories(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jsonl").write_bytes(_lines(DOCS[:1]))
    assert rows(run_reader(JsonlReader(str(tmp_path))))[0]["id"] == "a/b/x.jsonl:1"
    assert rows(run_reader(JsonlReader(str(tmp_path / "a" / "**" / "*.jsonl"))))[0]["id"] == "b/x.jsonl:1"


def test_memory_filesystem_paths():
    root = f"memory://curator-tests-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    with fs.open(f"{root}/in/a.jsonl", "wb") as f:
        f.write(_lines())
    with fs.open(f"{root}/in/b.jsonl.gz", "wb") as f:
        f.write(gzip.compress(_lines(DOCS[:2]) + b"bad\n"))
    batches = run_reader(JsonlReader(f"{root}/in", quarantine_dir=f"{root}/q"))
    got = rows(batches)
    assert len(got) == 9
    assert got[0]["id"] == "a.jsonl:1" and got[0]["source_file"].startswith("memory://")
    q = fs.glob(f"{root}/q/*.jsonl")
    assert len(q) == 1 and read_quarantine("memory://" + q[0])[0]["line"] == 3
    with pytest.raises(NoInputFilesError):
        run_reader(JsonlReader(f"{root}/does-not-exist"))


def test_parquet_reader_columns_row_groups_and_null_text(tmp_path: Path):
    table = pa.table({"text": [f"t{i}" if i != 3 else None for i in range(10)],
                      "lang": ["en"] * 10, "unused": list(range(10))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    batches = run_reader(ParquetReader(str(tmp_path), fields=["lang"]))
    got = rows(batches)
    assert [r["text"] for r in got] == [f"t{i}" for i in range(10) if i != 3]
    assert got[0]["id"] == "a.parquet:1" and got[3]["source_line"] == 5
    assert batches[0].columns == ["id", "text", "source_file", "source_line", "lang"]
    assert batches[0].metadata["quarantine"][0]["line"] == 4
    assert metric(batches, DOCUMENTS_READ) == 10 and metric(batches, DOCUMENTS_QUARANTINED) == 1
    second = rows(run_reader(ParquetReader(str(tmp_path), row_groups=[1])))
    assert [r["source_line"] for r in second] == [5, 6, 7, 8]


def test_parquet_reader_wrong_text_column_is_a_clear_error(tmp_path: Path):
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), tmp_path / "a.parquet")
    with pytest.raises(ParquetSchemaError, match="'text'.*text_field"):
        run_reader(ParquetReader(str(tmp_path)))
    with pytest.raises(ParquetSchemaError, match="not string"):
        run_reader(ParquetReader(str(tmp_path), text_field="n"))


def test_corrupt_parquet_file_is_quarantined(tmp_path: Path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    batches = run_reader(ParquetReader(str(tmp_path)))
    assert batches[0].num_items == 0
    assert batches[0].metadata["quarantine"][0]["reason"].startswith("not a readable Parquet")


def test_sample_data_accounting(repo_root: Path):
    manifest = json.loads((repo_root / "data" / "sample" / "_manifest.json").read_text())
    batches = run_reader(JsonlReader(str(repo_root / "data" / "sample")))
    assert sum(b.num_items for b in batches) == manifest["documents"]
    assert metric(batches, DOCUMENTS_QUARANTINED) == len(manifest["malformed_lines"])
    assert metric(batches, DOCUMENTS_READ) == manifest["documents"] + len(manifest["malformed_lines"])
    quarantined = {(Path(r["file"]).name, r["line"]) for b in batches
                   for r in b.metadata.get("quarantine", [])}
    assert quarantined == {(m["file"], m["line"]) for m in manifest["malformed_lines"]}


def test_reader_read_stage_is_a_plain_task_stage():
    stage = JsonlReadStage()
    assert stage.ray_stage_spec() == {} and stage.stage_name == "jsonl_read"
    assert stage.identity_hash() == JsonlReadStage().identity_hash()
    assert stage.identity_hash() != JsonlReadStage(text_field="content").identity_hash()


def test_reader_runs_through_ray_data(ray_cluster, tmp_path: Path):
    for i in range(3):
        (tmp_path / f"s{i}.jsonl").write_bytes(_lines())
    import numpy as np
    import ray

    stages = JsonlReader(str(tmp_path)).decompose()
    ds = ray.data.from_items([{"item": EmptyTask()}])

    def apply(stage):
        def fn(batch):
            out = stage.run(list(batch["item"]))
            arr = np.empty(len(out), dtype=object)
            arr[:] = out
            return {"item": arr}
        return fn

    for stage in stages:
        ds = ds.map_batches(apply(stage), batch_size=1)
    out = [row["item"] for row in ds.take_all()]
    assert sorted(b.task_id for b in out) == [f"empty-files-{i:06d}" for i in range(3)]
    assert sum(b.num_items for b in out) == 21
