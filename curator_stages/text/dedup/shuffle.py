"""A small hash-partitioned map/reduce over Arrow blocks in Ray's object store.

Why not ``Dataset.groupby``: on this 2-CPU machine Ray Data's hash shuffle costs 3-10 s of fixed
overhead (200 partitions of shuffle actors by default) even for 1,000 rows, which dominates a
dedup fit. Dedup only needs "all rows with the same key end up in one place", so we split each
block by ``key % num_partitions`` in a Ray task with ``num_returns=num_partitions`` and run one
reduce task per partition. Data never passes through the driver; only the (small) reduce
outputs do. Memory per reduce task is about ``total_rows / num_partitions`` compact rows.

The blocks are either refs into the object store or scratch files (:func:`write_blocks`): a fit
writes its compact columns to files so that it holds no per-document memory between its steps,
and each split or map task reads only the columns it needs from its files.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import ray

from curator_stages.io.scratch import read_scratch_table, write_scratch_table
from curator_stages.runtime.worker_memory import return_freed_memory

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

#: Compact rows per reduce partition; bounds the memory of one reduce task.
ROWS_PER_PARTITION = 2_000_000
#: Share of the cluster's object store that one shuffle round's split outputs may fill. The
#: store's pages stay resident, and mapped in the workers that wrote them, once touched: this
#: share is the high-water mark a shuffle adds to a node's memory.
STORE_SHARE_PER_ROUND = 0.0625
#: Each round reads every block again: past this many, letting Ray spill costs less.
MAX_SHUFFLE_ROUNDS = 16


def _cluster_total(resource: str, default: float) -> float:
    """The cluster's total of ``resource`` (``default`` when Ray is not initialised)."""
    try:
        return float(ray.cluster_resources().get(resource, default))
    except Exception:  # pragma: no cover - Ray not initialised
        return default


def choose_num_partitions(total_rows: int, rows_per_partition: int = ROWS_PER_PARTITION) -> int:
    """Enough partitions to keep each reduce bounded and every CPU busy (not more than needed)."""
    cpus = int(_cluster_total("CPU", 1))
    by_size = math.ceil(max(total_rows, 1) / rows_per_partition)
    return max(1, min(1024, max(by_size, min(cpus, math.ceil(total_rows / 10_000) or 1))))


def _block(block: pa.Table | str, columns: Sequence[str] | None) -> pa.Table:
    """A block's table: as given (resolved from the object store), or read from its file."""
    return read_scratch_table(block, columns) if isinstance(block, str) else block


class Written(NamedTuple):
    """Scratch files of compact rows (:func:`write_blocks`), in a stable order."""

    files: list[str]
    rows: int
    nbytes: int  # in memory (Arrow), what a shuffle of every row would put in the object store


def write_blocks(dataset: "ray.data.Dataset", fn: Callable[..., pa.Table],
                 fn_kwargs: dict[str, Any], directory: str) -> Written:
    """Run ``fn(batch, **fn_kwargs)`` (a table of compact columns) over ``dataset``; the Ray Data
    task that makes each table writes it into ``directory``. The files are blocks for
    :func:`partition_reduce` and :func:`map_blocks`: nothing is held in memory between the steps
    of a fit."""
    written = dataset.map_batches(_write_output, batch_format="numpy", batch_size=None,
                                  fn_kwargs={"fn": fn, "fn_kwargs": fn_kwargs,
                                             "directory": directory})
    rows = sorted((str(r["path"]), int(r["rows"]), int(r["nbytes"])) for r in written.iter_rows())
    return Written([r[0] for r in rows], sum(r[1] for r in rows), sum(r[2] for r in rows))


def _write_output(batch: dict[str, np.ndarray], fn: Callable[..., pa.Table],
                  fn_kwargs: dict[str, Any], directory: str) -> dict[str, np.ndarray]:
    table = fn(batch, **fn_kwargs)
    if table.num_rows == 0:
        return {"path": np.array([], dtype=object), "rows": np.array([], dtype=np.int64),
                "nbytes": np.array([], dtype=np.int64)}
    return {"path": np.array([write_scratch_table(table, directory)], dtype=object),
            "rows": np.array([table.num_rows], dtype=np.int64),
            "nbytes": np.array([table.nbytes], dtype=np.int64)}


def shuffle_rounds(total_bytes: int) -> int:
    """Rounds that keep each round's split outputs within :data:`STORE_SHARE_PER_ROUND` of the
    cluster's object store: a shuffle that would overflow the store runs in shares instead of
    spilling, and the number of rounds stays the same when the cluster grows with the data."""
    budget = max(_cluster_total("object_store_memory", 0) * STORE_SHARE_PER_ROUND, 1.0)
    return max(1, min(MAX_SHUFFLE_ROUNDS, math.ceil(total_bytes / budget)))


def _split(num_partitions: int, key_column: str, explode: Callable[..., pa.Table] | None,
           explode_kwargs: dict[str, Any], first_block: int | None,
           columns: Sequence[str] | None, round_of: tuple[int, int], *tables: pa.Table | str):
    # The worker's last task (a checkpoint load, a reduce) may have left pool memory behind:
    # hand it back before this task's own allocations join it.
    return_freed_memory()
    parts: list[list[pa.Table]] = [[] for _ in range(num_partitions)]
    for j, block in enumerate(tables):
        table = _block(block, columns)
        if explode is not None:
            if first_block is not None:
                table = explode(table, block_index=first_block + j, **explode_kwargs)
            else:
                table = explode(table, **explode_kwargs)
        if table.num_rows == 0:
            continue
        keys = table.column(key_column).to_numpy()
        rounds, this_round = round_of
        part = (keys % np.uint64(num_partitions * rounds)).astype(np.int64)
        if rounds > 1:  # this round's partitions only: p * rounds + this_round
            mine = part % rounds == this_round
            table, part = table.filter(pa.array(mine)), part[mine] // rounds
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
    out = fn(pa.concat_tables(non_empty, promote_options="default") if non_empty else None,
             **fn_kwargs)
    del parts, non_empty
    # A reduce's sort temporaries are the largest allocations its worker makes: hand them back
    # now, not when the worker's next checkpoint-loading task starts.
    return_freed_memory()
    return out


def partition_reduce(
    block_refs: list["ray.ObjectRef"] | list[str],
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
    columns: Sequence[str] | None = None,
    rounds: int = 1,
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
    ``block_refs``), so it can number rows exactly without a pass to count them. Blocks given
    as files (:func:`write_blocks`) are read by the split tasks, ``columns`` only. With
    ``rounds`` > 1 (:func:`shuffle_rounds`) the partitions are shuffled a share at a time: each
    round's split tasks read the blocks again and keep its partitions' rows only, and a round
    starts once the last one's reduces are done, so the object store holds one round's split
    outputs. The result lists every round's partitions.
    """
    if not block_refs:
        return []
    if blocks_per_split_task is None:
        blocks_per_split_task = max(1, math.ceil(len(block_refs) / max(4 * num_partitions, 1)))
    split = ray.remote(_split).options(num_returns=num_partitions)
    reduce = ray.remote(_reduce).options(num_returns=reduce_returns)
    results: list[Any] = []
    for this_round in range(rounds):
        split_outputs = []
        for i in range(0, len(block_refs), blocks_per_split_task):
            group = block_refs[i: i + blocks_per_split_task]
            refs = split.remote(num_partitions, key_column, explode, explode_kwargs or {},
                                i if explode_block_index else None, columns,
                                (rounds, this_round), *group)
            split_outputs.append(refs if num_partitions > 1 else [refs])
        reduce_refs = [
            reduce.remote(reduce_fn, reduce_kwargs or {}, *[outs[p] for outs in split_outputs])
            for p in range(num_partitions)
        ]
        del split_outputs
        if gather:
            results.extend(ray.get(reduce_refs))
            continue
        if rounds > 1:  # the round's outputs stay in the store; its split outputs go
            flat = [r for refs in reduce_refs for r in (refs if isinstance(refs, list) else [refs])]
            ray.wait(flat, num_returns=len(flat), fetch_local=False)
        results.extend(reduce_refs)
    return results


def _on_block(fn: Callable[..., pa.Table], block: pa.Table | str,
              columns: Sequence[str] | None, **fn_kwargs: Any) -> pa.Table:
    return fn(_block(block, columns), **fn_kwargs)


def map_blocks(block_refs: list["ray.ObjectRef"] | list[str], fn: Callable[..., pa.Table],
               block_index: bool = False, columns: Sequence[str] | None = None,
               **fn_kwargs: Any) -> list[pa.Table]:
    """Run ``fn(table, **fn_kwargs)`` on every block in a Ray task; gather the (small) results.

    With ``block_index`` fn also gets ``block_index=`` (the block's position in ``block_refs``),
    the same number :func:`partition_reduce` gives its explode. Blocks given as files are read
    in the task, ``columns`` only."""
    remote = ray.remote(_on_block)
    kwargs_ref = {k: (ray.put(v) if isinstance(v, (pa.Array, pa.ChunkedArray, np.ndarray)) else v)
                  for k, v in fn_kwargs.items()}
    return ray.get([remote.remote(fn, ref, columns, **({"block_index": i} if block_index else {}),
                                  **kwargs_ref)
                    for i, ref in enumerate(block_refs)])
