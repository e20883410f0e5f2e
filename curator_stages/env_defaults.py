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

#: What a local curation run switches off in Ray 2.60, as ``name: (our value, Ray's default)``.
#: Each one feeds only Ray's dashboard, State API or Prometheus, none of which a run reads:
#:
#: * ``RAY_task_events_report_interval_ms=0``: workers stop buffering every task's state
#:   changes and sending them to the GCS (``ray list tasks``, the dashboard's task table, the
#:   timeline, Ray Data's opt-in ``get_stats_summary(detail=True)``). Ray Data's own execution
#:   stats come from its stats actor, not from task events.
#: * ``RAY_enable_metrics_collection=0``: the GCS, raylet and workers stop recording metrics and
#:   pushing them to the dashboard agent's exporter (Prometheus, the dashboard's graphs).
#: * ``REPORTER_UPDATE_INTERVAL_MS=60000``: the dashboard agent's reporter walks every Ray
#:   process with psutil every 2.5 s for the dashboard's node view; once a minute is enough for
#:   ``ray status``-style use and stops a steady CPU tax on a small machine.
#:
#: Left on, because ``ray.init`` (unlike ``ray start``) has no switch for them in 2.60: the
#: dashboard head process (``include_dashboard=False`` keeps only its minimal API), the
#: autoscaler monitor, the log monitor (it also carries worker output to the driver,
#: ``log_to_driver``), the dashboard agent and the runtime-env agent (the raylet starts both).
#: Prestarted workers stay on on purpose: the embedded start warms them for the first tasks.
#: ``RAY_USAGE_STATS_ENABLED=0`` (below) already keeps usage stats off.
RAY_LEAN_ENV: dict[str, tuple[str, str]] = {
    "RAY_task_events_report_interval_ms": ("0", "1000"),
    "RAY_enable_metrics_collection": ("0", "1"),
    "REPORTER_UPDATE_INTERVAL_MS": ("60000", "2500"),
}

RAY_ENV_DEFAULTS: dict[str, str] = {
    # Ray would otherwise turn a `uv run` parent into a runtime_env for every worker.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Repeated worker lines stay readable as they are (deduplication delays and merges them).
    "RAY_DEDUP_LOGS": "0",
    # Ray's C++ failure-signal handler (abseil) takes SIGTERM first and arms a 3 s abort alarm
    # before handing it on: a run stopping cleanly (Ray's and the API's shutdown) then died by
    # SIGABRT (exit 134) instead of exiting 143. Crashes still end the process.
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
    **{name: value for name, (value, _) in RAY_LEAN_ENV.items()},
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
