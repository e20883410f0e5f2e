"""Parameters refused early with sane bounds, and `verify_input` (issue 11 items 11 and 12).

Each refusal names the field and happens at validation: before Ray starts, before any file is
written (the writability probe leaves nothing behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from curator_stages.orchestration.fingerprint import input_fingerprint
from flows.text_curation import TextCurationParams
from tests.prefect_homes import clean_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"


def params(tmp_path: Path, **kw) -> TextCurationParams:
    base = dict(input=str(SAMPLE), output=str(tmp_path / "out"), work_dir=str(tmp_path / "w"))
    return TextCurationParams(**{**base, **kw})


def refused(tmp_path: Path, **kw) -> tuple[list[str], str]:
    with pytest.raises(ValidationError) as err:
        params(tmp_path, **kw)
    return [str(e["loc"][0]) for e in err.value.errors()], str(err.value)


def test_num_cpus_is_bounded_by_the_machine_for_an_embedded_ray(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = os.cpu_count() or 1
    assert params(tmp_path, num_cpus=cpus).num_cpus == cpus
    fields, text = refused(tmp_path, num_cpus=cpus + 1)
    assert fields == ["num_cpus"] and f"{cpus} CPUs" in text
    # A cluster is the user's business: its size is not this machine's.
    assert params(tmp_path, num_cpus=4096, ray_address="head:6379").num_cpus == 4096
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert params(tmp_path, num_cpus=4096).num_cpus == 4096


@pytest.mark.parametrize("value", [1.0, 1e-9, 0.3, 1.5])
def test_fuzzy_threshold_outside_the_meaningful_range_is_refused(tmp_path, value):
    """1.0 passed validation and failed after Ray started; 1e-9 removed 1,892 of 1,894 docs."""
    fields, _ = refused(tmp_path, fuzzy_threshold=value)
    assert fields == ["fuzzy_threshold"]


def test_fuzzy_threshold_bounds_are_inclusive_below_and_exclusive_above(tmp_path):
    assert params(tmp_path, fuzzy_threshold=0.5).fuzzy_threshold == 0.5
    assert params(tmp_path, fuzzy_threshold=0.99).fuzzy_threshold == 0.99


def test_a_filesystem_root_or_the_home_directory_as_input_is_refused(tmp_path, monkeypatch):
    fields, text = refused(tmp_path, input="/")
    assert fields == ["input"] and "filesystem root" in text
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.jsonl").write_text('{"text": "x"}\n')
    monkeypatch.setenv("HOME", str(home))
    fields, text = refused(tmp_path, input="~")
    assert fields == ["input"] and "home directory" in text
    assert params(tmp_path, input=str(home / "a.jsonl")).input == str(home / "a.jsonl")


def test_dangling_links_and_link_loops_under_the_input_are_one_line_at_validation(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "x"}\n')
    (corpus / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")
    fields, text = refused(tmp_path, input=str(corpus))
    assert fields == ["input"] and str(corpus / "gone.jsonl") in text and "missing target" in text
    (corpus / "gone.jsonl").unlink()
    (corpus / "loop1.jsonl").symlink_to(corpus / "loop2.jsonl")
    (corpus / "loop2.jsonl").symlink_to(corpus / "loop1.jsonl")
    fields, text = refused(tmp_path, input=str(corpus))
    assert fields == ["input"] and "loop" in text


@pytest.mark.slow
def test_cli_names_a_dangling_link_without_a_traceback(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "x"}\n')
    (corpus / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")
    env = clean_env(tmp_path)
    res = subprocess.run([sys.executable, str(FLOW_SCRIPT), "--input", str(corpus),
                          "--output", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "--input (input)" in res.stderr and "gone.jsonl" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_output_that_cannot_be_created_is_found_at_validation(tmp_path):
    """A file in the way (ENOTDIR) used to surface only at the writer, the last stage."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    fields, text = refused(tmp_path, output=str(blocker / "out"))
    assert fields == ["output"] and "ENOTDIR" in text
    fields, _ = refused(tmp_path, work_dir=str(blocker))
    assert fields == ["work_dir"]


def test_validation_leaves_nothing_behind(tmp_path):
    p = params(tmp_path, output=str(tmp_path / "new" / "out"))
    assert p.output == str(tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists() and not (tmp_path / "w").exists()
    (tmp_path / "exists").mkdir()
    params(tmp_path, output=str(tmp_path / "exists"))
    assert list((tmp_path / "exists").iterdir()) == []


# ----------------------------------------------------------------------------- verify_input
def test_content_verification_catches_a_same_size_edit_with_restored_mtime(tmp_path):
    """Item 12: an edit that keeps the size and restores the mtime served old checkpoints.
    `verify_input="content"` catches it; "metadata" (the default) does not, by design."""
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "hello world"}\n')
    stat = f.stat()
    meta, content = input_fingerprint([str(f)]), input_fingerprint([str(f)], verify="content")
    assert input_fingerprint([str(f)], verify="content") == content  # stable
    f.write_text('{"text": "jello world"}\n')
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert f.stat().st_size == stat.st_size and f.stat().st_mtime_ns == stat.st_mtime_ns
    assert input_fingerprint([str(f)]) == meta  # the documented limit of "metadata"
    assert input_fingerprint([str(f)], verify="content") != content


def test_content_verification_uses_an_object_version_when_the_store_has_one():
    import fsspec

    from curator_stages.orchestration.fingerprint import content_digest

    fs = fsspec.filesystem("memory")
    assert content_digest(fs, "/none", {"ETag": '"abc123"', "size": 3}) == "ETag:abc123"
    assert content_digest(fs, "/none", {"VersionId": "v7", "ETag": '"x"'}) == "VersionId:v7"
    with fs.open("/verify/a.jsonl", "wb") as h:
        h.write(b'{"text": "x"}\n')
    digest = content_digest(fs, "/verify/a.jsonl", fs.info("/verify/a.jsonl"))
    assert digest.startswith("xxh3_128:")


def test_verify_input_is_a_parameter_of_the_flow(tmp_path):
    assert params(tmp_path).verify_input == "metadata"
    assert params(tmp_path, verify_input="content").verify_input == "content"
    fields, _ = refused(tmp_path, verify_input="sha1")
    assert fields == ["verify_input"]
