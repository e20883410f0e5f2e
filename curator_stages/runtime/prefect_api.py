"""The temporary Prefect API of a local run, owned by the run's process.

A flow run without ``PREFECT_API_URL`` needs an API server. Prefect 3.9's own temporary server
(``SubprocessASGIServer``) is stopped by ``atexit`` only, so it outlives a SIGKILLed run; two of
them on one fresh ``PREFECT_HOME`` migrate the same database at once; and its start is not
thread-safe (it marks itself running before its process exists). So this module runs the very
command Prefect runs (``uvicorn`` on Prefect's public app factory, 127.0.0.1 only, same
environment; tests/test_process_safety.py::test_server_command_matches_prefects_own fails if
Prefect's changes) and adds:

* **dies with the run:** a tiny launcher sets ``PR_SET_PDEATHSIG`` (Linux) before it becomes the
  server, so the kernel kills the server when the thread that spawned it ends; the local run's
  main thread spawns it;
* **one start at a time per home:** from spawn to the first healthy answer (migrations run
  before it) the start holds an exclusive ``flock`` on ``<PREFECT_HOME>/.curator-api-start.lock``.

The flow then uses it as an ordinary API (``PREFECT_API_URL``). A server that does not answer
fails the run, naming why: Prefect's own start (the same command) would only add a server that
outlives the run.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

#: The server process's environment additions, as Prefect 3.9 sets them for its own.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}
LOCK_NAME = ".curator-api-start.lock"
PORT_ATTEMPTS = 3  # starts tried when the chosen port is taken by the time uvicorn binds it
# Run by a fresh interpreter: SIGKILL when the spawning thread dies; that parent must still be
# there (else it died before the request); then become the server.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:\n"
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy to loopback


def server_command(port: int) -> list[str]:
    """The server command, identical to Prefect's own temporary server's (bar the port)."""
    import prefect

    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def _lock(home: Path) -> IO[str]:
    """The per-home start lock, held until the returned file is closed."""
    home.mkdir(parents=True, exist_ok=True)
    handle = open(home / LOCK_NAME, "a+")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


def pick_loopback_port() -> int:
    """A free loopback port outside the OS's ephemeral range (32768-60999) and Ray's worker
    ports (10002-19999), where a Ray process binding port 0 could take it meanwhile."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-29999 for a Prefect API server")


def _healthy(url: str) -> bool:
    try:
        with _OPENER.open(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class TemporaryApiServer:
    """The local run's API server: spawned by :meth:`start`, waited for by :meth:`wait`."""

    def __init__(self, timeout: float | None = None) -> None:
        from prefect.settings import (
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
            get_current_settings,
        )

        self.timeout = float(timeout if timeout is not None
                             else PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        self.home = Path(get_current_settings().home).expanduser()
        self.env = {**os.environ, **SERVER_ENV,
                    **get_current_settings().to_environment_variables(exclude_unset=True)}
        self.process: subprocess.Popen[Any] | None = None
        self.api_url: str | None = None
        self.error: str | None = None
        self._lock: IO[str] | None = None
        self._url = ""
        self._attempts = 0

    def start(self) -> "TemporaryApiServer":
        """Take the home's lock and spawn the server (from the thread it must die with)."""
        self._lock = _lock(self.home)
        self._deadline = time.monotonic() + self.timeout
        self._spawn()
        return self

    def _spawn(self) -> None:
        port = pick_loopback_port()
        command = server_command(port)
        if sys.platform.startswith("linux"):
            command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]
        self._attempts += 1
        self._url = f"http://127.0.0.1:{port}/api"
        self.process = subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL)

    def wait(self) -> str:
        """Block until the server answers; returns its API URL (RuntimeError if it failed)."""
        while self.api_url is None and self.error is None and self.process is not None:
            if _healthy(self._url):
                self.api_url = self._url
            elif self.process.poll() is not None:  # e.g. the port was taken meanwhile
                if self._attempts < PORT_ATTEMPTS:
                    self._spawn()
                else:
                    self.error = f"the server exited with code {self.process.returncode}"
            elif time.monotonic() > self._deadline:
                self.error = (f"no answer within {self.timeout:.0f} s "
                              "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
            else:
                time.sleep(0.1)
        self._release()
        if self.api_url is None:
            self._terminate()
            raise RuntimeError(
                f"the temporary Prefect API did not start ({self.error}). Fix: re-run when the "
                "machine is less loaded, raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, "
                "or run a server (prefect server start) and set PREFECT_API_URL")
        return self.api_url

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the file releases the flock

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._terminate()
        self._release()


def start_temporary_api(timeout: float | None = None) -> TemporaryApiServer | None:
    """Spawn the temporary API now; None when none is needed (``PREFECT_API_URL`` set, or
    ephemeral mode off). The caller points Prefect at ``wait()``'s URL and calls ``stop()``."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    return TemporaryApiServer(timeout).start()
