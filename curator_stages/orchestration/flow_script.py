"""What a flow file needs beyond its parameters and stage groups, in one import and two calls.

    from curator_stages.orchestration.flow_script import curation_flow, run_flow_script
    ...                                     # parameters, stage groups, CurationFlowSpec
    my_flow = curation_flow(SPEC)           # the Prefect flow (deployments name it)
    if __name__ == "__main__":
        run_flow_script(SPEC, my_flow)      # `python flows/my_flow.py --help`

Importing this module does what must happen before Prefect or Ray is imported: the local-run
environment defaults (:mod:`curator_stages.runtime.env`). The module imports neither Prefect
nor Ray itself until :func:`curation_flow` is called.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

from curator_stages.runtime.env import apply_local_run_defaults

if TYPE_CHECKING:  # pragma: no cover
    from prefect import Flow

    from curator_stages.orchestration.curation_run import CurationFlowSpec

apply_local_run_defaults()  # some are read when Prefect or Ray is imported: first


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
    from curator_stages.runtime.session import ship_by_value

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
