"""The Ray and the Prefect API a run uses (embedded, warm or joined): their start, their stop,
their safety rules and the environment defaults. Everything else asks this package.

* :mod:`.env`: the environment defaults (standard library only: applied before Ray or Prefect
  is imported).
* :mod:`.ray_cluster`: :func:`start_local_ray` (loopback only, token auth, a failed start
  cleaned up), :func:`join_cluster` (token mode, fast failure naming the fix),
  :func:`refuse_ray_client`.
* :mod:`.session`: :class:`RaySession`, the process's one Ray connection.
* :mod:`.warm`: the warm local Ray of ``curator-stages ray start|status|stop``.
* :mod:`.local_run` and :mod:`.prefect_api` (they import Prefect, so not from here): a local
  run's signals, its temporary Prefect API (loopback, dies with the run, one start per
  ``PREFECT_HOME`` at a time) and its cleanup.

Nothing here imports Ray or Prefect at import time.
"""

from curator_stages.runtime.env import apply_local_run_defaults, apply_ray_defaults
from curator_stages.runtime.ray_cluster import (
    ClusterConnectError,
    LocalRayStartError,
    join_cluster,
    refuse_ray_client,
    start_local_ray,
)
from curator_stages.runtime.session import RaySession, ship_by_value

__all__ = [
    "ClusterConnectError",
    "LocalRayStartError",
    "RaySession",
    "apply_local_run_defaults",
    "apply_ray_defaults",
    "join_cluster",
    "refuse_ray_client",
    "ship_by_value",
    "start_local_ray",
]
