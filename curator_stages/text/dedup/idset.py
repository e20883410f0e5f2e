"""A compact set of document ids, split into buckets by source file, and the per-task stage
that removes them.

A dedup fit ends with "these rows go" (row keys, see :mod:`.rows`; plain ids work the same).
Ids are kept as sorted 128-bit xxh3 digests (16 bytes per id, whatever the id length), and
membership is a vectorised binary search, so a batch is checked without building a hash table
per call. A 128-bit collision (a kept document wrongly removed) has probability ~n^2/2^129: nil
in practice.

Why buckets: the set travels with the filter stage to every worker, and at billions of removed
ids a whole set per worker would be tens of GB. A row key names its source file, and a filter
task's rows come from one or a few files, so the digests are split by a hash of the source file
(of the key itself for an id-only key) into ``ceil(n / IDS_PER_BUCKET)`` buckets. Under Ray
each bucket is its own object in the object store (:meth:`IdSet.in_object_store`, or built there
by :mod:`.removal`): the stage carries only the refs, and a task fetches (zero-copy, shared by
the workers of a node) only the buckets its rows hash to, keeping at most those of its current
batch. Without Ray the buckets are plain arrays held by the set.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import xxhash

from curator_stages.io.partition import FILE_GROUP_KEY
from curator_stages.io.quarantine import (
    QUARANTINE_FILES_KEY,
    QUARANTINE_KEY,
    make_record,
    write_quarantine,
)
from curator_stages.stage import ProcessingStage, record_drops, record_metrics
from curator_stages.tasks import (DOCUMENTS_QUARANTINED, DROP_REASON_COLUMN,
                                  DROPPED_DOCUMENTS_KEY, DocumentBatch, json_rows)
from curator_stages.text.dedup.rows import (  # noqa: F401  (re-exported)
    SEP,
    document_tables,
    ids_column,
    row_keys,
    split_key,
)

#: Removed ids per bucket (16 bytes each): bounds what one filter task loads.
IDS_PER_BUCKET = 1_000_000
_MASK64 = (1 << 64) - 1


def id_digests(ids: Iterable[str]) -> np.ndarray:
    """16-byte digests of ids, as a numpy ``S16`` array (order preserved)."""
    digest = xxhash.xxh3_128_digest
    blob = b"".join(digest(i.encode("utf-8")) for i in ids)
    return np.frombuffer(blob, dtype="S16")


def source_hashes(keys: Iterable[str]) -> np.ndarray:
    """uint64 hash of each row key's source file (of the key itself when it names none): the
    bucket of a key is ``hash % buckets``, so one file's rows always share a bucket."""
    digest = xxhash.xxh3_64_intdigest
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        parts = key.rsplit(SEP, 2)
        name = parts[1] if len(parts) == 3 and parts[2].isdigit() else key
        h = seen.get(name)
        if h is None:
            h = seen[name] = digest(name.encode("utf-8", "surrogatepass"))
        out.append(h)
    return np.array(out, dtype=np.uint64)


def bucket_numbers(keys: list[str], buckets: int) -> np.ndarray:
    """The bucket of each key (all 0 when there is one bucket: nothing to hash)."""
    if buckets == 1:
        return np.zeros(len(keys), dtype=np.int64)
    return (source_hashes(keys) % np.uint64(buckets)).astype(np.int64)


def bucket_count(size: int) -> int:
    """Buckets for ``size`` ids: at most :data:`IDS_PER_BUCKET` each on average, at least one."""
    return max(1, math.ceil(size / IDS_PER_BUCKET))


def digest_stats(digests: np.ndarray) -> tuple[int, int, int, int, int]:
    """(count, sum and xor of each 64-bit half) of unique digests: combined over buckets by
    :func:`combine_stats`, they fingerprint the set whatever its split into buckets."""
    halves = np.ascontiguousarray(digests).view("<u8").reshape(-1, 2)
    sums = halves.sum(axis=0, dtype=np.uint64) if len(halves) else np.zeros(2, np.uint64)
    xors = (np.bitwise_xor.reduce(halves, axis=0) if len(halves) else np.zeros(2, np.uint64))
    return (int(len(halves)), int(sums[0]), int(sums[1]), int(xors[0]), int(xors[1]))


def combine_stats(stats: Iterable[Sequence[int]]) -> tuple[int, str]:
    """(size, fingerprint) of a set from its buckets' :func:`digest_stats`. The digests are
    uniform 128-bit hashes, so two different sets share these sums with probability ~2^-128."""
    n = s0 = s1 = x0 = x1 = 0
    for count, a, b, c, d in stats:
        n, s0, s1, x0, x1 = n + count, (s0 + a) & _MASK64, (s1 + b) & _MASK64, x0 ^ c, x1 ^ d
    blob = f"{n}:{s0}:{s1}:{x0}:{x1}".encode()
    return n, hashlib.sha256(blob).hexdigest()[:32]


class IdSet:
    """An immutable set of ids; identity (for caching) is its size and content fingerprint, the
    same whether the buckets are held here or in Ray's object store, whatever their number."""

    def __init__(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray = ()):
        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = ids.to_pylist()
        ids = list(ids)
        digests = id_digests(ids)
        unique = np.unique(digests)
        buckets = bucket_count(unique.size)
        if buckets == 1:
            arrays = [unique]
        else:
            number = bucket_numbers(ids, buckets)
            order = np.argsort(number, kind="stable")
            bounds = np.searchsorted(number[order], np.arange(buckets + 1))
            grouped = digests[order]
            arrays = [np.unique(grouped[bounds[b]:bounds[b + 1]]) for b in range(buckets)]
        self._setup(arrays, None, [digest_stats(a) for a in arrays])

    @classmethod
    def from_buckets(cls, refs: list[Any], stats: list[Sequence[int]]) -> "IdSet":
        """A set whose bucket ``b`` is the sorted ``S16`` array at ``refs[b]`` in Ray's object
        store (``stats[b]`` its :func:`digest_stats`)."""
        out = cls.__new__(cls)
        out._setup(None, list(refs), stats)
        return out

    def _setup(self, arrays: list[np.ndarray] | None, refs: list[Any] | None,
               stats: Iterable[Sequence[int]]) -> None:
        self._arrays, self._refs = arrays, refs
        self.buckets = len(arrays if arrays is not None else refs)
        self.size, self.fingerprint = combine_stats(stats)
        #: Buckets fetched from the object store by this copy (a public counter for tests).
        self.fetches = 0
        self._held: dict[int, np.ndarray] = {}

    def in_object_store(self) -> "IdSet":
        """This set with each bucket put in Ray's object store (itself without Ray or when
        empty): a stage holding it pickles to a few hundred bytes."""
        import ray

        if self._refs is not None or self.size == 0 or not ray.is_initialized():
            return self
        stats = [digest_stats(a) for a in self._arrays]
        return IdSet.from_buckets([ray.put(a) for a in self._arrays], stats)

    @property
    def held_buckets(self) -> list[int]:
        """The bucket numbers this copy holds in memory now (all of them without the store)."""
        return list(range(self.buckets)) if self._refs is None else sorted(self._held)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_held"], state["fetches"] = {}, 0  # per-process cache: never shipped
        return state

    def __len__(self) -> int:
        return self.size

    def __contains__(self, doc_id: str) -> bool:
        return bool(self.contains([doc_id])[0])

    def _load(self, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """The arrays of buckets ``wanted``; from the store, only those not held already, and
        the held ones no longer wanted are let go (a task keeps only its own buckets)."""
        if self._refs is None:
            return {int(b): self._arrays[b] for b in wanted}
        import ray

        keep = {int(b) for b in wanted}
        held = {b: a for b, a in self._held.items() if b in keep}
        missing = sorted(keep - set(held))
        if missing:
            held.update(zip(missing, ray.get([self._refs[b] for b in missing])))
            self.fetches += len(missing)
        self._held = held  # replaced, never mutated: a concurrent caller keeps its own dict
        return held

    def contains(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are in the set."""
        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = ids.to_pylist()
        ids = ids if isinstance(ids, list) else list(ids)
        query = id_digests(ids)
        found = np.zeros(query.size, dtype=bool)
        if self.size == 0 or query.size == 0:
            return found
        number = bucket_numbers(ids, self.buckets)
        wanted = np.unique(number)
        arrays = self._load(wanted)
        for b in wanted.tolist():
            array = arrays[b]
            if array.size == 0:
                continue
            rows = np.flatnonzero(number == b)
            q = query[rows]
            pos = np.searchsorted(array, q)
            found[rows] = array[np.minimum(pos, array.size - 1)] == q
        return found

    def identity(self) -> dict[str, object]:
        """What a stage holding this set is identified by (see curator_stages.identity)."""
        return {"size": self.size, "fingerprint": self.fingerprint}

    def __repr__(self) -> str:
        return f"IdSet(size={self.size}, fingerprint={self.fingerprint[:12]})"


class DuplicateIdFilter(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Removes the documents whose row key is in ``remove`` (recorded as ``dropped.<reason>``)
    and moves those whose row key is in ``quarantine`` to quarantine (with that reason).
    With ``keep_dropped`` the removed documents ride on the task for the writer's
    ``dropped_output`` (reason column ``<reason>``), as a filter's dropped documents do.

    Built by a dedup ``fit``; a task-mode stage (no ``setup``), cheap per batch, whose only
    state is the set's per-process copy of the current batch's buckets (see :class:`IdSet`). Row
    keys, not ids, name the documents (see :mod:`.rows`): two records that share an id are two
    rows, and removing one never removes the other.
    """

    batch_size = 1

    def __init__(self, remove: IdSet, reason: str, id_field: str = "id", name: str = "",
                 quarantine: dict[str, str] | None = None, text_field: str = "text",
                 keep_dropped: bool = False):
        self.remove = remove
        self.keep_dropped = bool(keep_dropped)
        self.reason = reason
        self.id_field = id_field
        self.text_field = text_field
        self.quarantine = dict(sorted((quarantine or {}).items()))
        self.name = name or reason.replace("_duplicate", "") + "_dedup_filter"

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.id_field]

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        if table.num_rows == 0 or (self.remove.size == 0 and not self.quarantine):
            return task
        keys = row_keys(table, self.id_field, self.stage_name)
        removed = self.remove.contains(keys)  # the dropped rows; quarantined ones leave below
        drop = removed.copy()
        records = []
        if self.quarantine:
            texts = (table.column(self.text_field) if self.text_field in table.column_names
                     else None)
            for i, key in enumerate(keys.to_pylist()):
                reason = self.quarantine.get(key)
                if reason is None:
                    continue
                _, file, line = split_key(key)
                raw = texts[i].as_py() if texts is not None else None
                records.append(make_record(file or "", line or 0, reason, raw, self.stage_name))
                drop[i], removed[i] = True, False
        n_drop = int(drop.sum())
        if n_drop == 0:
            return task
        meta = self._quarantine_meta(task, records) if records else {}
        if self.keep_dropped and removed.any():
            dropped = table.filter(pa.array(removed))
            dropped = dropped.append_column(DROP_REASON_COLUMN, pa.array(
                [self.reason] * dropped.num_rows, pa.string()))
            previous = task.metadata.get(DROPPED_DOCUMENTS_KEY)
            if isinstance(previous, pa.Table):
                previous = json_rows(previous)
            meta[DROPPED_DOCUMENTS_KEY] = [*(previous or []), *json_rows(dropped)]
        out = task.derive(table.filter(pa.array(~drop)), **meta)
        if records:
            record_metrics(out, **{DOCUMENTS_QUARANTINED: len(records)})
        return record_drops(out, {self.reason: int(removed.sum())})

    def _quarantine_meta(self, task: DocumentBatch, records: list[dict]) -> dict:
        """Where the records go: beside the reader's quarantine file when it wrote one (a
        writer's ``quarantine-<key>.jsonl`` there would replace the reader's), else with the
        task for the writer's ``quarantine_output``."""
        written = task.metadata.get(QUARANTINE_FILES_KEY) or []
        if not written:
            return {QUARANTINE_KEY: [*task.metadata.get(QUARANTINE_KEY, []), *records]}
        key = f"{task.metadata.get(FILE_GROUP_KEY) or task.task_id}-{self.stage_name}"
        path = write_quarantine(posixpath.dirname(written[0]), key, records,
                                stage_name=self.stage_name)
        return {QUARANTINE_FILES_KEY: [*written, path]}
