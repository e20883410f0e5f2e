"""Estimated Jaccard of candidate pairs, computed where the signatures are, not on the driver.

Why a join: holding every candidate's signature in one process costs ``num_perm * 4`` bytes a
candidate (51 MiB for 100k candidates at 128 permutations), and the number of candidates grows
with the corpus. Here each candidate's recomputed signature (a scratch file row) is sent once per
pair it belongs to, keyed by the pair's number, through the hash-partitioned shuffle of
:mod:`.shuffle`; a reduce task sees both sides of each of its pairs and returns only
(pair, similarity). The driver keeps the pairs as two rank arrays and their adjacency (3 x 16
bytes a pair), plus one float per pair.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from curator_stages.text.dedup.lsh import runs
from curator_stages.text.dedup.shuffle import (
    choose_num_partitions,
    partition_reduce,
    shuffle_rounds,
)

#: Bytes of signatures one reduce task joins: its memory, whatever the number of pairs.
BYTES_PER_PARTITION = 16 * 2**20
#: Pairs compared at once inside a reduce.
COMPARE_CHUNK = 4096


def _pair_sides(table: pa.Table, *, adjacency: "ray.ObjectRef") -> pa.Table:
    """One row per (pair, candidate) of the candidates in ``table``: the pair's number and the
    candidate's signature."""
    keys, starts, side_pair = ray.get(adjacency)
    ranks = pc.index_in(table.column("id"), value_set=keys).to_numpy(zero_copy_only=False)
    lo = starts[ranks]
    counts = starts[ranks + 1] - lo
    total = int(counts.sum())
    row = np.repeat(np.arange(ranks.size), counts)
    position = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + lo[row]
    return pa.table({"pair": pa.array(side_pair[position], pa.uint64()),
                     "signature": table.column("signature").take(pa.array(row))})


def _pair_similarity(table: pa.Table | None, *, num_perm: int) -> np.ndarray:
    """(pair, estimated Jaccard) of every pair whose two sides reached this partition, as a
    float64 array of shape (k, 2); a pair seen once or more than twice is left out, so the
    driver's count names it."""
    if table is None or table.num_rows == 0:
        return np.zeros((0, 2))
    pair = table.column("pair").to_numpy()
    order = np.argsort(pair, kind="stable")
    pair = pair[order]
    start, length = runs(pair)
    two = start[length == 2]
    first, second = order[two], order[two + 1]
    sig = table.column("signature").combine_chunks().flatten().to_numpy(
        zero_copy_only=False).reshape(-1, num_perm)
    sim = np.empty(two.size)
    for i in range(0, two.size, COMPARE_CHUNK):  # bounded temporaries: no sorted copy of sig
        sim[i:i + COMPARE_CHUNK] = (sig[first[i:i + COMPARE_CHUNK]]
                                    == sig[second[i:i + COMPARE_CHUNK]]).mean(axis=1)
    return np.column_stack([pair[two].astype(np.float64), sim])


def pair_similarity(signature_files: list[str], ca: np.ndarray, cb: np.ndarray,
                    keys: pa.Array, num_perm: int) -> np.ndarray:
    """Estimated Jaccard of pairs ``(ca[i], cb[i])`` (ranks into ``keys``, the candidates' row
    keys) from ``signature_files`` (id, signature), with NaN for a pair whose two signatures
    were not both found once."""
    n = ca.size
    sides = np.concatenate([ca, cb])
    order = np.argsort(sides, kind="stable")
    side_pair = np.concatenate([np.arange(n), np.arange(n)])[order].astype(np.uint64)
    starts = np.searchsorted(sides[order], np.arange(len(keys) + 1))
    adjacency = ray.put((keys, starts, side_pair))
    del sides, order
    row_bytes = 4 * num_perm + 8
    parts = partition_reduce(
        signature_files, "pair", _pair_similarity,
        num_partitions=choose_num_partitions(2 * n, max(1, BYTES_PER_PARTITION // row_bytes)),
        explode=_pair_sides, explode_kwargs={"adjacency": adjacency},
        reduce_kwargs={"num_perm": num_perm}, columns=["id", "signature"],
        rounds=shuffle_rounds(2 * n * row_bytes))
    sim = np.full(n, np.nan)
    for part in parts:
        sim[part[:, 0].astype(np.int64)] = part[:, 1]
    return sim


__all__ = ["pair_similarity"]
