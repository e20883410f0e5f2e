"""Column-wise accumulation of documents into the reader output table.

Readers append one document at a time into Python lists (cheap) and build the pyarrow table once
per file group, with the schema every stage after them relies on.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import pyarrow as pa

#: The schema of the columns every reader produces (extra fields follow them).
BASE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("text", pa.string()),
    ("source_file", pa.string()),
    ("source_line", pa.int64()),
])


class BatchBuilder:
    """Accumulate ``id, text, source_file, source_line`` (+ extra fields) column by column."""

    def __init__(self, fields: Sequence[str] = ()) -> None:
        self.fields = list(fields)
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.files: list[str] = []
        self.lines: list[int] = []
        self.extras: list[list[Any]] = [[] for _ in self.fields]
        self._chunks: list[pa.Table] = []

    def add(self, doc_id: str, text: str, file: str, line: int, extras: list[Any] | None) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.files.append(file)
        self.lines.append(line)
        if extras is not None:
            for column, value in zip(self.extras, extras):
                column.append(value)

    def add_arrow(self, ids: Any, texts: Any, file: str, lines: Any, extras: list[Any]) -> None:
        """Append already-columnar documents (Parquet input) without a trip through Python."""
        self._flush()
        n = len(ids)
        arrays = [ids, texts, pa.array([file] * n, pa.string()), lines, *extras]
        names = [*BASE_SCHEMA.names, *self.fields]
        self._chunks.append(pa.Table.from_arrays([_combine(a) for a in arrays], names=names))

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` documents (a reader takes back what a damaged file gave)."""
        self._flush()
        if self._chunks:
            self._chunks = [self.to_table().slice(0, n)]

    def __len__(self) -> int:
        return len(self.ids) + sum(c.num_rows for c in self._chunks)

    def to_table(self) -> pa.Table:
        """All documents added so far as one table (schemas of chunks unified)."""
        self._flush()
        if not self._chunks:
            return self._python_table()
        if len(self._chunks) == 1:
            return self._chunks[0]
        return pa.concat_tables(self._chunks, promote_options="permissive")

    def _flush(self) -> None:
        if self.ids:
            self._chunks.append(self._python_table())
            self.ids, self.texts, self.files, self.lines = [], [], [], []
            self.extras = [[] for _ in self.fields]

    def _python_table(self) -> pa.Table:
        arrays: list[pa.Array] = [
            pa.array(self.ids, pa.string()),
            pa.array(self.texts, pa.string()),
            pa.array(self.files, pa.string()),
            pa.array(self.lines, pa.int64()),
        ]
        names = list(BASE_SCHEMA.names)
        for name, values in zip(self.fields, self.extras):
            arrays.append(_extra_array(values))
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names)


def _extra_array(values: list[Any]) -> pa.Array:
    """An Arrow column for an extra field; values of mixed types become JSON strings."""
    if not values:
        return pa.array([], pa.null())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array(
            [None if v is None else json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values],
            pa.string(),
        )


def _combine(array: Any) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
