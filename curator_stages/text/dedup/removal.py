"""A removal set built inside Ray's object store: the driver holds refs and counts, never keys.

A dedup reduce knows which of its rows go; gathering them on the driver would put every removed
key of the corpus in one process. Instead each reduce task returns its removed keys as compact
rows (source-file hash, 128-bit digest) that stay in the object store, plus their count (the
only thing the driver fetches). The count decides the number of buckets (see
:mod:`.idset`), and a second hash-partitioned reduce (:mod:`.shuffle`) by source-file hash turns
those rows into one sorted digest array per bucket, again left in the store. The resulting
:class:`~curator_stages.text.dedup.idset.IdSet` holds one ref per bucket.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from curator_stages.text.dedup.idset import (
    IdSet,
    bucket_count,
    digest_stats,
    id_digests,
    source_hashes,
)
from curator_stages.text.dedup.shuffle import partition_reduce

REMOVAL_SCHEMA = pa.schema([("bh", pa.uint64()), ("d0", pa.uint64()), ("d1", pa.uint64())])


def removal_rows(keys: pa.Array | pa.ChunkedArray) -> pa.Table:
    """(source-file hash, digest as two uint64 halves) of each removed row key."""
    values = keys.to_pylist()
    if not values:
        return REMOVAL_SCHEMA.empty_table()
    halves = id_digests(values).view("<u8").reshape(-1, 2)
    return pa.table({"bh": pa.array(source_hashes(values)), "d0": pa.array(halves[:, 0]),
                     "d1": pa.array(halves[:, 1])}, schema=REMOVAL_SCHEMA)


def _bucket(table: pa.Table | None) -> tuple[np.ndarray, tuple[int, ...]]:
    """One bucket's sorted unique ``S16`` digests, and their stats for the set's fingerprint."""
    if table is None or table.num_rows == 0:
        digests = np.zeros(0, dtype="S16")
    else:
        halves = np.column_stack([table.column("d0").to_numpy(),
                                  table.column("d1").to_numpy()]).astype("<u8")
        digests = np.unique(np.ascontiguousarray(halves).view("S16").ravel())
    return digests, digest_stats(digests)


def store_id_set(part_refs: list[Any], counts: Sequence[int]) -> IdSet:
    """The set of the removal rows at ``part_refs`` (:func:`removal_rows` tables in the object
    store, ``counts[i]`` rows each), bucketed by source file without leaving the store."""
    import ray

    total = int(sum(counts))
    if total == 0:
        return IdSet()
    outs = partition_reduce(list(part_refs), "bh", _bucket, num_partitions=bucket_count(total),
                            gather=False, reduce_returns=2)
    stats = ray.get([stat for _, stat in outs])
    return IdSet.from_buckets([array for array, _ in outs], stats)
