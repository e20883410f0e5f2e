"""Reading checkpoints back: a manifest's files as tasks, in Ray workers or in this process.

Only what a complete checkpoint's manifest lists is read (see :mod:`.store`); each file is
loaded by :func:`~curator_stages.checkpoints.task_files.read_task`, which refuses anything but
the plain task formats. A file list a stage task loads (a :class:`FileGroupTask`, whose files
the next stage opens) must name only files of the run's own input listing: a work dir others
can write would otherwise make the run read, and copy into its output, any file its user can
read.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable

import numpy as np

from curator_stages.checkpoints.store import MANIFEST, join, read_manifest
from curator_stages.checkpoints.task_files import UnsafeCheckpointError, read_task
from curator_stages.runtime.worker_memory import return_freed_memory
from curator_stages.tasks import FileGroupTask, Task


def checkpoint_files(path: str, manifest: dict[str, Any] | None = None) -> list[str]:
    manifest = manifest or read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(
            f"checkpoint {path!r} is incomplete (no {MANIFEST}); rerun the stage that writes it")
    return [join(path, f["file"]) for f in manifest["files"]]


def check_file_list(task: Task, input_files: Collection[str] | None, where: str,
                    label: str = "load_checkpoint") -> Task:
    """``task``, once every path of a :class:`FileGroupTask` is a file of ``input_files`` (the
    run's input listing); raises :class:`UnsafeCheckpointError` naming the stage ``label`` that
    loads it, ``where`` (the task file) and the first stray path otherwise, before anything
    opens it."""
    if not isinstance(task, FileGroupTask):
        return task
    checkpoint = where.rstrip("/").rsplit("/", 1)[0]
    fix = (f"remove the checkpoint directory {checkpoint!r} (or re-run with --refresh) to "
           "recompute it, and check who can write to this work_dir")
    if input_files is None:
        raise UnsafeCheckpointError(
            f"stage {label!r}: checkpoint file {where!r} holds a file list, and this run has no input listing to "
            "check it against, so none of its files was read; pass input_files to "
            f"run_stage_groups, or {fix}")
    stray = [p for p in task.data if p not in input_files]
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise UnsafeCheckpointError(
            f"stage {label!r}: checkpoint file {where!r} lists {stray[0]!r}{more}, which is not a file of this "
            "run's input listing; a file list may name only the run's own input files, so none "
            f"of its files was read. Someone or something else wrote it: {fix}")
    return task


def tasks_loader(input_files: Collection[str] | None = None, label: str = "load_checkpoint"
                 ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A Ray Data batch function: checkpoint file paths in, their tasks out (one row each),
    each file list checked against ``input_files`` first (:func:`check_file_list`)."""
    allowed = None if input_files is None else frozenset(input_files)

    def LoadCheckpoint(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # noqa: N802
        return_freed_memory()
        paths = batch["item"]
        out = np.empty(len(paths), dtype=object)
        for i, path in enumerate(paths):
            out[i] = check_file_list(read_task(str(path)), allowed, str(path), label)
        return {"item": out}

    return LoadCheckpoint


def file_dataset(path: str | None, seed_tasks: Iterable[Task] | None = None,
                 input_files: Collection[str] | None = None, label: str = "load_checkpoint"):
    """(dataset, loader): the checkpoint's file paths with a :func:`tasks_loader` to turn
    them into tasks inside the first stage's workers, or the seed tasks and ``None``."""
    import ray.data

    if path is None:
        return ray.data.from_items([{"item": t} for t in (seed_tasks or [])]), None
    manifest = read_manifest(path)
    files = checkpoint_files(path, manifest)
    if not files:
        return ray.data.from_items([{"item": None}]).filter(lambda row: False), None
    # Only a checkpoint of file lists ships the listing to the workers; any other gets an empty
    # one, so a file list its manifest did not declare is refused all the same.
    lists = any(f.get("task_type") == FileGroupTask.__name__ for f in manifest["files"])
    return (ray.data.from_items(files, override_num_blocks=min(len(files), 256)),
            tasks_loader(input_files if lists else (), label))


def load_dataset(path: str | None, seed_tasks: Iterable[Task] | None = None,
                 input_files: Collection[str] | None = None):
    """A lazy Ray Dataset of the tasks of a checkpoint (tasks under ``"item"``).

    Each file is loaded by a Ray task, in parallel and streaming, so the next stage starts
    before the whole checkpoint is read. ``path=None`` gives the seed tasks instead. (Stage
    tasks use :func:`file_dataset`, which loads inside the first stage's own Ray tasks.)
    """
    dataset, loader = file_dataset(path, seed_tasks, input_files)
    if loader is None:
        return dataset
    return dataset.map_batches(loader, batch_size=1, batch_format="numpy", num_cpus=0.5)


def read_tasks(path: str) -> list[Task]:
    """All tasks of a checkpoint, in file order (for tests and small outputs)."""
    return [read_task(f) for f in checkpoint_files(path)]


__all__ = ["check_file_list", "checkpoint_files", "file_dataset", "load_dataset", "read_tasks",
           "tasks_loader"]
