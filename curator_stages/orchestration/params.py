"""Flow parameters on the command line: an argparse CLI generated from a pydantic model.

The model stays the single source of truth (types, bounds, descriptions) for the Prefect UI
form, for deployments and for ``python flows/<name>.py --help``. A bad value exits with code 2
and a message that names the field, before any work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from typing import Any, Callable, Literal, Sequence, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from curator_stages.io.output_manifest import OUTPUT_SUBDIRS
from curator_stages.io.path_safety import (
    probe_writable,
    refuse_broad_input,
    refuse_broken_links,
    refuse_link_below,
    refuse_overlap,
)

M = TypeVar("M", bound=BaseModel)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Defaults in every option's help; the epilog (tables) printed as written."""


def build_parser(model: type[BaseModel], prog: str | None = None,
                 description: str | None = None,
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """One option per field: ``--field-name``; booleans get ``--x/--no-x``; lists take several
    values (or one comma-separated value); ``Literal`` fields list their choices. ``epilog``
    follows the options in ``--help`` as written."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description or (model.__doc__ or "").strip(), epilog=epilog,
        formatter_class=_HelpFormatter)
    for name, field in model.model_fields.items():
        annotation, optional = _unwrap_optional(field.annotation)
        help_text = (field.description or "").replace("%", "%%")
        bounds = [f"{k} {getattr(m, k)}" for m in field.metadata
                  for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None]
        if bounds:
            help_text += f" [{', '.join(bounds)}]"
        kwargs: dict[str, Any] = {"dest": name, "help": help_text,
                                  "default": argparse.SUPPRESS}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(annotation) is Literal:
            kwargs["choices"] = [str(c) for c in get_args(annotation)]
        elif get_origin(annotation) in (list, tuple, typing.Sequence):
            kwargs["nargs"] = "+"
            kwargs["metavar"] = name.upper()
        else:
            kwargs["metavar"] = getattr(annotation, "__name__", "VALUE").upper()
        default = field.get_default(call_default_factory=True)
        if default is not None and not isinstance(default, BaseModel):
            kwargs["help"] += f" (default: {default})"
        parser.add_argument(_flag(name), **kwargs)
    return parser


def _coerce(model: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        annotation, optional = _unwrap_optional(model.model_fields[name].annotation)
        if isinstance(value, str) and optional and value.lower() in ("none", "null", ""):
            out[name] = None
        elif isinstance(value, list):
            items = [v for part in value for v in str(part).split(",") if v != ""]
            out[name] = None if optional and items in ([], ["none"]) else items
        else:
            out[name] = value
    return out


def format_validation_error(model: type[BaseModel], exc: ValidationError) -> str:
    """``--field-name: message`` lines (what a CLI user types to fix it)."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        field = loc[0] if loc else ""
        msg = str(err.get("msg", ""))
        msg = msg.removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        if not field:  # a check of several fields: its message starts with the field to change
            first = msg.split(" ", 1)[0].rstrip(":")
            if first in model.model_fields:
                field, msg = first, msg.removeprefix(f"{first}: ")
        where = (f"{_flag(field)} ({field})" if field in model.model_fields
                 else field or model.__name__)
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def parse_params(model: type[M], argv: Sequence[str] | None = None,
                 prog: str | None = None, epilog: str | None = None) -> M:
    """Parse ``argv`` into a validated ``model``; exits 2 naming the field on a bad value, in
    one line (no usage text: the line says what to fix)."""
    parser = build_parser(model, prog=prog, epilog=epilog)
    args = vars(parser.parse_args(argv))
    try:
        return model.model_validate(_coerce(model, args))
    except ValidationError as exc:
        parser.exit(2, f"{parser.prog}: error: invalid parameter "
                       f"{format_validation_error(model, exc)}\n")
    raise AssertionError("unreachable")  # parser.error exits


# ----------------------------------------------------------------------------- shared checks
# Validators of the flows' parameter models call these, so a CLI run, a Python call and a
# deployment run are refused alike, before Ray starts or any file is written.
def check_input_files(field: str, value: str, resolved: str,
                      lister: Callable[[str], list[str]], takes: str | None = None) -> str:
    """Refuse an input that is a filesystem root or the home directory, one that matches no
    file (``takes``: what the reader's listing takes, e.g. "JSONL (.jsonl, ...)"), and one
    whose listing holds a dangling link or a link loop; returns ``resolved``."""
    refuse_broad_input(field, resolved)
    if "://" not in resolved and os.path.islink(resolved) and not os.path.exists(resolved):
        refuse_broken_links(field, [resolved])
    try:
        files = lister(resolved)
    except OSError as exc:
        raise ValueError(f"{field} {value!r} cannot be listed: {exc}") from None
    if not files:
        held = ""
        if "://" not in resolved and os.path.isdir(resolved):
            names = sorted(n for n in os.listdir(resolved) if not n.startswith((".", "_")))
            held = (f"; it holds {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
                    if names else "; it is empty")
        raise ValueError(f"no input files match {value!r} (resolved to {resolved!r}){held}; "
                         f"give an existing {takes or 'JSONL'} file, directory or glob")
    refuse_broken_links(field, files)
    return resolved


def check_output_location(field: str | None, value: str, earlier: dict[str, Any],
                          input_field: str = "input", output_field: str = "output") -> None:
    """Refuse an output or work dir on, in or around the input (a run would prune or read it
    back) or overlapping the other one, an output whose ``data``/``quarantine``/``dropped``
    is a symbolic link, and one that cannot be written; raises ValueError."""
    field = field or "output"
    if earlier.get(input_field):
        own = "outputs" if field == output_field else "checkpoints"
        refuse_overlap(field, value, input_field, earlier[input_field],
                       f"a run would read its own {own} back as input, or delete input files "
                       f"while cleaning its {field}")
    if field != output_field and earlier.get(output_field):
        refuse_overlap(field, value, output_field, earlier[output_field],
                       "checkpoints and outputs must not share a directory tree")
    if field == output_field:
        for sub in OUTPUT_SUBDIRS:  # a link there would aim the writers and the prune elsewhere
            refuse_link_below(field, value, sub)
    probe_writable(field, value)


def check_num_cpus(value: int | None, earlier: dict[str, Any]) -> int | None:
    """An embedded Ray gets no more CPUs than the machine has: each CPU becomes a worker process
    (``--num-cpus 4096`` on 2 CPUs started 58+ workers and 10 GB RSS). A cluster is not bounded."""
    if value is None or "ray_address" not in earlier:
        return value
    address = earlier.get("ray_address") or os.environ.get("RAY_ADDRESS") or ""
    cpus = os.cpu_count() or 1
    if address in ("", "local") and value > cpus:
        raise ValueError(f"num_cpus {value} exceeds this machine's {cpus} CPUs for an embedded "
                         "Ray; leave it unset (all CPUs), lower it, or join a cluster with "
                         "ray_address")
    return value


#: Ray's smallest object store (``ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES``, 75 MiB);
#: repeated here so validation imports no Ray.
OBJECT_STORE_MINIMUM_BYTES = 75 * 1024 * 1024


def joined_address(earlier: dict[str, Any]) -> str:
    """The cluster a run joins (its ``ray_address``, else ``RAY_ADDRESS``); "" for an embedded
    Ray, which ``"local"`` also names."""
    address = earlier.get("ray_address") or os.environ.get("RAY_ADDRESS") or ""
    return "" if address == "local" else address


def _refuse_on_cluster(field: str, earlier: dict[str, Any]) -> None:
    """Memory and spilling are the node's settings, fixed when its Ray started: a run that joins
    a cluster cannot change them, so asking is an error rather than a silent no-op."""
    address = joined_address(earlier)
    if address:
        raise ValueError(
            f"{field} applies to an embedded Ray only; this run joins the Ray cluster at "
            f"{address}, whose object store and spill directory were fixed by whoever started "
            "it. Fix: set them on each node of that cluster (`ray start --object-store-memory "
            "BYTES --object-spilling-directory DIR`; for the warm local Ray, `curator-stages ray "
            f"start --object-store-memory SIZE --spill-dir DIR`), or drop {field}, or unset "
            "ray_address and RAY_ADDRESS for an embedded Ray")


def check_object_store_memory(value: int | None, earlier: dict[str, Any]) -> int | None:
    """An embedded Ray's object store: at least Ray's minimum (Ray refuses less, after starting
    its processes) and at most this machine's memory (Ray would start, then fail or thrash)."""
    if value is None or "ray_address" not in earlier:
        return value
    _refuse_on_cluster("object_store_memory", earlier)
    import psutil

    total = psutil.virtual_memory().total
    if value < OBJECT_STORE_MINIMUM_BYTES:
        raise ValueError(f"object_store_memory {value} bytes is below Ray's minimum of "
                         f"{OBJECT_STORE_MINIMUM_BYTES} bytes (75 MiB); give at least 75MiB, or "
                         "leave it unset (Ray's default: 30% of the memory)")
    if value > total:
        raise ValueError(f"object_store_memory {value} bytes ({value / 1e9:.1f} GB) exceeds "
                         f"this machine's memory ({total / 1e9:.1f} GB); lower it (objects "
                         "beyond the store spill to disk: see spill_dir), or leave it unset "
                         "(Ray's default: 30% of the memory)")
    return int(value)


def check_spill_dir(value: str | None, earlier: dict[str, Any]) -> str | None:
    """A local directory the embedded Ray's raylet can create and write, apart from the input,
    the output and the work dir (spilled objects are Ray's files, deleted as objects are freed:
    among the run's own files they would be read back, published or pruned). Returns it
    absolute: Ray's processes do not share this process's working directory."""
    if value is None or "ray_address" not in earlier:
        return value
    _refuse_on_cluster("spill_dir", earlier)
    if "://" in value and not value.startswith("file://"):
        raise ValueError(f"spill_dir {value!r} is not a local directory; Ray spills to the "
                         "node's own filesystem: give a local path (a fast disk with room)")
    path = os.path.abspath(os.path.expanduser(value.removeprefix("file://")))
    for other in ("input", "output", "work_dir"):
        if earlier.get(other):
            refuse_overlap("spill_dir", path, other, earlier[other],
                           "Ray's spilled objects must not mix with the run's own files")
    probe_writable("spill_dir", path)
    return path


def params_json(params: BaseModel) -> str:
    return json.dumps(params.model_dump(mode="json"), indent=2)


__all__ = ["build_parser", "check_input_files", "check_num_cpus", "check_object_store_memory",
           "check_output_location", "check_spill_dir", "format_validation_error",
           "joined_address", "parse_params", "params_json"]
