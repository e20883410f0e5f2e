"""LSH works on integer document numbers, yet its candidates follow row-key order (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curator_stages.text.dedup.lsh import (
    ALL_PAIRS_MAX_BUCKET,
    ROW_BITS,
    bucket_pairs,
    candidate_docs,
    explode_bands,
    merge_buckets,
    ranked_pairs,
)


def _signature_rows(keys: np.ndarray, ids: list[str], has: list[bool] | None = None) -> pa.Table:
    n, bands = keys.shape
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "band_keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel().astype(np.uint64)), bands),
        "has_signature": pa.array(has if has is not None else [True] * n),
    })


def test_explode_numbers_rows_by_block_and_row_and_leaves_out_quarantined_and_empty():
    keys = np.arange(12, dtype=np.uint64).reshape(4, 3) + 100
    table = _signature_rows(keys, ["d0", "d1", "d2", "d3"], has=[True, False, True, True])
    out = explode_bands(table, block_index=5, exclude=pa.array(["d3"]))
    assert out.column_names == ["band", "key", "doc"]  # no string travels to the reduce
    first = 5 << ROW_BITS
    assert out.column("doc").to_pylist() == [first] * 3 + [first + 2] * 3
    assert out.column("band").to_pylist() == [0, 1, 2] * 2
    assert out.column("key").to_pylist() == [100, 101, 102, 106, 107, 108]


def test_large_bucket_star_is_on_the_smallest_row_key_not_the_smallest_number():
    """Documents numbered in the reverse of their row-key order: the star of a bucket larger than
    ALL_PAIRS_MAX_BUCKET sits on the smallest row key, and the chain follows row-key order."""
    m = ALL_PAIRS_MAX_BUCKET + 3
    keys = np.arange(m * 2, dtype=np.uint64).reshape(m, 2) + 1000
    keys[:, 0] = 7                                      # one bucket of m in band 0
    keys[:2, 1] = 9                                     # and a pair in band 1
    buckets = bucket_pairs(explode_bands(_signature_rows(keys, [f"k{i:02d}" for i in range(m)])))
    assert buckets.groups.num_rows == m and buckets.pairs.num_rows == 1
    docs = candidate_docs(buckets)
    rank_of_doc = np.arange(docs.size)[::-1].copy()     # doc i has rank m-1-i
    a, b = ranked_pairs(buckets, docs, rank_of_doc)
    pairs = set(zip(a.tolist(), b.tolist()))
    star = {(0, r) for r in range(1, m)}
    chain = {(r, r + 1) for r in range(m - 1)}
    assert pairs == star | chain                        # (m-2, m-1): the band-1 pair, already in
    assert all(x < y for x, y in pairs)


def test_same_large_bucket_in_several_bands_and_partitions_gives_one_set_of_pairs():
    m = ALL_PAIRS_MAX_BUCKET + 1
    keys = np.full((m, 3), 5, dtype=np.uint64)          # the same bucket in all three bands
    buckets = bucket_pairs(explode_bands(_signature_rows(keys, [f"k{i}" for i in range(m)])))
    assert buckets.groups.num_rows == m                 # one member set, not three
    merged = merge_buckets([buckets, buckets])          # as if two partitions found it
    assert set(merged.groups.column("group").to_pylist()) == {0, 1}
    docs = candidate_docs(merged)
    a, b = ranked_pairs(merged, docs, np.arange(docs.size))
    assert a.size == (m - 1) + (m - 2)                  # star + chain, no repeats


def test_bands_explode_in_rounds_to_the_same_candidates_as_all_at_once():
    """The fit may shuffle a round of bands at a time (shuffle_rounds): a band range explodes
    only its bands, numbered as in the whole, and the rounds' merged buckets give the same
    pairs as one round, each pair once."""
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 4, size=(40, 6)).astype(np.uint64)  # many collisions in every band
    table = _signature_rows(keys, [f"k{i:02d}" for i in range(40)])
    part = explode_bands(table, bands=range(2, 4))
    assert set(part.column("band").to_pylist()) == {2, 3}
    assert part.column("key").to_pylist() == keys[:, 2:4].ravel().tolist()
    whole = bucket_pairs(explode_bands(table))
    rounds = merge_buckets([bucket_pairs(explode_bands(table, bands=range(b, min(6, b + 2))))
                            for b in range(0, 6, 2)])
    pairs = set(zip(rounds.pairs.column("a").to_pylist(), rounds.pairs.column("b").to_pylist()))
    assert len(pairs) == rounds.pairs.num_rows            # a pair found in two rounds, kept once
    docs = candidate_docs(whole)
    assert np.array_equal(candidate_docs(rounds), docs)
    expected = ranked_pairs(whole, docs, np.arange(docs.size))
    got = ranked_pairs(rounds, docs, np.arange(docs.size))
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
