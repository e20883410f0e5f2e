"""Run a pipeline without Ray: in this process, or on a small multiprocessing pool.

Why these exist next to the Ray backend:

- :class:`LocalExecutor` runs the very same stage objects one task at a time in the calling
  process. It is the honest one-core baseline every other backend is measured against, and the
  quickest way to debug a stage (a breakpoint in ``process`` just works).
- :class:`MultiprocessExecutor` is the plain baseline Ray must beat (datatrove's local executor
  is this shape): a ``multiprocessing`` pool of N workers over the tasks after the first
  fan-out (the file groups), nothing shared but the stage objects.

Both stream depth-first: each task goes through every stage up to the next barrier before the
next task is read, so memory holds one task per worker, plus what a barrier needs. A
:class:`~curator_stages.stage.GlobalStage` (dedup) is such a barrier: its per-task
``map_local`` output (compact: hashes and ids) is gathered, ``reduce_local`` builds the per-task
stage (a duplicate-id filter) and the stream continues. :class:`LocalExecutor` keeps the tasks
upstream of a barrier in memory; :class:`MultiprocessExecutor` keeps them in workers' spill
files (pickled Arrow tables, no compression: they are read back once, on the same machine).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import socket
import tempfile
import uuid
from typing import Any, Iterable, Iterator, Sequence

from curator_stages.execution import ExecutionResult
from curator_stages.function_stage import FunctionStage
from curator_stages.pipeline import Pipeline, decompose
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import EmptyTask, Task

AnyExecStage = ProcessingStage | GlobalStage


def _execution_stages(stages: Pipeline | Iterable[Any]) -> list[AnyExecStage]:
    return stages.execution_stages() if isinstance(stages, Pipeline) else decompose(stages)


def _segments(stages: Sequence[AnyExecStage]) -> list[tuple[list[ProcessingStage], GlobalStage | None]]:
    """Split at global stages: [(processing stages, the global stage ending them or None)]."""
    out: list[tuple[list[ProcessingStage], GlobalStage | None]] = []
    current: list[ProcessingStage] = []
    for stage in stages:
        if isinstance(stage, GlobalStage):
            out.append((current, stage))
            current = []
        elif isinstance(stage, ProcessingStage):
            current.append(stage)
        else:
            raise TypeError(f"{stage!r} is not a ProcessingStage or GlobalStage; wrap plain "
                            "functions with curator_stages.processing_stage")
    out.append((current, None))
    return out


def _metadata(stage: ProcessingStage, mode: str) -> dict[str, Any]:
    return {"stage_name": stage.stage_name, "mode": mode, "node_id": socket.gethostname(),
            "worker_id": f"local-{os.getpid()}", "pid": os.getpid(), "gpu_ids": []}


def _setup(stages: Iterable[ProcessingStage], mode: str) -> None:
    """Node and worker setup of each stage, once, in this process."""
    info = {"node_id": socket.gethostname(), "node_ip": "127.0.0.1",
            "hostname": socket.gethostname()}
    for stage in stages:
        stage.setup_on_node(info, _metadata(stage, mode))
        stage.setup(_metadata(stage, mode))


def _teardown(stages: Iterable[ProcessingStage]) -> None:
    for stage in stages:
        try:
            stage.teardown()
        except Exception:  # noqa: BLE001 - best effort by contract
            pass


def _stream(tasks: Iterable[Task], stages: Sequence[ProcessingStage]) -> Iterator[Task]:
    """Depth-first: every task through all ``stages``, in ``batch_size`` groups per stage."""
    it: Iterable[Task] = tasks
    for stage in stages:
        it = _run_stage(it, stage)
    return iter(it)


def _run_stage(tasks: Iterable[Task], stage: ProcessingStage) -> Iterator[Task]:
    size = stage.batch_size or 1
    batch: list[Task] = []
    for task in tasks:
        batch.append(task)
        if len(batch) >= size:
            yield from stage.run(batch)
            batch = []
    if batch:
        yield from stage.run(batch)


class LocalExecutor:
    """Executes stages in the calling process and returns the tasks the last stage emits.

    Meets :class:`~curator_stages.execution.Executor`, as ``RayDataExecutor`` does: composite
    stages are decomposed, global stages fit in process (``GlobalStage.fit_local``).
    """

    def __init__(self) -> None:
        #: Per-task stages that global stages' fits returned in the last run (for reports).
        self.fitted: list[ProcessingStage] = []

    def execute(self, stages: Pipeline | Iterable[Any],
                initial_tasks: Iterable[Task] | None = None) -> ExecutionResult:
        execution = _execution_stages(stages)
        seeds: list[Task] = list(initial_tasks) if initial_tasks is not None else []
        tasks: Iterable[Task] = seeds or [EmptyTask()]
        self.fitted = []
        ready: list[ProcessingStage] = []
        try:
            for processing, global_stage in _segments(execution):
                _setup(processing, "local")
                ready.extend(processing)
                stream = _stream(tasks, processing)
                if global_stage is None:
                    return ExecutionResult(stream)
                upstream = list(stream)  # the barrier: the fit must see every task
                per_task = global_stage.fit_local(upstream)
                _check_fitted(global_stage, per_task)
                self.fitted.append(per_task)
                _setup([per_task], "local")
                ready.append(per_task)
                tasks = _stream(upstream, [per_task])
            return ExecutionResult(tasks)  # pragma: no cover - the loop always returns
        finally:
            _teardown(ready)


def _check_fitted(stage: GlobalStage, per_task: Any) -> None:
    if not isinstance(per_task, ProcessingStage):
        raise TypeError(f"global stage {stage.stage_name!r}: fit_local() must return a "
                        f"ProcessingStage, got {type(per_task).__name__}")


# --------------------------------------------------------------------------- multiprocessing
#: Per worker process: the stages this worker has set up, by segment index.
_WORKER_STAGES: dict[int, list[ProcessingStage]] = {}


def _worker_init() -> None:
    """A forked worker inherits the parent's signal handlers (Prefect's, Ray's, a local run's
    SIGTERM handler); one that only records the signal would keep a worker blocked on the task
    queue alive through ``Pool.terminate()``, and the pool's join would wait forever. A pool
    worker dies on SIGTERM, as ``terminate()`` expects."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER_STAGES.clear()


def _close_gracefully(pool: Any) -> None:
    """End the pool's workers by their task queue's end marker, not by a signal: a worker still
    starting when the work is done (another did it all) may not have run :func:`_worker_init`
    yet, and the parent's inherited SIGTERM handler would then keep it alive through
    ``terminate()``. ``with Pool`` still terminates on an error path."""
    pool.close()
    pool.join()


def _worker_run(args: tuple[int, bytes, "list[Task] | str", str | None, bytes | None]) -> Any:
    """Run one segment on one job in a pool worker.

    A job is a list of tasks or the path of a spill file. Returns the output tasks, or (when
    the segment ends at a global stage) the spill file of the outputs and ``map_local`` of each.
    """
    seg_index, stages_blob, payload, spill_dir, global_blob = args
    stages = _WORKER_STAGES.get(seg_index)
    if stages is None:
        stages = pickle.loads(stages_blob)
        _setup(stages, "process")
        _WORKER_STAGES[seg_index] = stages
    tasks = _load_spill(payload) if isinstance(payload, str) else payload
    out = list(_stream(tasks, stages))
    if spill_dir is None:
        return out
    global_stage: GlobalStage = pickle.loads(global_blob)  # small: parameters only
    parts = [global_stage.map_local(t) for t in out]
    path = os.path.join(spill_dir, f"spill-{uuid.uuid4().hex}.pkl")
    with open(path, "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path, parts


class _StagePickler(pickle.Pickler):
    """The standard pickler, except that a function stage goes as "the stage at
    ``module.function``": a pool worker forked or spawned from this process has that module."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FunctionStage):
            return obj.reduce_by_reference() or NotImplemented
        return NotImplemented


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _StagePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _pickle_stages(stages: Any) -> bytes:
    """The stages as bytes for the pool, or an error naming the stage that cannot travel."""
    try:
        return _dumps(stages)
    except (pickle.PicklingError, AttributeError, TypeError):
        for stage in stages if isinstance(stages, list) else [stages]:
            try:
                _dumps(stage)
            except (pickle.PicklingError, AttributeError, TypeError) as stage_exc:
                raise pickle.PicklingError(
                    f"stage {stage.stage_name!r} cannot be sent to MultiprocessExecutor's worker "
                    f"processes ({stage_exc}); define the stage's class or function at module "
                    "level and keep unpicklable state (models, connections) in attributes "
                    "that setup() creates, or run it with LocalExecutor or RayDataExecutor"
                ) from stage_exc
        raise


def _load_spill(path: str) -> list[Task]:
    with open(path, "rb") as f:
        tasks = pickle.load(f)
    os.remove(path)
    return tasks


class MultiprocessExecutor:
    """Executes stages on a pool of ``workers`` processes (``multiprocessing``, no Ray).

    The driver runs the stages in process until the stream fans out into more than one task
    (listing files), then hands each task to the pool, which runs it through the rest of the
    segment. At a global stage, workers spill their outputs to ``spill_dir`` (default: a
    temporary directory) and return ``map_local`` of each; the driver reduces, and the pool
    then runs the fitted per-task stage and the stages after it on the spilled tasks.
    """

    def __init__(self, workers: int = 2, spill_dir: str | None = None,
                 start_method: str = "fork") -> None:
        if workers < 1:
            raise ValueError(f"MultiprocessExecutor: workers must be >= 1, got {workers}")
        self.workers = workers
        self.spill_dir = spill_dir
        self.start_method = start_method

    def execute(self, stages: Pipeline | Iterable[Any],
                initial_tasks: Iterable[Task] | None = None) -> ExecutionResult:
        execution = _execution_stages(stages)
        seeds: list[Task] = list(initial_tasks) if initial_tasks is not None else []
        tasks: list[Task] = seeds or [EmptyTask()]
        if self.spill_dir:
            os.makedirs(self.spill_dir, exist_ok=True)
        # A stage the workers cannot receive is refused before any process is forked.
        _pickle_stages(list(execution))
        spill_root = tempfile.mkdtemp(prefix="curator-spill-", dir=self.spill_dir)
        ctx = mp.get_context(self.start_method)
        driver_ready: list[ProcessingStage] = []
        spills: list[str] = []
        fitted: list[ProcessingStage] = []
        try:
            with ctx.Pool(self.workers, initializer=_worker_init) as pool:
                for seg_index, (processing, global_stage) in enumerate(_segments(execution)):
                    processing = [*fitted, *processing]
                    if not spills:
                        # In the driver until the work fans out (the partitioner lists files).
                        while processing and len(tasks) <= 1:
                            _setup([processing[0]], "local")
                            driver_ready.append(processing[0])
                            tasks = list(_stream(tasks, [processing[0]]))
                            processing = processing[1:]
                    payloads: list[Any] = spills or [[t] for t in tasks]
                    blob = _pickle_stages(processing)
                    gblob = (_pickle_stages(global_stage) if global_stage is not None else None)
                    jobs = [(seg_index, blob, p, spill_root if global_stage else None, gblob)
                            for p in payloads]
                    results = pool.imap(_worker_run, jobs, chunksize=1)
                    if global_stage is None:
                        done = ExecutionResult(t for out in results for t in out)
                        _close_gracefully(pool)
                        return done
                    spills, parts = [], []
                    for path, task_parts in results:
                        spills.append(path)
                        parts.extend(task_parts)
                    per_task = global_stage.reduce_local(parts)
                    _check_fitted(global_stage, per_task)
                    fitted = [per_task]
                return ExecutionResult()  # pragma: no cover - the last segment has none
        finally:
            _teardown(driver_ready)
            shutil.rmtree(spill_root, ignore_errors=True)
