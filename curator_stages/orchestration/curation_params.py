"""The parameters every curation flow shares: one vocabulary, one validation, before Ray starts.

A flow's parameter model subclasses :class:`CurationParams` and adds its own fields. Every flow
therefore takes ``--input/--output/--work-dir`` with the same meaning, refuses a missing or
unsafe input, an output or work dir overlapping it, and an oversized embedded Ray the same way,
in a CLI run, a Python call and a deployment run alike, and before any work starts.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import (BaseModel, ByteSize, ConfigDict, Field, PrivateAttr, ValidationInfo,
                      field_validator, model_validator)

from curator_stages.orchestration.params import (
    check_input_files,
    check_num_cpus,
    check_object_store_memory,
    check_output_location,
    check_spill_dir,
)
from curator_stages.runtime.ray_cluster import refuse_ray_client

if TYPE_CHECKING:
    from curator_stages.io.listing import InputListing


class CurationParams(BaseModel):
    """Parameters shared by every curation flow (the Prefect UI shows them as a form)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    #: File name endings the flow's reader reads (its listing rule for ``input``).
    input_extensions: ClassVar[tuple[str, ...] | None] = None
    #: The formats the flow's readers read (:mod:`curator_stages.io.input_check`); None: any
    #: (the flow's reader judges). A file in another format is refused before any work.
    input_formats: ClassVar[tuple[str, ...] | None] = None
    #: A relative ``input`` that matches nothing in the working directory is tried against
    #: this directory (the flow's checkout), so the defaults work from anywhere.
    input_root: ClassVar[Path | None] = None
    #: (low, high) field pairs where high must be >= low.
    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()

    input: str = Field("data/sample", min_length=1, description="Input: a file, a directory "
                       "or a glob (local path or fsspec URL)")
    output: str = Field("output", min_length=1, description="Output directory")
    work_dir: str = Field(".curator_work", min_length=1, description="Checkpoint directory "
                          "(one complete checkpoint per stage task; makes re-runs resume); "
                          "must not overlap the input or the output")
    verify_input: Literal["metadata", "content"] = Field(
        "metadata", description="How a re-run recognises an unchanged input (and reuses its "
        "checkpoints): 'metadata' compares each file's path, size and mtime (reads nothing; "
        "misses an edit that keeps the size and restores the mtime); 'content' hashes each "
        "file's bytes (xxh3_128; an object store's ETag or version id where it has one)")
    refresh: bool = Field(False, description="Recompute every stage, ignoring checkpoints")
    retries: int = Field(1, ge=0, le=10, description="Retries of a failed stage task")
    retry_delay_seconds: float = Field(2.0, ge=0, le=3600, description="Delay before a retry")
    timeout_seconds: float | None = Field(None, gt=0, allow_inf_nan=False, description="Timeout "
                                          "of one stage task (unset: none)")
    # --- execution
    ray_address: str | None = Field(None, description="Ray cluster to join, as host:port (the "
                                    "flow's process must be a member of the cluster; a Ray "
                                    "Client ray:// address is refused: submit the flow as a Ray "
                                    "Job instead); default: RAY_ADDRESS, else an embedded local "
                                    "Ray")
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs of an embedded local "
                                 "Ray (default: all; at most this machine's CPU count, since "
                                 "each CPU gets a worker process; not bounded when joining a "
                                 "cluster)")
    object_store_memory: ByteSize | None = Field(
        None, description="Object store of an embedded local Ray: bytes or a size such as "
        "512MB, 2GiB, 2G (MB/GB: powers of 1000; MiB/GiB: of 1024); at least 75MiB, at most "
        "this machine's memory (default: Ray's, 30% of the memory). A joined cluster's is "
        "set on its nodes (`ray start --object-store-memory`)")
    spill_dir: str | None = Field(
        None, description="Local directory where an embedded Ray spills objects that do not "
        "fit its object store (default: Ray's session directory under /tmp); not inside the "
        "input, output or work dir. A joined cluster's is set on its nodes (`ray start "
        "--object-spilling-directory`)")
    ignore_head_node: bool = Field(False, description="Keep stage workers off the Ray head node")
    log_to_driver: bool = Field(False, description="Show Ray worker logs on this console")
    #: The format of the input's files (one of :attr:`input_formats`), found by validation.
    _input_format: str | None = PrivateAttr(None)

    @property
    def input_format(self) -> str | None:
        """The format of the input's files ("jsonl", "parquet"; None: the flow reads any)."""
        return self._input_format

    @classmethod
    def input_files(cls, path: str) -> list[str]:
        """The files the flow's reader reads from ``path`` (its own listing rule), sorted."""
        from curator_stages.orchestration.fingerprint import resolve_input_files

        return resolve_input_files(path, file_extensions=cls.input_extensions)

    @classmethod
    def input_listing(cls, path: str) -> "InputListing | None":
        """:meth:`input_files` with each file's size and version metadata (None: no file)."""
        from curator_stages.orchestration.fingerprint import list_input

        return list_input(path, file_extensions=cls.input_extensions)

    @classmethod
    def input_present(cls, path: str) -> list[str]:
        """What validation checks of ``path``: local inputs are listed (a dangling link or a
        link loop among the files is refused now); for an object store only the input's prefix
        (a glob's base) is probed, since the run lists it once anyway, refusing an empty match
        before any work starts. On S3 the probe is at most one HEAD and one one-key LIST,
        whatever the prefix holds, where a listing costs a request per 1000 objects and
        validation runs more than once per run (CLI, Prefect, the run itself)."""
        from curator_stages.io.filesystem import is_local, resolve
        from curator_stages.io.path_safety import glob_base

        if "://" in path:
            fs, stripped = resolve(path)
            if not is_local(fs):
                _reachable(path)
                return [path] if fs.exists(glob_base(stripped)) else []
        return cls.input_files(path)

    @classmethod
    def resolve_input(cls, path: str) -> str:
        """A relative path is relative to the working directory, else to :attr:`input_root`;
        URLs are left alone."""
        if "://" in path:
            return path
        path = os.path.expanduser(path)
        if os.path.isabs(path):
            return path
        here = os.path.abspath(path)
        if cls.input_root is None or os.path.lexists(here) or (
                glob.has_magic(here) and cls.input_files(here)):
            return here
        there = str(Path(cls.input_root) / path)
        try:
            return there if cls.input_files(there) else here
        except OSError:
            return here

    @field_validator("input")
    @classmethod
    def _input_exists(cls, value: str) -> str:
        from curator_stages.io.input_check import describe

        takes = describe(cls.input_formats) if cls.input_formats else None
        return check_input_files("input", value, cls.resolve_input(value), cls.input_present,
                                 takes=takes)

    @model_validator(mode="after")
    def _readable_input(self) -> "CurationParams":
        """Find the input's format (refusing a mix, or a file in a format no reader of the flow
        takes) and, where the flow has a ``text_field``, refuse a local input whose first file
        has no record with it, naming the fields it has: every record would be quarantined."""
        if not self.input_formats:
            return self
        from curator_stages.io import input_check as ic
        from curator_stages.io.filesystem import is_local, resolve

        fs, stripped = resolve(self.input)
        if not is_local(fs):  # an object store is not read during validation: go by the name
            self._input_format = ic.format_by_name(self.input) or self.input_formats[0]
            return self
        files = self.input_files(self.input)
        explicit = len(files) == 1 and os.path.isfile(stripped)
        try:
            formats = {ic.sniff(f) if explicit else ic.format_by_name(f) for f in files}
        except ic.InputFormatError as exc:
            raise ValueError(f"input: {exc}; this flow reads "
                             f"{ic.describe(self.input_formats)}") from None
        if len(formats) > 1:
            raise ValueError(f"input {self.input!r} holds files of several formats "
                             f"({', '.join(sorted(str(f) for f in formats))}); give one format "
                             "per run (a glob such as 'dir/*.parquet')")
        fmt = formats.pop() if formats else self.input_formats[0]
        if fmt not in self.input_formats:
            raise ValueError(f"input {self.input!r} is {fmt}; this flow reads "
                             f"{ic.describe(self.input_formats)}")
        self._input_format = fmt
        text_field = getattr(self, "text_field", None)
        if files and isinstance(text_field, str):
            why = ic.missing_text_field(files[0], fmt, text_field)
            if why:
                raise ValueError(f"text_field: {why}")
        return self

    @field_validator("output", "work_dir")
    @classmethod
    def _apart_and_writable(cls, value: str, info: ValidationInfo) -> str:
        value = value if "://" in value else os.path.abspath(os.path.expanduser(value))
        check_output_location(info.field_name, value, info.data)
        _reachable(value)
        return value

    @field_validator("ray_address")
    @classmethod
    def _member_of_the_cluster(cls, value: str | None) -> str | None:
        return refuse_ray_client(value) if value else value

    @field_validator("num_cpus")
    @classmethod
    def _within_machine(cls, value: int | None, info: ValidationInfo) -> int | None:
        return check_num_cpus(value, info.data)

    @field_validator("object_store_memory")
    @classmethod
    def _store_within_machine(cls, value: int | None, info: ValidationInfo) -> int | None:
        return check_object_store_memory(value, info.data)

    @field_validator("spill_dir")
    @classmethod
    def _spill_apart(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_spill_dir(value, info.data)

    @model_validator(mode="after")
    def _ranges(self) -> "CurationParams":
        for low, high in self.ordered:
            if getattr(self, high) < getattr(self, low):
                raise ValueError(f"{high} ({getattr(self, high)}) must be >= {low} "
                                 f"({getattr(self, low)})")
        return self


def _reachable(path: str) -> None:
    """A ValueError (a refused parameter) when ``path``'s object store does not answer."""
    from curator_stages.io.filesystem import EndpointUnreachableError, probe_endpoint

    try:
        probe_endpoint(path)
    except EndpointUnreachableError as exc:
        raise ValueError(str(exc)) from None


__all__ = ["CurationParams"]
