"""Arrow's allocator for the process that drives a run: glibc's, where Ray workers keep mimalloc.

Arrow picks its default memory pool once, when pyarrow is imported, from
``ARROW_DEFAULT_MEMORY_POOL``; a pool set later (``pyarrow.set_memory_pool``) does not reach
Arrow's own C++ allocations. In the driver, mimalloc kept the pages the fuzzy dedup fit's bucket
step freed, and glibc gives them back; that driver sits beside the workers at a run's memory
peak (docs/scaling.md, section 2). Ray workers keep mimalloc: with glibc in every process a
stage task peaked higher. The variable is removed again at once, so the processes the driver
starts (Ray's, Prefect's) choose as before.
"""

from __future__ import annotations

import os
import sys

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_pool_in_driver() -> None:
    """Import pyarrow with glibc's pool, unless pyarrow is already imported, the user chose a
    pool, or this process is a Ray worker (one that already runs Ray: it keeps mimalloc)."""
    if "pyarrow" in sys.modules or ARROW_POOL_VARIABLE in os.environ:
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return
    os.environ[ARROW_POOL_VARIABLE] = "system"
    try:
        import pyarrow  # noqa: F401  (the pool is chosen here, once)
    finally:
        del os.environ[ARROW_POOL_VARIABLE]


__all__ = ["ARROW_POOL_VARIABLE", "use_system_pool_in_driver"]
