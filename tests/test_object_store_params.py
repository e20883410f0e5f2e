"""Spill and object-store limits of an embedded Ray: the flow parameters ``object_store_memory``
and ``spill_dir`` (``--object-store-memory``, ``--spill-dir``), and ``curator-stages ray start``.

Validation is checked without Ray (quick tier): sizes in bytes or human units, Ray's minimum and
the machine's memory as bounds, a local writable spill directory apart from the run's files, and
a refusal, naming the cluster-side flags, when the run joins a cluster (whose store is fixed by
whoever started it). The slow tests start their own Ray in a subprocess (never the session's
shared one) and check that the values reached Ray: its reported store size, and spilled objects
appearing in the spill directory once more than the store is put into it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from curator_stages.cli import main as cli_main
from curator_stages.orchestration.params import build_parser, parse_params
from flows.text_curation import TextCurationParams
from tests.test_params_bounds import params, refused
from tests.test_warm_ray import cli, warm_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
PROBE = REPO / "tests" / "scripts" / "object_store_probe.py"


@pytest.fixture(autouse=True)
def embedded(monkeypatch):
    """No cluster address from the environment (the session cluster's may be there)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.mark.parametrize("given, size", [
    (300_000_000, 300_000_000), ("300000000", 300_000_000), ("512MB", 512_000_000),
    ("2GiB", 2 * 1024**3), ("2G", 2_000_000_000), ("100 MiB", 100 * 1024**2)])
def test_object_store_memory_takes_bytes_or_a_human_size(tmp_path, given, size):
    if size > psutil.virtual_memory().total:
        pytest.skip("more than this machine's memory")
    p = params(tmp_path, object_store_memory=given)
    assert p.object_store_memory == size
    assert p.model_dump(mode="json")["object_store_memory"] == size  # a deployment's JSON


def test_object_store_memory_below_rays_minimum_or_above_the_memory_is_refused(tmp_path):
    fields, text = refused(tmp_path, object_store_memory="50MB")
    assert fields == ["object_store_memory"] and "75 MiB" in text and "78643200" in text
    assert params(tmp_path, object_store_memory=75 * 1024**2).object_store_memory == 78643200
    total = psutil.virtual_memory().total
    fields, text = refused(tmp_path, object_store_memory=total + 1)
    assert fields == ["object_store_memory"] and "exceeds this machine's memory" in text
    fields, text = refused(tmp_path, object_store_memory="2 lightyears")
    assert fields == ["object_store_memory"]


def test_spill_dir_is_a_local_writable_directory_apart_from_the_runs_files(tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = params(tmp_path, spill_dir="spill/here")
    assert p.spill_dir == str(tmp_path / "spill" / "here")  # absolute: Ray's cwd is not ours
    assert not (tmp_path / "spill").exists()  # the probe leaves nothing behind
    for url in ("s3://bucket/spill", "gs://bucket/spill"):
        fields, text = refused(tmp_path, spill_dir=url)
        assert fields == ["spill_dir"] and "not a local directory" in text
    for inside, other in ((tmp_path / "out" / "spill", "output"),
                          (tmp_path / "w" / "spill", "work_dir"),
                          (SAMPLE / "spill", "input")):
        fields, text = refused(tmp_path, spill_dir=str(inside))
        assert fields == ["spill_dir"] and f"the {other} location" in text
    (tmp_path / "a-file").write_text("x")
    fields, text = refused(tmp_path, spill_dir=str(tmp_path / "a-file" / "spill"))
    assert fields == ["spill_dir"] and "ENOTDIR" in text


@pytest.mark.parametrize("field, value", [("object_store_memory", "1GB"),
                                          ("spill_dir", "/tmp/curator-spill")])
def test_a_run_that_joins_a_cluster_refuses_them_and_says_where_they_are_set(
        tmp_path, monkeypatch, field, value):
    fields, text = refused(tmp_path, ray_address="head:6379", **{field: value})
    assert fields == [field] and "head:6379" in text
    assert "ray start --object-store-memory" in text
    assert "--object-spilling-directory" in text and "curator-stages ray start" in text
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    fields, text = refused(tmp_path, **{field: value})
    assert fields == [field] and "10.0.0.1:6379" in text
    # "local" names an embedded Ray, whatever RAY_ADDRESS says
    assert getattr(params(tmp_path, ray_address="local", **{field: value}), field) is not None


def test_the_flow_cli_has_both_options_and_names_the_field_it_refuses(tmp_path, capsys):
    text = build_parser(TextCurationParams).format_help()
    assert "--object-store-memory" in text and "--spill-dir" in text
    base = ["--input", str(SAMPLE), "--output", str(tmp_path / "o"), "--work-dir",
            str(tmp_path / "w")]
    p = parse_params(TextCurationParams, [*base, "--object-store-memory", "2GiB",
                                          "--spill-dir", str(tmp_path / "s")])
    assert (p.object_store_memory, p.spill_dir) == (2 * 1024**3, str(tmp_path / "s"))
    with pytest.raises(SystemExit) as exit_:
        parse_params(TextCurationParams, [*base, "--object-store-memory", "10MB"])
    assert exit_.value.code == 2
    assert "--object-store-memory (object_store_memory)" in capsys.readouterr().err


def test_warm_ray_start_refuses_bad_values_before_starting_anything(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv("CURATOR_STAGES_RAY_DIR", str(tmp_path / "state"))
    assert cli_main(["ray", "start", "--object-store-memory", "10MB"]) == 2
    assert cli_main(["ray", "start", "--object-store-memory", "2Gx"]) == 2
    assert cli_main(["ray", "start", "--spill-dir", "s3://bucket/spill"]) == 2
    err = capsys.readouterr().err
    assert "75 MiB" in err and "2GiB" in err and "not a local directory" in err
    assert not (tmp_path / "state").exists()


def run_probe(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    res = subprocess.run([sys.executable, str(PROBE), *args], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_embedded_ray_gets_the_flows_store_size_and_spills_into_its_spill_dir(tmp_path):
    """The path a flow takes (its CLI parameters, then ``RaySession.for_params``), in a process
    of its own: a 100 MB store, and 180 MB put into it lands partly in the spill dir."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_", "PYTEST_"))}
    env["PYTHONPATH"] = str(REPO)
    spill = tmp_path / "spill"
    out = run_probe(["--input", str(SAMPLE), "--output", str(tmp_path / "out"), "--work-dir",
                     str(tmp_path / "work"), "--num-cpus", "1", "--object-store-memory",
                     "100MB", "--spill-dir", str(spill)], env, tmp_path)
    assert out["object_store_memory"] == pytest.approx(100_000_000, rel=0.02)
    assert out["spilled"], "nothing was spilled"
    assert all(Path(f).is_relative_to(spill) for f in out["spilled"])
    assert out["read_back"] == list(range(6))  # spilled objects come back intact
    assert out["left_after_shutdown"] == []  # Ray removes its spill files at shutdown


@pytest.mark.slow
def test_the_warm_ray_takes_both_and_a_run_joining_it_uses_them(tmp_path):
    env = warm_env(tmp_path)
    spill = tmp_path / "warm-spill"
    started = cli(env, "start", "--num-cpus", "1", "--object-store-memory", "100MB",
                  "--spill-dir", str(spill))
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert "object store 100 MB" in started.stdout
        status = cli(env, "status")
        assert "object store 100 MB" in status.stdout
        address = json.loads((tmp_path / "warm-ray" / "state.json").read_text())["address"]
        out = run_probe(["--join", str(spill)], {**env, "RAY_ADDRESS": address}, tmp_path)
        assert out["address"] == address
        assert out["object_store_memory"] == pytest.approx(100_000_000, rel=0.02)
        assert out["spilled"] and all(Path(f).is_relative_to(spill) for f in out["spilled"])
        assert out["read_back"] == list(range(6))
    finally:
        stopped = cli(env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
