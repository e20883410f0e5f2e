"""The WARC reader on real pages (data/web_sample, built by scripts/make_web_sample.py from
Debian's documentation packages): documents, skipped records by kind, quarantine of damaged
members with file and byte offset, truncation flags, charset fallback, byte-range splits,
plain WARC files and S3."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import pytest

from curator_stages.io.charset import decode_html
from curator_stages.io.quarantine import MalformedRecordError
from curator_stages.io.warc_reader import WarcReader, WarcReadStage
from curator_stages.accounting import HistoryAggregator, summarise
from curator_stages.tasks import EmptyTask, FileGroupTask

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "web_sample"
MANIFEST = json.loads((SAMPLE / "_manifest.json").read_text())
NOT_DOCUMENTS = {"warcinfo", "request", "metadata", "non_html", "redirect", "http_error"}


def records(name: str) -> list[dict]:
    return MANIFEST["files"][name]["records"]


def read(paths, **kwargs):
    """Partition and read like a run does; the output tasks in order."""
    reader = WarcReader(paths, **kwargs)
    part, stage = reader.decompose()
    tasks = part.process(EmptyTask(task_id="t", dataset_name="web", data=None))
    return [stage.run([t])[0] for t in tasks]


def rows(tasks) -> list[dict]:
    return sorted((r for t in tasks for r in t.to_pyarrow().to_pylist()),
                  key=lambda r: (r["source_file"], r["source_offset"]))


def metrics(tasks) -> dict:
    total: dict = {}
    for t in tasks:
        for k, v in t.stage_history[-1].custom_metrics.items():
            total[k] = total.get(k, 0) + v
    return total


def quarantined(tasks) -> list[dict]:
    return sorted((q for t in tasks for q in t.metadata.get("quarantine", [])),
                  key=lambda q: (q["file"], q["offset"]))


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_every_record_is_a_document_a_skip_or_a_quarantine_record(name):
    tasks = read(str(SAMPLE / name))
    expected = records(name)
    docs = rows(tasks)
    m = metrics(tasks)
    assert m["documents_read"] == len(expected)
    assert [d["source_offset"] for d in docs] == [r["offset"] for r in expected
                                                  if r["kind"] == "html"]
    assert [d["url"] for d in docs] == [r["url"] for r in expected if r["kind"] == "html"]
    for kind in NOT_DOCUMENTS:
        assert m.get(f"skipped.{kind}", 0) == sum(r["kind"] == kind for r in expected), kind
    bad = [(q["offset"], q["reason"].split(":")[0]) for q in quarantined(tasks)]
    assert bad == [(r["offset"], {"damaged": "damaged gzip member",
                                  "malformed": "unreadable WARC record"}[r["kind"]])
                   for r in expected if r["kind"] in ("damaged", "malformed")]
    assert m["documents_read"] == len(docs) + m["documents_skipped"] + m.get(
        "documents_quarantined", 0)
    assert all(d["id"] == f"{name}:{d['source_offset']}" for d in docs)
    assert all(d["warc_record_id"].startswith("<urn:uuid:") and d["crawl_date"] for d in docs)


def test_records_after_a_damaged_member_are_read():
    name = "web-00001.warc.gz"
    damaged = next(r["offset"] for r in records(name) if r["kind"] == "damaged")
    q = quarantined(read(str(SAMPLE / name)))[0]
    assert q["file"].endswith(name) and q["offset"] == damaged and q["length"] > 0
    after = [d for d in rows(read(str(SAMPLE / name))) if d["source_offset"] > damaged]
    assert len(after) == sum(1 for r in records(name) if r["kind"] == "html"
                             and r["offset"] > damaged) > 3


def test_truncated_records_are_kept_and_flagged():
    name = "web-00000.warc.gz"
    docs = rows(read(str(SAMPLE / name)))
    flagged = {d["url"] for d in docs if d["truncated"]}
    assert flagged == {r["url"] for r in records(name) if r["kind"] == "html" and r["truncated"]}
    assert all(d["truncated"] == "length" for d in docs if d["truncated"])


def test_a_payload_over_max_record_bytes_is_cut_and_flagged():
    name = "web-00001.warc.gz"
    docs = rows(read(str(SAMPLE / name), max_record_bytes=4096))
    assert docs and all(len(d["html"]) <= 4096 for d in docs)  # <= 4096 bytes decoded
    assert all(d["truncated"] == "length" for d in docs)


def test_a_wrong_charset_header_falls_back_to_detection():
    name = "web-00001.warc.gz"
    wrong = next(r for r in records(name) if r.get("wrong_charset"))
    doc = next(d for d in rows(read(str(SAMPLE / name))) if d["url"] == wrong["url"])
    assert doc["charset_source"] == "detected"
    assert "Größe" in doc["html"] and "\ufffd" not in doc["html"]


def test_decoding_order_and_undecodable_bytes():
    page = "<html><head><meta charset='iso-8859-1'></head><body>Grüße</body></html>"
    latin = page.encode("iso-8859-1")
    assert decode_html(latin, "text/html; charset=utf-8")[1:] == ("iso8859-1", "meta")
    assert decode_html(page.encode("utf-8"), "text/html; charset=utf-8")[1:] == ("utf-8", "header")
    assert decode_html(b"\xef\xbb\xbf<p>x</p>", "text/html; charset=iso-8859-1")[2] == "bom"
    junk = bytes(range(256)) * 50
    text, _, source = decode_html(junk, "text/html; charset=no-such-charset")
    assert source in ("detected", "fallback") and isinstance(text, str)


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_byte_ranges_read_each_record_once(name):
    whole = read(str(SAMPLE / name), split_files=False)
    size = os.path.getsize(SAMPLE / name)
    parts = read(str(SAMPLE / name), min_tasks=9, min_range_bytes=size // 9)
    assert len(parts) >= 8
    assert rows(parts) == rows(whole)
    assert [(q["offset"], q["reason"]) for q in quarantined(parts)] == \
        [(q["offset"], q["reason"]) for q in quarantined(whole)]
    assert metrics(parts)["documents_read"] == metrics(whole)["documents_read"]


def test_a_range_that_starts_inside_the_damaged_member_reads_it_once(tmp_path):
    name = "web-00001.warc.gz"
    damaged = next(r for r in records(name) if r["kind"] == "damaged")
    size = os.path.getsize(SAMPLE / name)
    cut = damaged["offset"] + 100  # inside the damaged member
    stage = WarcReadStage()
    out = []
    for start, end in ((0, cut), (cut, size)):
        out += stage.run([FileGroupTask(task_id=f"r{start}", dataset_name="web",
                                        data=[str(SAMPLE / name)],
                                        _metadata={"byte_range": [start, end, 1]})])
    assert [q["offset"] for q in quarantined(out)] == [
        r["offset"] for r in records(name) if r["kind"] in ("damaged", "malformed")]
    assert len(rows(out)) == len(rows(read(str(SAMPLE / name))))


def test_plain_warc_reads_the_same_documents(tmp_path):
    name = "web-00000.warc.gz"
    plain = tmp_path / "web-00000.warc"
    plain.write_bytes(gzip.decompress((SAMPLE / name).read_bytes()))
    got = rows(read(str(plain)))
    want = rows(read(str(SAMPLE / name)))
    assert [(d["url"], d["html"]) for d in got] == [(d["url"], d["html"]) for d in want]


def test_strict_mode_names_the_file_and_byte():
    name = "web-00001.warc.gz"
    damaged = next(r["offset"] for r in records(name) if r["kind"] == "damaged")
    with pytest.raises(MalformedRecordError, match=rf"{name} byte {damaged}: damaged gzip"):
        read(str(SAMPLE / name), strict=True)


def test_run_summary_counts_skipped_records_by_kind():
    tasks = read(str(SAMPLE))
    summary = summarise(HistoryAggregator().add_tasks(tasks).stages,
                        final_documents=sum(t.num_items for t in tasks))
    assert summary.identity_holds, summary.identity_text()
    expected: dict = {}
    for f in MANIFEST["files"].values():
        for r in f["records"]:
            if r["kind"] in NOT_DOCUMENTS:
                expected[r["kind"]] = expected.get(r["kind"], 0) + 1
    assert summary.skipped_by_kind == expected
    assert summary.documents_skipped == sum(expected.values())
    assert "+ skipped" in summary.identity_text()
    summary.documents_skipped -= 1  # a skip that is not counted breaks the identity
    assert not summary.identity_holds


@pytest.mark.slow
def test_reads_warc_from_s3_in_byte_ranges(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    fs = s3_server.filesystem()
    prefix = f"warc-{uuid.uuid4().hex[:8]}"
    for name in MANIFEST["files"]:
        fs.put(str(SAMPLE / name), f"{s3_server.bucket}/{prefix}/{name}")
    remote = read(s3_server.url(prefix), min_tasks=6, min_range_bytes=64 << 10)
    local = read(str(SAMPLE), split_files=False)
    strip = [{k: v for k, v in d.items() if k != "source_file"} for d in rows(local)]
    assert [{k: v for k, v in d.items() if k != "source_file"} for d in rows(remote)] == strip
    assert len(quarantined(remote)) == len(quarantined(local)) == 2


@pytest.mark.parametrize("shift", [0, -5])
def test_a_member_with_a_damaged_header_at_a_range_boundary_is_quarantined_once(tmp_path, shift):
    """No range can start at a member whose gzip header is damaged (it does not look like a
    member start), so the range before it must read it: else it would vanish unaccounted."""
    name = "web-00000.warc.gz"
    data = bytearray((SAMPLE / name).read_bytes())
    victim = records(name)[100]
    data[victim["offset"]:victim["offset"] + 12] = b"\x00" * 12
    path = tmp_path / name
    path.write_bytes(bytes(data))
    cut = victim["offset"] + shift
    stage = WarcReadStage()
    out = []
    for start, end in ((0, cut), (cut, len(data))):
        out += stage.run([FileGroupTask(task_id=f"r{start}", dataset_name="web", data=[str(path)],
                                        _metadata={"byte_range": [start, end, 1]})])
    assert [q["offset"] for q in quarantined(out)] == [victim["offset"]]
    assert metrics(out)["documents_read"] == len(records(name))


def test_ranges_are_capped_by_max_range_bytes():
    """A task's pages are one batch in memory: ranges never exceed max_range_bytes, however
    few CPUs want tasks."""
    size = os.path.getsize(SAMPLE / "web-00000.warc.gz")
    reader = WarcReader(str(SAMPLE / "web-00000.warc.gz"), min_tasks=1, min_range_bytes=1024,
                        max_range_bytes=200_000)
    part, stage = reader.decompose()
    tasks = part.process(EmptyTask(task_id="t", dataset_name="web", data=None))
    spans = [t.metadata["byte_range"] for t in tasks]
    assert len(tasks) == -(-size // 200_000)
    assert all(end - start <= 200_000 for start, end, _ in spans)
    assert rows([stage.run([t])[0] for t in tasks]) == rows(read(str(SAMPLE / "web-00000.warc.gz"),
                                                                split_files=False))
    with pytest.raises(ValueError, match="max_range_bytes"):
        WarcReader(str(SAMPLE), min_range_bytes=4096, max_range_bytes=1024)
