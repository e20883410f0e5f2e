"""Session-wide fixtures: one Ray cluster and one Prefect test harness for the whole suite.

Environment is set at import, before any test module imports prefect or ray, so that Prefect
keeps its database in a temporary PREFECT_HOME and Ray stays quiet.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="curator-stages-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def ray_cluster():
    """The one Ray cluster of the test session: 2 CPUs, no dashboard, started by the tests."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        ray.init(
            address="local",  # never join a cluster another process left recorded in /tmp/ray
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        )
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect API (the test harness: a real server on a temporary database) per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def repo_root() -> Path:
    return REPO_ROOT
