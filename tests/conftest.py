"""Session-wide fixtures: one Ray cluster and one Prefect test harness for the whole suite.

Environment is set at import, before any test module imports prefect or ray, so that Prefect
keeps its database in a temporary PREFECT_HOME and Ray stays quiet.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="curator-stages-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The product's own local-run defaults (one table; imports neither Prefect nor Ray). Ray keeps
# its default token authentication (no RAY_AUTH_MODE=disabled here).
from curator_stages.runtime.env import apply_local_run_defaults  # noqa: E402

apply_local_run_defaults()
# Ray workers import test helpers (tests.*) and flows (flows.*) from the checkout. They inherit
# this environment; a job-level runtime_env would instead leave Ray's prestarted workers unused.
if str(REPO_ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def ray_cluster():
    """The one Ray cluster of the test session: 2 CPUs, no dashboard, started by the tests the way
    the product starts an embedded Ray (127.0.0.1 only, token authentication).

    The token is this session's own, put into the environment before Ray starts: the suite never
    reads or writes ``~/.ray/auth_token``, and a flow subprocess joins with exactly this token
    (:func:`tests.fault_helpers.join_env`), whatever another test did to the environment since.
    """
    import ray
    from ray.data import DataContext

    from curator_stages.runtime.ray_cluster import start_local_ray
    from tests import fault_helpers

    if not ray.is_initialized():
        # Ray itself turns token mode on for a new local node (and refreshes its cached config,
        # which setting RAY_AUTH_MODE here would not).
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        start_local_ray(2, log_to_driver=True, warm=False)
    fault_helpers.SESSION_CLUSTER.update(
        RAY_ADDRESS=ray.get_runtime_context().gcs_address,
        RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"),
        RAY_AUTH_TOKEN=os.environ.get("RAY_AUTH_TOKEN", ""))
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _quiet_port() -> int:
    """Prefect's harness asks the OS for a port, and during its seconds-long start a Ray process
    binding port 0 can take the same one (the health check then talks to Ray's gRPC): use the
    product's own pick outside the ephemeral range and Ray's worker ports instead."""
    from curator_stages.runtime.prefect_api import pick_loopback_port

    return pick_loopback_port()


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect API (the test harness: a real server on a temporary database) per session."""
    import prefect.testing.utilities as harness

    harness._find_available_port = _quiet_port
    for attempt in range(3):
        context = harness.prefect_test_harness(server_startup_timeout=120)
        try:
            context.__enter__()
        except Exception:  # noqa: BLE001 - a start that lost its port: try a new one
            if attempt == 2:
                raise
            from prefect.server.api.server import SubprocessASGIServer

            failed = SubprocessASGIServer._instances.pop(None, None)
            if failed is not None:
                try:
                    failed.stop()
                except Exception:  # noqa: BLE001 - it never started
                    pass
            continue
        break
    try:
        yield
    finally:
        context.__exit__(None, None, None)


@pytest.fixture()
def repo_root() -> Path:
    return REPO_ROOT


def pytest_unconfigure(config):
    """Prefect's temporary API servers stop at interpreter exit and log it to a console pytest has
    already closed; that log line is not a test result, so don't print a traceback for it."""
    import logging

    logging.raiseExceptions = False


from s3_server import reserve_environment, s3_server  # noqa: E402,F401 - SeaweedFS S3 server


def pytest_configure(config):
    """S3 credentials and endpoint go into the environment before any Ray starts (see s3_server)."""
    reserve_environment()


# Fixtures that start a cluster or a server: every test using one (directly or through another
# fixture) belongs to the slow tier, so ``-m "not slow"`` never starts Ray, Prefect or SeaweedFS.
_SLOW_FIXTURES = frozenset({"ray_cluster", "prefect_harness", "s3_server"})


def pytest_collection_modifyitems(config, items):
    """Mark slow, by the fixtures it uses, every test that starts a cluster or a server."""
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fresh_s3_filesystems():
    """fsspec caches an S3 filesystem per set of arguments, with the endpoint it read from the
    environment when it was made: a test that points S3 at a proxy or a dead endpoint would
    leave that filesystem to every later test. Drop them after each test that made one."""
    yield
    s3fs = sys.modules.get("s3fs")
    if s3fs is not None:
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture()
def cluster_left_free():
    """After the test, wait until every CPU of the session cluster is free again.

    Actors of a finished plan go when Ray Data's executor is collected (it sits in reference
    cycles); a later test with a fixed pool of two actors needs every CPU, so collect and wait.
    """
    yield
    import gc
    import time

    import ray

    if not ray.is_initialized():
        return
    gc.collect()
    deadline = time.monotonic() + 60
    while (ray.available_resources().get("CPU", 0.0) < ray.cluster_resources().get("CPU", 0.0)
           and time.monotonic() < deadline):
        time.sleep(0.25)
