"""Text stages: heuristic quality filters (:mod:`curator_stages.text.filters`), modifiers
(:mod:`curator_stages.text.modifiers`), the URL filter, PII redaction and token counting. Language
id and dedup live in their own modules."""

from curator_stages.text.filters import (
    HeuristicFilter,
    Rule,
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
from curator_stages.text.modifiers import (
    C4BoilerplateLineRemover,
    TextModifier,
    TextNormalizer,
    UnicodeRepair,
    UrlRemover,
    WhitespaceNormalizer,
)
from curator_stages.text.pii import PiiRedactor
from curator_stages.text.tokens import TokenCounter
from curator_stages.text.url_filter import UrlFilter

__all__ = [
    "C4BoilerplateLineRemover", "HeuristicFilter", "PiiRedactor", "Rule", "TokenCounter",
    "UrlFilter", "TextModifier", "TextNormalizer",
    "UnicodeRepair", "UrlRemover", "WhitespaceNormalizer", "c4_quality", "c4_quality_rules",
    "default_quality", "default_quality_rules", "fineweb_quality",
    "fineweb_quality_rules", "gopher_quality", "gopher_quality_rules",
    "gopher_repetition", "gopher_repetition_rules",
]
