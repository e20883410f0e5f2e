"""The Prefect layer: stage tasks over checkpoints, the Ray session, artifacts and accounting.

Flows in ``flows/`` build stages, group them, and call :func:`run_stage_groups` then
:func:`finish_run`; everything between Prefect tasks is a :class:`DatasetRef`. Checkpoints themselves live in
:mod:`curator_stages.checkpoints`, which Ray workers import without Prefect, so this package
imports its modules eagerly.
"""

from curator_stages.checkpoints.dataset_ref import DatasetRef
from curator_stages.orchestration.fingerprint import (
    input_fingerprint,
    resolve_input_files,
    stages_fingerprint,
)
from curator_stages.orchestration.pipeline_run import (
    GroupsResult,
    StageTaskOptions,
    finish_run,
    run_stage_groups,
)
from curator_stages.orchestration.ray_session import (
    RaySession,
    SessionRayTaskRunner,
    worker_api_settings,
)
from curator_stages.orchestration.retry_policy import RetryPolicy
from curator_stages.orchestration.run_summary import (
    AccountingError,
    HistoryAggregator,
    RunSummary,
    StageCounts,
    summarise,
)
from curator_stages.orchestration.stage_task import output_location, run_stages, stage_task
from curator_stages.orchestration.work_dir_lock import WorkDirBusyError, work_dir_lock

__all__ = [
    "AccountingError",
    "DatasetRef",
    "GroupsResult",
    "HistoryAggregator",
    "RaySession",
    "RetryPolicy",
    "RunSummary",
    "SessionRayTaskRunner",
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
    "work_dir_lock",
    "worker_api_settings",
    "WorkDirBusyError",
]
