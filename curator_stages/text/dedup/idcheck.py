"""A stand-alone duplicate-id check, for pipelines that take ids from the input but run no dedup.

The dedup fits run the same check (see :mod:`.rows`); this stage exists so that "ids are unique,
or the extra occurrences are quarantined" holds whether or not a dedup stage runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curator_stages.io.scratch import scratch_directory
from curator_stages.stage import GlobalStage, ProcessingStage
from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet
from curator_stages.text.dedup.rows import (
    KEY_SCHEMA,
    document_tables,
    duplicate_ids_local,
    find_duplicate_ids,
    key_table,
)
from curator_stages.text.dedup.shuffle import shuffle_rounds, write_blocks

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

#: Drop reason of the check's filter (it drops nothing: duplicates go to quarantine).
DUPLICATE_ID = "duplicate_id"


def _key_batch(batch: dict[str, np.ndarray], text_field: str, id_field: str,
               stage_name: str) -> pa.Table:
    parts = [key_table(t, id_field, stage_name) for t in document_tables(batch["item"], text_field,
                                                                         stage_name)]
    return pa.concat_tables(parts) if parts else KEY_SCHEMA.empty_table()


class DuplicateIdCheck(GlobalStage):
    """Quarantine every document whose id an earlier document has (the dedup fits do the same).

    For pipelines that take ids from the input (``id_field``) but run no dedup: ids are meant to
    be unique, and a shared one is reported, never silently kept twice or merged. Where a dedup
    stage runs, its fit does this check and this stage is not needed.
    """

    def __init__(self, text_field: str = "text", id_field: str = "id", name: str = ""):
        self.text_field = text_field
        self.id_field = id_field
        self.name = name

    def _filter(self, quarantine: dict[str, str]) -> ProcessingStage:
        return DuplicateIdFilter(IdSet([]), DUPLICATE_ID, id_field=self.id_field,
                                 quarantine=quarantine, name=self.stage_name)

    def fit(self, dataset: "ray.data.Dataset") -> ProcessingStage:
        with scratch_directory(self.stage_name) as scratch:
            files, total, nbytes = write_blocks(
                dataset, _key_batch, {"text_field": self.text_field, "id_field": self.id_field,
                                      "stage_name": self.stage_name}, scratch)
            return self._filter(find_duplicate_ids(files, self.stage_name, total,
                                                   rounds=shuffle_rounds(nbytes)))

    def map_local(self, task: DocumentBatch) -> pa.Table:
        return _key_batch({"item": [task]}, self.text_field, self.id_field, self.stage_name)

    def reduce_local(self, parts: list[Any]) -> ProcessingStage:
        table = pa.concat_tables(parts) if parts else None
        return self._filter(duplicate_ids_local(table, self.stage_name))
