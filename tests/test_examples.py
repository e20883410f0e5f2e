"""The examples that docs/writing_stages.md shows run, on the session Ray cluster."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_guide_shows_the_example_files():
    guide = (EXAMPLES.parent / "docs" / "writing_stages.md").read_text(encoding="utf-8")
    for name in ("function_stage", "actor_stage", "plan_on_declared_cluster"):
        assert f"examples/{name}.py" in guide
    assert "@processing_stage" in guide and "def setup" in guide


def test_function_stage_example(ray_cluster):
    module = _load("function_stage")
    results = module.main()
    rows = [r for t in results for r in t.to_pyarrow().to_pylist()]
    assert sorted(r["id"] for r in rows) == ["doc-1", "doc-3"]
    assert all(r["char_count"] >= 20 for r in rows)
    drops = [s.dropped_by_reason() for t in results for s in t.stage_history
             if s.stage_name == "drop_short"]
    assert sum(d.get("too_short", 0) for d in drops) == 2
    plan = module.Pipeline("x", [module.add_char_count, module.drop_short]).plan("1 node x 2 cpus")
    assert plan.fused == [["add_char_count", "drop_short"]]


def test_actor_stage_example(ray_cluster):
    module = _load("actor_stage")
    results = module.main()
    topics = {r["id"]: r["topic"] for t in results for r in t.to_pyarrow().to_pylist()}
    assert topics == {"doc-0": "sport", "doc-1": "science", "doc-2": "other"}
    plan = module.Pipeline("x", [module.TopicTagger()]).plan("1 node x 2 cpus")
    assert plan.stages[0].mode == "actor" and plan.stages[0].pool_max == 2


def test_plan_example(capsys):
    module = _load("plan_on_declared_cluster")
    plan = module.main()
    assert plan.stage("classifier").pool_max == 10 and plan.stage("embedder").pool_max == 2
    assert plan.fused == [["lowercase", "strip"]] and plan.repartitions == ["split_batch"]
    assert "refused: stage 'classifier'" in capsys.readouterr().out
