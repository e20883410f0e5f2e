"""The temporary Prefect API of a local run, owned by the run's process.

A flow run without ``PREFECT_API_URL`` needs an API server. Prefect's client would start one
itself (``SubprocessASGIServer``), but that start is not ours to make safe:

* it imports Prefect's server module in the calling process first (~1.8 s of CPU on the
  critical path, while the server process imports the same modules again);
* it is not thread-safe (it marks itself running before the process exists; a second caller
  or an exit during the wait crashed with ``'NoneType' object has no attribute 'poll'``);
* its process outlives a SIGKILLed parent (it is stopped by ``atexit`` only), and two of them
  on one fresh ``PREFECT_HOME`` migrate the same database at once.

So :class:`TemporaryApiServer` runs the very command Prefect runs for its temporary server
(``uvicorn`` on Prefect's public app factory ``create_app``, 127.0.0.1 only, same environment;
tests/test_process_safety.py::test_server_command_matches_prefects_own fails if Prefect's
changes) and makes it safe:

* the process is spawned through a tiny launcher that sets ``PR_SET_PDEATHSIG`` (Linux), so
  the kernel kills it when the thread that spawned it dies: that thread lives until
  :meth:`TemporaryApiServer.stop`, so the server dies with the process, however it dies;
* the start, up to the first healthy answer (migrations run before it), holds an exclusive
  ``flock`` on ``<PREFECT_HOME>/.curator-api-start.lock``: concurrent runs on one home migrate
  one after the other;
* the flow then uses it as an ordinary API server (``PREFECT_API_URL``, the way Prefect's own
  test harness does), so no Prefect internals are touched at run time.

If the server does not answer, the fallback is Prefect's public path: a client health check
(under the same lock) makes Prefect start its own temporary server.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

#: The server process's environment additions, as Prefect 3.9 sets them for its temporary server.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}
LOCK_NAME = ".curator-api-start.lock"
#: Starts tried when the chosen port is taken by the time uvicorn binds it.
PORT_ATTEMPTS = 3

# Run by a fresh interpreter: ask the kernel for SIGKILL when the spawning thread dies, make sure
# that parent is still there (else it died before the request), then become the server.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:\n"  # 1 = PR_SET_PDEATHSIG
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def server_command(port: int) -> list[str]:
    """The server command, identical to Prefect's own temporary server's (bar the port)."""
    import prefect

    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def server_env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    return {**os.environ, **SERVER_ENV,
            **get_current_settings().to_environment_variables(exclude_unset=True)}


def prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser()


@contextlib.contextmanager
def api_start_lock(home: Path | None = None) -> Iterator[Path]:
    """Exclusive lock per PREFECT_HOME around a temporary server's start and migration."""
    home = home or prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def pick_loopback_port() -> int:
    """A free loopback port outside the OS's ephemeral range (32768-60999) and Ray's worker
    ports (10002-19999), where a Ray process binding port 0 could take it during the start."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-29999 for a Prefect API server")


def _spawn(port: int) -> subprocess.Popen[Any]:
    command = server_command(port)
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]
    return subprocess.Popen(command, env=server_env(), stdin=subprocess.DEVNULL)


#: No proxy from the environment for a loopback health check.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _OPENER.open(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class TemporaryApiServer:
    """The local run's API server: started in the background, waited for, stopped with us."""

    def __init__(self, timeout: float | None = None) -> None:
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        self.timeout = float(timeout or PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        self.home = prefect_home()
        self.process: subprocess.Popen[Any] | None = None
        self.api_url: str | None = None
        self.error: str | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="curator-api-server", daemon=True)

    # The thread spawns the server and lives until stop(): PR_SET_PDEATHSIG fires when the
    # spawning *thread* ends, so it must not end while the server should run.
    def start(self) -> "TemporaryApiServer":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with api_start_lock(self.home):
                self._start_under_lock()
        except Exception as exc:  # noqa: BLE001 - reported by wait(), which falls back
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()
        self._stop.wait()
        self._terminate()

    def _start_under_lock(self) -> None:
        deadline = time.monotonic() + self.timeout
        for _ in range(PORT_ATTEMPTS):
            port = pick_loopback_port()
            self.process = _spawn(port)
            url = f"http://127.0.0.1:{port}/api"
            while time.monotonic() < deadline and not self._stop.is_set():
                if _healthy(url):
                    self.api_url = url
                    return
                if self.process.poll() is not None:
                    break  # e.g. the port was taken meanwhile: try another
                time.sleep(0.1)
            else:
                self._terminate()
                raise TimeoutError(f"the server did not answer within {self.timeout:.0f} s "
                                   "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
        code = self.process.returncode if self.process is not None else None
        raise RuntimeError(f"the server process exited with code {code} {PORT_ATTEMPTS} times")

    def wait(self) -> str | None:
        """Block until the server answers; returns its API URL, or None if it failed."""
        self._ready.wait()
        if self.api_url is None:
            logger.warning("the temporary Prefect API did not start (%s); using Prefect's own "
                           "start instead", self.error)
        return self.api_url

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
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            self._terminate()


def fallback_to_prefect_start(home: Path | None = None) -> None:
    """Prefect's public path to its temporary server, started now and under the migration lock."""
    from prefect.client.orchestration import get_client

    with api_start_lock(home), get_client(sync_client=True) as client:
        client.api_healthcheck()


def start_temporary_api(timeout: float | None = None) -> TemporaryApiServer | None:
    """Start the temporary API now (no-op with ``PREFECT_API_URL`` or ephemeral mode off).

    Returns the server, running; the caller points Prefect at ``server.api_url`` and calls
    ``stop()`` at the end. None when no temporary server is needed.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    return TemporaryApiServer(timeout).start()
