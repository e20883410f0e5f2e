"""Writers on real files: names, atomicity, modes, compression, side outputs, read-only output."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curator_stages.io import (
    DROPPED_DOCUMENTS_KEY,
    JsonlReader,
    JsonlWriter,
    OutputExistsError,
    OutputNotWritableError,
    ParquetWriter,
)
from curator_stages.tasks import DOCUMENTS_WRITTEN, DocumentBatch, FileGroupTask


def batch(n: int = 5, task_id: str = "ds-files-000000", **meta) -> DocumentBatch:
    table = pa.table({"id": [f"f.jsonl:{i}" for i in range(1, n + 1)],
                      "text": [f"text {i}" for i in range(n)],
                      "source_file": ["f.jsonl"] * n, "source_line": list(range(1, n + 1)),
                      "_score": [0.5] * n})
    return DocumentBatch(task_id=task_id, dataset_name="ds", data=table,
                         _metadata={"file_group_key": "abc", **meta})


def read_jsonl(path: str) -> list[dict]:
    with fsspec.open(path, "rb", compression="infer") as f:
        return [json.loads(line) for line in f]


def test_parquet_writer_deterministic_names_metrics_and_history(tmp_path: Path):
    b = batch()
    b._stage_perf.append(__import__("curator_stages").StagePerfStats("reader", 0.1, 1, 5))
    out1 = ParquetWriter(str(tmp_path / "a")).run([b])
    out2 = ParquetWriter(str(tmp_path / "b")).run([batch()])
    assert isinstance(out1[0], FileGroupTask)
    name = Path(out1[0].data[0]).name
    assert name.startswith("part-") and name.endswith(".parquet")
    assert Path(out2[0].data[0]).name == name  # same task -> same file name
    assert [s.stage_name for s in out1[0]._stage_perf] == ["reader", "parquet_writer"]
    assert out1[0]._stage_perf[-1].custom_metrics[DOCUMENTS_WRITTEN] == 5
    table = pq.read_table(out1[0].data[0])
    assert table.num_rows == 5
    assert pq.ParquetFile(out1[0].data[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    other = ParquetWriter(str(tmp_path / "a")).run([batch(task_id="ds-files-000001")])
    assert Path(other[0].data[0]).name != name
    assert sorted(os.listdir(tmp_path / "a")) == sorted([name, Path(other[0].data[0]).name])


@pytest.mark.parametrize("compression,suffix,opener", [
    (None, ".jsonl", lambda b: b),
    ("gzip", ".jsonl.gz", gzip.decompress),
    ("zstd", ".jsonl.zst", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
])
def test_jsonl_writer_compression_and_drop_columns(tmp_path: Path, compression, suffix, opener):
    out = JsonlWriter(str(tmp_path), compression=compression, drop_columns=["_score"]).run([batch()])
    path = out[0].data[0]
    assert path.endswith(suffix)
    rows = [json.loads(line) for line in opener(Path(path).read_bytes()).splitlines()]
    assert [r["text"] for r in rows] == [f"text {i}" for i in range(5)]
    assert "_score" not in rows[0]
    again = tmp_path / "again"
    JsonlWriter(str(again), compression=compression, drop_columns=["_score"]).run([batch()])
    assert (again / Path(path).name).read_bytes() == Path(path).read_bytes()  # byte-identical


def test_round_trip_jsonl_reader_writer(tmp_path: Path):
    JsonlWriter(str(tmp_path / "w"), compression="zstd").run([batch()])
    stages = JsonlReader(str(tmp_path / "w"), fields=["_score"]).decompose()
    tasks = [__import__("curator_stages").EmptyTask()]
    for s in stages:
        tasks = s.run(tasks)
    assert tasks[0].to_pyarrow().column("text").to_pylist() == [f"text {i}" for i in range(5)]
    assert tasks[0].to_pyarrow().column("_score").to_pylist() == [0.5] * 5


def test_modes_error_overwrite_ignore(tmp_path: Path):
    first = ParquetWriter(str(tmp_path)).run([batch(3)])
    target = first[0].data[0]
    with pytest.raises(OutputExistsError) as err:
        ParquetWriter(str(tmp_path)).run([batch(3)])
    assert target in str(err.value) and "overwrite" in str(err.value)
    ParquetWriter(str(tmp_path), mode="overwrite").run([batch(7)])
    assert pq.read_table(target).num_rows == 7
    ignored = ParquetWriter(str(tmp_path), mode="ignore").run([batch(2)])
    assert pq.read_table(target).num_rows == 7  # kept
    assert ignored[0].data == [target]
    assert ignored[0]._stage_perf[-1].custom_metrics["files_skipped_existing"] == 1
    with pytest.raises(ValueError, match="mode must be one of"):
        ParquetWriter(str(tmp_path), mode="append")


def test_empty_batch_writes_nothing_but_emits_stats(tmp_path: Path):
    out = JsonlWriter(str(tmp_path / "o")).run([batch(0)])
    assert out[0].data == []
    assert out[0]._stage_perf[-1].custom_metrics[DOCUMENTS_WRITTEN] == 0
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_no_temporary_files_left_and_failure_leaves_nothing(tmp_path: Path):
    JsonlWriter(str(tmp_path)).run([batch()])
    assert all(name.startswith("part-") for name in os.listdir(tmp_path))

    class Exploding(JsonlWriter):
        def encode(self, table, handle):
            handle.write(b'{"text": "half')
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        Exploding(str(tmp_path / "x")).run([batch()])
    assert os.listdir(tmp_path / "x") == []


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o555)
        return
    # root ignores permission bits: make the directory immutable instead.
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without a way to make a directory read-only")


def _undo_read_only(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


def test_read_only_output_directory_is_a_clear_error(tmp_path: Path):
    out = tmp_path / "ro"
    out.mkdir()
    _make_read_only(out)
    try:
        with pytest.raises(OutputNotWritableError) as err:
            ParquetWriter(str(out)).run([batch()])
        assert str(out) in str(err.value) and "parquet_writer" in str(err.value)
        assert isinstance(err.value, PermissionError)
        assert os.listdir(out) == []
    finally:
        _undo_read_only(out)


def test_dropped_documents_and_quarantine_side_outputs(tmp_path: Path):
    dropped = pa.table({"id": ["d1"], "text": ["junk"], "drop_reason": ["word_count"]})
    quarantine = [{"file": "f.jsonl", "line": 9, "reason": "invalid JSON", "raw": "{", "raw_size": 1,
                   "stage": "jsonl_read"}]
    b = batch(**{DROPPED_DOCUMENTS_KEY: dropped, "quarantine": quarantine})
    out = JsonlWriter(str(tmp_path / "kept"), dropped_output=str(tmp_path / "dropped"),
                      quarantine_output=str(tmp_path / "quarantine")).run([b])
    meta = out[0].metadata
    assert DROPPED_DOCUMENTS_KEY not in meta and "quarantine" not in meta
    assert read_jsonl(meta["dropped_files"][0]) == [{"id": "d1", "text": "junk", "drop_reason": "word_count"}]
    assert read_jsonl(meta["quarantine_files"][0])[0]["line"] == 9
    bad = batch(**{DROPPED_DOCUMENTS_KEY: pa.table({"id": ["x"]})})
    with pytest.raises(ValueError, match="drop_reason"):
        JsonlWriter(str(tmp_path / "k2"), dropped_output=str(tmp_path / "d2")).run([bad])


def test_writers_on_memory_filesystem():
    root = f"memory://writer-tests-{uuid.uuid4().hex[:8]}"
    out = ParquetWriter(root).run([batch()])
    path = out[0].data[0]
    assert path.startswith("memory://")
    fs = fsspec.filesystem("memory")
    listing = fs.find(root.replace("memory://", "/"))
    assert [p.rsplit("/", 1)[1] for p in listing] == [path.rsplit("/", 1)[1]]
    with fs.open(path.replace("memory://", ""), "rb") as f:
        assert pq.read_table(f).num_rows == 5
    with pytest.raises(OutputExistsError):
        ParquetWriter(root).run([batch()])
