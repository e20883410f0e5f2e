"""Removing what crashed attempts of a stage task left beside its checkpoint (the work-dir
lock decides when that is safe; see :mod:`~curator_stages.orchestration.work_dir_lock`)."""

from __future__ import annotations

import shutil

from curator_stages.checkpoints.store import URL_STALE_TEMPORARY_AGE_S
from curator_stages.io.filesystem import is_local, last_write_age_s, resolve


def remove_stale_temporaries(final_path: str, older_than_s: float | None = None) -> list[str]:
    """Remove ``<checkpoint>.tmp-*`` siblings left by crashed attempts of the same stage task.

    Call it only while holding the work directory's lock (:mod:`work_dir_lock`): without it, a
    temporary directory may be another run's attempt in progress. Local work dirs (locked)
    remove every one (``older_than_s`` 0); on object stores, where no lock is taken, only those
    nothing was written into for ``older_than_s`` (default :data:`URL_STALE_TEMPORARY_AGE_S`).
    Returns the paths removed.
    """
    fs, p = resolve(final_path.rstrip("/"))
    if older_than_s is None:
        older_than_s = 0.0 if is_local(fs) else URL_STALE_TEMPORARY_AGE_S
    parent = p.rsplit("/", 1)[0]
    if not fs.exists(parent):
        return []
    prefix = p.rsplit("/", 1)[-1] + ".tmp-"
    removed = []
    for entry in fs.ls(parent, detail=False):
        if not entry.rstrip("/").rsplit("/", 1)[-1].startswith(prefix):
            continue
        if older_than_s > 0 and last_write_age_s(fs, entry) < older_than_s:
            continue  # perhaps a live attempt of another run: leave it
        if is_local(fs):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            fs.rm(entry, recursive=True)
        removed.append(entry)
    return removed


__all__ = ["remove_stale_temporaries"]
