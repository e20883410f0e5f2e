"""Stages made from plain functions: ``@processing_stage``.

Each function gets a class of its own, named after it, so Ray shows ``<Name>Task`` or
``<Name>Actor`` in its plan and dashboard. Such a class exists only in the process that ran the
decorator, so a function stage pickles as its function plus the decorator's arguments and is
rebuilt on the other side. The function itself must then be found by name, but the decorator
rebinds that name to the stage: the function is therefore also reachable as ``<name>.fn`` (its
``__qualname__`` says so), which holds both for ``module.f`` the stage and ``module.f`` the
plain function. The standard ``pickle`` (``MultiprocessExecutor``) finds it there;
cloudpickle (Ray) keeps its own rules: by name from an importable module, by value from
``__main__``, from a module registered with ``register_pickle_by_value``, or from inside
another function.
"""

from __future__ import annotations

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
        cls = type(self)
        return (_rebuild, (cls.fn, dict(cls.build_options)), dict(self.__dict__))


def _rebuild(fn: Callable[[Task], Any], options: dict[str, Any]) -> FunctionStage:
    return processing_stage(fn, **options)


def _reachable_by_name(func: Callable[..., Any]) -> None:
    """Make ``module.<qualname>`` lead to ``func`` after the decorator took its name."""
    if getattr(func, "fn", None) is func:
        return
    try:
        func.fn = func  # type: ignore[attr-defined]
        func.__qualname__ = f"{func.__qualname__}.fn"
    except (AttributeError, TypeError):  # not a plain function: pickled as it comes
        pass


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
        _reachable_by_name(func)
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
