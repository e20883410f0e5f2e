"""Data safety of the output and work dir (issue 11 items 1 and 6): a run never writes, prunes or
reads back on, inside or around its input, and it deletes only files it recorded as its own.

Refusals are parameter validation, so they happen before Ray starts or any file is written, for
a CLI run (exit 2 naming the flag), a Python/flow call and a deployment run alike.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from curator_stages.io.output_manifest import MANIFEST_NAME
from curator_stages.io.path_safety import location, relation
from flows.text_curation import TextCurationParams, resolved_files, text_curation
from tests.prefect_homes import clean_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"


def input_dir(root: Path) -> Path:
    """Issue 11 item 1's layout: X/data holds the sample shards and the user's README.txt."""
    data = root / "X" / "data"
    data.mkdir(parents=True)
    for f in SAMPLE.iterdir():
        shutil.copy(f, data / f.name)
    (data / "README.txt").write_text("notes\n")
    return data


def refused_field(exc: ValidationError) -> list[str]:
    return [str(e["loc"][0]) for e in exc.errors()]


# ----------------------------------------------------------------------------- overlap refusal
@pytest.mark.slow
def test_output_containing_the_input_is_refused_by_the_cli_and_the_input_survives(tmp_path):
    """Item 1's reproduction: --input X/data --output X used to exit 0 after deleting every
    input shard and README.txt as "stale files of an earlier run"."""
    data = input_dir(tmp_path)
    before = sorted(p.name for p in data.iterdir())
    res = subprocess.run([sys.executable, str(FLOW_SCRIPT), "--input", str(data),
                          "--output", str(tmp_path / "X"), "--work-dir", str(tmp_path / "W")],
                         env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "--output (output)" in res.stderr and "contains the input" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in data.iterdir()) == before
    assert not (tmp_path / "W").exists()


def test_output_inside_the_input_is_refused(tmp_path):
    """Item 6: with the output inside the input dir (JSONL output), run 2 read its own output and
    run_summary.json as input."""
    data = input_dir(tmp_path)
    with pytest.raises(ValidationError) as err:
        TextCurationParams(input=str(data), output=str(data / "out"), output_format="jsonl",
                           work_dir=str(tmp_path / "W"))
    assert refused_field(err.value) == ["output"]
    assert "is inside the input" in str(err.value)
    assert not (data / "out").exists()


def test_work_dir_equal_to_or_around_the_input_is_refused(tmp_path):
    """Item 6: with work_dir equal to the input dir, the run read its checkpoint manifests."""
    data = input_dir(tmp_path)
    for work_dir in (data, data.parent, data / "ckpt"):
        with pytest.raises(ValidationError) as err:
            TextCurationParams(input=str(data), output=str(tmp_path / "out"),
                               work_dir=str(work_dir))
        assert refused_field(err.value) == ["work_dir"], work_dir


def test_a_glob_input_is_compared_by_its_base_directory_and_symlinks_are_resolved(tmp_path):
    data = input_dir(tmp_path)
    with pytest.raises(ValidationError) as err:
        TextCurationParams(input=f"{data}/*.jsonl*", output=str(data / "out"),
                           work_dir=str(tmp_path / "W"))
    assert refused_field(err.value) == ["output"]
    # An output reached through a symbolic link is where the link points.
    (tmp_path / "link").symlink_to(data)
    with pytest.raises(ValidationError) as err:
        TextCurationParams(input=str(data), output=str(tmp_path / "link" / "out"),
                           work_dir=str(tmp_path / "W"))
    assert refused_field(err.value) == ["output"]
    # Beside the input is fine.
    ok = TextCurationParams(input=f"{data}/*.jsonl*", output=str(tmp_path / "X" / "out"),
                            work_dir=str(tmp_path / "W"))
    assert ok.output == str(tmp_path / "X" / "out")


def test_output_and_work_dir_must_not_nest(tmp_path):
    data = input_dir(tmp_path)
    for out, work in ((tmp_path / "o", tmp_path / "o"), (tmp_path / "o", tmp_path / "o" / "w"),
                      (tmp_path / "w" / "o", tmp_path / "w")):
        with pytest.raises(ValidationError) as err:
            TextCurationParams(input=str(data), output=str(out), work_dir=str(work))
        assert refused_field(err.value) == ["work_dir"], (out, work)


def test_url_locations_compare_by_normalised_bucket_and_prefix():
    assert relation(location("s3a://bucket/corpus/out/"), location("s3://bucket//corpus")) \
        == "is inside"
    assert relation(location("s3://bucket/corpus"), location("s3://bucket/corpus/*.jsonl")) == "is"
    assert relation(location("s3://bucket/corpus2"), location("s3://bucket/corpus")) is None
    assert relation(location("gs://bucket/corpus"), location("s3://bucket/corpus")) is None


def test_the_flow_call_refuses_an_overlap_before_any_stage_task(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    data = input_dir(tmp_path)
    state = text_curation(params={"input": str(data), "output": str(tmp_path / "X"),
                                  "work_dir": str(tmp_path / "W")}, return_state=True)
    assert state.is_failed() and "output" in state.message and "contains the input" in state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert runs == []
    assert (data / "README.txt").exists() and len(list(data.iterdir())) == 7


def test_convert_flow_refuses_overlaps_naming_the_field(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_flow_for_safety",
                                                  REPO / "flows" / "convert_to_parquet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    data = input_dir(tmp_path)
    cases = (({"output": str(data.parent)}, "output"),
             ({"output": str(data / "parquet")}, "output"),
             ({"work_dir": str(data)}, "work_dir"),
             ({"work_dir": str(tmp_path / "out" / ".checkpoints")}, "work_dir"))
    for bad, field in cases:
        with pytest.raises(ValidationError) as err:
            module.ConvertParams(**{"input": str(data), "output": str(tmp_path / "out"),
                                    "work_dir": str(tmp_path / "W"), **bad})
        assert refused_field(err.value) == [field], bad


# ----------------------------------------------------------------------------- the output record
def test_a_foreign_file_survives_two_runs_while_stale_outputs_go(ray_cluster, prefect_harness,
                                                                 tmp_path):
    """Two real runs into one output with other parameters (JSONL, then Parquet): the second
    removes the first's part files, and never the user's README.txt or another pipeline's file
    in <output>/data (the old rule deleted every file "not written this run")."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE / "shard-00001.jsonl", src)
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    readme = out / "data" / "README.txt"
    readme.write_text("notes\n")
    theirs = out / "data" / "part-from-another-pipeline.parquet"
    theirs.write_bytes(b"PAR1 not ours")
    # Language id and fuzzy dedup (not what is checked) off: fewer stage tasks per run.
    common = dict(input=str(src), output=str(out), work_dir=str(tmp_path / "work"),
                  fuzzy_dedup=False, retries=0, language_id=False)
    first = text_curation(TextCurationParams(output_format="jsonl", **common))
    assert first["identity"]["holds"]
    jsonl = sorted((out / "data").glob("*.jsonl"))
    assert jsonl and readme.exists() and theirs.exists()
    second = text_curation(TextCurationParams(output_format="parquet", **common))
    assert second["identity"]["holds"]
    assert readme.read_text() == "notes\n" and theirs.read_bytes() == b"PAR1 not ours"
    assert not any(f.exists() for f in jsonl)
    ours = sorted(p.name for p in (out / "data").glob("part-*.parquet") if p != theirs)
    assert ours
    record = json.loads((out / MANIFEST_NAME).read_text())
    assert sorted(f for f in record["flows"]["text-curation"]["files"]
                  if f.startswith("data/")) == [f"data/{n}" for n in ours]


# ----------------------------------------------------------------------------- listing
def test_the_flow_lists_exactly_the_files_its_reader_reads(tmp_path):
    """The fingerprint covers the reader's files: hidden or `_` directories and non-JSONL files
    below the root are skipped by both (the old lister kept `_sub/x.jsonl`)."""
    from curator_stages.io import JsonlReader

    root = tmp_path / "corpus"
    for rel in ("a.jsonl", "sub/b.jsonl.gz", "_tmp/c.jsonl", ".cache/d.jsonl", "notes.txt",
                "_SUCCESS"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text('{"text": "x"}\n')
    listed, _ = JsonlReader(str(root)).partition.list_files()
    assert resolved_files(str(root)) == [p for p, _ in listed] == [
        str(root / "a.jsonl"), str(root / "sub" / "b.jsonl.gz")]
