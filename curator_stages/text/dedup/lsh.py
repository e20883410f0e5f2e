"""LSH banding: choose (bands, rows) for a threshold, hash band slices, and turn buckets into
candidate pairs inside hash partitions."""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Buckets up to this size give all their pairs; larger ones (boilerplate, exact copies) give a
#: star on the smallest id plus a chain, so a bucket of m documents costs O(m), not O(m^2).
ALL_PAIRS_MAX_BUCKET = 8


def _collision_probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - s ** rows) ** bands


@lru_cache(maxsize=256)
def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted error areas.

    False positive area: integral over s in [0, threshold] of P(candidate | Jaccard s);
    false negative area: integral over [threshold, 1] of 1 - P(candidate | s). Trapezoid rule.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"FuzzyDuplicateRemover: threshold must be in (0, 1), got {threshold}")
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(_collision_probability(lo, bands, rows), lo)
            fn = np.trapezoid(1.0 - _collision_probability(hi, bands, rows), hi)
            err = false_positive_weight * fp + false_negative_weight * fn
            if best is None or err < best[0] - 1e-12:
                best = (err, bands, rows)
    assert best is not None
    return best[1], best[2]


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents x bands) uint64 bucket keys: a mix of each band's ``rows`` signature values.

    The band index is mixed in, so equal keys in different bands never meet in one bucket.
    """
    n = signatures.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(n, np.uint64(0x9E3779B97F4A7C15) * np.uint64(band + 1), dtype=np.uint64)
            for col in signatures[:, band * rows:(band + 1) * rows].T:
                h ^= col.astype(np.uint64)
                h *= np.uint64(0x100000001B3)
                h ^= h >> np.uint64(29)
            keys[:, band] = h
    return keys


def explode_bands(table: pa.Table) -> pa.Table:
    """Signature rows -> one (band, key, id) row per band of each document with a signature."""
    table = table.filter(table.column("has_signature"))
    keys_col = table.column("band_keys").combine_chunks()
    n = table.num_rows
    if n == 0:
        return pa.table({"band": pa.array([], pa.int32()), "key": pa.array([], pa.uint64()),
                         "id": pa.array([], pa.string())})
    bands = keys_col.type.list_size
    keys = keys_col.values.to_numpy(zero_copy_only=False)
    return pa.table({
        "band": pa.array(np.tile(np.arange(bands, dtype=np.int32), n)),
        "key": pa.array(keys),
        "id": table.column("id").take(pa.array(np.repeat(np.arange(n), bands))),
    })


def bucket_pairs(table: pa.Table | None) -> pa.Table:
    """Candidate pairs (a < b) from the buckets of one partition, without repeats."""
    empty = pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string())})
    if table is None or table.num_rows < 2:
        return empty
    order = pc.sort_indices(table, sort_keys=[("band", "ascending"), ("key", "ascending"),
                                              ("id", "ascending")])
    t = table.take(order)
    band = t.column("band").to_numpy()
    key = t.column("key").to_numpy()
    boundary = np.ones(t.num_rows, dtype=bool)
    boundary[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    run_start = np.nonzero(boundary)[0]
    run_len = np.diff(np.append(run_start, t.num_rows))
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    for m in range(2, ALL_PAIRS_MAX_BUCKET + 1):
        s = run_start[run_len == m]
        if s.size:
            for i, j in combinations(range(m), 2):
                left.append(s + i)
                right.append(s + j)
    big = run_len > ALL_PAIRS_MAX_BUCKET
    if big.any():
        starts, lens = run_start[big], run_len[big]
        per_run = lens - 1
        first = np.repeat(starts, per_run)
        within = np.arange(int(per_run.sum())) - np.repeat(np.cumsum(per_run) - per_run, per_run)
        member = first + within + 1                      # s+1 .. s+m-1 for each run
        left.append(first)                               # star on the smallest id
        right.append(member)
        chain = member + 1 < np.repeat(starts + lens, per_run)
        left.append(member[chain])                       # chain between neighbours
        right.append(member[chain] + 1)
    if not left:
        return empty
    li, ri = np.concatenate(left), np.concatenate(right)
    ids = t.column("id")
    pairs = pa.table({"a": ids.take(pa.array(li)), "b": ids.take(pa.array(ri))})
    return pairs.group_by(["a", "b"]).aggregate([])
