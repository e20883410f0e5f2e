"""Stages, filesystems and process tools that inject faults for the reliability tests.

Fault injection never changes a stage's identity (its public parameters): what to block or fail
comes from marker files named by parameters that stay the same between the faulty run and the
resumed run, or from environment variables, so a resumed run hits the same checkpoints.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.memory import MemoryFileSystem

from benchmarks.local_cluster import pids_with_env  # noqa: F401  (the tests' name for it)
from curator_stages import DocumentBatch, ProcessingStage

#: How long an injected block waits before giving up on its own (a test that never kills it).
BLOCK_SAFETY_TIMEOUT_S = 240.0

#: How a subprocess joins the test session's Ray cluster (filled in by the ``ray_cluster`` fixture):
#: its address, and the token it was started with.
SESSION_CLUSTER: dict[str, str] = {}

#: Results that several test modules compare against, made once per test session (this module is
#: imported once, as ``tests.fault_helpers``, whichever test module asks).
SESSION_RESULTS: dict[str, Any] = {}


def join_env(**extra: str) -> dict[str, str]:
    """This process's environment for a flow subprocess on the session's Ray cluster.

    The address and token are the ones the cluster was started with, not whatever the environment
    holds now (a test may have changed it), and no token file path competes with them.
    """
    if not SESSION_CLUSTER:
        raise RuntimeError("join_env() needs the ray_cluster fixture")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "RAY_AUTH_TOKEN_PATH"))}
    env.update(SESSION_CLUSTER)
    env.update(extra)
    return env


# ----------------------------------------------------------------------------- waiting
def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def kill_flow_when_blocked(cmd: list[str], env: dict[str, str], cwd: Path, tmp_path: Path,
                           block_dir: Path, partial: Callable[[], Any], timeout_s: float,
                           what: str, before_kill: Callable[[], Any] = lambda: None) -> tuple[Any, Any]:
    """Run a fault flow until its blocking stage has parked (``block_dir/blocked.pid``) and
    ``partial()`` finds part of that stage's checkpoint written; then take ``before_kill()``'s
    snapshot, SIGKILL the flow process and reap the parked worker (Ray also reaps a dead driver's
    workers, but not at once). Returns ``(partial(), before_kill())``; the flow's output is in
    ``tmp_path/killed-run.log``."""
    import subprocess

    log_path = tmp_path / "killed-run.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    blocked_pid = None
    try:
        def blocked_with_partial_checkpoint() -> Any:
            if proc.poll() is not None:
                raise AssertionError(f"flow exited early ({proc.returncode}): "
                                     f"{log_path.read_text()[-3000:]}")
            pid = read_pid(block_dir / "blocked.pid")
            found = partial() if pid else None
            return (pid, found) if found else None

        blocked_pid, found = wait_for(blocked_with_partial_checkpoint, timeout_s, what)
        snapshot = before_kill()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        if blocked_pid:
            kill_pids([blocked_pid])
    assert proc.returncode == -signal.SIGKILL
    return found, snapshot


def run_flow_summary(cmd: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> dict:
    """Run a fault flow to the end; its run summary (the ``SUMMARY {json}`` line it prints)."""
    import json
    import subprocess

    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.split("SUMMARY ", 1)[1].splitlines()[0])


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False




def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- documents
def doc_batches(n_tasks: int, per_task: int = 5, prefix: str = "t") -> list[DocumentBatch]:
    """``n_tasks`` small document batches with unique ids ``<prefix><task>-<doc>``."""
    out = []
    for t in range(n_tasks):
        ids = [f"{prefix}{t:02d}-{d:02d}" for d in range(per_task)]
        texts = [f"document {t} {d} " + "word " * (t + d) for d in range(per_task)]
        out.append(DocumentBatch(f"{prefix}{t:02d}", "faults",
                                 pa.table({"id": ids, "text": texts})))
    return out


def rows_of(tasks: Iterable[Any], columns: tuple[str, ...] = ("id", "text")) -> list[tuple]:
    """All document rows of ``tasks`` as sorted tuples of ``columns`` (duplicates kept)."""
    rows: list[tuple] = []
    for task in tasks:
        table = task.to_pyarrow()
        rows.extend(zip(*(table.column(c).to_pylist() for c in columns)))
    return sorted(rows)


# ----------------------------------------------------------------------------- stages
class BlockOnceStage(ProcessingStage):
    """Upper-cases text; on ``victim_task`` it blocks once, with its pid in ``pid_file``.

    The test reads the pid, creates ``killed_marker`` and kills the process: the retry (a new
    worker) finds the marker and goes through. The blocked call itself waits for a file that
    nobody creates, so it can only end by being killed (or by the safety timeout).
    Each processed task records the pid that processed it in ``worker_pid``.
    """

    name = "block_once"

    def __init__(self, victim_task: str, pid_file: str, killed_marker: str,
                 actor: bool = False, setup_log: str = "") -> None:
        self.victim_task = victim_task
        self.pid_file = pid_file
        self.killed_marker = killed_marker
        self.actor = actor
        self.setup_log = setup_log

    def ray_stage_spec(self) -> dict[str, Any]:
        return {"is_actor_stage": self.actor}

    def process(self, task: DocumentBatch) -> DocumentBatch:
        if task.task_id == self.victim_task and not os.path.exists(self.killed_marker):
            write_atomically(Path(self.pid_file), str(os.getpid()))
            never = self.killed_marker + ".never"
            deadline = time.monotonic() + BLOCK_SAFETY_TIMEOUT_S
            while not os.path.exists(never) and time.monotonic() < deadline:
                time.sleep(0.05)
        table = task.to_pyarrow()
        table = table.set_column(table.column_names.index("text"), "text",
                                 pc.utf8_upper(table["text"]))
        table = table.append_column("worker_pid", pa.array([os.getpid()] * table.num_rows,
                                                           pa.int64()))
        return task.derive(table)


class BlockOnceActorStage(BlockOnceStage):
    """The same as an actor stage: ``setup`` records each (re)start of an actor."""

    name = "block_once_actor"

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        if self.setup_log:
            Path(self.setup_log, f"{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()


class FailingSetupStage(ProcessingStage):
    """A model-loading stage whose ``setup`` fails: each attempt leaves a file in ``attempts``."""

    name = "load_model"

    def __init__(self, attempts_dir: str, actor: bool = True) -> None:
        self.attempts_dir = attempts_dir
        self.actor = actor

    def ray_stage_spec(self) -> dict[str, Any]:
        return {"is_actor_stage": self.actor}

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        Path(self.attempts_dir, f"{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
        raise FileNotFoundError("model weights /models/classifier.bin not found")

    def process(self, task: DocumentBatch) -> DocumentBatch:
        return task


# ----------------------------------------------------------------------------- filesystems
class FailingFileSystem(MemoryFileSystem):
    """An in-memory filesystem whose writes fail with ``OSError(fail_errno)`` once more than
    ``capacity_bytes`` have been written in total: a disk that fills up (ENOSPC) or a location
    that refuses writes (EROFS with capacity 0). ``capacity_bytes=None`` never fails.

    Registered under the ``failfs`` protocol; the capacity is the storage option
    ``capacity_bytes`` (so a writer's ``storage_options`` choose it, and "fixing the disk" is a
    re-run with a larger one), or, for code that opens bare ``failfs://`` URLs, the class
    attribute ``default_capacity``. Files live in this class's own store, apart from
    ``memory://``, and only in this process.
    """

    protocol = ("failfs",)
    store: dict = {}
    pseudo_dirs = [""]
    #: Capacity of instances created without ``capacity_bytes`` (None: unlimited).
    default_capacity: int | None = None

    def __init__(self, capacity_bytes: int | None | str = "default",
                 fail_errno: int = errno.ENOSPC, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._capacity = capacity_bytes
        self.fail_errno = fail_errno

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, str) and path.startswith("failfs://"):
            path = "memory://" + path[len("failfs://"):]
        return super()._strip_protocol(path)

    @property
    def capacity_bytes(self) -> int | None:
        return type(self).default_capacity if self._capacity == "default" else self._capacity

    def _open(self, path: str, mode: str = "rb", **kwargs: Any):
        if "w" not in mode and "a" not in mode:
            return super()._open(path, mode, **kwargs)
        if self.capacity_bytes == 0:
            raise OSError(self.fail_errno, os.strerror(self.fail_errno))
        return _CappedFile(self, self._strip_protocol(path), super()._open(path, mode, **kwargs))

    def used_bytes(self) -> int:
        return sum(len(f.getvalue()) for f in self.store.values()
                   if hasattr(f, "getvalue"))


class _CappedFile(io.RawIOBase):
    def __init__(self, fs: FailingFileSystem, path: str, inner: Any) -> None:
        self.fs, self.path, self.inner = fs, path, inner

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        cap = self.fs.capacity_bytes
        if cap is not None and self.fs.used_bytes() + self.inner.tell() + len(data) > cap:
            raise OSError(self.fs.fail_errno, os.strerror(self.fs.fail_errno))
        return self.inner.write(data)

    def tell(self) -> int:
        return self.inner.tell()

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
        super().close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


fsspec.register_implementation("failfs", FailingFileSystem, clobber=True)


def failfs_listing(root: str) -> list[str]:
    fs = FailingFileSystem()
    base = root.split("://", 1)[1]
    return sorted(p for p in fs.store if p.startswith("/" + base.lstrip("/")))
