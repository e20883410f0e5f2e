"""Fingerprints: the names of stage outputs, and so the cache keys of stage tasks.

fingerprint(output) = sha256(fingerprint(input), identity(stage_1), ..., identity(stage_n)).
Equal fingerprints mean equal outputs (a stage's identity is its class, parameters and version,
see :meth:`ProcessingStage.identity`), so a stage whose fingerprint already has a complete
checkpoint need not run again, and changing one parameter changes the fingerprint of that stage
and of every stage after it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any, Iterable, Literal, Sequence

import fsspec

from curator_stages.io.filesystem import resolve
from curator_stages.io.listing import VERSION_KEYS, InputListing, listed_file
from curator_stages.io.partition import FilePartitioningStage

FINGERPRINT_VERSION = "1"


def list_run_input(stages: Iterable[Any]) -> InputListing | None:
    """List the input of every file partitioner among ``stages`` once, hand each its listing,
    and return them together (None when no stage lists files).

    The run's fingerprint is then computed from what the partitioners will read, and their
    stage tasks do not list again. Raises the partitioner's ``NoInputFilesError`` on an empty
    input, before any work starts.
    """
    listings = []
    for stage in stages:
        if isinstance(stage, FilePartitioningStage):
            listings.append(stage.use_listing(stage.list_input()))
    return InputListing.merged(listings) if listings else None


def _sha(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def stage_identity(stage: Any) -> dict[str, Any]:
    """The identity of a stage for fingerprints (class, version, parameters)."""
    identity = getattr(stage, "identity", None)
    if callable(identity):
        return identity()
    cls = type(stage)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(stage)}


def stages_fingerprint(input_fingerprint: str, stages: Sequence[Any]) -> str:
    """The fingerprint of the output of ``stages`` run in order on the input so named."""
    return _sha(
        [f"curator-stages-fingerprint-v{FINGERPRINT_VERSION}", input_fingerprint]
        + [json.dumps(stage_identity(s), sort_keys=True, separators=(",", ":"), default=repr)
           for s in stages]
    )


def list_input(pattern: str | Sequence[str],
               file_extensions: Sequence[str] | None = None) -> InputListing | None:
    """The files a reader of ``pattern`` (file, directory, glob, or a list; local or fsspec URL)
    reads, with their sizes and version metadata: the file partitioner's own listing, so that a
    fingerprint covers exactly the files the pipeline reads (hidden ``_``/``.`` names below the
    root skipped, ``file_extensions`` applied to directories and globs). None on an empty match.
    """
    from curator_stages.io.partition import FilePartitioningStage, NoInputFilesError

    try:
        return FilePartitioningStage(pattern, file_extensions=file_extensions).list_input()
    except NoInputFilesError:
        return None


def resolve_input_files(pattern: str | Sequence[str],
                        file_extensions: Sequence[str] | None = None) -> list[str]:
    """The paths of :func:`list_input`, sorted; ``[]`` on an empty match."""
    listing = list_input(pattern, file_extensions)
    return listing.paths if listing is not None else []


#: How the input is recognised between runs (a flow's ``verify_input`` parameter).
VerifyInput = Literal["metadata", "content"]
_CHUNK = 4 << 20
_VERSION_KEYS = VERSION_KEYS


def content_digest(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> str:
    """A digest of one file's bytes: the store's version id or ETag when ``info`` has one
    (no read), else xxh3_128 of the bytes, streamed in 4 MiB chunks."""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value:
            return f"{key}:{str(value).strip(chr(34))}"
    import xxhash

    h = xxhash.xxh3_128()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return f"xxh3_128:{h.hexdigest()}"


def _listed_infos(files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Object-store metadata of ``files`` from one recursive listing of their common prefix.

    Asking ``info()`` per object costs one HEAD request each: 100k objects would take minutes.
    A listing returns size, ETag and LastModified for 1000 objects per request. Local files are
    left to ``info()`` (a stat). Objects missing from the listing fall back to ``info()`` too.
    """
    urls = sorted(f for f in files if "://" in f and not f.startswith("file://"))
    if len(urls) < 2 or len({u.split("://", 1)[0] for u in urls}) > 1:
        return {}
    fs, first = resolve(urls[0])
    stripped = {u: resolve(u)[1] for u in urls}
    prefix = posixpath.commonpath([posixpath.dirname(p) for p in stripped.values()])
    if not prefix.strip("/"):
        return {}  # several buckets: no one listing covers them
    try:
        listing = fs.find(prefix, detail=True)
    except OSError:
        return {}
    return {u: listing[p] for u, p in stripped.items() if p in listing}


def input_fingerprint(files: Sequence[str] | InputListing, extra: Any = None,
                      verify: VerifyInput = "metadata") -> str:
    """Hash of the input file list with what identifies each file's content.

    ``verify="metadata"`` (default): each file's size and modification time, what build tools
    use. It reads no data, and misses only an edit that keeps the size and restores the mtime.
    ``verify="content"``: each file's bytes (xxh3_128), or an object store's version id or ETag
    where the listing gives one, which catches that edit too at the cost of reading the
    corpus once per run (local files).

    ``files``: the run's :class:`~curator_stages.io.listing.InputListing` (what a flow passes:
    its metadata is used as listed, nothing is listed or asked again), or paths, whose metadata
    is then fetched (one listing of their common prefix on an object store, else ``info()``).
    Both give the same fingerprint for the same files.
    """
    if verify not in ("metadata", "content"):
        raise ValueError(f"verify must be 'metadata' or 'content', got {verify!r}")
    parts = ["input-files" if verify == "metadata" else "input-files-content"]
    if isinstance(files, InputListing):
        entries = list(files.files)
        parts += [f"bad-name:{f.path}|{f.size}|{f.modified}" for f in files.bad_names]
    else:
        listed = _listed_infos(files)
        entries = [listed_file(path, listed.get(path) or _info(path)) for path in files]
    for entry in sorted(entries, key=lambda f: f.path):
        if verify == "content":
            digest = entry.version or _bytes_digest(entry.path)
            parts.append(f"{entry.path}|{entry.size}|{digest}")
            continue
        parts.append(f"{entry.path}|{entry.size}|{entry.modified}")
    if extra is not None:
        parts.append(json.dumps(extra, sort_keys=True, default=repr))
    return _sha(parts)


def _info(path: str) -> dict[str, Any]:
    fs, p = resolve(path)
    return fs.info(p)


def _bytes_digest(path: str) -> str:
    fs, p = resolve(path)
    return content_digest(fs, p, {})
