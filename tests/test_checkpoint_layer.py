"""The checkpoint layer stands alone: no Prefect, no flows, and a commit that needs no rename.

Checkpoints are read and written inside Ray workers; importing Prefect there costs every worker
process over a second of CPU. On object stores a directory cannot be renamed into place, so an
attempt writes under ``<checkpoint>/attempt-<id>/`` and the manifest, uploaded last, is the only
thing a reader trusts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from curator_stages import DocumentBatch
from curator_stages import checkpoints as ckpt
from curator_stages.checkpoints.task_files import UnsafeCheckpointError

REPO = Path(__file__).resolve().parents[1]


def test_importing_the_checkpoint_layer_imports_no_prefect_and_no_flows():
    code = ("import sys, curator_stages.checkpoints, curator_stages.checkpoints.store; "
            "print([m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows') "
            "or m.startswith('curator_stages.orchestration')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(REPO),
                                                       "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def batches(n: int = 3) -> list[DocumentBatch]:
    return [DocumentBatch(task_id=f"t{i}", dataset_name="d",
                          data=pa.table({"id": [f"{i}-{j}" for j in range(4)],
                                         "text": [f"doc {i} {j}" for j in range(4)]}))
            for i in range(n)]


def commit_on(store_url: str, fs) -> tuple[str, dict]:
    """Write a checkpoint after a killed attempt left parts; return (path, manifest)."""
    final = f"{store_url}/0123456789abcdef-stage"
    stripped = final.split("://", 1)[1]
    fs.pipe(f"{stripped}/attempt-deadbeef/part-000000.parquet", b"torn")  # a killed attempt
    with ckpt.CheckpointWriter(final) as writer:
        for task in batches():
            writer.write(task)
        assert not ckpt.is_complete(final)  # nothing is trusted before the manifest
        manifest = writer.commit(fingerprint="0" * 64, stages=["stage"])
    return final, manifest


def test_object_store_checkpoint_commits_under_an_attempt_prefix_and_removes_stale_orphans():
    import fsspec

    fs = fsspec.filesystem("memory")
    final, manifest = commit_on(f"memory://ckpt-{uuid.uuid4().hex[:8]}", fs)
    files = [f["file"] for f in manifest["files"]]
    prefix = files[0].split("/")[0]
    assert prefix.startswith("attempt-") and prefix != "attempt-deadbeef"
    assert all(f.startswith(prefix + "/") for f in files)
    root = final.split("://", 1)[1]
    stored = sorted(p[len(root) + 1:].lstrip("/") for p in fs.find(root))
    # A young unlisted attempt may be another run's, in progress (no lock): it stays, unread,
    # until nothing was written into it for URL_STALE_TEMPORARY_AGE_S.
    assert stored == sorted([*files, "manifest.json", "attempt-deadbeef/part-000000.parquet"])
    assert ckpt.remove_stale_attempts(final, older_than_s=0)
    stored = sorted(p[len(root) + 1:].lstrip("/") for p in fs.find(root))
    assert stored == sorted([*files, "manifest.json"])
    assert not [p for p in fs.ls(root.rsplit("/", 1)[0], detail=False) if ".tmp-" in p]
    assert [t.task_id for t in ckpt.read_tasks(final)] == ["t0", "t1", "t2"]


def test_manifest_may_not_point_outside_its_checkpoint_or_attempt():
    for name in ("../x.parquet", "other/part.parquet", "attempt-deadbeef/../../x.parquet",
                 "attempt-DEADBEEF/p.parquet", "attempt-deadbeef/p.pkl"):
        with pytest.raises(UnsafeCheckpointError):
            ckpt.store.check_task_file_name(name, "here")
    assert ckpt.store.check_task_file_name("attempt-deadbeef/p.parquet", "here")


def test_failed_object_store_attempt_leaves_nothing():
    import fsspec

    fs = fsspec.filesystem("memory")
    final = f"memory://ckpt-{uuid.uuid4().hex[:8]}/0123456789abcdef-stage"
    with pytest.raises(RuntimeError):
        with ckpt.CheckpointWriter(final) as writer:
            writer.write(batches(1)[0])
            raise RuntimeError("the stage failed")
    assert not fs.exists(final.split("://", 1)[1]) or not fs.find(final.split("://", 1)[1])
    assert not ckpt.is_complete(final)


def test_local_checkpoint_still_renames_a_sibling_into_place(tmp_path):
    final = str(tmp_path / "0123456789abcdef-stage")
    with ckpt.CheckpointWriter(final) as writer:
        for task in batches():
            writer.write(task)
        manifest = writer.commit(fingerprint="0" * 64, stages=["stage"])
    assert all("/" not in f["file"] for f in manifest["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0123456789abcdef-stage"]
    assert json.loads((tmp_path / "0123456789abcdef-stage" / "manifest.json").read_text())
