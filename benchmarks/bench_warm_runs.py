"""Warm runs: ``RayDataExecutor`` joining a warm local Ray against the one-process loop.

    python -m benchmarks.bench_warm_runs --input /tmp/corpus-80k --repeats 3 [--num-cpus 2]

Starts a warm Ray (``curator-stages ray start``, in a private state directory), then per repeat
runs, each in a fresh interpreter measured from outside (:mod:`benchmarks.monitor`):

``local``  ``python -m benchmarks.variant --variant local`` (LocalExecutor, one process);
``warm``   the same reference stages through ``RayDataExecutor`` with ``RAY_ADDRESS`` set to the
           warm Ray (the process joins, runs one streaming plan, detaches).

Both write Parquet; their output digests (ids and texts) must be equal. The warm variant's CPU
column counts its driver only: the warm workers belong to the warm Ray's process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.digest import output_digest
from benchmarks.monitor import run_measured

REPO = Path(__file__).resolve().parents[1]

WARM_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from benchmarks.pipeline import accounting, reference_stages
from curator_stages.backends.ray_data import RayDataExecutor
import ray
stages = reference_stages(sys.argv[1], sys.argv[2])
out = RayDataExecutor(progress_bars=False).execute(stages)
t1 = time.perf_counter()
print(json.dumps(dict(accounting(out), in_process_s=t1 - t0)))
"""


def run_local(inp: str, out: Path, work: Path, env: dict[str, str]) -> dict:
    result = work / "local.json"
    usage = run_measured([sys.executable, "-m", "benchmarks.variant", "--variant", "local",
                          "--input", inp, "--output", str(out), "--work-dir", str(work),
                          "--result", str(result)], env=env, cwd=str(REPO),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"wall_s": usage.wall_s, "cpu_s": usage.cpu_s, "rc": usage.returncode,
            "peak_pss_mb": usage.peak_tree_pss_mb}


def run_warm(inp: str, out: Path, env: dict[str, str], address: str, log: Path) -> dict:
    with open(log, "wb") as f:
        usage = run_measured([sys.executable, "-c", WARM_CHILD, inp, str(out)],
                             env={**env, "RAY_ADDRESS": address}, cwd=str(REPO), stdout=f,
                             stderr=subprocess.STDOUT)
    return {"wall_s": usage.wall_s, "cpu_s": usage.cpu_s, "rc": usage.returncode,
            "peak_pss_mb": usage.peak_tree_pss_mb}


def stats(xs: list[float]) -> str:
    return f"{min(xs):.1f} / {statistics.median(xs):.1f} / {max(xs):.1f}" if xs else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--scratch", default=None, help="output/work directory (default: temp)")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-warm-"))
    scratch.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_", "PYTEST_"))}
    env.update(PYTHONPATH=str(REPO), CURATOR_STAGES_RAY_DIR=str(scratch / "warm-ray"))
    cmd = [sys.executable, "-m", "curator_stages.cli", "ray", "start"]
    if args.num_cpus:
        cmd += ["--num-cpus", str(args.num_cpus)]
    t0 = time.perf_counter()
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    start_s = time.perf_counter() - t0
    if started.returncode != 0:
        print(started.stdout, started.stderr)
        return 1
    state = json.loads((scratch / "warm-ray" / "state.json").read_text())
    print(f"warm Ray at {state['address']} started in {start_s:.1f} s", flush=True)
    rows: list[dict] = []
    try:
        for rep in range(args.repeats):
            for variant in ("local", "warm"):
                out = scratch / f"out-{variant}-{rep}"
                shutil.rmtree(out, ignore_errors=True)
                if variant == "local":
                    work = scratch / f"work-{rep}"
                    work.mkdir(exist_ok=True)
                    row = run_local(args.input, out, work, env)
                else:
                    row = run_warm(args.input, out, env, state["address"],
                                   scratch / f"warm-{rep}.log")
                row.update(variant=variant, repeat=rep, digest=output_digest(out / "data"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        subprocess.run([sys.executable, "-m", "curator_stages.cli", "ray", "stop"], env=env,
                       cwd=REPO)
    digests = {json.dumps(r["digest"], sort_keys=True) for r in rows}
    local = [r["wall_s"] for r in rows if r["variant"] == "local" and r["rc"] == 0]
    warm = [r["wall_s"] for r in rows if r["variant"] == "warm" and r["rc"] == 0]
    print("| variant | wall s min/med/max | CPU s min/med/max (driver tree) |\n|---|---|---|")
    for name, xs in (("one-process loop (LocalExecutor)", local), ("warm RayDataExecutor", warm)):
        key = "local" if xs is local else "warm"
        cpu = [r["cpu_s"] for r in rows if r["variant"] == key and r["rc"] == 0]
        print(f"| {name} | {stats(xs)} | {stats(cpu)} |")
    ratios = [a / b for a, b in zip(local, warm)]
    print(f"speed-up loop/warm per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}" if ratios else "no ratio")
    print(f"outputs identical across all runs: {len(digests) == 1} ({len(digests)} digest(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
