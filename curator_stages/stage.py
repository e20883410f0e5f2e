"""Stage base classes: the contract every processing step follows.

A stage says *what* to do to a task; the backend decides *how* (Ray task or actor, how many,
with which resources). Stages are plain picklable objects: public attributes are parameters
(and so part of the stage's identity for caching), state built in ``setup`` lives in
attributes that start with an underscore.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import inspect
import json
import re
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

import pyarrow as pa

from curator_stages.resources import Resources
from curator_stages.tasks import DROPPED_PREFIX, DocumentBatch, StagePerfStats, Task

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

InT = TypeVar("InT", bound=Task)
OutT = TypeVar("OutT", bound=Task)


class RayStageSpecKeys(str, enum.Enum):
    """Keys a stage may put in ``ray_stage_spec()``; the adapter rejects any other key."""

    IS_ACTOR_STAGE = "is_actor_stage"
    IS_FANOUT_STAGE = "is_fanout_stage"
    NUM_WORKERS = "num_workers"
    MIN_WORKERS = "min_workers"
    MAX_WORKERS = "max_workers"
    MAX_CALLS_PER_WORKER = "max_calls_per_worker"
    ROWS_PER_BLOCK_AFTER_FANOUT = "rows_per_block_after_fanout"


class StageInputError(ValueError):
    """A task reached a stage without an attribute or column the stage declared it needs."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _jsonable(value: Any) -> Any:
    """A stable, JSON-serialisable view of a parameter value for stage identity."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Resources):
        return {"cpus": value.cpus, "gpus": value.gpus, "gpu_memory_gb": value.gpu_memory_gb}
    if isinstance(value, ProcessingStage):
        return value.identity()
    if callable(value):
        return callable_identity(value)
    if hasattr(value, "model_dump"):  # pydantic models
        return _jsonable(value.model_dump())
    if hasattr(value, "__dict__"):
        return {"type": f"{type(value).__module__}.{type(value).__qualname__}",
                "attrs": _jsonable({k: v for k, v in vars(value).items() if not k.startswith("_")})}
    return repr(value)


def callable_identity(fn: Callable) -> str:
    """Identity of a function: its qualified name and a hash of its source (or bytecode)."""
    try:
        body = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        body = code.co_code.hex() if code is not None else repr(fn)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}:{digest}"


class ProcessingStage(ABC, Generic[InT, OutT]):
    """One processing step.

    Class attributes give defaults; ``with_`` returns a configured copy. ``batch_size`` is the
    number of *tasks* per call (a task already holds many documents), ``None`` means whatever
    block the backend hands over.
    """

    name: str = ""
    resources: Resources = Resources()
    batch_size: int | None = 1
    #: Bump when the stage's output changes for the same parameters (invalidates checkpoints).
    version: str = "1"

    # ------------------------------------------------------------------ processing
    @abstractmethod
    def process(self, task: InT) -> OutT | list[OutT] | None:
        """Process one task: return a task, a list of tasks (fan-out) or None (drop)."""

    def process_batch(self, tasks: list[InT]) -> list[OutT]:
        """Process several tasks in one call; override when a batched form is faster."""
        out: list[OutT] = []
        for task in tasks:
            out.extend(self._normalise_result(task, self.process(task)))
        return out

    # ------------------------------------------------------------------ lifecycle
    def setup_on_node(self, node_info: dict[str, Any] | None = None,
                      worker_metadata: dict[str, Any] | None = None) -> None:
        """Once per node before any worker starts: download or unpack what workers will load."""

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        """Once per worker: load models or open connections. Overriding it makes the stage an actor."""

    def teardown(self) -> None:
        """Release what ``setup`` took. Best effort and idempotent: it may run twice or never."""

    # ------------------------------------------------------------------ declarations
    def inputs(self) -> tuple[list[str], list[str]]:
        """(task attributes, data columns) this stage needs on its input tasks."""
        return [], []

    def outputs(self) -> tuple[list[str], list[str]]:
        """(task attributes, data columns) this stage guarantees on its output tasks."""
        return [], []

    def ray_stage_spec(self) -> dict[str, Any]:
        """Execution hints for the Ray backend, keyed by :class:`RayStageSpecKeys` values."""
        return {}

    # ------------------------------------------------------------------ identity
    @property
    def stage_name(self) -> str:
        return self.name or _snake(type(self).__name__)

    def params(self) -> dict[str, Any]:
        """The parameters that define this stage's output: its public attributes."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        params.setdefault("resources", self.resources)
        params.setdefault("batch_size", self.batch_size)
        # Execution-only settings do not change the output.
        for key in ("name", "resources", "batch_size"):
            params.pop(key, None)
        return params

    def identity(self) -> dict[str, Any]:
        """Class, version and parameters: equal identities on equal input give equal output."""
        cls = type(self)
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "version": str(self.version),
            "params": _jsonable(self.params()),
        }

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_(self, **kwargs: Any) -> "ProcessingStage[InT, OutT]":
        """A configured copy: ``stage.with_(name=..., resources=..., batch_size=..., any_param=...)``."""
        clone = copy.copy(self)
        for key, value in kwargs.items():
            if key not in ("name", "resources", "batch_size", "version") and not hasattr(self, key):
                raise AttributeError(
                    f"stage {self.stage_name!r}: with_() got unknown field {key!r}; "
                    f"known fields: name, resources, batch_size, {', '.join(sorted(self.params()))}"
                )
            if key == "resources" and not isinstance(value, Resources):
                raise TypeError(f"stage {self.stage_name!r}: resources must be a Resources instance")
            setattr(clone, key, value)
        return clone

    # ------------------------------------------------------------------ running
    def validate_input(self, task: Task) -> None:
        attrs, columns = self.inputs()
        missing_attrs = [a for a in attrs if not hasattr(task, a)]
        if missing_attrs:
            raise StageInputError(
                f"stage {self.stage_name!r}: input task {task.task_id!r} "
                f"({type(task).__name__}) lacks attribute(s) {missing_attrs}; "
                "put a stage that provides them before this one"
            )
        if columns and isinstance(task, DocumentBatch):
            have = set(task.data.column_names)
            missing = [c for c in columns if c not in have]
            if missing:
                raise StageInputError(
                    f"stage {self.stage_name!r}: input task {task.task_id!r} lacks column(s) "
                    f"{missing} (has {sorted(have)}); add a stage that creates them or set the "
                    "stage's field/column parameter to an existing column"
                )

    def run(self, tasks: list[InT]) -> list[OutT]:
        """Validate, process and record: what every backend calls for one batch of tasks.

        Each output task gets a :class:`StagePerfStats`. A document task that a stage drops
        entirely becomes an empty batch that carries the drop count, so the run's accounting
        never loses documents to a ``None``.
        """
        for task in tasks:
            self.validate_input(task)
        if type(self).process_batch is ProcessingStage.process_batch:
            out: list[OutT] = []
            for task in tasks:
                start = time.perf_counter()
                produced = self._normalise_result(task, self.process(task))
                self._record(task, produced, time.perf_counter() - start, out)
            return out
        start = time.perf_counter()
        produced = self.process_batch(tasks)
        elapsed = time.perf_counter() - start
        items_in = sum(t.num_items for t in tasks)
        share = elapsed / max(len(produced), 1)
        for i, task in enumerate(produced):
            stats = StagePerfStats(
                self.stage_name, share, items_in if i == 0 else 0, task.num_items,
                dict(getattr(task, "_pending_metrics", {}) or {}),
            )
            task.__dict__.pop("_pending_metrics", None)
            task.add_stage_perf(stats)
        return produced

    def _record(self, task: Task, produced: list[Task], elapsed: float, out: list[Task]) -> None:
        if not produced and isinstance(task, DocumentBatch) and task.num_items > 0:
            produced = [task.derive(task.data.slice(0, 0))]
            produced[0]._pending_metrics = {f"{DROPPED_PREFIX}{self.stage_name}": task.num_items}
        share = elapsed / max(len(produced), 1)
        for i, child in enumerate(produced):
            metrics = dict(child.__dict__.pop("_pending_metrics", None) or {})
            child.add_stage_perf(StagePerfStats(
                self.stage_name, share, task.num_items if i == 0 else 0, child.num_items, metrics,
            ))
        out.extend(produced)

    @staticmethod
    def _normalise_result(task: Task, result: Any) -> list[Task]:
        if result is None:
            return []
        if isinstance(result, Task):
            return [result]
        return list(result)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.stage_name!r})"


def record_metrics(task: Task, **metrics: float) -> Task:
    """Attach custom metrics (for example ``dropped.<reason>`` counts) to the stats this stage
    call will append to ``task``. Call it on the task a stage returns."""
    pending = task.__dict__.setdefault("_pending_metrics", {})
    for key, value in metrics.items():
        pending[key] = pending.get(key, 0) + value
    return task


def record_drops(task: Task, drops: dict[str, int]) -> Task:
    """Attach documents dropped by reason to the stats this stage call appends to ``task``."""
    return record_metrics(task, **{f"{DROPPED_PREFIX}{k}": v for k, v in drops.items() if v})


class CompositeStage(ABC):
    """A user-facing stage made of several execution stages (a reader = list files + read)."""

    name: str = ""

    @abstractmethod
    def decompose(self) -> list["ProcessingStage | GlobalStage"]:
        """The execution stages, in order."""

    @property
    def stage_name(self) -> str:
        return self.name or _snake(type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.stage_name!r})"


class GlobalStage(ABC):
    """A stage that must see the whole dataset before it can decide anything (deduplication).

    The backend materialises the upstream dataset, calls :meth:`fit` once, and then runs the
    per-task stage that ``fit`` returns (for example, a filter that removes the duplicate ids
    found). The streaming plan is cut in two here by necessity, not by choice.
    """

    name: str = ""
    version: str = "1"
    resources: Resources = Resources()
    #: When True, a streaming backend (Ray Data) runs :meth:`map_local` on every task in the
    #: pass *before* the barrier, inside the upstream stage's own workers, and keeps the part
    #: with the task (:meth:`prepared_part`); ``fit`` then reads the parts instead of walking
    #: every document again after the barrier. Worth it when the part is small (text hashes),
    #: not when it is as large as the documents.
    prepare_in_stream: bool = False

    @property
    def prepared_key(self) -> str:
        """The task-metadata key under which the streamed :meth:`map_local` part travels."""
        return f"__prepared__:{self.stage_name}"

    def prepared_part(self, task: Task) -> Any:
        """The part computed for ``task`` in the stream, or None (then compute it)."""
        return getattr(task, "_metadata", {}).get(self.prepared_key)

    @abstractmethod
    def fit(self, dataset: "ray.data.Dataset") -> ProcessingStage:
        """Look at all tasks of ``dataset`` (tasks under ``"item"``) and return the stage to apply."""

    # In-process fit (no Ray): what LocalExecutor / MultiprocessExecutor call. Split in a
    # per-task map (parallel, next to the data) and one reduce, so a multiprocessing backend
    # ships only the map's compact output to the driver.
    def map_local(self, task: Task) -> Any:
        """The compact per-task part of the fit (for example, text hashes and ids)."""
        raise NotImplementedError(
            f"global stage {self.stage_name!r} ({type(self).__name__}) has no in-process fit; "
            "run it with RayDataExecutor or implement map_local/reduce_local"
        )

    def reduce_local(self, parts: list[Any]) -> ProcessingStage:
        """Combine every task's ``map_local`` output into the per-task stage to apply."""
        raise NotImplementedError(
            f"global stage {self.stage_name!r} ({type(self).__name__}) has no in-process fit; "
            "run it with RayDataExecutor or implement map_local/reduce_local"
        )

    def fit_local(self, tasks: "Iterable[Task]") -> ProcessingStage:
        """In-process equivalent of :meth:`fit`: same decision, no Ray."""
        return self.reduce_local([self.map_local(t) for t in tasks])

    @property
    def stage_name(self) -> str:
        return self.name or _snake(type(self).__name__)

    params = ProcessingStage.params
    identity = ProcessingStage.identity
    identity_hash = ProcessingStage.identity_hash
    with_ = ProcessingStage.with_

    @property
    def batch_size(self) -> int | None:  # for with_() and reports
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.stage_name!r})"


class FunctionStage(ProcessingStage):
    """A stage made from a plain function by :func:`processing_stage`."""

    fn: Callable[[Task], Any]

    def process(self, task: Task) -> Any:
        return type(self).fn(task)

    def params(self) -> dict[str, Any]:
        return {"fn": callable_identity(type(self).fn)}


def processing_stage(
    fn: Callable[[Task], Any] | None = None,
    *,
    name: str | None = None,
    resources: Resources | None = None,
    batch_size: int | None = 1,
    version: str = "1",
    spec: dict[str, Any] | None = None,
) -> Any:
    """Turn ``def f(task) -> task | list[task] | None`` into a stage instance.

    The stage's class is named after the function in CamelCase, so Ray shows
    ``<Name>Task``/``<Name>Actor`` in its plan and dashboard.
    """

    def build(func: Callable[[Task], Any]) -> ProcessingStage:
        class_name = "".join(part.capitalize() for part in func.__name__.split("_")) or "Function"
        attrs: dict[str, Any] = {
            "fn": staticmethod(func),
            "name": name or func.__name__,
            "resources": resources or Resources(),
            "batch_size": batch_size,
            "version": version,
            "__module__": func.__module__,
            "__doc__": func.__doc__,
        }
        if spec:
            frozen = dict(spec)
            attrs["ray_stage_spec"] = lambda self: dict(frozen)
        cls = type(class_name, (FunctionStage,), attrs)
        cls.__qualname__ = class_name
        return cls()

    return build(fn) if fn is not None else build


def overrides_setup(stage: Any) -> bool:
    """True when a stage defines its own ``setup`` (so it has per-worker state worth keeping)."""
    return type(stage).setup is not ProcessingStage.setup


def batch_table(tasks: list[DocumentBatch]) -> pa.Table:
    """Concatenate the tables of several document tasks (schemas unified)."""
    tables = [t.to_pyarrow() for t in tasks]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
