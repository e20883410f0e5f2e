"""Gopher repetition rules (Rae et al. 2021, table A1), computed on whole batches.

Defaults (same as datatrove's ``GopherRepetitionFilter``):

=========================================  =======
duplicate line fraction                    0.30
duplicate paragraph fraction               0.30
duplicate line character fraction          0.20
duplicate paragraph character fraction     0.20
top 2-/3-/4-gram character fraction        0.20 / 0.18 / 0.16
duplicate 5-..10-gram character fraction   0.15, 0.14, 0.13, 0.12, 0.11, 0.10
=========================================  =======

Definitions (the paper leaves details open; these are ours, stated so scores are reproducible):

- lines are split on ``\\n`` and paragraphs on blank lines; both are stripped and blank ones
  ignored. A *duplicate* is an element equal to an earlier element of the same document (the
  first occurrence is not a duplicate). The element fraction divides by the number of non-blank
  elements, the character fraction by the document's total characters.
- n-grams are over whitespace words, compared exactly. Character counts of n-grams count word
  characters only and divide by the document's word characters (whitespace excluded on both
  sides).
- top n-gram: the most frequent n-gram of the document (ties: the one with the most
  characters); score = its occurrences x its characters / word characters, capped at 1; 0 when
  no n-gram occurs twice.
- duplicated n-grams: every word covered by an occurrence of an n-gram that already occurred
  earlier in the document counts once (overlaps are not counted twice).

No Python loop over documents: word and line identities come from Arrow's hash dictionary
encoder and n-grams from a vectorised 64-bit rolling hash over word codes, scoped per document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.text.filters.features import (
    TextFeatures,
    first_occurrence,
    ratio,
    segment_max,
    segment_sum,
)
from curator_stages.text.filters.base import Rule

_DEFAULT_TOP_NGRAMS = ((2, 0.20), (3, 0.18), (4, 0.16))
_DEFAULT_DUP_NGRAMS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


def duplicates(elements: pa.Array, parent: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate elements, duplicate characters) per document."""
    if len(elements) == 0:
        return np.zeros(n), np.zeros(n)
    codes = np.asarray(pc.dictionary_encode(elements).indices, dtype=np.int64)
    key = codes * np.int64(max(n, 1)) + parent
    dup = ~first_occurrence(key)
    lengths = np.asarray(pc.utf8_length(elements), dtype=np.float64)
    return (
        segment_sum(dup.astype(np.float64), parent, n),
        segment_sum(lengths * dup, parent, n),
    )


def _line_duplicates(f: TextFeatures) -> tuple[np.ndarray, np.ndarray]:
    cache = f.__dict__
    if "_dup_lines" not in cache:
        cache["_dup_lines"] = duplicates(f.lines, f.line_parent, f.n)
    return cache["_dup_lines"]


def _paragraph_duplicates(f: TextFeatures) -> tuple[np.ndarray, np.ndarray]:
    cache = f.__dict__
    if "_dup_paras" not in cache:
        cache["_dup_paras"] = duplicates(f.paragraphs, f.paragraph_parent, f.n)
    return cache["_dup_paras"]


@dataclass(frozen=True)
class DuplicateLineFractionRule(Rule):
    """Duplicate lines / non-blank lines at most ``max_fraction`` (Gopher 0.3)."""

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    max_fraction: float = 0.3

    @property
    def name(self) -> str:
        return "gopher_dup_line_frac"

    def score(self, f: TextFeatures) -> np.ndarray:
        return ratio(_line_duplicates(f)[0], f.n_lines)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_fraction


@dataclass(frozen=True)
class DuplicateLineCharFractionRule(Rule):
    """Characters in duplicate lines / document characters at most ``max_fraction`` (Gopher 0.2)."""

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    max_fraction: float = 0.2

    @property
    def name(self) -> str:
        return "gopher_dup_line_char_frac"

    def score(self, f: TextFeatures) -> np.ndarray:
        return ratio(_line_duplicates(f)[1], f.char_len)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_fraction


@dataclass(frozen=True)
class DuplicateParagraphFractionRule(Rule):
    """Duplicate paragraphs / non-blank paragraphs at most ``max_fraction`` (Gopher 0.3)."""

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    max_fraction: float = 0.3

    @property
    def name(self) -> str:
        return "gopher_dup_para_frac"

    def score(self, f: TextFeatures) -> np.ndarray:
        n_paras = segment_sum(None, f.paragraph_parent, f.n)
        return ratio(_paragraph_duplicates(f)[0], n_paras)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_fraction


@dataclass(frozen=True)
class DuplicateParagraphCharFractionRule(Rule):
    """Characters in duplicate paragraphs / document characters at most ``max_fraction``
    (Gopher 0.2)."""

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    max_fraction: float = 0.2

    @property
    def name(self) -> str:
        return "gopher_dup_para_char_frac"

    def score(self, f: TextFeatures) -> np.ndarray:
        return ratio(_paragraph_duplicates(f)[1], f.char_len)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_fraction


@dataclass(frozen=True)
class TopNGramRule(Rule):
    """Character share of the most frequent word ``n``-gram at most ``max_fraction``.

    Gopher: n=2 -> 0.20, n=3 -> 0.18, n=4 -> 0.16 (see :func:`top_ngram_rules`).
    """

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    n: int = 2
    max_fraction: float = 0.20

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"TopNGramRule: n must be >= 2, got {self.n}")

    @property
    def name(self) -> str:
        return f"gopher_top_{self.n}gram_char_frac"

    def score(self, f: TextFeatures) -> np.ndarray:
        pos, counts, _ = f.ngram_occurrences(self.n)
        if len(pos) == 0:
            return np.zeros(f.n)
        doc = f.word_parent[pos]
        max_count = segment_max(counts.astype(np.float64), doc, f.n)
        is_top = (counts == max_count[doc]) & (counts > 1)
        chars = np.where(is_top, counts * f.window_chars(self.n, pos), 0.0)
        return np.minimum(ratio(segment_max(chars, doc, f.n), f.word_chars), 1.0)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_fraction


@dataclass(frozen=True)
class DuplicateNGramRule(Rule):
    """Character share of words inside repeated word ``n``-grams at most ``max_fraction``.

    Gopher: n=5..10 -> 0.15, 0.14, 0.13, 0.12, 0.11, 0.10 (see :func:`duplicate_ngram_rules`).
    """

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    n: int = 5
    max_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"DuplicateNGramRule: n must be >= 2, got {self.n}")

    @property
    def name(self) -> str:
        return f"gopher_dup_{self.n}gram_char_frac"

    def score(self, f: TextFeatures) -> np.ndarray:
        pos, _, first = f.ngram_occurrences(self.n)
        if len(pos) == 0:
            return np.zeros(f.n)
        starts = pos[~first]  # sorted: repeat occurrences, in word order
        if len(starts) == 0:
            return np.zeros(f.n)
        # Union of the equal-length windows [s, s+n): each start covers up to the next start.
        ends = np.minimum(starts + self.n, np.r_[starts[1:], np.iinfo(np.int64).max])
        cs = f.word_len_cumsum
        dup_chars = segment_sum((cs[ends] - cs[starts]).astype(np.float64),
                                f.word_parent[starts], f.n)
        return ratio(dup_chars, f.word_chars)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_fraction


def top_ngram_rules(thresholds=_DEFAULT_TOP_NGRAMS) -> list[TopNGramRule]:
    """One :class:`TopNGramRule` per ``(n, max_fraction)``; Gopher defaults."""
    return [TopNGramRule(n=n, max_fraction=t) for n, t in thresholds]


def duplicate_ngram_rules(thresholds=_DEFAULT_DUP_NGRAMS) -> list[DuplicateNGramRule]:
    """One :class:`DuplicateNGramRule` per ``(n, max_fraction)``; Gopher defaults."""
    return [DuplicateNGramRule(n=n, max_fraction=t) for n, t in thresholds]
