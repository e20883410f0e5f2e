"""A compact, picklable set of document ids, and the per-task stage that removes them.

A dedup fit ends with "these rows go" (row keys, see :mod:`.rows`; plain ids work the same);
the set travels with the filter stage to every worker.
Ids are kept as sorted 128-bit xxh3 digests (16 bytes per id, whatever the id length), and
membership is a vectorised binary search, so a batch is checked without building a hash table
per call and a few million ids stay a few tens of MB. A 128-bit collision (a kept document
wrongly removed) has probability ~n^2/2^129: nil in practice.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Iterable

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
    document_tables,
    ids_column,
    row_keys,
    split_key,
)


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
    """Removes the documents whose row key is in ``remove`` (recorded as ``dropped.<reason>``)
    and moves those whose row key is in ``quarantine`` to quarantine (with that reason).
    With ``keep_dropped`` the removed documents ride on the task for the writer's
    ``dropped_output`` (reason column ``<reason>``), as a filter's dropped documents do.

    Built by a dedup ``fit``; a stateless task-mode stage (no ``setup``), cheap per batch. Row
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
        drop = self.remove.contains(keys)
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
                drop[i] = True
        n_drop = int(drop.sum())
        if n_drop == 0:
            return task
        meta = self._quarantine_meta(task, records) if records else {}
        if self.keep_dropped and n_drop > len(records):
            removed = self.remove.contains(keys)  # the dropped rows, not the quarantined ones
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
        return record_drops(out, {self.reason: n_drop - len(records)})

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
