"""Inputs that stalled a run, exhausted its memory or poisoned its work dir (issue 20, 10-14),
and parameters that were accepted and failed later (issue 20, 19).

Each test calls the reader, the listing or the parameter model directly: no Ray, no flow.
"""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from pydantic import ValidationError

from curator_stages.io import JsonlReader
from curator_stages.tasks import DOCUMENTS_QUARANTINED, DOCUMENTS_READ
from flows.text_curation import TextCurationParams
from tests.test_reader_damage import docs, metric, quarantine, run_reader

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
MiB = 1 << 20


def accounted(batches) -> bool:
    return metric(batches, DOCUMENTS_READ) == (sum(b.num_items for b in batches)
                                               + metric(batches, DOCUMENTS_QUARANTINED))


# ----------------------------------------------------------------------------- 10 and 12
@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.gz"])
def test_a_line_over_the_document_limit_is_quarantined_without_being_held(tmp_path, name):
    """Before: a /dev/zero link grew a worker to 3.5 GB, a 200 MB line took a run to 5 GB: the
    reader held each line whole, whatever its size. Now a line over max_document_bytes is
    quarantined (file, line, size, first bytes) and skipped in bounded pieces."""
    huge = 40 * MiB
    lines = [json.dumps({"text": "before it"}).encode(),
             json.dumps({"text": "x" * huge}).encode(),
             json.dumps({"text": "after it"}).encode()]
    blob = b"\n".join(lines) + b"\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(gzip.compress(blob, 1) if name.endswith(".gz") else blob)
    reader = JsonlReader(str(tmp_path / "in"), max_document_bytes=MiB, split_plain_files=False)
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "w.jsonl").write_bytes(lines[0] + b"\n")
    run_reader(JsonlReader(str(warm), max_document_bytes=MiB))  # imports outside the count
    tracemalloc.start()
    try:
        batches = run_reader(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert docs(batches) == [(1, "before it"), (3, "after it")]
    [record] = quarantine(batches)
    assert record["line"] == 2 and record["file"].endswith(name)
    assert "max_document_bytes" in record["reason"] and record["raw_size"] == len(lines[1])
    assert len(record["raw"]) <= 4096
    assert peak < 8 * MiB, f"the reader held {peak / MiB:.0f} MiB for a {huge / MiB:.0f} MiB line"
    assert accounted(batches)


def test_the_document_limit_counts_the_line_without_its_line_break(tmp_path):
    """A line of exactly max_document_bytes is read; one byte more is quarantined, also when
    the file is read as byte ranges."""
    exact = json.dumps({"text": "a" * 100}).encode()
    over = json.dumps({"text": "a" * 101}).encode()
    filler = [json.dumps({"text": f"filler {i}"}).encode() for i in range(2000)]
    (tmp_path / "edge.jsonl").write_bytes(b"\n".join([exact, *filler, over, *filler]) + b"\n")
    reader = JsonlReader(str(tmp_path), max_document_bytes=len(exact), min_tasks=4,
                         min_range_bytes=1024)
    batches = run_reader(reader)
    assert len(batches) > 1  # byte ranges
    [record] = quarantine(batches)
    assert record["line"] == 2002 and record["raw_size"] == len(over)
    assert len(docs(batches)) == 4001 and accounted(batches)


def test_max_document_bytes_is_a_flow_parameter_with_a_bound(tmp_path):
    base = dict(input=str(SAMPLE), output=str(tmp_path / "o"), work_dir=str(tmp_path / "w"))
    assert TextCurationParams(**base).max_document_bytes == 8 * MiB
    with pytest.raises(ValidationError, match="max_document_bytes"):
        TextCurationParams(**base, max_document_bytes=0)


# ----------------------------------------------------------------------------- 19
@pytest.mark.parametrize("field,value", [("timeout_seconds", float("inf")),
                                         ("timeout_seconds", float("nan")),
                                         ("text_field", "")])
def test_values_that_fail_later_are_refused_naming_the_field(tmp_path, field, value):
    """Before: --timeout-seconds inf and --text-field '' passed validation and failed after
    Ray started."""
    base = dict(input=str(SAMPLE), output=str(tmp_path / "o"), work_dir=str(tmp_path / "w"))
    with pytest.raises(ValidationError) as err:
        TextCurationParams(**base, **{field: value})
    assert [e["loc"][0] for e in err.value.errors()] == [field]
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "w")


# ----------------------------------------------------------------------------- 11
def _input_with(tmp_path: Path, make) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    (root / "good.jsonl").write_text(json.dumps({"text": "a good document"}) + "\n")
    make(root)
    return root


@pytest.mark.parametrize("kind", ["fifo", "dev_zero_link"])
def test_what_is_not_a_regular_file_is_refused_at_listing_naming_it(tmp_path, kind):
    """Before: a FIFO named *.jsonl hung the run (killed at 240 s) and a link to /dev/zero
    grew a worker to 3.5 GB. Both are refused when the input is listed, before any work."""
    from curator_stages.io.partition import FilePartitioningStage, NotRegularFileError

    def make(root: Path) -> None:
        if kind == "fifo":
            os.mkfifo(root / "pipe.jsonl")
        else:
            os.symlink("/dev/zero", root / "zero.jsonl")

    root = _input_with(tmp_path, make)
    name = "pipe.jsonl" if kind == "fifo" else "zero.jsonl"
    with pytest.raises(NotRegularFileError, match=name):
        FilePartitioningStage(str(root), file_extensions=[".jsonl"]).list_input()
    with pytest.raises(ValidationError, match=f"input.*{name}"):
        TextCurationParams(input=str(root), output=str(tmp_path / "o"),
                           work_dir=str(tmp_path / "w"))


def test_a_link_to_a_regular_file_is_read(tmp_path):
    def make(root: Path) -> None:
        (tmp_path / "elsewhere.jsonl").write_text(json.dumps({"text": "linked in"}) + "\n")
        os.symlink(tmp_path / "elsewhere.jsonl", root / "link.jsonl")

    root = _input_with(tmp_path, make)
    assert sorted(t for _, t in docs(run_reader(JsonlReader(str(root))))) == [
        "a good document", "linked in"]


# ----------------------------------------------------------------------------- 14
def test_a_file_name_that_is_not_utf8_is_quarantined_whole_and_the_rest_read(tmp_path):
    """Before: one such name failed the whole run with UnicodeEncodeError (in the input
    fingerprint, then the group key and the ids)."""
    from curator_stages.io.partition import FilePartitioningStage
    from curator_stages.orchestration.fingerprint import input_fingerprint

    def make(root: Path) -> None:
        bad = os.path.join(os.fsencode(root), b"bad-\xff\xfe.jsonl")
        with open(bad, "wb") as f:
            f.write(json.dumps({"text": "never read"}).encode() + b"\n")

    root = _input_with(tmp_path, make)
    listing = FilePartitioningStage(str(root)).list_input()
    assert [Path(f.path).name for f in listing.bad_names] == ["bad-\\xff\\xfe.jsonl"]
    assert len(input_fingerprint(listing)) == 64
    batches = run_reader(JsonlReader(str(root)))
    assert docs(batches) == [(1, "a good document")]
    [record] = quarantine(batches)
    assert record["file"] == str(root / "bad-\\xff\\xfe.jsonl") and record["line"] == 0
    assert "not valid UTF-8" in record["reason"] and accounted(batches)


def test_write_dropped_keeps_the_documents_dedup_removes(tmp_path):
    """Before: --write-dropped ("every dropped document") left out dedup's drops (54 on the
    sample). A dedup filter built with keep_dropped hands its removed rows to the writer's
    dropped output, with the dedup reason; quarantined rows are not among them."""
    import pyarrow as pa

    from curator_stages.tasks import DROP_REASON_COLUMN, DROPPED_DOCUMENTS_KEY, DocumentBatch
    from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet, row_keys
    from flows.text_curation import build_stage_groups

    table = pa.table({"id": ["a", "b", "c", "d"], "text": ["one", "one", "two", "three"]})
    keys = row_keys(table, "id", "t").to_pylist()
    batch = DocumentBatch(task_id="t", dataset_name="d", data=table,
                          _metadata={DROPPED_DOCUMENTS_KEY: [{"id": "z", "text": "earlier",
                                                              DROP_REASON_COLUMN: "rule"}]})
    stage = DuplicateIdFilter(IdSet([keys[1]]), "exact_duplicate", keep_dropped=True,
                              quarantine={keys[3]: "duplicate id"})
    out = stage.process(batch)
    assert out.to_pyarrow().column("id").to_pylist() == ["a", "c"]
    dropped = out.metadata[DROPPED_DOCUMENTS_KEY]
    assert [(r["id"], r[DROP_REASON_COLUMN]) for r in dropped] == [
        ("z", "rule"), ("b", "exact_duplicate")]
    quiet = DuplicateIdFilter(IdSet([keys[1]]), "exact_duplicate").process(batch)
    assert [r["id"] for r in quiet.metadata[DROPPED_DOCUMENTS_KEY]] == ["z"]

    params = TextCurationParams(input=str(SAMPLE), output=str(tmp_path / "o"),
                                work_dir=str(tmp_path / "w"), write_dropped=True)
    dedups = [s for g in build_stage_groups(params) for s in g if s.name.endswith("_dedup")]
    assert [s.name for s in dedups] == ["exact_dedup", "fuzzy_dedup"]
    assert all(s.keep_dropped for s in dedups)


# ----------------------------------------------------------------------------- 12 (checkpoint)
@pytest.mark.slow  # about 2 GB of memory for a 110 MB header: kept out of the quick tier
def test_a_checkpoint_part_with_a_large_header_reads_back(tmp_path):
    """Before: a task whose metadata held a 200 MB dropped document was checkpointed (467 MB)
    and could not be read back ("Exceeded size limit": Thrift's 100 MB default), so every
    re-run failed. A part the reader cannot read is never written."""
    import pyarrow as pa

    from curator_stages.checkpoints.task_files import read_task, write_task
    from curator_stages.tasks import DROPPED_DOCUMENTS_KEY, DocumentBatch

    dropped = [{"id": "big", "text": "x" * (110 * MiB), "drop_reason": "gopher_word_count"}]
    task = DocumentBatch(task_id="t", dataset_name="d",
                         data=pa.table({"id": ["a"], "text": ["kept"]}),
                         _metadata={DROPPED_DOCUMENTS_KEY: dropped})
    name = write_task(task, str(tmp_path / "part"))
    del task
    back = read_task(str(tmp_path / name))
    assert len(back.metadata[DROPPED_DOCUMENTS_KEY][0]["text"]) == 110 * MiB
    assert back.to_pyarrow().column("text").to_pylist() == ["kept"]


def test_local_files_are_read_through_their_buffer(tmp_path):
    """Guard: the reader reads local lines with the C ``readline`` of the buffered file under
    fsspec's wrapper (attribute ``f``); without it, reads stay correct but run slower."""
    import io

    import fsspec

    from curator_stages.io.jsonl_reader import _line_source

    (tmp_path / "a.jsonl").write_bytes(b"x\n")
    with fsspec.open(str(tmp_path / "a.jsonl"), "rb") as f:
        assert isinstance(f.f, io.BufferedReader) and _line_source(f) is f.f
