"""Reference web curation flow: WARC files in, curated text out, every record accounted for.

    read WARC (HTML responses; other records skipped by kind; damaged records quarantined)
    -> URL filter -> HTML -> text (trafilatura, or resiliparse) -> token count (tokens read)
    -> language id -> Gopher + C4 + FineWeb quality rules -> exact dedup -> fuzzy dedup
    -> PII redaction -> token count (a tokens column; tokens written) -> write

    python flows/web_curation.py [--help] [--plan --cluster "2 nodes x 16 cpus"]
    python flows/web_curation.py --input 's3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/*/warc/*.warc.gz'

The URL filter runs before extraction, as in FineWeb's pipeline: a page dropped for its URL
is never extracted (the documents kept are the same either way). Each group of stages is a
stage task with a checkpoint in work_dir; run_curation does the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

# First, before Prefect or Ray is imported (see flow_script).
from curator_stages.orchestration.flow_script import curation_flow, run_flow_script

from pydantic import Field as F
from pydantic import ValidationInfo, field_validator

from curator_stages.io.warc_reader import WARC_EXTENSIONS
from curator_stages.orchestration.curation_params import CurationParams
from curator_stages.orchestration.curation_run import CurationFlowSpec
from curator_stages.orchestration.token_params import TokenCountParams

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_NAME = "web-curation"


class WebCurationParams(TokenCountParams, CurationParams):
    """Parameters of the web curation flow (the Prefect UI shows them as a form)."""

    input_extensions, input_root = WARC_EXTENSIONS, REPO_ROOT
    ordered = (("min_words", "max_words"),)
    input: str = F("data/web_sample", min_length=1, description="WARC file (.warc.gz, .warc), "
                   "directory or glob; local or s3://")
    output: str = F("output/web_curation", min_length=1, description="Output directory: "
                    "data/, quarantine/, dropped/, run_summary.json, report.md")
    output_format: Literal["parquet", "jsonl"] = F("parquet", description="Output file format")
    files_per_group: int | None = F(None, ge=1, le=100_000, description="WARC files per task")
    # --- extraction
    extractor: Literal["trafilatura", "resiliparse"] = F(
        "trafilatura", description="HTML -> text: trafilatura (precise) or resiliparse (fast)")
    extract_timeout_s: float = F(10.0, gt=0, le=3600, description="Seconds one page may take "
                                 "to extract; a slower page is quarantined")
    extract_memory_limit_mb: int = F(2048, ge=256, le=1_000_000, description="Address space "
                                     "of the extracting process; a page over it is quarantined")
    # --- URL filter
    url_blocklist: str | None = F(None, description="Domain blocklist (one domain a line; a "
                                  "file or fsspec URL); subdomains are blocked too")
    banned_url_substrings: list[str] = F(default_factory=list, description="URLs containing "
                                         "any of these are dropped")
    # --- language id
    language_id: bool = F(True, description="Label languages with fastText lid.176")
    languages: list[str] | None = F(None, description="Language codes to keep (default: all)")
    min_language_score: float = F(0.65, ge=0, le=1, description="Minimum language score to "
                                  "keep (FineWeb: 0.65)")
    # --- quality filters (Gopher defaults)
    min_words: int = F(50, ge=0, le=1_000_000, description="Drop documents with fewer words")
    max_words: int = F(100_000, ge=1, le=10_000_000, description="Drop documents with more words")
    min_stop_words: int = F(2, ge=0, le=1000, description="Minimum stop words in the document's "
                            "language (0: off)")
    repetition_filters: bool = F(True, description="Gopher repetition rules (lines, n-grams)")
    c4_filters: bool = F(True, description="C4 rules (lorem ipsum, {, sentences, URL ratio...)")
    fineweb_filters: bool = F(True, description="FineWeb's rules (line punctuation, short "
                              "lines, duplicated-line characters, list ratio)")
    dropped_examples_per_rule: int = F(3, ge=0, le=10000, description="Dropped examples kept "
                                       "per rule and batch in <output>/dropped (0: none)")
    write_dropped: bool = F(False, description="Keep every dropped document in <output>/dropped")
    # --- dedup
    exact_dedup: bool = F(True, description="Remove exact duplicates (keep the smallest id)")
    fuzzy_dedup: bool = F(True, description="Remove near duplicates (MinHash + LSH)")
    fuzzy_threshold: float = F(0.8, ge=0.5, lt=1, description="Jaccard similarity of near "
                               "duplicates")
    fuzzy_num_perm: int = F(128, ge=16, le=1024, description="MinHash permutations")
    # --- PII and tokens
    pii: bool = F(True, description="Replace e-mail and public IP addresses with placeholders")
    pii_phones: bool = F(False, description="Replace phone numbers too (pii on)")
    count_tokens: bool = F(True, description="Count tokens (offline BPE): of every extracted "
                           "page (tokens read) and a tokens column in the output (written)")
    fuse_cheap_stages: bool = F(True, description="One stage task for read+extract+language "
                                "id, and the writer in the last stage task (fewer checkpoints)")

    @field_validator("url_blocklist")
    @classmethod
    def _blocklist_exists(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        path = Path(value).expanduser()
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / value  # relative to the checkout, like input
        if not path.is_file():
            raise ValueError(f"url_blocklist {value!r} is not a file; give a file of domains "
                             "(one a line) or leave it unset")
        return str(path.resolve())


def build_stage_groups(p: WebCurationParams) -> list[list[Any]]:
    """The execution stages, grouped into stage tasks (a group = one checkpoint)."""
    from curator_stages.io import JsonlWriter, ParquetWriter
    from curator_stages.io.warc_reader import WarcReader
    from curator_stages.text import (HeuristicFilter, c4_quality_rules, fineweb_quality_rules,
                                     gopher_repetition_rules)
    from curator_stages.text import dedup, filters as f
    from curator_stages.text.html_extract import HtmlExtractor

    rules = [f.WordCountRule(min_words=p.min_words, max_words=p.max_words),
             f.MeanWordLengthRule(), f.SymbolWordRatioRule(), f.BulletLinesRule(),
             f.EllipsisLinesRule(), f.AlphabeticWordsRule(),
             *([f.StopWordsRule(min_count=p.min_stop_words)] if p.min_stop_words > 0 else []),
             *(gopher_repetition_rules() if p.repetition_filters else []),
             *(c4_quality_rules() if p.c4_filters else []),
             *(fineweb_quality_rules() if p.fineweb_filters else [])]
    front: list[Any] = [*WarcReader(p.input, files_per_group=p.files_per_group).decompose()]
    if p.url_blocklist or p.banned_url_substrings:
        from curator_stages.text.url_filter import UrlFilter

        front.append(UrlFilter(blocklist=p.url_blocklist,
                               banned_substrings=p.banned_url_substrings))
    front.append(HtmlExtractor(extractor=p.extractor, timeout_s=p.extract_timeout_s,
                               memory_limit_mb=p.extract_memory_limit_mb))
    if p.count_tokens:  # tokens read: every extracted page, before any filter
        from curator_stages.text.tokens import TokenCounter

        front.append(TokenCounter(p.token_encoding, tokens_field=None, name="tokens_extracted"))
    if p.language_id:
        from curator_stages.text.language import LanguageIdentifier

        front.append(LanguageIdentifier(languages=p.languages, min_score=p.min_language_score))
    quality = HeuristicFilter(rules, name="quality_filter",
                              keep_dropped=True if p.write_dropped else p.dropped_examples_per_rule)
    groups: list[list[Any]] = ([[s] for s in [*front, quality]] if not p.fuse_cheap_stages
                               else [front, [quality]])
    if p.exact_dedup:
        groups.append([dedup.ExactDuplicateRemover(name="exact_dedup")])
    if p.fuzzy_dedup:
        groups.append([dedup.FuzzyDuplicateRemover(
            threshold=p.fuzzy_threshold, num_perm=p.fuzzy_num_perm, name="fuzzy_dedup")])
    last: list[Any] = []
    if p.pii:
        from curator_stages.text.pii import PiiRedactor

        last.append(PiiRedactor(phones=p.pii_phones))
    if p.count_tokens:  # after the last stage that changes the text: the column stays true
        from curator_stages.text.tokens import TokenCounter

        last.append(TokenCounter(p.token_encoding))
    if last:
        groups[-1].extend(last) if p.fuse_cheap_stages else groups.append(last)
    out = p.output.rstrip("/")
    writer = (ParquetWriter if p.output_format == "parquet" else JsonlWriter)(
        f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine",
        dropped_output=f"{out}/dropped" if p.write_dropped or p.dropped_examples_per_rule else None)
    # Fused, the writer joins the last stage task: its input is never checkpointed to be reread.
    groups[-1].append(writer) if p.fuse_cheap_stages else groups.append([writer])
    return groups


SPEC = CurationFlowSpec(
    FLOW_NAME, "Web curation", WebCurationParams, build_stage_groups,
    runtime_env=lambda p: {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    dropped_hint="run the flow with --write-dropped to keep them all, or "
                 "--dropped-examples-per-rule N to keep N per rule")


web_curation = curation_flow(
    SPEC, description="Read WARC, extract text, filter, dedup, write; resumable.")

if __name__ == "__main__":
    run_flow_script(SPEC, web_curation)
