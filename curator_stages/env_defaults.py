"""The one table of environment defaults for a local run: quiet, offline, patient on a busy machine.

A leaf module (standard library only): some of these settings are read when ``ray`` or
``prefect`` is imported, so a flow script applies them before importing either, and importing
this module must import neither. The embedded Ray start (``backends/ray_data/local_ray.py``)
applies the Ray share, the flow scripts and the test suite apply all of it. Only unset variables
are set: a user's shell or a deployment's job variables still decide. Authentication is
deliberately absent: Ray's own default (token) applies, and ``RAY_AUTH_MODE=disabled`` is the
user's call alone.
"""

from __future__ import annotations

import os

RAY_ENV_DEFAULTS: dict[str, str] = {
    # Ray would otherwise turn a `uv run` parent into a runtime_env for every worker.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Repeated worker lines stay readable as they are (deduplication delays and merges them).
    "RAY_DEDUP_LOGS": "0",
}

PREFECT_ENV_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_INTERNAL_LEVEL": "ERROR",
    # The temporary API of a local run migrates a fresh database on first use; on a busy
    # machine that takes longer than Prefect's default 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}

LOCAL_RUN_ENV_DEFAULTS: dict[str, str] = {**PREFECT_ENV_DEFAULTS, **RAY_ENV_DEFAULTS}


def apply_local_run_defaults() -> None:
    """Put :data:`LOCAL_RUN_ENV_DEFAULTS` into ``os.environ`` where not already set."""
    for key, value in LOCAL_RUN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
