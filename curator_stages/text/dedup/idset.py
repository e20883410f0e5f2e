"""A compact, picklable set of document ids, and the per-task stage that removes them.

A dedup fit ends with "these ids go"; the set travels with the filter stage to every worker.
Ids are kept as sorted 128-bit xxh3 digests (16 bytes per id, whatever the id length), and
membership is a vectorised binary search, so a batch is checked without building a hash table
per call and a few million ids stay a few tens of MB. A 128-bit collision (a kept document
wrongly removed) has probability ~n^2/2^129: nil in practice.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curator_stages.stage import ProcessingStage, record_drops
from curator_stages.tasks import DocumentBatch


def id_digests(ids: Iterable[str]) -> np.ndarray:
    """16-byte digests of ids, as a numpy ``S16`` array (order preserved)."""
    digest = xxhash.xxh3_128_digest
    blob = b"".join(digest(i.encode("utf-8")) for i in ids)
    return np.frombuffer(blob, dtype="S16")


class IdSet:
    """An immutable set of ids; identity (for caching) is its size and content fingerprint."""

    def __init__(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray = ()):
        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = ids.to_pylist()
        self._digests = np.unique(id_digests(ids))
        self.size = int(self._digests.size)
        self.fingerprint = hashlib.sha256(self._digests.tobytes()).hexdigest()[:32]

    def __len__(self) -> int:
        return self.size

    def __contains__(self, doc_id: str) -> bool:
        return bool(self.contains([doc_id])[0])

    def contains(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are in the set."""
        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = ids.to_pylist()
        query = id_digests(ids)
        if self.size == 0 or query.size == 0:
            return np.zeros(query.size, dtype=bool)
        pos = np.searchsorted(self._digests, query)
        return self._digests[np.minimum(pos, self.size - 1)] == query

    def identity(self) -> dict[str, object]:
        """What a stage holding this set is identified by (see curator_stages.identity)."""
        return {"size": self.size, "fingerprint": self.fingerprint}

    def __repr__(self) -> str:
        return f"IdSet(size={self.size}, fingerprint={self.fingerprint[:12]})"


class DuplicateIdFilter(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Removes the documents whose id is in ``remove`` and records them as ``dropped.<reason>``.

    Built by a dedup ``fit``; a stateless task-mode stage (no ``setup``), cheap per batch.
    """

    batch_size = 1

    def __init__(self, remove: IdSet, reason: str, id_field: str = "id", name: str = ""):
        self.remove = remove
        self.reason = reason
        self.id_field = id_field
        self.name = name or reason.replace("_duplicate", "") + "_dedup_filter"

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.id_field]

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        if table.num_rows == 0 or self.remove.size == 0:
            return task
        drop = self.remove.contains(table.column(self.id_field))
        n_drop = int(drop.sum())
        if n_drop == 0:
            return task
        out = task.derive(table.filter(pa.array(~drop)))
        return record_drops(out, {self.reason: n_drop})


def ids_column(table: pa.Table, id_field: str, stage_name: str) -> pa.ChunkedArray:
    """The id column as strings, or an error that names the stage, the field and the fix."""
    if id_field not in table.column_names:
        raise KeyError(
            f"stage {stage_name!r}: documents lack the id field {id_field!r} (columns: "
            f"{table.column_names}); dedup keeps the smallest id, so read documents with an id "
            "(readers add 'id') or set id_field= to an existing unique column"
        )
    col = table.column(id_field)
    return col if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) else pc.cast(col, pa.string())


def document_tables(tasks: Iterable[DocumentBatch], text_field: str,
                    stage_name: str) -> Iterator[pa.Table]:
    """The non-empty document tables of ``tasks``, each checked for the text field.

    Both dedup fits walk their input this way; the error names the stage, the field and the fix.
    """
    for task in tasks:
        table = task.to_pyarrow()
        if table.num_rows == 0:
            continue
        if text_field not in table.column_names:
            raise KeyError(
                f"stage {stage_name!r}: documents lack the text field {text_field!r} (columns: "
                f"{table.column_names}); set text_field= to the column holding the text"
            )
        yield table
