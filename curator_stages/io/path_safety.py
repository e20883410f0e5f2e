"""Where a run may read and write: checks a flow's parameters make before any work starts.

A run writes under its output (and prunes files it wrote there earlier) and keeps checkpoints in
its work dir. When either of those lies on, inside or around the input, a run can delete its own
input or read back its own output and checkpoints as new documents. Such a location is refused at
parameter validation, naming the field, for every way a flow starts (CLI, Python call,
deployment): nothing has been read or written yet, so nothing can be lost.

Locations are compared as the filesystem sees them: local paths by their real path (symbolic
links resolved, ``~`` expanded, a glob by the directory before its first wildcard), URLs by
scheme and normalised bucket/prefix. Everything here only reads, except :func:`probe_writable`,
which creates one temporary entry and removes it again.
"""

from __future__ import annotations

import errno
import glob
import os
import posixpath
import tempfile
from typing import NamedTuple

#: URL schemes that name the same store (fsspec accepts each spelling).
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs", "local": "file"}


class Location(NamedTuple):
    """A place on one filesystem: ``scheme`` ("file" for local paths) and a normalised path."""

    scheme: str
    path: str

    def __str__(self) -> str:
        return self.path if self.scheme == "file" else f"{self.scheme}://{self.path}"


def is_url(path: str) -> bool:
    return "://" in path


def glob_base(path: str) -> str:
    """The part of ``path`` before its first wildcard component (``/d/a/*/x`` -> ``/d/a``)."""
    if not glob.has_magic(path):
        return path
    fixed: list[str] = []
    for part in path.split("/"):
        if glob.has_magic(part):
            break
        fixed.append(part)
    base = "/".join(fixed)
    return base or ("/" if path.startswith("/") else ".")


def location(spec: str) -> Location:
    """The location a file, directory, glob or URL names (for a glob: its non-magic base)."""
    if is_url(spec):
        scheme, rest = spec.split("://", 1)
        scheme = _SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
        if scheme != "file":
            rest = posixpath.normpath("/" + glob_base(rest)).strip("/")
            return Location(scheme, rest)
        spec = rest
    base = glob_base(os.path.expanduser(spec))
    return Location("file", os.path.realpath(os.path.abspath(base)))


def _within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def relation(a: Location, b: Location) -> str | None:
    """How ``a`` lies relative to ``b``: "is", "is inside", "contains", or None (no overlap)."""
    if a.scheme != b.scheme:
        return None
    if a.path == b.path:
        return "is"
    if _within(a.path, b.path):
        return "is inside"
    if _within(b.path, a.path):
        return "contains"
    return None


def refuse_overlap(field: str, value: str, other_field: str, other_value: str,
                   why: str) -> None:
    """Raise ``ValueError`` naming ``field`` when its location overlaps ``other_field``'s."""
    here, there = location(value), location(other_value)
    rel = relation(here, there)
    if rel is None:
        return
    shown = f"{value!r}" if str(here) == value.rstrip("/") else f"{value!r} ({here})"
    raise ValueError(
        f"{field} {shown} {rel} the {other_field} location {str(there)!r}; {why}. Choose "
        f"locations where neither the {field} nor the {other_field} lies in the other"
    )


def refuse_broad_input(field: str, value: str) -> None:
    """Refuse an input that is a filesystem root or the user's whole home directory.

    Listing either walks unrelated data (and ``/proc``), and every output or work dir overlaps it.
    """
    loc = location(value)
    if loc.scheme != "file":
        return
    home = os.path.realpath(os.path.expanduser("~"))
    if loc.path == os.path.realpath(os.sep):
        what = "the filesystem root"
    elif loc.path == home and home != os.path.realpath(os.sep):
        what = "your home directory as a whole"
    else:
        return
    raise ValueError(f"{field} {value!r} is {what}; point {field} at the directory (or glob) "
                     "that holds the corpus")


def refuse_broken_links(field: str, files: list[str]) -> None:
    """Refuse an input whose listing holds a dangling symbolic link or a link loop.

    The reader and the input fingerprint would otherwise fail on it minutes into the run, with
    a traceback; here it is one line naming the path.
    """
    broken: list[tuple[str, str]] = []
    for path in files:
        if is_url(path):
            continue
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                broken.append((path, "is a symbolic link loop"))
            elif os.path.islink(path):
                broken.append((path, f"is a symbolic link to a missing target "
                                     f"({os.readlink(path)!r})"))
            else:
                broken.append((path, f"cannot be read: {exc.strerror or exc}"))
    if broken:
        path, what = broken[0]
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise ValueError(f"{field} file {path!r} {what}{more}; remove or fix the link, or "
                         f"point {field} elsewhere")


def link_below(root: str, rel: str) -> str | None:
    """The first of ``root/rel``'s components below ``root`` that is a symbolic link, or None.

    Inside an output or a work dir this product follows no link it did not create: a link
    there (``<output>/data`` -> elsewhere) would turn its writes, reads and deletes onto files
    outside it. URLs have no links (None).
    """
    if is_url(root) or is_url(rel):
        return None
    path = root
    for part in [p for p in rel.replace(os.sep, "/").split("/") if p not in ("", ".")]:
        path = os.path.join(path, part)
        if os.path.islink(path):
            return path
    return None


def refuse_link_below(field: str, root: str, rel: str) -> None:
    """Raise ``ValueError`` naming the link and the fix when :func:`link_below` finds one."""
    link = link_below(root, rel)
    if link is not None:
        raise ValueError(
            f"{field} {root!r}: {link!r} is a symbolic link (to {os.readlink(link)!r}); this "
            f"product never follows a link inside its {field}, where it would write, read or "
            f"delete files outside it. Remove the link (a real directory is created in its "
            f"place), or choose another {field}")


def probe_writable(field: str, path: str) -> None:
    """Find out now whether a local ``path`` can be written (created), leaving nothing behind.

    An existing directory gets a probe file; a missing one gets a probe directory in its nearest
    existing ancestor, which proves the run may create it. A file in the way (``ENOTDIR``), a
    permission or a read-only filesystem thus surfaces at validation, not at the last stage.
    URLs are not probed: an object store has no directories and probing costs a request with the
    run's credentials; the writer names such a failure.
    """
    if is_url(path):
        return
    target = os.path.abspath(os.path.expanduser(path))
    existing = target
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ValueError(f"{field} {path!r} cannot be created: {existing!r} is a file, not a "
                         "directory (ENOTDIR); remove it or choose another path")
    try:
        if existing == target:
            fd, probe = tempfile.mkstemp(prefix="_curator_probe.", dir=existing)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix="_curator_probe.", dir=existing))
    except OSError as exc:
        raise ValueError(f"{field} {path!r} cannot be written: {exc.strerror or exc} in "
                         f"{existing!r}; choose a directory this process may write to (check "
                         "its permissions and that the filesystem is not read-only)") from None


__all__ = ["Location", "glob_base", "is_url", "link_below", "location", "probe_writable",
           "refuse_broad_input", "refuse_broken_links", "refuse_link_below", "refuse_overlap",
           "relation"]
