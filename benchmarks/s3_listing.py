"""How long the run's one listing of an object-store input takes, and the fingerprint over it.

Starts SeaweedFS on loopback the way the tests do (``tests/s3_server.py``), uploads ``--objects``
small JSONL objects under one prefix, then times, ``--repeats`` times each (min/median/max):

- the product's one listing (``FilePartitioningStage.list_input``: what a run does at start),
  with a fresh filesystem each time so that no cached listing is reused;
- the input fingerprint computed from that listing (no request at all);
- the partitioner turning that listing into read tasks (no request either).

    python benchmarks/s3_listing.py [--objects 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import s3_server  # noqa: E402  (the test fixture's server code, reused as is)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def line(label: str, times: list[float]) -> str:
    return (f"{label}: min {min(times):.2f} s, median {statistics.median(times):.2f} s, "
            f"max {max(times):.2f} s ({len(times)} runs)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5_000, help="objects per bulk upload call")
    args = ap.parse_args()

    import s3fs

    from curator_stages.io import JSONL_EXTENSIONS
    from curator_stages.io.partition import FilePartitioningStage
    from curator_stages.orchestration.fingerprint import input_fingerprint
    from curator_stages.tasks import EmptyTask

    data_dir = tempfile.mkdtemp(prefix="curator-s3-bench-")
    server, proc = s3_server.start(data_dir)
    try:
        fs = server.filesystem()
        prefix = f"{server.bucket}/listing/in"
        start = time.perf_counter()
        for first in range(0, args.objects, args.batch):
            batch = {f"{prefix}/part-{i:07d}.jsonl": b'{"text": "document %d"}\n' % i
                     for i in range(first, min(first + args.batch, args.objects))}
            fs.pipe(batch)  # s3fs sends a dict's objects concurrently (asyncio)
        upload = time.perf_counter() - start
        print(f"uploaded {args.objects} objects in {upload:.1f} s", flush=True)

        url = server.url("listing", "in")

        def one_listing():
            s3fs.S3FileSystem.clear_instance_cache()  # a fresh run: nothing cached
            return FilePartitioningStage(url, file_extensions=JSONL_EXTENSIONS).list_input()

        list_times, listing = timed(one_listing, args.repeats)
        assert len(listing) == args.objects, (len(listing), args.objects)
        fp_times, _ = timed(lambda: input_fingerprint(listing), args.repeats)

        def partition():
            stage = FilePartitioningStage(url, file_extensions=JSONL_EXTENSIONS)
            stage.use_listing(listing)
            return stage.process(EmptyTask(task_id="bench", dataset_name="bench"))

        part_times, tasks = timed(partition, args.repeats)
        assert len(tasks) == args.objects
        print(line(f"one listing of {args.objects} objects", list_times))
        print(line("input fingerprint over the listing", fp_times))
        print(line("partitioning the listing into read tasks", part_times))
    finally:
        s3_server.stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
