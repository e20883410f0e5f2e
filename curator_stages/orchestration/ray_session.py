"""One Ray session per process.

Rules: reuse a Ray that is already initialised; connect to the
address given (the flow's ``ray_address`` parameter) or to ``RAY_ADDRESS``; otherwise start an
embedded local Ray, quietly. Only a session that started or connected Ray disconnects it at the
end, and disconnecting from an existing cluster never shuts that cluster down: ``ray.shutdown()``
in a driver that joined a cluster only detaches the driver.

Why the flow's process must be a member of the cluster (no Ray Client) is :mod:`ray_seam`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable

from curator_stages.backends.ray_data.local_ray import QUIET_RAY_ENV, join_cluster, start_local_ray

logger = logging.getLogger(__name__)


class RaySession:
    """Context manager: the process's Ray connection, started or joined only if needed.

    ``address``: a cluster to join ("auto", "ip:port", "ray://host:10001"); default
    ``RAY_ADDRESS``; with neither, an embedded local Ray with ``num_cpus`` CPUs (default: all),
    an object store of ``object_store_memory`` bytes and ``spill_dir`` for its spilled objects
    (default: Ray's). Those three are an embedded Ray's only: a joined cluster's are its nodes'.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 object_store_memory: int | None = None, spill_dir: str | None = None,
                 log_to_driver: bool = True, runtime_env: dict[str, Any] | None = None,
                 include_dashboard: bool = False, configure_data_context: bool = True,
                 warm_workers: bool = True,
                 announce: Callable[[str], None] | None = None) -> None:
        self.requested_address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.spill_dir = spill_dir
        self.log_to_driver = log_to_driver
        self.runtime_env = runtime_env
        self.include_dashboard = include_dashboard
        self.configure_data_context = configure_data_context
        #: An embedded Ray's workers import the stage modules at once (see local_ray).
        self.warm_workers = warm_workers
        #: Told what starts, while it starts (a local run prints it on the console).
        self.announce = announce
        self.owns_connection = False
        self.started_local = False
        self.address: str | None = None

    @classmethod
    def for_params(cls, params: Any, **kwargs: Any) -> "RaySession":
        """The session a curation flow's parameters (``CurationParams``) ask for: the one place
        their Ray fields (address, CPUs, object store, spill directory, logs) reach Ray."""
        return cls(params.ray_address, num_cpus=params.num_cpus,
                   object_store_memory=params.object_store_memory, spill_dir=params.spill_dir,
                   log_to_driver=params.log_to_driver, **kwargs)

    def __enter__(self) -> "RaySession":
        import ray

        for key, value in QUIET_RAY_ENV.items():
            os.environ.setdefault(key, value)
        if ray.is_initialized():
            logger.debug("reusing the Ray session already initialised in this process")
        elif self.requested_address:
            logger.info("connecting to the Ray cluster at %s", self.requested_address)
            if self.announce:
                self.announce(f"connecting to the Ray cluster at {self.requested_address}")
            join_cluster(self.requested_address, log_to_driver=self.log_to_driver,
                         runtime_env=self.runtime_env)
            self.owns_connection = True
        else:
            if self.announce:
                cpus = self.num_cpus or os.cpu_count() or 1
                store = (f", object store {self.object_store_memory / 1e6:.0f} MB"
                         if self.object_store_memory else "")
                spill = f", spilling to {self.spill_dir}" if self.spill_dir else ""
                self.announce(f"starting Ray (embedded, local only, {cpus} CPUs{store}{spill})")
            start_local_ray(self.num_cpus, log_to_driver=self.log_to_driver,
                            runtime_env=self.runtime_env, include_dashboard=self.include_dashboard,
                            warm=self.warm_workers, object_store_memory=self.object_store_memory,
                            object_spilling_directory=self.spill_dir)  # Ray 2.60's documented
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


__all__ = ["RaySession", "quiet_ray_data"]
