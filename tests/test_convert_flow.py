"""flows/convert_to_parquet.py under a real Prefect API and the session Ray cluster."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tests.prefect_homes import clean_env


def _main(module, argv):
    """The flow script's command line, as ``python flows/convert_to_parquet.py ARGV``."""
    from curator_stages.orchestration.flow_cli import flow_main

    return flow_main(module.SPEC, module.convert_to_parquet, argv)


def _parse(module, argv):
    from curator_stages.orchestration.params import parse_params

    return parse_params(module.ConvertParams, argv)

REPO = Path(__file__).resolve().parents[1]


def _load_flow_module():
    spec = importlib.util.spec_from_file_location("convert_to_parquet_flow",
                                                  REPO / "flows" / "convert_to_parquet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flow_module():
    return _load_flow_module()


def _corpus(root: Path) -> Path:
    corpus = root / "corpus"
    (corpus / "sub").mkdir(parents=True)
    with open(corpus / "a.jsonl", "w", encoding="utf-8") as f:
        for i in range(6):
            f.write(json.dumps({"text": f"document a{i}", "source": "a"}) + "\n")
        f.write("{not json\n")
    with open(corpus / "sub" / "b.jsonl", "w", encoding="utf-8") as f:
        for i in range(4):
            f.write(json.dumps({"text": f"document b{i}", "source": "b"}) + "\n")
    return corpus


def _read_output(out: Path):
    files = sorted((out / "data").glob("*.parquet"))
    assert files, f"no Parquet shards in {out / 'data'}"
    return pq.read_table(files).sort_by("id"), files


def test_bad_parameters_are_rejected_before_work(flow_module, tmp_path):
    corpus, out = str(_corpus(tmp_path)), str(tmp_path / "out")
    for bad, field in (({"files_per_group": 0}, "files_per_group"),
                       ({"compression": "lz77"}, "compression"),
                       ({"input": str(tmp_path / "missing")}, "input")):
        with pytest.raises(ValidationError) as err:
            flow_module.ConvertParams(**{"input": corpus, "output": out,
                                         "work_dir": str(tmp_path / "w"), **bad})
        assert [e["loc"][0] for e in err.value.errors()] == [field]


def test_convert_flow_writes_parquet_with_stable_ids(tmp_path, flow_module, ray_cluster,
                                                     prefect_harness):
    corpus = _corpus(tmp_path)
    params = flow_module.ConvertParams(input=str(corpus), output=str(tmp_path / "out"),
                                       work_dir=str(tmp_path / "work"), fields=["source"])
    summary = flow_module.convert_to_parquet(params)
    out = tmp_path / "out"
    table, files = _read_output(out)
    assert len(files) == 2  # one shard per input file (files_per_group=1)
    assert table.num_rows == 10
    assert summary["documents_read"] == 11
    assert summary["documents_written"] == 10
    assert summary["documents_quarantined"] == 1
    assert summary["identity"]["holds"]
    ids = table["id"].to_pylist()
    assert len(set(ids)) == 10
    assert set(table.column_names) >= {"id", "text", "source_file", "source_line", "source"}
    # the broken line is quarantined with its file and line number
    quarantined = [json.loads(line) for p in (out / "quarantine").glob("*.jsonl")
                   for line in p.read_text().splitlines() if line.strip()]
    assert [(Path(q["file"]).name, q["line"]) for q in quarantined] == [("a.jsonl", 7)]
    assert (out / "run_summary.json").is_file()
    assert (out / "report.md").is_file() and (out / "funnel.png").read_bytes()[:4] == b"\x89PNG"

    # Stable ids: a second, recomputed run to another directory gives the same ids per row.
    params2 = params.model_copy(update={"output": str(tmp_path / "out2"), "refresh": True})
    flow_module.convert_to_parquet(params2)
    table2, _ = _read_output(tmp_path / "out2")
    assert table2["id"].to_pylist() == ids
    assert table2["text"].to_pylist() == table["text"].to_pylist()


def test_plan_flag_prints_plan_without_running(tmp_path, flow_module, capsys):
    corpus = _corpus(tmp_path)
    code = _main(flow_module, ["--input", str(corpus), "--output", str(tmp_path / "o"),
                             "--plan", "--cluster", "2 nodes x 16 cpus"])
    assert code == 0
    text = capsys.readouterr().out
    assert "jsonl_read" in text and "parquet_writer" in text and "checkpoint" in text
    assert not (tmp_path / "o").exists()


def test_read_and_write_are_one_stage_task(flow_module, tmp_path):
    params = flow_module.ConvertParams(input=str(_corpus(tmp_path)), output=str(tmp_path / "out"),
                                       work_dir=str(tmp_path / "w"))
    assert flow_module.SPEC.stage_task_names(params) == [
        ["file_partitioning", "jsonl_read", "parquet_writer"]]


def test_cli_turns_a_boolean_off_and_refuses_bad_values_naming_the_flag(flow_module, tmp_path,
                                                                       capsys):
    """The CLI is the parser generated from ConvertParams: ``--no-x`` turns off a boolean that
    defaults to True (the hand-written store_true parser could not), and a bad value exits 2
    naming the flag."""
    corpus, out = str(_corpus(tmp_path)), str(tmp_path / "out")
    base = ["--input", corpus, "--output", out, "--work-dir", str(tmp_path / "w")]
    assert flow_module.ConvertParams.model_fields["write_report"].default is True
    params = _parse(flow_module, [*base, "--no-write-report", "--no-strict"])
    assert params.write_report is False and params.strict is False
    assert _parse(flow_module, [*base, "--strict"]).strict is True
    assert _parse(flow_module, [*base, "--verify-input", "content"]).verify_input == "content"
    with pytest.raises(SystemExit) as exit_:
        _main(flow_module, [*base, "--files-per-group", "0"])
    assert exit_.value.code == 2
    assert "--files-per-group" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_missing_input_exits_2_before_ray_starts(tmp_path):
    """``python flows/convert_to_parquet.py --input data/raw`` (the old quickstart) with no such
    directory: refused by the shared parameter validation, exit 2 naming --input, no Ray, no
    traceback (it used to start Ray, run for a minute and print two tracebacks)."""
    env = clean_env(tmp_path)
    res = subprocess.run([sys.executable, str(REPO / "flows" / "convert_to_parquet.py"),
                          "--input", "data/raw", "--output", str(tmp_path / "o"),
                          "--work-dir", str(tmp_path / "w")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "--input" in res.stderr and "data/raw" in res.stderr
    assert "Traceback" not in res.stderr and "Ray" not in res.stdout + res.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_rerun_prunes_shards_an_earlier_run_wrote(tmp_path, flow_module, ray_cluster,
                                                  prefect_harness):
    """The convert flow records its outputs and prunes the ones a later run does not rewrite
    (here: two files per shard instead of one), leaving files it did not write alone."""
    corpus, out = _corpus(tmp_path), tmp_path / "out"
    common = dict(input=str(corpus), output=str(out), work_dir=str(tmp_path / "w"))
    flow_module.convert_to_parquet(flow_module.ConvertParams(**common))
    first = {p.name for p in (out / "data").glob("*.parquet")}
    assert len(first) == 2
    (out / "data" / "mine.txt").write_text("a user's file\n")
    summary = flow_module.convert_to_parquet(flow_module.ConvertParams(files_per_group=2,
                                                                       **common))
    now = {p.name for p in (out / "data").glob("*.parquet")}
    assert len(now) == 1, (first, now)  # both shards of the first run are gone
    assert (out / "data" / "mine.txt").exists()
    assert _read_output(out)[0].num_rows == summary["documents_written"] == 10
