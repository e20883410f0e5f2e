"""Resume after a SIGKILL with work_dir (and input and output) on S3, as on a local disk.

The flow process is killed while stage 3 has part of its output under an attempt prefix and no
manifest. The re-run serves stages 1-2 from their S3 checkpoints, recomputes stage 3 (the killed
attempt's objects stay unlisted until stale), and writes the same output as an uninterrupted run.
"""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from curator_stages import checkpoints as ckpt
from tests import fault_helpers as fh
from tests.test_faults import FAULT_FLOW, REPO, make_jsonl_input, records, subprocess_env


def s3_rows(fs, prefix: str) -> list[tuple]:
    fs.invalidate_cache()
    rows = []
    for path in sorted(fs.find(prefix)):
        if path.endswith(".jsonl"):
            for line in fs.cat_file(path).decode().splitlines():
                rec = json.loads(line)
                rows.append((rec["id"], rec["text"], rec["length"]))
    return sorted(rows)


def checkpoints(fs, work: str) -> dict[str, dict | None]:
    """Each checkpoint prefix under ``work`` and its manifest (None when incomplete)."""
    fs.invalidate_cache()
    out: dict[str, dict | None] = {}
    for entry in fs.ls(work, detail=False):
        name = entry.rsplit("/", 1)[-1]
        try:
            out[name] = json.loads(fs.cat_file(f"{entry}/manifest.json"))
        except FileNotFoundError:
            out[name] = None
    return out


@pytest.mark.slow
def test_flow_killed_with_work_dir_on_s3_resumes_with_same_output(
        ray_cluster, prefect_harness, s3_server, tmp_path):
    fs = s3_server.filesystem()
    run = f"resume-{uuid.uuid4().hex[:8]}"
    base = f"{s3_server.bucket}/{run}"
    local_in = make_jsonl_input(tmp_path / "in")
    for path in sorted(local_in.iterdir()):
        fs.put_file(str(path), f"{base}/in/{path.name}")
    rec, block = tmp_path / "rec", tmp_path / "block"
    rec.mkdir()
    block.mkdir()
    cmd = [sys.executable, str(FAULT_FLOW), "--input", s3_server.url(run, "in"),
           "--output", s3_server.url(run, "out"), "--work-dir", s3_server.url(run, "work"),
           "--record-dir", str(rec)]
    work = f"{base}/work"
    _, before = fh.kill_flow_when_blocked(
        cmd, subprocess_env(ray_cluster, CURATOR_FAULT_BLOCK_DIR=str(block)), REPO, tmp_path,
        block, lambda: [n for n, m in checkpoints(fs, work).items() if m is None
                        and [p for p in fs.find(f"{work}/{n}") if "/attempt-" in p]], 400,
        "stage 3 to block with part of its output on S3",
        before_kill=lambda: {n: m for n, m in checkpoints(fs, work).items() if m is not None})
    assert sorted(c.split("-", 1)[1] for c in before) == ["file_partitioning+jsonl_read", "tag"]
    tags_before = records(rec, "tag")

    summary = fh.run_flow_summary(cmd, subprocess_env(ray_cluster), REPO, 600)
    assert [t["status"] for t in summary["stage_tasks"]] == [
        "Cached", "Cached", "Completed", "Completed"]
    assert records(rec, "tag") == tags_before, "a stage before the kill ran again"
    after = checkpoints(fs, f"{base}/work")
    assert {n: after[n] for n in before} == before  # complete checkpoints untouched
    assert all(m is not None for m in after.values()) and len(after) == 4
    for name, manifest in after.items():  # the killed attempt's objects are unlisted ...
        listed = {f["file"] for f in manifest["files"]} | {"manifest.json"}
        stored = {p.split(f"{name}/", 1)[1] for p in fs.find(f"{base}/work/{name}")}
        assert listed <= stored
        ckpt.remove_stale_attempts(s3_server.url(run, "work", name), older_than_s=0)
        fs.invalidate_cache()  # ... and go once stale (no lock on S3: young may be a live run's)
        stored = {p.split(f"{name}/", 1)[1] for p in fs.find(f"{base}/work/{name}")}
        assert stored == listed
    assert summary["identity"]["holds"] and summary["documents_written"] == 30

    rows = s3_rows(fs, f"{base}/out/data")
    assert len(rows) == len({r[0] for r in rows}) == 30  # nothing lost, nothing doubled
    from tests.test_faults import clean_run_rows

    assert rows == clean_run_rows(tmp_path / "clean")  # local_in is make_jsonl_input's default
