"""The warm Ray's holder process (``python -m`` this module, spawned by :func:`.warm.start`):
starts the embedded Ray, records it, and shuts it down on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from curator_stages.runtime import warm
from curator_stages.runtime.env import apply_local_run_defaults
from curator_stages.runtime.ray_cluster import start_local_ray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="holder process of the warm local Ray")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--object-store-memory", type=int, default=None)
    parser.add_argument("--spill-dir", default=None)
    args = parser.parse_args(argv)
    apply_local_run_defaults()
    import psutil
    import ray

    stopping: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _f: stopping.append(s))
    # warm: every worker the raylet starts, for any run that joins, preloads the stage modules.
    start_local_ray(args.num_cpus, log_to_driver=False,
                    object_store_memory=args.object_store_memory,
                    object_spilling_directory=args.spill_dir)
    resources = ray.cluster_resources()
    held = warm.WarmRay(pid=os.getpid(), create_time=psutil.Process().create_time(),
                        address=ray.get_runtime_context().gcs_address,
                        num_cpus=float(resources.get("CPU", 0)),
                        token_path=os.environ["RAY_AUTH_TOKEN_PATH"],
                        pythonpath=os.environ.get("PYTHONPATH", ""),
                        object_store_memory=float(resources.get("object_store_memory", 0)))
    warm.record(held)
    print(f"warm Ray at {held.address} ({held.num_cpus:g} CPUs), holder pid {held.pid}",
          flush=True)
    while not stopping:
        time.sleep(0.5)
    print("stopping the warm Ray", flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
