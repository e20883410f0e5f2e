"""Environment defaults for a local run: quiet, offline, and patient on a busy machine.

Set before Prefect or Ray is imported (both read these at import or start-up). Explicit settings
in the environment always win, so a deployment's job variables or a user's shell still decide.
Nothing here weakens security: Ray's token authentication keeps Ray's default (see
``backends/ray_data/local_ray.py``), and ``RAY_AUTH_MODE=disabled`` is the user's call alone.
"""

from __future__ import annotations

import os

from curator_stages.backends.ray_data.env_defaults import RAY_ENV_DEFAULTS

#: Prefect's share of the local-run defaults; Ray's share is the backend's one table.
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
