"""The ``curator-stages`` command: plan a flow's pipeline, rebuild a run report.

    curator-stages plan flows/text_curation.py [--cluster "2 nodes x 16 cpus"] [--ignore-head-node]
    curator-stages plan my_package.pipelines:build_pipeline --param input=data/ --format markdown
    curator-stages report <output dir>
    curator-stages ray start [--num-cpus N] [--object-store-memory SIZE] [--spill-dir DIR]
    curator-stages ray status | ray stop

A curation flow module exposes ``SPEC``, its
:class:`~curator_stages.orchestration.curation_run.CurationFlowSpec` (parameter model and stage
groups); ``plan`` reads that. A library module may instead expose ``build_pipeline(params) ->
Pipeline`` (with ``stage_task_groups(params) -> list[list[str]]`` when it groups stages), the
pydantic model of its parameters being that argument's annotation. ``plan`` never processes
data and never starts Ray for a declared cluster. ``ray`` keeps a warm local Ray for many runs
(:mod:`curator_stages.runtime.warm`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def load_target(target: str) -> tuple[Any, Any]:
    """(module, object) for ``path/to/flow.py[:attr]`` or ``package.module[:attr]``.

    The default attribute is ``build_pipeline``.
    """
    where, _, attr = target.partition(":")
    if where.endswith(".py") or Path(where).is_file():
        path = Path(where).resolve()
        if not path.is_file():
            raise SystemExit(f"curator-stages: no such flow file {where!r}")
        name = f"_curator_flow_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(where)
    if not attr:
        attr = "SPEC" if _is_spec(getattr(module, "SPEC", None)) else "build_pipeline"
    if not hasattr(module, attr):
        raise SystemExit(
            f"curator-stages: {where!r} has no {attr!r}; a flow module exposes SPEC (a "
            "CurationFlowSpec) or build_pipeline(params) -> Pipeline (or name the attribute: "
            "file.py:attr)")
    return module, getattr(module, attr)


def _params_model(fn: Any) -> Any:
    """The pydantic model annotated on ``fn``'s first parameter, if any."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if not params:
        return None
    hints = getattr(fn, "__annotations__", {})
    ann = hints.get(params[0].name)
    if isinstance(ann, str):
        ann = getattr(sys.modules.get(fn.__module__), ann, None)
    return ann if hasattr(ann, "model_validate") else None


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"curator-stages: --param takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def build_from_target(target: str, params: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(pipeline, params object or None, module) for a target and parameter overrides."""
    module, obj = load_target(target)
    return (*_build(module, obj, params, target), module)


def _build(module: Any, obj: Any, params: Any, target: str) -> tuple[Any, Any]:
    from curator_stages.pipeline import Pipeline

    if isinstance(obj, Pipeline):
        return obj, None
    model = _params_model(obj)
    if model is not None:
        from pydantic import ValidationError

        try:
            p = params if isinstance(params, model) else model.model_validate(params)
        except ValidationError as exc:
            missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
            hint = (f"; pass them with --param, e.g. --param {missing[0]}=..." if missing else "")
            raise SystemExit(f"curator-stages: invalid flow parameters{hint}\n{exc}") from None
        pipeline = obj(p)
    elif params or inspect.signature(obj).parameters:
        pipeline = obj(params) if inspect.signature(obj).parameters else obj()
        p = params
    else:
        pipeline, p = obj(), None
    if not isinstance(pipeline, Pipeline):
        raise SystemExit(f"curator-stages: {target!r} returned {type(pipeline).__name__}, "
                         "not a Pipeline")
    return pipeline, p


def _is_spec(value: Any) -> bool:
    from curator_stages.orchestration.curation_run import CurationFlowSpec

    return isinstance(value, CurationFlowSpec)


def _spec_params(spec: Any, params: dict[str, Any], ignore_head_node: bool) -> Any:
    from pydantic import ValidationError

    from curator_stages.orchestration.params import format_validation_error

    if ignore_head_node:
        params = {**params, "ignore_head_node": True}
    try:
        return spec.params_model.model_validate(params)
    except ValidationError as exc:
        raise SystemExit("curator-stages: invalid flow parameters: "
                         + format_validation_error(spec.params_model, exc)) from None


def _plan_for(module: Any, obj: Any, params: Any, target: str, cluster: str | None,
              ignore_head_node: bool) -> Any:
    from curator_stages.plan import plan_pipeline

    if _is_spec(obj):
        from curator_stages.orchestration.curation_run import plan_for

        return plan_for(obj, _spec_params(obj, params, ignore_head_node), cluster=cluster)
    pipeline, p = _build(module, obj, params, target)
    groups = None
    grouping = getattr(module, "stage_task_groups", None)
    if callable(grouping):
        groups = grouping(p) if inspect.signature(grouping).parameters else grouping()
    return plan_pipeline(pipeline, cluster=cluster, ignore_head_node=ignore_head_node,
                         stage_task_groups=groups)


def _emit(plan: Any, fmt: str) -> None:
    from curator_stages.orchestration.flow_cli import emit_plan

    emit_plan(plan, fmt)


def cmd_plan(args: argparse.Namespace) -> int:
    from curator_stages.plan import UnschedulableStageError

    module, obj = load_target(args.target)
    try:
        plan = _plan_for(module, obj, _parse_params(args.param), args.target, args.cluster,
                         args.ignore_head_node)
    except UnschedulableStageError as exc:
        print(f"curator-stages: {exc}", file=sys.stderr)
        return 2
    _emit(plan, args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from curator_stages.reporting import load_run_summary, write_run_report

    try:
        summary = load_run_summary(args.output_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"curator-stages: {exc}", file=sys.stderr)
        return 2
    # The title, stage modes and hints the flow gave are read back from report_context.json.
    path = write_run_report(args.output_dir, summary, publish_artifact=False)
    print(f"wrote {path} and {Path(args.output_dir) / 'funnel.png'}")
    return 0


def _store_options(size: str | None, spill_dir: str | None) -> tuple[int | None, str | None]:
    """The warm Ray's object store and spill directory, checked as a flow checks its own
    (``object_store_memory``, ``spill_dir``): the warm Ray is embedded, so no address applies."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    from curator_stages.orchestration.params import check_object_store_memory, check_spill_dir

    embedded = {"ray_address": "local"}
    try:
        size_bytes = None if size is None else int(TypeAdapter(ByteSize).validate_python(size))
    except ValidationError as exc:
        raise ValueError(f"--object-store-memory {size!r}: {exc.errors()[0]['msg']}; give bytes "
                         "or a size such as 512MB, 2GiB, 2G") from None
    return (check_object_store_memory(size_bytes, embedded), check_spill_dir(spill_dir, embedded))


def cmd_ray(args: argparse.Namespace) -> int:
    from curator_stages.runtime import warm as warm_ray

    if args.ray_command == "start":
        try:
            store, spill = _store_options(args.object_store_memory, args.spill_dir)
        except ValueError as exc:
            print(f"curator-stages: {exc}", file=sys.stderr)
            return 2
        try:
            warm = warm_ray.start(args.num_cpus, object_store_memory=store, spill_dir=spill)
        except warm_ray.WarmRayError as exc:
            print(f"curator-stages: {exc}", file=sys.stderr)
            return 1
        print(f"started a warm local Ray at {warm.address} ({warm.num_cpus:g} CPUs, object "
              f"store {warm.object_store_memory / 1e6:.0f} MB; 127.0.0.1 only, token "
              f"authentication; holder pid {warm.pid})")
        print("runs of this shell join it after:")
        print(f"export RAY_ADDRESS={warm.address} RAY_AUTH_TOKEN_PATH={warm.token_path}")
        print("(flows find the token by the address alone; stop it with: curator-stages ray stop)")
        return 0
    if args.ray_command == "status":
        warm = warm_ray.recorded()
        if warm is None:
            print("no warm Ray is running (start one with: curator-stages ray start)")
            return 3
        print(f"warm Ray running at {warm.address}: {warm.num_cpus:g} CPUs, object store "
              f"{warm.object_store_memory / 1e6:.0f} MB, holder pid {warm.pid}, token file "
              f"{warm.token_path}")
        return 0
    stopped = warm_ray.stop()
    if stopped is None:
        print("no warm Ray was running")
    else:
        print(f"stopped the warm Ray at {stopped.address} (holder pid {stopped.pid})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curator-stages", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="show how a flow's pipeline will run, without running it")
    p.add_argument("target", help="flow file (flows/x.py[:attr]) or module[:attr]; "
                                  "attr defaults to SPEC, else build_pipeline")
    p.add_argument("--cluster", default=None,
                   help='declared cluster, e.g. "2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus" '
                        "(default: the live Ray cluster, else this machine)")
    p.add_argument("--ignore-head-node", action="store_true",
                   help="plan with no work on the head node")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="flow parameter (JSON values allowed); repeatable")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.set_defaults(func=cmd_plan)
    r = sub.add_parser("report", help="(re)build report.md and funnel.png from run_summary.json")
    r.add_argument("output_dir", help="output directory of a finished flow run")
    r.set_defaults(func=cmd_report)
    w = sub.add_parser("ray", help="a warm local Ray that many runs join (RAY_ADDRESS)")
    wsub = w.add_subparsers(dest="ray_command", required=True)
    ws = wsub.add_parser("start", help="start it (127.0.0.1 only, token auth); prints the "
                                        "export line for RAY_ADDRESS")
    ws.add_argument("--num-cpus", type=int, default=None, help="CPUs (default: all)")
    ws.add_argument("--object-store-memory", default=None, metavar="SIZE",
                    help="object store: bytes or 512MB, 2GiB, 2G (default: Ray's, 30%% of the "
                         "memory); flows joining it cannot change it")
    ws.add_argument("--spill-dir", default=None, metavar="DIR",
                    help="local directory for objects spilled from the store (default: Ray's)")
    wsub.add_parser("status", help="whether it runs, its address and CPUs (exit 3: not running)")
    wsub.add_parser("stop", help="stop it (only the cluster `ray start` started)")
    w.set_defaults(func=cmd_ray)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
