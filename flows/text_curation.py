"""Reference text curation flow: JSONL in, curated Parquet/JSONL out, every document accounted for.

    read JSONL (quarantine bad lines) -> repair + normalise text -> language id
    -> heuristic quality filters (judged in each document's language) -> exact dedup
    -> fuzzy dedup -> write Parquet or JSONL

Run it locally, with an embedded Ray and no Prefect server:

    python flows/text_curation.py                    # the sample shards in data/sample/
    python flows/text_curation.py --help             # every parameter
    python flows/text_curation.py --input 'corpus/*.jsonl.zst' --output out/ --no-fuzzy-dedup

Each group of stages is one Prefect stage task whose output is a checkpoint in ``work_dir``;
re-running after a failure resumes at the first stage without one. Deployments: prefect.yaml.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

# Quiet defaults for a local run; explicit settings in the environment win.
from curator_stages.orchestration.local_defaults import apply_local_run_defaults  # noqa: E402

apply_local_run_defaults()

from prefect import flow, get_run_logger  # noqa: E402
from pydantic import (  # noqa: E402
    BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator,
)

from curator_stages.io.output_manifest import PruneResult, prune_and_record  # noqa: E402
from curator_stages.orchestration.params import (  # noqa: E402
    check_input_files, check_num_cpus, check_output_location,
)
from curator_stages.reporting import write_run_report  # noqa: E402
from curator_stages.orchestration import (  # noqa: E402
    DatasetRef,
    RaySession,
    SessionRayTaskRunner,
    StageTaskOptions,
    finish_run,
    input_fingerprint,
    resolve_input_files,
    run_stage_groups,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_NAME = "text-curation"


def _resolve_local(path: str) -> str:
    """A relative path is relative to the working directory, else to the repository (so the
    defaults work from anywhere); URLs are left alone."""
    if "://" in path:
        return path
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    here = os.path.abspath(path)
    if os.path.lexists(here) or (glob.has_magic(here) and resolved_files(here)):
        return here
    repo = str(REPO_ROOT / path)
    return repo if resolved_files(repo) else here


class TextCurationParams(BaseModel):
    """Parameters of the text curation flow (the Prefect UI shows them as a form)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    input: str = Field("data/sample", description="JSONL input: a file, a directory or a glob "
                       "(plain, .gz or .zst; local path or fsspec URL)", min_length=1)
    output: str = Field("output/text_curation", description="Output directory: data/ holds the "
                        "curated documents, quarantine/ the bad input lines, run_summary.json "
                        "the counts", min_length=1)
    work_dir: str = Field(".curator_work", description="Checkpoint directory (one complete "
                          "checkpoint per stage task; makes re-runs resume)", min_length=1)
    output_format: Literal["parquet", "jsonl"] = Field("parquet", description="Output file format")
    text_field: str = Field("text", description="Name of the text field in the input records")
    id_field: str | None = Field(None, description="Input field holding a unique document id "
                                 "(default: ids derived from file path and line number); a "
                                 "record whose id an earlier record has goes to quarantine")
    files_per_group: int | None = Field(None, ge=1, le=100_000, description="Input files per read "
                                        "task (default: the reader's choice)")
    # --- heuristic quality filters (Gopher defaults)
    min_words: int = Field(50, ge=0, le=1_000_000, description="Drop documents with fewer words")
    max_words: int = Field(100_000, ge=1, le=10_000_000, description="Drop documents with more words")
    min_mean_word_length: float = Field(3.0, ge=0, le=100, description="Minimum mean word length")
    max_mean_word_length: float = Field(10.0, gt=0, le=1000, description="Maximum mean word length")
    max_symbol_word_ratio: float = Field(0.1, ge=0, le=10, description="Maximum (# and ellipsis) per word")
    min_alpha_word_ratio: float = Field(0.8, ge=0, le=1, description="Minimum share of words with a letter")
    min_stop_words: int = Field(2, ge=0, le=1000, description="Minimum stop words in the "
                                "document's language (lists for en de fr es it pt nl ru zh ja; "
                                "other languages pass; English only without language id; "
                                "0 disables the rule)")
    repetition_filters: bool = Field(True, description="Gopher repetition rules (lines, "
                                     "paragraphs, n-grams)")
    c4_filters: bool = Field(True, description="C4 document rules (lorem ipsum, curly bracket, "
                             "sentences, URL ratio, non-alphanumeric ratio)")
    # --- language id
    language_id: bool = Field(True, description="Label languages with fastText lid.176")
    languages: list[str] | None = Field(None, description="Language codes to keep (e.g. en de); "
                                        "none keeps every language")
    min_language_score: float = Field(0.0, ge=0, le=1, description="Minimum language score to keep")
    dropped_examples_per_rule: int = Field(3, ge=0, le=10000, description="Dropped documents "
                                           "kept per rule and batch in <output>/dropped as "
                                           "examples for the report (0: none)")
    write_dropped: bool = Field(False, description="Write every document the quality filter "
                                "drops, with its reason, to <output>/dropped (costs disk)")
    # --- dedup
    exact_dedup: bool = Field(True, description="Remove exact duplicates (keep the smallest id)")
    fuzzy_dedup: bool = Field(True, description="Remove near duplicates (MinHash + LSH)")
    fuzzy_threshold: float = Field(0.8, ge=0.5, lt=1, description="Jaccard similarity for near "
                                   "duplicates, in [0.5, 1): LSH banding cannot select exactly "
                                   "1.0 (use exact_dedup), and below 0.5 MinHash-LSH clusters "
                                   "unrelated documents through chains of weak matches and "
                                   "removes most of a corpus")
    fuzzy_num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    # --- execution
    ray_address: str | None = Field(None, description="Ray cluster to join (default: RAY_ADDRESS, "
                                    "else an embedded local Ray)")
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs of an embedded local Ray "
                                 "(default: all; at most this machine's CPU count, since each "
                                 "CPU gets a worker process; not bounded when joining a cluster)")
    verify_input: Literal["metadata", "content"] = Field(
        "metadata", description="How a re-run recognises an unchanged input (and reuses its "
        "checkpoints): 'metadata' compares each file's path, size and mtime (reads nothing; "
        "misses an edit that keeps the size and restores the mtime); 'content' hashes each "
        "file's bytes (xxh3_128; an object store's ETag or version id where it has one)")
    fuse_cheap_stages: bool = Field(True, description="One stage task for read+normalise+"
                                    "language id, and the writer in the last stage task (fewer "
                                    "checkpoints), instead of one stage task per stage")
    refresh: bool = Field(False, description="Recompute every stage, ignoring checkpoints and cache")
    retries: int = Field(1, ge=0, le=10, description="Retries of a failed stage task")
    retry_delay_seconds: float = Field(2.0, ge=0, le=3600, description="Delay before a retry")
    timeout_seconds: float | None = Field(None, gt=0, description="Timeout of one stage task")
    ignore_head_node: bool = Field(False, description="Keep stage workers off the Ray head node")
    log_to_driver: bool = Field(False, description="Show Ray worker logs on this console")

    @field_validator("input")
    @classmethod
    def _input_exists(cls, value: str) -> str:
        resolved = _resolve_local(value)
        return check_input_files("input", value, resolved, resolved_files)

    @field_validator("output", "work_dir")
    @classmethod
    def _apart_and_writable(cls, value: str, info: ValidationInfo) -> str:
        value = value if "://" in value else os.path.abspath(os.path.expanduser(value))
        check_output_location(info.field_name, value, info.data)
        return value

    @field_validator("num_cpus")
    @classmethod
    def _within_machine(cls, value: int | None, info: ValidationInfo) -> int | None:
        return check_num_cpus(value, info.data)

    @model_validator(mode="after")
    def _ranges(self) -> "TextCurationParams":
        if self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) must be >= min_words ({self.min_words})")
        if self.max_mean_word_length < self.min_mean_word_length:
            raise ValueError("max_mean_word_length must be >= min_mean_word_length")
        return self


def resolved_files(path: str) -> list[str]:
    """The files the flow's JSONL reader reads from ``path`` (its own listing rule), sorted."""
    from curator_stages.io import JSONL_EXTENSIONS

    return resolve_input_files(path, file_extensions=JSONL_EXTENSIONS)


# ----------------------------------------------------------------------------- the pipeline
def build_stage_groups(p: TextCurationParams) -> list[list[Any]]:
    """The execution stages, grouped into stage tasks (a group = one checkpoint)."""
    from curator_stages.io import JsonlReader, JsonlWriter, ParquetWriter
    from curator_stages.text import HeuristicFilter, TextNormalizer, c4_quality_rules
    from curator_stages.text import gopher_repetition_rules
    from curator_stages.text.filters import (
        AlphabeticWordsRule, BulletLinesRule, EllipsisLinesRule, MeanWordLengthRule,
        StopWordsRule, SymbolWordRatioRule, WordCountRule,
    )

    reader = JsonlReader(p.input, text_field=p.text_field, id_field=p.id_field,
                         files_per_group=p.files_per_group)
    rules = [
        WordCountRule(min_words=p.min_words, max_words=p.max_words),
        MeanWordLengthRule(min_length=p.min_mean_word_length, max_length=p.max_mean_word_length),
        SymbolWordRatioRule(max_ratio=p.max_symbol_word_ratio),
        BulletLinesRule(), EllipsisLinesRule(),
        AlphabeticWordsRule(min_ratio=p.min_alpha_word_ratio),
    ]
    if p.min_stop_words > 0:
        rules.append(StopWordsRule(min_count=p.min_stop_words))
    if p.repetition_filters:
        rules += gopher_repetition_rules()
    if p.c4_filters:
        rules += c4_quality_rules()
    # Language id runs before the quality filter, so the filter judges each document by its
    # language (its `language` column). Fused: [read+normalise+langid] [filter]. The filter gets
    # its own checkpoint so re-tuning a threshold reuses the language-id output, the costly part.
    front = [*reader.decompose(), TextNormalizer(text_field=p.text_field)]
    if p.language_id:
        from curator_stages.text.language import LanguageIdentifier

        front.append(LanguageIdentifier(languages=p.languages, min_score=p.min_language_score,
                                        text_field=p.text_field))
    quality = HeuristicFilter(rules, text_field=p.text_field, name="quality_filter",
                              keep_dropped=True if p.write_dropped else p.dropped_examples_per_rule)
    if not p.fuse_cheap_stages:
        groups: list[list[Any]] = [[s] for s in [*front, quality]]
    elif p.language_id:
        groups = [front, [quality]]
    else:
        groups = [[*front, quality]]
    if p.exact_dedup:
        from curator_stages.text.dedup import ExactDuplicateRemover

        groups.append([ExactDuplicateRemover(text_field=p.text_field, name="exact_dedup")])
    if p.fuzzy_dedup:
        from curator_stages.text.dedup import FuzzyDuplicateRemover

        groups.append([FuzzyDuplicateRemover(text_field=p.text_field, threshold=p.fuzzy_threshold,
                                             num_perm=p.fuzzy_num_perm, name="fuzzy_dedup")])
    if p.id_field and not (p.exact_dedup or p.fuzzy_dedup):
        # Ids from the input must be unique: each dedup fit quarantines later occurrences of an
        # id; without dedup this check does it, so the rule holds on every run.
        from curator_stages.text.dedup import DuplicateIdCheck

        groups.append([DuplicateIdCheck(text_field=p.text_field, name="id_check")])
    data_dir = f"{p.output.rstrip('/')}/data"
    quarantine = f"{p.output.rstrip('/')}/quarantine"
    writer_cls = ParquetWriter if p.output_format == "parquet" else JsonlWriter
    dropped = (f"{p.output.rstrip('/')}/dropped"
               if p.write_dropped or p.dropped_examples_per_rule else None)
    writer = writer_cls(data_dir, mode="overwrite", quarantine_output=quarantine,
                        dropped_output=dropped)
    if p.fuse_cheap_stages:
        # The writer joins the last stage task: its input (the whole surviving corpus) is then
        # never written as a checkpoint and read back just to be written again. Resuming after
        # a failed write re-runs that one task (dedup, or the filter), from its input checkpoint.
        groups[-1].append(writer)
    else:
        groups.append([writer])
    return groups


def _missing_outputs(final: DatasetRef) -> list[str]:
    from curator_stages.checkpoints import read_tasks

    paths = [p for t in read_tasks(final.path) if isinstance(t.data, list) for p in t.data]
    return [p for p in paths if "://" not in p and not os.path.exists(p)]


def written_outputs(final: DatasetRef) -> list[str]:
    """Every file the run's writer produced: documents, quarantine and dropped examples."""
    from curator_stages.checkpoints import read_tasks

    files: list[str] = []
    for task in read_tasks(final.path):
        files.extend(p for p in (task.data if isinstance(task.data, list) else [])
                     if isinstance(p, str))
        files.extend(task._metadata.get("quarantine_files", []))
        files.extend(task._metadata.get("dropped_files", []))
    return files


def prune_stale_outputs(final: DatasetRef, output: str) -> PruneResult:
    """Remove this flow's files of an earlier run (other parameters, other file names) that this
    run did not write again, so ``output`` holds this run's documents only; then record this
    run's files in ``<output>/_curator_outputs.json``. Only files that record lists are ever
    deleted: the user's files, another pipeline's, and anything unknown are left alone."""
    return prune_and_record(output, FLOW_NAME, written_outputs(final))


# ----------------------------------------------------------------------------- the flow
def ray_session(params: TextCurationParams) -> RaySession:
    """The flow's Ray: the cluster named by ``ray_address``/``RAY_ADDRESS``, else embedded."""
    return RaySession(params.ray_address, num_cpus=params.num_cpus,
                      log_to_driver=params.log_to_driver,
                      runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})


@flow(name=FLOW_NAME, task_runner=SessionRayTaskRunner(),
      description="Read JSONL, normalise, language-id, quality-filter, dedup, write; resumable.")
def text_curation(params: TextCurationParams = TextCurationParams.model_construct()) -> dict:
    """Curate a JSONL corpus; returns the run summary (also written to output/run_summary.json)."""
    # Prefect validated the fields it was given; validating again covers the defaults too, still
    # before Ray starts or any file is touched.
    params = TextCurationParams.model_validate(params.model_dump())
    logger = get_run_logger()
    started = time.perf_counter()
    files = resolved_files(params.input)
    seed = DatasetRef.seed(input_fingerprint(files, verify=params.verify_input))
    groups = build_stage_groups(params)
    logger.info("input: %d file(s) under %s; %d stage task(s): %s", len(files), params.input,
                len(groups), " | ".join("+".join(s.stage_name for s in g) for g in groups))
    options = StageTaskOptions(retries=params.retries,
                               retry_delay_seconds=params.retry_delay_seconds,
                               retry_jitter_factor=0.2 if params.retry_delay_seconds else None,
                               timeout_seconds=params.timeout_seconds,
                               tags=("text-curation",))
    with ray_session(params):
        plan = _publish_plan(groups, params)
        result = run_stage_groups(groups, seed, params.work_dir, options=options,
                                  refresh=params.refresh, ignore_head_node=params.ignore_head_node,
                                  progress_key="text-curation-progress")
        if _missing_outputs(result.final):
            # The writer's checkpoint says "done" but its files were deleted: write them again.
            logger.warning("output files under %s are missing; rewriting them", params.output)
            again = run_stage_groups(groups[-1:], result.refs[-2], params.work_dir,
                                     options=options, refresh=True,
                                     ignore_head_node=params.ignore_head_node)
            result.refs[-1] = again.final
            result.records[-1] = again.records[-1]
    pruned = prune_stale_outputs(result.final, params.output)
    if pruned.unreadable:
        logger.warning("output record unreadable, nothing pruned: %s", pruned.unreadable)
    if pruned.removed:
        logger.info("removed %d stale file(s) an earlier run of this flow wrote in %s",
                    len(pruned.removed), params.output)
    if pruned.unknown:
        logger.info("left %d file(s) in %s/{data,quarantine,dropped} that this flow did not "
                    "write", pruned.unknown, params.output)
    if pruned.failed:
        logger.warning("could not remove %d stale file(s): %s", len(pruned.failed),
                       ", ".join(pruned.failed[:5]))
    summary = finish_run(result, params.output, "Text curation", "text-curation-summary",
                         started=started)
    report = write_run_report(params.output, summary.to_dict(), plan=plan, title="Text curation",
                              dropped_hint="run the flow with --write-dropped to keep them all, "
                              "or --dropped-examples-per-rule N to keep N per rule")
    logger.info("report: %s", report)
    return summary.to_dict()


def _publish_plan(groups: list[list[Any]], params: TextCurationParams) -> Any:
    """The execution plan as the run's first artifact (best effort: a report, not a gate)."""
    try:
        from curator_stages.orchestration.plan_artifact import publish_plan_artifact
        from curator_stages.plan import plan_pipeline

        stages = [s for g in groups for s in g]
        plan = plan_pipeline(stages, ignore_head_node=params.ignore_head_node,
                             stage_task_groups=[[s.stage_name for s in g] for g in groups],
                             name=FLOW_NAME)
        publish_plan_artifact(plan, key="text-curation-plan")
        return plan
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not publish the plan artifact: %s", exc)
        return None


# Flow functions travel to Ray workers inside Prefect's serialised context. Under a deployment
# this file is loaded as a module the workers cannot import, so send it by value.
if __name__ != "flows.text_curation":
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ----------------------------------------------------------------------------- local entry
def print_summary(summary: dict, output: str, wall_s: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="text curation", show_lines=False)
    for col in ("stage", "items in", "items out", "dropped (reason=n)"):
        table.add_column(col, justify="left" if col.startswith(("stage", "dropped")) else "right")
    for s in summary["stages"]:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(s["dropped"].items())) or ""
        table.add_row(s["stage"], str(s["items_in"]), str(s["items_out"]), dropped)
    console.print(table)
    ident = summary["identity"]
    console.print(f"accounting: {ident['text']} -> "
                  f"{'[green]holds[/green]' if ident['holds'] else '[red]BROKEN[/red]'}")
    console.print("stage tasks: " + ", ".join(f"{t['status']}" for t in summary["stage_tasks"]))
    console.print(f"output: {output}/data  summary: {output}/run_summary.json  "
                  f"report: {output}/report.md  ({wall_s:.1f}s)")


def main(argv: list[str] | None = None) -> int:
    from curator_stages.orchestration.params import parse_params

    if "--plan" in (sys.argv[1:] if argv is None else argv):  # print the plan, process nothing
        from curator_stages.cli import flow_plan_main

        return flow_plan_main(sys.modules[__name__], sys.argv[1:] if argv is None else argv)
    params = parse_params(TextCurationParams, argv, prog="python flows/text_curation.py")
    from curator_stages.orchestration.local_run import run_local

    start = time.perf_counter()

    def body(run) -> int:
        # The temporary API (without PREFECT_API_URL) starts while Ray starts; SIGTERM stops
        # the run like Ctrl-C, and nothing the run started outlives it (orchestration.local_run).
        with ray_session(params):
            run.use_api()
            state = text_curation(params, return_state=True)
        if not state.is_completed():
            print(f"text curation failed: {state.message}", file=sys.stderr)
            return 1
        print_summary(state.result(), params.output, time.perf_counter() - start)
        return 0

    return run_local(body, what="text curation")


if __name__ == "__main__":
    sys.exit(main())
