"""Ray's fixed cost: start, first task, stop, side by side, each in a fresh interpreter.

    python -m benchmarks.bench_ray_start --repeats 3 [--variants bare project project_all_on]

Variants (interleaved per repeat, so machine load hits all alike):

``bare``
    ``ray.init(); ray.shutdown()`` as a plain Ray user (or NeMo Curator) does it.
``project``
    ``start_local_ray()`` (loopback, token, the env table's switches, preloading workers) and
    ``ray.shutdown()``, as every embedded run does.
``project_all_on``
    the same, with the switches of :data:`curator_stages.runtime.env.RAY_LEAN_ENV` put back to
    Ray's defaults: what they save.

Each child reports: ``init_s`` (``ray.init``/``start_local_ray`` returned), ``first_task_s``
(a trivial task's result, from the init's end), ``shutdown_s``; the parent measures the whole
process tree from outside (:mod:`benchmarks.monitor`: wall to the last process gone, CPU).
Every variant gets the same auth token in its environment, so none writes ``~/.ray``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.monitor import run_measured

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("bare", "project", "project_all_on")

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
variant = sys.argv[1]
import ray
t_import = time.perf_counter()
if variant == "bare":
    ray.init()
else:
    from curator_stages.runtime.ray_cluster import start_local_ray
    start_local_ray()
t_init = time.perf_counter()

@ray.remote
def one():
    return 1

assert ray.get(one.remote()) == 1
t_first = time.perf_counter()
ray.shutdown()
t_stop = time.perf_counter()
print(json.dumps({"import_s": t_import - t0, "init_s": t_init - t_import,
                  "first_task_s": t_first - t_init, "shutdown_s": t_stop - t_first,
                  "in_process_s": t_stop - t0}))
"""


def child_env(variant: str, token: str) -> dict[str, str]:
    from curator_stages.runtime.env import RAY_ENV_DEFAULTS, RAY_LEAN_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST_"))}
    env.update(PYTHONPATH=str(REPO), RAY_AUTH_TOKEN=token)
    if variant == "bare":
        env["RAY_USAGE_STATS_ENABLED"] = "0"  # no network call for either side
    elif variant == "project_all_on":
        env.update({k: v for k, v in RAY_ENV_DEFAULTS.items() if k not in RAY_LEAN_ENV})
        # An explicit Ray default wins over the table's setdefault.
        env.update({k: default for k, (_, default) in RAY_LEAN_ENV.items()})
    return env


def run_one(variant: str, token: str) -> dict:
    with tempfile.TemporaryFile() as out:
        usage = run_measured([sys.executable, "-c", CHILD, variant], env=child_env(variant, token),
                             stdout=out, stderr=subprocess.DEVNULL, cwd=str(REPO), interval=0.2)
        out.seek(0)
        lines = out.read().decode().strip().splitlines()
    if usage.returncode != 0 or not lines:
        return {"variant": variant, "error": f"exit {usage.returncode}"}
    res = json.loads(lines[-1])
    res.update(variant=variant, wall_s=usage.wall_s, cpu_s=usage.cpu_s,
               processes=usage.peak_processes, names=sorted(set(usage.process_names)))
    return res


def summarise(rows: list[dict], variants: list[str]) -> str:
    keys = ("wall_s", "init_s", "first_task_s", "shutdown_s", "cpu_s")
    lines = ["| variant | " + " | ".join(f"{k} min/med/max" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for v in variants:
        ok = [r for r in rows if r["variant"] == v and "error" not in r]
        cells = []
        for k in keys:
            xs = [r[k] for r in ok]
            cells.append(f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"
                         if xs else "-")
        lines.append(f"| {v} ({len(ok)} ok) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    token = secrets.token_hex(32)
    rows = []
    for rep in range(args.repeats):
        for v in args.variants:
            row = run_one(v, token)
            row["repeat"] = rep
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("variant", "repeat", "wall_s", "init_s",
                                                       "first_task_s", "shutdown_s", "cpu_s",
                                                       "processes", "error")}), flush=True)
            time.sleep(2)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(summarise(rows, args.variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
