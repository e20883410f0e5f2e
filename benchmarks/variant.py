"""One benchmark run of one variant, in a fresh interpreter (what ``benchmarks.run`` spawns).

    python -m benchmarks.variant --variant ray --input DIR --output DIR --work-dir DIR --result F

Variants: ``local`` (single-process loop over the stage objects), ``mp`` (2-worker
multiprocessing pool), ``ray`` (RayDataExecutor, one streaming plan), ``prefect_per_stage`` and
``prefect_fused`` (the Prefect flow, one stage task per stage / cheap stages fused), ``datatrove``
(datatrove's ``LocalPipelineExecutor`` over the same stage objects, see
:mod:`benchmarks.datatrove_peer`; only when datatrove is installed).

Writes a JSON with the phases measured inside the process: ``startup_s`` (imports, Ray and
Prefect start) and ``steady_s`` (the pipeline with everything started), the accounting, and for
Ray variants the object store's spill counters. Wall time end to end and memory are measured
from outside by the parent (``benchmarks.monitor``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

T_START = time.perf_counter()

VARIANTS = ("local", "mp", "ray", "prefect_per_stage", "prefect_fused", "datatrove")

#: What the harness prints instead of running the datatrove peer when datatrove is absent.
DATATROVE_MISSING = "datatrove not installed: pip install datatrove (the datatrove peer is skipped)"


def datatrove_version() -> str | None:
    """datatrove's version, or None when it is not importable (the peer is then skipped)."""
    import importlib.util

    if importlib.util.find_spec("datatrove") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datatrove")
    except PackageNotFoundError:
        return "?"


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Environment defaults of a local flow run, applied to every variant alike.
from curator_stages.runtime.env import LOCAL_RUN_ENV_DEFAULTS as QUIET_ENV  # noqa: E402


def _ray_init(num_cpus: int | None) -> None:
    """Start the embedded Ray exactly as the flow's RaySession does (so the flow reuses it)."""
    from curator_stages.runtime.ray_cluster import start_local_ray

    start_local_ray(num_cpus, log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT}},
                    warm=os.environ.get("BENCH_RAY_WARM", "1") == "1")


def ray_spill_stats() -> dict[str, float]:
    """Object store spill/restore counters of the live Ray cluster (MiB), from its summary."""
    try:
        from ray._private.internal_api import memory_summary

        import ray

        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    except Exception as exc:  # noqa: BLE001 - report, never fail a benchmark on it
        return {"error": repr(exc)}
    out: dict[str, float] = {}
    for key, pattern in (("spilled_mib", r"Spilled (\d+) MiB"),
                         ("restored_mib", r"Restored (\d+) MiB")):
        m = re.search(pattern, text)
        out[key] = float(m.group(1)) if m else 0.0
    m = re.search(r"Plasma memory usage (\d+) MiB", text)
    if m:
        out["plasma_used_mib_at_end"] = float(m.group(1))
    return out


def run(args: argparse.Namespace) -> dict:
    from benchmarks.pipeline import accounting, flow_params, reference_stages

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    result: dict = {"variant": args.variant}
    if args.variant == "datatrove":
        if datatrove_version() is None:
            raise SystemExit(DATATROVE_MISSING)
        from benchmarks.datatrove_peer import run_datatrove

        t_ready = time.perf_counter()
        result.update(run_datatrove(args.input, args.output, args.work_dir, args.workers))
        t_done = time.perf_counter()
        result["datatrove_version"] = datatrove_version()
    elif args.variant in ("local", "mp", "ray"):
        stages = reference_stages(args.input, args.output, args.files_per_group)
        if args.variant == "local":
            from curator_stages.backends.local import LocalExecutor

            executor = LocalExecutor()
        elif args.variant == "mp":
            from curator_stages.backends.local import MultiprocessExecutor

            executor = MultiprocessExecutor(workers=args.workers, spill_dir=args.work_dir)
        else:
            from curator_stages.backends.ray_data import RayDataExecutor

            _ray_init(args.num_cpus)
            executor = RayDataExecutor(progress_bars=False)
        t_ready = time.perf_counter()
        out = executor.execute(stages)
        t_done = time.perf_counter()
        result.update(accounting(out))
        if args.variant == "ray":
            result["ray_spill"] = ray_spill_stats()
            import ray

            ray.shutdown()
    else:
        import sys

        sys.path.insert(0, REPO_ROOT)
        from flows.text_curation import TextCurationParams, text_curation

        params = TextCurationParams(**flow_params(
            args.input, args.output, args.work_dir, fused=args.variant == "prefect_fused",
            files_per_group=args.files_per_group, num_cpus=args.num_cpus))
        # Start what a long-lived worker already has, Ray and Prefect's API, the way
        # `python flows/text_curation.py` does (runtime.local_run): the API server starts
        # while Ray starts, and use_api() waits until the API answers. No warm-up flow: a
        # user's run has none, so the first flow run's own start is part of the steady phase.
        from curator_stages.runtime.local_run import local_run

        with local_run() as local:
            _ray_init(args.num_cpus)
            local.use_api()
            t_ready = time.perf_counter()
            summary = text_curation(params)
            t_done = time.perf_counter()
            for key in ("documents_read", "documents_written", "documents_dropped",
                        "documents_quarantined", "dropped_by_reason"):
                result[key] = summary[key]
            result["identity_holds"] = summary["identity"]["holds"]
            result["stage_tasks"] = [{k: t.get(k) for k in ("stages", "status", "wall_time_s")}
                                     for t in summary.get("stage_tasks", [])]
        result["ray_spill"] = ray_spill_stats()
        import ray

        ray.shutdown()
    result["startup_s"] = round(t_ready - T_START, 3)
    result["steady_s"] = round(t_done - t_ready, 3)
    result["in_process_total_s"] = round(time.perf_counter() - T_START, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.variant")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--result", required=True, help="JSON file to write")
    parser.add_argument("--files-per-group", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2,
                        help="mp and datatrove variants: worker processes")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray")
    args = parser.parse_args(argv)
    result = run(args)
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
