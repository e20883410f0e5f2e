"""The environment defaults of a run: quiet, offline, patient on a busy machine.

Standard library only: Ray and Prefect read some of these when imported, so a flow script
applies them before importing either. Only unset variables are set (a user's shell or a
deployment's job variables still decide). Authentication is absent on purpose: Ray's own
default (token) applies, and ``RAY_AUTH_MODE=disabled`` is the user's call alone.
"""

from __future__ import annotations

import os

#: Ray 2.60 switches that feed only its dashboard, State API or Prometheus, none of which a run
#: reads, as ``name: (our value, Ray's default)``: task events to the GCS, metrics collection,
#: and the dashboard agent's psutil sweep of every Ray process every 2.5 s.
RAY_LEAN_ENV: dict[str, tuple[str, str]] = {
    "RAY_task_events_report_interval_ms": ("0", "1000"),
    "RAY_enable_metrics_collection": ("0", "1"),
    "REPORTER_UPDATE_INTERVAL_MS": ("60000", "2500"),
}

RAY_ENV_DEFAULTS: dict[str, str] = {
    # Ray would otherwise turn a `uv run` parent into a runtime_env for every worker.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",  # repeated worker lines stay as they are, not delayed and merged
    # Ray's C++ failure-signal handler takes SIGTERM first and arms a 3 s abort: a run stopping
    # cleanly then died by SIGABRT (exit 134) instead of 143. Crashes still end the process.
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
    # Arrow's default allocator (mimalloc) keeps freed pages for later: a worker reading
    # Parquet task after task held ~100 MB more than it used. 0 returns them at once (with
    # runtime/worker_memory.py: the 200k flow's peak 0.86x, BENCHMARKS.md `flow-memory`;
    # guarded in tests/test_memory_return.py).
    "MIMALLOC_PURGE_DELAY": "0",
    **{name: value for name, (value, _) in RAY_LEAN_ENV.items()},
}

PREFECT_ENV_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_INTERNAL_LEVEL": "ERROR",
    # A first run migrates a fresh database, longer than Prefect's 20 s on a busy machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}

LOCAL_RUN_ENV_DEFAULTS: dict[str, str] = {**PREFECT_ENV_DEFAULTS, **RAY_ENV_DEFAULTS}


def apply_ray_defaults() -> None:
    """:data:`RAY_ENV_DEFAULTS` into ``os.environ`` where unset (any Ray started or joined)."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def apply_local_run_defaults() -> None:
    """:data:`LOCAL_RUN_ENV_DEFAULTS` into ``os.environ`` where unset."""
    for key, value in LOCAL_RUN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
