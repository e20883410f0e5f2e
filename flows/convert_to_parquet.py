"""Convert and shard a JSONL corpus (plain, .gz, .zst) to Parquet with stable document ids.

What a data engineer runs before anything else: one pass that turns a pile of JSONL files into
Parquet shards with an ``id`` per document that stays the same on every run (from the file's
path relative to the input root and its line number, or an ``id_field`` the input already has),
broken lines quarantined with file, line and reason instead of failing the job, a run summary
whose accounting must hold (read = written + quarantined), a report and a funnel chart.

Run it locally (no server needed)::

    python flows/convert_to_parquet.py --input-path data/raw --output-path data/parquet
    python flows/convert_to_parquet.py --input-path data/raw --output-path out --plan
    python flows/convert_to_parquet.py --help             # every parameter

Layout of the output directory: ``data/part-<key>.parquet`` (one shard per file group),
``quarantine/quarantine-<key>.jsonl``, ``run_summary.json``, ``report.md``, ``funnel.png``;
checkpoints go to ``.curator_work`` (in the working directory) unless ``work_dir`` says
otherwise: never inside the output or the input, which validation refuses.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

from curator_stages.orchestration.local_defaults import apply_local_run_defaults

apply_local_run_defaults()  # quiet defaults for a local run, before Prefect is imported

from prefect import flow  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator  # noqa: E402

if __package__ in (None, ""):  # `python flows/convert_to_parquet.py` from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator_stages import Pipeline  # noqa: E402
from curator_stages.io import JSONL_EXTENSIONS, JsonlReader, ParquetWriter  # noqa: E402
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
from curator_stages.orchestration.params import (  # noqa: E402
    check_input_files,
    check_num_cpus,
    check_output_location,
    parse_params,
)
from curator_stages.orchestration.plan_artifact import publish_plan_artifact  # noqa: E402
from curator_stages.plan import plan_pipeline  # noqa: E402
from curator_stages.reporting import write_run_report  # noqa: E402

FLOW_NAME = "convert-to-parquet"

if __name__ != "__main__" and __name__ in sys.modules:
    # Prefect loads a deployment's entrypoint file under a generated module name that Ray
    # workers cannot import; the flow context it ships to them would then fail to unpickle.
    # Pickling this module by value makes the flow runnable however it was loaded.
    import cloudpickle
    import ray.cloudpickle  # Ray's own (vendored) pickler ships task arguments

    for _pickler in (cloudpickle, ray.cloudpickle):
        _pickler.register_pickle_by_value(sys.modules[__name__])


class ConvertParams(BaseModel):
    """Parameters of the conversion; validated before any work starts (the UI shows a form)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    input_path: str = Field(..., min_length=1, description="JSONL file, directory or glob "
                            "(local path or fsspec URL); .jsonl, .jsonl.gz and .jsonl.zst")
    output_path: str = Field(..., min_length=1, description="Output directory: Parquet shards "
                             "in data/, quarantine/, run_summary.json, report.md, funnel.png")
    text_field: str = Field("text", min_length=1, description="Input field holding the text")
    id_field: str | None = Field(None, description="Input field holding an id to keep; when "
                                 "unset, ids come from the relative file path and line number")
    fields: list[str] | None = Field(None, description="Extra input fields to keep as columns")
    files_per_group: int = Field(1, ge=1, le=100_000,
                                 description="Input files per output shard")
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field(
        "zstd", description="Parquet compression codec")
    row_group_size: int | None = Field(None, ge=1, description="Rows per Parquet row group")
    mode: Literal["error", "overwrite", "ignore"] = Field(
        "overwrite", description="What to do when a shard already exists")
    strict: bool = Field(False, description="Fail on the first malformed line instead of "
                         "quarantining it")
    work_dir: str = Field(".curator_work", min_length=1, description="Checkpoint directory "
                          "(relative paths: to the working directory); must not overlap the "
                          "input or the output")
    ray_address: str | None = Field(None, description="Ray cluster to join (default: "
                                    "RAY_ADDRESS, else an embedded local Ray)")
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs of an embedded local "
                                 "Ray (at most this machine's CPU count; not bounded when "
                                 "joining a cluster)")
    retries: int = Field(1, ge=0, le=10, description="Retries per stage task")
    refresh: bool = Field(False, description="Recompute even when checkpoints exist")
    ignore_head_node: bool = Field(False, description="Keep work off the Ray head node")
    verify_input: Literal["metadata", "content"] = Field(
        "metadata", description="How a re-run recognises an unchanged input (and reuses its "
        "checkpoint): 'metadata' compares each file's path, size and mtime (reads nothing; "
        "misses an edit that keeps the size and restores the mtime); 'content' hashes each "
        "file's bytes (xxh3_128; an object store's ETag or version id where it has one)")
    write_report: bool = Field(True, description="Write report.md and funnel.png beside "
                               "run_summary.json")

    @field_validator("input_path")
    @classmethod
    def _input_exists(cls, value: str) -> str:
        resolved = value if "://" in value else os.path.abspath(os.path.expanduser(value))
        return check_input_files("input_path", value, resolved, input_files)

    @field_validator("output_path", "work_dir")
    @classmethod
    def _apart_and_writable(cls, value: str, info: ValidationInfo) -> str:
        value = value if "://" in value else os.path.abspath(os.path.expanduser(value))
        check_output_location(info.field_name, value, info.data, input_field="input_path",
                              output_field="output_path")
        return value

    @field_validator("num_cpus")
    @classmethod
    def _within_machine(cls, value: int | None, info: ValidationInfo) -> int | None:
        return check_num_cpus(value, info.data)


def input_files(path: str) -> list[str]:
    """The files the flow's JSONL reader reads from ``path`` (its own listing rule), sorted."""
    return resolve_input_files(path, file_extensions=JSONL_EXTENSIONS)


def build_pipeline(params: ConvertParams) -> Pipeline:
    """The stages: list and group the files (fan-out), read JSONL, write Parquet shards."""
    out = params.output_path.rstrip("/")
    return Pipeline("convert_to_parquet", [
        JsonlReader(params.input_path, text_field=params.text_field, id_field=params.id_field,
                    fields=params.fields, strict=params.strict,
                    quarantine_dir=f"{out}/quarantine", files_per_group=params.files_per_group),
        ParquetWriter(f"{out}/data", mode=params.mode,
                      compression=None if params.compression == "none" else params.compression,
                      row_group_size=params.row_group_size),
    ], description="JSONL -> Parquet shards with stable ids")


def stage_task_groups(params: ConvertParams) -> list[list[str]]:
    """How the flow groups execution stages into Prefect stage tasks (one checkpoint each).

    Reading and writing are one cheap streaming chain, so they run as a single stage task: a
    checkpoint of the read documents would cost a full extra copy of the corpus.
    """
    return [[s.stage_name for s in build_pipeline(params).execution_stages()]]


def _groups(pipeline: Pipeline, names: list[list[str]]) -> list[list[Any]]:
    by_name = {s.stage_name: s for s in pipeline.execution_stages()}
    return [[by_name[n] for n in group] for group in names]


@flow(name=FLOW_NAME, task_runner=SessionRayTaskRunner(), log_prints=True)
def convert_to_parquet(params: ConvertParams) -> dict[str, Any]:
    """Convert ``params.input_path`` to Parquet shards in ``params.output_path``."""
    started = time.perf_counter()
    # Prefect validated what it was given; validating again covers a model built without
    # validation, still before Ray starts or any file is touched.
    params = ConvertParams.model_validate(params.model_dump())
    output = params.output_path.rstrip("/")
    work_dir = params.work_dir
    files = input_files(params.input_path)
    pipeline = build_pipeline(params)
    names = stage_task_groups(params)
    with RaySession(params.ray_address, num_cpus=params.num_cpus):
        plan = plan_pipeline(pipeline, ignore_head_node=params.ignore_head_node,
                             stage_task_groups=names)
        publish_plan_artifact(plan)  # the run's first artifact
        seed = DatasetRef.seed(input_fingerprint(files, extra={"flow": FLOW_NAME},
                                                 verify=params.verify_input))
        result = run_stage_groups(
            _groups(pipeline, names), seed, work_dir,
            options=StageTaskOptions(retries=params.retries, retry_delay_seconds=2,
                                     tags=(FLOW_NAME,)),
            refresh=params.refresh, ignore_head_node=params.ignore_head_node,
            progress_key=f"{FLOW_NAME}-progress",
        )
        summary = finish_run(result, output, title="Convert to Parquet",
                             artifact_key=f"{FLOW_NAME}-summary", started=started)
    summary_dict = summary.to_dict()
    if params.write_report:
        write_run_report(output, summary_dict, plan=plan, title="convert_to_parquet")
    return summary_dict


# ---------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> ConvertParams:
    """The parameters from a command line: the parser generated from :class:`ConvertParams`
    (``--x/--no-x`` for booleans); a bad value exits 2 naming the field."""
    return parse_params(ConvertParams, argv, prog="python flows/convert_to_parquet.py")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--plan" in args:  # print the plan ([--cluster "2 nodes x 16 cpus"]), process nothing
        from curator_stages.cli import flow_plan_main

        return flow_plan_main(sys.modules[__name__], args)
    params = parse_args(args)
    from curator_stages.orchestration.local_run import run_local

    def body(run) -> int:  # SIGTERM like Ctrl-C; the temporary API dies with us (local_run)
        run.use_api()
        summary = convert_to_parquet(params)
        print(json.dumps({k: summary[k] for k in ("documents_read", "documents_written",
                                                  "documents_quarantined")}, indent=2))
        if params.write_report:
            print(f"report: {os.path.join(params.output_path, 'report.md')}")
        return 0

    return run_local(body, what="convert to parquet")


if __name__ == "__main__":
    sys.exit(main())
