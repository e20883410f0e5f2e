"""Document-level quality rules under one import path: the rule base, Gopher, C4 and FineWeb rules.

Why this module: rules are written in modules of one job each (:mod:`.base` the contract
every rule keeps, :mod:`.gopher` the Gopher quality rules, :mod:`.c4` the C4 document rules with
NeMo Curator's URL and symbol ratios, :mod:`.fineweb` FineWeb's extra rules), and the repetition
rules in :mod:`.repetition`. Code and user pipelines import rules from here.
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
from curator_stages.text.filters.fineweb import (
    SENTENCE_TERMINALS,
    DuplicateLineCharRule,
    LinePunctuationRule,
    ListRatioRule,
    ShortLineRule,
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
    "GOPHER_STOP_WORDS", "SENTENCE_END_REGEX", "SENTENCE_TERMINALS", "STOP_WORDS",
    "UNSEGMENTED_LANGUAGES", "URL_REGEX",
    "AlphabeticWordsRule", "BulletLinesRule", "CurlyBracketRule", "DuplicateLineCharRule",
    "EllipsisLinesRule", "LinePunctuationRule", "ListRatioRule", "LoremIpsumRule",
    "MeanWordLengthRule", "NonAlphaNumericRule", "Rule", "SentenceCountRule", "ShortLineRule",
    "StopWordsRule", "SymbolWordRatioRule", "UrlRatioRule", "WordCountRule",
]
