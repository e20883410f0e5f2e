"""Process handling of a local flow run (``python flows/x.py``): signals, the temporary API, cleanup.

A local run owns processes: an embedded Ray (GCS, raylet, workers) and a temporary Prefect API
server. None of them may outlive the run, whichever way it ends:

* **SIGTERM stops like Ctrl-C.** Python's default for SIGTERM kills the process on the spot:
  no ``finally``, no ``ray.shutdown()``, no ``atexit``. :func:`run_local` turns SIGTERM into
  ``KeyboardInterrupt`` for its duration, so a scheduler's or a container's stop unwinds the
  same way an interrupt does: the flow run is marked crashed, Ray is shut down, the API server
  is stopped, and the process exits with ``128 + signal``. (During a flow run Prefect installs
  its own SIGTERM bridge; it hands the signal back to this handler when it is done.)
* **SIGKILL cannot be handled**, so the children are tied to the process instead: Ray's own
  processes share its fate (Ray sets ``PR_SET_PDEATHSIG`` on Linux and runs a reaper), and the
  API server does the same (see :mod:`curator_stages.orchestration.api_server`).
* **The temporary API** starts in the background while Ray starts (on a home with a database,
  already while the flow script imports Prefect: ``api_server.start_early``), one at a time per
  ``PREFECT_HOME``; the flow is pointed at it with Prefect's public ``temporary_settings``.

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

from curator_stages.orchestration.api_server import (
    TemporaryApiServer,
    fallback_to_prefect_start,
    start_temporary_api,
)

logger = logging.getLogger(__name__)


def announce(message: str) -> None:
    """One status line on the console while something slow starts (stderr, so a script's
    stdout holds only its result)."""
    print(f"{message} ...", file=sys.stderr, flush=True)


class LocalRun:
    """What a local run's body may use: :meth:`use_api` before the first Prefect call, and
    :meth:`announce` to say what starts (pass it to ``RaySession(announce=...)``)."""

    announce = staticmethod(announce)

    def __init__(self) -> None:
        self.server: TemporaryApiServer | None = None
        self.stop_signal: int | None = None
        self._settings = contextlib.ExitStack()

    def use_api(self) -> str | None:
        """Wait for the temporary API and point Prefect at it; returns its URL (None: none
        needed, or Prefect's own start took over)."""
        if self.server is None:
            return None
        url = self.server.wait()
        if url is None:
            fallback_to_prefect_start(self.server.home)
            return None
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


#: Seconds to wait for Prefect's queued logs and events before the temporary API stops.
BACKLOG_TIMEOUT_S = 30.0


def send_prefect_backlog(timeout: float = BACKLOG_TIMEOUT_S) -> None:
    """Send the logs and events Prefect still queues (it batches them every few seconds).

    Prefect drains them at interpreter exit, after this run has stopped its temporary API: the
    last lines of the run were then lost ("Error logging to API") and the exit waited on
    connection retries. ``drain_all`` is the services' public class method.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        try:
            done, pending = service.drain_all(timeout=timeout, at_exit=False)
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

    While a flow runs, Prefect swaps in its own SIGTERM handler, and where the signal lands
    inside ``ray.get`` Ray reports Prefect's exception as a ``SystemError`` that fails the flow
    (it does stop it). So the signals that arrived are also read from Python's signal wakeup fd,
    which sees every handled signal whoever's handler runs, and recorded in ``run.stop_signal``.
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
            # Spawned now, before Ray starts in this thread: both take seconds and overlap.
            first = _first_run_in_home()
            run.server = start_temporary_api()
            if run.server is not None:
                when = "; spawned at process start" if run.server.spawned_early else ""
                announce(f"starting Prefect's temporary API (PREFECT_HOME={run.server.home}{when})")
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
        if ":///" in url:
            path = url.split(":///", 1)[1]
        else:
            path = str(PREFECT_HOME.value() / "prefect.db")
        return not os.path.exists(os.path.expanduser(path))
    except Exception as exc:  # noqa: BLE001 - only decides whether to print a hint
        logger.debug("could not tell whether Prefect's database exists: %r", exc)
        return False


def run_local(body: Callable[[LocalRun], int], *, what: str = "the run") -> int:
    """Run a flow script's ``main`` body as a local run; returns its exit code.

    An interrupt (Ctrl-C or SIGTERM) ends the process with ``128 + signal`` after cleanup, with
    one line on stderr instead of a traceback: checkpoints of finished stage tasks are kept, so
    re-running the same command resumes. It ends by ``os._exit`` once Ray and the API are
    stopped and the output is flushed: Ray's C++ core worker, interrupted mid-start or mid-task,
    crashed the interpreter's own finalisation (exit 139 after the clean stop).
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
        # A stage task (it runs in this process) meets SIGTERM inside Prefect's
        # task engine, which turns it into its own TerminationSignal or an exit; the signal
        # itself was recorded, and the outcome is the same clean stop as Ctrl-C.
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
