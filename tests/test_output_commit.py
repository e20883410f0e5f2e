"""The output commit protocol (issue 20 items 1-3): a flow run's output is one snapshot, staged
in its attempt location and published whole by a manifest written last; a cache hit verifies
the published snapshot; a failed run leaves the previous snapshot whole; one run per output.

The first tests are quick (real files, real writers, no Ray); the flow tests are slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator_stages.io import ParquetWriter
from curator_stages.io.output_commit import (
    ATTEMPTS_DIR, INTENT_FILE, attempt_root, clean_unfinished, file_digest, publish,
    published_files, verify,
)
from curator_stages.io.output_manifest import MANIFEST_NAME
from curator_stages.tasks import DocumentBatch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FLOW = "text-curation"


def _batch(task_id: str, n: int = 4, quarantine: bool = False) -> DocumentBatch:
    table = pa.table({"id": [f"{task_id}-{i}" for i in range(n)],
                      "text": [f"text {task_id} {i}" for i in range(n)], "language": ["en"] * n})
    meta = {"file_group_key": task_id}
    if quarantine:
        meta["quarantine"] = [{"file": "f.jsonl", "line": 1, "reason": "invalid JSON",
                               "raw": "{", "raw_size": 1, "stage": "jsonl_read"}]
    return DocumentBatch(task_id=task_id, dataset_name="ds", data=table, _metadata=meta)


def _stage(out: Path, snapshot: str, tasks: list[str]) -> list[str]:
    """Write ``tasks`` with a writer staged for ``snapshot``, as a flow's writer does."""
    writer = ParquetWriter(f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine")
    writer.stage_into(str(out), attempt_root(str(out), snapshot), snapshot)
    files: list[str] = []
    for t in writer.run([_batch(t, quarantine=(i == 0)) for i, t in enumerate(tasks)]):
        files += [*t.data, *t.metadata.get("quarantine_files", [])]
    return files


def _section(out: Path, flow: str = FLOW) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())["flows"][flow]


def test_a_staged_writer_writes_only_into_its_attempt_with_the_snapshot_in_each_name(tmp_path):
    out = tmp_path / "out"
    files = _stage(out, "aaaa1111", ["t0", "t1"])
    assert not (out / "data").exists() and not (out / "quarantine").exists()
    assert {Path(f).parent.relative_to(out).as_posix() for f in files} == {
        f"{ATTEMPTS_DIR}/aaaa1111/data", f"{ATTEMPTS_DIR}/aaaa1111/quarantine"}
    assert all("-aaaa1111-" in Path(f).name for f in files)
    # Another snapshot of the same tasks never shares a file name (issue 20 item 2).
    other = _stage(out, "bbbb2222", ["t0", "t1"])
    assert not {Path(f).name for f in files} & {Path(f).name for f in other}
    # The staging is not part of the identity (the snapshot is that identity's fingerprint).
    plain = ParquetWriter(f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine")
    staged = ParquetWriter(f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine")
    staged.stage_into(str(out), attempt_root(str(out), "s"), "s")
    assert staged.identity() == plain.identity()
    for elsewhere in (tmp_path / "elsewhere", out, out / "other"):
        with pytest.raises(ValueError, match="outside the flow's output folders"):
            ParquetWriter(str(elsewhere)).stage_into(str(out), "x", "s")


def test_a_flow_stages_its_writer_and_refuses_a_reader_writing_into_the_output(tmp_path):
    from curator_stages.io import JsonlReader
    from curator_stages.orchestration.curation_run import stage_writers
    from curator_stages.orchestration.fingerprint import stages_fingerprint

    out = str(tmp_path / "out")
    writer = ParquetWriter(f"{out}/data")
    groups = [JsonlReader(str(SAMPLE)).decompose(), [writer]]
    snapshot = stage_writers(groups, "0" * 64, out)
    assert snapshot == stages_fingerprint(stages_fingerprint("0" * 64, groups[0]), groups[1])[:16]
    assert writer._staging == (out, attempt_root(out, snapshot), snapshot)
    bypass = [[*JsonlReader(str(SAMPLE), quarantine_dir=f"{out}/quarantine").decompose(),
               ParquetWriter(f"{out}/data")]]
    with pytest.raises(ValueError, match="give the writer quarantine_output instead"):
        stage_writers(bypass, "0" * 64, out)


def test_publish_moves_the_attempt_and_writes_the_manifest_last(tmp_path):
    out = tmp_path / "out"
    files = _stage(out, "aaaa1111", ["t0", "t1"])
    digests = {Path(f).relative_to(out / ATTEMPTS_DIR / "aaaa1111").as_posix():
               file_digest(__import__("fsspec").filesystem("file"), f) for f in files}
    run = {"flow_run_id": "r1", "counts": {"documents_written": 8}}
    done = publish(str(out), FLOW, "aaaa1111", files, run=run)
    assert done.files == digests and not (out / ATTEMPTS_DIR / "aaaa1111").exists()
    section = _section(out)
    assert section["snapshot"] == "aaaa1111" and section["flow_run_id"] == "r1"
    assert section["counts"] == {"documents_written": 8} and section["files"] == digests
    assert sum(pq.read_table(out / rel).num_rows for rel in digests if rel.startswith("data/")) == 8
    assert verify(str(out), FLOW, "aaaa1111") is None
    assert published_files(str(out), "aaaa1111") == sorted(digests)
    assert published_files(str(out), "other") == [] and published_files(str(tmp_path)) is None


def test_verify_names_another_snapshot_a_changed_and_a_missing_file(tmp_path):
    out = tmp_path / "out"
    publish(str(out), FLOW, "aaaa1111", _stage(out, "aaaa1111", ["t0", "t1"]))
    assert "no published snapshot of flow 'convert'" in verify(str(out), "convert", "aaaa1111")
    assert "(aaaa1111) is not this run's (bbbb2222)" in verify(str(out), FLOW, "bbbb2222")
    data = sorted((out / "data").iterdir())
    data[0].write_bytes(data[0].read_bytes()[:-1] + b"!")  # same size, other bytes
    assert "changed since it was published" in verify(str(out), FLOW, "aaaa1111")
    data[0].unlink()
    assert "missing or unreadable" in verify(str(out), FLOW, "aaaa1111")


def test_a_new_snapshot_replaces_only_the_previous_one_of_its_flow(tmp_path):
    out = tmp_path / "out"
    first = publish(str(out), FLOW, "aaaa1111", _stage(out, "aaaa1111", ["t0", "t1"]))
    theirs = publish(str(out), "convert-to-parquet", "cccc3333", _stage(out, "cccc3333", ["t0"]))
    (out / "data" / "README.txt").write_text("the user's\n")
    second = publish(str(out), FLOW, "bbbb2222", _stage(out, "bbbb2222", ["t0"]))
    assert sorted(second.removed) == sorted(str(out / rel) for rel in first.files)
    assert all((out / rel).is_file() for rel in [*second.files, *theirs.files])
    assert (out / "data" / "README.txt").read_text() == "the user's\n"
    assert verify(str(out), FLOW, "bbbb2222") is None
    assert verify(str(out), "convert-to-parquet", "cccc3333") is None


def test_a_publish_that_fails_before_its_manifest_leaves_the_previous_snapshot(tmp_path):
    """A move fails midway (its target is a directory): the manifest still names the previous
    snapshot, whose files all verify; the next run's clean-up removes what the broken publish
    had moved (its intent names them), never a published file or the user's directory."""
    out = tmp_path / "out"
    publish(str(out), FLOW, "aaaa1111", _stage(out, "aaaa1111", ["t0", "t1"]))
    before = (out / MANIFEST_NAME).read_bytes()
    files = sorted(_stage(out, "bbbb2222", ["t0", "t1", "t2"]))
    blocked = out / Path(files[-1]).relative_to(out / ATTEMPTS_DIR / "bbbb2222")
    (blocked / "inside").mkdir(parents=True)  # os.replace onto a non-empty directory fails
    with pytest.raises(OSError):
        publish(str(out), FLOW, "bbbb2222", files)
    assert (out / MANIFEST_NAME).read_bytes() == before
    assert verify(str(out), FLOW, "aaaa1111") is None
    moved = [out / Path(f).relative_to(out / ATTEMPTS_DIR / "bbbb2222") for f in files[:-1]]
    assert all(p.is_file() for p in moved)  # moved, listed by no manifest: pending clean-up
    assert (out / ATTEMPTS_DIR / "bbbb2222" / INTENT_FILE).is_file()
    removed = clean_unfinished(str(out))
    assert not any(p.exists() for p in moved) and not (out / ATTEMPTS_DIR / "bbbb2222").exists()
    assert len(removed) == len(moved) + 1 and blocked.is_dir()
    assert verify(str(out), FLOW, "aaaa1111") is None


def test_a_crafted_or_broken_record_deletes_nothing_outside_the_output_subdirs(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "run_summary.json").write_text("{}")
    crafted = {"format": "curator_stages.outputs", "version": 1, "flows": {FLOW: {
        "files": ["../victim.txt", "data/../../victim.txt", str(victim), "run_summary.json"]}}}
    (out / MANIFEST_NAME).write_text(json.dumps(crafted))
    result = publish(str(out), FLOW, "aaaa1111", _stage(out, "aaaa1111", ["t0"]))
    assert result.removed == [] and victim.exists() and (out / "run_summary.json").exists()
    (out / MANIFEST_NAME).write_text("{not json")
    result = publish(str(out), FLOW, "bbbb2222", _stage(out, "bbbb2222", ["t0"]))
    assert result.unreadable and result.removed == []
    assert len(list((out / "data").glob("part-aaaa1111-*"))) == 1  # nothing pruned, unread


def test_the_report_reads_only_the_files_of_the_snapshot_its_summary_names(tmp_path):
    """`curator-stages report` trusts the manifest: a file in data/ that the published snapshot
    does not list (another run's leftover) is not counted, and a summary naming a snapshot that
    is not published gets no file-based numbers at all."""
    from curator_stages.accounting import RunSummary
    from curator_stages.reporting.data import build_report_data

    out = tmp_path / "out"
    publish(str(out), FLOW, "aaaa1111", _stage(out, "aaaa1111", ["t0"]))
    stray = _stage(out, "bbbb2222", ["t1", "t2"])  # staged, never published
    for f in stray:
        target = out / Path(f).relative_to(out / ATTEMPTS_DIR / "bbbb2222")
        target.write_bytes(Path(f).read_bytes())
    summary = RunSummary(stages=[], documents_read=5, documents_written=4, documents_dropped=0,
                         documents_quarantined=1, dropped_by_reason={}, snapshot="aaaa1111")
    data = build_report_data(summary, out)
    assert data.language_mix == {"en": 4} and sum(data.quarantine_by_reason.values()) == 1
    summary.snapshot = "cccc3333"
    data = build_report_data(summary, out)
    assert data.language_mix == {} and data.quarantine_examples == []


def test_the_output_lock_refuses_a_second_holder_naming_it(tmp_path):
    from curator_stages.orchestration.work_dir_lock import OutputBusyError, output_lock

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from curator_stages.orchestration.work_dir_lock import output_lock
            with output_lock({str(out)!r}):
                print("held", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=rf"output .* in use by another run: pid "
                                                  rf"{holder.pid}.*another output"):
            with output_lock(str(out)):
                pass
    finally:
        holder.communicate("", timeout=60)
    with output_lock(str(out)) as held:
        assert held
    with output_lock("s3://bucket/out") as held:
        assert held is False


# ----------------------------------------------------------------------------- flow runs (slow)
#: Language id and fuzzy dedup (not what these tests are about) off: fewer stage tasks per run.
FAST = {"fuzzy_dedup": False, "retries": 0, "language_id": False}


def _one_shard(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    (src / "shard-00001.jsonl").write_bytes((SAMPLE / "shard-00001.jsonl").read_bytes())
    return src


def _rows(out: Path, flow: str | None = None) -> int:
    """Rows of ``data/`` (every file, as a user reads it; or those ``flow``'s section lists)."""
    files = (sorted((out / "data").glob("*.parquet")) if flow is None else
             [out / rel for rel in _section(out, flow)["files"] if rel.startswith("data/")])
    return sum(pq.read_metadata(f).num_rows for f in files)


def _written(out: Path) -> int:
    return json.loads((out / "run_summary.json").read_text())["documents_written"]


@pytest.mark.slow
def test_a_cached_rerun_publishes_the_snapshot_its_summary_describes(ray_cluster, prefect_harness,
                                                                     tmp_path):
    """Item 1: runs with --min-words 50, 5, 50. The third run's stage tasks are all served from
    checkpoints, but the published output is the second run's: the cache hit must notice and
    write the first run's snapshot again (it served 2,076 rows under a 1,789-row summary)."""
    from flows.text_curation import TextCurationParams, text_curation

    out = tmp_path / "out"
    common = dict(input=str(_one_shard(tmp_path)), output=str(out),
                  work_dir=str(tmp_path / "w"), **FAST)
    counts = []
    for words in (50, 5, 50):
        summary = text_curation(TextCurationParams(min_words=words, **common))
        counts.append(summary["documents_written"])
        assert _rows(out) == summary["documents_written"] == _written(out), words
    assert counts[0] == counts[2] != counts[1]
    assert verify(str(out), FLOW, summary["snapshot"]) is None
    again = text_curation(TextCurationParams(min_words=50, **common))  # now truly cached
    assert {t["status"] for t in again["stage_tasks"]} == {"Cached"}
    assert _rows(out) == again["documents_written"] == counts[0]


@pytest.mark.slow
def test_two_flows_in_one_output_never_share_a_file(ray_cluster, prefect_harness, tmp_path):
    """Item 2: text curation, then the convert flow into the same output, then text curation
    again: the last run served the convert flow's 3,000 unfiltered rows from shared names."""
    import importlib.util

    from flows.text_curation import TextCurationParams, text_curation

    spec = importlib.util.spec_from_file_location("convert_flow_commit",
                                                  REPO / "flows" / "convert_to_parquet.py")
    convert = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = convert
    spec.loader.exec_module(convert)
    src, out = _one_shard(tmp_path), tmp_path / "out"
    curated = dict(input=str(src), output=str(out), work_dir=str(tmp_path / "w"), **FAST)
    text_curation(TextCurationParams(**curated))
    converted = convert.convert_to_parquet(convert.ConvertParams(
        input=str(src), output=str(out), work_dir=str(tmp_path / "b"), retries=0))
    summary = text_curation(TextCurationParams(**curated))
    assert _rows(out, FLOW) == summary["documents_written"] == _written(out)
    assert _rows(out, "convert-to-parquet") == converted["documents_written"]
    assert converted["documents_written"] > summary["documents_written"]
    ours, theirs = (set(_section(out, f)["files"]) for f in (FLOW, "convert-to-parquet"))
    assert ours and theirs and not ours & theirs
    assert verify(str(out), FLOW, summary["snapshot"]) is None
    assert verify(str(out), "convert-to-parquet", converted["snapshot"]) is None


@pytest.mark.slow
def test_a_second_run_on_an_output_in_use_is_refused_naming_the_holder(ray_cluster,
                                                                       prefect_harness, tmp_path):
    """Item 3: two runs on one output (other work dirs, other parameters) mixed their rows and
    both exited 0. A run now holds the output's lock: the second is refused before any work,
    naming the holder, and the published output stays as it was."""
    from flows.text_curation import TextCurationParams, text_curation

    src, out = _one_shard(tmp_path), tmp_path / "out"
    first = text_curation(TextCurationParams(input=str(src), output=str(out),
                                             work_dir=str(tmp_path / "a"), **FAST))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from curator_stages.orchestration.work_dir_lock import output_lock
            with output_lock({str(out)!r}):
                print("held", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        state = text_curation(TextCurationParams(input=str(src), output=str(out), min_words=5,
                                                 work_dir=str(tmp_path / "b"), **FAST),
                              return_state=True)
    finally:
        holder.communicate("", timeout=60)
    assert state.is_failed()
    assert f"pid {holder.pid}" in state.message and "in use by another run" in state.message
    assert not (tmp_path / "b").exists() or not any(
        p.name.endswith("manifest.json") for p in (tmp_path / "b").rglob("*"))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and _rows(out) == first["documents_written"]


# A flow whose run fails its accounting (a stage that invents documents and says nothing).
import ray  # noqa: E402
from prefect import flow  # noqa: E402

from curator_stages import ProcessingStage  # noqa: E402
from curator_stages.io import JSONL_EXTENSIONS, JsonlReader  # noqa: E402
from curator_stages.orchestration.curation_params import CurationParams  # noqa: E402
from curator_stages.orchestration.curation_run import CurationFlowSpec, run_curation  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Invent(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Doubles every batch and records nothing: the run's accounting breaks."""

    name = "invent"

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        return task.derive(pa.concat_tables([table, table]))


class TrapParams(CurationParams):
    input_extensions, input_root = JSONL_EXTENSIONS, REPO
    invent: bool = False


def _trap_groups(p: TrapParams) -> list[list]:
    out = p.output.rstrip("/")
    return [[*JsonlReader(p.input).decompose(), *([Invent()] if p.invent else []),
             ParquetWriter(f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine")]]


TRAP = CurationFlowSpec("trap-flow", "Trap flow", TrapParams, _trap_groups, report=False)


@flow(name="trap-flow")
def trap_flow(params: TrapParams) -> dict:
    return run_curation(TRAP, params)


@pytest.mark.slow
def test_a_failed_run_leaves_the_previous_snapshot_whole_and_unpruned(ray_cluster,
                                                                       prefect_harness, tmp_path):
    """A run whose accounting fails publishes nothing and prunes nothing: the previous snapshot,
    its record and its run_summary.json stay byte for byte (the prune used to run before the
    accounting check, and the writer wrote straight into data/)."""
    src, out = _one_shard(tmp_path), tmp_path / "out"
    common = dict(input=str(src), output=str(out), work_dir=str(tmp_path / "w"), retries=0)
    good = trap_flow(TrapParams(**common))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    state = trap_flow(TrapParams(invent=True, **common), return_state=True)
    assert state.is_failed() and "accounting identity broken" in state.message
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()
             if ATTEMPTS_DIR not in p.relative_to(out).parts}
    assert after == before and _rows(out) == good["documents_written"]
    assert verify(str(out), "trap-flow", good["snapshot"]) is None
    # The failed run's summary is kept beside its attempt for a look; the next run cleans it.
    failed = list((out / ATTEMPTS_DIR).glob("*/run_summary.json"))
    assert len(failed) == 1 and not json.loads(failed[0].read_text())["identity"]["holds"]
    trap_flow(TrapParams(**common))
    assert not (out / ATTEMPTS_DIR).exists() or not any((out / ATTEMPTS_DIR).iterdir())
