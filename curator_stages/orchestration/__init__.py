"""The Prefect layer: stage tasks over checkpoints, the Ray session, artifacts and accounting.

A flow in ``flows/`` declares its parameters and stage groups in a
:class:`~curator_stages.orchestration.curation_run.CurationFlowSpec`;
:func:`~curator_stages.orchestration.flow_script.curation_flow` makes it a Prefect flow that
calls :func:`~curator_stages.orchestration.curation_run.run_curation` (which runs the groups
with :func:`run_stage_groups`, then :func:`finish_run`), and
:func:`~curator_stages.orchestration.flow_script.run_flow_script` is its command line.
Everything between Prefect tasks is a :class:`DatasetRef`. Checkpoints themselves live in
:mod:`curator_stages.checkpoints`, which Ray workers import without Prefect.

The names below load on first use, not with the package: a flow script imports
:mod:`.flow_script` (standard library only until it is called) before Prefect, to apply the
environment defaults Ray and Prefect read at import. Ray and the Prefect API themselves are
:mod:`curator_stages.runtime`'s.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "DatasetRef": "curator_stages.checkpoints.dataset_ref",
    **dict.fromkeys(("input_fingerprint", "resolve_input_files", "stages_fingerprint"),
                    "curator_stages.orchestration.fingerprint"),
    **dict.fromkeys(("GroupsResult", "StageTaskOptions", "finish_run", "run_stage_groups"),
                    "curator_stages.orchestration.pipeline_run"),
    "RaySession": "curator_stages.runtime.session",
    "RetryPolicy": "curator_stages.orchestration.retry_policy",
    **dict.fromkeys(("AccountingError", "HistoryAggregator", "RunSummary", "StageCounts",
                     "summarise"), "curator_stages.accounting"),
    **dict.fromkeys(("output_location", "run_stages", "stage_task"),
                    "curator_stages.orchestration.stage_task"),
    **dict.fromkeys(("OutputBusyError", "WorkDirBusyError", "output_lock", "work_dir_lock"),
                    "curator_stages.orchestration.work_dir_lock"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "AccountingError",
    "DatasetRef",
    "GroupsResult",
    "HistoryAggregator",
    "RaySession",
    "RetryPolicy",
    "RunSummary",
    "StageCounts",
    "StageTaskOptions",
    "finish_run",
    "input_fingerprint",
    "output_location",
    "resolve_input_files",
    "run_stage_groups",
    "run_stages",
    "stage_task",
    "stages_fingerprint",
    "summarise",
    "output_lock",
    "work_dir_lock",
    "OutputBusyError",
    "WorkDirBusyError",
]
