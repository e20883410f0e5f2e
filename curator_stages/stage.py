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
import json
import re
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, Iterable, TypeVar

import pyarrow as pa

from curator_stages.identity import canonical
from curator_stages.resources import Resources
from curator_stages.tasks import (
    DOCUMENTS_QUARANTINED,
    DOCUMENTS_WRITTEN,
    DROPPED_PREFIX,
    DocumentBatch,
    StagePerfStats,
    Task,
)

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


class StageError(RuntimeError):
    """A stage failed where it ran (a worker); the message names the stage and the cause.

    The common base of the backends' errors (``StageSetupError``: ``setup`` failed, the stage
    never ran; ``StageRunError``: the stage raised and its own type could not be rebuilt), so a
    caller catches one type whichever backend ran the stage.
    """

    def __init__(self, message: str, stage_name: str = "") -> None:
        super().__init__(message)
        self.stage_name = stage_name
        #: Ray's full error text (remote traceback), when translated on the driver.
        self.remote_traceback = ""

    def __reduce__(self):  # keep stage_name through pickling (Prefect states, Ray errors)
        return (type(self), (str(self), self.stage_name))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


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
            "params": {key: canonical(value, self.stage_name, key)
                       for key, value in sorted(self.params().items())},
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

        Each output task gets a :class:`StagePerfStats`. The run's accounting must never lose a
        document to a stage that forgot to say why it went, so (documents in, documents out):
        rows a document stage removes without a recorded reason are counted as
        ``dropped.<stage_name>``, and a document task the stage drops whole (``None``, or
        missing from what ``process_batch`` returns) becomes an empty batch that carries its
        history and that count.
        """
        for task in tasks:
            self.validate_input(task)
        if type(self).process_batch is ProcessingStage.process_batch:
            out: list[OutT] = []
            for task in tasks:
                start = time.perf_counter()
                produced = self._normalise_result(task, self.process(task))
                out.extend(self._account([task], produced, time.perf_counter() - start))
            return out
        start = time.perf_counter()
        produced = self._normalise_result(None, self.process_batch(tasks))
        return self._account(list(tasks), produced, time.perf_counter() - start)

    def _account(self, inputs: list[Task], produced: list[Task], elapsed: float) -> list[Task]:
        """Append this call's stats to ``produced``; count silent drops (see :meth:`run`)."""
        drop_key = f"{DROPPED_PREFIX}{self.stage_name}"
        pending = [dict(t.__dict__.pop("_pending_metrics", None) or {}) for t in produced]
        documents = all(isinstance(t, DocumentBatch) for t in [*inputs, *produced])
        kept, gone = inputs, []
        if documents:
            gone = [t for t in inputs if t.num_items and not _carried(t, inputs, produced)]
            kept = [t for t in inputs if not any(t is g for g in gone)]
            missing = (sum(t.num_items for t in kept) - sum(t.num_items for t in produced)
                       - sum(_accounted(m) for m in pending))
            if missing > 0 and produced:
                pending[0][drop_key] = pending[0].get(drop_key, 0) + missing
        share = elapsed / max(len(produced) + len(gone), 1)
        items_in = sum(t.num_items for t in kept)
        for i, (child, metrics) in enumerate(zip(produced, pending)):
            child.add_stage_perf(StagePerfStats(
                self.stage_name, share, items_in if i == 0 else 0, child.num_items, metrics))
        for task in gone:  # dropped whole: an empty batch keeps its history and the count
            empty = task.derive(task.data.slice(0, 0))
            empty.add_stage_perf(StagePerfStats(
                self.stage_name, share, task.num_items, 0, {drop_key: task.num_items}))
            produced.append(empty)
        return produced

    @staticmethod
    def _normalise_result(task: Task | None, result: Any) -> list[Task]:
        if result is None:
            return []
        if isinstance(result, Task):
            return [result]
        return list(result)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.stage_name!r})"


def _carried(task: Task, inputs: list[Task], produced: list[Task]) -> bool:
    """Whether some output of a stage call continues ``task`` (else the call dropped it).

    An output continues an input when it is the same object, carries the input's latest
    history record (``derive`` keeps it), or, for an input without history, keeps its id.
    """
    if not produced:
        return False
    if len(inputs) == 1:
        return True
    history = task.stage_history
    if history:
        last = history[-1].stats_id
        return any(out is task or any(s.stats_id == last for s in out.stage_history)
                   for out in produced)
    return any(out is task or out.task_id == task.task_id for out in produced)


def _accounted(metrics: dict[str, float]) -> int:
    """Documents a stage call said it removed: dropped for a reason, quarantined or written."""
    return int(sum(v for k, v in metrics.items() if k.startswith(DROPPED_PREFIX))
               + metrics.get(DOCUMENTS_QUARANTINED, 0) + metrics.get(DOCUMENTS_WRITTEN, 0))


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
        return getattr(task, "metadata", {}).get(self.prepared_key)

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


def overrides_setup(stage: Any) -> bool:
    """True when a stage defines its own ``setup`` (so it has per-worker state worth keeping)."""
    return type(stage).setup is not ProcessingStage.setup


def batch_table(tasks: list[DocumentBatch]) -> pa.Table:
    """Concatenate the tables of several document tasks (schemas unified)."""
    tables = [t.to_pyarrow() for t in tasks]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def decompose(stages: Iterable[Any]) -> list[ProcessingStage | GlobalStage]:
    """Composite stages replaced by their parts, recursively: the execution stages that backends
    run and the plan shows (here, not in ``pipeline``, so that the plan needs no pipeline)."""
    out: list[ProcessingStage | GlobalStage] = []
    for stage in stages:
        if isinstance(stage, CompositeStage):
            out.extend(decompose(stage.decompose()))
        else:
            out.append(stage)
    return out
