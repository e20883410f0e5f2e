"""What an embedded Ray spilled during a flow run, and during which stage task.

Why not Ray's ``memory_summary``: the flow starts its own Ray and shuts it down when it ends, so
nothing outside the flow can ask a live Ray at the end. Two records outlive it, both read here:

* the spill directory (``--spill-dir``), watched while the run goes (:class:`SpillWatch`): Ray
  writes every spilled object into a file there and deletes it when the object is freed, so the
  sum over every file ever seen (largest size seen of each) is the bytes spilled, sampled
  (a file written and deleted between two samples is missed; spilled objects normally live
  until read back, far longer than a sample interval). Matched against the stage tasks' start
  and end in the flow's log (:func:`stage_windows`), it says which stage task spilled.
* the raylet's log (``<RAY_TMPDIR>/ray/session_*/logs/raylet.out``; the run is given its own
  ``RAY_TMPDIR``): Ray 2.60's raylet logs ``Spilled <MiB> MiB, <n> objects, write throughput``
  after a spill (at most once a second, so the last figure may be up to a second old) and its
  periodic state dump counts ``cumulative spill requests`` (:func:`raylet_spill_counters`).

Objects the store allocates straight on disk when it is full (Ray's fallback allocation, into
the same directory) are unlinked at once and appear in neither record: a run whose store
overflowed that way shows it in the raylet log's ``fallback`` lines, counted here too.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path
from typing import Any

_SPILLED = re.compile(r"Spilled (\d+) MiB, (\d+) objects")
_REQUESTS = re.compile(r"cumulative spill requests: (\d+)")
_FALLBACK = re.compile(r"fallback allocating ")
_LOG_TIME = r"^(\d\d:\d\d:\d\d\.\d+) \| \w+\s+\| "
_TASK_START = re.compile(_LOG_TIME + r"Task run 'stages:([^']+)' - stages \2: started", re.M)
_TASK_END = re.compile(_LOG_TIME + r"Flow run '[^']*' - \[\d+/\d+\] (\S+): (\w+)"
                       r"(?:[^(\n]*\((\d+(?:\.\d+)?)s, )?", re.M)


class SpillWatch:
    """A ``run_measured(extra=...)`` callback: MB in the spill directory now, and MB of every
    file seen there so far (the bytes spilled up to now)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)
        self.largest: dict[str, int] = {}

    def __call__(self) -> dict[str, float]:
        now = 0
        for root, _, names in os.walk(self.directory):
            for name in names:
                path = os.path.join(root, name)
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue  # deleted between the listing and the stat
                now += size
                if size > self.largest.get(path, -1):
                    self.largest[path] = size
        return {"spill_mb": round(now / 2**20, 2),
                "spill_total_mb": round(sum(self.largest.values()) / 2**20, 2),
                "epoch": round(time.time(), 2)}

    @property
    def total_mb(self) -> float:
        return round(sum(self.largest.values()) / 2**20, 2)

    @property
    def files(self) -> int:
        return len(self.largest)


def raylet_spill_counters(*ray_tmpdirs: str | Path) -> dict[str, Any]:
    """Spill counters from the raylet logs of every Ray session under each ``ray_tmpdir`` (one
    per node; a run whose first Ray start failed and was retried has two sessions): MiB and
    objects of the last ``Spilled`` line of each log, summed, the largest ``cumulative spill
    requests`` of each, summed, and the number of fallback-allocation lines."""
    sessions = [log for d in ray_tmpdirs for pattern in ("raylet.out", "raylet.*.out")
                for session in ("ray/session_2*", "session_2*")  # RAY_TMPDIR, --temp-dir
                for log in sorted(Path(d).glob(f"{session}/logs/{pattern}"))]
    out: dict[str, Any] = {"raylet_logs": len(sessions), "spilled_mib": 0.0,
                           "spilled_objects": 0, "spill_requests": 0, "fallback_lines": 0}
    for log in sessions:
        text = log.read_text(errors="replace")
        spilled = _SPILLED.findall(text)
        if spilled:
            out["spilled_mib"] += float(spilled[-1][0])
            out["spilled_objects"] += int(spilled[-1][1])
        requests = [int(n) for n in _REQUESTS.findall(text)]
        out["spill_requests"] += max(requests, default=0)
        out["fallback_lines"] += len(_FALLBACK.findall(text))
    return out


def _epoch(clock: str, near: float) -> float:
    """The epoch second of a log line's local ``HH:MM:SS.fff``, on the day of ``near``."""
    day = dt.datetime.fromtimestamp(near).date()
    t = dt.datetime.combine(day, dt.time.fromisoformat(clock)).timestamp()
    return t + 86400 if t < near - 3600 else t


def stage_windows(flow_log: str, started_epoch: float) -> list[dict[str, Any]]:
    """Each stage task of a flow run's console log: its stages, status, and start and end in
    seconds since ``started_epoch`` (the run's start, the timeline's zero)."""
    starts = {m.group(2): _epoch(m.group(1), started_epoch)
              for m in _TASK_START.finditer(flow_log)}
    windows = []
    for m in _TASK_END.finditer(flow_log):
        end = _epoch(m.group(1), started_epoch)
        # A stage task run in the cluster (a run joining one) logs no start line on the flow's
        # console; its end line gives its duration.
        start = starts.get(m.group(2), end - float(m.group(4) or 0))
        windows.append({"stages": m.group(2), "status": m.group(3),
                        "start_s": round(start - started_epoch, 2),
                        "end_s": round(end - started_epoch, 2)})
    return windows


def spill_by_stage_task(timeline: list[dict], windows: list[dict]) -> list[dict[str, Any]]:
    """MB spilled during each stage task: the growth of ``spill_total_mb`` between the last
    sample before its start and the first sample after its end."""
    out = []
    for w in windows:
        before = [r["spill_total_mb"] for r in timeline
                  if r["t"] <= w["start_s"] and "spill_total_mb" in r]
        after = [r["spill_total_mb"] for r in timeline
                 if r["t"] >= w["end_s"] and "spill_total_mb" in r]
        inside = [r["spill_total_mb"] for r in timeline if "spill_total_mb" in r]
        end = after[0] if after else (inside[-1] if inside else 0.0)
        out.append({**w, "spilled_mb": round(end - (before[-1] if before else 0.0), 2),
                    "samples": sum(1 for r in timeline if w["start_s"] <= r["t"] <= w["end_s"])})
    return out
