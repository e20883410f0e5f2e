"""Guards for what the Ray Data backend assumes about Ray 2.60 beyond its public API.

Each test fails loudly when Ray changes under us:

- no module of ``curator_stages`` imports ``ray._private`` or ``ray.data._internal``;
- ``planning.will_fuse`` is our copy of Ray Data's operator-fusion rules: compared with the
  fused operator names Ray reports in ``ds.stats()``;
- the head node carries Ray's ``node:__internal_head__`` resource (how ``ignore_head_node``
  finds it);
- Ray Data maps and actor constructors still lose the original exception on the way to the
  driver, so ``errors`` still needs its last-resort text translation; plain Ray tasks keep it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import ray.cloudpickle
import ray.data

from curator_stages import DocumentBatch, ProcessingStage, Resources
from curator_stages.backends.ray_data import (
    ClusterResources,
    RayDataStageAdapter,
    StageSetupError,
    will_fuse,
)
from curator_stages.backends.ray_data import errors

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("cluster_left_free")


PACKAGE = Path(__file__).resolve().parents[1] / "curator_stages"
PRIVATE_IMPORT = re.compile(r"\bray\._private\b|\bray\.data\._internal\b|"
                            r"from ray[\w.]* import \(?\s*_[A-Za-z]")


def _batches(n: int) -> list[dict]:
    return [{"item": DocumentBatch(f"t{i}", "ds", pd.DataFrame({"id": [f"d{i}"], "text": ["x"]}))}
            for i in range(n)]


#: Every private Ray name the package still uses (no public one exists), with the test that
#: fails loudly when Ray changes it underneath. Anything else private is refused.
GUARDED_PRIVATE_USES = {
    ("runtime/ray_cluster.py", "ray._private.authentication.authentication_token_setup"):
        "tests/test_external_cluster.py::test_ray_token_mode_helper_is_where_we_expect",
    ("runtime/ray_cluster.py", "ray._private.ray_constants"):
        "tests/test_process_safety.py::test_ray_loopback_switch_is_where_we_expect",
    ("backends/ray_data/plan_context.py", "ray.data._internal.progress"):
        "tests/test_ray_private_guards.py::test_the_ray_loggers_we_filter_are_where_we_expect",
}
_PRIVATE_NAME = re.compile(r"ray(?:\.data)?\._(?:private|internal)(?:\.\w+)*")


def _private_uses() -> list[tuple[str, str, str]]:
    uses = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_IMPORT.search(line) and not line.lstrip().startswith(("#", "``", "per-")):
                rel = str(path.relative_to(PACKAGE))
                name = _PRIVATE_NAME.search(line)
                uses.append((rel, name.group(0) if name else line.strip(), f"{rel}:{n}"))
    return uses


def test_no_private_ray_module_is_imported():
    """Only the listed private uses remain, and each one's guard test exists."""
    unguarded = []
    for rel, name, where in _private_uses():
        if "(" in name or " " in name:  # `from ray.x import _name`: never allowed
            unguarded.append(where)
            continue
        # `from ray._private import ray_constants` names the module on the import's right side
        key = next((k for k in GUARDED_PRIVATE_USES
                    if k[0] == rel and (name == k[1] or k[1].startswith(name + ".")
                                         or name.startswith(k[1] + "."))), None)
        if key is None:
            unguarded.append(f"{where}: {name}")
    assert unguarded == [], "private Ray names need a public replacement or a guard test"
    root = PACKAGE.parent
    for guard in set(GUARDED_PRIVATE_USES.values()):
        file, _, test = guard.partition("::")
        assert f"def {test}(" in (root / file).read_text(), f"guard {guard} is missing"


# --------------------------------------------------------------------------- fusion rules
def _stage(name: str, mode: str, cpus: float = 1.0, fanout: bool = False,
           max_workers: int | None = None) -> ProcessingStage:
    spec: dict = {"is_actor_stage": mode == "actor"}
    if fanout:
        spec["is_fanout_stage"] = True
    if max_workers is not None:
        spec["max_workers"] = max_workers

    def process(self, task):
        return task

    cls = type(name, (ProcessingStage,), {"process": process,
                                          "ray_stage_spec": lambda self: dict(spec)})
    return cls().with_(resources=Resources(cpus=cpus))


COMBINATIONS = [
    ("task -> task", _stage("TaA", "task"), _stage("TaB", "task")),
    ("task -> actor", _stage("TbA", "task"), _stage("TbB", "actor")),
    ("actor -> task", _stage("TcA", "actor"), _stage("TcB", "task")),
    ("task -> task, other cpus", _stage("TdA", "task"), _stage("TdB", "task", cpus=2)),
    ("fan-out -> task", _stage("TeA", "task", fanout=True), _stage("TeB", "task")),
    ("capped task -> task", _stage("TfA", "task", max_workers=1), _stage("TfB", "task")),
]


@pytest.mark.parametrize("label, up, down", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_will_fuse_matches_the_operators_ray_fuses(ray_cluster, label, up, down):
    first, second = RayDataStageAdapter(up), RayDataStageAdapter(down)
    ds = second.process_dataset(first.process_dataset(ray.data.from_items(_batches(2))))
    stats = ds.materialize().stats()
    up_name = f"MapBatches({type(up).__name__}{first.plan.mode.capitalize()})"
    down_name = f"MapBatches({type(down).__name__}{second.plan.mode.capitalize()})"
    assert up_name in stats and down_name in stats, stats
    fused = f"{up_name}->{down_name}" in stats
    assert will_fuse(first.plan, second.plan) == fused, (label, stats)


# --------------------------------------------------------------------------- head node label
def test_head_node_carries_the_internal_head_resource(ray_cluster):
    from curator_stages.plan.cluster_resources import HEAD_NODE_RESOURCE

    [head] = [n for n in ray.nodes() if n["Alive"]]  # the session cluster is one (head) node
    assert HEAD_NODE_RESOURCE in head["Resources"], sorted(head["Resources"])
    nodes = ClusterResources.from_ray().nodes
    assert len(nodes) == 1 and nodes[0].is_head


# --------------------------------------------------------------------------- logger names
def test_the_ray_loggers_we_filter_are_where_we_expect():
    """Guard for plan_context and the runtime's Ray start: the Ray logger names they filter one
    message of each are the loggers of those modules, and each module still logs that message."""
    import importlib
    import inspect

    from curator_stages.backends.ray_data import plan_context as pc
    from curator_stages.runtime import ray_cluster as rc

    for name, messages in ((pc._PROGRESS_LOGGER, pc._PROGRESS_HINTS),
                           (rc._AUTH_LOGGER, (rc._AUTH_NOTICE,))):
        module = importlib.import_module(name)
        assert module.logger.name == name
        source = inspect.getsource(module)
        assert all(message.rstrip(".") in source for message in messages), (name, messages)


# --------------------------------------------------------------------------- error carriers
class ExplodeInMap(ProcessingStage):
    name = "explode_in_map"

    def process(self, task):
        raise ValueError("stage 'explode_in_map': bad batch")


class ExplodeInSetup(ProcessingStage):
    name = "explode_in_setup"

    def setup(self, worker_metadata=None):
        raise FileNotFoundError("no model here")

    def process(self, task):
        return task


@pytest.mark.parametrize("stage, expected", [(ExplodeInMap(), ValueError),
                                             (ExplodeInSetup(), StageSetupError)])
def test_ray_data_still_loses_the_original_exception(ray_cluster, stage, expected):
    ds = RayDataStageAdapter(stage).process_dataset(ray.data.from_items(_batches(1)))
    with pytest.raises(ray.exceptions.RayError) as raw:
        ds.materialize()
    # If this fails, Ray now carries the original: drop errors._from_text (the last resort).
    assert errors._from_cause_chain(raw.value) is None
    surfaced = errors.stage_error_from(raw.value)
    assert type(surfaced) is expected and stage.stage_name in str(surfaced)


def _raise_setup_error() -> None:
    raise StageSetupError("stage 'remote': setup() failed on node x: OSError: gone", "remote")


def test_plain_ray_task_keeps_the_original_exception(ray_cluster):
    with pytest.raises(ray.exceptions.RayError) as raw:
        ray.get(ray.remote(num_cpus=0, max_retries=0)(_raise_setup_error).remote())
    original = errors._from_cause_chain(raw.value)
    assert type(original) is StageSetupError and original.stage_name == "remote"


def test_the_streaming_executor_runs_as_a_thread_named_after_its_dataset(ray_cluster):
    """executor._join_executor_threads finds an ended plan's still-stopping executor by its
    thread name (prefix + the dataset's id): if Ray Data renames the thread (or stops running
    one), this fails."""
    import threading

    from curator_stages.backends.ray_data.executor import executor_thread_prefix

    dataset = ray.data.range(64, override_num_blocks=8)
    other = ray.data.range(8)
    batches = iter(dataset.iter_batches(batch_size=8))
    try:
        next(batches)
        names = [t.name for t in threading.enumerate()]
        assert any(n.startswith(executor_thread_prefix(dataset)) for n in names), names
        assert not any(n.startswith(executor_thread_prefix(other)) for n in names), names
    finally:
        batches.close()
