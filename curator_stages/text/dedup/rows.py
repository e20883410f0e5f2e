"""Row identity for dedup, and the duplicate-id check that makes keeping "the smallest id" safe.

Why not key on the user's id: with ``id_field`` two records may share an id, and a dedup that
removes "that id" then removes it everywhere, unique text included. Dedup therefore decides per
*row*, with a key that is unique by construction and sorts like the keep rule:

    ``<id> NUL <source_file> NUL <source_line, 12 digits>``

Every reader emits ``source_file`` and ``source_line``, and a (file, line) pair names one record,
so the key is unique even when ids are not; sorting keys sorts by id first and breaks ties by
location, so "keep the smallest id" stays deterministic. A table without the source columns (built
by hand) is keyed by its id alone; its ids must then be unique, and a shared one is an error.

Duplicate ids are reported, not silently merged: every occurrence after the first (in key order:
smallest file, then line) goes to quarantine with reason ``duplicate id <x> (first at
<file>:<line>)``, and takes no part in the dedup decision. Each dedup fit runs the check, and
:class:`~curator_stages.text.dedup.idcheck.DuplicateIdCheck` runs it alone where no dedup runs.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup.shuffle import choose_num_partitions, partition_reduce

SOURCE_FILE = "source_file"
SOURCE_LINE = "source_line"
SEP = "\x00"
KEY_SCHEMA = pa.schema([("ih", pa.uint64()), ("key", pa.string())])


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


def row_keys(table: pa.Table, id_field: str, stage_name: str) -> pa.Array:
    """The row key of every document of ``table`` (see the module docstring)."""
    ids = ids_column(table, id_field, stage_name).combine_chunks()
    names = table.column_names
    if SOURCE_FILE not in names or SOURCE_LINE not in names:
        return ids
    files = pc.cast(table.column(SOURCE_FILE), pa.string()).combine_chunks()
    lines = pc.utf8_lpad(pc.cast(table.column(SOURCE_LINE), pa.string()), 12, "0").combine_chunks()
    return pc.coalesce(pc.binary_join_element_wise(ids, files, lines, SEP), ids)


def id_hashes(ids: Iterable[str]) -> pa.Array:
    """64-bit hashes of user ids: the partition key of the duplicate-id check."""
    digest = xxhash.xxh3_64_intdigest
    return pa.array(np.fromiter((digest(i.encode("utf-8")) for i in ids), dtype=np.uint64))


def key_table(table: pa.Table, id_field: str, stage_name: str) -> pa.Table:
    """(ih, key) for every document of one document table."""
    ids = ids_column(table, id_field, stage_name)
    return pa.table({"ih": id_hashes(ids.to_pylist()), "key": row_keys(table, id_field, stage_name)},
                    schema=KEY_SCHEMA)


def split_key(key: str) -> tuple[str, str | None, int | None]:
    """(id, source file, source line) of a row key; file and line are None for an id-only key."""
    parts = key.rsplit(SEP, 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[0], parts[1], int(parts[2])
    return key, None, None


def duplicate_id_rows(table: pa.Table | None, stage_name: str) -> pa.Table:
    """Within one id-hash partition: (key, reason) of every row whose id an earlier row has."""
    empty = pa.table({"key": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    if table is None or table.num_rows < 2:
        return empty
    ih = table.column("ih").to_numpy()
    values, counts = np.unique(ih, return_counts=True)
    repeated = values[counts > 1]
    if repeated.size == 0:
        return empty  # no id hash repeats: no id repeats
    keys = table.column("key").filter(pa.array(np.isin(ih, repeated))).to_pylist()
    first: dict[str, str] = {}
    out_keys: list[str] = []
    reasons: list[str] = []
    for key in sorted(keys):
        doc_id, file, line = split_key(key)
        if doc_id not in first:
            first[doc_id] = key
            continue
        _, first_file, first_line = split_key(first[doc_id])
        if file is None or first_file is None:
            raise ValueError(
                f"stage {stage_name!r}: id {doc_id!r} is shared by several documents that carry "
                f"no {SOURCE_FILE}/{SOURCE_LINE} columns to tell them apart; give every document "
                "a unique id, or keep the columns the readers add"
            )
        out_keys.append(key)
        reasons.append(f"duplicate id {doc_id} (first at {first_file}:{first_line})")
    return pa.table({"key": pa.array(out_keys, pa.string()), "reason": pa.array(reasons, pa.string())})


def _key_columns(table: pa.Table, key_column: str) -> pa.Table:
    """Only (ih, key) of a block travel to the duplicate-id reduce (not signatures or hashes)."""
    return pa.table({"ih": table.column("ih"), "key": table.column(key_column)})


def find_duplicate_ids(blocks: list, stage_name: str, total_rows: int,
                       key_column: str = "key", rounds: int = 1) -> dict[str, str]:
    """{row key: quarantine reason} over blocks (refs or scratch files) holding ``ih`` and row
    keys (``rounds``: see :func:`.shuffle.partition_reduce`)."""
    outs = partition_reduce(blocks, "ih", duplicate_id_rows, explode=_key_columns,
                            explode_kwargs={"key_column": key_column},
                            columns=["ih", key_column], rounds=rounds,
                            reduce_kwargs={"stage_name": stage_name},
                            num_partitions=choose_num_partitions(total_rows))
    return {k: r for t in outs for k, r in zip(t.column("key").to_pylist(),
                                                 t.column("reason").to_pylist())}


def duplicate_ids_local(table: pa.Table | None, stage_name: str) -> dict[str, str]:
    """In-process :func:`find_duplicate_ids` over one concatenated table."""
    t = duplicate_id_rows(table, stage_name)
    return dict(zip(t.column("key").to_pylist(), t.column("reason").to_pylist()))
