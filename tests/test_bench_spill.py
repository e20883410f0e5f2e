"""benchmarks/spill.py reads what Ray spilled from the records a finished flow run leaves:
the raylet's log lines and a flow's console log (stage-task windows). Parsing only (quick
tier); tests/test_streaming_dedup_memory.py uses it on a real run."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.spill import SpillWatch, raylet_spill_counters, spill_by_stage_task, stage_windows

#: Lines as Ray 2.60's raylet writes them (local_object_manager.cc, the periodic state dump).
RAYLET = """\
[2026-12-06 08:03:20,852 I 1 1] (raylet) store_runner.cc:66: Starting object store with \
directory /dev/shm, fallback /tmp/x/spill, and huge page support disabled
[2026-12-06 08:03:33,073 I 1 1] (raylet) local_object_manager.cc:244: :info_message:Spilled \
28 MiB, 1 objects, write throughput 28 MiB/s.
[state-dump] - cumulative spill requests: 1
[2026-12-06 08:03:34,073 I 1 1] (raylet) local_object_manager.cc:244: :info_message:Spilled \
57 MiB, 2 objects, write throughput 28 MiB/s.
[state-dump] - cumulative spill requests: 2
"""


def test_raylet_counters_take_each_sessions_last_spill_line(tmp_path: Path):
    # under RAY_TMPDIR (an embedded Ray) and under `ray start --temp-dir` (a cluster's node)
    for session, text in (("ray/session_2026-12-06_08-03-20_1", RAYLET),
                          ("session_2026-12-06_08-04-00_2", RAYLET.split("[state-dump]")[0])):
        logs = tmp_path / session / "logs"
        logs.mkdir(parents=True)
        (logs / "raylet.out").write_text(text)
    counters = raylet_spill_counters(tmp_path)
    assert counters == {"raylet_logs": 2, "spilled_mib": 57.0 + 28.0, "spilled_objects": 3,
                        "spill_requests": 2, "fallback_lines": 0}
    assert raylet_spill_counters(tmp_path / "none")["raylet_logs"] == 0


def test_stage_windows_and_spill_per_stage_task(tmp_path: Path):
    day = time.strftime("%Y-%m-%d")
    started = time.mktime(time.strptime(f"{day} 08:01:00", "%Y-%m-%d %H:%M:%S"))
    log = """\
08:01:09.898 | INFO    | Task run 'stages:a+b' - stages a+b: started on the input files; x
08:02:17.447 | INFO    | Flow run 'e' - [1/3] a+b: Completed, 4197 documents in 7 tasks (67.6s, 33% done)
08:02:17.557 | INFO    | Task run 'stages:exact_dedup' - stages exact_dedup: started on 4197
08:02:22.708 | INFO    | Flow run 'e' - [2/3] exact_dedup: Cached, 4041 documents in 7 tasks
08:02:32.437 | INFO    | Flow run 'e' - [3/3] fuzzy_dedup+parquet_writer: Completed, wrote 3862 documents (9.7s, 100% done)
"""
    windows = stage_windows(log, started)
    assert windows == [
        {"stages": "a+b", "status": "Completed", "start_s": 9.9, "end_s": 77.45},
        {"stages": "exact_dedup", "status": "Cached", "start_s": 77.56, "end_s": 82.71},
        # no start line (a stage task run in the cluster): its duration from the end line
        {"stages": "fuzzy_dedup+parquet_writer", "status": "Completed", "start_s": 82.74,
         "end_s": 92.44}]
    timeline = [{"t": 0.0, "spill_total_mb": 0.0}, {"t": 50.0, "spill_total_mb": 30.0},
                {"t": 78.0, "spill_total_mb": 30.0}, {"t": 83.0, "spill_total_mb": 30.0}]
    assert [w["spilled_mb"] for w in spill_by_stage_task(timeline, windows)] == [30.0, 0.0, 0.0]
    spill = tmp_path / "spill"
    watch = SpillWatch(spill)
    assert watch()["spill_total_mb"] == 0.0
    (spill / "ray_spilled_objects_n").mkdir(parents=True)
    (spill / "ray_spilled_objects_n" / "a-multi-1").write_bytes(b"x" * 2**20)
    assert watch()["spill_mb"] == 1.0
    (spill / "ray_spilled_objects_n" / "a-multi-1").unlink()  # freed: still counted as spilled
    row = watch()
    assert (row["spill_mb"], row["spill_total_mb"], watch.files) == (0.0, 1.0, 1)
