"""Document-level quality rules under one import path: the rule base, Gopher and C4 rules.

Why this module: rules are written in three modules of one job each (:mod:`.base` the contract
every rule keeps, :mod:`.gopher` the Gopher quality rules, :mod:`.c4` the C4 document rules with
NeMo Curator's URL and symbol ratios), and the repetition rules in :mod:`.repetition`. Code and
user pipelines import rules from here.
"""

from curator_stages.text.filters.base import Rule
from curator_stages.text.filters.c4 import (
    SENTENCE_END_REGEX,
    URL_REGEX,
    CurlyBracketRule,
    LoremIpsumRule,
    NonAlphaNumericRule,
    SentenceCountRule,
    UrlRatioRule,
)
from curator_stages.text.filters.gopher import (
    GOPHER_STOP_WORDS,
    STOP_WORDS,
    UNSEGMENTED_LANGUAGES,
    AlphabeticWordsRule,
    BulletLinesRule,
    EllipsisLinesRule,
    MeanWordLengthRule,
    StopWordsRule,
    SymbolWordRatioRule,
    WordCountRule,
)

__all__ = [
    "GOPHER_STOP_WORDS", "SENTENCE_END_REGEX", "STOP_WORDS", "UNSEGMENTED_LANGUAGES", "URL_REGEX",
    "AlphabeticWordsRule", "BulletLinesRule", "CurlyBracketRule", "EllipsisLinesRule",
    "LoremIpsumRule", "MeanWordLengthRule", "NonAlphaNumericRule", "Rule", "SentenceCountRule",
    "StopWordsRule", "SymbolWordRatioRule", "UrlRatioRule", "WordCountRule",
]
