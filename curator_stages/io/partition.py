"""File partitioning: turn an input location into groups of files, the first fan-out of a pipeline.

The partitioner is a fan-out stage: one :class:`~curator_stages.tasks.EmptyTask` in, one
:class:`~curator_stages.tasks.FileGroupTask` per group of files out, so that the readers after it
run in parallel. Listing is deterministic (sorted paths, stable task ids and group keys), which is
what makes the file names of writers and the cache keys of the orchestration layer reproducible.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import logging
import os
import posixpath
from typing import Any, Literal, Sequence

from curator_stages.io.byte_ranges import BYTE_RANGE, ByteRange, split_at_lines
from curator_stages.io.compression import infer_codec
from curator_stages.io.filesystem import display_path, is_local, resolve
from curator_stages.io.input_files import (  # noqa: F401 - NotRegularFileError re-exported
    NotRegularFileError, refuse_special_files, shown_name, valid_utf8,
)
from curator_stages.io.listing import InputListing, ListedFile, common_root, listed_file
from curator_stages.stage import ProcessingStage, record_metrics
from curator_stages.tasks import FILES_LISTED, EmptyTask, FileGroupTask

#: Metadata / reader-option key holding the directory that ids are made relative to.
INPUT_ROOT = "input_root"
#: Metadata key holding a stable hash of the group's relative paths (writers name files by it).
FILE_GROUP_KEY = "file_group_key"
#: Metadata key saying why a large file is read by one task (it could not be cut into ranges).
UNSPLIT_REASON = "unsplit_reason"
#: Metadata key marking a task whose one file has a name that is not valid UTF-8 (the task
#: names it escaped): the reader quarantines the file whole instead of opening it.
BAD_FILE_NAME = "bad_file_name"
#: Smallest byte range worth a task of its own when plain files are split.
DEFAULT_MIN_RANGE_BYTES = 4 << 20

logger = logging.getLogger(__name__)


class NoInputFilesError(FileNotFoundError):
    """An input path does not exist, or a glob or directory matched no file to read.

    An empty input is almost always a typo or a missing mount; failing at once (naming the stage
    and the path) beats a run that "succeeds" with zero documents.
    """

    def __init__(self, message: str, *, stage_name: str, path: str) -> None:
        super().__init__(message)
        self.stage_name = stage_name
        self.path = path


def file_group_key(relative_paths: Sequence[str]) -> str:
    """A short stable hash of a group's relative paths: same files -> same key on any machine."""
    digest = hashlib.sha256("\n".join(relative_paths).encode("utf-8")).hexdigest()
    return digest[:16]


def relative_to_root(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` with forward slashes; the basename when no root applies."""
    bare = _strip_protocol(path)
    if root:
        base = _strip_protocol(root)
        try:
            rel = posixpath.relpath(bare, base)
        except ValueError:
            rel = posixpath.basename(bare)
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return posixpath.basename(bare)


def _strip_protocol(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def _has_magic(path: str) -> bool:
    return _glob.has_magic(path)


def _hidden_below(path: str, root: str) -> bool:
    """True for files that tools keep beside data: ``_SUCCESS``, ``_tmp.*``, ``.crc``, sidecars."""
    rel = posixpath.relpath(path, root) if root else posixpath.basename(path)
    return any(part.startswith(("_", ".")) for part in rel.split("/") if part not in ("", "..", "."))


class FilePartitioningStage(ProcessingStage[EmptyTask, FileGroupTask]):
    """List input files and emit them in deterministic groups (a fan-out stage).

    Args:
        paths: a file, a directory (searched recursively), a glob (``data/**/*.jsonl.gz``), or a
            list of those; any fsspec URL (``memory://``, ``file://``, ``s3://`` with s3fs).
        file_extensions: keep only files ending with one of these (case-insensitive) when listing
            directories and globs; files named explicitly are always kept. ``None`` keeps all.
        files_per_group: at most this many files per group.
        bytes_per_group: at most this many bytes per group (a larger file gets a group of its own).
            With neither limit, each file is its own group.
        storage_options: passed to fsspec (credentials, endpoints).
        reader_options: copied into every emitted task's ``reader_options``.
        split_plain_files: cut plain (uncompressed) line files into byte ranges at line starts
            so that the read makes at least ``min_tasks`` tasks (readers that read ranges turn
            this on; see :mod:`curator_stages.io.byte_ranges`). Compressed files (by
            ``compression``) stay one task each, and the task says so in ``unsplit_reason``.
        min_tasks: the number of read tasks to aim for when splitting; ``"auto"`` is twice the
            CPUs this process may use, so that every core gets work and a slow range can be
            balanced by the others.
        min_range_bytes: no range is cut smaller than this (a task has a fixed cost).
        compression: how the reader decides a file is compressed (as the reader's option).

    Files and directories whose name starts with ``_`` or ``.`` below the listed directory are
    skipped (``_SUCCESS``, writers' ``_tmp.*`` files, ``_ground_truth.jsonl`` sidecars).

    A run lists the input once, at start
    (:func:`~curator_stages.orchestration.fingerprint.list_run_input`), and hands the listing over
    with :meth:`use_listing`; used on its own, the stage lists in :meth:`process`.

    Each task gets ``reader_options["input_root"]`` (and the same in ``metadata``): the directory
    readers make document ids relative to, so ids do not depend on where the data is mounted.
    """

    name = "file_partitioning"

    def __init__(
        self,
        paths: str | Sequence[str],
        file_extensions: Sequence[str] | None = None,
        files_per_group: int | None = None,
        bytes_per_group: int | None = None,
        storage_options: dict[str, Any] | None = None,
        reader_options: dict[str, Any] | None = None,
        name: str | None = None,
        split_plain_files: bool = False,
        min_tasks: int | Literal["auto"] = "auto",
        min_range_bytes: int = DEFAULT_MIN_RANGE_BYTES,
        compression: str | None = "infer",
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [os.fspath(paths)]
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise ValueError(f"stage {name or self.name!r}: paths is empty; give a file, directory or glob")
        self.file_extensions = [e.lower() for e in file_extensions] if file_extensions else None
        for label, value in (("files_per_group", files_per_group), ("bytes_per_group", bytes_per_group)):
            if value is not None and value < 1:
                raise ValueError(f"stage {name or self.name!r}: {label} must be >= 1, got {value}")
        self.files_per_group = files_per_group
        if min_tasks != "auto" and (isinstance(min_tasks, bool) or not isinstance(min_tasks, int)
                                    or min_tasks < 1):
            raise ValueError(f"stage {name or self.name!r}: min_tasks must be 'auto' or an "
                             f"integer >= 1, got {min_tasks!r}")
        if isinstance(min_range_bytes, bool) or not isinstance(min_range_bytes, int) or min_range_bytes < 1:
            raise ValueError(f"stage {name or self.name!r}: min_range_bytes must be an integer "
                             f">= 1, got {min_range_bytes!r}")
        infer_codec("x", compression)  # refuse an unknown codec before any work
        self.split_plain_files = bool(split_plain_files)
        self.min_tasks = min_tasks
        self.min_range_bytes = min_range_bytes
        self.compression = compression
        self.bytes_per_group = bytes_per_group
        self.storage_options = dict(storage_options or {})
        self.reader_options = dict(reader_options or {})
        #: The run's listing of ``paths`` (:meth:`use_listing`); None: list in :meth:`process`.
        self._listing: InputListing | None = None
        if name:
            self.name = name

    def ray_stage_spec(self) -> dict[str, Any]:
        return {"is_fanout_stage": True, "is_actor_stage": False}

    # ------------------------------------------------------------------ listing
    def use_listing(self, listing: InputListing) -> InputListing:
        """Partition ``listing`` (the run's one listing of this stage's ``paths``) instead of
        listing again in the stage task. Kept in a private attribute: not part of the stage's
        identity or its plan, so 100k paths never enter a fingerprint's parameters or a plan."""
        self._listing = listing
        return listing

    def list_files(self) -> tuple[list[tuple[str, int]], str]:
        """(sorted [(path, size)], input root). Raises :class:`NoInputFilesError` on an empty match."""
        listing = self.list_input()
        return listing.sizes(), listing.root

    def list_input(self) -> InputListing:
        """List ``paths`` now: each file's path, size and version metadata, and the input root.

        One recursive listing per directory (fsspec ``find``; on S3, one request per 1000
        objects) or glob gives all of it: no per-file ``info``. Raises
        :class:`NoInputFilesError` on an empty match.
        """
        found: dict[str, ListedFile] = {}
        bad: dict[str, ListedFile] = {}
        roots: list[str] = []
        skipped: list[str] = []
        for spec in self.paths:
            fs, stripped = resolve(spec, self.storage_options)
            if _has_magic(stripped):
                root = _glob_root(stripped)
                matches = fs.glob(stripped, detail=True)
                files = {p: info for p, info in matches.items() if info.get("type") != "directory"}
                files = self._filtered(files, root, skipped)
                if not files:
                    raise NoInputFilesError(
                        f"stage {self.stage_name!r}: glob {spec!r} matched no input files"
                        + self._ext_hint(skipped) + "; check the pattern and that the data is "
                        "where you expect",
                        stage_name=self.stage_name, path=spec,
                    )
            else:
                root, files = self._list_path(fs, stripped, spec, skipped)
            roots.append(display_path(fs, root))
            if is_local(fs):
                refuse_special_files(self.stage_name, [p for p, info in files.items()
                                                       if info.get("type") != "file"])
            for path, info in files.items():
                shown = display_path(fs, path)
                if valid_utf8(shown):
                    found[shown] = listed_file(shown, info)
                else:
                    escaped = shown_name(shown)
                    bad[escaped] = listed_file(escaped, info)
        root = roots[0] if len(set(roots)) == 1 else common_root(roots)
        return InputListing(tuple(found[p] for p in sorted(found)), root,
                            skipped=tuple(sorted(display_path(fs, p) for p in skipped)),
                            bad_names=tuple(bad[p] for p in sorted(bad)))

    def _list_path(self, fs: Any, stripped: str, spec: str,
                   skipped: list[str]) -> tuple[str, dict[str, Any]]:
        """(root, {path: info}) of a directory (its files, recursively) or of one file.

        One recursive listing (fsspec ``find``) tells both apart: asking ``isdir`` first would,
        on S3, list the prefix's first level in full (s3fs does), a second listing of it.
        """
        bare = stripped.rstrip("/") or "/"
        found = fs.find(stripped, detail=True)
        files = {p: info for p, info in found.items() if info.get("type") != "directory"}
        if files and set(files) != {bare}:
            files = self._filtered(files, bare, skipped)
            if files:
                return bare, files
        elif files:  # the path is one file (named explicitly: kept whatever its name)
            info = files[bare] if "size" in files[bare] else fs.info(bare)
            parent = posixpath.dirname(bare) if not is_local(fs) else os.path.dirname(bare)
            return parent, {bare: info}
        if files or fs.exists(stripped):
            raise NoInputFilesError(
                f"stage {self.stage_name!r}: directory {spec!r} holds no input files"
                + self._ext_hint(skipped) + "; point paths at the directory that holds the data",
                stage_name=self.stage_name, path=spec,
            )
        raise NoInputFilesError(
            f"stage {self.stage_name!r}: input path {spec!r} does not exist; "
            "fix the path (or the storage_options that reach it)",
            stage_name=self.stage_name, path=spec,
        )

    def _filtered(self, files: dict[str, Any], root: str, skipped: list[str]) -> dict[str, Any]:
        """The files to read; ``skipped`` gets those left out by their extension (hidden names
        are left out silently: they are tools' markers and sidecars, not data)."""
        out = {}
        for path, info in files.items():
            if _hidden_below(path, root):
                continue
            if self.file_extensions and not path.lower().endswith(tuple(self.file_extensions)):
                skipped.append(path)
                continue
            out[path] = info
        return out

    def _ext_hint(self, skipped: Sequence[str] = ()) -> str:
        hint = f" with extensions {self.file_extensions}" if self.file_extensions else ""
        if skipped:
            names = [posixpath.basename(p) for p in sorted(skipped)]
            hint += (f" (skipped {len(names)} other file(s): {', '.join(names[:5])}"
                     f"{', ...' if len(names) > 5 else ''})")
        return hint

    # ------------------------------------------------------------------ grouping
    def group(self, files: list[tuple[str, int]]) -> list[list[str]]:
        if self.files_per_group is None and self.bytes_per_group is None:
            return [[p] for p, _ in files]
        groups: list[list[str]] = []
        current: list[str] = []
        current_bytes = 0
        for path, size in files:
            full_count = self.files_per_group is not None and len(current) >= self.files_per_group
            full_bytes = (self.bytes_per_group is not None and current
                          and current_bytes + size > self.bytes_per_group)
            if current and (full_count or full_bytes):
                groups.append(current)
                current, current_bytes = [], 0
            current.append(path)
            current_bytes += size
        if current:
            groups.append(current)
        return groups

    # ------------------------------------------------------------------ byte ranges
    def target_tasks(self) -> int:
        """The number of read tasks to aim for: ``min_tasks``, or twice the usable CPUs."""
        if self.min_tasks != "auto":
            return int(self.min_tasks)
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return 2 * max(1, cpus)

    def split(self, files: list[tuple[str, int]]) -> tuple[
            list[tuple[str, int]], list[tuple[str, ByteRange]], dict[str, str]]:
        """(files read whole, [(path, range)] of split files, {path: why a large file is whole}).

        The range size is the total bytes over the target task count (at least
        ``min_range_bytes``), so a few files of uneven size end up in ranges of about one size.
        """
        if not self.split_plain_files or not files:
            return files, [], {}
        target = self.target_tasks()
        range_bytes = max(self.min_range_bytes, -(-sum(s for _, s in files) // target))
        whole: list[tuple[str, int]] = []
        ranges: list[tuple[str, ByteRange]] = []
        unsplit: dict[str, str] = {}
        for path, size in files:
            pieces = -(-size // range_bytes)
            if pieces <= 1:
                whole.append((path, size))
                continue
            codec = infer_codec(path, self.compression)
            if codec is not None:
                unsplit[path] = f"{codec}-compressed: a compressed stream is read from its start"
                logger.info("stage %r: %s (%d bytes) is read by one task: %s",
                            self.stage_name, path, size, unsplit[path])
                whole.append((path, size))
                continue
            cut = split_at_lines(path, size, pieces, self.storage_options)
            if len(cut) == 1:
                unsplit[path] = "no line break to cut at"
                whole.append((path, size))
                continue
            logger.info("stage %r: %s (%d bytes) is read as %d byte ranges",
                        self.stage_name, path, size, len(cut))
            ranges += [(path, r) for r in cut]
        return whole, ranges, unsplit

    def process(self, task: EmptyTask) -> list[FileGroupTask]:
        listing = getattr(self, "_listing", None)
        if listing is None:  # a stage used on its own (no run listed for it)
            listing = self.list_input()
        files, root = listing.sizes(), listing.root
        whole, ranges, unsplit = self.split(files)
        groups: list[tuple[list[str], ByteRange | None]] = [(g, None) for g in self.group(whole)]
        groups += [([path], r) for path, r in ranges]
        order = {path: i for i, (path, _) in enumerate(files)}
        groups.sort(key=lambda g: (order[g[0][0]], g[1].start if g[1] else 0))
        bad_names = {f.path for f in listing.bad_names}
        groups += [([f.path], None) for f in listing.bad_names]
        out: list[FileGroupTask] = []
        for index, (group, byte_range) in enumerate(groups):
            rels = [relative_to_root(p, root) for p in group]
            if byte_range is not None:
                rels = [f"{rels[0]}@{byte_range.start}-{byte_range.end}"]
            key = file_group_key(rels)
            meta = {**task.metadata, INPUT_ROOT: root, FILE_GROUP_KEY: key,
                    "file_group_index": index, "num_file_groups": len(groups)}
            if byte_range is not None:
                meta[BYTE_RANGE] = byte_range.to_list()
            if group[0] in bad_names:
                meta[BAD_FILE_NAME] = True
            why = [unsplit[p] for p in group if p in unsplit]
            if why:
                meta[UNSPLIT_REASON] = why[0]
            out.append(record_metrics(FileGroupTask(
                task_id=f"{task.dataset_name}-files-{index:06d}",
                dataset_name=task.dataset_name,
                data=list(group),
                _metadata=meta,
                _stage_perf=list(task._stage_perf),
                reader_options={**self.reader_options, INPUT_ROOT: root},
            ), **{FILES_LISTED: len(group) if byte_range is None else int(byte_range.start == 0)}))
        return out


def _glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: ``/d/a/*/x.json`` -> ``/d/a``."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        fixed.append(part)
    root = "/".join(fixed)
    return root or ("/" if pattern.startswith("/") else ".")
