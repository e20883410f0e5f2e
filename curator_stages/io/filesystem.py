"""Where files live and how to write them safely: fsspec resolution and atomic writes.

Every I/O stage goes through fsspec so that ``/local/path``, ``file://``, ``memory://`` and any
scheme whose fsspec package is installed (``s3://`` with s3fs, ...) behave the same. Local paths
stay plain paths (not ``file://`` URLs) so that ids, logs and error messages read naturally.

Writes are atomic: on local disks bytes go to a temporary name that no reader picks up (it
starts with ``_``, which the file partitioner skips), and only a complete file is renamed to its
final name. Object stores have no rename (a "move" is a copy and a delete), but they publish an
object only when its upload completes: there a file is encoded in memory and sent in one upload,
so a failure before the upload leaves nothing. A crash, a retry or a full disk therefore never
leaves a file that *looks* complete.

Object stores are reached with the credentials of the standard places (environment variables,
the AWS profile and config files, instance roles; ``AWS_ENDPOINT_URL`` for S3-compatible
servers): this module never takes, logs or stores a key. Throttling (503 SlowDown), server errors
and dropped connections are retried by botocore's own retry machinery with exponential backoff
and jitter, up to :data:`S3_RETRY_MAX_ATTEMPTS` attempts (see :func:`storage_options_for`).
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import time
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


#: Attempts per S3 request (the first one included) before an error names the object. With
#: botocore's "standard" mode the waits grow exponentially (base 2, full jitter, capped at 20 s),
#: so 10 attempts ride out about a minute of throttling.
S3_RETRY_MAX_ATTEMPTS = 10
_S3_PROTOCOLS = ("s3", "s3a")


def storage_options_for(path: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``storage_options`` with this product's defaults for ``path``'s scheme filled in.

    For ``s3://``: botocore retries in ``"standard"`` mode (503 SlowDown, 500/502/504,
    connection resets and timeouts; exponential backoff with jitter) up to
    :data:`S3_RETRY_MAX_ATTEMPTS`. A caller's own ``config_kwargs["retries"]`` wins. Nothing
    here names a server or a credential: the same options serve AWS S3, MinIO or GCS's S3 API.
    """
    options = dict(storage_options or {})
    protocol = path.split("://", 1)[0].lower() if "://" in path else "file"
    if protocol in _S3_PROTOCOLS:
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("retries", {"max_attempts": S3_RETRY_MAX_ATTEMPTS, "mode": "standard"})
        options["config_kwargs"] = config
    return options


#: Seconds an object store's endpoint has to accept a TCP connection before a run refuses it
#: (botocore's retries would otherwise take minutes to give up on an endpoint that is down).
ENDPOINT_PROBE_S = 5.0


class EndpointUnreachableError(ConnectionError):
    """An object store's endpoint accepts no connection; the message names it."""


def probe_endpoint(path: str, storage_options: dict[str, Any] | None = None,
                   timeout_s: float = ENDPOINT_PROBE_S) -> None:
    """Raise :class:`EndpointUnreachableError` naming the endpoint when ``path``'s S3 endpoint
    accepts no TCP connection within ``timeout_s``; other paths are left alone.

    One connection attempt, no request and no credential sent: a store that is down fails a
    run in seconds, in one line, instead of after every retry of every request.
    """
    protocol = path.split("://", 1)[0].lower() if "://" in path else "file"
    if protocol not in _S3_PROTOCOLS:
        return
    import socket
    from urllib.parse import urlsplit

    fs, _ = resolve(path, storage_options)
    fs.connect()  # builds the client (endpoint from options, AWS_ENDPOINT_URL or the region)
    endpoint = fs.s3.meta.endpoint_url
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EndpointUnreachableError(
            f"the S3 endpoint {endpoint} (for {path}) accepts no connection within "
            f"{timeout_s:.0f} s: {exc.strerror or exc}; check AWS_ENDPOINT_URL (or the "
            "endpoint_url of the storage options), that the server runs, and the network"
        ) from None


def resolve(path: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of ``path`` and the path as that filesystem names it (no protocol).

    The one place paths become filesystems (checkpoints, writers, listings), so every caller
    gets the same retry defaults (:func:`storage_options_for`).
    """
    fs, stripped = fsspec.core.url_to_fs(path, **storage_options_for(path, storage_options))
    return fs, stripped


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def exists(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, stripped = resolve(path, storage_options)
    return fs.exists(stripped)


def put_bytes(path: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Publish ``data`` at ``path`` whole or not at all: local temp + rename, else one upload.

    Raises the filesystem's own ``OSError``; callers add what they were writing.
    """
    fs, target = resolve(path, storage_options)
    if not is_local(fs):
        _upload(fs, target, data)
        return
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"_tmp.{os.path.basename(target)}.{uuid.uuid4().hex[:10]}")
    try:
        with open_new(tmp) as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise


def last_write_age_s(fs: fsspec.AbstractFileSystem, path: str) -> float:
    """Seconds since anything under ``path`` was last written (0 when unknown: keep it)."""
    newest = None
    try:
        for info in fs.find(path, detail=True, withdirs=False).values():
            stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
            if hasattr(stamp, "timestamp"):
                stamp = stamp.timestamp()
            if isinstance(stamp, (int, float)):
                newest = stamp if newest is None else max(newest, stamp)
    except (OSError, ValueError):
        return 0.0
    return 0.0 if newest is None else max(0.0, time.time() - float(newest))


def open_new(path: str) -> BinaryIO:
    """A local file created now for writing: ``O_EXCL`` (it must not exist) and ``O_NOFOLLOW``.

    Temporary files live in directories others may write to (a shared work dir or output): a
    link planted under the temporary's name would otherwise be followed and its target
    overwritten. Callers give random names, so a planted name fails the write instead.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "wb")


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

    Local files: a new temporary sibling ``_tmp.<name>.<random>`` (:func:`open_new`: never
    through a planted link) then ``os.replace`` (atomic on POSIX).
    Other filesystems (object stores have no rename, and a streamed upload that fails midway
    may still publish what it had on close): the file is encoded in memory and published in one
    upload, so the final name never holds a partial file. The temporary is removed on any
    failure. A permission or read-only-filesystem failure becomes :class:`OutputNotWritableError`
    naming the stage and the path.
    """
    fs, target = resolve(path, storage_options)
    parent = posixpath.dirname(target) if not is_local(fs) else os.path.dirname(target)
    name = posixpath.basename(target)
    token = uuid.uuid4().hex[:10]
    tmp = os.path.join(parent, f"_tmp.{name}.{token}") if is_local(fs) else None
    try:
        try:
            fs.makedirs(parent, exist_ok=True)
            if tmp is None:
                buffer = io.BytesIO()
                write(buffer)  # an encoding failure leaves nothing: nothing was sent yet
                _upload(fs, target, buffer.getvalue())
            else:
                with open_new(tmp) as handle:
                    write(handle)
                os.replace(tmp, target)
        except BaseException:
            if tmp is not None:
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


def _upload(fs: fsspec.AbstractFileSystem, target: str, data: bytes) -> None:
    """Send ``data`` as one object: one write of the whole bytes, so the store sees one upload
    (a PUT, or a multipart upload completed only on close) and publishes all of it or nothing."""
    try:
        with fs.open(target, "wb") as handle:
            handle.write(data)
    except BaseException:
        # Object stores publish nothing from a failed upload. A filesystem that is neither
        # local nor atomic per upload may leave a torn file: remove what is not the whole file
        # (an earlier version of it included; a re-run rewrites it).
        try:
            if fs.exists(target) and fs.size(target) != len(data):
                fs.rm(target)
        except OSError:
            pass
        raise


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        pass
