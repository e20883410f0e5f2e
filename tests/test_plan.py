"""Pipeline plans on declared clusters: modes, pool sizes, fusion, repartitions, barriers, errors.

Declared clusters never start Ray, so these tests need no fixture; the fusion rules they check
were probed on Ray 2.60 (see curator_stages/plan/ and planning.will_fuse).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from curator_stages import GlobalStage, Pipeline, ProcessingStage, Resources, processing_stage
from curator_stages.backends.ray_data import UnschedulableStageError
from curator_stages.cli import main as cli_main

CLUSTER = "2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"
REPO = Path(__file__).resolve().parents[1]


@processing_stage(name="split", spec={"is_fanout_stage": True})
def split(task):
    return [task]


@processing_stage(name="clean")
def clean(task):
    return task


@processing_stage(name="score")
def score(task):
    return task


class Model(ProcessingStage):
    name = "model"
    resources = Resources(cpus=4)

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        self._m = 1

    def process(self, task):
        return task


class Embed(ProcessingStage):
    name = "embed"
    resources = Resources(cpus=1, gpus=1)
    batch_size = 16

    def process(self, task):
        return task


class Dedup(GlobalStage):
    name = "dedup"

    def fit(self, dataset):
        return clean


@processing_stage(name="write")
def write(task):
    return task


def reference() -> Pipeline:
    return Pipeline("ref", [split, clean, score, Model(), Dedup(), Embed(), write])


def test_modes_pools_and_batch_sizes_on_declared_cluster():
    plan = reference().plan(CLUSTER)
    assert plan.cluster_source == "declared"
    modes = {s.name: s.mode for s in plan.stages}
    assert modes == {"split": "task", "clean": "task", "score": "task", "model": "actor",
                     "dedup": "global", "embed": "actor", "write": "task"}
    model = plan.stage("model")
    assert (model.cpus, model.pool_min, model.pool_max) == (4, 1, 10)  # 4 + 4 + 2 workers
    embed = plan.stage("embed")
    assert (embed.gpus, embed.pool_min, embed.pool_max, embed.batch_size) == (1, 1, 2, 16)
    assert plan.stage("clean").pool_max is None  # tasks are unbounded
    assert plan.stage("clean").max_concurrent == 40


def test_ignore_head_node_changes_pool_sizes():
    plan = reference().plan(CLUSTER, ignore_head_node=True)
    assert plan.stage("model").pool_max == 6  # head's 16 CPUs excluded: 4 + 2
    assert plan.stage("embed").pool_max == 2  # GPUs are not on the head
    assert plan.stage("clean").max_concurrent == 24


def test_fusion_repartition_and_barriers():
    plan = reference().plan(CLUSTER)
    # fan-out is repartitioned, so 'clean' starts a new operator; clean+score fuse; the actor
    # with other resources does not; the global stage cuts the stream.
    assert plan.repartitions == ["split"]
    assert plan.fused == [["clean", "score"]]
    assert plan.operators == [["split"], ["clean", "score"], ["model"], ["embed"], ["write"]]
    assert plan.barriers == ["dedup"]
    seg = {s.name: s.segment for s in plan.stages}
    assert seg["write"] == seg["dedup"] > seg["model"]


def test_task_into_actor_with_equal_resources_fuses():
    @processing_stage(name="prep", resources=Resources(cpus=4))
    def prep(task):
        return task

    plan = Pipeline("p", [prep, Model()]).plan(CLUSTER)
    assert plan.fused == [["prep", "model"]]


def test_batch_size_none_after_fanout_is_flagged():
    loose = clean.with_(name="loose", batch_size=None)
    plan = Pipeline("p", [split, loose]).plan(CLUSTER)
    assert plan.fused == [["split", "loose"]]
    assert any("loose" in w and "batch_size=None" in w for w in plan.warnings)


def test_stage_task_groups_cut_fusion_and_mark_checkpoints():
    groups = [["split", "clean"], ["score", "model"], ["dedup", "embed", "write"]]
    plan = reference().plan(CLUSTER, stage_task_groups=groups)
    assert plan.checkpoints == ["clean", "model", "write"]
    assert [s.task_group for s in plan.stages] == [1, 1, 2, 2, 3, 3, 3]
    assert ["clean", "score"] not in plan.fused  # a checkpoint lies between them
    with pytest.raises(ValueError, match="every execution stage once"):
        reference().plan(CLUSTER, stage_task_groups=[["split"], ["clean"]])


def test_unschedulable_stage_names_stage_request_and_cluster():
    big = Model().with_(name="huge", resources=Resources(cpus=32))
    with pytest.raises(UnschedulableStageError) as err:
        Pipeline("p", [clean, big]).plan(CLUSTER)
    msg = str(err.value)
    assert "'huge'" in msg and "cpus=32" in msg and "16 CPUs" in msg
    with pytest.raises(UnschedulableStageError, match="'embed'"):
        Pipeline("p", [Embed()]).plan("2 nodes x 8 cpus")


def test_renderings():
    plan = reference().plan(CLUSTER, stage_task_groups=[[s.name for s in
                                                          reference().plan(CLUSTER).stages]])
    md = plan.to_markdown()
    assert md.startswith("## Plan: ref") and "| 4 | model | actor | 4 | 0 | 1 | 1..10 actors |" in md
    assert "fused into one operator: clean + score" in md
    text = plan.to_text()
    assert "model" in text and "1..10 actors" in text and "checkpoint" in text
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["operators"][1] == ["clean", "score"] and d["stages"][3]["pool_max"] == 10


def test_cli_plan_json_for_a_flow_file(tmp_path, capsys):
    flow = tmp_path / "my_flow.py"
    flow.write_text(
        "from curator_stages import Pipeline, Resources, processing_stage\n"
        "from pydantic import BaseModel\n"
        "class Params(BaseModel):\n    cpus: float = 1\n"
        "@processing_stage(name='a')\ndef a(t):\n    return t\n"
        "def build_pipeline(params: Params) -> Pipeline:\n"
        "    return Pipeline('mine', [a.with_(resources=Resources(cpus=params.cpus))])\n"
        "def stage_task_groups(params):\n    return [['a']]\n")
    assert cli_main(["plan", str(flow), "--cluster", CLUSTER, "--param", "cpus=8",
                     "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["pipeline"] == "mine" and d["stages"][0]["cpus"] == 8
    assert d["checkpoints"] == ["a"]
    assert cli_main(["plan", str(flow), "--cluster", "1 node x 4 cpus", "--param", "cpus=8"]) == 2


@pytest.mark.slow
def test_text_curation_flow_plan_flag():
    out = subprocess.run(
        [sys.executable, str(REPO / "flows" / "text_curation.py"), "--plan", "--cluster", CLUSTER],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "Plan:" in out.stdout and "quality_filter" in out.stdout
    assert "checkpoint" in out.stdout


def test_plan_package_imports_neither_prefect_nor_orchestration():
    """The plan is core: the artifact that shows it in a flow run is published by
    curator_stages.orchestration.plan_artifact (it used to import prefect.artifacts here)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "curator_stages" / "plan"
    upward = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.name}: {n}" for n in names
                       if n.split(".")[0] in ("prefect", "prefect_ray", "flows")
                       or n.startswith(("curator_stages.orchestration", "curator_stages.reporting"))]
    assert upward == []
    for path in root.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name
