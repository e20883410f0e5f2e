"""Starting an embedded local Ray the fast way (no Prefect import: the executor uses it too).

Two things decide how soon a local run's first batch is processed:

* **Prestarted workers.** At start-up the raylet prestarts one worker per CPU with the driver's
  environment. A job-level ``runtime_env`` makes every worker of the job a runtime-env worker,
  so those prestarted ones are never used and each task waits for a fresh process (plus a
  runtime-env agent round trip). For a local Ray, a ``runtime_env`` of only ``env_vars`` is
  therefore put into this process's environment instead: the raylet and its workers inherit
  it, same effect, no wasted workers.
* **Warm workers.** A fresh worker imports ``ray.data``, pyarrow and the stage modules the
  first time it deserialises a stage (2-3 CPU-seconds each on a small machine), one worker
  after the other as the plan ramps up. :func:`warm_workers` has every prestarted worker do
  those imports at once, while the driver is still building its plan (and, in a flow, while
  Prefect's API starts).
"""

from __future__ import annotations

import os
from typing import Any

#: Environment defaults for an embedded Ray (only applied when not already set).
QUIET_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}

#: Modules a curation worker needs for nearly every plan (imported by :func:`warm_workers`).
WARM_MODULES = ("ray.data", "pyarrow.parquet", "curator_stages.backends.ray_data.adapter",
                "curator_stages.io", "curator_stages.text")


def env_vars_into_environ(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """For an embedded Ray, a runtime_env of only ``env_vars`` becomes this process's environment.

    Returns the runtime_env still to pass to ``ray.init`` (``None`` when it was moved).
    ``PYTHONPATH`` is prepended to the existing value; other variables are set. Any other
    runtime_env (pip, working_dir, ...) is returned unchanged.
    """
    if not runtime_env or set(runtime_env) != {"env_vars"}:
        return runtime_env
    for key, value in (runtime_env.get("env_vars") or {}).items():
        if key == "PYTHONPATH" and os.environ.get(key):
            parts = os.environ[key].split(os.pathsep)
            if value not in parts:
                os.environ[key] = os.pathsep.join([value, *parts])
        else:
            os.environ[key] = value
    return None


def _import_modules(modules: tuple[str, ...]) -> int:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional extra missing on this worker: the stage itself will say so
    return os.getpid()


def warm_workers(modules: tuple[str, ...] = WARM_MODULES, count: int | None = None) -> list[Any]:
    """Have ``count`` workers (default: one per CPU) import ``modules`` now; returns the refs.

    Fire and forget: the tasks hold no CPU reservation of their own beyond their run (a few
    seconds), and nothing waits for them unless the caller ``ray.get``s the refs.
    """
    import ray

    if count is None:
        count = max(1, int(ray.cluster_resources().get("CPU", 1)))
    remote = ray.remote(num_cpus=1, max_retries=0)(_import_modules)
    return [remote.options(name="WarmWorker").remote(modules) for _ in range(count)]


def start_local_ray(num_cpus: int | None = None, *, log_to_driver: bool = True,
                    runtime_env: dict[str, Any] | None = None, include_dashboard: bool = False,
                    warm: bool = True, **init_kwargs: Any) -> None:
    """``ray.init`` an embedded local Ray: quiet defaults, prestarted workers used, warmed.

    ``address="local"`` makes sure a ``RAY_ADDRESS`` set later by a library cannot redirect it.
    """
    import ray

    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
             log_to_driver=log_to_driver, runtime_env=env_vars_into_environ(runtime_env),
             **init_kwargs)
    if warm:
        warm_workers()
