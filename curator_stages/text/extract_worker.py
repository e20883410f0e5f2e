"""The child process that extracts text from HTML, one page at a time, for :mod:`html_extract`.

Why a process: an extractor is C code (lxml, resiliparse) on hostile input. A page that takes
minutes or eats gigabytes can only be stopped from outside, so the stage sends each page here,
waits at most its time limit, and kills and restarts this process when a page runs over. An
address-space limit (``RLIMIT_AS``) turns a memory blow-up into a ``MemoryError`` reported for
that page, never an out-of-memory kill of the Ray worker.

Protocol (``multiprocessing.connection`` framing on the child's stdin/stdout): the parent sends
``(extractor, options, memory_limit_bytes)`` once, the child answers ``("ready", None)``; then
for each page the parent sends the HTML string and the child answers ``("ok", text or None)``
or ``("error", message)``. End of input ends the child.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection
from typing import Any, Callable


def extractor_function(extractor: str, options: dict[str, Any]) -> Callable[[str], str | None]:
    """The function the stage applies to each page: the library's own call, nothing added."""
    if extractor == "trafilatura":
        import trafilatura

        return lambda html: trafilatura.extract(html, **options)
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        return lambda html: extract_plain_text(HTMLTree.parse(html), **options)
    raise ValueError(f"unknown extractor {extractor!r}; use 'trafilatura' or 'resiliparse'")


def serve(recv: Connection, send: Connection) -> None:
    extractor, options, memory_limit = recv.recv()
    extract = extractor_function(extractor, options)
    extract("<html><body><p>warm up</p></body></html>")
    if memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    send.send(("ready", None))
    while True:
        try:
            html = recv.recv()
        except EOFError:
            return
        try:
            send.send(("ok", extract(html)))
        except MemoryError:
            send.send(("error", "out of memory (memory_limit_mb)"))
        except Exception as exc:  # noqa: BLE001 - the page's failure, reported for the page
            send.send(("error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the worker that started it dies, even in the
    middle of a page (end of input would only be seen after the page)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    _die_with_parent()
    # The protocol owns stdout: anything a library prints goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(Connection(os.dup(0), writable=False), Connection(out_fd, readable=False))


if __name__ == "__main__":
    main()
