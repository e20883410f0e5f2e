"""The one thing Prefect tasks hand each other: a small pointer to a stage's output on disk.

A Ray ``Dataset`` or ``ObjectRef`` is lazy, hashes differently on every run and dies with the
process that owns it, so it can neither be cached nor survive a retry or a crash. A
:class:`DatasetRef` is a frozen, picklable value: the checkpoint directory, the fingerprint that
names it, and the counts the run summary and the next stage need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetRef:
    """Where a stage's output lives and what it holds.

    ``path`` is ``None`` only for the seed of a pipeline (the reader starts from one empty task):
    then ``fingerprint`` identifies the input files instead of a checkpoint.
    """

    path: str | None
    fingerprint: str
    num_tasks: int = 0
    num_documents: int = 0
    #: Stage names that produced this output (the last fused group), for reports.
    stages: tuple[str, ...] = ()
    #: Per-stage counts of this stage task as JSON (a string keeps the reference hashable);
    #: see :mod:`curator_stages.accounting`.
    stats_json: str = field(default="{}", compare=False)

    @classmethod
    def seed(cls, fingerprint: str) -> "DatasetRef":
        """The input of a pipeline whose first stage creates its own work (lists files)."""
        return cls(path=None, fingerprint=fingerprint, num_tasks=1, num_documents=0)

    @property
    def is_seed(self) -> bool:
        return self.path is None

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_json or "{}")

    def short(self) -> str:
        where = self.path or "<seed>"
        return (f"{where} [{self.fingerprint[:12]}] "
                f"{self.num_tasks} tasks, {self.num_documents} documents")
