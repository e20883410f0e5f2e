"""Process handling of a local flow run (``python flows/x.py``): signals, the temporary API,
cleanup. None of the run's processes (an embedded Ray, the temporary API server) may outlive it:

* **SIGTERM stops like Ctrl-C.** Python's default SIGTERM kills the process on the spot (no
  ``finally``, no ``ray.shutdown()``); :func:`run_local` turns it into ``KeyboardInterrupt``, so
  a scheduler's stop unwinds like an interrupt and exits with ``128 + signal``.
* **SIGKILL cannot be handled**, so the children die with the process: Ray's by Ray itself
  (``PR_SET_PDEATHSIG`` and its reaper), the API server by :mod:`.prefect_api`'s launcher.
* **The temporary API** is spawned before Ray starts, so both start side by side, and the flow
  is pointed at it with Prefect's public ``temporary_settings``.

Nothing here runs at import; a library user's signal handlers are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Callable, Iterator

from curator_stages.runtime.prefect_api import TemporaryApiServer, start_temporary_api

logger = logging.getLogger(__name__)
#: Seconds to wait for Prefect's queued logs and events before the temporary API stops.
BACKLOG_TIMEOUT_S = 30.0


def announce(message: str) -> None:
    """One status line on stderr while something slow starts (stdout holds only the result)."""
    print(f"{message} ...", file=sys.stderr, flush=True)


class LocalRun:
    """What a local run's body may use: :meth:`use_api` before the first Prefect call, and
    :meth:`announce` to say what starts."""

    announce = staticmethod(announce)

    def __init__(self) -> None:
        self.server: TemporaryApiServer | None = None
        self.stop_signal: int | None = None
        self._settings = contextlib.ExitStack()

    def use_api(self) -> str | None:
        """Wait for the temporary API and point Prefect at it; returns its URL (None: none
        needed)."""
        if self.server is None:
            return None
        url = self.server.wait()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self._settings.enter_context(temporary_settings({PREFECT_API_URL: url}))
        return url

    def close(self) -> None:
        if self.server is not None and self.server.api_url is not None:
            send_prefect_backlog()  # while the API that receives it still runs
        self._settings.close()
        if self.server is not None:
            self.server.stop()
            self.server = None


def send_prefect_backlog(timeout: float = BACKLOG_TIMEOUT_S) -> None:
    """Send the logs and events Prefect still queues (it batches them every few seconds).

    Prefect drains them at interpreter exit, after the temporary API has stopped: the run's last
    lines were lost ("Error logging to API"). ``drain_all`` is the services' public method.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        try:
            _, pending = service.drain_all(timeout=timeout, at_exit=False)
        except Exception as exc:  # noqa: BLE001 - reported; stopping the API goes on
            logger.warning("could not send Prefect's queued %s before stopping the temporary "
                           "API: %r", service.__name__, exc)
            continue
        if pending:
            logger.warning("Prefect's queued %s were not all sent within %.0f s; the rest is "
                           "lost with the temporary API", service.__name__, timeout)


@contextlib.contextmanager
def sigterm_as_interrupt(run: LocalRun | None = None) -> Iterator[None]:
    """Within this block (main thread only) SIGTERM raises ``KeyboardInterrupt``, like SIGINT.

    While a flow runs Prefect swaps in its own SIGTERM handler (and inside ``ray.get`` Ray
    reports Prefect's exception as a ``SystemError``), so the signals that arrived are also read
    from Python's signal wakeup fd, which sees every handled signal, into ``run.stop_signal``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if run is not None:
            run.stop_signal = signum
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.set_wakeup_fd(previous_fd)
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := reader.recv(4096):
                received += chunk
        reader.close()
        writer.close()
        stops = [s for s in received if s in (signal.SIGTERM, signal.SIGINT)]
        if run is not None and stops and run.stop_signal is None:
            run.stop_signal = stops[0]


@contextlib.contextmanager
def local_run() -> Iterator[LocalRun]:
    """A local run's process handling: SIGTERM as interrupt, temporary API, cleanup."""
    run = LocalRun()
    with sigterm_as_interrupt(run):
        try:
            first = _first_run_in_home()
            run.server = start_temporary_api()
            if run.server is not None:
                announce(f"starting Prefect's temporary API (PREFECT_HOME={run.server.home})")
                if first:
                    announce("first run in this PREFECT_HOME: creating Prefect's database "
                             "(once; later runs start faster)")
            yield run
        finally:
            run.close()


def _first_run_in_home() -> bool:
    """True when the temporary API will create its SQLite database (Prefect's default URL)."""
    try:
        from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

        url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
        if url and "sqlite" not in url:
            return False
        path = url.split(":///", 1)[1] if ":///" in url else str(PREFECT_HOME.value() / "prefect.db")
        return not os.path.exists(os.path.expanduser(path))
    except Exception as exc:  # noqa: BLE001 - only decides whether to print a hint
        logger.debug("could not tell whether Prefect's database exists: %r", exc)
        return False


def run_local(body: Callable[[LocalRun], int], *, what: str = "the run") -> int:
    """Run a flow script's ``main`` body as a local run; returns its exit code.

    An interrupt (Ctrl-C or SIGTERM) ends the process with ``128 + signal`` after cleanup, with
    one line on stderr: finished stage tasks keep their checkpoints, so re-running resumes. It
    ends by ``os._exit``: Ray's C++ core worker, interrupted mid-start or mid-task, crashed the
    interpreter's own finalisation (exit 139 after the clean stop).
    """
    holder: list[LocalRun] = []
    code: int | None = None
    try:
        with local_run() as run:
            holder.append(run)
            code = body(run)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # noqa: BLE001 - re-raised unless a stop signal caused it
        # A stage task meets SIGTERM inside Prefect's task engine, which turns it into its own
        # TerminationSignal or an exit; the signal was recorded: the same clean stop as Ctrl-C.
        if not (holder and holder[0].stop_signal):
            raise
        logger.debug("the run failed while stopping: %r", exc)
    stop = holder[0].stop_signal if holder else None
    if code is None or stop:
        signum = signal.Signals(stop or signal.SIGINT)
        print(f"{what} stopped by {signum.name}; Ray and the temporary API server are "
              "stopped, finished stage tasks keep their checkpoints (re-run to resume)",
              file=sys.stderr)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + int(signum))
    return code
