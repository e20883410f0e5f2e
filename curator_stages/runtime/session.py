"""One Ray session per process, and what Ray's workers need of a Prefect-loaded flow file.

Rules: reuse a Ray already initialised in this process; join the address given (a flow's
``ray_address``) or ``RAY_ADDRESS``; otherwise start an embedded local Ray. Only a session that
started or joined Ray disconnects at the end, and a joined cluster is never stopped
(``ray.shutdown()`` in a joining driver only detaches it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from typing import Any, Callable

from curator_stages.runtime.ray_cluster import join_cluster, start_local_ray

logger = logging.getLogger(__name__)


class RaySession:
    """Context manager: the process's Ray connection, started or joined only if needed.

    ``num_cpus`` (default: all), ``object_store_memory`` (bytes) and ``spill_dir`` are an
    embedded Ray's only: a joined cluster's are its nodes'. ``announce`` is told what starts;
    ``warm_workers``: an embedded Ray's workers preload the stage modules.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 object_store_memory: int | None = None, spill_dir: str | None = None,
                 log_to_driver: bool = True, runtime_env: dict[str, Any] | None = None,
                 warm_workers: bool = True,
                 announce: Callable[[str], None] | None = None) -> None:
        self.requested_address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus, self.object_store_memory, self.spill_dir = (
            num_cpus, object_store_memory, spill_dir)
        self.log_to_driver, self.runtime_env, self.warm_workers = (
            log_to_driver, runtime_env, warm_workers)
        self.announce = announce or (lambda message: None)
        self.owns_connection = False
        self.address: str | None = None

    @classmethod
    def for_params(cls, params: Any, **kwargs: Any) -> "RaySession":
        """The session a curation flow's parameters (``CurationParams``) ask for: the one place
        their Ray fields reach Ray."""
        return cls(params.ray_address, num_cpus=params.num_cpus,
                   object_store_memory=params.object_store_memory, spill_dir=params.spill_dir,
                   log_to_driver=params.log_to_driver, **kwargs)

    def __enter__(self) -> "RaySession":
        import ray

        if ray.is_initialized():
            logger.debug("reusing the Ray session already initialised in this process")
        elif self.requested_address:
            logger.info("connecting to the Ray cluster at %s", self.requested_address)
            self.announce(f"connecting to the Ray cluster at {self.requested_address}")
            join_cluster(self.requested_address, log_to_driver=self.log_to_driver,
                         runtime_env=self.runtime_env)
            self.owns_connection = True
        else:
            store = (f", object store {self.object_store_memory / 1e6:.0f} MB"
                     if self.object_store_memory else "")
            spill = f", spilling to {self.spill_dir}" if self.spill_dir else ""
            self.announce(f"starting Ray (embedded, local only, "
                          f"{self.num_cpus or os.cpu_count() or 1} CPUs{store}{spill})")
            start_local_ray(self.num_cpus, log_to_driver=self.log_to_driver,
                            runtime_env=self.runtime_env, warm=self.warm_workers,
                            object_store_memory=self.object_store_memory,
                            object_spilling_directory=self.spill_dir)
            self.owns_connection = True
        self.address = ray.get_runtime_context().gcs_address
        quiet_ray_data()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        import ray

        if self.owns_connection and ray.is_initialized():
            ray.shutdown()
        self.owns_connection = False


def quiet_ray_data() -> None:
    """No progress bars (they garble logs under Prefect) and no per-run plan banners."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def ship_by_value(module_name: str) -> None:
    """Pickle module ``module_name`` by value when Ray workers could not import it by name.

    Prefect loads a deployment's entrypoint file under a name no worker can import
    (``text_curation``, ``__prefect_loader_<hash>__``), and a script is ``__main__``: a stage
    class defined there would not unpickle on the workers. Guarded by tests/test_ray_seam.py.
    """
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
