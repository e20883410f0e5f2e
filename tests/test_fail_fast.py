"""Wrong addresses fail in seconds, in one line naming the address (issue 20, items 15-17).

Before, ``--ray-address 127.0.0.1:1`` took 829 s to an error, ``RAY_ADDRESS=auto`` without a
warm Ray of this state dir joined another one and hung, and an S3 endpoint that is down took
99 s and ended in a traceback. Each check here runs under a 60 s alarm, so on the old code it
fails instead of waiting for minutes. Nothing here starts Ray.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def within(seconds: int):
    def expired(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_a_cluster_address_where_nothing_listens_fails_in_seconds(address, monkeypatch):
    import ray

    from curator_stages.runtime.ray_cluster import ClusterConnectError, join_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connected = ray.is_initialized()  # the suite's session cluster may be up: leave it as it is
    start = time.monotonic()
    with within(60), pytest.raises(ClusterConnectError, match="127.0.0.1:1.*Fix"):
        join_cluster(address)
    assert time.monotonic() - start < 30 and ray.is_initialized() == connected


def test_auto_means_this_state_dirs_warm_ray_only(tmp_path, monkeypatch):
    """Without a warm Ray of this state dir, 'auto' is an error at once: never Ray's own
    search of the machine, which found another state dir's cluster and hung."""
    from curator_stages.runtime import warm as warm_ray
    from curator_stages.runtime.ray_cluster import ClusterConnectError, join_cluster

    monkeypatch.setenv(warm_ray.STATE_DIR_ENV, str(tmp_path / "no-warm-ray-here"))
    with pytest.raises(warm_ray.WarmRayError, match="no-warm-ray-here"):
        warm_ray.resolve_auto("auto")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with within(60), pytest.raises(ClusterConnectError, match="curator-stages ray start"):
        join_cluster("")
    assert warm_ray.resolve_auto("10.1.2.3:6379") == "10.1.2.3:6379"  # other addresses as given


def test_an_s3_endpoint_that_is_down_is_refused_at_validation_naming_it(tmp_path, monkeypatch):
    from flows.text_curation import TextCurationParams

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    start = time.monotonic()
    with within(60), pytest.raises(ValidationError) as err:
        TextCurationParams(input="s3://bucket/in", output=str(tmp_path / "o"),
                           work_dir=str(tmp_path / "w"))
    assert time.monotonic() - start < 30
    [error] = err.value.errors()
    assert error["loc"] == ("input",) and "http://127.0.0.1:1" in error["msg"]


def test_a_ray_client_address_is_refused_before_any_work_naming_the_field_and_the_fix(tmp_path):
    """A flow drives Ray Data from its own process, which does not run over the Ray Client: the
    command line refuses ``ray://`` at once (exit 2), naming ray_address and the Ray Job fix."""
    import subprocess
    import sys

    from tests.prefect_homes import clean_env

    start = time.monotonic()
    res = subprocess.run([sys.executable, str(REPO / "flows" / "text_curation.py"),
                          "--ray-address", "ray://127.0.0.1:1", "--output", str(tmp_path / "o"),
                          "--work-dir", str(tmp_path / "w")],
                         env=clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "ray_address" in res.stderr and "ray job submit" in res.stderr, res.stderr[-2000:]
    assert time.monotonic() - start < 60
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_a_ray_client_ray_address_variable_is_refused_before_ray_starts(tmp_path, monkeypatch):
    """RAY_ADDRESS=ray://... (ray_address unset) is refused by the run itself, before Ray or any
    file is touched; ``curator-stages plan`` may still read a cluster's resources that way."""
    import ray

    from curator_stages.orchestration.curation_run import run_curation
    from flows.text_curation import SPEC, TextCurationParams

    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    params = TextCurationParams(output=str(tmp_path / "o"), work_dir=str(tmp_path / "w"))
    connected = ray.is_initialized()
    with pytest.raises(ValueError, match="RAY_ADDRESS='ray://127.0.0.1:1'.*ray job submit"):
        run_curation(SPEC, params)
    assert ray.is_initialized() == connected and not (tmp_path / "w").exists()
