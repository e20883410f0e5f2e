"""The benchmark table in BENCHMARKS.md is the one generated from results/latest.json: docs quote
no benchmark figure that the committed results file does not hold."""

import json
from pathlib import Path

from benchmarks import table


def test_benchmarks_md_holds_the_table_generated_from_latest_json():
    latest = json.loads(table.LATEST.read_text())
    expected = f"{table.START}\n{table.render(latest)}\n{table.END}"
    assert expected in table.MARKDOWN.read_text(), "run: python -m benchmarks.table"


def test_every_table_row_names_a_source_with_its_command():
    latest = json.loads(table.LATEST.read_text())
    used = {r["source"] for r in latest["records"]} | {s["harness"] for s in latest["harness_rows"]}
    assert used <= set(latest["sources"])
    assert all(latest["sources"][k]["command"] for k in used)


def test_repeated_figures_are_shown_as_min_median_max():
    stats = {"min": 1.2, "median": 1.29, "max": 1.31, "n": 3}
    assert table.fmt(stats, unit="x") == "1.2 / 1.29 / 1.31x"
    assert table.fmt({"min": 5.0, "median": 5.0, "max": 5.0, "n": 1}, unit="s") == "5 s"


def test_generating_twice_changes_nothing(tmp_path: Path):
    md = tmp_path / "B.md"
    md.write_text(f"# B\n\n{table.START}\n{table.END}\n\ntail\n")
    assert table.update(md) is True
    first = md.read_text()
    assert table.update(md) is False and md.read_text() == first and first.endswith("tail\n")
