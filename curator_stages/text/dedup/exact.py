"""Exact deduplication across the whole dataset: same (normalised) text -> keep the smallest id.

Plan (why it scales): a Ray Data ``map_batches`` turns every task into a compact Arrow table
of (128-bit text hash as two uint64 columns, id hash, row key) - 24 bytes plus the row key per
document, texts never leave the workers - which the worker writes to a scratch file
(:mod:`curator_stages.io.scratch`), so the fit holds no per-document memory between its steps. Documents are named by row key (id + source location,
unique by construction, see :mod:`.rows`), never by the user's id alone. Two hash-partitioned
reduces (see :mod:`.shuffle`) run over it: one by id hash finds ids that several rows share
(all but the first go to quarantine and take no part in the decision), one by text hash sorts
each partition by (hash, row key) and emits every row key that is not the first of its hash.
Those keys stay in Ray's object store: a second reduce splits them by source file into the
buckets of the returned :class:`DuplicateIdFilter`'s set (see :mod:`.removal`), so the driver
fetches only counts, and each filter task only the buckets of its own files.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import xxhash

from curator_stages.io.scratch import scratch_directory
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet
from curator_stages.text.dedup.removal import removal_rows, store_id_set
from curator_stages.text.dedup.rows import (
    document_tables,
    duplicate_ids_local,
    find_duplicate_ids,
    key_table,
)
from curator_stages.text.dedup.shuffle import (
    choose_num_partitions,
    partition_reduce,
    shuffle_rounds,
    write_blocks,
)

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

#: Drop reason recorded by the filter that :class:`ExactDuplicateRemover` returns.
EXACT_DUPLICATE = "exact_duplicate"


def normalize_for_exact(text: str, lowercase: bool = False) -> str:
    """NFC, every whitespace run -> one space, ends stripped (optionally lowercased).

    Case is kept by default: "exact" should not merge texts that differ in more than layout.
    """
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


def _hash_texts(texts: list[str | None], normalize: bool, lowercase: bool) -> np.ndarray:
    digest = xxhash.xxh3_128_digest
    if normalize:
        blob = b"".join(digest(normalize_for_exact(t or "", lowercase).encode("utf-8")) for t in texts)
    else:
        blob = b"".join(digest((t or "").encode("utf-8")) for t in texts)
    return np.frombuffer(blob, dtype="<u8").reshape(-1, 2)


_HASH_SCHEMA = pa.schema([("h0", pa.uint64()), ("h1", pa.uint64()), ("ih", pa.uint64()),
                          ("key", pa.string())])


def _exact_hash_batch(batch: dict[str, np.ndarray], text_field: str, id_field: str,
                      normalize: bool, lowercase: bool, stage_name: str,
                      prepared_key: str | None = None) -> pa.Table:
    """One compact table (h0, h1, ih, key) for a batch of tasks (Ray Data rows {"item": task}).

    A task that carries its table under ``prepared_key`` (hashed in the streaming pass before
    the barrier) is not hashed again.
    """
    parts: list[pa.Table] = []
    to_hash = []
    for task in batch["item"]:
        prepared = task.metadata.get(prepared_key) if prepared_key else None
        if prepared is not None:
            parts.append(prepared)
        else:
            to_hash.append(task)
    for table in document_tables(to_hash, text_field, stage_name):
        hashes = _hash_texts(table.column(text_field).to_pylist(), normalize, lowercase)
        keys = key_table(table, id_field, stage_name)
        parts.append(pa.table({"h0": pa.array(hashes[:, 0]), "h1": pa.array(hashes[:, 1]),
                               "ih": keys.column("ih"), "key": keys.column("key")},
                              schema=_HASH_SCHEMA))
    if not parts:
        return _HASH_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def _exact_reduce(table: pa.Table | None, exclude: pa.Array | None = None) -> pa.Table:
    """Within one hash partition: every row key that is not the smallest of its hash.

    Rows in ``exclude`` (quarantined for a duplicate id) neither stay nor make others go.
    """
    if table is None or table.num_rows == 0:
        return pa.table({"key": pa.array([], pa.string())})
    if exclude is not None and len(exclude):
        table = table.filter(pc.invert(pc.is_in(table.column("key"), value_set=exclude)))
    order = pc.sort_indices(table, sort_keys=[("h0", "ascending"), ("h1", "ascending"),
                                              ("key", "ascending")])
    t = table.take(order)
    h0 = t.column("h0").to_numpy()
    h1 = t.column("h1").to_numpy()
    same_as_previous = np.zeros(t.num_rows, dtype=bool)
    same_as_previous[1:] = (h0[1:] == h0[:-1]) & (h1[1:] == h1[:-1])
    return pa.table({"key": t.column("key").filter(pa.array(same_as_previous))})


def _exact_reduce_removal(table: pa.Table | None,
                          exclude: pa.Array | None = None) -> tuple[pa.Table, int]:
    """:func:`_exact_reduce` as removal rows (left in the object store) and their count."""
    keys = _exact_reduce(table, exclude).column("key")
    return removal_rows(keys), len(keys)


class ExactDuplicateRemover(GlobalStage):
    """Removes documents whose normalised text equals that of a document with a smaller id.

    Ties (two records sharing an id) are broken by source location; records whose id an earlier
    record has go to quarantine instead (see :mod:`.rows`). Parameters: ``text_field``/``id_field`` name the columns; ``normalize`` (NFC + whitespace
    collapsed + stripped) and ``lowercase`` decide what "the same text" means. Empty texts are
    duplicates of each other too (keep one). Dropped documents are recorded as
    ``dropped.exact_duplicate``.
    """

    #: Texts are hashed in the streaming pass (24 bytes + row key per document travel to the fit).
    prepare_in_stream = True

    def __init__(self, text_field: str = "text", id_field: str = "id", normalize: bool = True,
                 lowercase: bool = False, name: str = "", keep_dropped: bool = False):
        self.text_field = text_field
        self.id_field = id_field
        self.normalize = normalize
        self.lowercase = lowercase
        self.name = name
        #: Send the removed documents to the writer's dropped output (``write_dropped``).
        self.keep_dropped = keep_dropped

    def find_duplicates(self, dataset: "ray.data.Dataset") -> tuple[IdSet, dict[str, str]]:
        """(row keys to remove, {row key: quarantine reason} for rows with a duplicate id).

        Removed: all but the smallest row key (smallest id, then location) of every group of
        equal texts, among the rows whose id is not a duplicate.
        """
        with scratch_directory(self.stage_name) as scratch:
            files, total, nbytes = write_blocks(
                dataset, _exact_hash_batch,
                {"text_field": self.text_field, "id_field": self.id_field,
                 "normalize": self.normalize, "lowercase": self.lowercase,
                 "stage_name": self.stage_name, "prepared_key": self.prepared_key}, scratch)
            rounds = shuffle_rounds(nbytes)
            quarantine = find_duplicate_ids(files, self.stage_name, total, rounds=rounds)
            exclude = pa.array(sorted(quarantine), pa.string()) if quarantine else None
            outs = partition_reduce(files, "h0", _exact_reduce_removal,
                                    reduce_kwargs={"exclude": exclude},
                                    num_partitions=choose_num_partitions(total),
                                    gather=False, reduce_returns=2, rounds=rounds)
            counts = ray.get([count for _, count in outs])
        return store_id_set([rows for rows, _ in outs], counts), quarantine

    def _filter(self, remove: IdSet, quarantine: dict[str, str]) -> ProcessingStage:
        return DuplicateIdFilter(remove, EXACT_DUPLICATE, id_field=self.id_field,
                                 quarantine=quarantine, text_field=self.text_field,
                                 name=self.stage_name, keep_dropped=self.keep_dropped)

    # In-process fit (LocalExecutor / MultiprocessExecutor): the same hashing, the same
    # duplicate-id check and the same smallest-key choice as fit(), without Ray.
    def map_local(self, task: DocumentBatch) -> pa.Table:
        return _exact_hash_batch({"item": [task]}, self.text_field, self.id_field,
                                 self.normalize, self.lowercase, self.stage_name)

    def reduce_local(self, parts: list[pa.Table]) -> ProcessingStage:
        compact = pa.concat_tables(parts) if parts else None
        quarantine = duplicate_ids_local(compact, self.stage_name)
        exclude = pa.array(sorted(quarantine), pa.string()) if quarantine else None
        return self._filter(IdSet(_exact_reduce(compact, exclude).column("key")), quarantine)

    def fit(self, dataset: "ray.data.Dataset") -> ProcessingStage:
        return self._filter(*self.find_duplicates(dataset))
