"""Fuzzy (near-duplicate) deduplication: MinHash + LSH + verification + connected components.

Plan, and why it scales with the number of documents rather than with their text:
1. ``map_batches`` over the tasks computes per document a MinHash signature (``num_perm``
   uint32) and its LSH band keys; only (row key, band keys) rows are kept (~200 bytes a
   document), not the signatures, and the worker writes them to a scratch file
   (:mod:`curator_stages.io.scratch`): the fit holds no per-document memory between its steps.
2. A hash-partitioned reduce (:mod:`.shuffle`), in rounds of as many bands as a share of the
   object store holds (:func:`.lsh.lsh_buckets`), explodes rows into (band int32, key uint64,
   doc int64) inside the split tasks, where ``doc`` is a document number (block index and row,
   :data:`.lsh.ROW_BITS`), never a row key string: ~20 bytes per band instead of ~110, so a
   reduce worker stays near its base memory. Each partition sorts its buckets and returns integer
   pairs of small buckets and the member sets of large ones. Their number follows the number of
   duplicates, not the corpus size.
3. The driver fetches the row keys of the candidate documents only, by number, and ranks them
   by row key; from then on a document is its rank, so large buckets get their star on the
   smallest row key and components keep the smallest row key.
   Verification of candidates:
   - ``"signature"`` (default): keep pairs whose estimated Jaccard (share of equal signature
     positions) is >= threshold. A second streaming read of the input recomputes the signatures
     of the candidate documents only, into scratch files, and a shuffle keyed by pair number
     compares each pair in a reduce task (:mod:`.pair_similarity`): no signature reaches the
     driver, and no signature of a non-candidate is ever held.
   - ``"jaccard"``: reread the texts of candidate documents only and compute the exact Jaccard
     of their shingle-hash sets. Exact, but holds candidate documents' shingles on the driver.
   - ``"none"``: every LSH candidate is a duplicate (fastest, most false positives).
4. Connected components (scipy) over verified pairs; every member of a component except the
   smallest row key is removed, recorded as ``dropped.fuzzy_duplicate``.

Documents are named by row key (id + source location, unique by construction; see :mod:`.rows`)
wherever the plan above says "id": two records sharing an id are two documents, sorted by id
and then by location. Before step 2 a reduce by id hash finds ids that several rows share: all
but the first go to quarantine and are left out of the LSH buckets, so they take no part in any
pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from curator_stages.io.scratch import scratch_directory
from curator_stages.runtime.worker_memory import return_freed_memory
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.text.dedup.components import duplicate_components, ids_to_remove
from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet
from curator_stages.text.dedup.pair_similarity import pair_similarity
from curator_stages.text.dedup.rows import document_tables, find_duplicate_ids, key_table, row_keys
from curator_stages.text.dedup.lsh import (
    ROW_BITS,
    band_keys,
    bucket_pairs,
    candidate_docs,
    lsh_buckets,
    optimal_bands,
    ranked_pairs,
)
from curator_stages.text.dedup.minhash import (
    minhash_signatures,
    normalize_for_shingles,
    permutations,
    shingle_hashes,
)
from curator_stages.text.dedup.shuffle import map_blocks, shuffle_rounds, write_blocks

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

#: Drop reason recorded by the filter that :class:`FuzzyDuplicateRemover` returns.
FUZZY_DUPLICATE = "fuzzy_duplicate"
Verify = Literal["signature", "jaccard", "none"]


@dataclass
class FuzzyDedupResult:
    """What a fuzzy fit found: for inspection, tests and reports (``fit`` keeps only ``remove``)."""

    bands: int
    rows: int
    num_documents: int
    candidate_pairs: int
    pairs: pa.Table          # verified pairs: a, b (a < b), similarity
    ids: pa.Array            # row keys that are in at least one verified pair (sorted)
    labels: np.ndarray       # component label of each of ``ids``
    remove: pa.Array         # row keys to remove: all but the smallest of each component
    #: {row key: reason} of rows whose id an earlier row has (quarantined, in no pair)
    quarantine: dict | None = None
    #: wall seconds per step of the fit (signatures, duplicate_ids, lsh, verify, components)
    timings: dict[str, float] = field(default_factory=dict)

    def components(self) -> list[list[str]]:
        """Duplicate clusters (size >= 2) of row keys, each sorted (by id, then location).

        A row key is the id alone for documents without source columns; see :mod:`.rows`."""
        out: dict[int, list[str]] = {}
        for doc_id, label in zip(self.ids.to_pylist(), self.labels.tolist()):
            out.setdefault(label, []).append(doc_id)
        return sorted(out.values())


#: Characters shingled at once: the token and n-gram arrays cost ~50 bytes per character.
MAX_CHARS_PER_CHUNK = 250_000


def _text_chunks(texts: pa.Array | pa.ChunkedArray, max_chars: int) -> Iterator[list[str]]:
    """The normalised texts in consecutive slices of at most ``max_chars`` (UTF-8 bytes, so at
    most that many characters; or one long text): a task holds one slice's Python strings, not
    its whole table's (two copies of every text, ~3.5 bytes per character)."""
    sizes = pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False).tolist()
    start = size = 0
    for i, n in enumerate([*sizes, max_chars + 1]):  # the sentinel closes the last slice
        if i > start and size + n > max_chars:
            yield [normalize_for_shingles(t) for t in texts.slice(start, i - start).to_pylist()]
            start, size = i, 0
        size += n


def _signature_batch(batch: dict[str, np.ndarray], *, text_field: str, id_field: str,
                     ngram_size: int, word_ngrams: bool, a: np.ndarray, b: np.ndarray,
                     bands: int, rows: int, stage_name: str) -> pa.Table:
    ids_parts, ih_parts, keys, has = [], [], [], []
    for table in document_tables(batch["item"], text_field, stage_name):
        row = key_table(table, id_field, stage_name)
        ids_parts.append(row.column("key"))
        ih_parts.append(row.column("ih"))
        for chunk in _text_chunks(table.column(text_field), MAX_CHARS_PER_CHUNK):
            hashes, counts = shingle_hashes(chunk, ngram_size, word_ngrams)
            keys.append(band_keys(minhash_signatures(hashes, counts, a, b), bands, rows))
            has.append(counts > 0)
    if not keys:
        key_all = np.zeros((0, bands), np.uint64)
        has_all = np.zeros(0, bool)
        ids = pa.chunked_array([], pa.string())
        ih = pa.chunked_array([], pa.uint64())
    else:
        key_all, has_all = np.concatenate(keys), np.concatenate(has)
        ids = pa.chunked_array([c for col in ids_parts for c in col.chunks], pa.string())
        ih = pa.chunked_array([c for col in ih_parts for c in col.chunks], pa.uint64())
    # The signatures themselves are not kept: verification recomputes those of the candidate
    # documents only (:func:`_candidate_signatures_batch`), so what the fit holds for every
    # document is its row key and band keys (~150 bytes, not num_perm * 4 more).
    return pa.table({
        "id": ids,  # the row key (named "id" for the LSH buckets and pair tables)
        "ih": ih,
        "band_keys": pa.FixedSizeListArray.from_arrays(pa.array(key_all.ravel()), bands),
        "has_signature": pa.array(has_all),
    })


def _select_rows(table: pa.Table, block_index: int, docs: np.ndarray) -> pa.Table:
    """(doc, id) of the documents of ``docs`` (sorted numbers) in this block."""
    first = np.int64(block_index) << np.int64(ROW_BITS)
    lo, hi = np.searchsorted(docs, [first, first + (np.int64(1) << np.int64(ROW_BITS))])
    wanted = docs[lo:hi]
    rows = pa.array(wanted - first)
    return pa.table({"doc": pa.array(wanted, pa.int64()), "id": table.column("id").take(rows)})


def _candidate_rows(files: list[str], docs: np.ndarray) -> pa.Table:
    """:func:`_select_rows` over every block, sorted by row key (row i has rank i)."""
    if docs.size == 0:
        fields = {"doc": pa.array([], pa.int64()), "id": pa.array([], pa.string())}
        return pa.table(fields)
    got = pa.concat_tables(map_blocks(files, _select_rows, block_index=True, columns=["id"],
                                      docs=docs))
    return got.take(pc.sort_indices(got, sort_keys=[("id", "ascending")]))


def _wanted_texts(batch: dict[str, np.ndarray], text_field: str, id_field: str,
                  wanted: IdSet, stage_name: str) -> Iterator[tuple[pa.Array, pa.ChunkedArray]]:
    """(row keys, texts) of the documents of a batch whose row key is in ``wanted``
    (the candidates): a verification pass reads the input again but shingles only these.

    ``wanted`` is bucketed by source file like a removal set, so a task fetches the candidates
    of its own files only, as 16-byte digests, however many candidates the corpus has."""
    for table in document_tables(batch["item"], text_field, stage_name):
        keys = row_keys(table, id_field, stage_name)
        mask = pa.array(wanted.contains(keys))
        sub = table.filter(mask)
        if sub.num_rows:
            picked = keys.filter(mask)
            yield (picked.combine_chunks() if isinstance(picked, pa.ChunkedArray) else picked,
                   sub.column(text_field))


def _candidate_signatures_batch(batch: dict[str, np.ndarray], *, text_field: str,
                                id_field: str, ngram_size: int, word_ngrams: bool,
                                a: np.ndarray, b: np.ndarray, wanted: IdSet,
                                stage_name: str) -> pa.Table:
    """(id, signature) of the documents whose row key is in ``wanted`` (the candidates)."""
    out_ids, out_sigs = [], []
    for keys, texts in _wanted_texts(batch, text_field, id_field, wanted, stage_name):
        for chunk in _text_chunks(texts, MAX_CHARS_PER_CHUNK):
            hashes, counts = shingle_hashes(chunk, ngram_size, word_ngrams)
            out_sigs.append(minhash_signatures(hashes, counts, a, b))
        out_ids.append(keys)
    sig = np.concatenate(out_sigs) if out_sigs else np.zeros((0, a.size), np.uint32)
    ids = pa.chunked_array(out_ids, pa.string())
    return pa.table({"id": ids, "signature": pa.FixedSizeListArray.from_arrays(
        pa.array(sig.ravel()), a.size)})


def _shingle_sets_batch(batch: dict[str, np.ndarray], *, text_field: str, id_field: str,
                        ngram_size: int, word_ngrams: bool, wanted: IdSet,
                        stage_name: str) -> pa.Table:
    out_ids: list[str] = []
    out_sets: list[np.ndarray] = []
    for keys, texts in _wanted_texts(batch, text_field, id_field, wanted, stage_name):
        out_ids += keys.to_pylist()
        for chunk in _text_chunks(texts, MAX_CHARS_PER_CHUNK):
            hashes, counts = shingle_hashes(chunk, ngram_size, word_ngrams)
            ends = np.cumsum(counts)
            out_sets += [np.unique(hashes[e - c:e]) for e, c in zip(ends, counts)]
    return pa.table({"id": pa.array(out_ids, pa.string()),
                     "shingles": pa.array(out_sets, pa.list_(pa.uint64()))})


class FuzzyDuplicateRemover(GlobalStage):
    """Removes near-duplicate documents (estimated Jaccard of shingle sets >= ``threshold``),
    keeping the smallest id of each cluster.

    Parameters: ``ngram_size`` shingle length (characters, or words with ``word_ngrams=True``);
    ``num_perm`` MinHash permutations; ``threshold`` Jaccard similarity; ``bands``/``rows``
    (None: chosen by :func:`optimal_bands` minimising ``false_positive_weight`` x FP area +
    ``false_negative_weight`` x FN area; FN weighted higher by default because verification
    removes false positives but nothing recovers a missed pair); ``seed`` of the permutations;
    ``verify`` ("signature" | "jaccard" | "none"). Texts are NFC-normalised, lowercased and
    whitespace-collapsed before shingling.
    """

    def __init__(self, text_field: str = "text", id_field: str = "id", ngram_size: int = 5,
                 word_ngrams: bool = False, num_perm: int = 256, threshold: float = 0.8,
                 bands: int | None = None, rows: int | None = None,
                 false_positive_weight: float = 0.2, false_negative_weight: float = 0.8,
                 seed: int = 42, verify: Verify = "signature", name: str = "",
                 keep_dropped: bool = False):
        if verify not in ("signature", "jaccard", "none"):
            raise ValueError(f"FuzzyDuplicateRemover: verify must be 'signature', 'jaccard' or "
                             f"'none', got {verify!r}")
        if ngram_size < 1 or num_perm < 1:
            raise ValueError("FuzzyDuplicateRemover: ngram_size and num_perm must be >= 1")
        if (bands is None) != (rows is None):
            raise ValueError("FuzzyDuplicateRemover: give both bands and rows, or neither")
        if bands is not None and bands * rows > num_perm:
            raise ValueError(f"FuzzyDuplicateRemover: bands*rows={bands * rows} exceeds "
                             f"num_perm={num_perm}; lower them or raise num_perm")
        optimal_bands(threshold, num_perm)  # validates threshold early
        self.text_field = text_field
        self.id_field = id_field
        self.ngram_size = ngram_size
        self.word_ngrams = word_ngrams
        self.num_perm = num_perm
        self.threshold = threshold
        self.bands = bands
        self.rows = rows
        self.false_positive_weight = false_positive_weight
        self.false_negative_weight = false_negative_weight
        self.seed = seed
        self.verify = verify
        self.name = name
        #: Send the removed documents to the writer's dropped output (``write_dropped``).
        self.keep_dropped = keep_dropped

    def banding(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm, self.false_positive_weight,
                             self.false_negative_weight)

    def find_duplicates(self, dataset: "ray.data.Dataset") -> FuzzyDedupResult:
        """Run the whole analysis and return clusters and ids to remove (nothing is removed)."""
        bands, rows = self.banding()
        a, b = permutations(self.num_perm, self.seed)
        timings: dict[str, float] = {}
        clock = [time.perf_counter()]

        def lap(step: str) -> None:
            now = time.perf_counter()
            timings[step] = now - clock[0]
            clock[0] = now

        with scratch_directory(self.stage_name) as scratch:
            files, num_docs, nbytes = write_blocks(
                dataset, _signature_batch,
                {"text_field": self.text_field, "id_field": self.id_field,
                 "ngram_size": self.ngram_size, "word_ngrams": self.word_ngrams,
                 "a": a, "b": b, "bands": bands, "rows": rows, "stage_name": self.stage_name},
                scratch)
            lap("signatures")
            quarantine = find_duplicate_ids(files, self.stage_name, num_docs, key_column="id",
                                            rounds=shuffle_rounds(nbytes))
            lap("duplicate_ids")
            exclude = pa.array(sorted(quarantine), pa.string()) if quarantine else None
            buckets = lsh_buckets(files, num_docs, bands, exclude)
            lap("lsh")
            docs = candidate_docs(buckets)
            # Row keys of the candidate documents only, sorted by row key: a document's rank is
            # its row-key order, so "smallest rank" is "smallest row key".
            got = _candidate_rows(files, docs)
            rank_of_doc = np.empty(docs.size, np.int64)
            rank_of_doc[np.searchsorted(docs, got.column("doc").to_numpy())] = np.arange(
                got.num_rows)
            ca, cb = ranked_pairs(buckets, docs, rank_of_doc)
            keys = got.column("id").combine_chunks()  # rank i's row key
            del buckets, docs, rank_of_doc, got
            sim = self._verify(ca, cb, keys, dataset, (a, b), scratch)
        keep = sim >= self.threshold if self.verify != "none" else np.ones(ca.size, bool)
        va, vb = ca[keep], cb[keep]
        pairs = pa.table({"a": keys.take(pa.array(va)), "b": keys.take(pa.array(vb)),
                          "similarity": pa.array(sim[keep])})
        lap("verify")
        ranks, labels = duplicate_components(pa.array(va), pa.array(vb))
        ids = keys.take(ranks) if len(ranks) else pa.array([], pa.string())
        remove = ids_to_remove(ids, labels)
        lap("components")
        return FuzzyDedupResult(bands, rows, num_docs, int(ca.size), pairs, ids, labels,
                                remove, quarantine, timings)

    def _verify(self, ca: np.ndarray, cb: np.ndarray, keys: pa.Array,
                dataset: "ray.data.Dataset", perms: tuple[np.ndarray, np.ndarray],
                scratch: str) -> np.ndarray:
        """Similarity of every candidate pair of ranks (NaN with ``verify="none"``)."""
        n = ca.size
        if n == 0 or self.verify == "none":
            return np.full(n, np.nan)
        common = {"text_field": self.text_field, "id_field": self.id_field,
                  "ngram_size": self.ngram_size, "word_ngrams": self.word_ngrams,
                  "wanted": IdSet(keys).in_object_store(), "stage_name": self.stage_name}
        # The ranking's and the IdSet's temporaries go back before the read's peak.
        return_freed_memory()
        if self.verify == "signature":
            # A second streaming read of the input recomputes the candidates' signatures into
            # scratch files; the pairs are compared where those files are read.
            written = write_blocks(dataset, _candidate_signatures_batch,
                                   {**common, "a": perms[0], "b": perms[1]}, scratch)
            if written.rows == len(keys):
                sim = pair_similarity(written.files, ca, cb, keys, self.num_perm)
                if not np.isnan(sim).any():
                    return sim
            raise RuntimeError(
                f"stage {self.stage_name!r}: the second read of the input found {written.rows} "
                f"rows for the {len(keys)} candidate documents; the input changed during the "
                "fit. Run the stage task again")
        sim = np.empty(n)
        sets_ds = dataset.map_batches(_shingle_sets_batch, batch_format="numpy",
                                      batch_size=None, fn_kwargs=common)
        table = pa.concat_tables(ray.get(sets_ds.to_arrow_refs()))
        shingles: list[np.ndarray | None] = [None] * len(keys)
        for r, s in zip(pc.index_in(table.column("id"), value_set=keys).to_numpy().tolist(),
                        table.column("shingles").to_pylist()):
            shingles[r] = np.asarray(s, dtype=np.uint64)
        for i, (x, y) in enumerate(zip(ca.tolist(), cb.tolist())):
            sx, sy = shingles[x], shingles[y]
            inter = np.intersect1d(sx, sy, assume_unique=True).size
            union = sx.size + sy.size - inter
            sim[i] = inter / union if union else 1.0
        return sim

    def fit(self, dataset: "ray.data.Dataset") -> ProcessingStage:
        result = self.find_duplicates(dataset)
        remove = IdSet(result.remove).in_object_store()  # workers fetch their buckets only
        return DuplicateIdFilter(remove, FUZZY_DUPLICATE, id_field=self.id_field,
                                 quarantine=result.quarantine, text_field=self.text_field,
                                 name=self.stage_name, keep_dropped=self.keep_dropped)
