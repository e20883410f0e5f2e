"""Driving a pipeline from inside a flow: one stage task per group, in order, then the summary.

A flow decides *which* stages run and how they are grouped (one cheap chain fused into one stage
task, or one task per stage); this module runs the groups as stage tasks in the flow's process
(a Ray driver already: :class:`~curator_stages.runtime.RaySession`) with the right refresh decision, moves the progress artifact, logs what each
stage task wrote, and turns the final reference into the run summary (``run_summary.json`` +
artifacts), failing the run when the accounting identity does not hold.

The whole sequence holds the work directory's lock (:mod:`work_dir_lock`): a second run on the
same work directory is refused at once, naming the holder, and stale temporary checkpoints are
removed only under the lock, so no run ever removes another run's attempt in progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Sequence

from prefect.logging import get_run_logger

from curator_stages import checkpoints as ckpt
from curator_stages.orchestration.artifacts import Progress, publish_run_summary
from curator_stages.checkpoints.dataset_ref import DatasetRef
from curator_stages.orchestration.retry_policy import DEFAULT_RETRY_MAX_TOTAL_S
from curator_stages.accounting import RunSummary, summarise
from curator_stages.reporting.run_summary import write_run_summary
from curator_stages.orchestration.stage_task import output_location, stage_names, stage_task
from curator_stages.orchestration.work_dir_lock import work_dir_lock


@dataclass(frozen=True)
class StageTaskOptions:
    """Prefect options of stage tasks (per flow, or per group)."""

    retries: int = 0
    retry_delay_seconds: float = 0.0
    retry_jitter_factor: float | None = None
    timeout_seconds: float | None = None
    #: No retry starts once a stage task has spent this long, all attempts together.
    retry_max_total_s: float | None = DEFAULT_RETRY_MAX_TOTAL_S
    tags: tuple[str, ...] = ()


@dataclass
class GroupsResult:
    refs: list[DatasetRef]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> DatasetRef:
        return self.refs[-1]


def run_stage_task(task_fn: Any, **parameters: Any) -> tuple[Any, str]:
    """Run one configured stage task in this process; returns (output ref, state name). A
    failed stage task raises its exception here."""
    state = task_fn(**parameters, return_state=True)
    return state.result(), state.name


def run_stage_groups(groups: Sequence[Sequence[Any]], seed: DatasetRef, work_dir: str,
                     options: StageTaskOptions = StageTaskOptions(),
                     group_options: dict[int, StageTaskOptions] | None = None,
                     refresh: bool = False, ignore_head_node: bool = False,
                     progress_key: str | None = None,
                     input_files: Collection[str] | None = None) -> GroupsResult:
    """Run each group of stages as one stage task on the previous group's output.

    A group whose checkpoint is complete is still submitted (the UI lists it) but returns at
    once from its manifest, in state ``Cached``; the first group without one runs, and so does
    everything after it. Raises :class:`WorkDirBusyError` when another run holds ``work_dir``.
    ``input_files``: the run's input listing (default: the file partitioners' among ``groups``);
    a file list loaded from a checkpoint must name only these files.
    """
    logger = get_run_logger()
    progress = Progress(progress_key or "stage-progress", len(groups),
                        description=f"{len(groups)} stage task(s)")
    refs: list[DatasetRef] = []
    records: list[dict[str, Any]] = []
    ref = seed
    allowed = frozenset(input_files) if input_files is not None else _listed_files(groups)
    with work_dir_lock(work_dir) as locked:
        if not locked:
            logger.info("work_dir %s is an object store: no lock is taken; stale temporary "
                        "checkpoints are only removed after %.0f h without writes", work_dir,
                        ckpt.URL_STALE_TEMPORARY_AGE_S / 3600)
        for i, group in enumerate(groups):
            opts = (group_options or {}).get(i, options)
            names = stage_names(group)
            _, path = output_location(ref, group, work_dir)
            if refresh or not ckpt.is_complete(path):
                removed = ckpt.remove_stale_temporaries(path)
                if removed:
                    logger.info("%s: removed %d temporary checkpoint(s) of an earlier, "
                                "interrupted attempt", "+".join(names), len(removed))
            task_fn = stage_task(
                group, retries=opts.retries, retry_delay_seconds=opts.retry_delay_seconds,
                retry_jitter_factor=opts.retry_jitter_factor,
                retry_max_total_s=opts.retry_max_total_s,
                timeout_seconds=opts.timeout_seconds, tags=opts.tags,
            )
            started = time.perf_counter()
            ref, status = run_stage_task(
                task_fn, input_ref=ref, stages=list(group), work_dir=work_dir,
                ignore_head_node=ignore_head_node, refresh=refresh, input_files=allowed)
            elapsed = time.perf_counter() - started
            refs.append(ref)
            records.append({"stages": "+".join(names), "status": status,
                            "tasks_out": ref.num_tasks, "documents_out": ref.num_documents,
                            "wall_time_s": round(elapsed, 3), "checkpoint": ref.path})
            pct = progress.advance()
            written = documents_written(ref, names)
            what = (f"wrote {written} documents" if written is not None
                    else f"{ref.num_documents} documents in {ref.num_tasks} tasks")
            logger.info("[%d/%d] %s: %s, %s (%.1fs, %.0f%% done)", i + 1, len(groups),
                        "+".join(names), status, what, elapsed, pct)
    return GroupsResult(refs=refs, records=records)


def _listed_files(groups: Sequence[Sequence[Any]]) -> frozenset[str] | None:
    """The files the file partitioners among ``groups`` partition (listing those not yet
    listed, once: they then partition that listing); None when there is none."""
    from curator_stages.orchestration.fingerprint import list_run_input
    from curator_stages.io.partition import FilePartitioningStage

    parts = [s for g in groups for s in g if isinstance(s, FilePartitioningStage)]
    if not parts:
        return None
    list_run_input(s for s in parts if s._listing is None)
    return frozenset(p for s in parts for p in s._listing.task_paths)


def documents_written(ref: DatasetRef, names: Sequence[str]) -> int | None:
    """Documents the writers among ``names`` wrote (their ``documents_written`` metric), or
    None when the group has no writer: a writer's output tasks are file lists, so the group's
    ``num_documents`` (0) says nothing about what it wrote."""
    counts = [ref.stats.get(n, {}).get("metrics", {}).get("documents_written") for n in names]
    found = [c for c in counts if c is not None]
    return int(sum(found)) if found else None


def finish_run(result: GroupsResult, output: str, title: str, artifact_key: str,
               started: float | None = None, *, snapshot: str | None = None,
               commit: Callable[[RunSummary], None] | None = None,
               failed_dir: str | None = None) -> RunSummary:
    """Publish the summary artifacts, fail the run (``AccountingError``) if read != written +
    dropped + quarantined, run ``commit`` (a flow's publish of its output), then write
    ``run_summary.json`` into ``output``: the summary there describes what is published.
    A run whose accounting fails writes its summary into ``failed_dir`` (default ``output``)
    and commits nothing."""
    final = result.final
    summary = summarise(final.stats, final_documents=final.num_documents, output=output)
    summary.stage_tasks = result.records
    summary.snapshot = snapshot
    if started is not None:
        summary.wall_time_s = round(time.perf_counter() - started, 3)
    publish_run_summary(summary, artifact_key, title)
    get_run_logger().info("accounting: %s", summary.identity_text())
    if not summary.identity_holds:
        write_run_summary(summary, failed_dir or output)
        summary.check()
    if commit is not None:
        commit(summary)
    write_run_summary(summary, output)
    return summary


def check_kept(result: GroupsResult, flag_for: Callable[[str], str | None] | None = None,
               output: str | None = None) -> None:
    """Fail a run that kept no document (``NothingKeptError``), naming the reason that removed
    most and the flag that changes it. Called before the run publishes or prunes anything: an
    empty output is a mistake to report, never a result to replace a good one with."""
    final = result.final
    summary = summarise(final.stats, final_documents=final.num_documents, output=output)
    if not summary.documents_written:
        summary.check_kept(_quarantine_reasons(final), flag_for)


def _quarantine_reasons(final: DatasetRef) -> dict[str, int]:
    """{reason: records} over the quarantine files the run's writer listed."""
    from curator_stages.io.quarantine import read_quarantine
    from curator_stages.accounting import reason_counts

    records: list[dict[str, Any]] = []
    for task in ckpt.read_tasks(final.path):
        for path in task.metadata.get("quarantine_files", []):
            records.extend(read_quarantine(path))
        records.extend(task.metadata.get("quarantine", []))
    return reason_counts(records)
