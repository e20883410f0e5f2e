"""Stages made from plain functions: ``@processing_stage``.

Each function gets a class of its own, named after it, so Ray shows ``<Name>Task`` or
``<Name>Actor`` in its plan and dashboard. Such a class exists only in the process that ran the
decorator, so the standard ``pickle`` (``multiprocessing``, spill files) cannot find it by name.
A function stage therefore pickles as "the stage at ``module.function``" (rebuilt on the other
side by importing the module), or, for a function not reachable that way (defined inside
another function, or in ``__main__``, which a Ray worker does not share), as the function plus
the decorator's arguments: Ray's cloudpickle ships such a function by value, while the standard
``pickle`` refuses it by name. A process pool forked or spawned from ``__main__`` does share it,
so the multiprocessing backend pickles ``__main__`` stages by reference as well.
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
    #: The decorator's arguments, to build the same class again in another process.
    build_options: dict[str, Any] = {}

    def process(self, task: Task) -> Any:
        return type(self).fn(task)

    def params(self) -> dict[str, Any]:
        return {"fn": callable_identity(type(self).fn, self.stage_name)}

    def __reduce__(self) -> tuple[Any, ...]:
        # ``__main__`` is not the same module in a Ray worker: there the function goes by value.
        by_reference = self.reduce_by_reference()
        if by_reference is not None and type(self).fn.__module__ != "__main__":
            return by_reference
        return (_rebuild, (type(self).fn, dict(type(self).build_options)), dict(self.__dict__))

    def reduce_by_reference(self) -> tuple[Any, ...] | None:
        """Pickle as "the stage at ``module.function``", when that is where this class lives."""
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
    """A blank instance of the class of the function stage ``module.qualname`` (unpickling)."""
    found = _lookup(module, qualname)
    if not isinstance(found, FunctionStage):
        raise TypeError(f"function stage {module}.{qualname} is no longer a @processing_stage "
                        "in this process; the module differs between driver and worker")
    cls = type(found)
    return cls.__new__(cls)


def _rebuild(fn: Callable[[Task], Any], options: dict[str, Any]) -> FunctionStage:
    return processing_stage(fn, **options)


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
    options = {"name": name, "resources": resources, "batch_size": batch_size,
               "version": version, "spec": dict(spec) if spec else None}

    def build(func: Callable[[Task], Any]) -> FunctionStage:
        class_name = "".join(part.capitalize() for part in func.__name__.split("_")) or "Function"
        attrs: dict[str, Any] = {
            "fn": staticmethod(func),
            "build_options": options,
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
