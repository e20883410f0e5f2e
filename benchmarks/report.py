"""Every table of one harness run, as markdown, from its result JSON.

    python -m benchmarks.report benchmarks/results/X.json      # prints the tables

``benchmarks.run`` writes this next to its result file (``X.md``, ignored by git). Why a
separate view: a run's full tables (every measure, every size, scaling) are for reading one
run; BENCHMARKS.md shows only the table of latest results (:mod:`benchmarks.table`), into which
a run is taken with ``python -m benchmarks.table --promote X.json --as KEY``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORDER = ["local", "ray", "prefect_per_stage", "prefect_fused", "mp", "datatrove", "flow_cli"]


def _mmm(s: dict[str, float] | None, fmt: str = "{:.2f}") -> str:
    if not s:
        return "-"
    if s.get("n", 1) == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def render(result: dict[str, Any], json_path: Path | None = None) -> str:
    from benchmarks.run import LABELS

    m = result["machine"]
    v = m["versions"]
    lines = [
        ("" if result.get("complete", True) else "**Partial results (run interrupted or in "
                                                 "progress).** ") +
        f"Run `{result['command']}` started {result['started']} ({result['duration_s']:.0f} s), "
        f"git {m['git_head']}" + (f", raw data `{json_path.name}`"
                                  if json_path else "") + ".",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB; "
        f"{m['os']}; Python {v['python']}, Ray {v['ray']}, Prefect {v['prefect']}, "
        f"pyarrow {v['pyarrow']}.",
        "",
        "Cells: median (min-max) over repeats. Speed-up = baseline wall / variant wall, paired by "
        "repeat (run back to back). *steady* excludes start-up (imports, `ray.init`, Prefect's "
        "API); memory is the peak of the sum of PSS over the whole process tree (Ray's gcs, "
        "raylet and workers included) and the driver's peak RSS; CPU is user+system seconds of "
        "the whole tree; load is the 1-minute load average before the run (the machine is "
        "shared).",
        "",
    ]
    for size, entry in sorted(result["summary"].items(), key=lambda kv: int(kv[0])):
        corpus = result["corpora"].get(size, {})
        mb = corpus.get("text_bytes", 0) / 2**20
        lines += [f"### {int(size):,} documents ({mb:.0f} MB of text, {corpus.get('shards', '?')} "
                  "JSONL shards)", ""]
        lines += ["| variant | wall s | docs/s | MB/s | steady s | start-up s | speed-up vs (1) "
                  "| steady speed-up | wall / (2) | steady / (2) | tree PSS MB | driver RSS MB | CPU s "
                  "| CPU / (1) | spilled MiB | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for variant in ORDER:
            e = entry.get(variant)
            if not e:
                continue
            spilled = e.get("spilled_mib")
            lines.append("| " + " | ".join([
                LABELS.get(variant, variant),
                _mmm(e["wall_s"]), _mmm(e["docs_per_s"], "{:.0f}"), _mmm(e["text_mb_per_s"]),
                _mmm(e["steady_s"]), _mmm(e["startup_s"]),
                _mmm(e.get("speedup_vs_local")) + ("x" if e.get("speedup_vs_local") else ""),
                _mmm(e.get("steady_speedup_vs_local")) + ("x" if e.get("steady_speedup_vs_local") else ""),
                _mmm(e.get("wall_vs_ray")) + ("x" if e.get("wall_vs_ray") else ""),
                _mmm(e.get("steady_vs_ray")) + ("x" if e.get("steady_vs_ray") else ""),
                _mmm(e["peak_tree_pss_mb"], "{:.0f}"), _mmm(e["peak_driver_rss_mb"], "{:.0f}"),
                _mmm(e["cpu_s"], "{:.1f}"),
                _mmm(e.get("cpu_vs_local")) + ("x" if e.get("cpu_vs_local") else ""),
                "-" if spilled is None else f"{spilled:.0f}",
                _mmm(e["load_avg_1m_before"], "{:.1f}"),
            ]) + " |")
        lines.append("")
        same = result.get("same_output", {}).get(size)
        if same:
            lines += ["Output digest (order-independent, over id and text): "
                      + ("every variant wrote the same documents." if same["same_output"] else
                         "**variants wrote different documents**: " + ", ".join(
                             f"{LABELS.get(v, v)} {'/'.join(d[:12] for d in ds)}"
                             for v, ds in same["digests"].items())), ""]
    lines += _scaling(result["summary"])
    failed = [r for r in result["runs"] if not r.get("ok")]
    if failed:
        lines += ["Failed runs (excluded above): " + ", ".join(
            f"{r['variant']}@{r['documents']} r{r['repeat']} (rc {r.get('returncode')})"
            for r in failed), ""]
    return "\n".join(lines)


def _scaling(summary: dict[str, Any]) -> list[str]:
    """How wall time and the driver's memory grow with corpus size (medians), per variant.

    The linearity target (time proportional to the documents) reads off the ratio columns.
    """
    sizes = sorted((int(s) for s in summary if int(s) >= 10_000))
    if len(sizes) < 2:
        return []
    head = ["variant", *(f"wall {n:,}" for n in sizes),
            *(f"x ({b:,} / {a:,})" for a, b in zip(sizes, sizes[1:])),
            *(f"driver RSS MB {n:,}" for n in sizes)]
    lines = ["### Scaling with corpus size (medians)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in ORDER:
        entries = [summary[str(n)].get(variant) for n in sizes]
        if not any(entries):
            continue
        walls = [e["wall_s"]["median"] if e else None for e in entries]
        rss = [e["peak_driver_rss_mb"]["median"] if e else None for e in entries]
        ratios = [f"{b / a:.2f}x" if a and b else "-" for a, b in zip(walls, walls[1:])]
        lines.append("| " + " | ".join([
            _label(variant), *("-" if w is None else f"{w:.1f} s" for w in walls), *ratios,
            *("-" if r is None else f"{r:.0f}" for r in rss)]) + " |")
    return [*lines, ""]


def _label(variant: str) -> str:
    from benchmarks.run import LABELS

    return LABELS.get(variant, variant)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                     description="Print every table of one harness result file.")
    parser.add_argument("result", type=Path, help="a python -m benchmarks.run result JSON")
    path = parser.parse_args().result
    print(render(json.loads(path.read_text()), path.resolve()))
