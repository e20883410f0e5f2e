"""Heuristic quality filters: Gopher quality and repetition rules, C4 document rules, FineWeb's
extra rules.

Rules are frozen dataclasses (thresholds are fields); :class:`HeuristicFilter` runs a list of
them on whole batches with shared intermediate features.
"""

from curator_stages.text.filters.features import TextFeatures
from curator_stages.text.filters.filter_stage import (
    DROP_REASON_COLUMN,
    DROPPED_DOCUMENTS_KEY,
    HeuristicFilter,
    c4_quality,
    c4_quality_rules,
    default_quality,
    default_quality_rules,
    fineweb_quality,
    fineweb_quality_rules,
    gopher_quality,
    gopher_quality_rules,
    gopher_repetition,
    gopher_repetition_rules,
)
from curator_stages.text.filters.repetition import (
    DuplicateLineCharFractionRule,
    DuplicateLineFractionRule,
    DuplicateNGramRule,
    DuplicateParagraphCharFractionRule,
    DuplicateParagraphFractionRule,
    TopNGramRule,
    duplicate_ngram_rules,
    top_ngram_rules,
)
from curator_stages.text.filters.rules import (
    GOPHER_STOP_WORDS,
    STOP_WORDS,
    UNSEGMENTED_LANGUAGES,
    AlphabeticWordsRule,
    BulletLinesRule,
    CurlyBracketRule,
    DuplicateLineCharRule,
    EllipsisLinesRule,
    LinePunctuationRule,
    ListRatioRule,
    LoremIpsumRule,
    MeanWordLengthRule,
    NonAlphaNumericRule,
    Rule,
    SentenceCountRule,
    ShortLineRule,
    StopWordsRule,
    SymbolWordRatioRule,
    UrlRatioRule,
    WordCountRule,
)

__all__ = [
    "DROP_REASON_COLUMN", "DROPPED_DOCUMENTS_KEY", "GOPHER_STOP_WORDS", "STOP_WORDS",
    "UNSEGMENTED_LANGUAGES",
    "AlphabeticWordsRule", "BulletLinesRule", "CurlyBracketRule", "DuplicateLineCharFractionRule",
    "DuplicateLineFractionRule", "DuplicateNGramRule", "DuplicateParagraphCharFractionRule",
    "DuplicateParagraphFractionRule", "DuplicateLineCharRule", "EllipsisLinesRule",
    "HeuristicFilter", "LinePunctuationRule", "ListRatioRule", "LoremIpsumRule",
    "MeanWordLengthRule", "NonAlphaNumericRule", "Rule", "SentenceCountRule", "ShortLineRule",
    "StopWordsRule",
    "SymbolWordRatioRule", "TextFeatures", "TopNGramRule", "UrlRatioRule", "WordCountRule",
    "c4_quality", "c4_quality_rules", "default_quality", "default_quality_rules",
    "fineweb_quality", "fineweb_quality_rules",
    "duplicate_ngram_rules", "gopher_quality", "gopher_quality_rules", "gopher_repetition",
    "gopher_repetition_rules", "top_ngram_rules",
]
