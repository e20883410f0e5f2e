"""One way to run a curation flow: a spec (what the flow is) and :func:`run_curation` (the run).

Every curation flow does the same thing around its own stages: list the input files once (the
fingerprint and the file partitioner share that listing), seed the fingerprint chain, build the
stage groups, stage the writers into the run's attempt location, open the Ray session, publish
the plan, run the groups as stage tasks, check the accounting, publish the output snapshot
(:mod:`~curator_stages.io.output_commit`), write ``run_summary.json``, and write the report.
A flow file holds only what differs: its parameter model (a
:class:`~curator_stages.orchestration.curation_params.CurationParams`), its stage groups, and a
:class:`CurationFlowSpec` naming them; its ``@flow`` function calls ``run_curation(SPEC, params)``.

The whole run holds the work directory's lock and the output's (:mod:`work_dir_lock`), so two
runs on one work directory never interleave their stage tasks, and two runs on one output never
interleave their files or their clean-up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from curator_stages.orchestration.curation_params import CurationParams
from curator_stages.runtime.ray_cluster import refuse_ray_client

P = TypeVar("P", bound=CurationParams)

#: Hex digits of the writer's checkpoint fingerprint that name a snapshot (and its files).
SNAPSHOT_CHARS = 16
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
    #: {drop or quarantine reason: the flag that changes it, or "not configurable"}; a key
    #: ending in ``*`` matches reasons that start with it. The report, ``--help`` and the
    #: error of a run that kept nothing name them.
    rule_flags: dict[str, str] = field(default_factory=dict)

    def flag_for(self, reason: str) -> str | None:
        """The flag that changes ``reason`` (a rule name or a quarantine reason), or None."""
        if reason in self.rule_flags:
            return self.rule_flags[reason]
        for key, flag in self.rule_flags.items():
            if key.endswith("*") and reason.startswith(key[:-1]):
                return flag
        return None

    def stage_task_names(self, params: P) -> list[list[str]]:
        return [[s.stage_name for s in g] for g in self.build_stage_groups(params)]


def run_curation(spec: CurationFlowSpec[P], params: P | dict[str, Any]) -> dict[str, Any]:
    """Run the flow ``spec`` with ``params`` inside a Prefect flow run; returns the run summary
    (also in ``<output>/run_summary.json``)."""
    from prefect import get_run_logger

    from curator_stages.checkpoints.dataset_ref import DatasetRef
    from curator_stages.orchestration.fingerprint import list_run_input
    from curator_stages.io.output_commit import attempt_root, clean_unfinished, verify
    from curator_stages.orchestration.fingerprint import input_fingerprint
    from curator_stages.orchestration.pipeline_run import (
        StageTaskOptions, check_kept, finish_run, run_stage_groups,
    )
    from curator_stages.runtime.session import RaySession
    from curator_stages.orchestration.stage_task import CACHED
    from curator_stages.orchestration.work_dir_lock import output_lock, work_dir_lock

    # Prefect validated the fields it was given; validating again covers the defaults and a
    # model built without validation, still before Ray starts or any file is touched.
    raw = params.model_dump() if isinstance(params, CurationParams) else dict(params)
    params = spec.params_model.model_validate(raw)
    refuse_ray_client(params.ray_address)  # RAY_ADDRESS too, before Ray or any file is touched
    logger = get_run_logger()
    started = time.perf_counter()
    groups = spec.build_stage_groups(params)
    # The run's one listing of its input: the fingerprint is computed from it, and the file
    # partitioners partition it instead of listing again in their stage tasks.
    listing = list_run_input(s for g in groups for s in g) or params.input_listing(params.input)
    files = listing.paths if listing is not None else []
    allowed = listing.task_paths if listing is not None else []  # what checkpoints may list
    logger.info("input: %d file(s) under %s; %d stage task(s): %s", len(files), params.input,
                len(groups), " | ".join("+".join(s.stage_name for s in g) for g in groups))
    if len(files) == 1:
        logger.info(SINGLE_FILE_NOTE)
    if listing is not None and listing.skipped:
        logger.warning(skipped_note(listing.skipped, params))
    seed = DatasetRef.seed(input_fingerprint(listing if listing is not None else [],
                                             extra=spec.fingerprint_extra,
                                             verify=params.verify_input))
    options = StageTaskOptions(retries=params.retries,
                               retry_delay_seconds=params.retry_delay_seconds,
                               retry_jitter_factor=0.2 if params.retry_delay_seconds else None,
                               timeout_seconds=params.timeout_seconds, tags=(spec.name,))
    session = RaySession.for_params(params, runtime_env=spec.runtime_env(params))
    with work_dir_lock(params.work_dir), output_lock(params.output), session:
        left = clean_unfinished(params.output)
        if left:
            logger.info("removed %d leftover(s) of an unfinished earlier run from %s",
                        len(left), params.output)
        snapshot = stage_writers(groups, seed.fingerprint, params.output)
        plan = _publish_plan(spec, groups, params, logger)
        result = run_stage_groups(groups, seed, params.work_dir, options=options,
                                  refresh=params.refresh, ignore_head_node=params.ignore_head_node,
                                  progress_key=f"{spec.name}-progress", input_files=allowed)
        if result.final.fingerprint[:SNAPSHOT_CHARS] != snapshot:
            raise RuntimeError(f"flow {spec.name!r}: the writer's checkpoint "
                               f"{result.final.fingerprint} is not the staged snapshot "
                               f"{snapshot}; nothing was published")
        stale = True
        if result.records[-1]["status"] == CACHED:
            # The writer's checkpoint says "done": the output must be the snapshot it wrote.
            problem = verify(params.output, spec.name, snapshot)
            stale = problem is not None
            if stale:
                logger.warning("%s; writing the output again", problem)
                again = run_stage_groups(groups[-1:], result.refs[-2] if len(groups) > 1
                                         else seed, params.work_dir, options=options,
                                         refresh=True, ignore_head_node=params.ignore_head_node,
                                         input_files=allowed)
                result.refs[-1] = again.final
                result.records[-1] = again.records[-1]

        check_kept(result, spec.flag_for, params.output)  # before anything is published

        def commit(summary: Any) -> None:
            _publish(spec, result.final, params.output, snapshot, summary, logger)

        summary = finish_run(result, params.output, spec.title, f"{spec.name}-summary",
                             started=started, snapshot=snapshot,
                             commit=commit if stale else None,
                             failed_dir=attempt_root(params.output, snapshot))
        if spec.report and getattr(params, "write_report", True):  # still under the locks
            from curator_stages.reporting import write_run_report

            report = write_run_report(params.output, summary.to_dict(), plan=plan,
                                      title=spec.title, dropped_hint=spec.dropped_hint,
                                      rule_flags=spec.rule_flags)
            logger.info("report: %s", report)
    return summary.to_dict()


def stage_writers(groups: list[list[Any]], seed_fingerprint: str, output: str) -> str:
    """Point the writers of the last stage task at the run's attempt location and return the
    snapshot id: the start of that stage task's checkpoint fingerprint (which covers the flow,
    the input and every parameter), so its files never share a name with another run's."""
    from curator_stages.io.output_commit import attempt_root
    from curator_stages.orchestration.fingerprint import stages_fingerprint

    fingerprint = seed_fingerprint
    for group in groups:
        fingerprint = stages_fingerprint(fingerprint, group)
    snapshot = fingerprint[:SNAPSHOT_CHARS]
    out = output.rstrip("/")
    for stage in (s for g in groups for s in g):
        where = getattr(stage, "quarantine_dir", None)
        if isinstance(where, str) and (where.rstrip("/") == out or where.startswith(out + "/")):
            raise ValueError(f"stage {stage.stage_name!r}: quarantine_dir {where!r} writes into "
                             "the flow's output outside its publish; give the writer "
                             "quarantine_output instead (the reader's records ride to it)")
    writers = [s for s in groups[-1] if hasattr(s, "stage_into")]
    if not writers:
        raise ValueError("a curation flow's last stage task must hold its writer (a flow's "
                         "output is what its writer wrote); append the writer to the last group")
    for writer in writers:
        writer.stage_into(output, attempt_root(output, snapshot), snapshot)
    return snapshot


def skipped_note(skipped: Any, params: CurationParams) -> str:
    """The line that names the files a directory or glob input held and the run does not read."""
    from curator_stages.io.input_check import describe

    names = [os.path.basename(p) for p in skipped]
    takes = describe(params.input_formats) if params.input_formats else "its reader's files"
    return (f"input: skipped {len(names)} file(s) that are not {takes}: "
            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}")


def written_outputs(final: Any) -> list[str]:
    """Every file the run's writer produced: documents, quarantine and dropped examples."""
    from curator_stages.checkpoints import read_tasks

    files: list[str] = []
    for task in read_tasks(final.path):
        files.extend(p for p in (task.data if isinstance(task.data, list) else [])
                     if isinstance(p, str))
        files.extend(task.metadata.get("quarantine_files", []))
        files.extend(task.metadata.get("dropped_files", []))
    return files


def _publish(spec: CurationFlowSpec[Any], final: Any, output: str, snapshot: str, summary: Any,
             logger: Any) -> None:
    """Publish this run's snapshot (its accounting held), then say what it replaced."""
    from prefect.context import FlowRunContext

    from curator_stages.io.output_commit import publish

    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx is not None else None
    run = {"flow_run_id": str(flow_run.id) if flow_run else None,
           "flow_run_name": flow_run.name if flow_run else None,
           "counts": {k: getattr(summary, k) for k in ("documents_read", "documents_written",
                                                        "documents_dropped",
                                                        "documents_quarantined")}}
    done = publish(output, spec.name, snapshot, written_outputs(final), run=run)
    logger.info("published snapshot %s of %s: %d file(s) in %s", snapshot, spec.name,
                len(done.files), output)
    if done.unreadable:
        logger.warning("output record unreadable, nothing pruned: %s", done.unreadable)
    if done.removed:
        logger.info("removed %d file(s) of the previous snapshot", len(done.removed))
    if done.failed:
        logger.warning("could not remove %d file(s) of the previous snapshot (retried by the "
                       "next run): %s", len(done.failed), ", ".join(done.failed[:5]))


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


__all__ = ["CurationFlowSpec", "plan_for", "run_curation", "stage_writers", "written_outputs"]
