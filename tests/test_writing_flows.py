"""The flow that docs/writing_flows.md shows is a whole flow: short, thin on glue, and it runs.

The code block is taken from the page as it stands, saved as a flow file and run the way a user
runs one (``python flows/<name>.py``), so the page cannot drift from the code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import fault_helpers as fh

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "writing_flows.md"
#: The lines that are not about the flow's own parameters or stages.
GLUE = re.compile(r"flow_script|curation_flow|run_flow_script|__main__")


def _flow_source() -> str:
    return re.search(r"## A whole flow.*?```python\n(.*?)```", PAGE.read_text(), re.S).group(1)


def _save(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "english_c4.py"
    path.parent.mkdir(parents=True)
    path.write_text(_flow_source())
    return path


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("english_c4_flow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_flow_is_short_and_its_glue_is_five_lines_at_most():
    lines = [line for line in _flow_source().splitlines() if line.strip()]
    assert len(lines) <= 40, len(lines)
    glue = [line for line in lines if GLUE.search(line)]
    assert 0 < len(glue) <= 5, glue


def test_the_example_flow_is_a_prefect_flow_with_its_stage_tasks(tmp_path):
    from prefect import Flow

    module = _load(_save(tmp_path))
    assert isinstance(module.english_c4, Flow) and module.english_c4.name == "english-c4"
    assert list(module.english_c4.parameters.properties) == ["params"]
    params = module.EnglishC4Params(input=str(REPO / "data" / "sample"),
                                    output=str(tmp_path / "out"), work_dir=str(tmp_path / "w"))
    assert module.SPEC.stage_task_names(params) == [
        ["file_partitioning", "jsonl_read", "text_normalizer", "language_identifier"],
        ["c4_filter"], ["exact_dedup"], ["parquet_writer"]]


@pytest.mark.timeout(600)
def test_the_example_flow_runs_as_a_script(ray_cluster, prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    path = _save(tmp_path)
    shard = sorted((REPO / "data" / "sample").glob("shard-*.jsonl*"))[0]
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(path), "--input", str(shard), "--output", str(out),
         "--work-dir", str(tmp_path / "work")],
        env=fh.join_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO)),
        cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["identity"]["holds"] and summary["documents_written"] > 0
    assert summary["dropped_by_reason"].get("language", 0) > 0  # the sample is multilingual
    rows = pq.read_table(sorted((out / "data").glob("*.parquet"))).to_pylist()
    assert len(rows) == summary["documents_written"]
    assert {row["language"] for row in rows} == {"en"}


def test_importing_flow_script_starts_nothing_and_imports_neither_prefect_nor_ray(tmp_path):
    """A flow file imports flow_script before Prefect: that import applies the environment
    defaults Ray and Prefect read at import, and starts or imports nothing else."""
    probe = ("import sys, psutil, curator_stages.orchestration.flow_script\n"
             "print(sorted(m for m in ('prefect', 'ray') if m in sys.modules),"
             " len(psutil.Process().children()), 'RAY_DEDUP_LOGS' in __import__('os').environ)")
    done = subprocess.run([sys.executable, "-c", probe, "--input", "x"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "0", "True"]
