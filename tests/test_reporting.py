"""Run reports: numbers equal the run summary, funnel.png is a PNG, examples and reasons shown.

The run is real: a JSONL corpus (one broken line) read, filtered and written through the Ray Data
executor on the session cluster; the summary is built by the orchestration layer's accounting.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from curator_stages import DocumentBatch, Pipeline, processing_stage
from curator_stages.backends.ray_data import RayDataExecutor
from curator_stages.io import JsonlReader, JsonlWriter
from curator_stages.accounting import HistoryAggregator, summarise
from curator_stages.reporting.run_summary import write_run_summary
from curator_stages.reporting import (
    FUNNEL_FILE,
    REPORT_FILE,
    build_report_data,
    load_run_summary,
    write_run_report,
)
from curator_stages.text.filters import HeuristicFilter
from curator_stages.text.filters.rules import WordCountRule

LONG = "the quick brown fox jumps over the lazy dog and keeps running far away"


@processing_stage(name="tag_language")
def tag_language(task: DocumentBatch) -> DocumentBatch:
    """A stand-in language column (documents mentioning 'le' are 'fr'), to test the mix table."""
    table = task.to_pyarrow()
    langs = ["fr" if " le " in f" {t} " else "en" for t in table["text"].to_pylist()]
    return task.derive(table.append_column("language", pa.array(langs, pa.string())))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("report_run")
    corpus = root / "corpus"
    corpus.mkdir()
    lines = []
    for i in range(12):
        lines.append(json.dumps({"text": f"{LONG} number {i}"}))
    for i in range(3):
        lines.append(json.dumps({"text": f"le chat {i} " + LONG}))
    for i in range(5):
        lines.append(json.dumps({"text": f"too short {i}"}))
    lines.insert(4, "{not json")
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "out"
    pipeline = Pipeline("report_test", [
        JsonlReader(str(corpus), quarantine_dir=str(out / "quarantine")),
        tag_language,
        HeuristicFilter([WordCountRule(min_words=8)], keep_dropped=True),
        JsonlWriter(str(out / "data"), dropped_output=str(out / "dropped")),
    ])
    tasks = RayDataExecutor().execute(pipeline)
    counts = HistoryAggregator().add_tasks(tasks).to_dict()
    summary = summarise(counts, output=str(out))
    summary.check()
    write_run_summary(summary, str(out))
    return out, summary.to_dict()


def test_report_numbers_equal_run_summary(finished_run):
    out, summary = finished_run
    data = build_report_data(summary, out)
    assert summary["documents_read"] == 21  # 20 valid lines + 1 quarantined
    assert data.documents_read == summary["documents_read"]
    assert data.documents_written == summary["documents_written"] == 15
    assert data.documents_dropped == summary["documents_dropped"] == 5
    assert data.documents_quarantined == summary["documents_quarantined"] == 1
    # drops by rule equal the summary's, rule by rule
    assert {rule: n for (_, rule), n in data.drops_by_rule.items()} == summary["dropped_by_reason"]
    # funnel: each stage's documents in/out equal its counts in the summary
    stages = {s["stage"]: s for s in summary["stages"]}
    funnel = {r.stage: r for r in data.funnel}
    assert list(funnel) == ["jsonl_read", "tag_language", "heuristic_filter", "jsonl_writer"]
    assert funnel["jsonl_read"].documents_in == stages["jsonl_read"]["metrics"]["documents_read"]
    assert funnel["jsonl_read"].documents_out == stages["jsonl_read"]["items_out"] == 20
    assert funnel["heuristic_filter"].documents_in == 20
    assert funnel["heuristic_filter"].documents_out == 15
    assert funnel["heuristic_filter"].removed == 5
    assert funnel["jsonl_writer"].documents_out == 15
    assert data.language_mix == {"en": 12, "fr": 3}
    assert data.quarantine_by_reason and sum(data.quarantine_by_reason.values()) == 1


def test_write_run_report_writes_markdown_and_png(finished_run):
    out, summary = finished_run
    path = write_run_report(out, summary)
    assert path == out / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    png = (out / FUNNEL_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "read = written + dropped + quarantined (21 = 15 + 5 + 1) holds" in text
    # stage table row of the filter, in documents: in 20, out 15, dropped 5, quarantined 0
    assert re.search(r"\| heuristic_filter \| - \| 20 \| 15 \| 5 \| 0 \| - \|", text)
    # the reader's and the writer's files in their own column, documents in the others
    assert re.search(r"\| jsonl_read \| - \| 21 \| 20 \| 0 \| 1 \| 1 read \|", text)
    assert re.search(r"\| jsonl_writer \| - \| 15 \| 15 \| 0 \| 0 \| 1 written \|", text)

    reason = next(iter(summary["dropped_by_reason"]))
    assert re.search(rf"\| heuristic_filter \| {re.escape(reason)} \| 5 \|", text)
    assert "| en | 12 |" in text and "| fr | 3 |" in text
    # truncated examples of dropped documents, under the rule's heading
    assert f"### {reason}" in text and "too short" in text
    assert "invalid JSON" in text or "JSON" in text  # quarantine reason shown


def test_report_rebuilt_from_summary_file_alone(finished_run):
    out, summary = finished_run
    assert load_run_summary(out).documents_read == summary["documents_read"]
    (out / REPORT_FILE).unlink(missing_ok=True)
    write_run_report(out)  # summary read from run_summary.json
    assert (out / REPORT_FILE).is_file()


def test_missing_summary_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run_summary.json"):
        load_run_summary(tmp_path)


def test_library_report_names_the_writer_argument_for_dropped_documents(finished_run,
                                                                        tmp_path: Path):
    """A report written without a flow's hint tells a library user about `dropped_output`."""
    import shutil

    out, summary = finished_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "dropped")
    text = write_run_report(copy, summary, publish_artifact=False).read_text(encoding="utf-8")
    assert "give the writer `dropped_output` to keep them" in text


def test_reporting_imports_no_private_name_of_plan():
    """Reporting is above the plan: it uses public names only (it used plan._artifact_key)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "curator_stages" / "reporting"
    private = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "curator_stages.plan"):
                private += [f"{path.name}: {a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert private == []


def test_duplicates_section_lists_semantic_dedup():
    """Before: duplicate_reasons() knew exact and fuzzy only, so a run's semantic drops were
    missing from report.md's "Duplicates" section (they showed only under drops by rule)."""
    import numpy as np

    from curator_stages.models import SEMANTIC_DUPLICATE, SemanticDuplicateRemover
    from curator_stages.reporting.markdown import render_report_markdown

    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]]
    task = DocumentBatch(task_id="t", dataset_name="d", data=pa.table({
        "id": ["a", "b", "c", "d"], "text": ["w"] * 4,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4)}))
    stage = SemanticDuplicateRemover(threshold=0.9, name="semantic_dedup")
    out = stage.fit_local([task]).run([task])
    data = build_report_data(summarise(HistoryAggregator().add_tasks(out).to_dict()))
    assert data.duplicates == {("semantic_dedup", SEMANTIC_DUPLICATE): 1}
    markdown = render_report_markdown(data)
    duplicates = markdown.split("## Duplicates")[1].split("## ")[0]
    assert f"| semantic_dedup | {SEMANTIC_DUPLICATE} | 1 |" in duplicates
