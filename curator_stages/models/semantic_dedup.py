"""Semantic deduplication (SemDeDup): documents that *mean* the same, by embedding similarity.

Plan (why it scales, and where it is exact):

1. Every task becomes a compact table (id hash, row key, unit-length embedding); texts never
   leave the workers, and the worker writes the table to a scratch file
   (:mod:`curator_stages.io.scratch`), so the fit holds no embeddings between its steps.
   Documents are named by row key (id + source location, see
   :mod:`curator_stages.text.dedup.rows`), so two records sharing an id are never removed
   together; a record whose id an earlier record has goes to quarantine, as in the other dedups.
2. k-means (faiss, spherical) is trained on a deterministic sample: rows whose row-key hash
   falls under a fraction, sorted by key, so the clusters do not depend on block order.
   ``n_clusters`` defaults to one per ~``cluster_size`` documents.
3. Each row goes to its ``assignments`` (default 3) nearest centroids inside the split tasks of
   a hash-partitioned reduce (:func:`~curator_stages.text.dedup.shuffle.partition_reduce`), so
   rows of one cluster meet in one reduce task, and two similar rows that k-means put on either
   side of a boundary still meet in a cluster both are near.
4. Within each cluster, every pair with cosine similarity >= ``threshold`` is found block by
   block (``block_size`` rows against ``block_size`` rows at a time): memory per reduce is
   O(block_size^2 + cluster rows x dim + the cluster's similar pairs), never an N x N matrix.
5. The driver applies the keep rule to all pairs (a pair found in two clusters counts once), in
   row-key order: a row is dropped when it is similar to a row *kept* before it; so the smallest
   key of each group is kept, and the answer does not depend on how the data was split. On the
   pairs found it equals an exhaustive comparison.

What it can still miss: a similar pair whose rows share none of their ``assignments`` nearest
clusters. ``benchmarks/BENCHMARKS.md`` has recall against an exhaustive comparison by threshold;
``assignments`` m makes clusters about m times larger: about m^2 times the pairs compared.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curator_stages.io.scratch import scratch_directory
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet
from curator_stages.text.dedup.rows import duplicate_ids_local, find_duplicate_ids, key_table
from curator_stages.text.dedup.shuffle import (
    choose_num_partitions,
    map_blocks,
    partition_reduce,
    shuffle_rounds,
    write_blocks,
)

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

#: Drop reason recorded by the filter that :class:`SemanticDuplicateRemover` returns.
SEMANTIC_DUPLICATE = "semantic_duplicate"

#: Training rows per centroid for k-means (faiss warns below 39), and the cap on the sample.
TRAIN_ROWS_PER_CLUSTER = 64
MAX_TRAIN_ROWS = 256_000
#: Nearest clusters each document is compared in: pairs split by a cluster boundary are found
#: in the cluster both sides share (see ``benchmarks/BENCHMARKS.md``, semantic dedup recall).
DEFAULT_ASSIGNMENTS = 3


def _unit_rows(column: pa.ChunkedArray | pa.Array, stage_name: str, field: str) -> np.ndarray:
    """(rows, dim) float32 with every row scaled to length 1 (cosine = dot product)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(arr.type) and not pa.types.is_list(arr.type):
        raise TypeError(f"stage {stage_name!r}: column {field!r} must hold embedding vectors "
                        f"(a list of floats per row), got {arr.type}; put an EmbeddingStage "
                        "before this stage or set embedding_field=")
    if arr.null_count:
        raise ValueError(f"stage {stage_name!r}: {arr.null_count} row(s) have no {field!r}; "
                         "every document needs an embedding (run EmbeddingStage on all of them)")
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    vectors = flat.reshape(len(arr), -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _compact(task: DocumentBatch, embedding_field: str, id_field: str,
             stage_name: str) -> pa.Table:
    """(ih, key, sample, emb) of one task: what the fit needs of each document."""
    table = task.to_pyarrow()
    if table.num_rows == 0:
        return pa.table({"ih": pa.array([], pa.uint64()), "key": pa.array([], pa.string()),
                         "sample": pa.array([], pa.uint64()),
                         "emb": pa.array([], pa.list_(pa.float32()))})
    if embedding_field not in table.column_names:
        raise KeyError(f"stage {stage_name!r}: documents lack the embedding field "
                       f"{embedding_field!r} (columns: {table.column_names}); put an "
                       "EmbeddingStage before this stage or set embedding_field=")
    vectors = _unit_rows(table.column(embedding_field), stage_name, embedding_field)
    keys = key_table(table, id_field, stage_name)
    digest = xxhash.xxh3_64_intdigest
    sample = np.fromiter((digest(k.encode("utf-8")) for k in keys.column("key").to_pylist()),
                         dtype=np.uint64, count=table.num_rows)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return pa.table({"ih": keys.column("ih"), "key": keys.column("key"),
                     "sample": pa.array(sample), "emb": emb})


def _compact_batch(batch: dict[str, np.ndarray], **kwargs: Any) -> pa.Table:
    tables = [_compact(task, **kwargs) for task in batch["item"]]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(tables) if tables else pa.table({})


def _sample_rows(table: pa.Table, cutoff: int) -> pa.Table:
    """Rows whose key hash is below ``cutoff``: the same sample whatever the block layout."""
    if table.num_rows == 0:
        return table.select(["key", "emb"])
    keep = pc.less(table.column("sample"), pa.scalar(cutoff, pa.uint64()))
    return table.filter(keep).select(["key", "emb"])


def train_centroids(sample: pa.Table, n_clusters: int, iterations: int, seed: int,
                    stage_name: str) -> np.ndarray:
    """Unit-length centroids from a sample table (key, emb), trained in key order."""
    if sample.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    sample = sample.take(pc.sort_indices(sample, sort_keys=[("key", "ascending")]))
    vectors = np.ascontiguousarray(_unit_rows(sample.column("emb"), stage_name, "emb"))
    k = max(1, min(n_clusters, len(vectors)))
    if k == 1:
        centroid = vectors.mean(axis=0, keepdims=True)
        return centroid / max(float(np.linalg.norm(centroid)), 1e-12)
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(f"stage {stage_name!r}: semantic dedup clusters with faiss, which is "
                          f"not installed ({exc}); pip install 'curator-stages[models]'") from exc
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, spherical=True,
                          verbose=False)
    kmeans.train(vectors)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def assign_clusters(vectors: np.ndarray, centroids: np.ndarray, assignments: int,
                    chunk: int = 65_536) -> np.ndarray:
    """(rows, m) indices of each row's ``m = min(assignments, clusters)`` nearest centroids."""
    m = max(1, min(assignments, len(centroids)))
    out = np.zeros((len(vectors), m), dtype=np.int64)
    if len(centroids) > 1:
        for start in range(0, len(vectors), chunk):
            sims = vectors[start: start + chunk] @ centroids.T
            out[start: start + chunk] = np.argsort(-sims, axis=1, kind="stable")[:, :m]
    return out


def _without(table: pa.Table, exclude: pa.Array | None) -> pa.Table:
    """``table`` less the rows whose key is in ``exclude`` (quarantined records)."""
    if exclude is not None and len(exclude) and table.num_rows:
        table = table.filter(pc.invert(pc.is_in(table.column("key"), value_set=exclude)))
    return table


def _assign(table: pa.Table, centroids: np.ndarray, exclude: pa.Array | None,
            assignments: int = 1) -> pa.Table:
    """(cid, key, emb), one row per (row, one of its nearest centroids); quarantined rows out."""
    table = _without(table, exclude)
    if table.num_rows == 0:
        return pa.table({"cid": pa.array([], pa.uint64()), "key": table.column("key"),
                         "emb": table.column("emb")})
    vectors = _unit_rows(table.column("emb"), "semantic_dedup", "emb")
    cids = assign_clusters(vectors, centroids, assignments)
    rows = pa.array(np.repeat(np.arange(table.num_rows), cids.shape[1]))
    return pa.table({"cid": pa.array(cids.reshape(-1).astype(np.uint64)),
                     "key": table.column("key").take(rows), "emb": table.column("emb").take(rows)})


def similar_pairs(vectors: np.ndarray, threshold: float,
                  block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(later, earlier) row indices of every pair with cosine >= ``threshold``, earlier < later.

    Memory: one ``block_size`` x ``block_size`` similarity block at a time, plus the pairs.
    """
    later: list[np.ndarray] = []
    earlier: list[np.ndarray] = []
    for start in range(0, len(vectors), block_size):
        block = vectors[start: start + block_size]
        for k0 in range(0, start + len(block), block_size):
            sims = block @ vectors[k0: k0 + block_size].T
            if k0 == start:
                sims = np.tril(sims, k=-1)  # within the block: earlier rows only, no self pairs
            rows, cols = np.nonzero(sims >= threshold)
            later.append(start + rows)
            earlier.append(k0 + cols)
    if not later:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(later), np.concatenate(earlier)


def greedy_removals(later: list, earlier: list) -> set:
    """Rows to drop given similar pairs: a row goes when it is similar to an earlier *kept* row.

    The pairs may repeat (a pair found in two clusters); sorted by (later, earlier), every
    earlier row's fate is settled before a later row is decided, so the smallest row of each
    group is kept and the answer is the one an exhaustive comparison gives on the same pairs.
    """
    removed: set = set()
    for j, i in sorted(zip(later, earlier)):
        if j not in removed and i not in removed:
            removed.add(j)
    return removed


def greedy_duplicates(vectors: np.ndarray, threshold: float, block_size: int) -> np.ndarray:
    """Mask of rows to drop: similar (>= threshold) to an earlier row that is kept.

    ``vectors`` are unit rows in keep-priority order (the exhaustive comparison of one cluster).
    """
    later, earlier = similar_pairs(vectors, threshold, block_size)
    drop = np.zeros(len(vectors), dtype=bool)
    drop[sorted(greedy_removals(later.tolist(), earlier.tolist()))] = True
    return drop


def cluster_pairs(keys: pa.Array | pa.ChunkedArray, vectors: np.ndarray, rows: np.ndarray,
                  cids: np.ndarray, threshold: float, block_size: int) -> pa.Table:
    """(later, earlier) keys of the similar pairs within each cluster, each pair once.

    Row ``rows[i]`` of ``keys``/``vectors`` is a member of cluster ``cids[i]`` (a row may be in
    several). Members are compared in key order, one cluster at a time: memory is one cluster's
    vectors and one similarity block, never a copy of every membership's vector.
    """
    empty = pa.table({"later": pa.array([], pa.string()), "earlier": pa.array([], pa.string())})
    if len(rows) < 2:
        return empty
    rank = np.empty(len(keys), dtype=np.int64)
    rank[pc.sort_indices(keys).to_numpy()] = np.arange(len(keys))
    order = np.lexsort((rank[rows], cids))
    rows, cids = rows[order], cids[order]
    bounds = np.flatnonzero(np.diff(cids)) + 1
    later, earlier = [], []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(cids)]):
        if hi - lo > 1:
            members = rows[lo:hi]
            j, i = similar_pairs(vectors[members], threshold, block_size)
            later.append(members[j])
            earlier.append(members[i])
    if not later or not sum(len(x) for x in later):
        return empty
    pairs = pa.table({"later": keys.take(pa.array(np.concatenate(later))),
                      "earlier": keys.take(pa.array(np.concatenate(earlier)))})
    return pairs.group_by(["later", "earlier"]).aggregate([])  # a pair two clusters share: once


def _reduce_clusters(table: pa.Table | None, threshold: float, block_size: int) -> pa.Table:
    """Within one partition of (cid, key, emb) memberships: :func:`cluster_pairs`."""
    if table is None or table.num_rows < 2:
        return cluster_pairs(pa.array([], pa.string()), np.zeros((0, 0), np.float32),
                             np.zeros(0, np.int64), np.zeros(0, np.uint64), threshold, block_size)
    vectors = _unit_rows(table.column("emb"), "semantic_dedup", "emb")
    return cluster_pairs(table.column("key"), vectors, np.arange(table.num_rows),
                         table.column("cid").to_numpy(), threshold, block_size)


def _removed_keys(pair_tables: list[pa.Table]) -> IdSet:
    pairs = [t for t in pair_tables if t.num_rows]
    if not pairs:
        return IdSet()
    table = pa.concat_tables(pairs)
    removed = greedy_removals(table.column("later").to_pylist(),
                              table.column("earlier").to_pylist())
    return IdSet(pa.array(sorted(removed), pa.string()))


class SemanticDuplicateRemover(GlobalStage):
    """Removes documents whose embedding is within cosine ``threshold`` of a kept document's.

    Needs an ``embedding_field`` column (an :class:`~curator_stages.models.EmbeddingStage`
    before it). ``threshold`` (default 0.86, chosen on the paraphrase corpus in
    ``tests/paraphrase_corpus.py``: see the stage's tests), ``n_clusters`` (default: one per
    ``cluster_size`` documents; one while that is no more than ``assignments``), ``iterations``
    and ``seed`` of k-means, ``assignments`` (nearest clusters each document is compared in; 1
    misses pairs split by a boundary), ``block_size`` (rows per similarity block; bounds memory).
    Drops are recorded as ``dropped.semantic_duplicate``; records whose id an earlier record has
    go to quarantine.
    """

    def __init__(self, embedding_field: str = "embedding", id_field: str = "id",
                 threshold: float = 0.86, n_clusters: int | None = None, cluster_size: int = 1000,
                 iterations: int = 20, seed: int = 42, block_size: int = 2048,
                 assignments: int = DEFAULT_ASSIGNMENTS, text_field: str = "text",
                 name: str = "", keep_dropped: bool = False):
        label = name or "semantic_duplicate_remover"
        if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"stage {label!r}: threshold must be a cosine similarity in (0, 1], "
                             f"got {threshold!r}")
        for field, value in (("cluster_size", cluster_size), ("iterations", iterations),
                             ("block_size", block_size), ("assignments", assignments)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"stage {label!r}: {field} must be an integer >= 1, got {value!r}")
        if n_clusters is not None and (isinstance(n_clusters, bool)
                                       or not isinstance(n_clusters, int) or n_clusters < 1):
            raise ValueError(f"stage {label!r}: n_clusters must be an integer >= 1 or None "
                             f"(chosen from the corpus size), got {n_clusters!r}")
        self.embedding_field = embedding_field
        self.id_field = id_field
        self.threshold = float(threshold)
        self.n_clusters = n_clusters
        self.cluster_size = cluster_size
        self.iterations = iterations
        self.seed = seed
        self.block_size = block_size
        self.assignments = assignments
        self.text_field = text_field
        self.name = name
        #: Send the removed documents to the writer's dropped output (``write_dropped``).
        self.keep_dropped = keep_dropped

    def params(self) -> dict[str, Any]:
        params = ProcessingStage.params(self)
        params.pop("block_size", None)  # memory, not the answer
        return params

    def clusters_for(self, total: int) -> int:
        """``n_clusters``, or one cluster per ``cluster_size`` documents; one when that makes no
        more clusters than ``assignments`` (every document would be in each: the same pairs,
        compared that many times over)."""
        if self.n_clusters is not None:
            return self.n_clusters
        k = math.ceil(total / self.cluster_size)
        return k if k > self.assignments else 1

    def _sample_cutoff(self, total: int, k: int) -> int:
        wanted = min(total, max(k * TRAIN_ROWS_PER_CLUSTER, 10_000), MAX_TRAIN_ROWS)
        fraction = 1.0 if total <= 0 else min(1.0, wanted / total)
        return int(min(fraction * 2.0**64, 2**64 - 1))

    def _filter(self, remove: IdSet, quarantine: dict[str, str]) -> ProcessingStage:
        return DuplicateIdFilter(remove, SEMANTIC_DUPLICATE, id_field=self.id_field,
                                 quarantine=quarantine, text_field=self.text_field,
                                 name=self.stage_name, keep_dropped=self.keep_dropped)

    def _kwargs(self) -> dict[str, Any]:
        return {"embedding_field": self.embedding_field, "id_field": self.id_field,
                "stage_name": self.stage_name}

    # ------------------------------------------------------------------ Ray fit
    def find_duplicates(self, dataset: "ray.data.Dataset") -> tuple[IdSet, dict[str, str]]:
        """(row keys to remove, {row key: quarantine reason} for rows with a duplicate id)."""
        with scratch_directory(self.stage_name) as scratch:
            files, total, nbytes = write_blocks(dataset, _compact_batch, self._kwargs(), scratch)
            if total == 0:
                return IdSet(), {}
            quarantine = find_duplicate_ids(files, self.stage_name, total,
                                            rounds=shuffle_rounds(nbytes))
            exclude = pa.array(sorted(quarantine), pa.string()) if quarantine else None
            k = self.clusters_for(total)
            samples = map_blocks(files, _sample_rows, columns=["key", "sample", "emb"],
                                 cutoff=self._sample_cutoff(total, k))
            sample = pa.concat_tables([s for s in samples if s.num_rows] or samples[:1])
            centroids = train_centroids(sample, k, self.iterations, self.seed, self.stage_name)
            copies = min(self.assignments, k)
            outs = partition_reduce(
                files, "cid", _reduce_clusters, explode=_assign, columns=["key", "emb"],
                explode_kwargs={"centroids": centroids, "exclude": exclude,
                                "assignments": self.assignments},
                reduce_kwargs={"threshold": self.threshold, "block_size": self.block_size},
                num_partitions=choose_num_partitions(total * copies),
                rounds=shuffle_rounds(nbytes * copies))
        return _removed_keys(outs), quarantine

    def fit(self, dataset: "ray.data.Dataset") -> ProcessingStage:
        remove, quarantine = self.find_duplicates(dataset)
        return self._filter(remove.in_object_store(), quarantine)  # workers fetch their buckets

    # ------------------------------------------------------------------ in-process fit
    def map_local(self, task: DocumentBatch) -> pa.Table:
        return _compact(task, **self._kwargs())

    def reduce_local(self, parts: list[pa.Table]) -> ProcessingStage:
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return self._filter(IdSet(), {})
        compact = pa.concat_tables(parts)
        quarantine = duplicate_ids_local(compact, self.stage_name)
        exclude = pa.array(sorted(quarantine), pa.string()) if quarantine else None
        k = self.clusters_for(compact.num_rows)
        sample = _sample_rows(compact, self._sample_cutoff(compact.num_rows, k))
        centroids = train_centroids(sample, k, self.iterations, self.seed, self.stage_name)
        compact = _without(compact, exclude)
        vectors = _unit_rows(compact.column("emb"), self.stage_name, "emb")
        cids = assign_clusters(vectors, centroids, self.assignments)  # (rows, m)
        pairs = cluster_pairs(compact.column("key"), vectors,
                              np.repeat(np.arange(len(vectors)), cids.shape[1]),
                              cids.reshape(-1), self.threshold, self.block_size)
        return self._filter(_removed_keys([pairs]), quarantine)
