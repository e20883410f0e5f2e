"""Errors a stage raises on a worker, and their translation back into themselves on the driver.

Why this module exists: what reaches the driver from a failed Ray Data plan is a Ray wrapper
(``RayTaskError``, ``ActorDiedError``) whose text buries the stage's own one-line error in Ray
frames. :func:`surfaced_stage_errors` gives the caller the stage's error itself, with its type,
wherever the driver pulls results (planning globals, iterating outputs, per-node setup), so a
library user and a flow user see the same error.

How the original is found, in order:

1. Ray's cause chain. ``RayTaskError.cause`` is the exception object the worker raised, and
   ``__cause__``/``__context__`` link further. A plain Ray task (the per-node setup task of
   ``RayDataExecutor.setup_nodes``) hands the original over this way. An error of this package,
   or any error whose message names its stage (``stage '<name>': ...``), found there is
   returned as it is.
2. Last resort, the remote traceback's text, documented as such: an error message is not an
   API. Ray Data 2.60 wraps a map's exception on the worker in
   ``UserCodeException("UDF failed to process a data block.")``, and the link to the original
   (its ``__cause__``) does not survive the trip to the driver; ``ActorDiedError`` (an actor's
   constructor raised) keeps only the text of its creation task's error. Ray Data's
   ``DataContext.raise_original_map_exception`` would keep the original, but Ray Data then
   logs every stage error as a suspected bug in Ray itself. So the last
   ``<type>: stage '<name>': ...`` line of the text is rebuilt as that type (a class of this
   package or a builtin), else as :class:`StageRunError`. tests/test_ray_private_guards.py
   fails when Ray starts carrying the original, so this fallback can then go.

A failed plan's frames hold the streaming executor and, through it, handles to the failed
attempt's actors; Prefect keeps the exception of a failed attempt while it retries, so those
actors would keep their CPUs and the retry would wait forever. :func:`release_frames` clears
the finished frames of the Ray error before it travels on (the traceback text is unchanged).
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import importlib
import re
from typing import Any, Iterator

from curator_stages.stage import ProcessingStage, StageError


class StageSetupError(StageError):
    """A stage's ``setup`` or ``setup_on_node`` raised on a worker: the stage cannot run there.

    The message names the stage, where it failed and the cause in one line. Ray does not restart
    or retry the worker (a broken model path fails every attempt the same way); a transient
    cause (a download that timed out) is retried by the stage task's Prefect ``retries``.
    """


def setup_error(stage: ProcessingStage, hook: str, exc: BaseException,
                metadata: dict[str, Any] | None) -> StageSetupError:
    """The :class:`StageSetupError` for ``exc`` raised by ``stage.<hook>`` on this worker."""
    meta = metadata or {}
    node = str(meta.get("node_id") or "?")[:12]
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line: the driver parses it
    return StageSetupError(
        f"stage {stage.stage_name!r}: {hook}() failed on node {node} (pid {meta.get('pid', '?')}"
        f", {meta.get('mode', 'worker')} worker): {cause}. The stage did not run; fix the cause "
        "(model path, credentials, memory, dependencies) and re-run",
        stage.stage_name,
    )


class StageRunError(StageError):
    """A stage raised on a worker and its exception type could not be rebuilt on the driver;
    the message is the original one (it names the stage), prefixed by the original type."""


#: The line a stage's own error leaves in Ray's remote traceback: ``<type>: stage '<name>': ...``
#: (every error of this package names its stage first).
_STAGE_ERROR_LINE = re.compile(r"^(?P<cls>[A-Za-z_][\w.]*): (?P<msg>stage '(?P<stage>[^']*)'.*)$",
                               re.MULTILINE)
_STAGE_PREFIX = re.compile(r"^stage '(?P<stage>[^']*)'")


def _ray_error_type() -> type[BaseException] | None:
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover - ray is a dependency
        return None
    return RayError


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: ``RayTaskError.cause``, then ``__cause__``/``__context__``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        cause = getattr(err, "cause", None)
        todo.extend(e for e in (cause, err.__cause__, err.__context__)
                    if isinstance(e, BaseException))


def _is_stage_error(err: BaseException) -> bool:
    if isinstance(err, StageError):
        return True
    ray_error = _ray_error_type()
    if ray_error is not None and isinstance(err, ray_error):
        return False
    return bool(getattr(err, "stage_name", "")) or bool(_STAGE_PREFIX.match(str(err)))


def _remote_text(exc: BaseException) -> str:
    return "\n".join(filter(None, [str(exc), getattr(exc, "traceback_str", "") or ""]))


def _from_cause_chain(exc: BaseException) -> BaseException | None:
    for err in _chain(exc):
        if err is not exc and _is_stage_error(err):
            match = _STAGE_PREFIX.match(str(err))
            if match and not getattr(err, "stage_name", ""):
                _set(err, "stage_name", match.group("stage"))
            _set(err, "remote_traceback", _remote_text(exc))
            return err
    return None


def exception_class(qualified: str) -> type[BaseException] | None:
    """The exception class a traceback line names, if it is ours or a builtin."""
    module_name, _, name = qualified.rpartition(".")
    if not module_name:
        cls = getattr(builtins, name, None)
    elif module_name == "curator_stages" or module_name.startswith("curator_stages."):
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            cls = None
    else:
        cls = None
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None


def _from_text(exc: BaseException) -> BaseException | None:
    """Last resort: rebuild the stage's error from the remote traceback's text."""
    text = _remote_text(exc)
    matches = list(_STAGE_ERROR_LINE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    qualified, message, stage_name = match.group("cls"), match.group("msg"), match.group("stage")
    cls = exception_class(qualified)
    err: BaseException | None = None
    if cls is not None:
        try:
            err = cls(message)
        except Exception:  # noqa: BLE001 - a constructor that needs more than a message
            err = None
    if err is None or str(err) != message:
        err = StageRunError(f"{qualified.rsplit('.', 1)[-1]}: {message}", stage_name)
    if isinstance(err, OSError):
        errno_match = re.search(r"\(errno (\d+)\)", message)
        if errno_match:
            err.errno = int(errno_match.group(1))
    if not getattr(err, "stage_name", ""):
        _set(err, "stage_name", stage_name)
    _set(err, "remote_traceback", text)
    return err


def _set(err: BaseException, name: str, value: Any) -> None:
    try:
        setattr(err, name, value)
    except AttributeError:  # pragma: no cover - a class with __slots__
        pass


def stage_error_from(exc: BaseException) -> BaseException | None:
    """The stage's own exception carried by a Ray error; None if ``exc`` is not a Ray error or
    carries none. See the module docstring for the order (cause chain, then text)."""
    ray_error = _ray_error_type()
    if ray_error is None or not isinstance(exc, ray_error):
        return None
    return _from_cause_chain(exc) or _from_text(exc)


def stage_setup_error_from(exc: BaseException) -> StageSetupError | None:
    """The :class:`StageSetupError` carried by a Ray error, or None."""
    err = stage_error_from(exc)
    return err if isinstance(err, StageSetupError) else None


def release_frames(exc: BaseException) -> None:
    """Clear the locals of the finished frames behind ``exc`` (and what it wraps).

    A failed Ray Data execution's streaming executor, and through it the failed attempt's actor
    handles, are locals of those frames, and of their callers in Ray's scheduling thread (a
    frame keeps its caller alive); whoever keeps the exception (Prefect does, across retries)
    would keep the actors and their CPUs. Frames still running, and their callers, are left
    alone; the traceback's text (files, lines, code) is unchanged.
    """
    for err in _chain(exc):
        tb = err.__traceback__
        while tb is not None:
            frame: Any = tb.tb_frame
            while frame is not None:
                try:
                    frame.clear()
                except RuntimeError:  # still running: so are its callers
                    break
                frame = frame.f_back
            tb = tb.tb_next


@contextlib.contextmanager
def surfaced_stage_errors() -> Iterator[None]:
    """Around code that builds or pulls a Ray Data plan: an error a stage raised on a worker
    comes out as itself (type and one-line message naming the stage, e.g. a
    :class:`StageSetupError` or an ``OutputWriteError``), not buried in Ray's wrapper; any
    Ray error that passes through releases the frames that hold the failed execution."""
    ray_error = _ray_error_type()
    err: BaseException | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unchanged unless a stage error is inside
        err = stage_error_from(exc)
        if ray_error is not None and isinstance(exc, ray_error):
            release_frames(exc)
            gc.collect()  # the failed executor sits in reference cycles: free its actors now
        if err is None:
            raise
    if err is not None:
        # Raised outside the except block: the Ray error is not kept as the new one's context.
        raise err from None
