"""Scratch files of a whole-dataset fit: where a dedup keeps its compact columns.

A dedup fit must see every document's compact columns (row keys, hashes, band keys) before it
can decide anything. Held in Ray's object store they cost memory for the whole fit, and that
memory grows with the corpus. Written as Parquet by the workers that compute them, and read back
column by column by the tasks that need them, they cost disk instead, and a node's memory stays
flat as the corpus grows.

Where they go is the caller's choice (:func:`scratch_root`). A flow's stage task gives its own
temporary checkpoint: the files then live in the work directory, which every node of a cluster
already reads and writes, and a crashed attempt's files go with its temporary checkpoint. Without
a root, a local temporary directory is used, which serves one node (or nodes sharing a file
system).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import uuid
from contextvars import ContextVar
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from curator_stages.io.filesystem import join, resolve

_ROOT: ContextVar[str | None] = ContextVar("curator_stages_scratch_root", default=None)


@contextlib.contextmanager
def scratch_root(path: str | None) -> Iterator[None]:
    """Fits called inside this block keep their scratch files under ``path`` (a local path or
    URL every worker can write and read); None: a local temporary directory."""
    token = _ROOT.set(path)
    try:
        yield
    finally:
        _ROOT.reset(token)


@contextlib.contextmanager
def scratch_directory(label: str) -> Iterator[str]:
    """A fresh directory for one fit's files, removed with them when the block ends (however
    it ends)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:64] or "fit"
    root = _ROOT.get()
    if root is None:
        local = tempfile.mkdtemp(prefix=f"curator-scratch-{name}-")
        try:
            yield local
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    path = join(root, f"_scratch-{name}-{uuid.uuid4().hex[:8]}")
    fs, stripped = resolve(path)
    fs.makedirs(stripped, exist_ok=True)
    try:
        yield path
    finally:
        if fs.exists(stripped):
            fs.rm(stripped, recursive=True)


def write_scratch_table(table: pa.Table, directory: str) -> str:
    """Write ``table`` as a new file in ``directory``; returns its path."""
    path = join(directory, f"{uuid.uuid4().hex}.parquet")
    fs, stripped = resolve(path)
    with fs.open(stripped, "wb") as f:
        pq.write_table(table, f)
    return path


def read_scratch_table(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The ``columns`` (default: all) of a file written by :func:`write_scratch_table`."""
    fs, stripped = resolve(path)
    with fs.open(stripped, "rb") as f:
        return pq.read_table(f, columns=list(columns) if columns is not None else None)
