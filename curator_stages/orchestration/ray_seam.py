"""The Prefect <-> Ray seam: where a stage task's driver runs, and what that costs.

A stage task (:func:`~curator_stages.orchestration.stage_task.run_stages`) drives one Ray Data
plan: it builds the plan, streams the output parts and writes the checkpoint's manifest. That
driver can run in two places, chosen per run by the flow parameter ``driver``:

``in_flow``
    The stage task runs in the flow's own process (a plain synchronous task call), which is a
    Ray driver already (:class:`~curator_stages.orchestration.ray_session.RaySession`). Nothing
    crosses a process boundary but the Ray Data work itself: no pickled flow module, no
    Prefect context shipped to a worker, and the stage task's logs (progress included) reach
    the console of a local run directly. Right whenever the flow process can reach the Ray
    cluster, which is every local run and a worker on the cluster's head node.

``in_cluster``
    The stage task runs as a Ray task through prefect-ray's ``RayTaskRunner``. Right for a
    Prefect worker outside the Ray cluster (the driver then runs next to the data). It needs
    three workarounds, all kept here:

    1. :class:`SessionRayTaskRunner` skips ``RayTaskRunner.__enter__``, which would call
       ``ray.init`` when the flow starts, before the flow body has read its ``ray_address``
       parameter and without our quiet, loopback-only local start. It joins the process's
       :class:`RaySession` at the first ``submit`` instead.
    2. :func:`worker_api_settings` pins the API URL of the flow's own client into the Prefect
       settings serialised into each Ray task. Without ``PREFECT_API_URL`` (a local run on a
       temporary API) every worker would otherwise start its *own* temporary API server:
       measured at >20 s per worker, timing out under load.
    3. :func:`ship_by_value` makes cloudpickle send a flow module by value. Prefect loads a
       deployment's entrypoint under a generated module name that Ray workers cannot import,
       and the flow context shipped with each task would then fail to unpickle.

:func:`submit_stage_task` is the one place that dispatches on the choice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from typing import Any, Iterator, Literal

from prefect_ray.task_runners import RayTaskRunner

#: Where a stage task's driver runs (see the module docstring); "auto" is resolved per run by
#: :func:`resolve_driver`.
Driver = Literal["auto", "in_flow", "in_cluster"]
#: The default for every flow. On the sample data in_flow was not slower than in_cluster
#: (within the noise; benchmarks/BENCHMARKS.md, "Stage-task driver"), shows stage-task progress
#: on a local run's console and needs none of the in_cluster workarounds, so "auto" picks it,
#: except over the Ray Client, whose process is no member of the cluster: a Ray Data plan driven
#: from there would ship every block through the client connection.
DEFAULT_DRIVER: Driver = "auto"


def resolve_driver(driver: Driver, ray_address: str | None) -> Driver:
    """``in_cluster`` for "auto" when the run joins a cluster over the Ray Client (``ray://``,
    from the flow's ``ray_address`` or ``RAY_ADDRESS``), else ``in_flow``; explicit choices win."""
    if driver != "auto":
        return driver
    import os

    address = ray_address or os.environ.get("RAY_ADDRESS") or ""
    return "in_cluster" if address.startswith("ray://") else "in_flow"


class SessionRayTaskRunner(RayTaskRunner):
    """A ``RayTaskRunner`` that joins the process's ``RaySession`` instead of owning Ray.

    Used without a session, it opens a default one itself at the first ``submit`` and closes it
    when the flow ends. With ``driver="in_flow"`` nothing is submitted to it, so Ray is never
    touched by the runner at all.
    """

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None):
        super().__init__(address=address, init_kwargs=init_kwargs)
        self._own_session: Any = None

    def duplicate(self) -> "SessionRayTaskRunner":
        return type(self)(address=self.address, init_kwargs=self.init_kwargs)

    def __enter__(self) -> "SessionRayTaskRunner":
        # Skip RayTaskRunner.__enter__ (it would ray.init now); start the base TaskRunner only.
        super(RayTaskRunner, self).__enter__()
        return self

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None,
               dependencies: Any = None):
        import ray

        if not ray.is_initialized():
            from curator_stages.orchestration.ray_session import RaySession

            self._own_session = RaySession(self.address).__enter__()
        return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)

    def __exit__(self, *exc_info: Any) -> None:
        if self._own_session is not None:
            self._own_session.__exit__(*exc_info)
            self._own_session = None
        super(RayTaskRunner, self).__exit__(*exc_info)


@contextlib.contextmanager
def worker_api_settings() -> Iterator[str | None]:
    """Within this block, task runs submitted to Ray report to this flow's Prefect API.

    With ``PREFECT_API_URL`` set (a server, or the test harness) nothing changes. Without it
    (temporary API of a local run) the URL of the API this process uses is put into the
    settings that Prefect serialises into each Ray task. Yields the URL used.
    """
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    ctx = FlowRunContext.get()
    client = getattr(ctx, "client", None) if ctx else None
    url = str(client.api_url) if client is not None else None
    if not url:
        yield None
        return
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


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


def submit_stage_task(task_fn: Any, driver: Driver, driver_num_cpus: float,
                      **parameters: Any) -> tuple[Any, str]:
    """Run one configured stage task where ``driver`` says; returns (output ref, state name).

    A failed stage task raises its exception here, either way.
    """
    driver = resolve_driver(driver, None)
    if driver == "in_flow":
        with _data_context_restored():
            state = task_fn(**parameters, return_state=True)
        return state.result(), state.name
    if driver != "in_cluster":
        raise ValueError(f"driver must be 'in_flow' or 'in_cluster', not {driver!r}")
    from prefect_ray.context import remote_options

    with worker_api_settings():
        with remote_options(num_cpus=driver_num_cpus):
            future = task_fn.submit(**parameters)
        ref = future.result()
    state = future.state
    return ref, state.name if state is not None else "Completed"


__all__ = ["DEFAULT_DRIVER", "Driver", "SessionRayTaskRunner", "resolve_driver", "ship_by_value",
           "submit_stage_task", "worker_api_settings"]
