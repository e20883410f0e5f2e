"""Listing at scale: a run lists its input once, and the fingerprint and the partitioner share it.

The S3 tests count the LIST requests that reach the SeaweedFS server through a loopback proxy
(the fault proxy with no faults, recording each request): a recursive listing of the input
prefix costs one ListObjectsV2 page per 1000 objects, and must happen once per run, not once in
parameter validation, once for the fingerprint, once more for its metadata and again in the
first stage task.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from s3_fault_proxy import FaultProxy
from curator_stages.io import JSONL_EXTENSIONS, JsonlReader
from curator_stages.io.partition import FilePartitioningStage
from curator_stages.orchestration.fingerprint import input_fingerprint
from curator_stages.tasks import EmptyTask

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
LISTING_FLOW = REPO / "tests" / "scripts" / "s3_listing_flow.py"
SHARDS = ("shard-00000.jsonl", "shard-00002.jsonl.gz", "shard-00003.jsonl.zst")


class CountingProxy(FaultProxy):
    """The fault proxy with no faults, recording (method, path and query) of every request."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, pattern=r"(?!)", failures=0)  # the pattern matches nothing
        self.requests: list[tuple[str, str]] = []
        proxy, base = self, self.server.RequestHandlerClass

        class Recording(base):  # type: ignore[misc, valid-type]
            def _record_and_handle(self) -> None:
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                self._handle()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _record_and_handle

        self.server.RequestHandlerClass = Recording

    def lists_of(self, bucket: str, prefix: str) -> tuple[list[dict], list[dict]]:
        """(recursive listing pages, one-key probes) of ``bucket`` under ``prefix``."""
        pages, probes = [], []
        for method, target in list(self.requests):
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if method != "GET" or url.path.strip("/") != bucket or "prefix" not in query:
                continue  # not a LIST of that bucket (v1 or v2)
            if not query["prefix"].startswith(prefix):
                continue
            (probes if query.get("max-keys") == "1" else pages).append(query)
        return pages, probes


def point_at(monkeypatch, endpoint: str) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3fs.S3FileSystem.clear_instance_cache()


def make_input(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"part-{i}.jsonl").write_text(
            "".join(json.dumps({"text": f"document {i}-{j}"}) + "\n" for j in range(4)))
    return root


# ----------------------------------------------------------------------------- in memory
def test_partition_given_the_runs_listing_does_not_list_again(tmp_path):
    inp = make_input(tmp_path / "in")
    stage = FilePartitioningStage(str(inp), file_extensions=JSONL_EXTENSIONS)
    listed_by_itself = stage.process(EmptyTask(task_id="t", dataset_name="d"))
    stage = FilePartitioningStage(str(inp), file_extensions=JSONL_EXTENSIONS)
    stage.use_listing(stage.list_input())
    moved = inp.rename(tmp_path / "elsewhere")  # a listing now would find nothing
    assert not inp.exists() and moved.exists()
    tasks = stage.process(EmptyTask(task_id="t", dataset_name="d"))
    assert [(t.task_id, t.data, t.reader_options, t.metadata) for t in tasks] == \
        [(t.task_id, t.data, t.reader_options, t.metadata) for t in listed_by_itself]


def test_the_listing_is_no_part_of_the_stage_identity_or_its_printed_form(tmp_path):
    inp = make_input(tmp_path / "in")
    reader = JsonlReader(str(inp))
    before = reader.partition.identity()
    listing = reader.partition.use_listing(reader.partition.list_input())
    assert len(listing) == 3 and listing.files[0].size > 0 and listing.files[0].modified
    assert reader.partition.identity() == before
    assert "part-0.jsonl" not in repr(reader.partition) + repr(listing)
    clone = pickle.loads(pickle.dumps(reader.partition))  # travels to Ray workers with the stage
    assert clone._listing == listing


def test_a_reader_used_on_its_own_still_lists_in_its_stage(tmp_path):
    inp = make_input(tmp_path / "in")
    tasks = JsonlReader(str(inp)).partition.process(EmptyTask(task_id="t", dataset_name="d"))
    assert sorted(p for t in tasks for p in t.data) == sorted(str(p) for p in inp.iterdir())


@pytest.mark.parametrize("verify", ["metadata", "content"])
def test_fingerprint_of_the_listing_equals_the_fingerprint_of_its_paths(tmp_path, verify):
    """Checkpoints written before the shared listing keep their names."""
    inp = make_input(tmp_path / "in")
    listing = FilePartitioningStage(str(inp)).list_input()
    assert input_fingerprint(listing, extra="x", verify=verify) == \
        input_fingerprint(listing.paths, extra="x", verify=verify)


# ----------------------------------------------------------------------------- on S3
def upload(fs, prefix: str) -> None:
    for name in SHARDS:
        fs.put_file(str(SAMPLE / name), f"{prefix}/{name}")


def test_validating_an_s3_input_probes_the_prefix_and_lists_nothing(s3_server, monkeypatch):
    from pydantic import ValidationError

    from flows.text_curation import TextCurationParams

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    run = f"validate-{uuid.uuid4().hex[:8]}"
    upload(s3_server.filesystem(), f"{s3_server.bucket}/{run}/in")
    with CountingProxy(s3_server.endpoint) as proxy:
        point_at(monkeypatch, proxy.endpoint)
        TextCurationParams(input=s3_server.url(run, "in"), output=s3_server.url(run, "out"),
                           work_dir=s3_server.url(run, "work"))
        pages, probes = proxy.lists_of(s3_server.bucket, f"{run}/in")
        assert pages == []  # no listing of the input
        assert len(proxy.requests) <= 2 and len(probes) <= 1  # a HEAD and a one-key LIST
        with pytest.raises(ValidationError, match="input"):
            TextCurationParams(input=s3_server.url(run, "missing"),
                               output=s3_server.url(run, "out"),
                               work_dir=s3_server.url(run, "work"))
        # The listing and the fingerprint agree with the path-based fingerprint (one LIST).
        listing = TextCurationParams.input_listing(s3_server.url(run, "in"))
        assert [p.rsplit("/", 1)[-1] for p in listing.paths] == sorted(SHARDS)
        assert all(f.version.startswith("ETag:") and f.modified for f in listing.files)
        for verify in ("metadata", "content"):
            assert input_fingerprint(listing, verify=verify) == \
                input_fingerprint(listing.paths, verify=verify)


@pytest.mark.slow
def test_a_run_of_the_reference_flow_lists_its_s3_input_once(
        ray_cluster, prefect_harness, s3_server, tmp_path):
    from tests.test_faults import subprocess_env

    fs = s3_server.filesystem()
    run = f"listing-{uuid.uuid4().hex[:8]}"
    upload(fs, f"{s3_server.bucket}/{run}/in")
    cmd = [sys.executable, str(LISTING_FLOW), "--input", s3_server.url(run, "in"),
           "--output", s3_server.url(run, "out"), "--work-dir", s3_server.url(run, "work"),
           "--no-fuzzy-dedup", "--no-language-id", "--retries", "0"]  # fewer stage tasks
    with CountingProxy(s3_server.endpoint) as proxy:
        done = subprocess.run(cmd, env=subprocess_env(ray_cluster, AWS_ENDPOINT_URL=proxy.endpoint),
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        pages, probes = proxy.lists_of(s3_server.bucket, f"{run}/in")
        # The stage tasks' reads went through the proxy too, so a listing there would count.
        reads = [t for m, t in proxy.requests if m == "GET" and f"/{run}/in/shard-" in t]
        assert reads
    fs.invalidate_cache()
    assert fs.cat_file(f"{s3_server.bucket}/{run}/out/run_summary.json")
    assert len(pages) == 1, pages  # 3 objects: one page, once per run
    assert all(q.get("max-keys") == "1" for q in probes)  # existence probes, one key each
