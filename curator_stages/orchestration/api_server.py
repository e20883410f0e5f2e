"""Prefect's temporary local API, started about two seconds sooner.

A flow run without ``PREFECT_API_URL`` uses a temporary API server: Prefect's client starts
``SubprocessASGIServer`` (a ``uvicorn`` process serving ``prefect.server.api.server``) and
waits until it answers. Prefect launches that process only after importing the server module
in the calling process too, which costs ~1.8 s of CPU before the server process even starts,
and the server process then imports the same modules again. For a local run that time is on
the critical path (the flow cannot start before the API answers).

:func:`start_temporary_api` launches the same server process first and imports the module
afterwards, while the server boots. It then hands the running process to Prefect's own
process-wide ``SubprocessASGIServer`` instance, so everything else (the health wait, the
"Starting temporary server" message, the client finding the URL, the stop at exit) is
Prefect's. If Prefect's internals differ from what this expects, it falls back to Prefect's
plain start.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from typing import Any

logger = logging.getLogger(__name__)

#: The server process's environment additions, as Prefect 3.9 sets them.
_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(port: int) -> subprocess.Popen[Any]:
    import prefect
    from prefect.settings import get_current_settings

    env = {**os.environ, **_SERVER_ENV,
           **get_current_settings().to_environment_variables(exclude_unset=True)}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env)


def start_temporary_api() -> subprocess.Popen[Any] | None:
    """Start the temporary API the flow's client will use (no-op if it is already running).

    Returns the server process launched early when Prefect's instance took it, else None.
    """
    early: subprocess.Popen[Any] | None = None
    try:
        port = _free_port()
        early = _launch(port)
    except Exception as exc:  # noqa: BLE001 - the plain start below still works
        logger.debug("early API server launch failed (%s); using Prefect's start", exc)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client uses (no port given)
    if early is not None and (server.running or not hasattr(server, "_run_uvicorn_command")):
        early.terminate()
        early.wait(timeout=10)
        early = None
    if early is not None:
        plain = server._run_uvicorn_command
        handed = [early]

        def run_uvicorn_command() -> subprocess.Popen[Any]:
            # The first call gets the process launched above; a retry (port taken: exit
            # code 3) gets a fresh one from Prefect.
            proc = handed.pop() if handed else None
            return proc if proc is not None and proc.poll() is None else plain()

        server.port = port
        server._run_uvicorn_command = run_uvicorn_command
    server.start()
    return early if early is not None and server.server_process is early else None
