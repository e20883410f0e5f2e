"""Freed memory handed back to the system: a Ray worker's between tasks, a run driver's after
its fits (:func:`system_allocator`).

A worker lives through many tasks, and its allocators keep what a task freed for later
allocations: Arrow's mimalloc pool and glibc's heap. With tasks of ~10k documents a worker sat
at about twice its working set between tasks, and the two task workers' leftovers were the
peak of a whole run. The run's environment makes mimalloc return pages at once
(``MIMALLOC_PURGE_DELAY`` in :mod:`.env`); this returns the rest when a checkpoint-loading
task starts (every stage task after the first starts so), for a few milliseconds per call.
Calling it after every stage batch as well cost about 4% of the wall and lowered no peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Iterator

_LIBC_NAME = ctypes.util.find_library("c")
_MALLOC_TRIM = getattr(ctypes.CDLL(_LIBC_NAME), "malloc_trim", None) if _LIBC_NAME else None


@contextlib.contextmanager
def system_allocator() -> Iterator[None]:
    """Arrow's allocations in this process from glibc instead of mimalloc while inside: for a
    run's driver. The previous default pool comes back on exit (buffers keep their own pool).

    In the driver, mimalloc kept what the fits freed: 26 MiB after a 500k-document fuzzy fit,
    though Arrow's pool reported nothing allocated and ``release_unused`` had run; the driver
    carried it through the rest of the run. With glibc, ``malloc_trim`` hands it back. Workers
    keep mimalloc: with glibc their long-lived heaps fragmented (the fuzzy stage task's workers
    grew by 110 MiB).
    """
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def return_freed_memory() -> None:
    """Arrow's unused pool memory, then glibc's free heap pages, back to the system."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


__all__ = ["return_freed_memory", "system_allocator"]
