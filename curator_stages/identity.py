"""The canonical form of stage parameters: what a checkpoint fingerprint is made of.

A stage's identity decides whether an old checkpoint may stand in for a new run, so two values
that differ must never look equal here. ``repr()`` cannot promise that: numpy elides the middle
of large arrays and a default ``repr`` holds a memory address (equal objects look different,
and an address reused by a different object looks equal). Values therefore either have a
canonical form below or are refused with :class:`StageIdentityError`, which names the stage and
the parameter. A function is identified by its name, its source, the source of the whole module
that defines it (an edit to a helper it calls changes its identity) and the values it closes
over. Any other object takes part through an ``identity()`` method that returns such values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import json
import marshal
import os
import re
import sys
import types
from typing import Any, Callable

#: Callables identified by what they are (source, module, closure), not by their state.
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                   types.MethodDescriptorType, types.WrapperDescriptorType, functools.partial, type)


class StageIdentityError(TypeError):
    """A stage parameter has no canonical form, so a checkpoint could be reused by mistake."""


def canonical(value: Any, stage: str = "?", where: str = "value") -> Any:
    """A JSON-able form of ``value`` in which different values never coincide.

    ``stage`` and ``where`` (the parameter's path, e.g. ``weights[2]``) only name the culprit
    when a value is refused.
    """
    return _Canon(stage).form(value, where)


def callable_identity(fn: Callable, stage: str = "?", where: str = "fn") -> str:
    """``module.qualname:digest`` of a function: its source, its module's source, its closure."""
    return _Canon(stage).callable(fn, where)


def module_source_digest(module_name: str | None) -> str | None:
    """sha256 of the file that defines ``module_name`` (None when it has no readable file)."""
    module = sys.modules.get(module_name or "")
    path = getattr(module, "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _qualified(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', None) or type(obj).__qualname__}"


class _Canon:
    """One identity computation: the stage to name in errors, and the callables in progress."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._active: set[int] = set()  # callables being identified (recursive closures)

    def refuse(self, value: Any, where: str, why: str = "") -> StageIdentityError:
        why = why or (" (its repr may be truncated or hold a memory address, so a changed value "
                      "could reuse a stale checkpoint)")
        return StageIdentityError(
            f"stage {self.stage!r}: parameter {where!r} ({type(value).__module__}."
            f"{type(value).__qualname__}) has no canonical form for the checkpoint identity{why}; "
            "pass plain JSON-able values (str, int, float, bool, None, lists, tuples, sets, dicts, "
            "enums, paths, numpy arrays, dataclasses, pydantic models, stages, module-level "
            "functions, objects whose identity() returns such values), or override the "
            "stage's identity() to return such a form"
        )

    def form(self, value: Any, where: str) -> Any:  # noqa: C901 - one branch per kind of value
        if isinstance(value, enum.Enum):
            return self.form(value.value, where)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"bytes_sha256": hashlib.sha256(bytes(value)).hexdigest()}
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, (list, tuple)):
            return [self.form(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (set, frozenset)):
            items = [self.form(v, f"{where}{{}}") for v in value]
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                name = self.key(key, where)
                if name in out:
                    raise self.refuse(value, where, f" (two keys both read as {name!r})")
                out[name] = self.form(item, f"{where}.{name}")
            return dict(sorted(out.items()))
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, numpy.ndarray):
            return self.array(value, where)
        if numpy is not None and isinstance(value, numpy.generic):
            return self.form(value.item(), where)
        if isinstance(value, (dt.datetime, dt.date, dt.time)):
            return {type(value).__name__: value.isoformat()}
        if isinstance(value, dt.timedelta):
            return {"timedelta_s": value.total_seconds()}
        if isinstance(value, decimal.Decimal):
            return {"decimal": str(value)}
        if isinstance(value, re.Pattern):
            return {"regex": self.form(value.pattern, where), "flags": int(value.flags)}
        if not isinstance(value, type) and callable(getattr(value, "identity", None)):
            if hasattr(value, "identity_hash"):
                return value.identity()  # a nested stage
            return {"type": _qualified(type(value)),
                    "identity": self.form(value.identity(), f"{where}.identity()")}
        if isinstance(value, _FUNCTION_TYPES):
            return self.callable(value, where)
        if hasattr(type(value), "model_fields") and hasattr(value, "model_dump"):  # pydantic
            return {"type": _qualified(type(value)),
                    "fields": {k: self.form(getattr(value, k), f"{where}.{k}")
                               for k in sorted(type(value).model_fields)}}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"type": _qualified(type(value)),
                    "fields": {f.name: self.form(getattr(value, f.name), f"{where}.{f.name}")
                               for f in dataclasses.fields(value)}}
        raise self.refuse(value, where)

    def key(self, key: Any, where: str) -> str:
        if isinstance(key, enum.Enum):
            key = key.value
        if isinstance(key, str):
            return key
        if key is None or isinstance(key, (bool, int, float)):
            return json.dumps(key)
        if isinstance(key, os.PathLike):
            return os.fspath(key)
        raise self.refuse(key, f"{where} (a key)")

    def array(self, value: Any, where: str) -> Any:
        if value.dtype.hasobject:
            return {"ndarray": "object", "shape": list(value.shape),
                    "items": self.form(value.tolist(), where)}
        import numpy

        data = numpy.ascontiguousarray(value).tobytes()
        return {"ndarray": value.dtype.str, "shape": list(value.shape),
                "sha256": hashlib.sha256(data).hexdigest()}

    def callable(self, fn: Any, where: str) -> str:
        if id(fn) in self._active:
            return f"{_qualified(fn)}:<recursive>"
        self._active.add(id(fn))
        try:
            parts = self.callable_parts(fn, where)
        finally:
            self._active.discard(id(fn))
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return f"{_qualified(fn)}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def callable_parts(self, fn: Any, where: str) -> dict[str, Any]:
        if isinstance(fn, functools.partial):
            return {"partial": self.callable(fn.func, where),
                    "args": self.form(list(fn.args), f"{where}.args"),
                    "keywords": self.form(dict(fn.keywords), f"{where}.keywords")}
        if isinstance(fn, types.MethodType):
            return {"method": self.callable(fn.__func__, where),
                    "self": self.form(fn.__self__, f"{where}.__self__")}
        parts: dict[str, Any] = {"module": module_source_digest(getattr(fn, "__module__", None))}
        try:
            parts["source"] = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
        except (OSError, TypeError):
            code = getattr(fn, "__code__", None)
            # No source (built at run time): the compiled code still differs when it does.
            parts["code"] = (hashlib.sha256(marshal.dumps(code)).hexdigest()
                             if code is not None else None)
        code = getattr(fn, "__code__", None)
        closure = getattr(fn, "__closure__", None) or ()
        if code is not None and closure:
            cells: dict[str, Any] = {}
            for name, cell in zip(code.co_freevars, closure):
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell: not yet assigned
                    continue
                cells[name] = self.form(contents, f"{where}.<closure {name}>")
            parts["closure"] = cells
        return parts
