"""The reference flow flows/text_curation.py: under the Prefect harness, its parameters and
CLI, and a local run with no Prefect server (temporary API) as `python flows/x.py` does it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.text_curation import TextCurationParams, text_curation
from tests.prefect_homes import clean_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"
FAST = {"fuzzy_num_perm": 32, "retries": 0}


def read_output(output: Path) -> pa.Table:
    files = sorted((output / "data").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("id")


def test_flow_on_sample_data_under_the_harness(ray_cluster, prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    out = tmp_path / "out"
    params = TextCurationParams(output=str(out), work_dir=str(tmp_path / "work"), **FAST)
    state = text_curation(params, return_state=True)
    assert state.is_completed(), state.message
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["identity"]["holds"], summary["identity"]
    manifest = json.loads((SAMPLE / "_manifest.json").read_text())
    assert summary["documents_quarantined"] == len(manifest["malformed_lines"])
    assert summary["documents_read"] == manifest["documents"] + len(manifest["malformed_lines"])
    table = read_output(out)
    assert table.num_rows == summary["documents_written"] > 0
    assert len(set(table.column("id").to_pylist())) == table.num_rows
    assert len(set(table.column("text").to_pylist())) == table.num_rows  # exact dups are gone
    assert {"language", "language_score"} <= set(table.column_names)
    assert summary["dropped_by_reason"]["exact_duplicate"] > 0
    assert summary["dropped_by_reason"]["fuzzy_duplicate"] > 0
    assert len(list((out / "quarantine").iterdir())) > 0
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    keys = {a.key for a in arts}
    assert {"text-curation-summary", "text-curation-progress", "text-curation-plan"} <= keys
    # One table per stage task: [read+normalise+langid] [filter] [exact] [fuzzy+writer].
    stage_tables = {k for k in keys if k and k.startswith("stage-")}
    assert len(stage_tables) == 4 and "stage-fuzzy-dedup-parquet-writer" in stage_tables


def test_unfused_flow_gives_the_same_output(ray_cluster, prefect_harness, tmp_path):
    one = str(SAMPLE / "shard-00002.jsonl.gz")
    common = dict(input=one, **FAST)
    fused = text_curation(TextCurationParams(output=str(tmp_path / "a"),
                                             work_dir=str(tmp_path / "w"), **common))
    split = text_curation(TextCurationParams(output=str(tmp_path / "b"),
                                             work_dir=str(tmp_path / "w"),
                                             fuse_cheap_stages=False, **common))
    # Split: every stage alone. Fused: read..normalise+langid, filter, exact, fuzzy+writer.
    assert len(split["stage_tasks"]) == len(fused["stage_tasks"]) + 4
    assert read_output(tmp_path / "a").equals(read_output(tmp_path / "b"))
    assert fused["documents_written"] == split["documents_written"]
    # Deleted output files are written again although every stage task is cached.
    for f in (tmp_path / "a" / "data").iterdir():
        f.unlink()
    again = text_curation(TextCurationParams(output=str(tmp_path / "a"),
                                             work_dir=str(tmp_path / "w"), **common))
    assert [t["status"] for t in again["stage_tasks"]][:-1] == ["Cached"] * 3
    assert read_output(tmp_path / "a").equals(read_output(tmp_path / "b"))


def test_invalid_parameter_fails_the_flow_naming_the_field(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = text_curation(params={"min_words": -3, "output": str(tmp_path / "o")},
                          return_state=True)
    assert state.is_failed()
    assert "min_words" in state.message
    state = text_curation(params={"input": str(tmp_path / "nothing-here/*.jsonl")},
                          return_state=True)
    assert state.is_failed() and "input" in state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert runs == []  # rejected before any stage task (and before Ray) started
    assert not (tmp_path / "o").exists()


def test_stage_progress_lines_are_throttled_and_name_each_stage():
    """One line when the first part arrives, then at most one per interval, each with the
    documents each stage has processed and its rate."""
    from curator_stages.accounting import StageCounts
    from curator_stages.orchestration.stage_progress import StageProgress

    now = [100.0]
    lines: list[str] = []
    progress = StageProgress(["read", "filter"], lines.append, every_s=5, clock=lambda: now[0])
    counts = {"read": StageCounts("read", items_in=10), "filter": StageCounts("filter", items_in=4)}
    now[0] = 102.0
    assert progress.update(counts) is not None  # the first part
    now[0] = 104.0
    assert progress.update(counts) is None  # throttled
    now[0] = 110.0
    counts["read"].items_in = 100
    line = progress.update(counts)
    assert line == ("progress read+filter after 10s: read 100 docs (10 docs/s), "
                    "filter 4 docs (0 docs/s)")
    assert lines == [lines[0], line]


def test_start_up_is_counted_from_the_process_start():
    """The start-up a local run reports counts from the process's own start (the imports
    before flow_main are waited for too), not from flow_main's first line."""
    import psutil

    from curator_stages.orchestration.flow_cli import process_age_s

    age = process_age_s()
    started = psutil.Process(os.getpid()).create_time()
    assert abs((time.time() - started) - age) < 1.0 and age > 0


def test_stage_progress_says_when_a_stage_task_starts():
    """A line as the stage task starts, before any output part: the first part can take
    seconds (worker start-up), and the console must not stay silent meanwhile."""
    from curator_stages.orchestration.stage_progress import StageProgress

    lines: list[str] = []
    progress = StageProgress(["read", "filter"], lines.append, every_s=5)
    assert progress.start(3000, 4) == ("stages read+filter: started on 3000 documents in 4 "
                                       "tasks; progress every 5s once output arrives")
    assert StageProgress(["partition"], lines.append, listing=["partition"]).start(
        0, 1).startswith("stages partition: started on the input files;")
    # A stage task after one that kept nothing does not claim to start on the input files.
    assert StageProgress(["fuzzy_dedup"], lines.append).start(0, 4).startswith(
        "stages fuzzy_dedup: started on no documents;")
    assert len(lines) == 3


def test_progress_counts_a_readers_documents_and_a_listings_file_groups():
    """A reader's tasks are file groups: its progress is the documents it read (it said
    "jsonl_read 1 docs (0 docs/s)" beside "text_normalizer 750 docs"), and the partitioner
    lists files, not documents (a file read as byte ranges makes several tasks)."""
    from curator_stages.accounting import StageCounts
    from curator_stages.orchestration.stage_progress import StageProgress

    now = [0.0]
    progress = StageProgress(["file_partitioning", "jsonl_read", "text_normalizer"],
                             lambda line: None, clock=lambda: now[0],
                             listing=["file_partitioning"])
    now[0] = 10.0
    counts = {"file_partitioning": StageCounts("file_partitioning", items_in=1, items_out=5,
                                               metrics={"files_listed": 4}),
              "jsonl_read": StageCounts("jsonl_read", items_in=1,
                                        metrics={"documents_read": 1500}),
              "text_normalizer": StageCounts("text_normalizer", items_in=750)}
    assert progress.update(counts) == (
        "progress file_partitioning+jsonl_read+text_normalizer after 10s: file_partitioning "
        "4 file(s), jsonl_read 1,500 docs (150 docs/s), text_normalizer 750 docs "
        "(75 docs/s)")


@pytest.mark.slow
def test_cli_help_and_bad_values_exit_2_before_ray(tmp_path):
    env = clean_env(tmp_path)
    res = subprocess.run([sys.executable, str(FLOW_SCRIPT), "--help"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for flag in ("--input", "--output", "--work-dir", "--min-words", "--fuse-cheap-stages",
                 "--no-fuzzy-dedup", "--ray-address", "--output-format", "--languages"):
        assert flag in res.stdout
    # One bad value through the script (tests/test_bad_input.py refuses the others in-process).
    res = subprocess.run([sys.executable, str(FLOW_SCRIPT), "--input", str(tmp_path / "missing")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "--input" in res.stderr
    assert "Traceback" not in res.stderr and "Ray" not in res.stderr + res.stdout


@pytest.mark.slow
def test_local_run_without_prefect_server(tmp_path):
    """`python flows/text_curation.py` on a temporary API: stage tasks run in Ray workers and
    report to the flow's API (no per-worker servers), and the console stays clean."""
    env = clean_env(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, str(FLOW_SCRIPT), "--input", str(SAMPLE / "shard-00003.jsonl.zst"),
               "--output", str(out), "--work-dir", str(tmp_path / "work"), "--num-cpus", "2",
               "--fuzzy-num-perm", "32"]
    start = time.perf_counter()
    res = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400,
                         cwd=tmp_path)
    wall = time.perf_counter() - start
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "sqlite" not in text.lower()
    assert text.count("Starting temporary server") <= 1  # workers did not start their own
    assert "accounting: read" in res.stdout and "holds" in res.stdout
    assert str(out) in res.stdout
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["identity"]["holds"]
    assert [t["status"] for t in summary["stage_tasks"]] == ["Completed"] * 4
    # What starts is said while it starts, one line each.
    for what in ("starting Prefect's temporary API", "creating Prefect's database",
                 "starting Ray"):
        assert text.count(what) == 1, what
    # Progress while a stage task runs (stage tasks run in this process).
    assert "progress file_partitioning+jsonl_read" in text and "docs/s" in text
    # The stage task that writes says how many documents it wrote.
    assert f"fuzzy_dedup+parquet_writer: Completed, wrote {summary['documents_written']} " \
           "documents" in text
    # One input file: the log says it runs as one task.
    assert "one input file: it is read as one task" in text
    # The report's stage table, one unit (documents), and one wall time, start-up apart.
    from curator_stages.reporting import load_report_context, summary_rows

    from curator_stages.orchestration.flow_cli import CONSOLE_LEFT_OUT

    headers, rows = summary_rows(summary, load_report_context(out, summary))
    for header in headers:  # the console leaves busy time and rates to report.md (80 columns)
        assert (header in res.stdout) is (header not in CONSOLE_LEFT_OUT), header
    assert "Token authentication is enabled" not in text  # our own choice for our own Ray
    for row in rows:
        assert row[0] in res.stdout and row[2] in res.stdout
    assert res.stdout.count("wall time:") == 1
    assert f"wall time: {summary['wall_time_s']:.1f}s (+ " in res.stdout
    print(f"local run wall time: {wall:.1f}s")

    # The same command again: the home has its database now (no migration); every stage task
    # resumes.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400,
                           cwd=tmp_path)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    assert text.count("starting Prefect's temporary API") == 1, text[-3000:]
    assert "creating Prefect's database" not in text
    assert "Traceback" not in text and "accounting: read" in again.stdout
    assert json.loads((out / "run_summary.json").read_text())["identity"]["holds"]
