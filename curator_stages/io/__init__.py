"""I/O stages: list files, read JSONL/Parquet into document batches, write them back out.

Everything goes through fsspec (local paths, ``file://``, ``memory://``, and any scheme whose
fsspec package is installed). Bad input records are quarantined with file, line and reason,
never silently dropped; writes are atomic and deterministic.
"""

from curator_stages.io.batch_builder import BASE_SCHEMA
from curator_stages.io.compression import CorruptCompressedStreamError
from curator_stages.io.filesystem import (
    OutputExistsError,
    OutputNotWritableError,
    OutputWriteError,
    atomic_write,
)
from curator_stages.io.jsonl_reader import JSONL_EXTENSIONS, JsonlReader, JsonlReadStage
from curator_stages.io.parquet_reader import (
    PARQUET_EXTENSIONS,
    ParquetReader,
    ParquetReadStage,
    ParquetSchemaError,
)
from curator_stages.io.partition import FilePartitioningStage, NoInputFilesError, file_group_key
from curator_stages.io.quarantine import MalformedRecordError, read_quarantine
from curator_stages.io.writers import (
    DROP_REASON_COLUMN,
    DROPPED_DOCUMENTS_KEY,
    JsonlWriter,
    ParquetWriter,
)

__all__ = [
    "BASE_SCHEMA",
    "CorruptCompressedStreamError",
    "DROPPED_DOCUMENTS_KEY",
    "DROP_REASON_COLUMN",
    "FilePartitioningStage",
    "JSONL_EXTENSIONS",
    "JsonlReadStage",
    "JsonlReader",
    "JsonlWriter",
    "MalformedRecordError",
    "NoInputFilesError",
    "OutputExistsError",
    "OutputNotWritableError",
    "OutputWriteError",
    "PARQUET_EXTENSIONS",
    "ParquetReadStage",
    "ParquetReader",
    "ParquetSchemaError",
    "ParquetWriter",
    "atomic_write",
    "file_group_key",
    "read_quarantine",
]
