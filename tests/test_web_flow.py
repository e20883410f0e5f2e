"""The web reference flow flows/web_curation.py: `python flows/web_curation.py` on the shipped
sample WARC files, as a user runs it (no Prefect server), and its parameter checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from flows.web_curation import WebCurationParams
from tests.prefect_homes import clean_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "web_sample"
MANIFEST = json.loads((SAMPLE / "_manifest.json").read_text())


def test_bad_parameters_are_refused_before_work(tmp_path):
    with pytest.raises(ValidationError, match="url_blocklist"):
        WebCurationParams(url_blocklist=str(tmp_path / "missing.txt"))
    with pytest.raises(ValidationError, match="extractor"):
        WebCurationParams(extractor="justext")
    with pytest.raises(ValidationError, match="extract_timeout_s"):
        WebCurationParams(extract_timeout_s=0)
    assert WebCurationParams.input_files(str(SAMPLE)) == sorted(
        str(SAMPLE / n) for n in MANIFEST["files"])


@pytest.mark.slow
def test_web_flow_runs_on_the_shipped_sample(tmp_path):
    import trafilatura

    from curator_stages.text.html_extract import DEFAULT_OPTIONS

    out, work = tmp_path / "out", tmp_path / "work"
    res = subprocess.run([sys.executable, str(REPO / "flows" / "web_curation.py"), "--output",
                          str(out), "--work-dir", str(work), "--fuzzy-num-perm", "32",
                          "--num-cpus", "2"], cwd=tmp_path, env=clean_env(tmp_path, migrated=True),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["identity"]["holds"], summary["identity"]
    kinds: dict = {}
    for f in MANIFEST["files"].values():
        for r in f["records"]:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    assert summary["documents_read"] == sum(kinds.values())
    assert summary["skipped_by_kind"] == {k: n for k, n in kinds.items()
                                          if k not in ("html", "damaged", "malformed")}
    assert summary["documents_quarantined"] == kinds["damaged"] + kinds["malformed"]
    assert summary["dropped_by_reason"]["no_text"] >= 1
    quarantine = [json.loads(line) for p in sorted((out / "quarantine").glob("*.jsonl"))
                  for line in p.read_text().splitlines()]
    offsets = {r["offset"] for f in MANIFEST["files"].values() for r in f["records"]
               if r["kind"] in ("damaged", "malformed")}
    assert {q["offset"] for q in quarantine} == offsets

    table = pa.concat_tables([pq.read_table(p) for p in sorted((out / "data").glob("*.parquet"))])
    assert table.num_rows == summary["documents_written"] > 10
    assert {"url", "language", "crawl_date", "warc_record_id"} <= set(table.column_names)
    assert "html" not in table.column_names
    assert len(set(table.column("text").to_pylist())) == table.num_rows
    # The text written is trafilatura's own extraction of the page the reader decoded.
    from curator_stages.io.warc_reader import WarcReadStage
    from curator_stages.tasks import FileGroupTask

    pages = {}
    for name in MANIFEST["files"]:
        batch = WarcReadStage().run([FileGroupTask(task_id=name, dataset_name="w",
                                                   data=[str(SAMPLE / name)])])[0]
        pages.update(zip(batch.to_pyarrow().column("id").to_pylist(),
                         batch.to_pyarrow().column("html").to_pylist()))
    for row in table.select(["id", "text"]).to_pylist()[:15]:
        if "<EMAIL_ADDRESS>" in row["text"] or "<IP_ADDRESS>" in row["text"]:
            continue  # redacted after extraction
        assert row["text"] == trafilatura.extract(pages[row["id"]],
                                                  **DEFAULT_OPTIONS["trafilatura"])
    # Tokens: of every extracted page (read), and a column summed by the writer (written).
    assert summary["tokens_read_stage"] == "tokens_extracted"
    assert summary["tokens_read"] > summary["tokens_written"] > 0
    assert sum(table.column("tokens").to_pylist()) == summary["tokens_written"]
    assert summary["pii_redacted"].get("email", 0) > 0  # the Python docs name people's addresses
    assert "<EMAIL_ADDRESS>" in "".join(table.column("text").to_pylist())
    report = (out / "report.md").read_text()
    assert "skipped" in report and f"{summary['tokens_written']:,}" in report
    assert (out / "funnel.png").exists()
