"""The exact lines a user reads on the console: the run's stage table and the plan fit 80
columns, ``--help`` names the plan options and every rule's flag, and Ray Data's bars are never
drawn into a log. No Ray, no Prefect run (the quick tier)."""

from __future__ import annotations

import io
import sys

import pytest
from rich.cells import cell_len

from curator_stages.backends.ray_data.plan_context import default_progress_bars
from curator_stages.orchestration.flow_cli import print_summary
from curator_stages.accounting import StageCounts, summarise
from flows import text_curation as flow


def _cli(argv):
    """``python flows/text_curation.py ARGV``; its exit code."""
    from curator_stages.orchestration.flow_cli import flow_main

    return flow_main(flow.SPEC, flow.text_curation, argv)


def _summary() -> dict:
    counts = [
        StageCounts("file_partitioning", items_in=1, items_out=4),
        StageCounts("jsonl_read", items_in=4, items_out=3000,
                    metrics={"documents_read": 3020, "documents_quarantined": 20}),
        StageCounts("language_identifier", items_in=3000, items_out=3000, process_time_s=9.0),
        StageCounts("quality_filter", items_in=3000, items_out=1989,
                    dropped={"gopher_word_count": 1011}, process_time_s=4.0),
        StageCounts("exact_dedup", items_in=1989, items_out=1894,
                    dropped={"exact_duplicate": 95}, process_time_s=0.001),
        StageCounts("parquet_writer", items_in=1894, items_out=4,
                    metrics={"documents_written": 1894}, process_time_s=1.0),
    ]
    summary = summarise({c.stage: c for c in counts}).to_dict()
    summary["stage_tasks"] = [{"status": "Completed"}] * 3
    summary["wall_time_s"] = 12.0
    return summary


def test_the_run_table_fits_80_columns_in_a_log(capsys):
    print_summary(flow.SPEC, _summary(), "/o", 20.0)
    lines = capsys.readouterr().out.splitlines()
    assert max(cell_len(line) for line in lines) <= 80, lines
    assert lines[1] == (" stage                mode  docs in  docs out  dropped  quarantined"
                        "      files")
    assert lines[3:] == [
        " file_partitioning    -           -         -        -            -   4 listed",
        " jsonl_read           -       3,020     3,000        0           20     4 read",
        " language_identifier  -       3,000     3,000        0            0          -",
        " quality_filter       -       3,000     1,989    1,011            0          -",
        # The global stage's filter is counted under the stage's own name (it said
        # exact_dedup_filter here while the console's stage tasks said exact_dedup).
        " exact_dedup          -       1,989     1,894       95            0          -",
        " parquet_writer       -       1,894     1,894        0            0  4 written",
        "accounting: read 3020 = written 1894 + dropped 1106 + quarantined 20 -> holds",
        "stage tasks: Completed, Completed, Completed",
        "output:  /o/data",
        "summary: /o/run_summary.json",
        "report:  /o/report.md",
        "wall time: 12.0s (+ 8.0s start-up: imports, Ray, Prefect's API and flow run)",
    ]


def test_the_plan_fits_80_columns(tmp_path, capsys):
    assert _cli(["--output", str(tmp_path / "o"), "--plan", "--cluster",
                      "2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[:lines.index(next(line for line in lines if line.startswith("Ray Data map")))]
    assert max(cell_len(line) for line in table) <= 80, table
    assert lines[1].split() == ["#", "stage", "mode", "CPU/GPU", "pool", "Ray", "Data",
                                "Prefect"]


def test_help_names_the_plan_options_and_the_flag_of_every_rule(capsys):
    with pytest.raises(SystemExit) as exit_:
        _cli(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--plan ", "--cluster SPEC", "--plan-format", "--c4-min-sentences"):
        assert option in out, option
    lines = out.splitlines()
    assert "  c4_sentence_count         --c4-min-sentences (0: off)" in lines
    assert "  gopher_bullet_lines       --max-bullet-lines-ratio (1: off)" in lines
    assert "  invalid JSON              not configurable (the input is not JSON Lines)" in lines
    assert "  language                  --languages / --min-language-score / --no-language-id" \
        in lines


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("stdout_tty, stderr_tty, bars", [
    (True, True, True), (True, False, False), (False, True, False)])
def test_ray_data_bars_only_on_a_terminal(monkeypatch, stdout_tty, stderr_tty, bars):
    """The bars are drawn on stderr: ``python example.py 2> log`` got their escape codes."""
    monkeypatch.setattr(sys, "stdout", _Stream(stdout_tty))
    monkeypatch.setattr(sys, "stderr", _Stream(stderr_tty))
    assert default_progress_bars() is bars


def test_a_global_stages_filter_is_counted_under_the_stages_name():
    """The console's stage tasks say exact_dedup; the report counts what the filter that fit
    returns removed: under the same name, not exact_dedup_filter."""
    import pandas as pd

    from curator_stages.tasks import DocumentBatch
    from curator_stages.text.dedup import ExactDuplicateRemover

    batch = DocumentBatch("t", "d", pd.DataFrame({"id": ["a", "b"], "text": ["same", "same"]}))
    filt = ExactDuplicateRemover(name="exact_dedup").fit_local([batch])
    out = filt.run([batch])[0]
    assert filt.stage_name == "exact_dedup"
    assert out.stage_history[-1].stage_name == "exact_dedup" and out.num_items == 1


def test_the_report_puts_the_flag_beside_every_rule(tmp_path):
    """report.md from a summary alone (no run): each rule and quarantine reason with the flag
    that changes it, or "not configurable"."""
    from curator_stages.orchestration.plan_artifact import publish_plan_artifact
    from curator_stages.plan import plan_pipeline
    from curator_stages.reporting import write_run_report

    import json

    summary = _summary()
    (tmp_path / "run_summary.json").write_text(json.dumps(summary))
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "quarantine-0.jsonl").write_text(
        '{"file": "a.jsonl", "line": 3, "reason": "missing text field \'text\'", "raw": "{}"}\n')
    report = write_run_report(tmp_path, summary, title="Text curation",
                              rule_flags=flow.RULE_FLAGS, publish_artifact=False)
    text = report.read_text()
    assert "| quality_filter | gopher_word_count | 1,011 | 33.5% | --min-words / --max-words |" \
        in text
    assert "| exact_dedup | exact_duplicate | 95 | 3.1% | --no-exact-dedup |" in text
    assert "| missing text field 'text' | 1 | --text-field |" in text
    assert (tmp_path / "funnel.png").stat().st_size > 0
    # Rebuilt from the output alone, the same report (the flags are kept in its context).
    again = write_run_report(tmp_path, publish_artifact=False).read_text()
    assert again == text
    # Outside a flow run there is nothing to attach the plan to.
    assert publish_plan_artifact(plan_pipeline([], cluster="1 node x 2 cpus")) is None


def test_files_are_counted_as_files_when_one_is_read_as_byte_ranges(tmp_path):
    """The console said 7 input files, the table "8 listed, 8 read": it counted read tasks,
    and a large file cut into byte ranges makes several."""
    from curator_stages.backends.local import LocalExecutor
    from curator_stages.io import JsonlReader
    from curator_stages.accounting import HistoryAggregator
    from curator_stages.reporting.data import stage_rows

    (tmp_path / "in").mkdir()
    for name, n in (("a.jsonl", 200), ("b.jsonl", 3)):
        (tmp_path / "in" / name).write_text("".join(f'{{"text": "line {i}"}}\n'
                                                    for i in range(n)))
    reader = JsonlReader(str(tmp_path / "in"), min_tasks=4, min_range_bytes=64)
    out = LocalExecutor().execute(reader.decompose())
    assert len(out) > 2  # a.jsonl was read as several byte ranges
    summary = summarise(HistoryAggregator().add_tasks(out).to_dict())
    rows = {r.stage: r for r in stage_rows(summary)}
    assert rows["file_partitioning"].files_text == "2 listed"
    assert rows["jsonl_read"].files_text == "2 read" and rows["jsonl_read"].documents_in == 203
