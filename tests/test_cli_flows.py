"""One way to run a curation flow: every flow is a spec, the CLI reads the spec, flows share one
parameter vocabulary and never import the CLI."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from curator_stages.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
FLOW_FILES = [*sorted((REPO / "flows").glob("[!_]*.py")),
              REPO / "tests" / "scripts" / "fault_flow.py"]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_cli_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.stem)
def test_every_flow_is_a_spec_with_the_shared_vocabulary(path):
    from curator_stages.orchestration.curation_params import CurationParams
    from curator_stages.orchestration.curation_run import CurationFlowSpec

    module = _load(path)
    assert isinstance(module.SPEC, CurationFlowSpec)
    model = module.SPEC.params_model
    assert issubclass(model, CurationParams)
    assert {"input", "output", "work_dir", "ray_address", "num_cpus",
            "verify_input", "refresh", "retries"} <= set(model.model_fields)
    assert not {"input_path", "output_path"} & set(model.model_fields)
    assert not hasattr(module, "build_pipeline")


def test_flows_and_orchestration_do_not_import_the_cli():
    """The CLI consumes the flows' specs; nothing below it imports it back."""
    files = [*FLOW_FILES, *(REPO / "curator_stages" / "orchestration").glob("*.py")]
    upward = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.name}: {n}" for n in names if n == "curator_stages.cli"]
    assert upward == []


def test_plan_command_reads_the_flow_spec(tmp_path, capsys):
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "x"}\n')
    args = ["plan", str(REPO / "flows" / "convert_to_parquet.py"), "--cluster",
            "2 nodes x 16 cpus", "--param", f"input={corpus}", "--param",
            f"output={tmp_path / 'out'}", "--param", f"work_dir={tmp_path / 'w'}",
            "--format", "json"]
    assert cli_main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["pipeline"] == "convert-to-parquet"
    assert [s["name"] for s in plan["stages"]] == ["file_partitioning", "jsonl_read",
                                                   "parquet_writer"]
    assert plan["checkpoints"] == ["parquet_writer"]
    # A bad parameter is refused naming the option, as the flow's own CLI does.
    with pytest.raises(SystemExit) as exit_:
        cli_main([*args[:-2], "--param", "files_per_group=0"])
    assert "--files-per-group" in str(exit_.value.code)
    assert not (tmp_path / "out").exists()


def test_flow_plan_flag_says_a_single_file_runs_as_one_task(tmp_path, capsys):
    module = _load(REPO / "flows" / "convert_to_parquet.py")
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "x"}\n')
    from curator_stages.orchestration.flow_cli import flow_main

    code = flow_main(module.SPEC, module.convert_to_parquet,
                     ["--plan", "--cluster", "1 node x 4 cpus", "--input", str(one),
                      "--output", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w")])
    assert code == 0
    assert "one input file: it is read as one task" in capsys.readouterr().out
