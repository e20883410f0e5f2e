"""The reference flow with input, output and work_dir all on S3 (a real SeaweedFS server).

Credentials reach every process the standard way (the environment here; an AWS profile or an
instance role elsewhere); the flow never takes them as parameters, so they cannot end up in a
plan, a manifest, a summary, a report or an artifact. The test checks that by reading back
every object the run wrote, every local file, its logs, and its artifacts through the API.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest
import ray.cloudpickle

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FAST = {"fuzzy_num_perm": 32, "retries": 0}
SHARDS = ("shard-00002.jsonl.gz", "shard-00003.jsonl.zst", "shard-00000.jsonl")

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def objects(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {p[len(prefix) + 1:]: fs.cat_file(p) for p in fs.find(prefix)}


@pytest.mark.slow
def test_reference_flow_on_s3_end_to_end_and_the_secret_key_is_written_nowhere(
        ray_cluster, prefect_harness, s3_server, tmp_path, capfd, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from curator_stages import checkpoints as ckpt
    from flows.text_curation import TextCurationParams, text_curation

    assert os.environ["AWS_SECRET_ACCESS_KEY"] == s3_server.secret_key  # the standard place
    fs = s3_server.filesystem()
    run = f"run-{uuid.uuid4().hex[:8]}"
    prefix = f"{s3_server.bucket}/{run}"
    for name in SHARDS:
        fs.put_file(str(SAMPLE / name), f"{prefix}/in/{name}")
    params = TextCurationParams(input=s3_server.url(run, "in"), output=s3_server.url(run, "out"),
                                work_dir=s3_server.url(run, "work"), **FAST)
    state = text_curation(params, return_state=True)
    assert state.is_completed(), state.message
    written = objects(fs, prefix)
    summary = json.loads(written["out/run_summary.json"])
    assert summary["identity"]["holds"], summary["identity"]
    assert summary["documents_written"] > 0 and summary["documents_quarantined"] > 0
    assert any(k.startswith("out/data/part-") for k in written)
    # The report sits next to the data in the bucket, not in a local "s3:" directory.
    assert {"out/report.md", "out/funnel.png"} <= set(written)
    assert not Path("s3:").exists() and not (tmp_path / "s3:").exists()
    # Checkpoints: every task file under one attempt prefix, listed by a manifest written last;
    # nothing else is stored (no temporary directories, no orphans).
    manifests = [k for k in written if k.startswith("work/") and k.endswith("/manifest.json")]
    assert len(manifests) == 4
    for key in manifests:
        cp = key.rsplit("/", 1)[0]
        listed = {f"{cp}/{f['file']}" for f in json.loads(written[key])["files"]}
        assert all(f.split("/")[-2].startswith("attempt-") for f in listed)
        assert {k for k in written if k.startswith(cp + "/")} == listed | {key}
    assert not [k for k in written if ".tmp-" in k or "_staging" in k]

    # A second run is served from the S3 checkpoints and writes the same bytes.
    again = text_curation(params, return_state=True)
    assert again.is_completed(), again.message
    rerun = objects(fs, prefix)
    data = {k: v for k, v in written.items() if k.startswith("out/data/")}
    assert data == {k: v for k, v in rerun.items() if k.startswith("out/data/")}
    summary2 = json.loads(rerun["out/run_summary.json"])
    assert [t["status"] for t in summary2["stage_tasks"]] == ["Cached"] * 4
    assert ckpt.is_complete(s3_server.url(run, "work", manifests[0].split("/")[1]))

    # The secret key is nowhere: objects, local files, logs, artifacts.
    secret = s3_server.secret_key.encode()
    assert not [k for k, v in rerun.items() if secret in v]
    local = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not local
    out, err = capfd.readouterr()
    assert s3_server.secret_key not in out + err + caplog.text
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[state.state_details.flow_run_id, again.state_details.flow_run_id])))
        assert arts
        for art in arts:
            assert s3_server.secret_key not in json.dumps(art.model_dump(mode="json"))
        for flow_run_id in (state.state_details.flow_run_id, again.state_details.flow_run_id):
            fr = client.read_flow_run(flow_run_id)
            assert s3_server.secret_key not in json.dumps(fr.model_dump(mode="json"))
