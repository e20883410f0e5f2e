"""LSH banding: choose (bands, rows) for a threshold, hash band slices, and turn buckets into
candidate pairs inside hash partitions, on integer document numbers only (the driver maps the
candidates' numbers to row keys; see :mod:`.fuzzy`)."""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.text.dedup.shuffle import choose_num_partitions, partition_reduce, shuffle_rounds

#: Buckets up to this size give all their pairs; larger ones (boilerplate, exact copies) give a
#: star on the smallest row key plus a chain, so a bucket of m documents costs O(m), not O(m^2).
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


#: A document number is ``block_index << ROW_BITS | row``: exact, known where the row is read
#: (no pass to count rows), and 8 bytes where a row key string is ~100.
ROW_BITS = 32


class Buckets(NamedTuple):
    """What one LSH partition found, in document numbers (see :data:`ROW_BITS`).

    ``pairs`` (a < b, int64, no repeats) are all pairs of the buckets of up to
    :data:`ALL_PAIRS_MAX_BUCKET` documents. Larger buckets come as ``groups`` (group, doc), one
    row per member and one group per distinct member set: their star + chain must follow row-key
    order (the "smallest id" of the star), which only the driver knows, for these documents only.
    """

    pairs: pa.Table
    groups: pa.Table


def _int_table(**columns: np.ndarray) -> pa.Table:
    return pa.table({k: pa.array(v, pa.int64()) for k, v in columns.items()})


def explode_bands(table: pa.Table, block_index: int = 0, exclude: pa.Array | None = None,
                  bands: range | None = None) -> pa.Table:
    """Signature rows of block ``block_index`` -> one (band, key, doc) row per band (of
    ``bands``, default all) of each document with a signature; ``doc`` is the document number.
    Rows whose key is in ``exclude`` (quarantined for a repeated id) are left out, so they take
    part in no bucket."""
    keep = table.column("has_signature").to_numpy().astype(bool, copy=True)
    if exclude is not None and len(exclude):
        keep &= ~pc.is_in(table.column("id"), value_set=exclude).to_numpy(zero_copy_only=False)
    rows = np.nonzero(keep)[0]
    if rows.size == 0:
        return pa.table({"band": pa.array([], pa.int32()), "key": pa.array([], pa.uint64()),
                         "doc": pa.array([], pa.int64())})
    keys_col = table.column("band_keys").combine_chunks()
    width = keys_col.type.list_size
    picked = range(width) if bands is None else bands
    keys = keys_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)[rows]
    keys = keys[:, picked.start:picked.stop]
    docs = (np.int64(block_index) << np.int64(ROW_BITS)) | rows.astype(np.int64)
    return pa.table({
        "band": pa.array(np.tile(np.arange(picked.start, picked.stop, dtype=np.int32), rows.size)),
        "key": pa.array(keys.ravel()),
        "doc": pa.array(np.repeat(docs, len(picked))),
    })


def run_pairs(run_start: np.ndarray, run_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) positions of the candidate pairs of sorted runs: all pairs of a run of up to
    :data:`ALL_PAIRS_MAX_BUCKET` rows; for a larger one a star on its first row plus a chain
    between neighbours, so a run of m rows costs O(m), not O(m^2)."""
    left: list[np.ndarray] = [np.zeros(0, np.int64)]
    right: list[np.ndarray] = [np.zeros(0, np.int64)]
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
        left.append(first)                               # star on the first (smallest) row
        right.append(member)
        chain = member + 1 < np.repeat(starts + lens, per_run)
        left.append(member[chain])                       # chain between neighbours
        right.append(member[chain] + 1)
    return np.concatenate(left).astype(np.int64), np.concatenate(right).astype(np.int64)


def runs(*sorted_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of the runs of equal values over rows sorted by ``sorted_columns``."""
    n = sorted_columns[0].size
    boundary = np.ones(n, dtype=bool)
    if n > 1:
        boundary[1:] = False
        for col in sorted_columns:
            boundary[1:] |= col[1:] != col[:-1]
    start = np.nonzero(boundary)[0]
    return start, np.diff(np.append(start, n))


def bucket_pairs(table: pa.Table | None) -> Buckets:
    """Candidates of one partition's (band, key, doc) rows: integer pairs of small buckets and the
    member sets of large ones (see :class:`Buckets`); no string is sorted or copied."""
    empty = Buckets(_int_table(a=np.zeros(0), b=np.zeros(0)),
                    _int_table(group=np.zeros(0), doc=np.zeros(0)))
    if table is None or table.num_rows < 2:
        return empty
    band = table.column("band").to_numpy()
    key = table.column("key").to_numpy()
    doc = table.column("doc").to_numpy()
    order = np.lexsort((doc, key, band))
    band, key, doc = band[order], key[order], doc[order]
    del order
    start, length = runs(band, key)
    del band, key
    small = (length >= 2) & (length <= ALL_PAIRS_MAX_BUCKET)
    li, ri = run_pairs(start[small], length[small])
    pairs = _int_table(a=doc[li], b=doc[ri]).group_by(["a", "b"]).aggregate([])
    seen: set[bytes] = set()
    members: list[np.ndarray] = []
    for s, m in zip(start[length > ALL_PAIRS_MAX_BUCKET].tolist(),
                    length[length > ALL_PAIRS_MAX_BUCKET].tolist()):
        run = doc[s:s + m]
        signature = run.tobytes()
        if signature not in seen:  # the same cluster, bucketed again in another band
            seen.add(signature)
            members.append(run)
    if not members:
        return Buckets(pairs, empty.groups)
    group = np.repeat(np.arange(len(members), dtype=np.int64), [r.size for r in members])
    return Buckets(pairs, _int_table(group=group, doc=np.concatenate(members)))


def merge_buckets(parts: list[Buckets]) -> Buckets:
    """The partitions' :class:`Buckets` as one (group numbers made distinct across partitions,
    a pair found in several partitions or rounds kept once)."""
    pairs = [p.pairs for p in parts if p.pairs.num_rows]
    groups: list[pa.Table] = []
    offset = 0
    for p in parts:
        if p.groups.num_rows:
            g = p.groups.column("group").to_numpy()
            groups.append(_int_table(group=g + offset, doc=p.groups.column("doc").to_numpy()))
            offset += int(g.max()) + 1
    return Buckets(
        (pa.concat_tables(pairs).group_by(["a", "b"]).aggregate([]) if len(pairs) > 1
         else pairs[0] if pairs else _int_table(a=np.zeros(0), b=np.zeros(0))),
        pa.concat_tables(groups) if groups else _int_table(group=np.zeros(0), doc=np.zeros(0)))


def candidate_docs(buckets: Buckets) -> np.ndarray:
    """Sorted document numbers of every document in a candidate pair or a large bucket."""
    cols = [buckets.pairs.column("a"), buckets.pairs.column("b"), buckets.groups.column("doc")]
    return np.unique(np.concatenate([c.to_numpy() for c in cols]))


def ranked_pairs(buckets: Buckets, docs: np.ndarray, rank_of_doc: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (a < b, no repeats, sorted) as ranks, where ``rank_of_doc[i]`` is the rank
    (row-key order) of document ``docs[i]``. Large buckets get their star on the member with the
    smallest row key and their chain in row-key order, as if the reduce had sorted row keys."""
    def rank(col: pa.ChunkedArray) -> np.ndarray:
        return rank_of_doc[np.searchsorted(docs, col.to_numpy())]

    ra, rb = rank(buckets.pairs.column("a")), rank(buckets.pairs.column("b"))
    lo, hi = [np.minimum(ra, rb)], [np.maximum(ra, rb)]
    if buckets.groups.num_rows:
        group, member = buckets.groups.column("group").to_numpy(), rank(buckets.groups.column("doc"))
        order = np.lexsort((member, group))
        group, member = group[order], member[order]
        start, length = runs(group)
        li, ri = run_pairs(start, length)
        lo.append(member[li])
        hi.append(member[ri])
    a, b = np.concatenate(lo).astype(np.int64), np.concatenate(hi).astype(np.int64)
    n = np.int64(max(docs.size, 1))
    code = np.unique(a * n + b)
    return code // n, code % n


#: Bytes of one exploded (band int32, key uint64, doc int64) LSH row.
LSH_ROW_BYTES = 20
#: Rows per LSH reduce task: its sort holds about 60 bytes a row at once.
ROWS_PER_LSH_PARTITION = 1_000_000


def lsh_buckets(files: list[str], num_docs: int, bands: int,
                exclude: pa.Array | None) -> Buckets:
    """The candidates of every band's buckets, shuffled a round of bands at a time when all
    bands' rows at once would fill more than a share of the object store (:func:`shuffle_rounds`):
    a round's split tasks explode only its bands."""
    per_round = math.ceil(bands / min(bands, shuffle_rounds(num_docs * bands * LSH_ROW_BYTES)))
    columns = ["band_keys", "has_signature"] + (["id"] if exclude is not None else [])
    found = merge_buckets([])
    for first in range(0, bands, per_round):
        picked = range(first, min(bands, first + per_round))
        found = merge_buckets([found, *partition_reduce(
            files, "key", bucket_pairs, explode=explode_bands, columns=columns,
            explode_kwargs={"exclude": exclude, "bands": picked}, explode_block_index=True,
            num_partitions=choose_num_partitions(num_docs * len(picked), ROWS_PER_LSH_PARTITION))])
    return found
