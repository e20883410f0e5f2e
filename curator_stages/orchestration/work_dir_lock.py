"""One run at a time per work directory and per output: exclusive locks that name the holder.

Two runs on one work directory (a scheduled run overlapping a manual one) would each remove
the other's in-progress temporary checkpoints as "stale", and could commit into one checkpoint
together; two runs writing one output would mix their files. So a run holds
``<work_dir>/.curator.lock`` while its stage tasks run (and ``<output>/.curator.lock`` while it
writes its output: :func:`output_lock`), and only the holder removes temporaries. A second run is
refused at once, with the holder's pid, host, start time and flow run, and what to do: wait, or
use another work_dir (output).

A lock is keyed on the canonical location, however it is spelled: ``file://`` and ``local://``
are stripped and symbolic links resolved, so ``local:///d/w`` and ``/d/w/`` meet on one lock.
The lock is ``fcntl.flock`` (non-blocking) on that file, opened without following a symbolic
link: the kernel releases it when the holder's process ends, however it ends (SIGKILL, a
crash), so a stale lock never needs clearing by hand. The holder is described in
``.curator.lock.json`` next to it (written through a new, randomly named temporary file, never
through a planted link), for the refusal message only; both files are removed when the run ends.
flock works on local disks and on NFSv4 (Linux maps it to NFS byte-range locks); it is not
taken on object stores (``s3://``, ``gs://``...), which have no locks: there each attempt writes
under its own unique temporary prefix, and temporaries are removed only when nothing was
written into them for hours (:data:`checkpoint.URL_STALE_TEMPORARY_AGE_S`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from typing import Any, Iterator

from curator_stages.io.filesystem import put_bytes
from curator_stages.io.path_safety import location

LOCK_FILE = ".curator.lock"
HOLDER_FILE = ".curator.lock.json"
#: Locations whose lock this thread holds: a nested lock (a flow that holds the work dir's lock
#: around ``run_stage_groups`` and its own clean-up) re-enters instead of refusing itself.
_held = threading.local()


class LocationBusyError(RuntimeError):
    """Another run holds the location's lock: this run is refused before it starts."""


class WorkDirBusyError(LocationBusyError):
    """Another run holds the work directory's lock."""


class OutputBusyError(LocationBusyError):
    """Another run holds the output directory's lock."""


#: field -> (error, why two runs must not share it, the option that picks another one).
_KINDS: dict[str, tuple[type[LocationBusyError], str, str]] = {
    "work_dir": (WorkDirBusyError, "Two runs on one work_dir would delete each other's "
                 "in-progress checkpoints", "--work-dir"),
    "output": (OutputBusyError, "Two runs writing one output would mix their files and "
               "summaries", "--output"),
}


def lock_path_of(spec: str) -> str | None:
    """The canonical local directory a lock on ``spec`` is keyed on; None on object stores."""
    loc = location(spec)
    return loc.path if loc.scheme == "file" else None


def _holder_record() -> dict[str, Any]:
    record: dict[str, Any] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is not None:
            record["flow_run_id"] = str(ctx.flow_run.id)
            record["flow_run_name"] = ctx.flow_run.name
    except Exception:  # noqa: BLE001 - the record is a courtesy; the lock is the flock
        pass
    return record


def describe_holder(directory: str) -> str:
    """The holder of ``directory``'s lock in words (from its record; may be unknown)."""
    try:
        fd = os.open(os.path.join(directory, HOLDER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            h = json.load(f)
        if not isinstance(h, dict):
            raise ValueError(h)
    except (OSError, ValueError):
        return "another process (its holder record is missing)"
    run = ""
    if h.get("flow_run_id"):
        run = f", flow run {h.get('flow_run_name') or ''} {h['flow_run_id']}".replace("  ", " ")
    return f"pid {h.get('pid')} on host {h.get('host')}{run}, since {h.get('started_at')}"


@contextlib.contextmanager
def work_dir_lock(work_dir: str) -> Iterator[bool]:
    """Hold ``work_dir``'s lock for the block; yields True when a lock is held (local work dir),
    False for an object-store URL (no lock exists there; see the module docstring).

    Raises :class:`WorkDirBusyError` naming the holder when another run holds it. Re-entrant
    within one thread; another thread or process is refused.
    """
    with _location_lock("work_dir", work_dir) as held:
        yield held


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[bool]:
    """Hold ``output``'s lock (``<output>/.curator.lock``) for the block: True when held (a
    local output), False on an object store. Raises :class:`OutputBusyError` naming the holder
    when another run writes ``output``. Re-entrant within one thread."""
    with _location_lock("output", output) as held:
        yield held


@contextlib.contextmanager
def _location_lock(field: str, spec: str) -> Iterator[bool]:
    path = lock_path_of(spec)
    if path is None:
        yield False
        return
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield True
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:  # a file in the way, permissions: found before any work starts
        raise OSError(exc.errno, f"{field} {spec!r}: cannot create it: {exc.strerror}; choose "
                      f"a {field} this process may write to ({_KINDS[field][2]})") from None
    lock_path, holder_path = os.path.join(path, LOCK_FILE), os.path.join(path, HOLDER_FILE)
    fd = _acquire(lock_path, field, spec, path)
    held.add(path)
    try:
        put_bytes(holder_path, json.dumps(_holder_record()).encode())
        yield True
    finally:
        # Unlink while still holding it (a waiting opener then finds its inode gone and
        # retries on the new file, see _acquire), so a finished run leaves no lock file.
        for leftover in (holder_path, lock_path):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        held.discard(path)
        os.close(fd)  # releases the flock


def _acquire(lock_path: str, field: str, spec: str, directory: str) -> int:
    """An fd holding the flock of ``lock_path`` (the file the path names now, not an unlinked
    one a finishing holder just removed)."""
    import fcntl

    error, why, option = _KINDS[field]
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            what = ("is a symbolic link (this product never follows a link it did not create "
                    f"there); remove {lock_path!r}" if exc.errno == errno.ELOOP
                    else f"cannot be created: {exc.strerror}")
            raise OSError(exc.errno, f"{field} {spec!r}: its lock file {LOCK_FILE} {what}; or "
                          f"choose a {field} this process may write to ({option})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise error(
                f"{field} {spec!r} is in use by another run: {describe_holder(directory)}. "
                f"{why}, so this run did not start. Wait for that run to finish (its lock is "
                "released when its process ends, even if it is killed), or give this run "
                f"another {field} ({option})") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path, follow_symlinks=False).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its holder had just unlinked: try the current one


__all__ = ["HOLDER_FILE", "LOCK_FILE", "LocationBusyError", "OutputBusyError", "WorkDirBusyError",
           "describe_holder", "lock_path_of", "output_lock", "work_dir_lock"]
