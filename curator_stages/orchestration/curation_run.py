"""One way to run a curation flow: a spec (what the flow is) and :func:`run_curation` (the run).

Every curation flow does the same thing around its own stages: list the input files once (the
fingerprint and the file partitioner share that listing), seed the fingerprint chain, build the
stage groups, open the Ray session, publish the plan, run the groups as stage tasks, rewrite
outputs a user deleted, prune what an earlier run of this flow wrote and this run did not, write
``run_summary.json`` (failing on broken accounting), and write the report. A flow file holds
only what differs: its parameter model (a
:class:`~curator_stages.orchestration.curation_params.CurationParams`), its stage groups, and a
:class:`CurationFlowSpec` naming them; its ``@flow`` function calls ``run_curation(SPEC, params)``.

The whole run holds the work directory's lock (:mod:`work_dir_lock`), the prune included, so
two runs on one work directory never interleave their stage tasks or their clean-up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from curator_stages.orchestration.curation_params import CurationParams
from curator_stages.orchestration.ray_seam import resolve_driver

P = TypeVar("P", bound=CurationParams)

#: Said by the run's log and by ``--plan`` when the input is one file.
SINGLE_FILE_NOTE = ("one input file: it is read as one task, with no parallelism across files "
                    "(split it into several files to use more CPUs)")


@dataclass(frozen=True)
class CurationFlowSpec(Generic[P]):
    """What a curation flow is; the CLI (``python flows/x.py``, ``curator-stages plan``) and
    :func:`run_curation` read it, so nothing duck-types a flow module."""

    #: The Prefect flow name; also the prefix of the run's artifact keys and the owner name in
    #: ``<output>/_curator_outputs.json``.
    name: str
    #: Title of the summary artifact, the report and the console table.
    title: str
    params_model: type[P]
    #: The execution stages, grouped into stage tasks (one checkpoint per group).
    build_stage_groups: Callable[[P], list[list[Any]]]
    #: Mixed into the input fingerprint (a flow's checkpoints never serve another flow).
    fingerprint_extra: Any = None
    #: Environment of the Ray job (e.g. ``{"env_vars": {"PYTHONPATH": checkout}}``).
    runtime_env: Callable[[P], dict[str, Any] | None] = field(default=lambda p: None)
    #: How the report tells a reader to keep dropped documents (the flow's own option).
    dropped_hint: str | None = None
    #: Write report.md and funnel.png (a ``write_report`` parameter can still turn it off).
    report: bool = True
    #: Stage name -> the fix, in the flow's own options, when the plan finds the stage can never
    #: be scheduled (e.g. ``--embedding-device cpu``); replaces the library's fix.
    schedule_fixes: Callable[[P], dict[str, str]] = field(default=lambda p: {})

    def stage_task_names(self, params: P) -> list[list[str]]:
        return [[s.stage_name for s in g] for g in self.build_stage_groups(params)]


def run_curation(spec: CurationFlowSpec[P], params: P | dict[str, Any]) -> dict[str, Any]:
    """Run the flow ``spec`` with ``params`` inside a Prefect flow run; returns the run summary
    (also in ``<output>/run_summary.json``)."""
    from prefect import get_run_logger

    from curator_stages.checkpoints.dataset_ref import DatasetRef
    from curator_stages.io.listing import list_run_input
    from curator_stages.orchestration.fingerprint import input_fingerprint
    from curator_stages.orchestration.pipeline_run import (
        StageTaskOptions, finish_run, run_stage_groups,
    )
    from curator_stages.orchestration.ray_session import RaySession
    from curator_stages.orchestration.work_dir_lock import work_dir_lock

    # Prefect validated the fields it was given; validating again covers the defaults and a
    # model built without validation, still before Ray starts or any file is touched.
    raw = params.model_dump() if isinstance(params, CurationParams) else dict(params)
    params = spec.params_model.model_validate(raw)
    logger = get_run_logger()
    started = time.perf_counter()
    groups = spec.build_stage_groups(params)
    # The run's one listing of its input: the fingerprint is computed from it, and the file
    # partitioners partition it instead of listing again in their stage tasks.
    listing = list_run_input(s for g in groups for s in g) or params.input_listing(params.input)
    files = listing.paths if listing is not None else []
    logger.info("input: %d file(s) under %s; %d stage task(s): %s; drivers %s", len(files),
                params.input, len(groups),
                " | ".join("+".join(s.stage_name for s in g) for g in groups),
                resolve_driver(params.driver, params.ray_address))
    if len(files) == 1:
        logger.info(SINGLE_FILE_NOTE)
    seed = DatasetRef.seed(input_fingerprint(listing if listing is not None else [],
                                             extra=spec.fingerprint_extra,
                                             verify=params.verify_input))
    options = StageTaskOptions(retries=params.retries,
                               retry_delay_seconds=params.retry_delay_seconds,
                               retry_jitter_factor=0.2 if params.retry_delay_seconds else None,
                               timeout_seconds=params.timeout_seconds, tags=(spec.name,),
                               driver=resolve_driver(params.driver, params.ray_address))
    session = RaySession(params.ray_address, num_cpus=params.num_cpus,
                         log_to_driver=params.log_to_driver, runtime_env=spec.runtime_env(params))
    with work_dir_lock(params.work_dir), session:
        plan = _publish_plan(spec, groups, params, logger)
        result = run_stage_groups(groups, seed, params.work_dir, options=options,
                                  refresh=params.refresh, ignore_head_node=params.ignore_head_node,
                                  progress_key=f"{spec.name}-progress")
        if missing_outputs(result.final):
            # The writer's checkpoint says "done" but its files were deleted: write them again.
            logger.warning("output files under %s are missing; rewriting them", params.output)
            again = run_stage_groups(groups[-1:], result.refs[-2] if len(groups) > 1 else seed,
                                     params.work_dir, options=options, refresh=True,
                                     ignore_head_node=params.ignore_head_node)
            result.refs[-1] = again.final
            result.records[-1] = again.records[-1]
        _prune(spec, result.final, params.output, logger)
        summary = finish_run(result, params.output, spec.title, f"{spec.name}-summary",
                             started=started)
    if spec.report and getattr(params, "write_report", True):
        from curator_stages.reporting import write_run_report

        report = write_run_report(params.output, summary.to_dict(), plan=plan, title=spec.title,
                                  dropped_hint=spec.dropped_hint)
        logger.info("report: %s", report)
    return summary.to_dict()


def written_outputs(final: Any) -> list[str]:
    """Every file the run's writer produced: documents, quarantine and dropped examples."""
    from curator_stages.checkpoints import read_tasks

    files: list[str] = []
    for task in read_tasks(final.path):
        files.extend(p for p in (task.data if isinstance(task.data, list) else [])
                     if isinstance(p, str))
        files.extend(task._metadata.get("quarantine_files", []))
        files.extend(task._metadata.get("dropped_files", []))
    return files


def missing_outputs(final: Any) -> list[str]:
    """Local output files the final checkpoint lists that are gone."""
    from curator_stages.checkpoints import read_tasks

    paths = [p for t in read_tasks(final.path) if isinstance(t.data, list) for p in t.data
             if isinstance(p, str)]
    return [p for p in paths if "://" not in p and not os.path.exists(p)]


def _prune(spec: CurationFlowSpec[Any], final: Any, output: str, logger: Any) -> None:
    """Remove this flow's files of an earlier run that this run did not write again, so
    ``output`` holds this run's documents only, and record this run's files in
    ``<output>/_curator_outputs.json``. Only files that record lists are ever deleted."""
    from curator_stages.io.output_manifest import prune_and_record

    pruned = prune_and_record(output, spec.name, written_outputs(final))
    if pruned.unreadable:
        logger.warning("output record unreadable, nothing pruned: %s", pruned.unreadable)
    if pruned.removed:
        logger.info("removed %d stale file(s) an earlier run of this flow wrote in %s",
                    len(pruned.removed), output)
    if pruned.unknown:
        logger.info("left %d file(s) in %s/{data,quarantine,dropped} that this flow did not "
                    "write", pruned.unknown, output)
    if pruned.failed:
        logger.warning("could not remove %d stale file(s): %s", len(pruned.failed),
                       ", ".join(pruned.failed[:5]))


def plan_for(spec: CurationFlowSpec[P], params: P, groups: list[list[Any]] | None = None,
             cluster: str | None = None) -> Any:
    """The execution plan of the flow's stage groups (never starts Ray for a declared cluster)."""
    from curator_stages.plan import UnschedulableStageError, plan_pipeline

    groups = groups if groups is not None else spec.build_stage_groups(params)
    try:
        return plan_pipeline([s for g in groups for s in g], cluster=cluster,
                             ignore_head_node=params.ignore_head_node,
                             stage_task_groups=[[s.stage_name for s in g] for g in groups],
                             name=spec.name)
    except UnschedulableStageError as exc:
        fix = spec.schedule_fixes(params).get(exc.stage_name or "")
        if fix:
            raise exc.with_fix(fix) from None
        raise


def _publish_plan(spec: CurationFlowSpec[P], groups: list[list[Any]], params: P,
                  logger: Any) -> Any:
    """The execution plan on the live cluster, as the run's first artifact.

    A gate for one thing only: a stage the cluster can never schedule is refused here, before
    the first stage task (Ray Data would fail it, or wait forever, mid-run). Anything else is a
    report: logged, and the run goes on without it.
    """
    from curator_stages.plan import UnschedulableStageError

    try:
        from curator_stages.orchestration.plan_artifact import publish_plan_artifact

        plan = plan_for(spec, params, groups)
        publish_plan_artifact(plan, key=f"{spec.name}-plan")
        return plan
    except UnschedulableStageError:
        raise
    except Exception as exc:  # noqa: BLE001 - logged; the run does not depend on its plan
        logger.warning("could not publish the plan artifact: %s", exc)
        return None


__all__ = ["CurationFlowSpec", "missing_outputs", "plan_for", "run_curation", "written_outputs"]
