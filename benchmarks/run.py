"""Benchmark harness: the reference pipeline run several ways, side by side, in one command.

    python -m benchmarks.run --sizes 10000 200000 1000000 --repeats 3 --repeats-for 1000000=1

For each corpus size (generated once by ``python -m curator_stages.corpus`` under
``--corpus-root`` and reused), each repeat runs every variant once, interleaved (so a change in
machine load hits all variants alike), each in a fresh interpreter measured from outside
(:mod:`benchmarks.monitor`). Writes ``benchmarks/results/<name or stamp>.json`` (every run and
the summary) and ``.md`` beside it (:mod:`benchmarks.report`); both are ignored by git. A run
becomes the docs' figures only through ``python -m benchmarks.table --promote`` (see
``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.digest import compare_digests, output_digest
from benchmarks.monitor import run_measured
from benchmarks.variant import DATATROVE_MISSING, QUIET_ENV, VARIANTS, datatrove_version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASELINE = "local"
LABELS = {
    "local": "(1) single-process loop",
    "ray": "(2) RayDataExecutor",
    "prefect_per_stage": "(3) Prefect, one task per stage",
    "prefect_fused": "(4) Prefect, cheap stages fused",
    "mp": "(5) multiprocessing, 2 workers",
    "datatrove": "(6) datatrove LocalPipelineExecutor, 2 workers",
    "flow_cli": "`python flows/text_curation.py` (cold CLI)",
}


# ----------------------------------------------------------------------------- corpus
def prepare_corpus(root: Path, num_docs: int, docs_per_shard: int) -> tuple[Path, dict[str, Any]]:
    """The corpus directory for ``num_docs`` (generated if missing) and its size facts."""
    shards = max(4, num_docs // docs_per_shard)
    out = root / f"corpus-{num_docs}-{shards}"
    manifest = out / "_manifest.json"
    ok = False
    if manifest.exists():
        m = json.loads(manifest.read_text())
        ok = m.get("documents") == num_docs and len(m.get("files", [])) == shards
    if not ok:
        shutil.rmtree(out, ignore_errors=True)
        print(f"[corpus] generating {num_docs} documents in {shards} shards -> {out}", flush=True)
        subprocess.run([sys.executable, "-m", "curator_stages.corpus", "--num-docs",
                        str(num_docs), "--shards", str(shards), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    facts_file = out / "_bench_facts.json"
    if not facts_file.exists():
        import pyarrow.compute as pc
        import pyarrow.json as pj

        text_bytes = 0
        files = sorted(p for p in out.iterdir() if p.name.startswith("shard-"))
        for f in files:
            table = pj.read_json(f, read_options=pj.ReadOptions(block_size=64 << 20))
            text_bytes += int(pc.sum(pc.binary_length(table.column("text"))).as_py())
        facts = {"documents": num_docs, "shards": len(files), "text_bytes": text_bytes,
                 "file_bytes": sum(f.stat().st_size for f in files)}
        facts_file.write_text(json.dumps(facts))
    return out, json.loads(facts_file.read_text())


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for mod in ("ray", "prefect", "pyarrow", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "?"
    versions["datatrove"] = datatrove_version() or "not installed"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": f"{platform.system()} {platform.release()}", "versions": versions,
            "git_head": rev}


# ----------------------------------------------------------------------------- one run
def run_one(variant: str, corpus: Path, facts: dict[str, Any], scratch: Path, repeat: int,
            args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    tag = f"{variant}-{facts['documents']}-r{repeat}"
    out_dir, work_dir, result = scratch / f"out-{tag}", scratch / f"work-{tag}", scratch / f"{tag}.json"
    for p in (out_dir, work_dir):
        shutil.rmtree(p, ignore_errors=True)
    env = {**os.environ, **{k: v for k, v in QUIET_ENV.items() if k not in os.environ}}
    env["PREFECT_HOME"] = str(Path(args.corpus_root) / "prefect-home")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if variant == "flow_cli":
        cmd = [sys.executable, str(REPO / "flows" / "text_curation.py"), "--input", str(corpus),
               "--output", str(out_dir), "--work-dir", str(work_dir), "--no-language-id",
               "--no-fuzzy-dedup", "--refresh", "--retries", "0"]
        if args.num_cpus:
            cmd += ["--num-cpus", str(args.num_cpus)]
    else:
        cmd = [sys.executable, "-m", "benchmarks.variant", "--variant", variant,
               "--input", str(corpus), "--output", str(out_dir), "--work-dir", str(work_dir),
               "--result", str(result), "--workers", str(args.mp_workers)]
        if args.files_per_group:
            cmd += ["--files-per-group", str(args.files_per_group)]
        if args.num_cpus:
            cmd += ["--num-cpus", str(args.num_cpus)]
    load_before = os.getloadavg()
    with open(log_dir / f"{tag}.log", "w") as log:
        usage = run_measured(cmd, env=env, interval=args.sample_interval, stdout=log,
                             stderr=subprocess.STDOUT, cwd=str(REPO))
    record: dict[str, Any] = {"variant": variant, "documents": facts["documents"],
                              "repeat": repeat, "load_avg_1m_before": round(load_before[0], 2),
                              "load_avg_1m_after": round(os.getloadavg()[0], 2),
                              **{k: (round(v, 3) if isinstance(v, float) else v)
                                 for k, v in usage.to_dict().items()
                                 if k not in ("process_names", "timeline")}}
    if result.exists():
        inner = json.loads(result.read_text())
        record.update({k: v for k, v in inner.items() if k != "variant"})
    elif variant == "flow_cli" and (out_dir / "run_summary.json").exists():
        summary = json.loads((out_dir / "run_summary.json").read_text())
        record.update({k: summary[k] for k in ("documents_read", "documents_written",
                                                "documents_dropped", "documents_quarantined")})
        record["identity_holds"] = summary["identity"]["holds"]
    wall = record["wall_s"]
    record["docs_per_s"] = round(facts["documents"] / wall, 1) if wall else None
    record["text_mb_per_s"] = round(facts["text_bytes"] / 2**20 / wall, 2) if wall else None
    if record.get("steady_s"):
        record["steady_docs_per_s"] = round(facts["documents"] / record["steady_s"], 1)
    if usage.returncode == 0:
        digest = output_digest(out_dir / "data")
        record["output_digest"], record["output_documents"] = digest["digest"], digest["documents"]
    ok = usage.returncode == 0 and record.get("identity_holds", False)
    record["ok"] = bool(ok)
    if not args.keep_outputs:
        for p in (out_dir, work_dir):
            shutil.rmtree(p, ignore_errors=True)
    print(f"[run] {tag:32s} rc={usage.returncode} wall={wall:7.2f}s "
          f"steady={record.get('steady_s', float('nan')):7.2f}s "
          f"pss={usage.peak_tree_pss_mb:7.0f}MB driver={usage.peak_driver_rss_mb:6.0f}MB "
          f"cpu={usage.cpu_s:6.1f}s load={load_before[0]:.1f} ok={ok} "
          f"digest={str(record.get('output_digest'))[:12]}", flush=True)
    return record


# ----------------------------------------------------------------------------- summary
def _stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per size and variant: min/median/max of every measure, and ratios to the baseline.

    Ratios are paired by repeat (variant of repeat i over baseline of repeat i: both ran
    back to back, under the same load), then min/median/max over repeats.
    """
    out: dict[str, Any] = {}
    sizes = sorted({r["documents"] for r in runs})
    for size in sizes:
        at = [r for r in runs if r["documents"] == size and r["ok"]]
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for r in at:
            by_variant.setdefault(r["variant"], []).append(r)
        base = {r["repeat"]: r for r in by_variant.get(BASELINE, [])}
        ray = {r["repeat"]: r for r in by_variant.get("ray", [])}
        entry: dict[str, Any] = {}
        for variant, rs in by_variant.items():
            e = {key: _stats([r.get(key) for r in rs]) for key in (
                "wall_s", "steady_s", "startup_s", "docs_per_s", "steady_docs_per_s",
                "text_mb_per_s", "peak_tree_pss_mb", "peak_driver_rss_mb", "cpu_s",
                "load_avg_1m_before")}
            e["spilled_mib"] = max((r.get("ray_spill", {}).get("spilled_mib", 0) or 0)
                                   for r in rs) if any("ray_spill" in r for r in rs) else None
            if variant != BASELINE and base:
                e["speedup_vs_local"] = _stats([base[r["repeat"]]["wall_s"] / r["wall_s"]
                                                for r in rs if r["repeat"] in base])
                e["steady_speedup_vs_local"] = _stats(
                    [base[r["repeat"]]["steady_s"] / r["steady_s"] for r in rs
                     if r["repeat"] in base and r.get("steady_s")])
                e["cpu_vs_local"] = _stats([r["cpu_s"] / base[r["repeat"]]["cpu_s"]
                                            for r in rs if r["repeat"] in base])
            if variant.startswith("prefect") and ray:
                e["wall_vs_ray"] = _stats([r["wall_s"] / ray[r["repeat"]]["wall_s"]
                                           for r in rs if r["repeat"] in ray])
                e["steady_vs_ray"] = _stats([r["steady_s"] / ray[r["repeat"]]["steady_s"]
                                             for r in rs if r["repeat"] in ray
                                             and r.get("steady_s")])
            entry[variant] = e
        out[str(size)] = entry
    return out


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["local", "ray", "prefect_per_stage",
                                                          "prefect_fused", "mp"],
                        choices=[*VARIANTS, "flow_cli"])
    parser.add_argument("--startup-size", type=int, default=1000,
                        help="also run every variant and the cold CLI once on this many "
                             "documents (fixed costs; 0 to skip)")
    parser.add_argument("--repeats-for", nargs="*", default=[], metavar="SIZE=N",
                        help="override repeats per size, e.g. 1000000=1")
    parser.add_argument("--corpus-root", default="/tmp/curator-bench",
                        help="where corpora (reused), outputs and checkpoints go; outside git")
    parser.add_argument("--docs-per-shard", type=int, default=2500)
    parser.add_argument("--files-per-group", type=int, default=None)
    parser.add_argument("--mp-workers", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray")
    parser.add_argument("--sample-interval", type=float, default=0.2)
    parser.add_argument("--keep-outputs", action="store_true")
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    parser.add_argument("--name", default=None, help="result file name (default: timestamp)")
    parser.add_argument("--no-markdown", action="store_true",
                        help="do not write the run's tables (.md) beside its result file")
    args = parser.parse_args(argv)

    root = Path(args.corpus_root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch = root / f"runs-{stamp}"
    log_dir = scratch / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    repeats_for = {int(k): int(v) for k, v in (s.split("=") for s in args.repeats_for)}
    if "datatrove" in args.variants and datatrove_version() is None:
        print(f"[skip] {DATATROVE_MISSING}", flush=True)
        args.variants = [v for v in args.variants if v != "datatrove"]

    from benchmarks.pipeline import check_same_stages

    # The check only builds both pipelines; it needs an input that exists and holds neither
    # its output nor its work_dir (the flow's parameters refuse overlapping locations).
    check_input = root / "check-input"
    check_input.mkdir(exist_ok=True)
    (check_input / "seed.jsonl").write_text('{"text": "seed"}\n')
    check_same_stages(str(check_input), str(scratch / "o"), str(scratch / "w"))
    _warm_prefect_home(root)

    plan: list[tuple[int, list[str], int]] = []
    if args.startup_size:
        plan.append((args.startup_size, [*args.variants, "flow_cli"], 1))
    for size in args.sizes:
        plan.append((size, list(args.variants), repeats_for.get(size, args.repeats)))

    runs: list[dict[str, Any]] = []
    corpora: dict[str, Any] = {}
    started = time.time()
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{args.name or stamp}.json"
    machine = machine_info()

    def write(final: bool) -> None:
        """Results after every run: an interrupted benchmark still leaves its measurements."""
        result = {
            "command": " ".join(["python -m benchmarks.run",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "complete": final,
            "machine": machine,
            "config": {k: v for k, v in vars(args).items() if k not in ("results_dir", "name")},
            "corpora": corpora,
            "summary": summarise(runs),
            "same_output": compare_digests(runs),
            "runs": runs,
        }
        path.write_text(json.dumps(result, indent=1))
        if not args.no_markdown:
            from benchmarks.report import render

            path.with_suffix(".md").write_text(render(result, path) + "\n")

    for size, variants, repeats in plan:
        corpus, facts = prepare_corpus(root, size, args.docs_per_shard)
        corpora[str(size)] = {**facts, "path": str(corpus)}
        for rep in range(repeats):
            for variant in variants:
                runs.append(run_one(variant, corpus, facts, scratch, rep, args, log_dir))
                write(final=False)
    write(final=True)
    for size, check in compare_digests(runs).items():
        verdict = "same documents out" if check["same_output"] else "OUTPUTS DIFFER"
        print(f"[digest] {size} documents: {verdict}: "
              + ", ".join(f"{v}={','.join(d[:12] for d in ds)}" for v, ds in check["digests"].items()))
    print(f"[done] results: {path}  (logs: {log_dir})"
          + ("" if args.no_markdown else f"; tables: {path.with_suffix('.md')}"))
    return 0


def _warm_prefect_home(root: Path) -> None:
    """Create the benchmark's Prefect database once, outside any measurement (a local user's
    ``~/.prefect`` already has one; a first-ever run migrates it, which is not a run cost)."""
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(root / "prefect-home")}
    code = "from prefect import flow\nflow(name='benchmark-warm-up')(lambda: None)()\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)


if __name__ == "__main__":
    raise SystemExit(main())
