"""A run's one listing of its input: each file's path, size and the store's version metadata.

Listing an object-store prefix costs one request per 1000 objects; 100k objects take seconds to
minutes. A run therefore lists its input once, at start, and both the input fingerprint (which
names the checkpoints) and the file partitioner (which makes the read tasks) use that listing:
nothing lists again per stage task, and no object is asked for its metadata one by one (a HEAD
per object). Because the same listing feeds both, the fingerprint describes exactly the files
the run reads, even when the input changes while the run starts.

The listing lives in memory only: the partitioner holds it in a private attribute, outside its
identity (a listing of 100k paths is not a parameter, and never appears in a plan). A resumed
run lists again, which is how it notices a changed input.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

#: Object-store metadata that changes whenever an object's bytes do (first found wins).
VERSION_KEYS = ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash", "md5")


class ListedFile(NamedTuple):
    """One input file as its listing describes it (a tuple: 100k of them pickle small)."""

    #: The path a reader opens: plain for local files, a URL (``s3://b/k``) otherwise.
    path: str
    size: int
    #: The modification time as the filesystem gives it (``mtime``, ``LastModified``,
    #: ``created``), as text; ``""`` when it gives none.
    modified: str
    #: ``"<key>:<value>"`` of the first of :data:`VERSION_KEYS` the store gives (its version id
    #: or ETag), ``""`` when none: what ``verify_input="content"`` compares without a read.
    version: str


def listed_file(path: str, info: dict[str, Any]) -> ListedFile:
    """``path`` with the metadata of its fsspec ``info`` (from a listing, not a HEAD)."""
    modified = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    version = ""
    for key in VERSION_KEYS:
        value = info.get(key)
        if value:
            version = f"{key}:{str(value).strip(chr(34))}"
            break
    return ListedFile(path, int(info.get("size") or 0), f"{modified}", version)


@dataclass(frozen=True)
class InputListing:
    """Files of an input, sorted by path, and the root that document ids are relative to."""

    files: tuple[ListedFile, ...]
    root: str
    #: Files a directory or glob held that the reader does not take (by their name), sorted:
    #: a run says which files it skipped instead of skipping them silently.
    skipped: tuple[str, ...] = ()
    #: Files whose name is not valid UTF-8, by the name with its bytes escaped (``\\xff``):
    #: no id, log line or Parquet string can hold such a name, so each is quarantined whole.
    bad_names: tuple[ListedFile, ...] = ()

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def task_paths(self) -> list[str]:
        """Every path a file-list task of this run may name: the files, and the escaped names
        of files quarantined whole (what a checkpoint's file list is checked against)."""
        return [*self.paths, *(f.path for f in self.bad_names)]

    def sizes(self) -> list[tuple[str, int]]:
        return [(f.path, f.size) for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:  # never 100k paths in a log line or a traceback
        return f"InputListing({len(self.files)} files under {self.root!r})"

    @classmethod
    def merged(cls, listings: Sequence["InputListing"]) -> "InputListing":
        """Several partitioners' listings as one (for the fingerprint of a run that has more)."""
        if len(listings) == 1:
            return listings[0]
        by_path = {f.path: f for listing in listings for f in listing.files}
        bad = {f.path: f for listing in listings for f in listing.bad_names}
        roots = sorted({listing.root for listing in listings})
        skipped = sorted({p for listing in listings for p in listing.skipped} - set(by_path))
        return cls(tuple(by_path[p] for p in sorted(by_path)), ";".join(roots),
                   skipped=tuple(skipped), bad_names=tuple(bad[p] for p in sorted(bad)))


def common_root(roots: list[str]) -> str:
    """The deepest directory (or URL prefix) above every one of ``roots``."""
    if any("://" in r for r in roots):
        protocols = {r.split("://", 1)[0] for r in roots if "://" in r}
        bare = [r.split("://", 1)[1] for r in roots]
        prefix = posixpath.commonpath(bare) if bare else ""
        return f"{protocols.pop()}://{prefix}" if len(protocols) == 1 else ""
    return os.path.commonpath(roots)


__all__ = ["InputListing", "ListedFile", "VERSION_KEYS", "common_root", "listed_file"]
