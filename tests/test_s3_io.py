"""Object storage for real: checkpoints, writers and readers against a SeaweedFS S3 server.

The server (fixture ``s3_server``) is reached only through the standard AWS environment, and
faults come from a loopback proxy (:mod:`s3_fault_proxy`) that fails the first requests to
chosen keys with 503 SlowDown, 500 and dropped connections, as a throttled store does.
"""

from __future__ import annotations

import uuid

import pytest

from s3_fault_proxy import FaultProxy
from tests import fault_helpers as fh
from curator_stages import checkpoints as ckpt
from curator_stages.io import JsonlWriter, ParquetWriter
from curator_stages.io.filesystem import OutputWriteError


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def point_at(monkeypatch, endpoint: str) -> None:
    """Send S3 requests to ``endpoint`` (fsspec caches filesystems, endpoint included)."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3fs.S3FileSystem.clear_instance_cache()


def rows(tasks):
    return fh.rows_of(tasks)


def test_checkpoint_on_s3_commits_under_an_attempt_prefix_and_removes_stale_orphans(s3_env):
    fs = s3_env.filesystem()
    final = s3_env.url(f"work-{uuid.uuid4().hex[:8]}", "0123456789abcdef-stage")
    root = final.split("://", 1)[1]
    fs.pipe(f"{root}/attempt-deadbeef/part-000000.parquet", b"torn")  # a SIGKILLed attempt
    tasks = fh.doc_batches(3, per_task=10)
    with ckpt.CheckpointWriter(final) as writer:
        for task in tasks:
            writer.write(task)
        assert not ckpt.is_complete(final)
        manifest = writer.commit(fingerprint="0" * 64, stages=["stage"])
    files = [f["file"] for f in manifest["files"]]
    assert all(f.startswith(writer.tmp_path.rsplit("/", 1)[-1] + "/") for f in files)
    fs.invalidate_cache()
    stored = sorted(p[len(root) + 1:] for p in fs.find(root))
    # Young: perhaps another run's attempt in progress (no lock on S3); removed once stale.
    assert stored == sorted([*files, "manifest.json", "attempt-deadbeef/part-000000.parquet"])
    assert ckpt.remove_stale_attempts(final, older_than_s=0)
    fs.invalidate_cache()
    stored = sorted(p[len(root) + 1:] for p in fs.find(root))
    assert stored == sorted([*files, "manifest.json"])
    assert rows(ckpt.read_tasks(final)) == rows(tasks)


@pytest.mark.parametrize("writer_cls", [JsonlWriter, ParquetWriter])
def test_throttling_500s_and_dropped_connections_are_retried_with_identical_output(
        s3_server, monkeypatch, writer_cls):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    base = f"faults-{uuid.uuid4().hex[:8]}"
    tasks = fh.doc_batches(3, per_task=20)
    clean = s3_server.url(base, "clean")
    writer_cls(clean).run(tasks)

    # Every request to an output file or a checkpoint object fails 3 times first: 503 SlowDown,
    # 500, then a connection closed without an answer.
    with FaultProxy(s3_server.endpoint, rf"/{base}/(faulty|work)/", failures=3) as proxy:
        point_at(monkeypatch, proxy.endpoint)
        faulty = s3_server.url(base, "faulty")
        writer_cls(faulty).run(tasks)
        final = s3_server.url(base, "work", "0123456789abcdef-stage")
        with ckpt.CheckpointWriter(final) as writer:
            for task in tasks:
                writer.write(task)
            writer.commit(fingerprint="0" * 64, stages=["stage"])
        assert rows(ckpt.read_tasks(final)) == rows(tasks)
    point_at(monkeypatch, s3_server.endpoint)
    assert proxy.injected["slowdown"] and proxy.injected["internal"] and proxy.injected["drop"]

    fs = s3_server.filesystem()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{s3_server.bucket}/{base}/clean"))
    assert names == sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{s3_server.bucket}/{base}/faulty"))
    for name in names:
        assert fs.cat(f"{s3_server.bucket}/{base}/faulty/{name}") == \
            fs.cat(f"{s3_server.bucket}/{base}/clean/{name}")


def test_a_fault_that_outlasts_the_retries_fails_naming_the_object(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    base = f"hard-{uuid.uuid4().hex[:8]}"
    with FaultProxy(s3_server.endpoint, rf"/{base}/", failures=10**6) as proxy:
        point_at(monkeypatch, proxy.endpoint)
        few = {"config_kwargs": {"retries": {"max_attempts": 3, "mode": "standard"}}}
        writer = JsonlWriter(s3_server.url(base), storage_options=few)
        with pytest.raises(OutputWriteError) as err:
            writer.run(fh.doc_batches(1))
    point_at(monkeypatch, s3_server.endpoint)
    assert f"{s3_server.bucket}/{base}/part-" in str(err.value)
    assert sum(proxy.injected.values()) >= 3  # retried before giving up
    fs = s3_server.filesystem()
    assert not fs.exists(f"{s3_server.bucket}/{base}")  # nothing partial was published
