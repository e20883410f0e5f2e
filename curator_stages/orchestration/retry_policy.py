"""Which stage-task failures are worth a retry, and for how long.

A retry repeats the whole stage task. That helps when the cause may pass (an I/O error on a
network filesystem, a lost connection or worker, a timeout); it only wastes time, and delays
the error the user must act on, when it cannot: a path that is a file, no permission, a missing
input file, a bad parameter (``ValueError``/``TypeError``), a stage whose setup fails, a disk
that is full. Those fail at once. An error of unknown kind is retried, as before. Retries also
stop once the stage task has spent ``max_total_s`` (all attempts together): a retry started
after hours of failing attempts is rarely what anyone wants.

:class:`RetryPolicy` is Prefect's ``retry_condition_fn`` of stage tasks (it travels to the Ray
worker that runs the task, so it is a small picklable object).
"""

from __future__ import annotations

import errno
import re
import time
from dataclasses import dataclass
from typing import Any

#: Default cap on the time a stage task may spend, all attempts together, before a new retry
#: is no longer started (the failing attempt's error is then final).
DEFAULT_RETRY_MAX_TOTAL_S = 4 * 3600.0

#: OS errors a retry cannot fix: the path, its permissions or the disk must change first.
PERMANENT_ERRNOS = frozenset({
    errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
    errno.EINVAL,
})
#: A setup error whose cause is one of these may pass (a download that timed out).
_TRANSIENT_CAUSE = re.compile(r"\b(TimeoutError|ConnectionError|ConnectionResetError|"
                              r"ConnectionRefusedError|ConnectionAbortedError|BrokenPipeError|"
                              r"socket\.timeout|ReadTimeout|ConnectTimeout)\b")

#: When each stage task run (by id) started its first attempt, in this process: retries run
#: in the same process as the first attempt (Prefect's engine loops in the Ray worker).
_FIRST_ATTEMPT: dict[str, float] = {}


def note_attempt_start(task_run_id: Any) -> None:
    """Called by the stage task at the start of each attempt: the first one starts the clock."""
    _FIRST_ATTEMPT.setdefault(str(task_run_id), time.monotonic())


def is_permanent(exc: BaseException | None) -> bool:
    """Whether retrying the stage task cannot help with ``exc`` (see the module docstring).

    An error wrapping another (``raise ... from cause``, as Ray's wrappers do) is judged by the
    first one in the chain that is known either way.
    """
    seen = 0
    while exc is not None and seen < 8:
        verdict = _verdict(exc)
        if verdict is None:
            verdict = _remote_verdict(exc)
        if verdict is not None:
            return verdict
        exc, seen = exc.__cause__, seen + 1
    return False


#: ``<type>: <message>`` lines of a remote traceback, and the errno an OS error's text carries.
_ERROR_LINE = re.compile(r"^(?P<cls>[A-Za-z_][\w.]*): (?P<msg>.*)$", re.MULTILINE)
_ERRNO = re.compile(r"\[Errno (\d+)\]|\(errno (\d+)\)")


def _remote_verdict(exc: BaseException) -> bool | None:
    """For a Ray error that could not be rebuilt as the stage's own exception (a library's
    error without this package's ``stage '<name>'`` prefix): judge the first error of the
    remote traceback (the original one; wrappers follow it) by its type and errno."""
    from ray.exceptions import RayError

    from curator_stages.backends.ray_data.errors import exception_class

    if not isinstance(exc, RayError):
        return None
    text = getattr(exc, "traceback_str", "") or str(exc)
    for match in _ERROR_LINE.finditer(text):
        cls = exception_class(match.group("cls"))
        if cls is None:
            continue
        code = _ERRNO.search(match.group("msg"))
        try:
            rebuilt = cls(int(code.group(1) or code.group(2)), match.group("msg")) if (
                code and issubclass(cls, OSError)) else cls.__new__(cls)
        except Exception:  # noqa: BLE001 - an exception class with an unusual constructor
            continue
        verdict = _verdict(rebuilt)
        if verdict is not None:
            return verdict
    return None


def _verdict(exc: BaseException) -> bool | None:
    """True: permanent; False: transient; None: unknown (look at its cause)."""
    from curator_stages.backends.ray_data.adapter import StageSetupError

    if isinstance(exc, StageSetupError):
        return not _TRANSIENT_CAUSE.search(str(exc))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return False
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                        PermissionError, FileExistsError)):
        return True
    if isinstance(exc, OSError):
        code = exc.errno
        if code is None and isinstance(exc.__cause__, OSError):
            code = exc.__cause__.errno
        if code is not None:
            return code in PERMANENT_ERRNOS
        return True if isinstance(exc, (TypeError, ValueError)) else None  # UnsafeTaskError
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError, ImportError,
                        NotImplementedError, AssertionError)):
        return True
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Prefect ``retry_condition_fn``: retry transient failures within ``max_total_s``."""

    max_total_s: float | None = DEFAULT_RETRY_MAX_TOTAL_S

    def __call__(self, task: Any, task_run: Any, state: Any) -> bool:
        exc = _exception_of(state)
        if is_permanent(exc):
            _log(f"not retried: {type(exc).__name__} is permanent (a retry cannot fix it; "
                 "fix the cause and re-run: finished stage tasks are reused)")
            return False
        started = _FIRST_ATTEMPT.get(str(getattr(task_run, "id", "")))
        if self.max_total_s is not None and started is not None:
            spent = time.monotonic() - started
            if spent > self.max_total_s:
                _log(f"not retried: the stage task has run {spent:.0f}s, over its retry cap of "
                     f"{self.max_total_s:.0f}s (retry_max_total_s)")
                return False
        return True


def _exception_of(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - a result that cannot be read: judge that error
        return exc
    return result if isinstance(result, BaseException) else None


def _log(message: str) -> None:
    try:
        from prefect.logging import get_run_logger

        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 - outside a run: nothing to log to
        pass


__all__ = ["DEFAULT_RETRY_MAX_TOTAL_S", "PERMANENT_ERRNOS", "RetryPolicy", "is_permanent",
           "note_attempt_start"]
