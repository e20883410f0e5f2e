"""The Prefect layer: stage tasks over checkpoints, the Ray session, artifacts and accounting.

Flows in ``flows/`` build stages, group them, and call :func:`run_stage_groups` then
:func:`finish_run`; everything between Prefect tasks is a :class:`DatasetRef`.
"""

# Names are imported on first use (PEP 562): Ray workers unpickle functions of submodules
# such as checkpoint.load_tasks_batch, and an eager package import would pull Prefect (~1.6 s
# CPU) into every Ray Data worker process that only reads a checkpoint.
_LAZY = {
    "DatasetRef": "curator_stages.orchestration.dataset_ref",
    "input_fingerprint": "curator_stages.orchestration.fingerprint",
    "resolve_input_files": "curator_stages.orchestration.fingerprint",
    "stages_fingerprint": "curator_stages.orchestration.fingerprint",
    "GroupsResult": "curator_stages.orchestration.pipeline_run",
    "StageTaskOptions": "curator_stages.orchestration.pipeline_run",
    "finish_run": "curator_stages.orchestration.pipeline_run",
    "run_stage_groups": "curator_stages.orchestration.pipeline_run",
    "RaySession": "curator_stages.orchestration.ray_session",
    "SessionRayTaskRunner": "curator_stages.orchestration.ray_session",
    "worker_api_settings": "curator_stages.orchestration.ray_session",
    "AccountingError": "curator_stages.orchestration.run_summary",
    "HistoryAggregator": "curator_stages.orchestration.run_summary",
    "RunSummary": "curator_stages.orchestration.run_summary",
    "StageCounts": "curator_stages.orchestration.run_summary",
    "summarise": "curator_stages.orchestration.run_summary",
    "RetryPolicy": "curator_stages.orchestration.retry_policy",
    "WorkDirBusyError": "curator_stages.orchestration.work_dir_lock",
    "work_dir_lock": "curator_stages.orchestration.work_dir_lock",
    "output_location": "curator_stages.orchestration.stage_task",
    "run_stages": "curator_stages.orchestration.stage_task",
    "stage_task": "curator_stages.orchestration.stage_task",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

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
