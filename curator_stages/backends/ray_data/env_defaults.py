"""The one table of environment defaults for any Ray this package starts or joins.

A leaf module (standard library only, no Ray import): the local-run defaults
(``orchestration/local_defaults.py``), the embedded Ray start (``local_ray.py``) and the test
suite's ``conftest.py`` all read this table, and some of these settings are read when ``ray`` is
imported, so they must be settable before that. Applied only where not already set: a user's
shell or a deployment's job variables still decide. Authentication is deliberately absent:
Ray's own default (token) applies.
"""

from __future__ import annotations

RAY_ENV_DEFAULTS: dict[str, str] = {
    # Ray would otherwise turn a `uv run` parent into a runtime_env for every worker.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Repeated worker lines stay readable as they are (deduplication delays and merges them).
    "RAY_DEDUP_LOGS": "0",
}
