"""One run at a time per work directory: an exclusive lock, and a refusal that names the holder.

Two runs on one work directory (a scheduled run overlapping a manual one) would each remove
the other's in-progress temporary checkpoints as "stale", and could commit into one checkpoint
together. So a run holds ``<work_dir>/.curator.lock`` while its stage tasks run, and only the
holder removes temporaries. A second run is refused at once, with the holder's pid, host, start
time and flow run, and what to do: wait, or use another work_dir. A flow run also holds its
output directory's lock (:func:`output_lock`, the same lock in ``<output>/.curator.lock``), so
two runs never publish into one output together.

The lock is ``fcntl.flock`` (non-blocking) on that file: the kernel releases it when the holder's
process ends, however it ends (SIGKILL, a crash), so a stale lock never needs clearing by hand.
The holder is described in ``.curator.lock.json`` next to it, for the refusal message only;
both files are removed when the run ends.
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

LOCK_FILE = ".curator.lock"
HOLDER_FILE = ".curator.lock.json"
#: Work dirs whose lock this thread holds: a nested ``work_dir_lock`` (a flow that holds the
#: lock around ``run_stage_groups`` and its own clean-up) re-enters instead of refusing itself.
_held = threading.local()


class WorkDirBusyError(RuntimeError):
    """Another run holds the work directory's lock: this run is refused before it starts."""


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


def describe_holder(work_dir: str) -> str:
    """The holder of ``work_dir``'s lock in words (from its record; may be unknown)."""
    try:
        with open(os.path.join(work_dir, HOLDER_FILE)) as f:
            h = json.load(f)
    except (OSError, ValueError):
        return "another process (its holder record is missing)"
    run = ""
    if h.get("flow_run_id"):
        run = f", flow run {h.get('flow_run_name') or ''} {h['flow_run_id']}".replace("  ", " ")
    return f"pid {h.get('pid')} on host {h.get('host')}{run}, since {h.get('started_at')}"


class OutputBusyError(WorkDirBusyError):
    """Another run holds the output's lock: this run is refused before it starts."""


@contextlib.contextmanager
def work_dir_lock(work_dir: str) -> Iterator[bool]:
    """Hold ``work_dir``'s lock for the block; yields True when a lock is held (local work dir),
    False for an object-store URL (no lock exists there; see the module docstring).

    Raises :class:`WorkDirBusyError` naming the holder when another run holds it. Re-entrant
    within one thread; another thread or process is refused.
    """
    with _dir_lock(work_dir, "work_dir") as held:
        yield held


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[bool]:
    """Hold the output directory's lock for the block (the same lock as :func:`work_dir_lock`,
    in ``<output>/.curator.lock``): two runs publishing into one output would interleave their
    files, so the second is refused at once with :class:`OutputBusyError` naming the holder.
    Yields False, taking no lock, on object stores (their publish is "last manifest wins
    whole", see :mod:`~curator_stages.io.output_commit`)."""
    with _dir_lock(output, "output") as held:
        yield held


@contextlib.contextmanager
def _dir_lock(work_dir: str, what: str) -> Iterator[bool]:
    if "://" in work_dir and not work_dir.startswith("file://"):
        yield False
        return
    path = os.path.realpath(os.path.expanduser(work_dir.removeprefix("file://")))
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield True
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:  # a file in the way, permissions: found before any work starts
        raise OSError(exc.errno, f"{what} {work_dir!r}: cannot create it: {exc.strerror}; "
                      f"choose {_a(what)} this process may write to "
                      f"(--{what.replace('_', '-')})") from None
    lock_path, holder_path = os.path.join(path, LOCK_FILE), os.path.join(path, HOLDER_FILE)
    fd = _acquire(lock_path, path, what)
    held.add(path)
    try:
        record = json.dumps(_holder_record())
        tmp = f"{holder_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(record)
        os.replace(tmp, holder_path)
        yield True
    finally:
        # Unlink while still holding it (a waiting opener then finds its inode gone and
        # retries on the new file, see _acquire), so a finished run leaves no lock file.
        for leftover in (holder_path, lock_path):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        held.discard(path)
        os.close(fd)  # releases the flock


def _a(what: str) -> str:
    return f"an {what}" if what[0] in "aeiou" else f"a {what}"


def _acquire(lock_path: str, work_dir: str, what: str = "work_dir") -> int:
    """An fd holding the flock of ``lock_path`` (the file the path names now, not an unlinked
    one a finishing holder just removed)."""
    import fcntl

    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"{what} {work_dir!r}: cannot create its lock file "
                          f"{LOCK_FILE}: {exc.strerror}; choose {_a(what)} this process may "
                          f"write to (--{what.replace('_', '-')})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            harm = ("would delete each other's in-progress checkpoints" if what == "work_dir"
                    else "would mix their files and summaries")
            raise (WorkDirBusyError if what == "work_dir" else OutputBusyError)(
                f"{what} {work_dir!r} is in use by another run: {describe_holder(work_dir)}. "
                f"Two runs on one {what} {harm}, so this run did not start. Wait for that run "
                "to finish (its lock is released when its process ends, even if it is killed), "
                f"or give this run another {what} (--{what.replace('_', '-')})") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its holder had just unlinked: try the current one


__all__ = ["HOLDER_FILE", "LOCK_FILE", "OutputBusyError", "WorkDirBusyError", "describe_holder",
           "output_lock", "work_dir_lock"]
