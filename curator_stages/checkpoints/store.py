"""Checkpoints: a stage task's output on disk, complete or absent, never half-written.

Layout: ``<work_dir>/<fingerprint[:16]>-<stage names>/`` holding one file per output task and a
``manifest.json`` written last. Task files are Parquet (documents) or JSON (file groups, the
empty seed), never pickles: see :mod:`curator_stages.checkpoints.task_files`, which also
refuses, unread, any other file a manifest lists. A manifest is self-describing: fingerprint,
stages, counts and history are all a resume needs, under any Prefect home, worker or machine.

Atomicity, without trusting a rename the store does not have:

* local disks: files go to a sibling temporary directory ``<checkpoint>.tmp-<id>``; the manifest
  is written there last (temp file + rename) and the directory is renamed into place;
* object stores (no directory rename; a "move" copies and deletes object by object): files go
  under an attempt prefix ``<checkpoint>/attempt-<id>/`` and the manifest, listing
  ``attempt-<id>/part-...``, is uploaded last, in one PUT, which an object store publishes whole
  or not at all. Object stores take no lock, so two runs may commit one checkpoint at once: the
  last manifest uploaded wins, whole, and it lists only its own attempt's files, which nobody
  deletes: an attempt prefix the current manifest does not list (a failed or killed attempt,
  an earlier manifest's files on refresh, perhaps another run's attempt in progress) is removed
  only once nothing was written into it for :data:`URL_STALE_TEMPORARY_AGE_S`.

Either way a reader trusts only what the manifest lists: a checkpoint without one is incomplete
and ignored, so a retried or resumed stage never sees partial output; one whose manifest lists
a file that is gone (:func:`missing_files`) is recomputed, never served. This package imports
neither Prefect nor the flows: it runs inside Ray workers, which load and write task files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import fsspec
import numpy as np

from curator_stages.io.filesystem import exists, is_local, last_write_age_s, put_bytes, resolve
from curator_stages.checkpoints.task_files import (
    CheckpointWriteError,
    UnsafeCheckpointError,
    UnsafeTaskError,
    check_task_file_name,
    refuse_links,
    write_task,
)
from curator_stages.tasks import DocumentBatch, StagePerfStats, Task

MANIFEST = "manifest.json"
#: 2: task files are Parquet/JSON only. A format-1 checkpoint (which may hold pickles) is not
#: complete for this version: it is recomputed, never loaded.
CHECKPOINT_FORMAT = 2
#: On object stores (no lock, see work_dir_lock) a ``.tmp-*`` checkpoint is only removed when
#: nothing was written into it for this long: it may belong to a run still in progress.
URL_STALE_TEMPORARY_AGE_S = 6 * 3600.0


#: Prefix of an object-store attempt's directory inside its checkpoint.
ATTEMPT_PREFIX = "attempt-"

_fs = resolve
_is_local = is_local


# ----------------------------------------------------------------------------- paths
def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def checkpoint_path(work_dir: str, fingerprint: str, stage_names: Sequence[str]) -> str:
    """``<work_dir>/<fingerprint[:16]>-<stage names>``: the fingerprint makes it unique, the
    names make it readable when a user looks at the work directory."""
    names = "+".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", n) for n in stage_names) or "stages"
    if len(names) > 80:
        names = names[:77] + "..."
    if "://" not in work_dir:
        work_dir = os.path.abspath(os.path.expanduser(work_dir))
    return join(work_dir, f"{fingerprint[:16]}-{names}")


def read_manifest(path: str | None) -> dict[str, Any] | None:
    """The manifest of a complete checkpoint, or None when there is none (or it is not JSON).

    Read with one GET (``cat_file``), never through a cached directory listing: on an object
    store a listing taken before the manifest was uploaded would call it absent. A read that
    fails for another reason (past the store's retries) raises, naming the checkpoint: a
    transient fault must not make a complete checkpoint look incomplete.
    """
    if not path:
        return None
    fs, p = _fs(join(path, MANIFEST))
    if _is_local(fs):
        refuse_links(p.rsplit("/", 1)[0], p)
    try:
        manifest = json.loads(fs.cat_file(p))
    except (FileNotFoundError, ValueError):
        return None
    except OSError as exc:  # not "absent": a store that failed past its retries
        raise OSError(exc.errno, f"checkpoint {path!r}: cannot read {MANIFEST}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        return None
    files = manifest.get("files")
    if not isinstance(files, list):
        return None
    for entry in files:
        check_task_file_name(entry.get("file") if isinstance(entry, dict) else entry, path)
    return manifest


def is_complete(path: str | None) -> bool:
    return read_manifest(path) is not None


def missing_files(path: str, manifest: dict[str, Any]) -> list[str]:
    """The files ``manifest`` lists that are not under ``path`` (one listing of it)."""
    fs, root = _fs(path.rstrip("/"))
    fs.invalidate_cache(root)  # a listing cached before the files were written would miss them
    try:
        stored = {e[len(root):].lstrip("/") for e in fs.find(root, withdirs=False)}
    except FileNotFoundError:
        stored = set()
    return [f["file"] for f in manifest["files"] if f["file"] not in stored]


def remove(path: str) -> None:
    fs, p = _fs(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def clear_for_attempt(path: str, refresh: bool = False) -> None:
    """Make room for a new attempt at ``path`` (a complete checkpoint stays unless ``refresh``).

    Local work dirs (the caller holds their lock): remove whatever is there. Object stores (no
    lock): remove only a refreshed checkpoint's manifest, which makes it incomplete; leftover
    objects, perhaps another run's live attempt, are not touched here but by the commit, which
    removes every object its manifest does not list.
    """
    fs, p = _fs(path)
    if not exists(path):
        return
    if _is_local(fs):
        remove(path)
    elif refresh:
        manifest = join(p, MANIFEST)
        if fs.exists(manifest):
            fs.rm(manifest)


# ----------------------------------------------------------------------------- writing
def _write_error(final_path: str, exc: OSError) -> CheckpointWriteError:
    err = CheckpointWriteError(
        f"checkpoint {final_path!r}: cannot write: {exc.strerror or exc} (errno {exc.errno}); "
        "free space or choose another work_dir. The incomplete checkpoint is removed; a re-run "
        "recomputes this stage task and reuses the checkpoints before it")
    err.errno = exc.errno
    return err


@dataclass
class CheckpointPart:
    """What a worker that wrote one task file sends back: enough for the manifest and the
    stage summary (``num_items`` and ``_stage_perf`` read like a task's), never the data."""

    file: str
    task_type: str
    num_items: int
    is_documents: bool
    task_id: str = ""
    _stage_perf: list[StagePerfStats] = field(default_factory=list)


def _part_stem(task: Task) -> str:
    """A file stem unique per task and attempt: a retried Ray task never overwrites a part
    another attempt may still be writing; :meth:`CheckpointWriter.commit` removes orphans."""
    digest = hashlib.sha1(str(task.task_id).encode()).hexdigest()[:12]
    return f"part-{digest}-{uuid.uuid4().hex[:8]}"


def write_part(task: Task, tmp_path: str, label: str) -> CheckpointPart:
    """Write one task into a checkpoint's temporary directory (runs on a worker)."""
    try:
        name = write_task(task, join(tmp_path, _part_stem(task)), label)
    except UnsafeTaskError:
        raise
    except OSError as exc:
        cause = _write_error(tmp_path.rsplit(".tmp-", 1)[0], exc)
        err = CheckpointWriteError(f"stage {label!r}: {cause}")
        err.errno = cause.errno
        raise err from exc
    return CheckpointPart(file=name, task_type=type(task).__name__, num_items=int(task.num_items),
                          is_documents=isinstance(task, DocumentBatch),
                          task_id=str(task.task_id), _stage_perf=list(task._stage_perf))


def parts_writer(tmp_path: str, label: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A Ray Data batch function that writes each task row into ``tmp_path`` and emits its
    :class:`CheckpointPart` (fused into the last stage's tasks by ``apply_stages(after=)``)."""

    def WriteCheckpoint(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # noqa: N802
        tasks = batch["item"]
        out = np.empty(len(tasks), dtype=object)
        for i, task in enumerate(tasks):
            out[i] = write_part(task, tmp_path, label)
        return {"item": out}

    return WriteCheckpoint


class CheckpointWriter:
    """Writes tasks into a temporary sibling directory; :meth:`commit` makes it the checkpoint.

    Use as a context manager: leaving the block with an exception (or without ``commit``)
    removes the temporary directory, so a failed attempt leaves nothing behind.
    """

    def __init__(self, final_path: str):
        self.final_path = final_path.rstrip("/")
        self.fs, _ = _fs(self.final_path)
        token = uuid.uuid4().hex[:8]
        #: Local: a sibling directory renamed into place at commit. Object stores: a prefix
        #: inside the checkpoint that the manifest's entries point into (no rename needed).
        self.in_place = not _is_local(self.fs)
        self.tmp_path = (join(self.final_path, f"{ATTEMPT_PREFIX}{token}") if self.in_place
                         else f"{self.final_path}.tmp-{token}")
        self._entry_prefix = f"{ATTEMPT_PREFIX}{token}/" if self.in_place else ""
        self.files: list[dict[str, Any]] = []
        self.num_documents = 0
        self._committed = False

    def __enter__(self) -> "CheckpointWriter":
        _, p = _fs(self.tmp_path)
        if _is_local(self.fs):  # created here, never an entry planted under its random name
            os.makedirs(os.path.dirname(p), exist_ok=True)
            os.mkdir(p)
        else:
            self.fs.makedirs(p, exist_ok=True)
        return self

    def write(self, task: Task) -> None:
        try:
            name = write_task(task, join(self.tmp_path, f"part-{len(self.files):06d}"))
        except CheckpointWriteError:
            raise
        except OSError as exc:
            raise _write_error(self.final_path, exc) from exc
        num_items = int(task.num_items)
        self.files.append({"file": self._entry_prefix + name, "task_type": type(task).__name__,
                           "num_items": num_items})
        if isinstance(task, DocumentBatch):
            self.num_documents += num_items

    def add_part(self, part: CheckpointPart) -> None:
        """Record a task file a worker wrote with :func:`write_part` into :attr:`tmp_path`."""
        self.files.append({"file": self._entry_prefix + part.file, "task_type": part.task_type,
                           "num_items": part.num_items, "task_id": part.task_id})
        if part.is_documents:
            self.num_documents += part.num_items

    def _remove_unlisted(self) -> None:
        """Files of Ray task attempts that failed after writing: not in the manifest, removed."""
        listed = {f["file"].rsplit("/", 1)[-1] for f in self.files}
        _, tmp = _fs(self.tmp_path)
        for entry in self.fs.ls(tmp, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("part-") and name not in listed:
                self.fs.rm(entry)

    def commit(self, **extra: Any) -> dict[str, Any]:
        """Write the manifest last, then move the directory into place; returns the manifest.

        Files are listed in task-id order (then file name), so the next stage reads them in
        the same order whichever worker finished first.
        """
        if any("task_id" in f for f in self.files):
            self.files.sort(key=lambda f: (f.get("task_id", ""), f["file"]))
            try:
                self._remove_unlisted()
            except OSError as exc:
                raise _write_error(self.final_path, exc) from exc
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "num_tasks": len(self.files),
            "num_documents": self.num_documents,
            "files": self.files,
            **extra,
        }
        if self.in_place:
            return self._commit_in_place(manifest)
        try:
            put_bytes(join(self.tmp_path, MANIFEST),
                      json.dumps(manifest, indent=1, default=repr).encode())
        except OSError as exc:
            raise _write_error(self.final_path, exc) from exc
        _, final = _fs(self.final_path)
        _, tmp = _fs(self.tmp_path)
        if self.fs.exists(final):
            if read_manifest(self.final_path) is not None:
                # Someone else completed the same fingerprint: equal by construction; keep theirs.
                self.fs.rm(tmp, recursive=True)
                self._committed = True
                return read_manifest(self.final_path) or manifest
            self.fs.rm(final, recursive=True)  # an incomplete leftover
        if _is_local(self.fs):
            os.replace(tmp, final)
        else:  # object stores have no directory rename; the manifest-last rule keeps it safe
            self.fs.mv(tmp, final, recursive=True)
        self._committed = True
        return manifest

    def _commit_in_place(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Object stores: upload the manifest (one PUT, last writer wins whole), then remove
        stale attempts (:func:`remove_stale_attempts`)."""
        existing = read_manifest(self.final_path)
        if existing is not None and existing.get("fingerprint") == manifest.get("fingerprint") \
                and existing.get("fingerprint") is not None \
                and not missing_files(self.final_path, existing):
            # Someone else completed the same fingerprint: equal by construction; keep theirs.
            self.abort()
            self._committed = True
            return existing
        missing = missing_files(self.final_path, manifest)
        if missing:  # never publish a manifest that lists what is gone
            raise CheckpointWriteError(
                f"checkpoint {self.final_path!r}: {len(missing)} file(s) of this attempt "
                f"vanished before its commit (first {missing[0]!r}); something else deletes in "
                "this work_dir. Nothing was published; a retry writes the stage task again")
        try:
            put_bytes(join(self.final_path, MANIFEST),
                      json.dumps(manifest, indent=1, default=repr).encode())
        except OSError as exc:
            raise _write_error(self.final_path, exc) from exc
        self._committed = True
        try:
            remove_stale_attempts(self.final_path)
        except OSError:
            pass  # the checkpoint is complete; leftovers go at a later commit here
        return manifest

    def abort(self) -> None:
        """Remove this attempt's own files (never another attempt's: a concurrent run may be
        writing one beside it on an object store)."""
        _, tmp = _fs(self.tmp_path)
        if self.fs.exists(tmp):
            self.fs.rm(tmp, recursive=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.abort()


def remove_stale_attempts(final_path: str, older_than_s: float | None = None) -> list[str]:
    """Object stores: remove the ``attempt-*`` prefixes of a checkpoint that its current
    manifest does not list and that nothing was written into for ``older_than_s`` (default
    :data:`URL_STALE_TEMPORARY_AGE_S`); returns the prefixes removed.

    No lock exists there, so a young prefix may be another run's attempt in progress, whose
    manifest may yet win; and the prefix the current manifest lists is never touched.
    """
    if older_than_s is None:
        older_than_s = URL_STALE_TEMPORARY_AGE_S
    fs, root = _fs(final_path.rstrip("/"))
    fs.invalidate_cache(root)
    current = read_manifest(final_path)
    keep = {f["file"].split("/", 1)[0] for f in (current or {}).get("files", [])}
    removed = []
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith(ATTEMPT_PREFIX) or name in keep:
            continue
        if older_than_s > 0 and last_write_age_s(fs, entry) < older_than_s:
            continue  # perhaps a live attempt of another run: leave it
        fs.rm(entry, recursive=True)
        removed.append(entry)
    return removed


__all__ = [
    "ATTEMPT_PREFIX", "CHECKPOINT_FORMAT", "CheckpointPart", "CheckpointWriteError",
    "CheckpointWriter", "MANIFEST", "URL_STALE_TEMPORARY_AGE_S", "UnsafeCheckpointError",
    "UnsafeTaskError", "checkpoint_path", "clear_for_attempt", "is_complete", "join",
    "missing_files", "parts_writer", "read_manifest", "remove", "remove_stale_attempts",
    "write_part",
]
