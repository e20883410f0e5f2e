"""What runs inside Ray workers: per-node setup, per-process stage caches, the batch format.

Why each choice is made:

- Tasks travel under the ``"item"`` column as pickled objects, both ways; output columns are
  built with ``np.empty(n, dtype=object)`` and filled one by one so that a task object which
  looks like a sequence is never split apart by numpy.
- ``setup_on_node`` must run once per node per stage, whether or not the executor's per-node
  pass ran first (the Prefect layer calls ``apply_stages`` directly). A marker file in Ray's
  per-session temp dir, taken under a file lock, makes it once per node and session.
- A task-mode stage that overrides ``setup`` is set up once per worker process and kept in
  ``_PROCESS_STAGES``, a small least-recently-used cache (a finished plan's stages are torn
  down and released as newer ones arrive, or at process exit); a setup that failed is
  remembered in ``_PROCESS_SETUP_ERRORS`` so the next task landing in that process fails at
  once instead of loading the model again. A stage without ``setup`` is never kept: it is
  used as it arrives with the task.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from curator_stages.backends.ray_data.errors import StageSetupError, setup_error
from curator_stages.stage import ProcessingStage, overrides_setup

logger = logging.getLogger(__name__)


def stage_key(stage: ProcessingStage) -> str:
    """A file-name-safe key for per-node setup markers: equal identities share node setup."""
    try:
        digest = stage.identity_hash()[:16]
    except Exception:  # noqa: BLE001 - an identity that cannot be computed: never share
        digest = uuid.uuid4().hex[:16]
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in stage.stage_name)
    return f"{safe_name}-{digest}"


def to_object_column(tasks: Iterable[Any]) -> np.ndarray:
    """A 1-D object array holding each task as one element (never split into its parts)."""
    items = list(tasks)
    column = np.empty(len(items), dtype=object)
    for i, task in enumerate(items):
        column[i] = task
    return column


def to_output_batch(tasks: Iterable[Any]) -> Any:
    """The batch a worker returns: one ``"item"`` column of pickled task objects.

    Built directly as Ray's pickled-object Arrow column (public in ``ray.data.extensions``), so
    Ray Data does not first try (and fail, with a warning per worker) to convert task objects to
    native Arrow types.
    """
    import pyarrow as pa
    from ray.data.extensions import ArrowPythonObjectArray

    return pa.table({"item": ArrowPythonObjectArray.from_objects(to_object_column(tasks))})


def worker_metadata(stage: ProcessingStage, mode: str) -> dict[str, Any]:
    """What a worker tells ``setup``/``setup_on_node`` about itself."""
    import ray

    ctx = ray.get_runtime_context()
    meta: dict[str, Any] = {
        "stage_name": stage.stage_name,
        "mode": mode,
        "node_id": ctx.get_node_id(),
        "worker_id": ctx.get_worker_id(),
        "pid": os.getpid(),
    }
    try:
        meta["gpu_ids"] = list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - not inside a worker with accelerator info
        meta["gpu_ids"] = []
    return meta


def node_info() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {
        "node_id": ctx.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": os.uname().nodename,
    }


def ensure_setup_on_node(stage: ProcessingStage, key: str,
                         metadata: dict[str, Any] | None = None) -> bool:
    """Run ``stage.setup_on_node`` unless it already succeeded on this node in this Ray session.

    Returns True when this call ran it. Workers of the same stage on one node serialise on a
    file lock, so the second one waits for the first to finish instead of unpacking twice.
    """
    if type(stage).setup_on_node is ProcessingStage.setup_on_node:
        return False
    import ray

    ctx = ray.get_runtime_context()
    root = Path(ctx.get_temp_dir()) / "curator_stages_setup_on_node" / ctx.get_session_name()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f"{key}-{ctx.get_node_id()}.done"
    if marker.exists():
        return False
    with open(root / f"{key}-{ctx.get_node_id()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.exists():
                return False
            meta = metadata or worker_metadata(stage, "node")
            try:
                stage.setup_on_node(node_info(), meta)
            except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
                raise setup_error(stage, "setup_on_node", exc, meta) from exc
            marker.write_text(str(os.getpid()))
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _teardown_once(stage: ProcessingStage, guard: dict[str, bool]) -> None:
    """Call ``stage.teardown()`` at most once; never raise (it runs from finalizers)."""
    if guard.get("done"):
        return
    guard["done"] = True
    try:
        stage.teardown()
    except Exception:  # noqa: BLE001 - best effort by contract
        logger.exception("stage %r: teardown failed", stage.stage_name)


#: How many set-up task-mode stages one worker process keeps. A stage that is evicted is torn
#: down; it is set up again if a task of it comes back. Bounded so that a long-lived worker does
#: not keep a finished plan's stages (and what they hold) for its whole life.
PROCESS_STAGE_CACHE_SIZE = 4

#: Per worker process: task-mode stages already set up (only those that override ``setup``),
#: most recently used last, with their teardown guards.
_PROCESS_STAGES: "OrderedDict[str, tuple[ProcessingStage, dict[str, bool]]]" = OrderedDict()
#: Per worker process: the setup error of a stage whose setup failed here, by stage key.
_PROCESS_SETUP_ERRORS: "OrderedDict[str, StageSetupError]" = OrderedDict()


def _remember(cache: "OrderedDict[str, Any]", key: str, value: Any) -> list[Any]:
    """Put ``value`` last in ``cache``; returns what fell out over the bound."""
    cache[key] = value
    cache.move_to_end(key)
    evicted = []
    while len(cache) > PROCESS_STAGE_CACHE_SIZE:
        evicted.append(cache.popitem(last=False)[1])
    return evicted


def _teardown_cached() -> None:
    """At process exit: tear down the stages still cached (each at most once)."""
    while _PROCESS_STAGES:
        stage, guard = _PROCESS_STAGES.popitem(last=False)[1]
        _teardown_once(stage, guard)


atexit.register(_teardown_cached)


def _task_mode_stage(stage: ProcessingStage, key: str) -> ProcessingStage:
    """The set-up copy of ``stage`` in this worker process (setup once per process).

    Only a stage that overrides ``setup`` is kept (there is nothing to reuse otherwise, and a
    stage may be large: a dedup filter holds its id set); at most
    :data:`PROCESS_STAGE_CACHE_SIZE` are, the least recently used torn down first. A setup that
    failed is not tried again in the same process: the next task that lands here (Ray Data
    keeps feeding the worker until the plan aborts, and Ray retries failed tasks) gets the same
    error at once instead of loading the model again.
    """
    ready = _PROCESS_STAGES.get(key)
    if ready is not None:
        _PROCESS_STAGES.move_to_end(key)
        return ready[0]
    failed = _PROCESS_SETUP_ERRORS.get(key)
    if failed is not None:
        raise failed
    meta = worker_metadata(stage, "task") if (
        overrides_setup(stage)
        or type(stage).setup_on_node is not ProcessingStage.setup_on_node) else None
    ensure_setup_on_node(stage, key, meta)
    if not overrides_setup(stage):
        return stage
    try:
        stage.setup(meta)
    except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
        err = setup_error(stage, "setup", exc, meta)
        _remember(_PROCESS_SETUP_ERRORS, key, err)
        raise err from exc
    for old_stage, guard in _remember(_PROCESS_STAGES, key, (stage, {"done": False})):
        _teardown_once(old_stage, guard)
    return stage
