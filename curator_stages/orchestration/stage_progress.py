"""Progress of a running stage task: documents processed and documents/s per stage, in the log.

A stage task streams its output parts back as Ray Data produces them (``run_stages``' loop);
each part carries the per-stage counts of the documents behind it. Every few seconds this logs
one line per stage task with each stage's documents so far and its rate since the task started.
The log is Prefect's run logger: on the console of a local run and in the
flow run's logs in the UI under a deployment. No bar is drawn: lines stay readable in a log file.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from curator_stages.tasks import DOCUMENTS_READ, FILES_LISTED

#: Seconds between two progress lines of one stage task.
PROGRESS_EVERY_S = 5.0


class StageProgress:
    """Throttled progress lines for one stage task; feed it the aggregated per-stage counts.

    The first output part always gets a line, then one every ``every_s`` seconds at most.
    """

    def __init__(self, names: Sequence[str], log: Callable[[str], None],
                 every_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 listing: Sequence[str] = ()):
        self.names = list(names)
        #: Stages that list files (their tasks are file groups, not documents).
        self.listing = set(listing)
        self.log = log
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last = float("-inf")  # the first part always gets a line
        self.lines = 0

    def start(self, documents: int, tasks: int) -> str:
        """Log the stage task's start: the first output part can take seconds to come (Ray Data
        starts the plan, a first stage task also its workers), so the console is never silent
        in between."""
        source = (f"{documents} documents in {tasks} tasks" if documents
                  else "the input files" if self.listing else "no documents")
        line = (f"stages {'+'.join(self.names)}: started on {source}; progress every "
                f"{self.every_s:.0f}s once output arrives")
        self.lines += 1
        self.log(line)
        return line

    def update(self, stages: dict[str, Any], *, final: bool = False) -> str | None:
        """Log a line if ``every_s`` passed since the last (or ``final``); returns the line."""
        now = self.clock()
        if not final and now - self.last < self.every_s:
            return None
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        parts = []
        for name in self.names:
            counts = stages.get(name)
            metrics = getattr(counts, "metrics", None) or {}
            if name in self.listing:  # files, no documents
                files = metrics.get(FILES_LISTED, getattr(counts, "items_out", 0))
                parts.append(f"{name} {int(files)} file(s)")
                continue
            # A reader's tasks are file groups: its documents are the ones it read.
            done = int(metrics.get(DOCUMENTS_READ, getattr(counts, "items_in", 0) or 0))
            parts.append(f"{name} {done:,} docs ({done / elapsed:,.0f} docs/s)")
        line = f"progress {'+'.join(self.names)} after {elapsed:.0f}s: " + ", ".join(parts)
        self.lines += 1
        self.log(line)
        return line


__all__ = ["PROGRESS_EVERY_S", "StageProgress"]
