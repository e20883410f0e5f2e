"""Run a command and measure its whole process tree: wall time, peak PSS sum, peak driver RSS, CPU.

Why the tree and PSS: an embedded Ray starts gcs_server, raylet, workers and helpers as
descendants of the driver; the driver's RSS alone hides most of the memory. PSS (proportional
set size) splits shared pages (the object store's shared memory, shared libraries) among the
processes mapping them, so the sum over the tree counts each page once.

How: this process becomes a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so
descendants whose parent exits are re-parented here instead of to init and stay in the tree;
a monitor thread samples the tree every ``interval`` seconds (``psutil``: PSS from
``smaps_rollup``, RSS, CPU times). CPU seconds come from ``getrusage(RUSAGE_CHILDREN)`` of
this process: exact for every descendant that was reaped, which the subreaper guarantees.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import psutil

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - not Linux: the tree is sampled as far as it is visible
        return False


@dataclass
class TreeUsage:
    wall_s: float = 0.0
    returncode: int | None = None
    peak_tree_pss_mb: float = 0.0
    peak_tree_rss_mb: float = 0.0
    peak_driver_rss_mb: float = 0.0
    peak_processes: int = 0
    cpu_s: float = 0.0
    #: CPU seconds from ``getrusage(RUSAGE_CHILDREN)``: exact for descendants reaped through
    #: this process, blind to those reaped elsewhere (Ray's raylet is itself a subreaper).
    cpu_s_rusage: float = 0.0
    #: CPU seconds summed over every pid seen by the sampler (last reading of each): misses at
    #: most one interval per process. ``cpu_s`` is the larger of the two.
    cpu_s_sampled: float = 0.0
    samples: int = 0
    #: Process names seen in the tree (e.g. raylet, gcs_server, ray::IDLE).
    process_names: list[str] = field(default_factory=list)
    #: Peak PSS (MB) per process kind (same short name summed within a sample): who holds memory.
    peak_pss_by_kind_mb: dict[str, float] = field(default_factory=dict)
    #: CPU seconds per process kind (sampled): who burns the CPU.
    cpu_s_by_kind: dict[str, float] = field(default_factory=dict)
    #: One row per sample: seconds since the start, tree PSS (MB), and PSS (MB) per process
    #: kind, so a peak can be matched with the run's log (which stage, which process).
    timeline: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Sampler(threading.Thread):
    def __init__(self, root_pid: int, interval: float, usage: TreeUsage,
                 extra: Callable[[], dict] | None = None) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.usage = usage
        self.extra = extra
        self.stop = threading.Event()
        self.names: set[str] = set()
        self.kind_of: dict[int, str] = {}
        #: (pid, create_time) -> last user+system CPU seconds read.
        self.cpu_of: dict[tuple[int, float], float] = {}
        self.started = time.perf_counter()

    def tree(self) -> list[psutil.Process]:
        me = psutil.Process()
        # Everything below this process: the child and, through the subreaper, its orphans.
        return me.children(recursive=True)

    def sample(self) -> None:
        pss = rss = 0
        driver = 0
        procs = self.tree()
        kinds: dict[str, int] = {}
        for p in procs:
            try:
                info = p.memory_full_info()
                pss += info.pss
                rss += info.rss
                if p.pid == self.root_pid:
                    driver = info.rss
                with p.oneshot():
                    t = p.cpu_times()
                    self.cpu_of[(p.pid, p.create_time())] = t.user + t.system
                kind = self.kind_of.get(p.pid)
                if kind is None:
                    kind = self.kind_of[p.pid] = _kind(_short_name(p))
                kinds[kind] = kinds.get(kind, 0) + info.pss
                if len(self.names) < 200:
                    self.names.add(_short_name(p))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        u = self.usage
        u.timeline.append({"t": round(time.perf_counter() - self.started, 2),
                           "pss_mb": round(pss / 2**20, 1), "processes": len(procs),
                           **{k: round(v / 2**20, 1) for k, v in kinds.items()},
                           **(self.extra() if self.extra else {})})
        for kind, value in kinds.items():
            mb = round(value / 2**20, 1)
            if mb > u.peak_pss_by_kind_mb.get(kind, 0.0):
                u.peak_pss_by_kind_mb[kind] = mb
        u.samples += 1
        u.peak_tree_pss_mb = max(u.peak_tree_pss_mb, pss / 2**20)
        u.peak_tree_rss_mb = max(u.peak_tree_rss_mb, rss / 2**20)
        u.peak_driver_rss_mb = max(u.peak_driver_rss_mb, driver / 2**20)
        u.peak_processes = max(u.peak_processes, len(procs))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def _short_name(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if not cmd:
        return p.name()
    first = os.path.basename(cmd[0])
    if first.startswith("python") and len(cmd) > 1:
        rest = [c for c in cmd[1:] if not c.startswith("-")]
        return (rest[0].rsplit("/", 1)[-1] if rest else first)[:60]
    return first[:60]


def _kind(name: str) -> str:
    """Group process names: Ray workers by role, the rest by program."""
    if name.startswith("ray::") or name in ("default_worker.py", "setup_worker.py"):
        return "ray workers"
    return name


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                 interval: float = 0.2, timeout_s: float = 3600, grace_s: float = 15.0,
                 stdout=None, stderr=None, cwd: str | None = None,
                 extra: Callable[[], dict] | None = None) -> TreeUsage:
    """Run ``cmd`` to completion and return its tree's usage.

    ``extra``, when given, is called at every sample and its keys are added to that timeline
    row (e.g. the bytes in a spill directory, next to the memory of the same instant).

    After the command exits, leftover descendants (Ray processes shutting down) are still
    sampled for up to ``grace_s`` seconds, then killed by pid: they are ours.
    """
    become_subreaper()
    _reap()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = TreeUsage()
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, stdout=stdout, stderr=stderr, cwd=cwd)
    sampler = _Sampler(proc.pid, interval, usage, extra)
    sampler.start()
    try:
        usage.returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        usage.returncode = proc.wait()
    usage.wall_s = time.perf_counter() - start
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap()
        if not psutil.Process().children(recursive=True):
            break
        time.sleep(0.2)
    sampler.stop.set()
    sampler.join()
    for p in psutil.Process().children(recursive=True):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    time.sleep(0.2)
    _reap()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage.cpu_s_rusage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    usage.cpu_s_sampled = sum(sampler.cpu_of.values())
    for (pid, _), cpu in sampler.cpu_of.items():
        kind = sampler.kind_of.get(pid, "?")
        usage.cpu_s_by_kind[kind] = round(usage.cpu_s_by_kind.get(kind, 0.0) + cpu, 2)
    usage.cpu_s = max(usage.cpu_s_rusage, usage.cpu_s_sampled)
    usage.process_names = sorted(sampler.names)
    return usage
