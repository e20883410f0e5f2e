"""The reference flow at several corpus sizes with a capped object store, side by side.

    python -m benchmarks.flow_scaling --sizes 200000 500000 1000000 [--two-node]
        [--object-store-memory 512MB] [--uncapped all|smallest|none] [-- flow options]

Why: a corpus larger than memory must go through the flow with memory that does not grow with
the corpus and without the object store spilling document text to disk. Per size, the corpus
is generated once under ``--corpus-root`` (``flow-corpus-<docs>-<shards>``, one shard per
``--docs-per-shard``), then ``python flows/text_curation.py`` (its defaults: exact and fuzzy
dedup) runs under :func:`benchmarks.monitor.run_measured` with ``--object-store-memory`` and
``--spill-dir``, with its own ``RAY_TMPDIR`` (the raylet's log says what was spilled) and its
spill directory watched (:mod:`benchmarks.spill`: what was spilled during which stage task).
``--uncapped`` adds a run without the cap per size (all, the smallest only, or none) whose
output digest the capped run's must equal. ``--two-node`` runs the largest size again on a
two-node local cluster (:mod:`benchmarks.local_cluster`, 1 CPU and the same store per node).

Writes ``results/<name>.json`` (every run, full timeline) and ``.md`` (the tables); promote it
into the BENCHMARKS.md table with ``python -m benchmarks.table --promote F --as <source>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.digest import output_digest
from benchmarks.local_cluster import LocalCluster
from benchmarks.monitor import run_measured
from benchmarks.spill import SpillWatch, raylet_spill_counters, spill_by_stage_task, stage_windows

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
FLOW = REPO / "flows" / "text_curation.py"
#: Timeline columns that are not a process kind.
NOT_KINDS = {"t", "pss_mb", "processes", "spill_mb", "spill_total_mb", "epoch", "cluster_pss_mb"}


def parse_size(text: str) -> int:
    """Bytes from ``512MB``, ``2GiB`` or a plain number (what the flow's flag takes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    power = "KMGT".find(m.group(2).upper()) + 1 if m.group(2) else 0
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


def ensure_corpus(root: Path, docs: int, shards: int) -> Path:
    corpus = root / f"flow-corpus-{docs}-{shards}"
    if not (corpus / "_manifest.json").exists():
        subprocess.run([sys.executable, "-m", "curator_stages.corpus", "--num-docs", str(docs),
                        "--shards", str(shards), "--out", str(corpus)], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return corpus


def corpus_bytes(corpus: Path) -> int:
    return sum(p.stat().st_size for p in corpus.iterdir() if p.name.startswith("shard-"))


def downsample(timeline: list[dict], step_s: float) -> list[dict]:
    """One row per ``step_s`` seconds (the first row of each step), and the peak row."""
    if not timeline:
        return []
    keep, next_t = [], 0.0
    for row in timeline:
        if row["t"] >= next_t:
            keep.append(row)
            next_t = row["t"] + step_s
    peak = max(timeline, key=lambda r: r["pss_mb"] + r.get("cluster_pss_mb", 0))
    if peak not in keep:
        keep = sorted([*keep, peak], key=lambda r: r["t"])
    return [{k: v for k, v in r.items() if k != "epoch"} for r in keep]


def at_tenths(timeline: list[dict], wall_s: float) -> list[float]:
    """Tree PSS (MB, cluster included) at 10%, 20%, ... 100% of the wall: the compact timeline
    of the markdown table."""
    out = []
    for i in range(1, 11):
        rows = [r for r in timeline if r["t"] <= wall_s * i / 10]
        row = rows[-1] if rows else None
        out.append(round(row["pss_mb"] + row.get("cluster_pss_mb", 0)) if row else 0)
    return out


def one_run(kind: str, docs: int, corpus: Path, root: Path, env: dict[str, str],
            flow_args: list[str], store: int | None, cluster: LocalCluster | None,
            step_s: float) -> dict[str, Any]:
    """One flow run, measured; its work folder stays under ``root`` (logs, output)."""
    work = Path(tempfile.mkdtemp(prefix=f"scaling-{docs}-{kind}-", dir=root))
    ray_tmp = cluster.temp_dir if cluster else tempfile.mkdtemp(prefix="sr-", dir="/tmp")
    spill = Path(cluster.spill_dir) if cluster and cluster.spill_dir else work / "spill"
    cmd = [sys.executable, str(FLOW), "--input", str(corpus), "--output", str(work / "out"),
           "--work-dir", str(work / "w"), *flow_args]
    if cluster:
        cmd += ["--ray-address", cluster.address]
        env = cluster.flow_env(env)
    else:
        env = {**env, "RAY_TMPDIR": ray_tmp}
        cmd += ["--spill-dir", str(spill)]
        if store:
            cmd += ["--object-store-memory", str(store)]
    watch = SpillWatch(spill)

    def extra() -> dict:
        return {**watch(), **({"cluster_pss_mb": cluster.pss_mb()} if cluster else {})}

    print(f"[scaling] {docs:,} docs, {kind}: {shlex.join(cmd[1:])}", flush=True)
    started = time.time()
    with open(work / "flow.log", "w") as log:
        usage = run_measured(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                             interval=0.5, extra=extra, timeout_s=6 * 3600)
    log_text = (work / "flow.log").read_text(errors="replace")
    summary_path = work / "out" / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    timeline = usage.timeline
    peak = max((r["pss_mb"] + r.get("cluster_pss_mb", 0) for r in timeline), default=0.0)
    run_wall = summary.get("wall_time_s") or usage.wall_s
    result = {
        "kind": kind, "docs": docs, "returncode": usage.returncode, "work": str(work),
        "command": shlex.join(["python", *cmd[1:]]), "started": time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "wall_s": round(usage.wall_s, 2), "run_wall_s": round(run_wall, 2),
        "startup_s": round(usage.wall_s - run_wall, 2),
        "wall_per_1k_docs_s": round(usage.wall_s / docs * 1000, 3),
        "run_wall_per_1k_docs_s": round(run_wall / docs * 1000, 3),
        "cpu_s": round(usage.cpu_s, 1), "peak_tree_pss_mb": round(peak, 1),
        "peak_flow_tree_pss_mb": round(usage.peak_tree_pss_mb, 1),
        "peak_pss_by_kind_mb": usage.peak_pss_by_kind_mb,
        "accounting": {k: summary.get(k) for k in ("documents_read", "documents_written",
                                                   "documents_dropped", "documents_quarantined")},
        "identity_holds": (summary.get("identity") or {}).get("holds"),
        "spill": {"spill_dir": str(spill), "watched_total_mb": watch.total_mb,
                  "watched_files": watch.files, **raylet_spill_counters(
                      *([ray_tmp, cluster.worker_temp_dir] if cluster else [ray_tmp]))},
        "stage_tasks": spill_by_stage_task(timeline, stage_windows(log_text, started)),
        "output": output_digest(work / "out" / "data"),
        "timeline": downsample(timeline, step_s),
        "pss_at_tenths_mb": at_tenths(timeline, usage.wall_s),
    }
    if not cluster:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"[scaling]   rc {usage.returncode}, wall {usage.wall_s:.1f} s (run {run_wall:.1f} s),"
          f" peak PSS {peak:.0f} MB, spilled {watch.total_mb} MB (dir) / "
          f"{result['spill']['spilled_mib']} MiB (raylet), digest "
          f"{(result['output']['digest'] or '-')[:12]}", flush=True)
    return result


def compare(runs: list[dict]) -> None:
    """Mark each run whose digest equals its size's uncapped run's (None: no uncapped run)."""
    for r in runs:
        ref = [u["output"]["digest"] for u in runs if u["docs"] == r["docs"]
               and u["kind"] == "uncapped" and u["returncode"] == 0]
        r["digest_equals_uncapped"] = (r["output"]["digest"] == ref[0]) if ref else None


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = [f"# flow scaling: `{result['command']}`", "",
             f"{result['started']}, git {result['git']}, {result['machine']}, load "
             f"{result['load']}; object store {result['object_store_memory'] / 1e6:,.0f} MB", "",
             "| docs | run | wall s (start-up) | s / 1k docs (run only) | peak tree PSS MB "
             "| spilled MiB (raylet / dir) | written | digest = uncapped |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        eq = {None: "-", True: "yes", False: "NO"}[r.get("digest_equals_uncapped")]
        lines.append(
            f"| {r['docs']:,} | {r['kind']} | {r['wall_s']:.1f} ({r['startup_s']:.1f}) | "
            f"{r['wall_per_1k_docs_s']:.3f} ({r['run_wall_per_1k_docs_s']:.3f}) | "
            f"{r['peak_tree_pss_mb']:,.0f} | {r['spill']['spilled_mib']:g} / "
            f"{r['spill']['watched_total_mb']:g} | {r['output']['documents']:,} | {eq} |")
    lines += ["", "Tree PSS (MB) at each tenth of the wall time:", "",
              "| docs | run | " + " | ".join(f"{i}0%" for i in range(1, 11)) + " |",
              "|---|---|" + "---|" * 10]
    lines += [f"| {r['docs']:,} | {r['kind']} | " + " | ".join(map(str, r["pss_at_tenths_mb"]))
              + " |" for r in runs]
    lines += ["", "Stage tasks (seconds from the run's start; spilled: growth of the spill "
              "directory during the task):", "",
              "| docs | run | stage task | status | start-end s | spilled MB |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['docs']:,} | {r['kind']} | {t['stages']} | {t['status']} | "
              f"{t['start_s']:.0f}-{t['end_s']:.0f} | {t['spilled_mb']:g} |"
              for r in runs for t in r["stage_tasks"]]
    return "\n".join(lines) + "\n"


def table_rows(result: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Rows of the BENCHMARKS.md table (``records`` of latest.json) for one result: one per
    run, with the issue's targets checked against the smallest capped run."""
    runs = [r for r in result["runs"] if r["returncode"] == 0]
    capped = [r for r in runs if r["kind"] == "capped"]
    base = min(capped, key=lambda r: r["docs"]) if capped else None
    store = f"{result['object_store_memory'] / 1e6:,.0f} MB"
    rows = []
    for r in runs:
        spilled = r["spill"]["spilled_mib"]
        measures = [
            {"name": "wall (start-up included)", "unit": "s", "value": r["wall_s"]},
            {"name": "per 1k docs", "unit": "s", "value": r["wall_per_1k_docs_s"]},
            {"name": "run only per 1k docs", "unit": "s", "value": r["run_wall_per_1k_docs_s"]},
            {"name": "tree PSS", "unit": "MiB", "value": r["peak_tree_pss_mb"]},
            {"name": "spilled", "text": f"{spilled:g} MiB"},
            {"name": "PSS MiB at each tenth of the wall:",
             "text": " ".join(str(v) for v in r["pss_at_tenths_mb"])}]
        checks = [] if r["kind"] == "uncapped" else [
            ("same digest as uncapped", r.get("digest_equals_uncapped")),
            ("nothing spilled", spilled == 0 and r["spill"]["watched_total_mb"] == 0)]
        ratio = None
        if base is not None and r is not base:
            pss_x = r["peak_tree_pss_mb"] / base["peak_tree_pss_mb"]
            wall_x = r["run_wall_per_1k_docs_s"] / base["run_wall_per_1k_docs_s"]
            ratio = {"against": f"vs {base['docs']:,} capped",
                     "text": f"PSS {pss_x:.2f}x, run s/doc {wall_x:.2f}x"}
            if r["kind"] == "capped" and r["docs"] == max(c["docs"] for c in capped):
                checks += [("PSS <= 1.25x", pss_x <= 1.25), ("s/doc <= 1.15x", wall_x <= 1.15)]
        if r["kind"] == "capped":  # the "<= 1.5 GB at 200k, and keep it there at 1M"
            checks.append(("PSS <= 1.5 GiB", r["peak_tree_pss_mb"] <= 1536))
        known = [(name, ok) for name, ok in checks if ok is not None]
        rows.append({
            "benchmark": f"reference flow, {store} object store", "source": key,
            "case": f"{r['docs']:,} docs, {r['kind']}", "measures": measures, "ratio": ratio,
            "target": "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in known),
            "status": ("" if not known else "all met" if all(ok for _, ok in known)
                       else f"{sum(not ok for _, ok in known)} not met")})
    return rows


def promote(result: dict[str, Any], key: str, latest: dict[str, Any]) -> None:
    """Replace source ``key`` of latest.json and its rows with this result's."""
    latest["sources"][key] = {
        "kind": "flow_scaling", "command": result["command"], "date": result["started"],
        "git": result["git"], "machine": result["machine"], "load": result["load"],
        "corpora": {s: {k: c[k] for k in ("documents", "shards", "text_bytes")}
                    for s, c in result["corpora"].items()}}
    latest["records"] = [r for r in latest["records"] if r.get("source") != key]
    latest["records"] += table_rows(result, key)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True).stdout.strip()
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "git_head": git}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flow_scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 500_000, 1_000_000])
    parser.add_argument("--docs-per-shard", type=int, default=10_000)
    parser.add_argument("--corpus-root", type=Path, default=Path("/tmp/curator-bench"))
    parser.add_argument("--object-store-memory", type=parse_size, default=parse_size("512MB"))
    parser.add_argument("--uncapped", choices=("all", "smallest", "none"), default="all",
                        help="which sizes also get a run without the cap (digest reference)")
    parser.add_argument("--two-node", action="store_true",
                        help="the largest size again on a two-node local cluster")
    parser.add_argument("--timeline-step", type=float, default=2.0, help="seconds per row kept")
    parser.add_argument("--name", default=None)
    known, flow_args = parser.parse_known_args(argv)
    flow_args = [a for a in flow_args if a != "--"]
    root = known.corpus_root
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "PREFECT_"))}
    env.update(PREFECT_HOME=tempfile.mkdtemp(prefix="flow-scaling-home-"), PYTHONPATH=str(REPO))
    # Warm the Prefect home (its database is created once), not measured.
    warm = Path(tempfile.mkdtemp(prefix="flow-scaling-warm-", dir=root))
    subprocess.run([sys.executable, str(FLOW), "--output", str(warm / "o"), "--work-dir",
                    str(warm / "w")], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    sizes = sorted(known.sizes)
    name = known.name or time.strftime("flow-scaling-%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "benchmark": "flow_scaling", "name": name,
        "command": shlex.join(["python", "-m", "benchmarks.flow_scaling",
                               *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load": f"{os.getloadavg()[0]:.1f}",
        "object_store_memory": known.object_store_memory, "uncapped": known.uncapped,
        "flow_args": flow_args, **machine(), "corpora": {}, "runs": []}
    result["machine"] = f"{result['cpu_model']}, {result['logical_cpus']} CPUs"
    result["git"] = result["git_head"]
    RESULTS.mkdir(exist_ok=True)
    out_json = RESULTS / f"{name}.json"
    loads = []

    def run(kind: str, docs: int, corpus: Path, cluster: LocalCluster | None = None) -> None:
        loads.append(os.getloadavg()[0])
        store = known.object_store_memory if kind != "uncapped" else None
        result["runs"].append(one_run(kind, docs, corpus, root, env, flow_args, store, cluster,
                                      known.timeline_step))
        compare(result["runs"])
        result["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
        out_json.write_text(json.dumps(result, indent=1))  # an interrupted run keeps its runs

    for docs in sizes:
        shards = max(1, -(-docs // known.docs_per_shard))
        corpus = ensure_corpus(root, docs, shards)
        result["corpora"][str(docs)] = {"documents": docs, "shards": shards,
                                        "text_bytes": corpus_bytes(corpus), "path": str(corpus)}
        run("capped", docs, corpus)
        if known.uncapped == "all" or (known.uncapped == "smallest" and docs == sizes[0]):
            run("uncapped", docs, corpus)
    if known.two_node:
        docs = sizes[-1]
        spill = tempfile.mkdtemp(prefix="scaling-cluster-spill-", dir=root)
        with LocalCluster(cpus_per_node=1, object_store_memory=known.object_store_memory,
                          spill_dir=spill) as cluster:
            run("two-node", docs, Path(result["corpora"][str(docs)]["path"]), cluster)
        for temp in (cluster.temp_dir, cluster.worker_temp_dir):
            shutil.rmtree(temp, ignore_errors=True)
    text = markdown(result)
    out_json.with_suffix(".md").write_text(text)
    print(text)
    print(f"[scaling] {out_json} and {out_json.with_suffix('.md')}")
    return 0 if all(r["returncode"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
