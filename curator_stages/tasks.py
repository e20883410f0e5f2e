"""The units of work that flow between stages.

A task is what one stage call receives and emits. Tasks travel through Ray Data as pickled
objects under the ``"item"`` column, so they stay small on top of their data: a pyarrow table
for documents, a list of paths for files. Every stage call appends a :class:`StagePerfStats`
so a task carries its own history (time, items in/out, drop reasons) to the run summary.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Generic, Mapping, TypeVar

import pyarrow as pa

T = TypeVar("T")

#: Custom-metric key prefix for documents a stage removed; the rest of the key is the reason.
DROPPED_PREFIX = "dropped."
#: Metadata key a filter may set to a table of the rows it dropped (the writer's dropped sink).
DROPPED_DOCUMENTS_KEY = "dropped_documents"
#: Column of that table naming why each row was dropped.
DROP_REASON_COLUMN = "drop_reason"
#: Custom-metric keys that reader and writer stages use for the accounting identity.
DOCUMENTS_READ = "documents_read"
DOCUMENTS_QUARANTINED = "documents_quarantined"
DOCUMENTS_WRITTEN = "documents_written"
#: Records a reader read and set aside as not documents (not errors: a WARC ``request``
#: record, an image); ``skipped.<kind>`` metrics count them by kind.
DOCUMENTS_SKIPPED = "documents_skipped"
SKIPPED_PREFIX = "skipped."
#: Custom-metric keys of token counts: what a token counter passed on, what a writer wrote (the
#: sum of the ``tokens`` column of its rows).
TOKENS_COUNTED = "tokens_counted"
TOKENS_WRITTEN = "tokens_written"
#: The column a token counter adds and a writer sums into ``tokens_written``.
TOKENS_COLUMN = "tokens"
#: Custom-metric key prefix of personal data replaced, by kind (``pii_redacted.email``...).
PII_REDACTED_PREFIX = "pii_redacted."
#: Metric of a file partitioner: input files listed (a file cut into byte ranges counts once,
#: though it makes several read tasks), so a run's tables count files, not tasks.
FILES_LISTED = "files_listed"


@dataclass
class StagePerfStats:
    """What one stage call did to one task: the raw material of every report and of accounting."""

    stage_name: str
    process_time_s: float = 0.0
    num_items_in: int = 0
    num_items_out: int = 0
    custom_metrics: dict[str, float] = field(default_factory=dict)
    #: Unique id of this record. Fan-out children copy their parent's history, so one record can
    #: reach the end of a run on many tasks; summaries count each id once (never in equality).
    stats_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16], compare=False)

    def dropped_by_reason(self) -> dict[str, int]:
        return {
            k[len(DROPPED_PREFIX) :]: int(v)
            for k, v in self.custom_metrics.items()
            if k.startswith(DROPPED_PREFIX)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage_name": self.stage_name,
            "process_time_s": float(self.process_time_s),
            "num_items_in": int(self.num_items_in),
            "num_items_out": int(self.num_items_out),
            # Plain numbers (a stage may record numpy scalars): histories are stored as JSON.
            "custom_metrics": {str(k): _plain_number(v) for k, v in self.custom_metrics.items()},
            "stats_id": self.stats_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StagePerfStats":
        return cls(**d)


def _plain_number(value: Any) -> int | float:
    """An int or float for a metric value (numpy scalars and bools included)."""
    if isinstance(value, (bool, int)) or (hasattr(value, "dtype") and value.dtype.kind in "biu"):
        return int(value)
    return float(value)


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as JSON data, for task metadata (which is stored as JSON).

    Values JSON has no type for become text: timestamps and dates ISO 8601, decimals their
    digits, bytes UTF-8 (undecodable bytes as ``\\xNN``); nested lists and structs stay nested.
    """
    return [_json_value(row) for row in table.to_pylist()]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    return str(value)


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A table of JSON rows (:func:`json_rows`); columns in first-seen order, missing values
    null, so rows of different stages (different score columns) still line up."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for row in rows:
        for key, values in columns.items():
            values.append(row.get(key))
    return pa.table(columns) if columns else pa.table({})


def new_task_id(prefix: str = "task") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Task(ABC, Generic[T]):
    """A unit of work: an id, the dataset it belongs to, its data, and its history."""

    task_id: str
    dataset_name: str
    data: T
    _metadata: dict[str, Any] = field(default_factory=dict)
    _stage_perf: list[StagePerfStats] = field(default_factory=list)

    @property
    @abstractmethod
    def num_items(self) -> int:
        """How many items (documents, files) this task holds; the unit of items in/out."""

    @abstractmethod
    def validate(self) -> bool:
        """True when the data is well formed for this task type."""

    @property
    def stage_history(self) -> tuple[StagePerfStats, ...]:
        """What each stage did to this task so far, oldest first (read-only view)."""
        return tuple(self._stage_perf)

    def add_stage_perf(self, stats: StagePerfStats) -> None:
        self._stage_perf.append(stats)

    @property
    def metadata(self) -> Mapping[str, Any]:
        """This task's metadata (side outputs, file group key, byte range...), read-only.

        Read-only because fan-out siblings may share one metadata dict: a change goes through
        :meth:`set_metadata`, :meth:`update_metadata` or :meth:`remove_metadata`, which give this
        task a new dict and leave its siblings' untouched.
        """
        return MappingProxyType(self._metadata)

    def set_metadata(self, key: str, value: Any) -> None:
        """Set one metadata key on this task only (the dict is replaced, never mutated)."""
        self._metadata = {**self._metadata, key: value}

    def update_metadata(self, items: Mapping[str, Any]) -> None:
        """Set several metadata keys on this task only (the dict is replaced, never mutated)."""
        self._metadata = {**self._metadata, **items}

    def remove_metadata(self, key: str) -> None:
        """Drop ``key`` (if there) from this task's metadata; the dict is replaced, not mutated."""
        if key in self._metadata:
            self._metadata = {k: v for k, v in self._metadata.items() if k != key}

    def derive(self, data: Any, task_id: str | None = None, **metadata: Any) -> "Task":
        """A new task of the same type with new data that keeps this task's history.

        History lists are copied so that fan-out children never share (and double count) one list.
        """
        return replace(
            self,
            task_id=task_id or self.task_id,
            data=data,
            _metadata={**self._metadata, **metadata},
            _stage_perf=list(self._stage_perf),
        )


@dataclass
class DocumentBatch(Task["pa.Table | Any"]):
    """A batch of documents as a pyarrow table (a pandas DataFrame is accepted and converted)."""

    def __post_init__(self) -> None:
        if not isinstance(self.data, pa.Table):
            self.data = _to_arrow(self.data)

    @property
    def num_items(self) -> int:
        return self.data.num_rows

    def validate(self) -> bool:
        return isinstance(self.data, pa.Table)

    def to_pyarrow(self) -> pa.Table:
        return self.data

    def to_pandas(self):  # -> pandas.DataFrame
        return self.data.to_pandas()

    @property
    def columns(self) -> list[str]:
        return list(self.data.column_names)


def _to_arrow(data: Any) -> pa.Table:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, dict):
        return pa.table(data)
    if isinstance(data, list):
        return pa.Table.from_pylist(data)
    raise TypeError(
        f"DocumentBatch.data must be a pyarrow.Table or pandas.DataFrame, got {type(data).__name__}"
    )


@dataclass
class FileGroupTask(Task[list[str]]):
    """A group of files to read together, with the options the reader needs."""

    reader_options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.data)

    def validate(self) -> bool:
        return isinstance(self.data, list) and all(isinstance(p, str) for p in self.data)


@dataclass
class EmptyTask(Task[None]):
    """The seed of a pipeline whose first stage creates the work (for example, lists files)."""

    task_id: str = "empty"
    dataset_name: str = "empty"
    data: None = None

    @property
    def num_items(self) -> int:
        return 0

    def validate(self) -> bool:
        return self.data is None
