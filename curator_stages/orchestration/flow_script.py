"""What a flow file needs beyond its parameters and stage groups, in one import and two calls.

    from curator_stages.orchestration.flow_script import curation_flow, run_flow_script
    ...                                     # parameters, stage groups, CurationFlowSpec
    my_flow = curation_flow(SPEC)           # the Prefect flow (deployments name it)
    if __name__ == "__main__":
        run_flow_script(SPEC, my_flow)      # `python flows/my_flow.py --help`

Importing this module does what must happen before Prefect or Ray is imported: the local-run
environment defaults (:mod:`curator_stages.env_defaults`), and, when the importing file runs as
a script, the spawn of Prefect's temporary API, so that it starts while Prefect's own import is
still under way (:func:`~curator_stages.orchestration.api_server.start_early`). The module
imports neither Prefect nor Ray itself until :func:`curation_flow` is called.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

from curator_stages.env_defaults import apply_local_run_defaults
from curator_stages.orchestration.api_server import start_early

if TYPE_CHECKING:  # pragma: no cover
    from prefect import Flow

    from curator_stages.orchestration.curation_run import CurationFlowSpec

#: Modules whose frames sit between an ``import`` statement and the module it imports.
_IMPORT_MACHINERY = ("importlib", "<frozen importlib")


def _imported_by_a_running_script() -> bool:
    """Whether the file whose ``import`` loads this module is the script Python runs."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != __name__ and not name.startswith(_IMPORT_MACHINERY):
            return name == "__main__"
        frame = frame.f_back
    return False


apply_local_run_defaults()  # some are read when Prefect or Ray is imported: first
if _imported_by_a_running_script():
    start_early(sys.argv[1:])


def curation_flow(spec: "CurationFlowSpec[Any]", *, description: str | None = None,
                  log_prints: bool = False) -> "Flow[..., dict[str, Any]]":
    """The Prefect flow of ``spec``: one parameter, ``params`` (the UI's form), run by
    :func:`~curator_stages.orchestration.curation_run.run_curation`.

    The flow's function is named after the flow and belongs to the module that defines the
    spec's stage groups, which is shipped to Ray workers by value when they cannot import it
    by name (a script, or a deployment's entrypoint file).
    """
    from prefect import flow

    from curator_stages.orchestration.curation_run import run_curation
    from curator_stages.orchestration.ray_seam import ship_by_value

    model = spec.params_model

    def run(params=model.model_construct()):  # noqa: B008 - the form's defaults
        return run_curation(spec, params)

    module = spec.build_stage_groups.__module__
    run.__annotations__ = {"params": model, "return": dict[str, Any]}
    run.__name__ = run.__qualname__ = spec.name.replace("-", "_")
    run.__module__ = module
    run.__doc__ = description or spec.title
    ship_by_value(module)
    return flow(name=spec.name, description=description, log_prints=log_prints)(run)


def run_flow_script(spec: "CurationFlowSpec[Any]", flow_fn: Any,
                    argv: list[str] | None = None) -> NoReturn:
    """``python flows/<name>.py [options]``: parse, validate, run, and exit with the run's code."""
    from curator_stages.orchestration.flow_cli import flow_main

    sys.exit(flow_main(spec, flow_fn, argv))
