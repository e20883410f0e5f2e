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

    from curator_stages.backends.ray_data.local_ray import ClusterConnectError, join_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connected = ray.is_initialized()  # the suite's session cluster may be up: leave it as it is
    start = time.monotonic()
    with within(60), pytest.raises(ClusterConnectError, match="127.0.0.1:1.*Fix"):
        join_cluster(address)
    assert time.monotonic() - start < 30 and ray.is_initialized() == connected


def test_auto_means_this_state_dirs_warm_ray_only(tmp_path, monkeypatch):
    """Without a warm Ray of this state dir, 'auto' is an error at once: never Ray's own
    search of the machine, which found another state dir's cluster and hung."""
    from curator_stages.backends.ray_data import warm_ray
    from curator_stages.backends.ray_data.local_ray import ClusterConnectError, join_cluster

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
