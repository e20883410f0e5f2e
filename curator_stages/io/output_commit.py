"""The output commit protocol: a flow run's output is a snapshot, published whole or not at all.

A flow's writers never write into ``<output>/data`` directly. They write into the run's attempt
location, ``<output>/_attempts/<snapshot>/{data,quarantine,dropped}``, where ``snapshot`` is the
writer stage task's checkpoint fingerprint (it covers the flow, the input and every parameter)
and every file name carries it, so two flows or two parameter sets never share a file name.
Only after the run succeeded (its accounting checked), :func:`publish`, under the output's lock:

1. records the intent (``_attempts/<snapshot>/_publish.json``: the files it will move in or
   prune);
2. moves the attempt's files into ``data/``, ``quarantine/``, ``dropped/`` (``os.replace``
   locally; a copy on object stores);
3. writes ``_curator_outputs.json`` (:mod:`output_manifest`), the commit point: the flow's
   section names the snapshot, the flow run, the counts and each file with size and sha256;
4. deletes the previous snapshot's files of this flow (only files its section listed) and the
   attempt location.

A failure before step 3 leaves the previous snapshot listed and whole. The intent names every
file the publish moves in or prunes, and :func:`clean_unfinished` (at the next run's start)
deletes those no section lists: the new files of a publish that died before step 3, the old
ones of a publish that died after it. Nothing is orphaned. A reader trusts only the files a section lists
(:func:`published_files`), and a run whose writer was served from its checkpoint proves the
published snapshot with :func:`verify` before it reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

from curator_stages.io.filesystem import (
    display_path, is_local, join, last_write_age_s, put_bytes, resolve,
)
from curator_stages.io.output_manifest import (
    checked, read_sections, relative_to, section_files, write_section,
)
from curator_stages.io.path_safety import refuse_link_below

#: Where runs stage their files before publishing (``_``: no reader lists it).
ATTEMPTS_DIR = "_attempts"
#: The record of an unfinished publish inside its attempt location.
INTENT_FILE = "_publish.json"
#: On object stores (no lock) an attempt is only cleaned once nothing was written into it for
#: this long: a younger one may be another run's attempt in progress.
URL_STALE_ATTEMPT_AGE_S = 6 * 3600.0
_CHUNK = 1 << 20


class OutputCommitError(RuntimeError):
    """A file to publish is not in the run's attempt location (nothing was published)."""


@dataclass
class PublishResult:
    """What :func:`publish` did, for the flow's log."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Files of the previous snapshot that were deleted.
    removed: list[str] = field(default_factory=list)
    #: Previous files that could not be deleted (kept in the section as ``stale``, retried).
    failed: list[str] = field(default_factory=list)
    #: The previous record could not be read (nothing was pruned because of it).
    unreadable: str | None = None


def attempt_root(output: str, snapshot: str) -> str:
    """The run's own location under ``output`` for the snapshot ``snapshot``."""
    return join(output.rstrip("/"), ATTEMPTS_DIR, snapshot)


def file_digest(fs: Any, path: str) -> dict[str, Any]:
    """{"size", "sha256"} of a file (streamed: a file of any size in bounded memory)."""
    h, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def publish(output: str, flow: str, snapshot: str, written: Iterable[str],
            run: dict[str, Any] | None = None,
            storage_options: dict[str, Any] | None = None) -> PublishResult:
    """Publish the attempt of ``snapshot``: ``written`` (its files, as the writers named them)
    become ``flow``'s snapshot in ``output``; see the module docstring for the order."""
    out = output.rstrip("/")
    attempt = attempt_root(out, snapshot)
    fs, base = resolve(out, storage_options)
    _, staged = resolve(attempt, storage_options)
    moves: dict[str, str] = {}
    for path in written:
        rel = relative_to(attempt, path)
        if rel is None:
            raise OutputCommitError(
                f"output {out!r}: {path!r} is not in the run's attempt location {attempt!r} "
                "(data/, quarantine/ or dropped/ below it); a flow's writers must write under "
                "its output, which the flow stages into the attempt location")
        moves[rel] = posixpath.join(staged, rel)
    _refuse_links(fs, base, [posixpath.join(ATTEMPTS_DIR, snapshot, r) for r in moves])
    result = PublishResult(files={rel: file_digest(fs, src) for rel, src in moves.items()})
    sections, result.unreadable = read_sections(out, storage_options)
    previous = sections.get(flow)
    stale: set[str] = set()
    if result.unreadable is None and previous is not None:  # an unreadable record prunes nothing
        others = {rel for name, s in sections.items() if name != flow for rel in section_files(s)}
        left = previous.get("stale") if isinstance(previous.get("stale"), list) else []
        stale = (set(section_files(previous)) | set(filter(None, map(checked, left)))) - others
        stale -= set(result.files)
    _refuse_links(fs, base, [*moves, *stale])  # never move or delete through a planted link
    # The intent names every file this publish moves in or prunes: what a crash leaves behind,
    # the next run's clean_unfinished deletes unless a section lists it.
    put_bytes(join(attempt, INTENT_FILE), json.dumps(
        {"flow": flow, "snapshot": snapshot, "files": sorted({*moves, *stale})}).encode(),
        storage_options)
    for rel, src in sorted(moves.items()):
        _move(fs, src, posixpath.join(base, rel))
    section = {"snapshot": snapshot, **(run or {}), "files": result.files}
    write_section(out, flow, section, storage_options)  # the commit point
    for rel in sorted(stale):
        target = posixpath.join(base, rel)
        try:
            if fs.exists(target):
                fs.rm_file(target)
                result.removed.append(display_path(fs, target))
        except OSError:
            result.failed.append(rel)
    if result.failed:
        write_section(out, flow, {**section, "stale": result.failed}, storage_options)
    _remove_tree(fs, staged)
    if is_local(fs):  # no empty _attempts/ left beside a published snapshot
        try:
            os.rmdir(posixpath.join(base, ATTEMPTS_DIR))
        except OSError:
            pass  # another attempt is still there (its run failed): the next run cleans it
    return result


def verify(output: str, flow: str, snapshot: str,
           storage_options: dict[str, Any] | None = None) -> str | None:
    """None when ``flow``'s published snapshot in ``output`` is ``snapshot`` and every file it
    lists has its recorded size and sha256; else what differs, in words."""
    sections, problem = read_sections(output, storage_options)
    if problem:
        return problem
    section = sections.get(flow)
    if section is None:
        return f"{output!r} has no published snapshot of flow {flow!r}"
    if section.get("snapshot") != snapshot:
        return (f"the snapshot published in {output!r} ({section.get('snapshot')}) is not this "
                f"run's ({snapshot})")
    fs, base = resolve(output.rstrip("/"), storage_options)
    for rel, meta in section_files(section).items():
        target = posixpath.join(base, rel)
        try:
            found = file_digest(fs, target)
        except OSError:
            return f"published file {rel!r} in {output!r} is missing or unreadable"
        if found != {"size": meta.get("size"), "sha256": meta.get("sha256")}:
            return f"published file {rel!r} in {output!r} changed since it was published"
    return None


def published_files(output: str, snapshot: str | None = None,
                    storage_options: dict[str, Any] | None = None) -> list[str] | None:
    """The files (relative to ``output``) of the published snapshot ``snapshot`` (of every
    flow's, when None); None when ``output`` has no record (not a flow's output)."""
    sections, problem = read_sections(output, storage_options)
    if not sections and problem is None:
        return None
    return sorted({rel for s in sections.values()
                   if snapshot is None or s.get("snapshot") == snapshot
                   for rel in section_files(s)})


def clean_unfinished(output: str, storage_options: dict[str, Any] | None = None,
                     older_than_s: float | None = None) -> list[str]:
    """Delete what unfinished runs left in ``output``: each attempt location, and the files an
    unfinished publish had moved (named by its intent) that no section lists. Call it under the
    output's lock; on object stores (no lock) only attempts untouched for ``older_than_s``
    (default :data:`URL_STALE_ATTEMPT_AGE_S`) go. Returns the paths removed."""
    fs, base = resolve(output.rstrip("/"), storage_options)
    root = posixpath.join(base, ATTEMPTS_DIR)
    if older_than_s is None:
        older_than_s = 0.0 if is_local(fs) else URL_STALE_ATTEMPT_AGE_S
    _refuse_links(fs, base, [ATTEMPTS_DIR])  # the writers write below it: no link allowed
    if not fs.isdir(root):
        return []
    sections, problem = read_sections(output, storage_options)
    if problem:
        return []  # what is published is unknown: delete nothing
    listed = {rel for s in sections.values() for rel in section_files(s)}
    removed: list[str] = []
    for attempt in fs.ls(root, detail=False):
        if older_than_s > 0 and last_write_age_s(fs, attempt) < older_than_s:
            continue
        try:
            with fs.open(posixpath.join(attempt, INTENT_FILE), "rb") as handle:
                moved = json.loads(handle.read()).get("files") or []
        except (OSError, ValueError, AttributeError):
            moved = []
        left = False
        for rel in filter(None, (checked(m) for m in moved)):
            target = posixpath.join(base, rel)
            _refuse_links(fs, base, [rel])
            try:
                if rel not in listed and fs.isfile(target):
                    fs.rm_file(target)
                    removed.append(display_path(fs, target))
            except OSError:
                left = True  # the intent stays with its attempt: the next run tries again
        if left:
            continue
        _remove_tree(fs, attempt)
        removed.append(display_path(fs, attempt))
    return removed


def _refuse_links(fs: Any, base: str, rels: Iterable[str]) -> None:
    """Inside the output, follow no symbolic link this product did not create (local only)."""
    if is_local(fs):
        for rel in rels:
            refuse_link_below("output", base, rel)


def _move(fs: Any, src: str, dst: str) -> None:
    if is_local(fs):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
    else:  # object stores have no rename: a server-side copy; the attempt is removed after
        fs.copy(src, dst)


def _remove_tree(fs: Any, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except OSError:
        pass  # a leftover attempt is removed by the next run


__all__ = ["ATTEMPTS_DIR", "INTENT_FILE", "OutputCommitError", "PublishResult", "attempt_root",
           "clean_unfinished", "file_digest", "publish", "published_files", "verify"]
