"""Task files: how one task is stored in a checkpoint, and the only task types read back.

Work directories are often shared storage, so a file in one is untrusted input: nothing read
from a checkpoint is unpickled (loading a pickle runs whatever code its author put in it, as
the user, on the next resume). Each task type has one plain format instead:

* :class:`DocumentBatch` -> Parquet; its header (id, dataset name, metadata, stage history) is
  JSON in the file's schema metadata, so any Parquet tool reads the file;
* :class:`FileGroupTask` and :class:`EmptyTask` -> one JSON document.

A file names its task type by a short name from :data:`TASK_TYPES`, a closed registry: a name
outside it is refused, and no class is ever imported because a file names it. Task metadata must
be JSON data (dicts with string keys, lists, strings, numbers, booleans, null); a task carrying
anything else is refused when it is written, with an error naming the stage and the key, so a
checkpoint never holds what cannot be read back exactly.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import re

import pyarrow as pa
import pyarrow.parquet as pq

from curator_stages.io.filesystem import is_local, resolve
from curator_stages.tasks import DocumentBatch, EmptyTask, FileGroupTask, StagePerfStats, Task

TASK_METADATA_KEY = b"curator_stages.task"
#: The file suffixes a checkpoint may list; anything else (``.pkl`` above all) is refused.
TASK_FILE_SUFFIXES = (".parquet", ".json")
#: Largest Parquet footer string this product reads back (Thrift's own limit, 100 MB by
#: default, refused a 467 MB checkpoint that had been written without complaint). The task
#: header rides in the footer twice (as key-value metadata and inside Arrow's schema), so a
#: header above half of this is refused when written: no checkpoint part is ever unreadable.
FOOTER_STRING_LIMIT = (1 << 31) - 1


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, quota, permissions); names the checkpoint."""


class UnsafeTaskError(CheckpointWriteError, TypeError):
    """A task cannot be stored as plain data (a task type outside the registry, or metadata
    that is not JSON). A retry cannot help: the stage that built the task must change."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint lists a file this product never loads (a pickle, an unknown suffix or task
    type, a path outside the checkpoint): refused, never loaded."""


_fs = resolve


# ----------------------------------------------------------------------------- JSON checks
def _json_problem(value: Any, where: str) -> str | None:
    """Where ``value`` stops being JSON data (``None`` when it is JSON all the way down)."""
    if value is None or type(value) in (str, bool, int, float):
        return None
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{where} (key {key!r} of type {type(key).__name__})"
            problem = _json_problem(item, f"{where}.{key}")
            if problem:
                return problem
        return None
    return f"{where} (a {type(value).__module__}.{type(value).__qualname__})"


def _stage_of(task: Task, label: str | None) -> str:
    if label:
        return label
    return task._stage_perf[-1].stage_name if task._stage_perf else "?"


def check_metadata(task: Task, label: str | None = None) -> None:
    """Raise :class:`UnsafeTaskError` naming the stage and the key when ``task.metadata`` is
    not JSON data."""
    for key, value in task.metadata.items():
        problem = (f"_metadata (a key of type {type(key).__name__})"
                   if type(key) is not str else _json_problem(value, f"_metadata[{key!r}]"))
        if problem:
            raise UnsafeTaskError(
                f"stage {_stage_of(task, label)!r}: task {task.task_id!r} cannot be checkpointed: "
                f"metadata key {key!r} is not JSON data: {problem}. Checkpoints store metadata "
                "as JSON and "
                "never pickle; make the stage that sets this key store plain data (str, int, "
                "float, bool, None, lists, dicts with str keys), e.g. table.to_pylist() for a "
                "table, sorted(list(s)) for a set, int(x) for a numpy scalar")


# ----------------------------------------------------------------------------- codecs
def _header(task: Task, type_name: str) -> dict[str, Any]:
    return {
        "task_type": type_name,
        "task_id": task.task_id,
        "dataset_name": task.dataset_name,
        "_metadata": dict(task.metadata),
        "_stage_perf": [s.to_dict() for s in task._stage_perf],
    }


def _history(header: dict[str, Any]) -> list[StagePerfStats]:
    return [StagePerfStats.from_dict(s) for s in header.get("_stage_perf", [])]


def _write_documents(task: Task, path_without_ext: str) -> str:
    header = json.dumps(_header(task, "DocumentBatch")).encode()
    if 2 * len(header) > FOOTER_STRING_LIMIT:
        raise UnsafeTaskError(
            f"stage {_stage_of(task, None)!r}: task {task.task_id!r} carries {len(header)} bytes "
            "of metadata (quarantine records, dropped documents), more than a checkpoint can "
            f"hold ({FOOTER_STRING_LIMIT // 2}); read fewer files per task (files_per_group) "
            "or keep fewer dropped documents")
    table = task.to_pyarrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), TASK_METADATA_KEY: header})
    path = path_without_ext + ".parquet"
    fs, p = _fs(path)
    with fs.open(p, "wb") as f:
        pq.write_table(table, f, compression="zstd")
    return path


def _read_documents(path: str) -> Task:
    fs, p = _fs(path)
    with fs.open(p, "rb") as f:
        table = pq.read_table(f, thrift_string_size_limit=FOOTER_STRING_LIMIT)
    meta = dict(table.schema.metadata or {})
    if TASK_METADATA_KEY not in meta:
        raise UnsafeCheckpointError(f"checkpoint file {path!r} has no task header; it was not "
                                    "written by this product; remove its checkpoint to recompute")
    header = json.loads(meta.pop(TASK_METADATA_KEY))
    if header.get("task_type") != "DocumentBatch":
        raise UnsafeCheckpointError(f"checkpoint file {path!r}: a Parquet task file must hold a "
                                    f"DocumentBatch, not {header.get('task_type')!r}")
    return DocumentBatch(task_id=header["task_id"], dataset_name=header["dataset_name"],
                         data=table.replace_schema_metadata(meta or None),
                         _metadata=header.get("_metadata") or {}, _stage_perf=_history(header))


def _json_writer(type_name: str, fields: Callable[[Task], dict[str, Any]]):
    def write(task: Task, path_without_ext: str) -> str:
        body = {**_header(task, type_name), **fields(task)}
        problem = _json_problem(body, type_name)
        if problem:
            raise UnsafeTaskError(f"stage {_stage_of(task, None)!r}: task {task.task_id!r} "
                                  f"cannot be checkpointed: {problem} is not JSON data")
        path = path_without_ext + ".json"
        fs, p = _fs(path)
        with fs.open(p, "w") as f:
            f.write(json.dumps(body))
        return path

    return write


def _file_group(body: dict[str, Any]) -> Task:
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise UnsafeCheckpointError("a FileGroupTask's data must be a list of paths")
    return FileGroupTask(task_id=body["task_id"], dataset_name=body["dataset_name"], data=data,
                         reader_options=dict(body.get("reader_options") or {}),
                         _metadata=body.get("_metadata") or {}, _stage_perf=_history(body))


def _empty(body: dict[str, Any]) -> Task:
    return EmptyTask(task_id=body["task_id"], dataset_name=body["dataset_name"],
                     _metadata=body.get("_metadata") or {}, _stage_perf=_history(body))


#: The task types a checkpoint holds: exact class -> (name in the file, writer, JSON reader).
#: Closed on purpose: reading never goes beyond these three.
TASK_TYPES: dict[type, tuple[str, Callable[[Task, str], str], Callable[[dict], Task] | None]] = {
    DocumentBatch: ("DocumentBatch", _write_documents, None),
    FileGroupTask: ("FileGroupTask",
                    _json_writer("FileGroupTask", lambda t: {"data": list(t.data),
                                                             "reader_options": t.reader_options}),
                    _file_group),
    EmptyTask: ("EmptyTask", _json_writer("EmptyTask", lambda t: {}), _empty),
}
_JSON_READERS = {name: reader for name, _, reader in TASK_TYPES.values() if reader is not None}


def write_task(task: Task, path_without_ext: str, label: str | None = None) -> str:
    """Write one task as Parquet (documents) or JSON (the rest); returns the file name.

    Raises :class:`UnsafeTaskError` (a :class:`CheckpointWriteError`) for a task type outside
    :data:`TASK_TYPES` or metadata that is not JSON data, naming the stage and the key.
    """
    entry = TASK_TYPES.get(type(task))
    if entry is None:
        known = ", ".join(name for name, _, _ in TASK_TYPES.values())
        raise UnsafeTaskError(
            f"stage {_stage_of(task, label)!r}: task {task.task_id!r} of type "
            f"{type(task).__module__}.{type(task).__qualname__} cannot be checkpointed: "
            f"checkpoints hold only {known} (stored as Parquet or JSON, never pickled); "
            "emit one of those from the stage that ends a stage task")
    check_metadata(task, label)
    _, writer, _ = entry
    return writer(task, path_without_ext).rsplit("/", 1)[-1]


#: An object store's checkpoint lists its files under one attempt prefix (see ``store``).
_ATTEMPT_DIR = re.compile(r"attempt-[0-9a-f]{8}")


def check_task_file_name(name: Any, where: str) -> str:
    """A file name a manifest may list: a plain name with a task-file suffix, optionally under
    one ``attempt-<hex>/`` prefix (refused else: nothing outside the checkpoint is read)."""
    base = name
    if isinstance(name, str) and name.count("/") == 1:
        prefix, base = name.split("/")
        if not _ATTEMPT_DIR.fullmatch(prefix):
            base = ""
    if (not isinstance(base, str) or not base or "/" in base or "\\" in base
            or base.startswith(".") or not base.endswith(TASK_FILE_SUFFIXES)):
        raise UnsafeCheckpointError(
            f"checkpoint {where!r} lists {name!r}, which this product never loads: checkpoints "
            f"hold only {' and '.join(TASK_FILE_SUFFIXES)} task files (pickles are never "
            "loaded: loading one runs code). Someone or something else wrote it; remove the "
            "checkpoint directory (or re-run with --refresh) to recompute, and check who can "
            "write to this work_dir")
    return name


def refuse_links(*paths: str) -> None:
    """Refuse, unread, a local checkpoint directory or task file that is a symbolic link: a
    work dir entry this product did not create could point at any file its user can read."""
    for path in paths:
        if "://" not in path and os.path.islink(path):
            raise UnsafeCheckpointError(
                f"checkpoint entry {path!r} is a symbolic link (to {os.readlink(path)!r}); this "
                "product never follows a link inside a work_dir. Remove it (a re-run recomputes "
                "the checkpoint), and check who can write to this work_dir")


def read_task(path: str) -> Task:
    """Load one task file written by :func:`write_task`; anything else is refused, unread."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    check_task_file_name(name, path.rsplit("/", 1)[0])  # manifests were checked as they were read
    fs, p = _fs(path)
    if is_local(fs):
        refuse_links(p.rsplit("/", 1)[0], p)
    if name.endswith(".parquet"):
        return _read_documents(path)
    with fs.open(p, "rb") as f:
        try:
            body = json.loads(f.read())
        except ValueError as exc:
            raise UnsafeCheckpointError(f"checkpoint file {path!r} is not JSON: {exc}") from None
    reader = _JSON_READERS.get(body.get("task_type")) if isinstance(body, dict) else None
    if reader is None:
        raise UnsafeCheckpointError(
            f"checkpoint file {path!r} names task type {body.get('task_type') if isinstance(body, dict) else None!r}; "
            f"only {', '.join(_JSON_READERS)} are read from JSON task files")
    return reader(body)


__all__ = ["CheckpointWriteError", "TASK_TYPES", "UnsafeCheckpointError", "UnsafeTaskError",
           "check_metadata", "check_task_file_name", "read_task", "refuse_links", "write_task"]
