"""One Ray session per process, and the Prefect task runner that uses it.

Rules (DESIGN.md, "Prefect layer"): reuse a Ray that is already initialised; connect to the
address given (the flow's ``ray_address`` parameter) or to ``RAY_ADDRESS``; otherwise start an
embedded local Ray, quietly. Only a session that started or connected Ray disconnects it at the
end, and disconnecting from an existing cluster never shuts that cluster down: ``ray.shutdown()``
in a driver that joined a cluster only detaches the driver.

Prefect tasks run by :class:`SessionRayTaskRunner` execute in Ray worker processes. Those
processes get the flow's Prefect settings through Prefect's serialised context, but with no
``PREFECT_API_URL`` (a local run on the ephemeral API) each worker would start its *own*
temporary API server; measured here, that takes >20 s per worker and times out under load.
:func:`worker_api_settings` pins the API URL of the flow's own client into the settings the
workers receive, so every task run reports to the flow's API.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

from prefect_ray.task_runners import RayTaskRunner

from curator_stages.backends.ray_data.local_ray import QUIET_RAY_ENV, join_cluster, start_local_ray

logger = logging.getLogger(__name__)


class RaySession:
    """Context manager: the process's Ray connection, started or joined only if needed.

    ``address``: a cluster to join ("auto", "ip:port", "ray://host:10001"); default
    ``RAY_ADDRESS``; with neither, an embedded local Ray with ``num_cpus`` CPUs (default: all).
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 log_to_driver: bool = True, runtime_env: dict[str, Any] | None = None,
                 include_dashboard: bool = False, configure_data_context: bool = True,
                 warm_workers: bool = True) -> None:
        self.requested_address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.log_to_driver = log_to_driver
        self.runtime_env = runtime_env
        self.include_dashboard = include_dashboard
        self.configure_data_context = configure_data_context
        #: An embedded Ray's workers import the stage modules at once (see local_ray).
        self.warm_workers = warm_workers
        self.owns_connection = False
        self.started_local = False
        self.address: str | None = None

    def __enter__(self) -> "RaySession":
        import ray

        for key, value in QUIET_RAY_ENV.items():
            os.environ.setdefault(key, value)
        if ray.is_initialized():
            logger.debug("reusing the Ray session already initialised in this process")
        elif self.requested_address:
            logger.info("connecting to the Ray cluster at %s", self.requested_address)
            join_cluster(self.requested_address, log_to_driver=self.log_to_driver,
                         runtime_env=self.runtime_env)
            self.owns_connection = True
        else:
            start_local_ray(self.num_cpus, log_to_driver=self.log_to_driver,
                            runtime_env=self.runtime_env, include_dashboard=self.include_dashboard,
                            warm=self.warm_workers)
            self.owns_connection = True
            self.started_local = True
        self.address = ray.get_runtime_context().gcs_address
        if self.configure_data_context:
            quiet_ray_data()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        import ray

        if self.owns_connection and ray.is_initialized():
            ray.shutdown()
        self.owns_connection = False

    @property
    def cluster_cpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("CPU", 0))


def quiet_ray_data() -> None:
    """No progress bars (they garble logs under Prefect) and no per-run plan banners."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class SessionRayTaskRunner(RayTaskRunner):
    """A ``RayTaskRunner`` that joins the process's :class:`RaySession` instead of owning Ray.

    The stock runner calls ``ray.init`` when the flow starts, before the flow body has read its
    parameters (so the flow's ``ray_address`` could not choose the cluster) and without our quiet
    defaults. This one connects lazily: the flow body opens a :class:`RaySession` first, and the
    first ``submit`` finds Ray initialised. Used without a session, it opens a default one itself
    and closes it when the flow ends.
    """

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None):
        super().__init__(address=address, init_kwargs=init_kwargs)
        self._own_session: RaySession | None = None

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
    (ephemeral API of a local run) the URL of the temporary server this process started is put
    into the settings that Prefect serialises into each Ray task. Yields the URL used.
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
