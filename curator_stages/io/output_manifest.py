"""``<output>/_curator_outputs.json``: the published snapshot of each flow that writes an output.

The record is the output's commit point (:mod:`output_commit` writes it last): one section per
flow, naming the snapshot (the writer stage task's checkpoint fingerprint), the flow run that
published it, its document counts and its files under ``data/``, ``quarantine/`` and
``dropped/`` (relative to the output) with their size and sha256. A reader of the output trusts
the files of a section, nothing else in those folders; a run deletes only files a section
listed, so the user's files and another pipeline's are never touched. Sections of version 1
(a plain file list) are still read, for pruning only. The leading ``_`` keeps the record out of
any reader's listing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
from typing import Any

from curator_stages.io.filesystem import atomic_write, display_path, join, resolve

MANIFEST_NAME = "_curator_outputs.json"
MANIFEST_FORMAT = "curator_stages.outputs"
MANIFEST_VERSION = 2
#: The output subdirectories whose files a flow publishes and may prune.
OUTPUT_SUBDIRS = ("data", "quarantine", "dropped")


def _strip(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def relative_to(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` when it lies in one of :data:`OUTPUT_SUBDIRS` below it."""
    if ("://" in root) != ("://" in path):
        return None
    if "://" in root:
        base = posixpath.normpath("/" + _strip(root))
        rel = posixpath.relpath(posixpath.normpath("/" + _strip(path)), base)
    else:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")
    return checked(rel)


def checked(rel: Any) -> str | None:
    """A record entry that stays inside an output subdirectory, normalised; else None."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return None
    norm = posixpath.normpath(rel)
    parts = norm.split("/")
    if len(parts) < 2 or parts[0] not in OUTPUT_SUBDIRS or ".." in parts or norm != rel:
        return None
    return norm


def read_sections(output: str, storage_options: dict[str, Any] | None = None
                  ) -> tuple[dict[str, dict[str, Any]], str | None]:
    """(flow name -> section, problem reading the record or None); ({}, None) when absent."""
    fs, path = resolve(join(output, MANIFEST_NAME), storage_options)
    try:
        if not fs.exists(path):
            return {}, None
        with fs.open(path, "rb") as handle:
            doc = json.loads(handle.read().decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            return {}, f"{display_path(fs, path)} is not a {MANIFEST_FORMAT} record"
        flows = doc.get("flows") or {}
        if not isinstance(flows, dict):
            return {}, f"{display_path(fs, path)} has no flows table"
        return {k: v for k, v in flows.items() if isinstance(v, dict)}, None
    except (OSError, ValueError) as exc:
        return {}, f"cannot read {display_path(fs, path)}: {exc}"


def section_files(section: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The checked files of a section: relative path -> {"size", "sha256"} ({} for version 1)."""
    files = (section or {}).get("files") or {}
    if isinstance(files, list):  # version 1: names only
        files = {name: {} for name in files}
    if not isinstance(files, dict):
        return {}
    return {rel: (meta if isinstance(meta, dict) else {}) for rel, meta in files.items()
            if checked(rel) is not None}


def write_section(output: str, flow: str, section: dict[str, Any],
                  storage_options: dict[str, Any] | None = None) -> str:
    """Replace ``flow``'s section of the record (other flows' sections kept), atomically."""
    target = join(output, MANIFEST_NAME)
    flows, _ = read_sections(output, storage_options)  # an unreadable record is replaced
    flows[flow] = {"written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   **section}
    doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "flows": flows}
    payload = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
    atomic_write(target, lambda h: h.write(payload), stage_name="output_manifest",
                 storage_options=storage_options)
    return target


__all__ = ["MANIFEST_NAME", "OUTPUT_SUBDIRS", "checked", "read_sections", "relative_to",
           "section_files", "write_section"]
