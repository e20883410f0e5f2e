"""Peak process-tree PSS of the full reference flow, and who holds it.

    python -m benchmarks.flow_memory --docs 50000 [--corpus-root /tmp/curator-bench] [-- flow options]

Generates (once) a corpus with ``curator_stages.corpus``, runs ``python flows/text_curation.py``
on it with a fresh ``PREFECT_HOME`` warmed by one run on the sample, under
``benchmarks.monitor.run_measured`` (the whole tree: driver, Prefect's API server, gcs_server,
raylet, dashboard/agents, workers), and prints wall, CPU, peak tree PSS and the peak PSS per
process kind as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.monitor import run_measured

REPO = Path(__file__).resolve().parents[1]


def peak_note(timeline: list[dict]) -> str:
    """When the tree peaked, and what each kind held then (the timeline is in ``--json``)."""
    if not timeline:
        return "no samples"
    peak = max(timeline, key=lambda row: row["pss_mb"])
    held = ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak.items(), key=lambda kv: -kv[1])
                     if k not in ("t", "pss_mb", "processes"))
    return (f"peak {peak['pss_mb']:.0f} MB at {peak['t']:.0f} s of the run, "
            f"{peak['processes']} processes: {held} (MB)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--corpus-root", default="/tmp/curator-bench")
    parser.add_argument("--json", default=None)
    known, flow_args = parser.parse_known_args()
    flow_args = [a for a in flow_args if a != "--"]
    corpus = Path(known.corpus_root) / f"flow-corpus-{known.docs}-{known.shards}"
    if not (corpus / "_manifest.json").exists():
        subprocess.run([sys.executable, "-m", "curator_stages.corpus", "--num-docs",
                        str(known.docs), "--shards", str(known.shards), "--out", str(corpus)],
                       check=True)
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="flow-memory-home-"),
           "PYTHONPATH": str(REPO)}
    work = Path(tempfile.mkdtemp(prefix="flow-memory-", dir=known.corpus_root))
    flow = [sys.executable, str(REPO / "flows/text_curation.py")]
    # Warm the Prefect home (its database is created once), not measured.
    subprocess.run([*flow, "--output", str(work / "warm-out"), "--work-dir", str(work / "warm-w")],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(work / "flow.log", "w") as log:
        usage = run_measured([*flow, "--input", str(corpus), "--output", str(work / "out"),
                              "--work-dir", str(work / "w"), *flow_args],
                             env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    result = {"docs": known.docs, "log": str(work / "flow.log"), **usage.to_dict()}
    result.pop("process_names", None)
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1))
    print(peak_note(result["timeline"]))
    if known.json:
        Path(known.json).write_text(json.dumps(result, indent=1))
    return 0 if usage.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
