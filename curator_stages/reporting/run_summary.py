"""``run_summary.json``: the run's :class:`~curator_stages.accounting.RunSummary`, on disk."""

from __future__ import annotations

import json
import os

from curator_stages.accounting import RUN_SUMMARY_FILE, RunSummary
from curator_stages.io.filesystem import put_bytes


def write_run_summary(summary: RunSummary, directory: str) -> str:
    """Write ``run_summary.json`` into ``directory`` (atomic: temp then rename); its path."""
    if "://" not in directory:
        directory = os.path.abspath(directory)
    path = f"{directory.rstrip('/')}/{RUN_SUMMARY_FILE}"
    put_bytes(path, json.dumps(summary.to_dict(), indent=2, default=repr).encode())
    return path
