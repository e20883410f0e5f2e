"""A small hash-partitioned map/reduce over Arrow blocks in Ray's object store.

Why not ``Dataset.groupby``: on this 2-CPU machine Ray Data's hash shuffle costs 3-10 s of fixed
overhead (200 partitions of shuffle actors by default) even for 1,000 rows, which dominates a
dedup fit. Dedup only needs "all rows with the same key end up in one place", so we split each
block by ``key % num_partitions`` in a Ray task with ``num_returns=num_partitions`` and run one
reduce task per partition. Data never passes through the driver; only the (small) reduce
outputs do. Memory per reduce task is about ``total_rows / num_partitions`` compact rows.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import ray

#: Compact rows per reduce partition; bounds the memory of one reduce task.
ROWS_PER_PARTITION = 2_000_000


def choose_num_partitions(total_rows: int, rows_per_partition: int = ROWS_PER_PARTITION) -> int:
    """Enough partitions to keep each reduce bounded and every CPU busy (not more than needed)."""
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
    except Exception:  # pragma: no cover - Ray not initialised
        cpus = 1
    by_size = math.ceil(max(total_rows, 1) / rows_per_partition)
    return max(1, min(1024, max(by_size, min(cpus, math.ceil(total_rows / 10_000) or 1))))


def _split(num_partitions: int, key_column: str, explode: Callable[..., pa.Table] | None,
           explode_kwargs: dict[str, Any], first_block: int | None, *tables: pa.Table):
    parts: list[list[pa.Table]] = [[] for _ in range(num_partitions)]
    for j, table in enumerate(tables):
        if explode is not None:
            if first_block is not None:
                table = explode(table, block_index=first_block + j, **explode_kwargs)
            else:
                table = explode(table, **explode_kwargs)
        if table.num_rows == 0:
            continue
        keys = table.column(key_column).to_numpy()
        part = (keys % np.uint64(num_partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(num_partitions + 1))
        ordered = table.take(pa.array(order))
        for p in range(num_partitions):
            if bounds[p + 1] > bounds[p]:
                parts[p].append(ordered.slice(bounds[p], bounds[p + 1] - bounds[p]))
    schema_source = [t for ts in parts for t in ts]
    empty = schema_source[0].slice(0, 0) if schema_source else pa.table({})
    out = tuple(pa.concat_tables(ts) if ts else empty for ts in parts)
    return out if num_partitions > 1 else out[0]


def _reduce(fn: Callable[..., Any], fn_kwargs: dict[str, Any], *parts: pa.Table) -> Any:
    non_empty = [p for p in parts if p.num_rows > 0]
    if not non_empty:
        return fn(None, **fn_kwargs)
    return fn(pa.concat_tables(non_empty, promote_options="default"), **fn_kwargs)


def partition_reduce(
    block_refs: list["ray.ObjectRef"],
    key_column: str,
    reduce_fn: Callable[..., Any],
    *,
    num_partitions: int,
    explode: Callable[..., pa.Table] | None = None,
    explode_kwargs: dict[str, Any] | None = None,
    reduce_kwargs: dict[str, Any] | None = None,
    blocks_per_split_task: int | None = None,
    gather: bool = True,
    reduce_returns: int = 1,
    explode_block_index: bool = False,
) -> list[Any]:
    """Group rows of ``block_refs`` by ``key_column % num_partitions`` and reduce each group.

    ``explode(table)`` (optional) runs inside the split tasks, so an exploded form (one row per
    LSH band, say) is never materialised as a whole. ``reduce_fn(table | None)`` gets all rows of
    one partition (None when the partition is empty) and returns a table (or any small value);
    the list of reduce outputs comes back to the driver. With ``gather=False`` the outputs stay in
    the object store and their refs come back instead (a large result never passes through the
    driver); a ``reduce_fn`` that returns a tuple of ``reduce_returns`` values then gives a list
    of refs per partition, so a small part (a count) can be fetched without the large one. With
    ``explode_block_index`` the explode also gets ``block_index=`` (the block's position in
    ``block_refs``), so it can number rows exactly without a pass to count them.
    """
    if not block_refs:
        return []
    if blocks_per_split_task is None:
        blocks_per_split_task = max(1, math.ceil(len(block_refs) / max(4 * num_partitions, 1)))
    split = ray.remote(_split).options(num_returns=num_partitions)
    reduce = ray.remote(_reduce).options(num_returns=reduce_returns)
    split_outputs = []
    for i in range(0, len(block_refs), blocks_per_split_task):
        group = block_refs[i: i + blocks_per_split_task]
        refs = split.remote(num_partitions, key_column, explode, explode_kwargs or {},
                            i if explode_block_index else None, *group)
        split_outputs.append(refs if num_partitions > 1 else [refs])
    reduce_refs = [
        reduce.remote(reduce_fn, reduce_kwargs or {}, *[outs[p] for outs in split_outputs])
        for p in range(num_partitions)
    ]
    return ray.get(reduce_refs) if gather else reduce_refs


def map_blocks(block_refs: list["ray.ObjectRef"], fn: Callable[..., pa.Table],
               block_index: bool = False, **fn_kwargs: Any) -> list[pa.Table]:
    """Run ``fn(table, **fn_kwargs)`` on every block in a Ray task; gather the (small) results.

    With ``block_index`` fn also gets ``block_index=`` (the block's position in ``block_refs``),
    the same number :func:`partition_reduce` gives its explode."""
    remote = ray.remote(fn)
    kwargs_ref = {k: (ray.put(v) if isinstance(v, (pa.Array, pa.ChunkedArray, np.ndarray)) else v)
                  for k, v in fn_kwargs.items()}
    return ray.get([remote.remote(ref, **({"block_index": i} if block_index else {}), **kwargs_ref)
                    for i, ref in enumerate(block_refs)])
