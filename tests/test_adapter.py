"""RayDataStageAdapter and planning: mode choice, pool sizing, names, lifecycle, fail-fast."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import ray.cloudpickle

from curator_stages import DocumentBatch, EmptyTask, ProcessingStage, Resources
from curator_stages.backends.ray_data import (
    ClusterResources,
    RayDataStageAdapter,
    UnschedulableStageError,
    create_actor_from_stage,
    create_task_from_stage,
    plan_stage,
    will_fuse,
)

# Stage classes defined here travel to Ray workers by value (this module is not importable there).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCRIPTS = Path(__file__).parent / "scripts"
CPU_CLUSTER = ClusterResources.parse("2 nodes x 4 cpus")
GPU_CLUSTER = ClusterResources.parse("1 node x 4 cpus, 2 nodes x 8 cpus 2 gpus 80 gb")


def _batches(n: int) -> list[DocumentBatch]:
    return [DocumentBatch(f"t{i}", "ds", pd.DataFrame({"id": [f"{i}"], "text": ["x"]}))
            for i in range(n)]


class Plain(ProcessingStage):
    def process(self, task):
        return task


class WithSetup(ProcessingStage):
    def setup(self, worker_metadata=None):
        self._ready = True

    def process(self, task):
        return task


class ForcedActor(Plain):
    def ray_stage_spec(self):
        return {"is_actor_stage": True}


class ForcedTask(WithSetup):
    def ray_stage_spec(self):
        return {"is_actor_stage": False}


class GpuStage(Plain):
    resources = Resources(cpus=1, gpus=1)
    batch_size = None


class Recorder(ProcessingStage):
    """Writes a file per lifecycle call, named by pid: actors live in other processes."""

    batch_size = 1

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def ray_stage_spec(self):
        return {"num_workers": 2}

    def _touch(self, kind: str) -> None:
        Path(self.out_dir, f"{kind}-{os.getpid()}-{time.monotonic_ns()}").touch()

    def setup_on_node(self, node_info=None, worker_metadata=None):
        self._touch("node")

    def setup(self, worker_metadata=None):
        self._touch("setup")

    def teardown(self):
        self._touch("teardown")

    def process(self, task):
        time.sleep(0.05)  # keep both actors busy
        return task


class FanOut(ProcessingStage):
    def ray_stage_spec(self):
        return {"is_fanout_stage": True}

    def process(self, task):
        return _batches(6)


class Misspelt(Plain):
    def ray_stage_spec(self):
        return {"is_actr_stage": True}


# ----------------------------------------------------------------- planning (pure)
@pytest.mark.parametrize("stage, mode", [
    (ForcedActor(), "actor"),
    (ForcedTask(), "task"),      # explicit False beats the setup override
    (GpuStage(), "actor"),
    (WithSetup(), "actor"),
    (Plain(), "task"),
])
def test_mode_choice(stage, mode):
    assert plan_stage(stage, GPU_CLUSTER).mode == mode


def test_actor_pool_counts_workers_per_node():
    # 3 CPUs per worker: one fits on each 4-CPU node, although 8 CPUs in total would hold 2.
    plan = plan_stage(WithSetup().with_(resources=Resources(cpus=3)),
                      ClusterResources.parse("2 nodes x 4 cpus"))
    assert (plan.pool_min, plan.pool_max) == (1, 2)
    assert plan_stage(WithSetup(), CPU_CLUSTER, ignore_head_node=True).pool_max == 4
    gpu = plan_stage(GpuStage(), GPU_CLUSTER)
    assert (gpu.pool_max, gpu.batch_size, gpu.gpus) == (4, 1, 1)


def test_spec_sizes_and_gpu_memory_fraction():
    class Fixed(WithSetup):
        def ray_stage_spec(self):
            return {"num_workers": 3}

    class Capped(Plain):
        def ray_stage_spec(self):
            return {"max_workers": 2, "max_calls_per_worker": 10}

    fixed = plan_stage(Fixed(), CPU_CLUSTER)
    assert fixed.fixed_pool and (fixed.pool_min, fixed.pool_max) == (3, 3)
    capped = plan_stage(Capped(), CPU_CLUSTER)
    assert (capped.mode, capped.pool_max, capped.max_calls_per_worker) == ("task", 2, 10)
    assert plan_stage(Plain(), CPU_CLUSTER).pool_max is None  # tasks: unbounded
    share = plan_stage(WithSetup().with_(resources=Resources(gpu_memory_gb=20)), GPU_CLUSTER)
    assert share.gpus == 0.25 and share.pool_max == 16


def test_unschedulable_on_declared_cluster_names_stage_request_and_cluster():
    with pytest.raises(UnschedulableStageError) as err:
        plan_stage(GpuStage().with_(name="embed"), ClusterResources.parse("1 node x 8 cpus"))
    msg = str(err.value)
    assert "'embed'" in msg and "gpus=1" in msg and "8 CPUs, 0 GPUs" in msg
    with pytest.raises(UnschedulableStageError, match="head node excluded"):
        plan_stage(Plain(), ClusterResources.parse("1 node x 8 cpus"), ignore_head_node=True)

    class Zero(Plain):
        def ray_stage_spec(self):
            return {"max_workers": 0}

    with pytest.raises(UnschedulableStageError, match="0 workers"):
        plan_stage(Zero(), CPU_CLUSTER)


def test_will_fuse_follows_ray_rules():
    task = plan_stage(Plain(), CPU_CLUSTER)
    actor = plan_stage(WithSetup(), CPU_CLUSTER)
    assert will_fuse(task, task) and will_fuse(task, actor)
    assert not will_fuse(actor, task)
    assert not will_fuse(task, plan_stage(Plain().with_(resources=Resources(cpus=2)), CPU_CLUSTER))
    assert not will_fuse(plan_stage(FanOut(), CPU_CLUSTER), task)


def test_invalid_spec_key_names_stage_and_key():
    with pytest.raises(ValueError, match=r"'misspelt'.*'is_actr_stage'"):
        RayDataStageAdapter(Misspelt())


def test_gpu_stage_without_batch_size_warns_and_uses_one(caplog):
    with caplog.at_level(logging.WARNING):
        adapter = RayDataStageAdapter(GpuStage())
    assert adapter.batch_size == 1
    assert any("batch_size=None" in r.getMessage() and "gpu_stage" in r.getMessage()
               for r in caplog.records)


def test_generated_names():
    assert create_actor_from_stage(WithSetup()).__name__ == "WithSetupActor"
    assert create_task_from_stage(Plain()).__name__ == "PlainTask"


# ----------------------------------------------------------------- live Ray
@contextlib.contextmanager
def pool_waits_for_its_actors() -> Iterator[None]:
    """Ray Data starts a pool's actors asynchronously: on a loaded machine the first actor can
    finish every batch before the second has started, and the second is then killed while it is
    still being created. Ray 2.60 can drop that kill ("Mismatched ActorID: ignoring KillActor")
    and the half-made actor's worker keeps its CPU for the rest of the session, so every later
    plan waits for it. ``wait_for_min_actors_s`` makes the pool wait for all its actors first."""
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.wait_for_min_actors_s
    context.wait_for_min_actors_s = 600
    try:
        yield
    finally:
        context.wait_for_min_actors_s = before


def test_names_appear_in_executed_plan_and_fusion_matches(ray_cluster):
    ds = ray_cluster.data.from_items(_batches(4))
    ds = RayDataStageAdapter(Plain()).process_dataset(ds)
    ds = RayDataStageAdapter(ForcedTask()).process_dataset(ds)
    actor = RayDataStageAdapter(WithSetup())
    ds = actor.process_dataset(ds)
    with pool_waits_for_its_actors():
        done = ds.materialize()
    stats = done.stats()
    assert "MapBatches(PlainTask)->MapBatches(ForcedTaskTask)" in stats  # fused, as predicted
    assert "MapBatches(WithSetupActor)" in stats
    assert actor.plan is not None and actor.plan.mode == "actor"
    assert sorted(t.task_id for t in done.to_pandas()["item"]) == ["t0", "t1", "t2", "t3"]


def test_setup_and_teardown_once_per_actor(ray_cluster, tmp_path):
    """Both actors of the pool run (see :func:`pool_waits_for_its_actors`), so the test counts
    setups without depending on timing."""
    with pool_waits_for_its_actors():
        adapter = RayDataStageAdapter(Recorder(str(tmp_path)))
        ds = adapter.process_dataset(ray_cluster.data.from_items(_batches(8)))
        assert len(ds.take_all()) == 8
    assert adapter.plan.fixed_pool and adapter.plan.pool_max == 2

    def pids(kind):
        return [p.name.split("-")[1] for p in tmp_path.glob(f"{kind}-*")]

    deadline = time.monotonic() + 120  # teardown runs as the pool stops; wait for it, not a guess
    while len(pids("teardown")) < len(pids("setup")) and time.monotonic() < deadline:
        time.sleep(0.2)
    setups, teardowns = pids("setup"), pids("teardown")
    assert len(setups) == 2 and len(set(setups)) == 2, "one setup per actor"
    assert sorted(teardowns) == sorted(setups), "one teardown per actor, in that actor"
    assert len(pids("node")) == 1, "setup_on_node once per node"


def test_fanout_output_is_spread_over_blocks(ray_cluster):
    ds = RayDataStageAdapter(FanOut()).process_dataset(ray_cluster.data.from_items([EmptyTask()]))
    done = ds.materialize()
    assert done.count() == 6
    assert done.num_blocks() == 6


@pytest.mark.parametrize("resources, asked", [
    (Resources(cpus=64), "cpus=64"),
    (Resources(cpus=1, gpus=1), "gpus=1"),
])
def test_unschedulable_stage_fails_fast(ray_cluster, resources, asked):
    stage = WithSetup().with_(name="too_big", resources=resources, batch_size=1)
    start = time.monotonic()
    with pytest.raises(UnschedulableStageError) as err:
        RayDataStageAdapter(stage).process_dataset(ray_cluster.data.from_items(_batches(1)))
    assert time.monotonic() - start < 5, "must fail before running, not after waiting"
    msg = str(err.value)
    assert "'too_big'" in msg and asked in msg and "2 CPUs, 0 GPUs" in msg


@pytest.mark.slow
def test_gpu_actor_sees_logical_gpu_in_own_cluster():
    """A separate Ray with one logical GPU; also checks the executor stops a Ray it started."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_probe.py")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["gpu_ids"] == [[0]] * 3
    assert result["cuda_visible_devices"] == ["0"] * 3
    assert result["mode"] == "actor" and result["batch_size"] == 1
    assert result["ray_initialized_after"] is False


class OnePerProcess(ProcessingStage):
    """Task mode, one worker at a time, each worker process retired after one call."""

    def ray_stage_spec(self):
        return {"max_workers": 1, "max_calls_per_worker": 1}

    def process(self, task):
        return task.derive(task.data, pid=os.getpid())


class DropAll(ProcessingStage):
    def process(self, task):
        return None


def test_max_calls_per_worker_retires_task_workers(ray_cluster):
    ds = RayDataStageAdapter(OnePerProcess()).process_dataset(
        ray_cluster.data.from_items(_batches(2)))
    pids = [t.metadata["pid"] for t in ds.to_pandas()["item"]]
    assert len(pids) == 2 and len(set(pids)) == 2


def test_stage_emitting_nothing_gives_empty_dataset(ray_cluster):
    ds = RayDataStageAdapter(DropAll()).process_dataset(
        ray_cluster.data.from_items([EmptyTask(), EmptyTask()]))
    assert ds.count() == 0


def _tag_batch(batch):
    """A companion map: marks each task (so the test sees it ran on every row)."""
    for task in batch["item"]:
        task.set_metadata("tagged", True)
    return batch


def _untag_batch(batch):
    for task in batch["item"]:
        task.set_metadata("loaded", True)
    return batch


def test_companion_maps_fuse_into_the_stage_tasks_where_ray_allows(ray_cluster):
    from curator_stages.backends.ray_data import apply_stages

    _untag_batch.__name__ = "LoadX"
    _tag_batch.__name__ = "WriteX"
    # Task-mode stages: the loader joins the first stage's operator, the writer the last's.
    ds = apply_stages(ray_cluster.data.from_items(_batches(4)), [Plain(), ForcedTask()],
                      before=_untag_batch, after=_tag_batch)
    done = ds.materialize()
    stats = done.stats()
    assert ("MapBatches(LoadX)->MapBatches(PlainTask)->MapBatches(ForcedTaskTask)"
            "->MapBatches(WriteX)") in stats
    tasks = list(done.to_pandas()["item"])
    assert sorted(t.task_id for t in tasks) == ["t0", "t1", "t2", "t3"]
    assert all(t.metadata.get("loaded") and t.metadata.get("tagged") for t in tasks)
    # After an actor stage Ray cannot fuse a task map: the writer is its own operator, and it
    # holds no CPU, so it never waits behind the CPUs the actor pool holds.
    ds = apply_stages(ray_cluster.data.from_items(_batches(4)), [WithSetup()],
                      before=_untag_batch, after=_tag_batch)
    done = ds.materialize()
    stats = done.stats()
    assert "MapBatches(LoadX)->MapBatches(WithSetupActor)" in stats
    assert "MapBatches(WithSetupActor)->MapBatches(WriteX)" not in stats
    assert "MapBatches(WriteX)" in stats
    assert all(t.metadata.get("tagged") for t in done.to_pandas()["item"])


def test_stage_errors_share_one_base_exported_by_the_package():
    import pickle

    import curator_stages
    from curator_stages.backends.ray_data import StageRunError, StageSetupError

    for cls in (StageSetupError, StageRunError):
        assert issubclass(cls, curator_stages.StageError)
        err = pickle.loads(pickle.dumps(cls("stage 'x': broke", "x")))
        assert isinstance(err, curator_stages.StageError) and err.stage_name == "x"


def test_one_environment_default_table():
    from curator_stages.runtime.env import LOCAL_RUN_ENV_DEFAULTS, RAY_ENV_DEFAULTS

    assert {k: LOCAL_RUN_ENV_DEFAULTS[k] for k in RAY_ENV_DEFAULTS} == RAY_ENV_DEFAULTS
    # The test session runs with the product's defaults (conftest applies the same table).
    assert all(os.environ.get(k) for k in LOCAL_RUN_ENV_DEFAULTS)
