"""Stages made from plain functions: ``@processing_stage``.

Each function gets a class of its own, named after it, so Ray shows ``<Name>Task`` or
``<Name>Actor`` in its plan and dashboard. Such a class exists only in the process that ran the
decorator, and the decorator rebinds the function's name to the stage, so neither can be found
by name. Ray's cloudpickle copes by shipping both by value (the worker need not import the
module). The standard ``pickle`` of a process pool cannot; a pool shares the parent's modules,
though, so :meth:`FunctionStage.reduce_by_reference` sends "the stage at ``module.function``"
instead, and the worker rebuilds it from its own import of that module.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from curator_stages.identity import callable_identity
from curator_stages.resources import Resources
from curator_stages.stage import ProcessingStage
from curator_stages.tasks import Task


class FunctionStage(ProcessingStage):
    """A stage made from a plain function by :func:`processing_stage`."""

    fn: Callable[[Task], Any]

    def process(self, task: Task) -> Any:
        return type(self).fn(task)

    def params(self) -> dict[str, Any]:
        return {"fn": callable_identity(type(self).fn, self.stage_name)}

    def reduce_by_reference(self) -> tuple[Any, ...] | None:
        """A pickle reduction to "the stage at ``module.function``" (with this copy's settings),
        or None when the decorated function is not at module level."""
        fn = type(self).fn
        if type(_lookup(fn.__module__, fn.__qualname__)) is not type(self):
            return None
        return (_stage_at, (fn.__module__, fn.__qualname__), dict(self.__dict__))


def _lookup(module: str, qualname: str) -> Any:
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


def _stage_at(module: str, qualname: str) -> FunctionStage:
    """A blank instance of the class of the function stage at ``module.qualname``."""
    found = _lookup(module, qualname)
    if not isinstance(found, FunctionStage):
        raise TypeError(f"{module}.{qualname} is not a @processing_stage in this worker process; "
                        "the worker imported another version of the module than the driver")
    cls = type(found)
    return cls.__new__(cls)


def processing_stage(
    fn: Callable[[Task], Any] | None = None,
    *,
    name: str | None = None,
    resources: Resources | None = None,
    batch_size: int | None = 1,
    version: str = "1",
    spec: dict[str, Any] | None = None,
) -> Any:
    """Turn ``def f(task) -> task | list[task] | None`` into a stage instance."""

    def build(func: Callable[[Task], Any]) -> FunctionStage:
        class_name = "".join(part.capitalize() for part in func.__name__.split("_")) or "Function"
        attrs: dict[str, Any] = {
            "fn": staticmethod(func),
            "name": name or func.__name__,
            "resources": resources or Resources(),
            "batch_size": batch_size,
            "version": version,
            "__module__": func.__module__,
            "__doc__": func.__doc__,
        }
        if spec:
            frozen = dict(spec)
            attrs["ray_stage_spec"] = lambda self: dict(frozen)
        cls = type(class_name, (FunctionStage,), attrs)
        cls.__qualname__ = class_name
        return cls()

    return build(fn) if fn is not None else build
