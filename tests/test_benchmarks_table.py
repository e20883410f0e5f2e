"""The benchmark table in BENCHMARKS.md is the one generated from results/latest.json: docs quote
no benchmark figure that the committed results file does not hold."""

import json
from pathlib import Path

from benchmarks import table


def test_benchmarks_md_holds_the_table_generated_from_latest_json():
    latest = json.loads(table.LATEST.read_text())
    expected = f"{table.START}\n{table.render(latest)}\n{table.END}"
    assert expected in table.MARKDOWN.read_text(), "run: python -m benchmarks.table"


def test_benchmarks_md_stays_a_table_not_a_diary():
    lines = table.MARKDOWN.read_text().count("\n")
    assert lines <= 200, f"BENCHMARKS.md has {lines} lines (at most 200): drop superseded rows"


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


def _scaling_run(docs: int, kind: str, pss: float, run_wall: float, digest: str,
                 spilled: float = 0.0) -> dict:
    return {"docs": docs, "kind": kind, "returncode": 0, "wall_s": run_wall + 30,
            "run_wall_s": run_wall, "wall_per_1k_docs_s": (run_wall + 30) / docs * 1000,
            "run_wall_per_1k_docs_s": run_wall / docs * 1000, "peak_tree_pss_mb": pss,
            "spill": {"spilled_mib": spilled, "watched_total_mb": spilled},
            "output": {"digest": digest, "documents": docs // 2},
            "pss_at_tenths_mb": [pss] * 10}


def test_a_flow_scaling_result_is_promoted_into_rows_with_its_targets_checked(tmp_path: Path):
    from benchmarks.flow_scaling import compare

    runs = [_scaling_run(200_000, "capped", 1400, 400, "a"),
            _scaling_run(200_000, "uncapped", 1500, 390, "a"),
            _scaling_run(1_000_000, "capped", 1900, 2100, "b", spilled=12),
            _scaling_run(1_000_000, "uncapped", 2000, 2000, "c")]
    compare(runs)
    result = {"benchmark": "flow_scaling", "command": "python -m benchmarks.flow_scaling",
              "started": "2026-12-06 09:00:00", "git": "abc1234", "machine": "x, 2 CPUs",
              "load": "1.0-2.0", "object_store_memory": 512_000_000, "runs": runs,
              "corpora": {"200000": {"documents": 200_000, "shards": 20, "text_bytes": 3 << 28}}}
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps(result))
    latest = tmp_path / "latest.json"
    latest.write_text(table.LATEST.read_text())
    table.promote(path, "scaling-test", latest)
    table.promote(path, "scaling-test", latest)  # replaces its rows, never adds twice
    data = json.loads(latest.read_text())
    rows = [r for r in data["records"] if r["source"] == "scaling-test"]
    assert [r["case"] for r in rows] == ["200,000 docs, capped", "200,000 docs, uncapped",
                                         "1,000,000 docs, capped", "1,000,000 docs, uncapped"]
    smallest, largest = rows[0], rows[2]
    assert smallest["target"] == ("same digest as uncapped: met; nothing spilled: met; "
                                  "PSS <= 1.5 GiB: met")
    assert smallest["status"] == "all met"
    # digest differs; spilled; 1,900 / 1,400 MiB > 1.25x; 2,100 s / 5 against 400 s: 1.05x;
    # 1,900 MiB > 1.5 GiB
    assert largest["target"] == ("same digest as uncapped: NOT met; nothing spilled: NOT met; "
                                 "PSS <= 1.25x: NOT met; s/doc <= 1.15x: met; "
                                 "PSS <= 1.5 GiB: NOT met")
    assert largest["status"] == "4 not met"
    assert rows[1]["target"] == "" and rows[1]["ratio"]["text"].startswith("PSS 1.07x")
    text = table.render(data)
    assert "| reference flow, 512 MB object store | 1,000,000 docs, capped |" in text
    assert "`scaling-test`: `python -m benchmarks.flow_scaling`" in text
