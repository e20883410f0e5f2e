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

FINGERPRINT_VERSION = "1"


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


def resolve_input_files(pattern: str | Sequence[str],
                        file_extensions: Sequence[str] | None = None) -> list[str]:
    """The files a reader of ``pattern`` (file, directory, glob, or a list; local or fsspec URL)
    reads, sorted: the file partitioner's own listing, so that a cache fingerprint covers exactly
    the files the pipeline reads (hidden ``_``/``.`` names below the root skipped, ``file_extensions``
    applied to directories and globs). An empty match gives ``[]``.
    """
    from curator_stages.io.partition import FilePartitioningStage, NoInputFilesError

    try:
        listed, _ = FilePartitioningStage(pattern, file_extensions=file_extensions).list_files()
    except NoInputFilesError:
        return []
    return [path for path, _ in listed]


#: How the input is recognised between runs (a flow's ``verify_input`` parameter).
VerifyInput = Literal["metadata", "content"]
_CHUNK = 4 << 20
#: Object-store metadata that changes whenever an object's bytes do (first found wins).
_VERSION_KEYS = ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash", "md5")


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


def input_fingerprint(files: Sequence[str], extra: Any = None,
                      verify: VerifyInput = "metadata") -> str:
    """Hash of the input file list with what identifies each file's content.

    ``verify="metadata"`` (default): each file's size and modification time, what build tools
    use. It reads no data, and misses only an edit that keeps the size and restores the mtime.
    ``verify="content"``: each file's bytes (xxh3_128), or an object store's version id or ETag
    where fsspec's ``info()`` gives one, which catches that edit too at the cost of reading the
    corpus once per run (local files).
    """
    if verify not in ("metadata", "content"):
        raise ValueError(f"verify must be 'metadata' or 'content', got {verify!r}")
    parts = ["input-files" if verify == "metadata" else "input-files-content"]
    listed = _listed_infos(files)
    for path in sorted(files):
        fs, p = resolve(path)
        info = listed.get(path) or fs.info(p)
        if verify == "content":
            parts.append(f"{path}|{info.get('size')}|{content_digest(fs, p, info)}")
            continue
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
        parts.append(f"{path}|{info.get('size')}|{mtime}")
    if extra is not None:
        parts.append(json.dumps(extra, sort_keys=True, default=repr))
    return _sha(parts)
