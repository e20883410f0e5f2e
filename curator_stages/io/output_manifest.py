"""The record of the files a flow wrote into its output, so it prunes only its own files.

A re-run with other parameters writes other file names, and the earlier run's files would stay
beside the new ones (a reader of ``<output>/data`` would see both). Deleting "every file this run
did not write" removed the user's input when the output contained it, and another pipeline's
files in a shared output directory. So each run records what it wrote in
``<output>/_curator_outputs.json`` (one section per flow, each with the run's time and the files
under ``data/``, ``quarantine/`` and ``dropped/``, relative to the output), and the next run of
that flow deletes only files listed there that it did not write again. Every other file is left
alone, however it got there. The leading ``_`` keeps the record out of any reader's listing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

from curator_stages.io.filesystem import atomic_write, display_path, is_local, join, resolve
from curator_stages.io.path_safety import refuse_link_below

MANIFEST_NAME = "_curator_outputs.json"
MANIFEST_FORMAT = "curator_stages.outputs"
MANIFEST_VERSION = 1
#: The output subdirectories whose files a flow records and may prune.
OUTPUT_SUBDIRS = ("data", "quarantine", "dropped")


@dataclass
class PruneResult:
    """What :func:`prune_and_record` did, for the flow's log."""

    removed: list[str] = field(default_factory=list)
    #: Files under the output subdirectories that no manifest of this flow lists (left alone).
    unknown: int = 0
    #: The previous manifest could not be read (nothing was deleted because of it).
    unreadable: str | None = None
    #: Files that should have been removed but could not be (kept in the manifest for next time).
    failed: list[str] = field(default_factory=list)


def _strip(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def relative_output(output: str, path: str) -> str | None:
    """``path`` relative to ``output`` when it lies in one of :data:`OUTPUT_SUBDIRS`, else None."""
    if ("://" in output) != ("://" in path):
        return None
    if "://" in output:
        base = posixpath.normpath("/" + _strip(output))
        rel = posixpath.relpath(posixpath.normpath("/" + _strip(path)), base)
    else:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(output)).replace(os.sep, "/")
    return _checked(rel)


def _checked(rel: Any) -> str | None:
    """A manifest entry that stays inside an output subdirectory, normalised; else None."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return None
    norm = posixpath.normpath(rel)
    parts = norm.split("/")
    if len(parts) < 2 or parts[0] not in OUTPUT_SUBDIRS or ".." in parts or norm != rel:
        return None
    return norm


def read_manifest(output: str, flow: str,
                  storage_options: dict[str, Any] | None = None) -> tuple[list[str], str | None]:
    """(files this flow recorded last time, problem reading the manifest or None)."""
    fs, path = resolve(join(output, MANIFEST_NAME), storage_options)
    if not fs.exists(path):
        return [], None
    try:
        with fs.open(path, "rb") as handle:
            doc = json.loads(handle.read().decode("utf-8"))
        if doc.get("format") != MANIFEST_FORMAT:
            return [], f"{display_path(fs, path)} is not a {MANIFEST_FORMAT} record"
        files = ((doc.get("flows") or {}).get(flow) or {}).get("files") or []
    except (OSError, ValueError, AttributeError) as exc:
        return [], f"cannot read {display_path(fs, path)}: {exc}"
    return [f for f in (_checked(x) for x in files) if f is not None], None


def write_manifest(output: str, flow: str, files: Iterable[str],
                   storage_options: dict[str, Any] | None = None) -> str:
    """Record ``files`` (relative to ``output``) as this flow's outputs; other flows' kept."""
    target = join(output, MANIFEST_NAME)
    fs, path = resolve(target, storage_options)
    doc: dict[str, Any] = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "flows": {}}
    try:
        if fs.exists(path):
            with fs.open(path, "rb") as handle:
                old = json.loads(handle.read().decode("utf-8"))
            if old.get("format") == MANIFEST_FORMAT and isinstance(old.get("flows"), dict):
                doc["flows"] = {k: v for k, v in old["flows"].items() if k != flow}
    except (OSError, ValueError, AttributeError):
        pass  # an unreadable record is replaced; it never caused a deletion (read_manifest)
    doc["flows"][flow] = {
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(set(files)),
    }
    payload = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
    atomic_write(target, lambda h: h.write(payload), stage_name="output_manifest",
                 storage_options=storage_options)
    return target


def prune_and_record(output: str, flow: str, written: Iterable[str],
                     storage_options: dict[str, Any] | None = None) -> PruneResult:
    """Delete this flow's earlier outputs that this run did not rewrite, then record this run's.

    ``written``: the paths (local or URLs) the run's writers produced. Only files the previous
    manifest lists are candidates; a file no manifest lists is counted, never touched. A
    candidate reached through a symbolic link inside ``output`` raises ``ValueError`` (naming
    the link), before anything is deleted through it.
    """
    result = PruneResult()
    current = {r for r in (relative_output(output, p) for p in written) if r is not None}
    previous, result.unreadable = read_manifest(output, flow, storage_options)
    fs, base = resolve(output, storage_options)
    for rel in sorted(set(previous) - current):
        target = posixpath.join(base, rel)
        if is_local(fs):
            refuse_link_below("output", base, rel)  # never delete through a link
        try:
            if fs.exists(target):
                fs.rm_file(target)
                result.removed.append(display_path(fs, target))
        except OSError:
            result.failed.append(rel)
    listed = current | set(previous)
    for sub in OUTPUT_SUBDIRS:
        root = posixpath.join(base, sub)
        if not fs.isdir(root):
            continue
        for found in fs.find(root):
            rel = relative_output(output, display_path(fs, found))
            if rel is None or rel not in listed:
                result.unknown += 1
    write_manifest(output, flow, current | set(result.failed), storage_options)
    return result


__all__ = ["MANIFEST_NAME", "OUTPUT_SUBDIRS", "PruneResult", "prune_and_record",
           "read_manifest", "relative_output", "write_manifest"]
