"""Where files live and how to write them safely: fsspec resolution and atomic writes.

Every I/O stage goes through fsspec so that ``/local/path``, ``file://``, ``memory://`` and any
scheme whose fsspec package is installed (``s3://`` with s3fs, ...) behave the same. Local paths
stay plain paths (not ``file://`` URLs) so that ids, logs and error messages read naturally.

Writes are atomic: bytes go to a temporary name that no reader picks up (it starts with ``_``,
which the file partitioner skips), and only a complete file is renamed to its final name. A
crash, a retry or a full disk therefore never leaves a file that *looks* complete.
"""

from __future__ import annotations

import errno
import os
import posixpath
import uuid
from typing import Any, Callable, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem


class OutputNotWritableError(PermissionError):
    """The output location refuses writes (permissions or a read-only filesystem)."""


class OutputExistsError(FileExistsError):
    """A writer in mode ``"error"`` found its target file already there."""


class OutputWriteError(OSError):
    """Writing an output file failed for another OS reason (disk full, quota, not a directory).

    The OS error alone often names no path (``[Errno 28] No space left on device``); this one
    names the stage and the file, keeps the ``errno``, and says that nothing partial was left.
    """


def resolve(path: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of ``path`` and the path as that filesystem names it (no protocol)."""
    fs, stripped = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs, stripped


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def display_path(fs: fsspec.AbstractFileSystem, stripped: str) -> str:
    """The path a user (and a later ``fsspec.open``) should see: plain for local files, a URL otherwise."""
    if is_local(fs):
        return stripped
    return fs.unstrip_protocol(stripped)


def join(base: str, *parts: str) -> str:
    """Join onto a local path or URL with forward slashes (fsspec paths are POSIX-like)."""
    if "://" in base or os.sep == "/":
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)  # pragma: no cover - non-POSIX hosts


_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_FIXES = {
    errno.ENOSPC: "free space on that filesystem or write to a larger one",
    errno.EDQUOT: "raise the quota or write somewhere else",
    errno.EFBIG: "write smaller files (fewer documents per task) or use another filesystem",
    errno.ENOTDIR: "a component of the path is a file, not a directory; fix the output path",
    errno.EEXIST: "a component of the path is a file, not a directory; fix the output path",
}


def atomic_write(
    path: str,
    write: Callable[[BinaryIO], None],
    *,
    stage_name: str,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write ``path`` through ``write(fileobj)`` so that it appears complete or not at all.

    Local files: a temporary sibling ``_tmp.<name>.<random>`` then ``os.replace`` (atomic on POSIX).
    Other filesystems (object stores have no rename): the bytes are staged under ``_staging/`` of
    the output directory and moved into place; object stores publish an object only when its upload
    completes, so the final name still never holds a partial file. The temporary is removed on any
    failure. A permission or read-only-filesystem failure becomes :class:`OutputNotWritableError`
    naming the stage and the path.
    """
    fs, target = resolve(path, storage_options)
    parent = posixpath.dirname(target) if not is_local(fs) else os.path.dirname(target)
    name = posixpath.basename(target)
    token = uuid.uuid4().hex[:10]
    if is_local(fs):
        tmp = os.path.join(parent, f"_tmp.{name}.{token}")
    else:
        tmp = posixpath.join(parent, "_staging", f"{name}.{token}")
    try:
        try:
            fs.makedirs(parent, exist_ok=True)
            if not is_local(fs):
                fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
            with fs.open(tmp, "wb") as handle:
                write(handle)
            if is_local(fs):
                os.replace(tmp, target)
            else:
                fs.mv(tmp, target)
        except BaseException:
            _remove_quietly(fs, tmp)
            raise
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno in _UNWRITABLE:
            raise OutputNotWritableError(
                f"stage {stage_name!r}: cannot write {display_path(fs, target)!r}: {exc.strerror or exc}; "
                "choose an output directory this process may write to (check its permissions "
                "and that the filesystem is not mounted read-only)"
            ) from exc
        if isinstance(exc, OutputWriteError):
            raise
        fix = _FIXES.get(exc.errno or -1, "check the output location and re-run")
        err = OutputWriteError(
            f"stage {stage_name!r}: cannot write {display_path(fs, target)!r}: "
            f"{exc.strerror or exc} (errno {exc.errno}); {fix}. No partial file was left "
            "under the final name; a re-run rewrites it"
        )
        err.errno = exc.errno
        raise err from exc


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        pass
