"""Convert and shard a JSONL corpus (plain, .gz, .zst) to Parquet with stable document ids.

What a data engineer runs before anything else: one pass that turns a pile of JSONL files into
Parquet shards with an ``id`` per document that stays the same on every run (from the file's
path relative to the input root and its line number, or an ``id_field`` the input already has),
broken lines quarantined with file, line and reason instead of failing the job, a run summary
whose accounting must hold (read = written + quarantined), a report and a funnel chart.

    python flows/convert_to_parquet.py --input data/raw --output data/parquet
    python flows/convert_to_parquet.py --input data/raw --output out --plan
    python flows/convert_to_parquet.py --help             # every parameter

Layout of the output directory: ``data/part-<snapshot>-<key>.parquet`` (one shard per file
group), ``quarantine/quarantine-<snapshot>-<key>.jsonl``, ``run_summary.json``, ``report.md``,
``funnel.png``, ``_curator_outputs.json`` (the published snapshot); checkpoints go to
``work_dir`` (never inside the output or the input, which validation refuses). Parameters,
validation, the command line and the run are those of every curation flow
(:mod:`curator_stages.orchestration.curation_run`): a run publishes its shards whole, replacing
the previous run's, only when it succeeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

# First, before Prefect or Ray is imported (see flow_script).
from curator_stages.orchestration.flow_script import curation_flow, run_flow_script

from pydantic import Field

from curator_stages.io.input_check import JSONL, extensions
from curator_stages.io.jsonl_reader import DEFAULT_MAX_DOCUMENT_BYTES
from curator_stages.orchestration.curation_params import CurationParams
from curator_stages.orchestration.curation_run import CurationFlowSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_NAME = "convert-to-parquet"


class ConvertParams(CurationParams):
    """Parameters of the conversion; validated before any work starts (the UI shows a form)."""

    input_formats = (JSONL,)
    input_extensions, input_root = extensions(input_formats), REPO_ROOT

    input: str = Field("data/sample", min_length=1, description="JSONL file, directory or glob "
                       "(local path or fsspec URL); .jsonl, .jsonl.gz and .jsonl.zst")
    output: str = Field("output/parquet", min_length=1, description="Output directory: Parquet "
                        "shards in data/, quarantine/, run_summary.json, report.md, funnel.png")
    text_field: str = Field("text", min_length=1, description="Input field holding the text")
    id_field: str | None = Field(None, description="Input field holding an id to keep; when "
                                 "unset, ids come from the relative file path and line number")
    fields: list[str] | None = Field(None, description="Extra input fields to keep as columns")
    files_per_group: int = Field(1, ge=1, le=100_000,
                                 description="Input files per output shard")
    max_document_bytes: int = Field(DEFAULT_MAX_DOCUMENT_BYTES, ge=1, le=1 << 30, description="A "
                                    "longer input line (one document's JSON) is quarantined unread")
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field(
        "zstd", description="Parquet compression codec")
    row_group_size: int | None = Field(None, ge=1, description="Rows per Parquet row group")
    mode: Literal["error", "overwrite", "ignore"] = Field(
        "overwrite", description="What to do when a shard already exists in the run's attempt "
        "location (a retried stage task); the publish replaces the previous snapshot")
    strict: bool = Field(False, description="Fail on the first malformed line instead of "
                         "quarantining it")
    write_report: bool = Field(True, description="Write report.md and funnel.png beside "
                               "run_summary.json")


def build_stage_groups(params: ConvertParams) -> list[list[Any]]:
    """List and group the files (fan-out), read JSONL, write Parquet shards: one stage task.

    Reading and writing are one cheap streaming chain: a checkpoint of the read documents would
    cost a full extra copy of the corpus.
    """
    from curator_stages.io import JsonlReader, ParquetWriter

    out = params.output.rstrip("/")
    # Quarantine records ride to the writer, which stages them with the shards for the publish.
    reader = JsonlReader(params.input, text_field=params.text_field, id_field=params.id_field,
                         fields=params.fields, strict=params.strict,
                         files_per_group=params.files_per_group,
                         file_extensions=ConvertParams.input_extensions,
                         max_document_bytes=params.max_document_bytes)
    writer = ParquetWriter(f"{out}/data", mode=params.mode, quarantine_output=f"{out}/quarantine",
                           compression=None if params.compression == "none" else params.compression,
                           row_group_size=params.row_group_size)
    return [[*reader.decompose(), writer]]


SPEC = CurationFlowSpec(
    FLOW_NAME, "Convert to Parquet", ConvertParams, build_stage_groups,
    fingerprint_extra={"flow": FLOW_NAME},
    runtime_env=lambda p: {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})


convert_to_parquet = curation_flow(SPEC, log_prints=True)

if __name__ == "__main__":
    run_flow_script(SPEC, convert_to_parquet)
