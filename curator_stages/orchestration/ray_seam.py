"""The Prefect <-> Ray seam: a stage task's driver runs in the flow's own process.

A stage task (:func:`~curator_stages.orchestration.stage_task.run_stages`) drives one Ray Data
plan: it builds the plan, streams the output parts and writes the checkpoint's manifest. It runs
as a plain synchronous task call in the flow's process, which is a Ray driver already
(:class:`~curator_stages.orchestration.ray_session.RaySession`). Nothing crosses a process
boundary but the Ray Data work itself: no pickled flow module, no Prefect context shipped to a
worker, and the stage task's logs (progress included) reach the console of a local run directly.

That needs the flow's process to be a member of the Ray cluster: a local run, a Prefect worker
on the cluster's head node, or the flow submitted to the cluster as a Ray Job. A Ray Client
connection (``ray://``) is refused before any work (:func:`refuse_ray_client`): Ray Data's
streaming executor does not run over the Ray Client (measured on Ray 2.60: the first stage task
fails with ``AttributeError: 'Worker' object has no attribute 'core_worker'``; Ray's own docs
send ML workloads to Ray Jobs instead of the Client, and its streaming generators, which Ray
Data's map tasks are, are not supported over the Client).

One workaround stays (``tests/test_ray_seam.py`` guards it): :func:`ship_by_value`.
Prefect loads a deployment's entrypoint file under a module name Ray workers cannot import
(``text_curation``, or a generated ``__prefect_loader_<hash>__``), so a stage class defined in
the flow file would fail to unpickle on the workers unless its module travels by value.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from typing import Any, Iterator

#: How to run a curation flow on a cluster from outside it, for the error that refuses ``ray://``.
RAY_JOB_FIX = (
    "run the flow inside the cluster instead: submit it as a Ray Job (ray job submit --address "
    "http://<head>:8265 -- python <checkout>/flows/text_curation.py --input ...; the job finds "
    "the cluster through its RAY_ADDRESS, so give no --ray-address; pass PREFECT_API_URL "
    "with --runtime-env-json '{\"env_vars\": {\"PREFECT_API_URL\": \"...\"}}'), or run the "
    "Prefect worker on the cluster's head node with --ray-address <head>:6379 (docs/operations.md, "
    "\"On a Ray cluster the flow does not own\")")


def refuse_ray_client(address: str | None) -> str | None:
    """``address`` unchanged, unless it (or, when it is unset, ``RAY_ADDRESS``) is a Ray Client
    address (``ray://``): then a ValueError naming where it came from and the fix."""
    given = address or os.environ.get("RAY_ADDRESS") or ""
    if not given.startswith("ray://"):
        return address
    where = repr(address) if address else f"RAY_ADDRESS={given!r} (ray_address is unset)"
    raise ValueError(
        f"{where} is a Ray Client address; a curation flow drives Ray Data plans from its own "
        "process, and Ray Data does not run over the Ray Client. Fix: " + RAY_JOB_FIX)


#: DataContext settings a stage task changes for its own plan (``run_stages``); in the flow's
#: process they are put back afterwards, so a library user's context is left as it was.
_STAGE_TASK_CONTEXT_FIELDS = ("op_resource_reservation_enabled",)


@contextlib.contextmanager
def _data_context_restored() -> Iterator[None]:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in _STAGE_TASK_CONTEXT_FIELDS if hasattr(ctx, name)}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


def run_stage_task(task_fn: Any, **parameters: Any) -> tuple[Any, str]:
    """Run one configured stage task in this process; returns (output ref, state name).

    A failed stage task raises its exception here.
    """
    with _data_context_restored():
        state = task_fn(**parameters, return_state=True)
    return state.result(), state.name


def ship_by_value(module_name: str) -> None:
    """Pickle the module ``module_name`` by value when Ray workers could not import it by name
    (``__main__``, or a name Prefect generated for a deployment's entrypoint file)."""
    module = sys.modules.get(module_name)
    if module is None or _importable(module_name, getattr(module, "__file__", None)):
        return
    import cloudpickle
    import ray.cloudpickle  # Ray's own (vendored) pickler ships task arguments

    for pickler in (cloudpickle, ray.cloudpickle):
        pickler.register_pickle_by_value(module)


def _importable(name: str, file: str | None) -> bool:
    if name == "__main__" or not file:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin == file and "." in name


__all__ = ["RAY_JOB_FIX", "refuse_ray_client", "run_stage_task", "ship_by_value"]
