"""The dedup stage tasks stream: with an object store smaller than the documents' text, the
reference flow's exact and fuzzy dedup complete and Ray spills nothing to disk.

Why this can fail: a dedup stage task that held the documents themselves in Ray's object store
(materialising its input, or shuffling whole rows) would need more than the store holds, and
Ray would spill the excess to the spill directory. The dedup stage tasks' input text is measured
from their input checkpoint and must be larger than the store, so keeping the documents cannot
fit. What the dedup fits keep (row keys, hashes, LSH band keys) goes to scratch files inside the
stage task's temporary checkpoint, not to the store: the watch sees them there during the run, and
none is left after it.

What is checked: the whole run, in a process of its own with its own embedded Ray (75 MiB store,
Ray's minimum; the suite's shared Ray stays untouched), spilled nothing: no ``Spilled`` line in
the raylet's log (Ray logs one after its first spill) and no file ever seen in the spill
directory, watched while the run goes. Zero for the whole run is the stronger claim: it holds
in particular during the dedup stage tasks, and no attribution to stage tasks is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from benchmarks.spill import SpillWatch, raylet_spill_counters
from curator_stages.corpus.generator import generate_corpus
from tests.prefect_homes import clean_env
from tests.test_flow import FLOW_SCRIPT

STORE = 75 * 1024**2  # Ray's minimum object store
#: Long documents (median 1,200 words, ~11 KB): the text outgrows the store with few documents,
#: which keeps the per-document cost of the run small. No junk: nearly all text reaches dedup.
DOCS, MEDIAN_WORDS = 8000, 1200
#: Light settings for the stages ahead of dedup (not what is tested); dedup at its defaults
#: except fewer MinHash permutations.
FLOW_ARGS = ["--no-language-id", "--min-stop-words", "0", "--no-repetition-filters",
             "--no-c4-filters", "--fuzzy-num-perm", "32", "--num-cpus", "2", "--retries", "0"]


def text_bytes(checkpoint: Path) -> int:
    """UTF-8 bytes of the ``text`` column of a stage task's checkpoint."""
    total = 0
    for part in sorted(checkpoint.glob("*.parquet")):
        column = pq.read_table(part, columns=["text"]).column("text")
        total += pc.sum(pc.binary_length(column)).as_py() or 0
    return total


@pytest.mark.slow
def test_dedup_stage_tasks_complete_without_spilling_with_a_store_smaller_than_the_text(
        tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(str(corpus), num_docs=DOCS, shards=4, median_words=MEDIAN_WORDS,
                    max_words=20_000, junk_fraction=0.0, workers=2)
    out, work, spill = tmp_path / "out", tmp_path / "work", tmp_path / "spill"
    ray_tmp = tempfile.mkdtemp(prefix="sd-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in clean_env(tmp_path, migrated=True).items()
           if not k.startswith(("RAY_AUTH_", "PYTEST_"))}
    env["RAY_TMPDIR"] = ray_tmp
    watch, done = SpillWatch(spill), threading.Event()
    scratch_seen: set[str] = set()

    def watching() -> None:
        while not done.wait(0.2):
            watch()
            # A fit's scratch files live inside its attempt's temporary checkpoint.
            scratch_seen.update(p.name.rsplit("-", 1)[0] for p in work.glob("*.tmp-*/_scratch-*"))

    watcher = threading.Thread(target=watching, daemon=True)
    watcher.start()
    try:
        res = subprocess.run(
            [sys.executable, str(FLOW_SCRIPT), "--input", str(corpus), "--output", str(out),
             "--work-dir", str(work), "--object-store-memory", str(STORE), "--spill-dir",
             str(spill), *FLOW_ARGS], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=900)
        done.set()
        watcher.join()
        watch()
        counters = raylet_spill_counters(ray_tmp)
    finally:
        done.set()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["identity"]["holds"]
    assert summary["documents_read"] == DOCS == (
        summary["documents_written"] + summary["documents_dropped"]
        + summary["documents_quarantined"])
    tasks = {t["stages"]: t for t in summary["stage_tasks"]}
    assert [t["status"] for t in summary["stage_tasks"]] == ["Completed"] * len(tasks)
    assert "exact_dedup" in tasks and any(s.startswith("fuzzy_dedup") for s in tasks)
    # The precondition that makes the claim mean something: the dedup stage tasks' input text
    # (the first stage task's checkpoint) is larger than the whole object store.
    first = summary["stage_tasks"][0]
    dedup_input = text_bytes(Path(first["checkpoint"]))
    assert dedup_input > STORE * 1.1, f"dedup input text {dedup_input:,} B, store {STORE:,} B"
    assert summary["dropped_by_reason"].get("exact_duplicate", 0) > 0
    assert summary["dropped_by_reason"].get("fuzzy_duplicate", 0) > 0
    # Nothing spilled, the whole run: the raylet log has its session and no spill in it.
    assert counters["raylet_logs"] >= 1, counters
    assert (counters["spilled_mib"], counters["spilled_objects"], counters["spill_requests"],
            counters["fallback_lines"]) == (0, 0, 0, 0), counters
    assert watch.files == 0, f"{watch.files} spill file(s), {watch.total_mb} MB"
    # The fits kept their compact columns in scratch files, not in the object store, and took
    # them away: nothing of them is left in the work directory.
    assert {"_scratch-exact_dedup", "_scratch-fuzzy_dedup"} <= scratch_seen, scratch_seen
    assert not list(work.rglob("_scratch-*"))
