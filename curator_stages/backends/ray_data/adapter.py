"""Turn a stage into Ray Data work: a task function or an actor class, with resources and pool.

Why each choice is made:

- Tasks travel under the ``"item"`` column as pickled objects, both ways; output columns are
  built with ``np.empty(n, dtype=object)`` and filled one by one so that a task object which
  looks like a sequence is never split apart by numpy.
- ``setup_on_node`` must run once per node per stage, whether or not the executor's per-node
  pass ran first (the Prefect layer calls :func:`apply_stages` directly). A marker file in
  Ray's per-session temp dir, taken under a file lock, makes it once per node and session.
- Ray Data wraps our actor class in its own ``_MapWorker`` and never calls a
  ``__ray_shutdown__`` of ours; on a normal finish it deletes our instance, so teardown hangs
  off ``weakref.finalize``. On an aborted plan Ray kills the actor and nothing runs: teardown is
  best effort, and runs at most once.
- Ray Data waits forever on a request no node can satisfy, so the plan is checked against the
  live cluster before ``map_batches`` is called (see :mod:`.planning`).
- A worker whose ``setup``/``setup_on_node`` raises fails the plan at once with a
  :class:`StageSetupError` naming the stage, the node and the cause. Ray Data 2.60 does not
  restart an actor whose constructor raised (its ``max_consecutive_actor_init_deaths`` budget is
  0 by default) and does not retry a task's user exception, so there is no restart loop; what
  reaches the driver, though, is an ``ActorDiedError`` or ``RayTaskError(UserCodeException)``
  whose text buries the cause in Ray frames. :func:`surfaced_stage_errors` turns it back into
  the one-line :class:`StageSetupError` wherever the driver pulls results, and does the same
  for any error whose message starts with ``stage '<name>':`` (the convention of this package),
  rebuilt as its own type (``OutputWriteError``, ``StageInputError``...) when it can be.
- Worker *deaths* (a killed or crashed process) are retried by Ray Data's own defaults in 2.60:
  tasks ``max_retries=-1``, actors ``max_restarts=-1`` and ``max_task_retries=-1``, and a
  retried map task re-yields its outputs under the same object ids, so nothing is duplicated
  (tests/test_faults.py kills workers mid-stage). The adapter sets no retry options of its own:
  Ray Data fuses adjacent maps only when their remote args are equal, and task options
  (``max_retries``) and actor options (``max_restarts``) can never be equal.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import time
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from curator_stages.backends.ray_data.cluster import ClusterResources
from curator_stages.backends.ray_data.planning import (
    StagePlan,
    UnschedulableStageError,
    effective_batch_size,
    plan_stage,
    validate_spec,
)
from curator_stages.stage import GlobalStage, ProcessingStage, overrides_setup
from curator_stages.tasks import Task

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

logger = logging.getLogger(__name__)

#: Seconds to wait for busy resources (for example actors of a finished stage still shutting
#: down) before a stage that fits the cluster's totals is declared unschedulable right now.
DEFAULT_WAIT_FOR_RESOURCES_S = 10.0


# --------------------------------------------------------------------------- errors
class StageSetupError(RuntimeError):
    """A stage's ``setup`` or ``setup_on_node`` raised on a worker: the stage cannot run there.

    The message names the stage, where it failed and the cause in one line. Ray does not restart
    or retry the worker (a broken model path fails every attempt the same way); a transient
    cause (a download that timed out) is retried by the stage task's Prefect ``retries``.
    """

    def __init__(self, message: str, stage_name: str = "") -> None:
        super().__init__(message)
        self.stage_name = stage_name
        #: Ray's full error text (remote traceback), when translated on the driver.
        self.remote_traceback = ""

    def __reduce__(self):  # keep stage_name through pickling (Prefect states, Ray errors)
        return (type(self), (str(self), self.stage_name))


def setup_error(stage: ProcessingStage, hook: str, exc: BaseException,
                metadata: dict[str, Any] | None) -> StageSetupError:
    """The :class:`StageSetupError` for ``exc`` raised by ``stage.<hook>`` on this worker."""
    meta = metadata or {}
    node = str(meta.get("node_id") or "?")[:12]
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line: the driver parses it
    return StageSetupError(
        f"stage {stage.stage_name!r}: {hook}() failed on node {node} (pid {meta.get('pid', '?')}"
        f", {meta.get('mode', 'worker')} worker): {cause}. The stage did not run; fix the cause "
        "(model path, credentials, memory, dependencies) and re-run",
        stage.stage_name,
    )


class StageRunError(RuntimeError):
    """A stage raised on a worker and its exception type could not be rebuilt on the driver;
    the message is the original one (it names the stage), prefixed by the original type."""

    def __init__(self, message: str, stage_name: str = "") -> None:
        super().__init__(message)
        self.stage_name = stage_name
        self.remote_traceback = ""

    def __reduce__(self):
        return (type(self), (str(self), self.stage_name))


#: The line a stage's own error leaves in Ray's remote traceback: ``<type>: stage '<name>': ...``
#: (every error of this package names its stage first, see TEAM.md).
_STAGE_ERROR_LINE = re.compile(r"^(?P<cls>[A-Za-z_][\w.]*): (?P<msg>stage '(?P<stage>[^']*)'.*)$",
                               re.MULTILINE)


def _exception_class(qualified: str) -> type[BaseException] | None:
    """The exception class a traceback line names, if it is ours or a builtin."""
    import builtins
    import importlib

    module_name, _, name = qualified.rpartition(".")
    if not module_name:
        cls = getattr(builtins, name, None)
    elif module_name == "curator_stages" or module_name.startswith("curator_stages."):
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            cls = None
    else:
        cls = None
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None


def stage_error_from(exc: BaseException) -> BaseException | None:
    """The stage's own exception carried (as text) by a Ray error, rebuilt; None if none.

    Ray hands the driver an ``ActorDiedError`` (an actor's constructor raised) or a
    ``RayTaskError(UserCodeException)`` whose cause is not the original exception object, so
    the error is recognised by the last ``<type>: stage '<name>': ...`` line of the remote
    traceback and rebuilt as that type (a class of this package or a builtin, constructed from
    its message), else as :class:`StageRunError`.
    """
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover - ray is a dependency
        return None
    if not isinstance(exc, RayError):
        return None
    text = "\n".join(filter(None, [str(exc), getattr(exc, "traceback_str", "") or ""]))
    matches = list(_STAGE_ERROR_LINE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    qualified, message, stage_name = match.group("cls"), match.group("msg"), match.group("stage")
    cls = _exception_class(qualified)
    err: BaseException | None = None
    if cls is not None:
        try:
            err = cls(message)
        except Exception:  # noqa: BLE001 - a constructor that needs more than a message
            err = None
    if err is None or str(err) != message:
        err = StageRunError(f"{qualified.rsplit('.', 1)[-1]}: {message}", stage_name)
    if isinstance(err, OSError):
        errno_match = re.search(r"\(errno (\d+)\)", message)
        if errno_match:
            err.errno = int(errno_match.group(1))
    if not getattr(err, "stage_name", ""):
        try:
            err.stage_name = stage_name  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - a class with __slots__
            pass
    try:
        err.remote_traceback = text  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover
        pass
    return err


def stage_setup_error_from(exc: BaseException) -> StageSetupError | None:
    """The :class:`StageSetupError` carried by a Ray error, or None."""
    err = stage_error_from(exc)
    return err if isinstance(err, StageSetupError) else None


@contextlib.contextmanager
def surfaced_stage_errors() -> Iterator[None]:
    """Around code that pulls a Ray Data plan's results: an error a stage raised on a worker
    comes out as itself (type and one-line message naming the stage, e.g. a
    :class:`StageSetupError` or an ``OutputWriteError``), not buried in Ray's wrapper."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unchanged unless a stage error is inside
        err = stage_error_from(exc)
        if err is None:
            raise
        raise err from None


# --------------------------------------------------------------------------- helpers
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

    Built directly as Ray's pickled-object Arrow column, so Ray Data does not first try (and
    fail, with a warning per worker) to convert task objects to native Arrow types. Falls back
    to the plain object-array form if that internal type moves.
    """
    column = to_object_column(tasks)
    try:
        import pyarrow as pa
        from ray.data._internal.object_extensions.arrow import ArrowPythonObjectArray
    except ImportError:  # pragma: no cover - depends on Ray's internal layout
        return {"item": column}
    return pa.table({"item": ArrowPythonObjectArray.from_objects(column)})


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


# --------------------------------------------------------------------------- actor / task
def create_actor_from_stage(stage: ProcessingStage) -> type:
    """A callable class for ``map_batches``: one instance per actor, named ``<Stage>Actor``.

    The constructor runs ``setup_on_node`` (once per node) and ``setup``; ``__call__`` runs
    the stage on the batch's tasks; ``teardown`` runs when Ray Data releases the instance.
    """
    key = stage_key(stage)

    class _StageActor:
        def __init__(self) -> None:
            self._stage = stage
            meta = worker_metadata(stage, "actor")
            ensure_setup_on_node(stage, key, meta)
            try:
                stage.setup(meta)
            except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
                raise setup_error(stage, "setup", exc, meta) from exc
            self._teardown_guard: dict[str, bool] = {"done": False}
            self._finalizer = weakref.finalize(self, _teardown_once, stage, self._teardown_guard)

        def __call__(self, batch: dict[str, np.ndarray]) -> Any:
            return to_output_batch(self._stage.run(list(batch["item"])))

        def teardown(self) -> None:
            """Release the stage's resources now (also runs when the instance is deleted)."""
            self._finalizer()

    name = f"{type(stage).__name__}Actor"
    _StageActor.__name__ = name
    _StageActor.__qualname__ = name
    return _StageActor


#: Per worker process: stages already set up for task mode, by stage key.
_PROCESS_STAGES: dict[str, ProcessingStage] = {}
#: Per worker process: the setup error of a stage whose setup failed here, by stage key.
_PROCESS_SETUP_ERRORS: dict[str, StageSetupError] = {}


def _task_mode_stage(stage: ProcessingStage, key: str) -> ProcessingStage:
    """The set-up copy of ``stage`` in this worker process (setup once per process).

    A setup that failed is not tried again in the same process: the next task that lands
    here (Ray Data keeps feeding the worker until the plan aborts, and Ray retries failed
    tasks) gets the same error at once instead of loading the model again.
    """
    ready = _PROCESS_STAGES.get(key)
    if ready is not None:
        return ready
    failed = _PROCESS_SETUP_ERRORS.get(key)
    if failed is not None:
        raise failed
    meta = worker_metadata(stage, "task")
    ensure_setup_on_node(stage, key, meta)
    if overrides_setup(stage):
        try:
            stage.setup(meta)
        except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
            err = setup_error(stage, "setup", exc, meta)
            _PROCESS_SETUP_ERRORS[key] = err
            raise err from exc
        atexit.register(_teardown_once, stage, {"done": False})
    _PROCESS_STAGES[key] = stage
    return stage


def create_task_from_stage(stage: ProcessingStage) -> Callable[[dict[str, np.ndarray]], Any]:
    """A function for ``map_batches`` named ``<Stage>Task``.

    A task-mode stage that still overrides ``setup`` (the spec forced task mode) is set up
    once per worker process and torn down at process exit.
    """
    key = stage_key(stage)

    def run_stage(batch: dict[str, np.ndarray]) -> Any:
        ready = _task_mode_stage(stage, key)
        return to_output_batch(ready.run(list(batch["item"])))

    name = f"{type(stage).__name__}Task"
    run_stage.__name__ = name
    run_stage.__qualname__ = name
    return run_stage


# --------------------------------------------------------------------------- adapter
class RayDataStageAdapter:
    """Runs one :class:`ProcessingStage` over a Ray Data dataset of tasks."""

    def __init__(self, stage: ProcessingStage,
                 wait_for_resources_s: float = DEFAULT_WAIT_FOR_RESOURCES_S) -> None:
        if not isinstance(stage, ProcessingStage):
            raise TypeError(
                f"RayDataStageAdapter needs a ProcessingStage, got {type(stage).__name__} "
                f"({stage!r}); GlobalStage and CompositeStage go through apply_stages()"
            )
        self.stage = stage
        self.spec = validate_spec(stage)
        self._batch_size = effective_batch_size(stage)  # warns once for a GPU stage
        self.wait_for_resources_s = wait_for_resources_s
        #: The plan chosen by the last :meth:`process_dataset` (for reports).
        self.plan: StagePlan | None = None
        #: The ``map_batches`` arguments of the last :meth:`process_dataset`.
        self.map_kwargs: dict[str, Any] = {}

    @property
    def batch_size(self) -> int | None:
        return self._batch_size

    def plan_for(self, cluster: ClusterResources, ignore_head_node: bool = False) -> StagePlan:
        """The plan on a given (live or declared) cluster, without running anything."""
        return plan_stage(self.stage, cluster, ignore_head_node, warn=False)

    def plan_live(self, ignore_head_node: bool = False) -> StagePlan:
        """The plan on the live cluster: impossible requests fail at once, busy ones wait a bit.

        Totals decide whether a worker can ever fit; what is available now sizes the pool.
        Resources still held by a stage that just finished are released within seconds, so a
        stage that fits the totals waits up to ``wait_for_resources_s`` before failing.
        """
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                f"stage {self.stage.stage_name!r}: Ray is not initialised; connect first "
                "(ray.init(...), RAY_ADDRESS, or run through RayDataExecutor) so the stage is "
                "planned against the cluster it will run on"
            )
        plan_stage(self.stage, ClusterResources.from_ray(available=False), ignore_head_node,
                   warn=False)
        deadline = time.monotonic() + self.wait_for_resources_s
        while True:
            available = ClusterResources.from_ray(available=True)
            try:
                return plan_stage(self.stage, available, ignore_head_node, warn=False)
            except UnschedulableStageError as exc:
                if time.monotonic() >= deadline:
                    raise UnschedulableStageError(
                        f"{exc} (resources are busy: waited {self.wait_for_resources_s:g}s for "
                        "other work to release them)"
                    ) from exc
            time.sleep(0.2)

    def process_dataset(self, dataset: "ray.data.Dataset", ignore_head_node: bool = False,
                        before: BatchFn | None = None,
                        after: BatchFn | None = None) -> "ray.data.Dataset":
        """Add this stage to ``dataset``'s plan (lazy); fails now if it could never run.

        ``before``/``after``: row-for-row batch functions (``{"item": tasks}`` in and out) that
        run in the same Ray task as the stage where Ray Data can fuse them: they get the
        stage's own CPU request, label selector and pool size. The stage task uses them to load
        its input checkpoint and write its output checkpoint inside the workers, so tasks are
        not shipped to a driver and back (see :func:`companion_map`).
        """
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        plan = self.plan_live(ignore_head_node)
        self.plan = plan
        kwargs: dict[str, Any] = {
            "batch_size": plan.batch_size,
            "batch_format": "numpy",
            "zero_copy_batch": True,
            "num_cpus": plan.cpus,
        }
        if plan.gpus > 0:
            kwargs["num_gpus"] = plan.gpus
        if ignore_head_node:
            selector = off_head_label_selector()
            if selector:
                kwargs["label_selector"] = selector
        if plan.mode == "actor":
            fn: Any = create_actor_from_stage(self.stage)
            if plan.fixed_pool:
                kwargs["compute"] = ActorPoolStrategy(size=plan.pool_max)
            else:
                kwargs["compute"] = ActorPoolStrategy(min_size=plan.pool_min,
                                                      max_size=plan.pool_max)
        else:
            fn = create_task_from_stage(self.stage)
            kwargs["compute"] = TaskPoolStrategy(size=plan.pool_max)
            if plan.max_calls_per_worker:
                kwargs["max_calls"] = plan.max_calls_per_worker
        if before is not None:
            dataset = companion_map(dataset, before, kwargs, plan, batch_size=1,
                                    fuse=plan.gpus <= 0)
        self.map_kwargs = kwargs
        out = dataset.map_batches(fn, **kwargs)
        if plan.is_fanout:
            out = out.repartition(target_num_rows_per_block=plan.rows_per_block_after_fanout)
        if after is not None:
            out = companion_map(out, after, kwargs, plan, batch_size=None,
                                fuse=fuses_after(plan))
        logger.info("stage plan: %s", plan.describe())
        return out


#: A batch function over task rows: ``{"item": object array}`` in, the same shape out.
BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def companion_map(dataset: "ray.data.Dataset", fn: BatchFn, stage_kwargs: dict[str, Any],
                  plan: StagePlan, batch_size: int | None, fuse: bool) -> "ray.data.Dataset":
    """``fn`` as a task-pool ``map_batches`` placed so Ray Data fuses it with the stage's map.

    Ray fuses task->task maps of equal remote arguments and equal pool size, and a task map
    into a following actor map when the task pool's size is the actor pool's maximum. So a
    fusable companion gets the stage's CPUs, selector, ``max_calls`` and ``pool_max``. One that
    cannot fuse (after an actor, a fan-out or a GPU stage) asks for no CPU at all, so it never
    waits behind the CPUs the stage's own workers hold, and runs at most ``pool_max`` at once.
    """
    from ray.data import TaskPoolStrategy

    kwargs: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy",
                              "zero_copy_batch": True}
    if fuse:
        kwargs["num_cpus"] = plan.cpus
        for key in ("label_selector", "max_calls"):
            if key in stage_kwargs:
                kwargs[key] = stage_kwargs[key]
        kwargs["compute"] = TaskPoolStrategy(size=plan.pool_max)
    else:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        kwargs["num_cpus"] = 0
        kwargs["compute"] = TaskPoolStrategy(size=max(1, plan.pool_max or cpus))
    return dataset.map_batches(fn, **kwargs)


def off_head_label_selector() -> dict[str, str]:
    """A label selector that keeps workers off the head node.

    Ray schedules by resources and treats the head like any node; every node carries its id
    as the built-in label ``ray.io/node-id``, so "not the head's id" keeps work elsewhere.
    """
    heads = [n.node_id for n in ClusterResources.from_ray(available=False).nodes if n.is_head]
    return {"ray.io/node-id": f"!{heads[0]}"} if heads else {}


def fuses_after(plan: StagePlan) -> bool:
    """Whether a task map placed after this stage's map runs in the same Ray task."""
    return plan.gpus <= 0 and plan.mode != "actor" and not plan.is_fanout


def prepare_parts_fn(stage: GlobalStage) -> BatchFn:
    """Batch function: ``stage.map_local`` of each document task, kept in its metadata."""
    from curator_stages.tasks import DocumentBatch

    key = stage.prepared_key

    def prepare(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for task in batch["item"]:
            if isinstance(task, DocumentBatch):
                # A new dict: fan-out siblings may share their parent's metadata object.
                task._metadata = {**task._metadata, key: stage.map_local(task)}
        return batch

    prepare.__name__ = prepare.__qualname__ = f"{type(stage).__name__}Prepare"
    return prepare


def strip_parts_fn(key: str) -> BatchFn:
    """Batch function: removes the streamed fit parts before the tasks go on."""

    def strip(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for task in batch["item"]:
            meta = getattr(task, "_metadata", None)
            if meta and key in meta:
                task._metadata = {k: v for k, v in meta.items() if k != key}
        return batch

    strip.__name__ = strip.__qualname__ = "DropPreparedParts"
    return strip


def _then(first: BatchFn | None, second: BatchFn) -> BatchFn:
    if first is None:
        return second

    def both(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return second(first(batch))

    both.__name__ = both.__qualname__ = f"{first.__name__}+{second.__name__}"
    return both


def apply_stages(dataset: "ray.data.Dataset",
                 stages: Iterable[ProcessingStage | GlobalStage | Any],
                 ignore_head_node: bool = False,
                 plans: list[StagePlan] | None = None,
                 before: BatchFn | None = None,
                 after: BatchFn | None = None) -> "ray.data.Dataset":
    """Add a sequence of execution stages (composites decomposed) to ``dataset``'s plan.

    A :class:`GlobalStage` cuts the stream: the upstream dataset is materialised, ``fit`` is
    called once on it, and the per-task stage it returns is applied like any other. A global
    stage that ``prepare_in_stream`` gets its per-task parts computed before the cut, inside
    the upstream stage's tasks. When ``plans`` is given, each stage's :class:`StagePlan` is
    appended to it, in order. ``before`` runs on every input row ahead of the first stage and
    ``after`` on every output row of the last, each fused into that stage's Ray tasks where
    Ray Data allows it.
    """
    from ray.data import DataContext

    from curator_stages.pipeline import decompose

    # Tasks travel as pickled Python objects by design; saying so stops Ray Data's warning (one
    # per worker) that it could not convert the "item" column to Arrow.
    DataContext.get_current().enable_fallback_to_arrow_object_ext_type = True
    ds = dataset
    execution = list(decompose(stages))
    pending_before = before
    last: RayDataStageAdapter | None = None
    for i, stage in enumerate(execution):
        if isinstance(stage, GlobalStage):
            if stage.prepare_in_stream:
                prepare = prepare_parts_fn(stage)
                if last is not None and last.plan is not None:
                    ds = companion_map(ds, prepare, last.map_kwargs, last.plan, batch_size=None,
                                       fuse=fuses_after(last.plan))
                else:
                    pending_before = _then(pending_before, prepare)
            if pending_before is not None:  # no stage ahead of the barrier to fuse with
                ds = ds.map_batches(pending_before, batch_size=1, batch_format="numpy",
                                    zero_copy_batch=True)
                pending_before = None
            ds = ds.materialize()
            per_task = stage.fit(ds)
            if not isinstance(per_task, ProcessingStage):
                raise TypeError(
                    f"global stage {stage.stage_name!r}: fit() must return a ProcessingStage, "
                    f"got {type(per_task).__name__}"
                )
            if stage.prepare_in_stream:
                pending_before = strip_parts_fn(stage.prepared_key)
            stage = per_task
        adapter = RayDataStageAdapter(stage)
        ds = adapter.process_dataset(ds, ignore_head_node=ignore_head_node,
                                     before=pending_before,
                                     after=after if i == len(execution) - 1 else None)
        pending_before = None
        last = adapter
        if plans is not None and adapter.plan is not None:
            plans.append(adapter.plan)
    if not execution:
        for fn in (before, after):
            if fn is not None:
                ds = ds.map_batches(fn, batch_size=1, batch_format="numpy", zero_copy_batch=True)
    return ds
