"""Reading checkpoints back: a manifest's files as tasks, in Ray workers or in this process.

Only what a complete checkpoint's manifest lists is read (see :mod:`.store`); each file is
loaded by :func:`~curator_stages.checkpoints.task_files.read_task`, which refuses anything but
the plain task formats.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from curator_stages.checkpoints.store import MANIFEST, join, read_manifest
from curator_stages.checkpoints.task_files import read_task
from curator_stages.tasks import Task


def checkpoint_files(path: str, manifest: dict[str, Any] | None = None) -> list[str]:
    manifest = manifest or read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(
            f"checkpoint {path!r} is incomplete (no {MANIFEST}); rerun the stage that writes it")
    return [join(path, f["file"]) for f in manifest["files"]]


def load_tasks_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data batch function: checkpoint file paths in, their tasks out (one row each)."""
    paths = batch["item"]
    out = np.empty(len(paths), dtype=object)
    for i, path in enumerate(paths):
        out[i] = read_task(str(path))
    return {"item": out}


load_tasks_batch.__name__ = load_tasks_batch.__qualname__ = "LoadCheckpoint"




def file_dataset(path: str | None, seed_tasks: Iterable[Task] | None = None):
    """(dataset, loader): the checkpoint's file paths with :func:`load_tasks_batch` to turn
    them into tasks inside the first stage's workers, or the seed tasks and ``None``."""
    import ray.data

    if path is None:
        return ray.data.from_items([{"item": t} for t in (seed_tasks or [])]), None
    files = checkpoint_files(path)
    if not files:
        return ray.data.from_items([{"item": None}]).filter(lambda row: False), None
    return ray.data.from_items(files, override_num_blocks=min(len(files), 256)), load_tasks_batch


def load_dataset(path: str | None, seed_tasks: Iterable[Task] | None = None):
    """A lazy Ray Dataset of the tasks of a checkpoint (tasks under ``"item"``).

    Each file is loaded by a Ray task, in parallel and streaming, so the next stage starts
    before the whole checkpoint is read. ``path=None`` gives the seed tasks instead. (Stage
    tasks use :func:`file_dataset`, which loads inside the first stage's own Ray tasks.)
    """
    dataset, loader = file_dataset(path, seed_tasks)
    if loader is None:
        return dataset
    return dataset.map_batches(loader, batch_size=1, batch_format="numpy", num_cpus=0.5)


def read_tasks(path: str) -> list[Task]:
    """All tasks of a checkpoint, in file order (for tests and small outputs)."""
    return [read_task(f) for f in checkpoint_files(path)]


__all__ = ["checkpoint_files", "file_dataset", "load_dataset", "load_tasks_batch", "read_tasks"]
