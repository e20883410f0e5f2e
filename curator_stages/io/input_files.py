"""Which listed input paths a reader may open, and how a path that text cannot hold is named.

Split from the partitioner: listing decides what a run reads; these checks refuse what no
reader should open (a FIFO blocks forever, ``/dev/zero`` never ends) and give a file whose
name is not UTF-8 a name every log, id and Parquet string can hold.
"""

from __future__ import annotations

import os
import stat
from typing import Sequence


class NotRegularFileError(ValueError):
    """An input file is a FIFO, a device, a socket (or a link to one): not a regular file.

    A FIFO blocks its reader forever and ``/dev/zero`` never ends; refused at listing, before
    any work starts, naming the file.
    """


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def refuse_special_files(stage_name: str, paths: Sequence[str]) -> None:
    """Raise :class:`NotRegularFileError` for the first local path that is not a regular file
    (links followed: a link to a regular file is fine). Missing targets are left to the
    reader's own error."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode):
            continue
        kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
        link = f" (a symbolic link to {os.path.realpath(path)!r})" if os.path.islink(path) else ""
        raise NotRegularFileError(
            f"stage {stage_name!r}: input {shown_name(path)!r} is {kind}{link}, not a regular "
            "file; a reader would block on it or read without end. Remove it from the input "
            "or narrow the input to regular files")


def shown_name(path: str) -> str:
    """``path`` as text that any log, id or Parquet string holds: undecodable bytes as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if "://" not in path else path


def valid_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


__all__ = ["NotRegularFileError", "refuse_special_files", "shown_name", "valid_utf8"]
