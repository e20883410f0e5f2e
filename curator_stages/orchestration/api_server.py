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

**Early start.** Importing Prefect's server modules is most of the server's start, and importing
Prefect itself is most of the flow script's. :func:`start_early`, called when a flow
script run as ``__main__`` imports :mod:`.flow_script` (before Prefect), spawns the server at once, so both imports
run side by side; :func:`start_temporary_api` then adopts it only where Prefect's resolved
settings agree (no API URL, ephemeral mode allowed, same ``PREFECT_HOME``) and stops it
otherwise. Without Prefect's settings the guess is conservative (:func:`early_start_refusal`):
no early start for ``--help`` or ``--plan``, with any API URL, profile or project setting that
could change the answer, or on a home whose database does not exist yet (a first run migrates;
a mistyped option must not kill a migration). An early server that is never adopted (bad
parameters) is stopped at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
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
from typing import Any, Iterator, Mapping, Sequence

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


def _prefect_package_dir() -> Path:
    """Prefect's package directory (``prefect.__module_path__``), found without importing it."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("prefect is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def server_command(port: int) -> list[str]:
    """The server command, identical to Prefect's own temporary server's (bar the port)."""
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(_prefect_package_dir().parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def server_env(resolved: bool = True) -> dict[str, str]:
    """The server's environment: ours, Prefect's temporary-server switches and (``resolved``)
    the settings this process resolved; an early start has none yet, and the server resolves
    the same ones itself from the same environment, profile and working directory."""
    settings: dict[str, str] = {}
    if resolved:
        from prefect.settings import get_current_settings

        settings = get_current_settings().to_environment_variables(exclude_unset=True)
    return {**os.environ, **SERVER_ENV, **settings}


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


def _spawn(port: int, resolved_settings: bool = True) -> subprocess.Popen[Any]:
    command = server_command(port)
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]
    return subprocess.Popen(command, env=server_env(resolved_settings), stdin=subprocess.DEVNULL)


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

    def __init__(self, timeout: float | None = None, home: Path | None = None) -> None:
        """``home`` given (an early start): Prefect's settings are not read, ``timeout`` must
        be given too, and the server resolves its settings itself."""
        self.resolved_settings = home is None
        #: Spawned by :func:`start_early`, before this process imported Prefect.
        self.spawned_early = False
        if timeout is None:
            from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

            timeout = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        self.timeout = float(timeout)
        self.home = home if home is not None else prefect_home()
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
            self.process = _spawn(port, self.resolved_settings)
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
    """Start the temporary API now (no-op with ``PREFECT_API_URL`` or ephemeral mode off), or
    adopt the one :func:`start_early` spawned when Prefect's settings agree with its guess.

    Returns the server, running; the caller points Prefect at ``server.api_url`` and calls
    ``stop()`` at the end. None when no temporary server is needed.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    global _early
    early, _early = _early, None
    needed = not PREFECT_API_URL.value() and PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value()
    if early is not None:
        if needed and early.home == prefect_home():
            return early
        logger.info("the early temporary API (PREFECT_HOME=%s) does not match Prefect's "
                    "settings; stopping it", early.home)
        early.stop()
    if not needed:
        return None
    return TemporaryApiServer(timeout).start()


#: The server :func:`start_early` spawned, until :func:`start_temporary_api` adopts or stops it.
_early: TemporaryApiServer | None = None
#: What Prefect reads besides the environment, in the working directory and in a profile, that
#: could point a run at another API, home or database.
_PROJECT_FILES = {"prefect.toml": "", "pyproject.toml": "[tool.prefect", ".env": "PREFECT_"}
_PROFILE_KEYS = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_API_DATABASE_CONNECTION_URL",
                 "PREFECT_PROFILES_PATH", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
_EARLY_ARGS = ("-h", "--help", "--plan")


def early_home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def early_start_refusal(argv: Sequence[str], environ: Mapping[str, str],
                        cwd: Path) -> str | None:
    """Why a flow script must not spawn its temporary API before Prefect's settings are known;
    None when the early start is safe (then :func:`start_temporary_api` still checks)."""
    if any(arg in _EARLY_ARGS or arg.startswith("--plan=") for arg in argv):
        return "help or plan: nothing runs"
    for name in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_PROFILE",
                 "PREFECT_PROFILES_PATH", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
        if environ.get(name):
            return f"{name} is set"
    home = early_home(environ)
    profiles = home / "profiles.toml"
    if profiles.exists():
        try:
            import tomllib

            data = tomllib.loads(profiles.read_text())
            active = data.get("profiles", {}).get(data.get("active") or "ephemeral", {})
        except (OSError, ValueError) as exc:
            return f"{profiles} unreadable: {exc}"
        ephemeral = str(active.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
                        if isinstance(active, dict) else "")
        if (not isinstance(active, dict) or any(k in active for k in _PROFILE_KEYS)
                or ephemeral.strip().lower() not in ("true", "1", "yes", "on")):
            return f"the active profile in {profiles} sets the API, home or database"
    for name, marker in _PROJECT_FILES.items():
        path = cwd / name
        try:
            if path.exists() and marker in path.read_text(errors="replace"):
                return f"{path} may set Prefect's settings"
        except OSError as exc:
            return f"{path} unreadable: {exc}"
    if not (home / "prefect.db").is_file():
        return "no database in this PREFECT_HOME yet (a first run migrates it)"
    if importlib.util.find_spec("prefect") is None:
        return "prefect is not installed"
    try:
        float(environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 20)
    except ValueError:
        return "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS is not a number"
    return None


def start_early(argv: Sequence[str] | None = None) -> TemporaryApiServer | None:
    """Spawn the temporary API before the flow script imports Prefect (see the module's
    docstring); returns it, or None where :func:`early_start_refusal` says no."""
    global _early
    argv = list(sys.argv[1:] if argv is None else argv)
    reason = early_start_refusal(argv, os.environ, Path.cwd())
    if reason is not None or _early is not None:
        logger.debug("no early temporary API: %s", reason or "already started")
        return None
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 20)
    _early = TemporaryApiServer(timeout, home=early_home(os.environ))
    _early.spawned_early = True
    _early.start()
    atexit.register(_stop_unadopted)
    return _early


def _stop_unadopted() -> None:
    """At exit: an early server nobody adopted (the run was refused) is stopped."""
    global _early
    early, _early = _early, None
    if early is not None:
        early.stop()
