"""HTML -> text on real pages (data/web_sample): equal to the library's own output page by
page, pathological pages quarantined with their URL, empty extractions dropped as no_text,
bounded memory on a 10 MB page, and parameters refused before work."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from curator_stages.io.warc_reader import WarcReadStage
from curator_stages.tasks import DocumentBatch, FileGroupTask
from curator_stages.text.html_extract import DEFAULT_OPTIONS, HtmlExtractor

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "web_sample"
MANIFEST = json.loads((SAMPLE / "_manifest.json").read_text())
BOMB_URL = next(r["url"] for f in MANIFEST["files"].values() for r in f["records"]
                if r.get("bomb_depth"))


def pages(name: str, every: int = 1) -> DocumentBatch:
    """The HTML documents of one sample file as the reader gives them (every n-th page)."""
    out = WarcReadStage().run([FileGroupTask(task_id=name, dataset_name="web",
                                             data=[str(SAMPLE / name)])])[0]
    table = out.to_pyarrow()
    return out.derive(table.take(list(range(0, table.num_rows, every))))


@pytest.fixture(scope="module")
def german_and_french():
    batch = pages("web-00001.warc.gz")
    table = batch.to_pyarrow()
    keep = [i for i, u in enumerate(table.column("url").to_pylist()) if u != BOMB_URL]
    return batch.derive(table.take(keep))


def extract_records(task: DocumentBatch) -> list[dict]:
    """The quarantine records of the extraction (the reader's ride on the same task)."""
    return [q for q in task.metadata.get("quarantine", []) if q["stage"] == "html_extract"]


def run(stage: HtmlExtractor, batch: DocumentBatch) -> DocumentBatch:
    try:
        return stage.run([batch])[0]
    finally:
        stage.teardown()


def test_trafilatura_output_equals_trafilatura_extract_page_by_page(german_and_french):
    import trafilatura

    batch = german_and_french.derive(pa.concat_tables([
        german_and_french.to_pyarrow(), pages("web-00000.warc.gz", every=24).to_pyarrow()]))
    out = run(HtmlExtractor(keep_html=True), batch).to_pyarrow()
    want = {}
    for row in batch.to_pyarrow().to_pylist():
        text = trafilatura.extract(row["html"], **DEFAULT_OPTIONS["trafilatura"])
        if text and text.strip():
            want[row["id"]] = text
    got = dict(zip(out.column("id").to_pylist(), out.column("text").to_pylist()))
    assert len(got) >= 12
    assert got == want
    assert "html" in out.column_names


def test_resiliparse_output_equals_extract_plain_text(german_and_french):
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    out = run(HtmlExtractor(extractor="resiliparse"), german_and_french)
    want = {}
    for row in german_and_french.to_pyarrow().to_pylist():
        text = extract_plain_text(HTMLTree.parse(row["html"]), **DEFAULT_OPTIONS["resiliparse"])
        if text.strip():
            want[row["id"]] = text
    table = out.to_pyarrow()
    assert dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist())) == want
    assert "html" not in table.column_names


def test_a_page_over_the_time_limit_is_quarantined_and_the_rest_go_on(german_and_french):
    """The first page runs with a limit no extraction meets; the child is killed, restarted,
    and the next pages (limit raised again) come out as always."""
    stage = HtmlExtractor(extractor="resiliparse", timeout_s=1e-6)
    table = german_and_french.to_pyarrow()
    first = run(stage, german_and_french.derive(table.slice(0, 1)))
    records = extract_records(first)
    assert first.num_items == 0 and len(records) == 1
    assert records[0]["url"] == table.column("url")[0].as_py()
    assert records[0]["offset"] == table.column("source_offset")[0].as_py()
    assert "timed out" in records[0]["reason"] and "timeout_s" in records[0]["reason"]
    assert first.stage_history[-1].custom_metrics["documents_quarantined"] == 1
    stage.timeout_s = 30.0
    rest = run(stage, german_and_french.derive(table.slice(1, 3)))
    assert rest.num_items == 3 and not extract_records(rest)


def test_the_html_bomb_never_stalls_a_worker():
    """100,000 nested divs: trafilatura's parser gives up (no text: dropped); resiliparse
    works on it until the time limit and the page is quarantined with its URL."""
    batch = pages("web-00001.warc.gz")
    table = batch.to_pyarrow()
    at = table.column("url").to_pylist().index(BOMB_URL)
    bomb = batch.derive(table.slice(at, 1))
    traf = run(HtmlExtractor(timeout_s=60), bomb)
    assert traf.num_items == 0
    assert traf.stage_history[-1].custom_metrics == {"dropped.no_text": 1}
    resi = run(HtmlExtractor(extractor="resiliparse", timeout_s=2), bomb)
    assert resi.num_items == 0
    (record,) = extract_records(resi)
    assert record["url"] == BOMB_URL and "timed out after 2 s" in record["reason"]


def test_pages_without_text_are_dropped_as_no_text():
    """Index pages (the Python docs' genindex-*.html: link lists only) next to pages of prose."""
    import trafilatura

    batch = pages("web-00000.warc.gz")
    table = batch.to_pyarrow()
    urls = table.column("url").to_pylist()
    index = [i for i, u in enumerate(urls) if u.endswith(("genindex-J.html", "genindex-Y.html",
                                                          "genindex-A.html"))]
    prose = [i for i, u in enumerate(urls) if u.endswith(("tutorial/index.html",
                                                          "faq/general.html"))]
    batch = batch.derive(table.take(index + prose))
    out = run(HtmlExtractor(), batch)
    empty = sum(1 for h in batch.to_pyarrow().column("html").to_pylist()
                if not (trafilatura.extract(h, **DEFAULT_OPTIONS["trafilatura"]) or "").strip())
    assert empty > 0
    assert out.stage_history[-1].custom_metrics == {"dropped.no_text": empty}
    assert out.num_items == batch.num_items - empty


@pytest.mark.slow
def test_memory_stays_bounded_on_a_10_mb_page():
    """Ten megabytes of real pages in one document: the page is extracted (or quarantined at
    the memory limit) inside the child; the stage's own process does not grow with it."""
    batch = pages("web-00000.warc.gz")
    htmls = batch.to_pyarrow().column("html").to_pylist()
    bodies, size = [], 0
    while size < 10 << 20:
        for h in htmls:
            body = h[h.find("<body"):h.rfind("</body>")]
            bodies.append(body)
            size += len(body)
    big = "<html><head><title>big</title></head><body>" + "".join(bodies) + "</body></html>"
    assert len(big) >= 10 << 20
    table = pa.table({"id": ["big"], "url": ["https://example.invalid/big"],
                      "html": [big]})
    stage = HtmlExtractor(timeout_s=600, memory_limit_mb=1536)
    stage.setup()
    me = psutil.Process()
    before = me.memory_info().rss
    child = psutil.Process(stage._process._proc.pid)
    out = stage.run([DocumentBatch(task_id="big", dataset_name="web", data=table)])[0]
    grew = me.memory_info().rss - before
    alive = child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    stage.teardown()
    assert out.num_items == 1 or "out of memory" in extract_records(out)[0]["reason"]
    assert grew < 200 << 20, f"the stage's process grew by {grew >> 20} MB"
    assert alive  # the child that did the work is the one that started: no crash, no restart


@pytest.mark.parametrize("kwargs, field", [
    ({"extractor": "justext"}, "extractor"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"memory_limit_mb": 10}, "memory_limit_mb"),
    ({"options": {"favour_precision": True}}, "options"),
])
def test_bad_parameters_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        HtmlExtractor(**kwargs)


def test_an_extractor_process_that_died_between_pages_is_restarted(german_and_french):
    """A child gone before a page arrives (killed, or its parent thread ended) is not the
    page's fault: the stage starts a new one and the page is extracted."""
    stage = HtmlExtractor(extractor="resiliparse")
    stage.setup()
    first = stage._process._proc
    first.kill()
    first.wait()
    out = run(stage, german_and_french.derive(german_and_french.to_pyarrow().slice(0, 2)))
    assert out.num_items == 2 and not extract_records(out)
