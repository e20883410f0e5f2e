"""The stage task: one Prefect task per stage (or fused run of cheap stages).

It reads a :class:`DatasetRef`, streams the tasks through the Ray Data adapter
(:func:`curator_stages.backends.ray_data.apply_stages`), writes every output task into a
checkpoint (atomic, manifest last) and returns the new reference. Prefect adds retries, timeouts
and tags around it, and shows each stage task in the UI, cached or not:

* the checkpoint's manifest is the cache: when it is complete (and ``refresh`` is off) the task
  returns at once, with the reference rebuilt from the manifest, in a state named ``Cached``.
  Prefect persists no result and keeps no cache record (nothing pickled, nothing tied to one
  Prefect home), so a work directory resumes under any Prefect home, worker or machine, and a
  deleted checkpoint is simply recomputed;
* every attempt starts again from the input reference and writes into its own temporary
  directory, so a retried stage leaves no partial output;
* a failure a retry cannot fix (see :mod:`retry_policy`) is not retried.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from curator_stages import checkpoints as ckpt
from curator_stages.orchestration.artifacts import publish_stage_table, stage_rows
from curator_stages.checkpoints.dataset_ref import DatasetRef
from curator_stages.orchestration.fingerprint import stages_fingerprint
from curator_stages.orchestration.retry_policy import (
    DEFAULT_RETRY_MAX_TOTAL_S,
    RetryPolicy,
    note_attempt_start,
)
from curator_stages.accounting import HistoryAggregator, StageCounts
from curator_stages.orchestration.stage_progress import StageProgress
from curator_stages.tasks import DOCUMENTS_READ, DOCUMENTS_WRITTEN, EmptyTask


def stage_names(stages: Sequence[Any]) -> list[str]:
    return [getattr(s, "stage_name", type(s).__name__) for s in stages]


def output_location(input_ref: DatasetRef, stages: Sequence[Any], work_dir: str) -> tuple[str, str]:
    """(fingerprint, checkpoint path) of the output of ``stages`` on ``input_ref``."""
    fp = stages_fingerprint(input_ref.fingerprint, list(stages))
    return fp, ckpt.checkpoint_path(work_dir, fp, stage_names(stages))


def ref_from_manifest(path: str, manifest: dict[str, Any]) -> DatasetRef:
    """The reference to a complete checkpoint, from its manifest alone."""
    return DatasetRef(
        path=path, fingerprint=manifest["fingerprint"], num_tasks=int(manifest["num_tasks"]),
        num_documents=int(manifest["num_documents"]), stages=tuple(manifest.get("stages", ())),
        stats_json=json.dumps(manifest.get("history", {})),
    )


#: Name of the (Completed) state of a stage task served from its checkpoint.
CACHED = "Cached"


@task(name="run-stages", persist_result=False, cache_policy=NO_CACHE, log_prints=False)
def run_stages(input_ref: DatasetRef, stages: list[Any], work_dir: str,
               ignore_head_node: bool = False, refresh: bool = False,
               input_files: frozenset[str] | None = None) -> DatasetRef | State:
    """Run ``stages`` (one, or a fused chain) on ``input_ref``; write and return the output.

    Runs in the flow's process (a Ray driver, never over the Ray Client); the Ray Data plan it builds streams through
    the cluster, its workers read the input checkpoint and write the output one, and only a
    small record per output file comes back here. Returns
    immediately, in a ``Cached`` state, when the output checkpoint is complete (unless
    ``refresh``). Run it under :func:`run_stage_groups`, which holds the work directory's lock
    and removes stale temporaries first. ``input_files``: the run's input listing, which every
    file list loaded from the input checkpoint must stay within (see ``checkpoints.loading``).
    """
    from curator_stages.backends.ray_data import (
        apply_stages, data_context_for_plan, streamed_tasks, surfaced_stage_errors,
    )

    logger = get_run_logger()
    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task_run is not None:
        note_attempt_start(ctx.task_run.id)
    names = stage_names(stages)
    fp, path = output_location(input_ref, stages, work_dir)
    manifest = ckpt.read_manifest(path)
    missing = ckpt.missing_files(path, manifest) if manifest is not None and not refresh else []
    if manifest is not None and not refresh and not missing:
        logger.info("stages %s: complete checkpoint %s found; skipping", names, path)
        ref = ref_from_manifest(path, manifest)
        return Completed(name=CACHED, data=ref, message=f"served from checkpoint {path}")
    if missing:
        logger.warning("stages %s: checkpoint %s lists %d file(s) that are gone (first %r); "
                       "recomputing it", names, path, len(missing), missing[0])
    # refresh, a checkpoint missing files, or an incomplete leftover
    ckpt.clear_for_attempt(path, refresh=refresh or bool(missing))

    start = time.perf_counter()
    from curator_stages.io.partition import FilePartitioningStage

    progress = StageProgress(names, logger.info, listing=[
        s.stage_name for s in stages if isinstance(s, FilePartitioningStage)])
    progress.start(input_ref.num_documents, input_ref.num_tasks)
    plans: list[Any] = []
    history = HistoryAggregator()
    # Ray Data's per-operator reservation splits a small cluster's CPUs between operators (the
    # main map ran one task while a CPU idled), and progress bars garble logs under Prefect: both
    # are set for this plan only, and the dataset is created inside the block so it takes them.
    with data_context_for_plan(quiet=True), ckpt.CheckpointWriter(path) as writer, \
            surfaced_stage_errors():
        dataset, loader = ckpt.file_dataset(input_ref.path, seed_tasks=[EmptyTask()],
                                             input_files=input_files, label="+".join(names))
        # Workers load the input files and write the output files themselves, inside the
        # first and last stages' own Ray tasks: only small CheckpointPart records come back.
        # A dedup fit's scratch files go inside this attempt's temporary checkpoint: in the
        # work directory, which the cluster's workers share, and gone with a failed attempt.
        output = apply_stages(dataset, stages, ignore_head_node=ignore_head_node, plans=plans,
                              before=loader, after=ckpt.parts_writer(writer.tmp_path,
                                                                     "+".join(names)),
                              scratch=writer.tmp_path)
        with streamed_tasks(output) as parts:  # a failed run releases its actors
            for part in parts:
                writer.add_part(part)
                history.add_task(part)
                progress.update(history.stages)
        wall = time.perf_counter() - start
        manifest = writer.commit(
            fingerprint=fp, stages=names, input=input_ref.path,
            input_fingerprint=input_ref.fingerprint,
            identities=[s.identity() if hasattr(s, "identity") else repr(s) for s in stages],
            plans=[p.to_dict() for p in plans if hasattr(p, "to_dict")],
            history=history.to_dict(), wall_time_s=wall,
        )
    ref = ref_from_manifest(path, manifest)

    input_counts = _counts(input_ref.stats)
    new_counts = {k: v for k, v in history.stages.items()
                  if k not in input_counts or k in names}
    rows = stage_rows(names, plans, new_counts, wall, input_ref.num_tasks,
                      input_ref.num_documents, ref.num_tasks, ref.num_documents)
    publish_stage_table(f"stage-{'-'.join(names)}", rows,
                        f"stages {' -> '.join(names)}: {ref.num_documents} documents in "
                        f"{ref.num_tasks} tasks, {wall:.2f}s")
    drops = {r: n for c in new_counts.values() for r, n in c.dropped.items()}
    # A writer's output tasks are file lists: say what it wrote, not "-> 0 documents"; a
    # reader's input is files: say what it read.
    read = sum(int(c.metrics.get(DOCUMENTS_READ, 0)) for c in new_counts.values())
    written = [int(c.metrics[DOCUMENTS_WRITTEN]) for c in new_counts.values()
               if DOCUMENTS_WRITTEN in c.metrics]
    logger.info("stages %s: %s -> %s (%d -> %d tasks) in %.2fs; dropped %s; -> %s",
                "+".join(names),
                f"read {read} documents" if read else f"{input_ref.num_documents} documents",
                f"wrote {sum(written)} documents" if written else f"{ref.num_documents} documents",
                input_ref.num_tasks, ref.num_tasks, wall, drops or "none", path)
    return ref


def _counts(stats: dict[str, Any]) -> dict[str, StageCounts]:
    return {k: StageCounts.from_dict(v) for k, v in (stats or {}).items()}


def stage_task(
    stages: Sequence[Any],
    *,
    retries: int = 0,
    retry_delay_seconds: float | Sequence[float] = 0,
    retry_jitter_factor: float | None = None,
    retry_max_total_s: float | None = DEFAULT_RETRY_MAX_TOTAL_S,
    timeout_seconds: float | None = None,
    tags: Sequence[str] = (),
    name: str | None = None,
):
    """:func:`run_stages` configured for one call: retries (delay, jitter; transient failures
    only, within ``retry_max_total_s`` for all attempts), timeout, tags, a readable run name.
    Pass ``refresh=True`` to the call to recompute over a complete checkpoint."""
    names = stage_names(stages)
    label = name or "+".join(names)
    return run_stages.with_options(
        name=f"stages:{label}"[:120],
        task_run_name=f"stages:{label}"[:120],
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
        retry_jitter_factor=retry_jitter_factor,
        retry_condition_fn=RetryPolicy(retry_max_total_s),
        timeout_seconds=timeout_seconds,
        tags={*tags, "curator-stages", *(f"stage:{n}" for n in names)},
    )
