"""A two-node Ray cluster on this machine, started the way an operator starts one, for a
benchmark run that joins it with ``--ray-address``.

Two ``ray start`` processes (a head and a worker node), each in its own session like a
separate host, on 127.0.0.1 only, with token authentication (a token of this cluster's own,
given through ``RAY_AUTH_TOKEN``). The worker node is started through
``tests/scripts/loopback_ray_start.py``, which keeps its explicit 127.0.0.1 (plain ``ray start``
would move a worker node to the host's network address). Every process of the cluster carries
an environment marker; :meth:`LocalCluster.stop` kills exactly those, by pid, never with
``ray stop`` (which would stop every Ray on the machine).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
LOOPBACK_START = REPO / "tests" / "scripts" / "loopback_ray_start.py"
MARKER = "CURATOR_BENCH_CLUSTER"
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_with_env(key: str, value: str) -> list[int]:
    """Processes whose environment holds ``key=value``: everything that processes started with
    it started (Ray workers and servers inherit the variable), and nothing of anyone else's."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _set_subreaper(on: bool) -> bool:
    """Set this process's child-subreaper flag (Linux); return what it was."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
        return bool(flag.value)
    except (OSError, AttributeError):  # not Linux: nothing is adopted either
        return False


class LocalCluster:
    """``with LocalCluster(cpus_per_node=1, object_store_memory=512_000_000, ...) as c:``
    ``c.address`` for ``--ray-address`` (the GCS address: the flow joins as a driver), ``c.flow_env(env)`` for the flow's environment,
    ``c.pss_mb()`` for the memory of every process of the cluster."""

    def __init__(self, cpus_per_node: int = 1, object_store_memory: int | None = None,
                 spill_dir: str | None = None, temp_dir: str | None = None,
                 start_timeout_s: float = 300) -> None:
        self.cpus = cpus_per_node
        self.store = object_store_memory
        self.spill_dir = spill_dir
        #: Short (Ray's socket paths have a length limit); holds the session's raylet logs.
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="bc-", dir="/tmp")
        #: The worker node's own (Ray's default, /tmp/ray, would mix in other sessions).
        self.worker_temp_dir = tempfile.mkdtemp(prefix="bcw-", dir="/tmp")
        self.timeout = start_timeout_s
        self.marker = uuid.uuid4().hex
        self.token = secrets.token_hex(32)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_", "PYTEST_"))}
        self.env = {**base, MARKER: self.marker, "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "PYTHONPATH": str(REPO)}

    def _node_args(self) -> list[str]:
        args = [f"--num-cpus={self.cpus}", "--disable-usage-stats",
                "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}"]
        if self.store:
            args.append(f"--object-store-memory={self.store}")
        if self.spill_dir:
            args.append(f"--object-spilling-directory={self.spill_dir}")
        return args

    def _start(self, cmd: list[str], env: dict[str, str]) -> None:
        # `ray start` leaves its node's processes behind and exits. A benchmark process that is
        # a child subreaper (benchmarks.monitor) would adopt them: they would count as the
        # measured flow's own processes and be killed after its run. Not a subreaper meanwhile,
        # they go to this process's nearest subreaper ancestor or init, like a separate host's.
        was = _set_subreaper(False)
        try:
            res = subprocess.run([*cmd, *self._node_args()], env=env, capture_output=True,
                                 text=True, timeout=self.timeout, start_new_session=True)
        finally:
            _set_subreaper(was)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[:3]} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")

    def alive_nodes(self) -> int:
        probe = ("import ray; ray.init(%r, log_to_driver=False); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))" % self.address)
        res = subprocess.run([sys.executable, "-c", probe, ],
                             env={**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                             capture_output=True, text=True, timeout=self.timeout)
        lines = res.stdout.strip().splitlines()
        return int(lines[-1]) if res.returncode == 0 and lines else 0

    def __enter__(self) -> "LocalCluster":
        try:
            # The head stays on loopback in Ray's single-machine mode; the worker node needs
            # multi-node mode, where only the wrapper keeps its explicit 127.0.0.1.
            self._start(["ray", "start", "--head", f"--port={self.port}",
                         "--include-dashboard=false", f"--temp-dir={self.temp_dir}"],
                        {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
            self._start([sys.executable, str(LOOPBACK_START), "start",
                         f"--address={self.address}", f"--temp-dir={self.worker_temp_dir}"],
                        self.env)
            deadline = time.monotonic() + self.timeout
            while self.alive_nodes() < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the two nodes did not both come up")
                time.sleep(1.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flow_env(self, env: dict[str, str]) -> dict[str, str]:
        """A flow's environment for joining: the token only (the flow turns token mode on),
        no marker (the flow is not part of the cluster), no RAY_ADDRESS."""
        return {**{k: v for k, v in env.items()
                   if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS")) and k != MARKER},
                "RAY_AUTH_TOKEN": self.token}

    def pss_mb(self) -> float:
        total = 0
        for pid in pids_with_env(MARKER, self.marker):
            try:
                total += psutil.Process(pid).memory_full_info().pss
            except psutil.Error:
                continue
        return round(total / 2**20, 1)

    def stop(self) -> None:
        """Kill every process of this cluster (found by its marker), by pid."""
        for _ in range(3):
            pids = pids_with_env(MARKER, self.marker)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
