"""The report of a real run of the reference flow agrees with the run.

One run of flows/text_curation.py on one sample shard (with malformed lines, exact and near
duplicates), under the Prefect harness on the session Ray cluster. Every number report.md shows
is read back from the markdown and compared with run_summary.json; ``curator-stages report``
must rebuild the very same report from the output directory alone.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from curator_stages.cli import main as cli_main
from curator_stages.accounting import RunSummary
from curator_stages.reporting import REPORT_CONTEXT_FILE, REPORT_FILE, write_run_report

REPO = Path(__file__).resolve().parents[1]
SHARD = REPO / "data" / "sample" / "shard-00002.jsonl.gz"


@pytest.fixture(scope="module")
def flow_run(ray_cluster, prefect_harness, tmp_path_factory):
    """(output dir, run_summary.json as written, report.md as the flow wrote it, flow run id)."""
    from flows.text_curation import TextCurationParams, text_curation

    root = tmp_path_factory.mktemp("report_numbers")
    out = root / "out"
    params = TextCurationParams(input=str(SHARD), output=str(out), work_dir=str(root / "work"),
                                fuzzy_num_perm=32, retries=0, dropped_examples_per_rule=0,
                                count_tokens=True)
    state = text_curation(params, return_state=True)
    assert state.is_completed(), state.message
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    return out, summary, (out / REPORT_FILE).read_text(encoding="utf-8"), \
        state.state_details.flow_run_id


def section(markdown: str, heading: str) -> str:
    """The text of one ``## heading`` section."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert match, f"report has no section {heading!r}"
    return match.group(1)


def table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first table of a section, as one dict per row keyed by the header cells."""
    lines = [line for line in section(markdown, heading).splitlines() if line.startswith("|")]
    assert len(lines) >= 2, f"section {heading!r} has no table"
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    headers = split[0]
    return [dict(zip(headers, row)) for row in split[2:]]


def number(cell: str) -> int | None:
    return None if cell == "-" else int(cell.replace(",", ""))


def test_totals_equal_the_run_summary(flow_run):
    _, summary, report, _ = flow_run
    totals = {row["documents"]: number(row["count"]) for row in table(report, "Totals")}
    assert totals == {"read": summary["documents_read"],
                      "written": summary["documents_written"],
                      "dropped": summary["documents_dropped"],
                      "quarantined": summary["documents_quarantined"]}
    assert summary["documents_quarantined"] > 0 and summary["documents_dropped"] > 0


def test_drops_by_rule_equal_the_run_summary(flow_run):
    _, summary, report, _ = flow_run
    shown = {(row["stage"], row["rule"]): number(row["documents"])
             for row in table(report, "Drops by rule")}
    expected = {(s["stage"], rule): n for s in summary["stages"]
                for rule, n in s["dropped"].items() if n}
    assert shown == expected
    by_rule: dict[str, int] = {}
    for (_, rule), n in shown.items():
        by_rule[rule] = by_rule.get(rule, 0) + n
    assert by_rule == summary["dropped_by_reason"]


def test_duplicates_section_shows_what_dedup_removed(flow_run):
    """Before: "No deduplication stage reported duplicate clusters" on a run that removed some."""
    _, summary, report, _ = flow_run
    exact = summary["dropped_by_reason"]["exact_duplicate"]
    fuzzy = summary["dropped_by_reason"]["fuzzy_duplicate"]
    assert exact > 0 and fuzzy > 0
    rows = table(report, "Duplicates")
    assert {row["reason"]: number(row["documents removed"]) for row in rows} == {
        "exact_duplicate": exact, "fuzzy_duplicate": fuzzy}
    assert "No duplicate" not in section(report, "Duplicates")


def test_stage_table_counts_documents_and_files_apart(flow_run):
    """One unit per column: documents in/out per stage, files in their own column."""
    out, summary, report, _ = flow_run
    rows = {row["stage"]: row for row in table(report, "Stages")}
    stages = summary["stages"]
    assert list(rows) == [s["stage"] for s in stages]
    listing, reader, writer = rows["file_partitioning"], rows["jsonl_read"], rows["parquet_writer"]
    assert listing["docs in"] == listing["docs out"] == "-"
    assert listing["files"] == "1 listed"
    assert number(reader["docs in"]) == summary["documents_read"]
    assert reader["files"] == "1 read"
    assert number(writer["docs out"]) == summary["documents_written"]
    data_files = list((out / "data").glob("*.parquet"))
    assert writer["files"] == f"{len(data_files)} written"
    # Each document stage: documents in = out + dropped + quarantined, and out feeds the next.
    previous_out = None
    for s in stages[1:]:
        row = rows[s["stage"]]
        docs_in, docs_out = number(row["docs in"]), number(row["docs out"])
        assert docs_in == docs_out + number(row["dropped"]) + number(row["quarantined"]), row
        assert number(row["dropped"]) == sum(s["dropped"].values())
        if previous_out is not None:
            assert docs_in == previous_out, row
        previous_out = docs_out
    assert sum(number(r["quarantined"]) for r in rows.values() if r["quarantined"] != "-") \
        == summary["documents_quarantined"]


def test_stage_modes_and_title_come_from_the_flow(flow_run):
    _, _, report, _ = flow_run
    assert report.startswith("# Run report: Text curation\n")
    modes = {row["stage"]: row["mode"] for row in table(report, "Stages")}
    assert modes["language_identifier"] == "task"  # model per worker process, no actor pool
    assert modes["jsonl_read"] == "task"
    # The filters the dedup stages' fit returns run as part of those global stages, under
    # their names (the console's stage tasks and the report say the same name).
    assert modes["exact_dedup"] == modes["fuzzy_dedup"] == "global"


def test_quarantine_reasons_add_up_to_the_quarantined_count(flow_run):
    _, summary, report, _ = flow_run
    rows = table(report, "Quarantined records by reason")
    assert sum(number(row["records"]) for row in rows) == summary["documents_quarantined"]


def test_dropped_documents_hint_names_the_flow_option(flow_run):
    """Before: a flow user was told to give the writer `dropped_output` (a library argument)."""
    _, _, report, _ = flow_run
    text = section(report, "Examples of dropped documents")
    assert "--write-dropped" in text and "--dropped-examples-per-rule" in text
    assert "dropped_output" not in text


def test_cli_report_rebuilds_the_same_report(flow_run, tmp_path):
    """Before: the rebuilt report was titled "run" and lost the mode column."""
    out, _, report, _ = flow_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / REPORT_FILE).unlink()
    (copy / "funnel.png").unlink()
    assert cli_main(["report", str(copy)]) == 0
    rebuilt = (copy / REPORT_FILE).read_text(encoding="utf-8")
    assert rebuilt == report
    assert (copy / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_context_of_another_run_is_not_used(flow_run, tmp_path):
    """A run_summary.json that is not the one the context was written with gets a plain report
    (no title or modes borrowed from a different run)."""
    out, summary, _, _ = flow_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    other = dict(summary, wall_time_s=(summary["wall_time_s"] or 0) + 1.0)
    (copy / "run_summary.json").write_text(json.dumps(other), encoding="utf-8")
    assert (copy / REPORT_CONTEXT_FILE).is_file()
    text = write_run_report(copy, publish_artifact=False).read_text(encoding="utf-8")
    assert text.startswith("# Run report: run\n")


def test_summary_missing_a_field_is_refused_naming_it(flow_run, tmp_path):
    _, summary, _, _ = flow_run
    broken = {k: v for k, v in summary.items() if k != "documents_written"}
    with pytest.raises(ValueError, match="documents_written"):
        RunSummary.from_dict(broken)
    (tmp_path / "run_summary.json").write_text(json.dumps(broken), encoding="utf-8")
    assert cli_main(["report", str(tmp_path)]) == 2
    assert RunSummary.from_dict(summary).to_dict() == summary


def test_plan_and_report_artifacts_of_the_run(flow_run):
    """The plan artifact is published from the orchestration layer, the report beside it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _, _, _, flow_run_id = flow_run
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    keys = {a.key for a in arts}
    assert {"text-curation-plan", "report-text-curation"} <= keys
    summary_art = next(a for a in arts if a.key == "text-curation-summary")
    assert f"{flow_run[1]['tokens_written']:,} written" in summary_art.data


def test_tokens_equal_the_run_summary_and_the_output(flow_run):
    import pyarrow.parquet as pq

    out, summary, report, _ = flow_run
    rows = {row[""]: row for row in table(report, "Tokens")}
    read = rows["counted at token_counter (the first token counter)"]
    assert number(read["tokens"]) == summary["tokens_read"] > summary["tokens_written"]
    assert number(rows["written"]["tokens"]) == summary["tokens_written"]
    assert number(rows["written"]["documents"]) == summary["documents_written"]
    written = sum(sum(pq.read_table(f, columns=["tokens"]).column("tokens").to_pylist())
                  for f in (out / "data").glob("*.parquet"))
    assert written == summary["tokens_written"] > 0
