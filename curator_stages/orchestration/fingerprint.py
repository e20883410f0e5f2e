"""Fingerprints: the names of stage outputs, and so the cache keys of stage tasks.

fingerprint(output) = sha256(fingerprint(input), identity(stage_1), ..., identity(stage_n)).
Equal fingerprints mean equal outputs (a stage's identity is its class, parameters and version,
see :meth:`ProcessingStage.identity`), so a stage whose fingerprint already has a complete
checkpoint need not run again, and changing one parameter changes the fingerprint of that stage
and of every stage after it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any, Iterable, Sequence

import fsspec

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


def resolve_input_files(pattern: str | Sequence[str]) -> list[str]:
    """The files an input path, directory or glob names, sorted (local paths or fsspec URLs)."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    files: list[str] = []
    for pat in patterns:
        fs, _, _ = fsspec.get_fs_token_paths(pat)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        local = protocol in ("file", "local")
        if local:
            pat = os.path.expanduser(pat)
        if glob.has_magic(pat):
            found = fs.glob(pat)
        elif fs.isdir(pat):
            found = [p for p in fs.find(pat) if not os.path.basename(p).startswith((".", "_"))]
        elif fs.exists(pat):
            found = [pat]
        else:
            found = []
        if local:
            files.extend(os.path.abspath(p) for p in found)
        else:
            files.extend(f"{protocol}://{p}" if "://" not in p else p for p in found)
    return sorted(set(files))


def input_fingerprint(files: Sequence[str], extra: Any = None) -> str:
    """Hash of the input file list with each file's size and modification time.

    Content hashing would read the whole corpus before any work; size + mtime is what build
    tools use and catches every rewrite short of a same-size same-second edit.
    """
    parts = ["input-files"]
    for path in sorted(files):
        fs, _, (p,) = fsspec.get_fs_token_paths(path)
        info = fs.info(p)
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
        parts.append(f"{path}|{info.get('size')}|{mtime}")
    if extra is not None:
        parts.append(json.dumps(extra, sort_keys=True, default=repr))
    return _sha(parts)
