"""FineWeb's extra quality rules (Penedo et al. 2024), as rules of :class:`HeuristicFilter`.

FineWeb added three rules to Gopher and C4 after ablations on Common Crawl; datatrove's
``FineWebQualityFilter`` holds them, with these defaults (kept here):

==========================================  =====  ===========================
share of lines ending in punctuation        0.12   drop below (``line_punct_thr``)
share of short lines (<= 30 characters)     0.67   drop above (``short_line_thr``)
share of characters in duplicated lines     0.01   drop above (``char_duplicates_ratio``)
newlines per word (list-like pages)         0.3    drop above (``new_line_ratio``)
==========================================  =====  ===========================

Definitions follow datatrove's current filter, so scores match it: lines are split on ``\\n``,
blank ones ignored, and measured as written (not stripped); a line ends in punctuation when its
last character is a sentence terminal of any script (Unicode ``Sentence_Terminal``: ``. ! ?``,
``。``, ``।``, ``؟``...); a duplicated line is a non-blank line equal to an earlier line of the
document, its characters divided by the document's characters without newlines. One difference:
words are this package's words (whitespace tokens, one per CJK character, see ``features``),
where datatrove splits English with NLTK (which makes punctuation marks words too), so the
list ratio here is a little higher on punctuated text.

Like datatrove, a document without a non-blank line fails the first rule (score 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow.compute as pc

from curator_stages.text.filters.base import Rule
from curator_stages.text.filters.features import TextFeatures, ratio, segment_sum
from curator_stages.text.filters.gopher import UNSEGMENTED_LANGUAGES
from curator_stages.text.filters.repetition import duplicates

#: The characters with Unicode's ``Sentence_Terminal`` property, as an RE2 class body
#: (generated from the ``regex`` module's Unicode tables; a test checks it against them).
SENTENCE_TERMINALS = (
    r"\x{21}\x{2E}\x{3F}\x{589}\x{61D}-\x{61F}\x{6D4}\x{700}-\x{702}\x{7F9}\x{837}\x{839}"
    r"\x{83D}-\x{83E}\x{964}-\x{965}\x{104A}-\x{104B}\x{1362}\x{1367}-\x{1368}\x{166E}"
    r"\x{1735}-\x{1736}\x{17D4}-\x{17D5}\x{1803}\x{1809}\x{1944}-\x{1945}\x{1AA8}-\x{1AAB}"
    r"\x{1B4E}-\x{1B4F}\x{1B5A}-\x{1B5B}\x{1B5E}-\x{1B5F}\x{1B7D}-\x{1B7F}\x{1C3B}-\x{1C3C}"
    r"\x{1C7E}-\x{1C7F}\x{2024}\x{203C}-\x{203D}\x{2047}-\x{2049}\x{2CF9}-\x{2CFB}\x{2E2E}"
    r"\x{2E3C}\x{2E53}-\x{2E54}\x{3002}\x{A4FF}\x{A60E}-\x{A60F}\x{A6F3}\x{A6F7}"
    r"\x{A876}-\x{A877}\x{A8CE}-\x{A8CF}\x{A92F}\x{A9C8}-\x{A9C9}\x{AA5D}-\x{AA5F}"
    r"\x{AAF0}-\x{AAF1}\x{ABEB}\x{FE12}\x{FE15}-\x{FE16}\x{FE52}\x{FE56}-\x{FE57}\x{FF01}"
    r"\x{FF0E}\x{FF1F}\x{FF61}\x{10A56}-\x{10A57}\x{10F55}-\x{10F59}\x{10F86}-\x{10F89}"
    r"\x{11047}-\x{11048}\x{110BE}-\x{110C1}\x{11141}-\x{11143}\x{111C5}-\x{111C6}\x{111CD}"
    r"\x{111DE}-\x{111DF}\x{11238}-\x{11239}\x{1123B}-\x{1123C}\x{112A9}\x{113D4}-\x{113D5}"
    r"\x{1144B}-\x{1144C}\x{115C2}-\x{115C3}\x{115C9}-\x{115D7}\x{11641}-\x{11642}"
    r"\x{1173C}-\x{1173E}\x{11944}\x{11946}\x{11A42}-\x{11A43}\x{11A9B}-\x{11A9C}"
    r"\x{11C41}-\x{11C42}\x{11EF7}-\x{11EF8}\x{11F43}-\x{11F44}\x{16A6E}-\x{16A6F}\x{16AF5}"
    r"\x{16B37}-\x{16B38}\x{16B44}\x{16D6E}-\x{16D6F}\x{16E98}\x{1BC9F}\x{1DA88}"
)
_ENDS_IN_TERMINAL = f"[{SENTENCE_TERMINALS}]$"


@dataclass(frozen=True)
class LinePunctuationRule(Rule):
    """Share of non-blank lines ending in a sentence terminal at least ``min_ratio`` (0.12).

    Pages of menus, tables and link lists have few lines that end a sentence.
    """

    min_ratio: float = 0.12

    @property
    def name(self) -> str:
        return "fineweb_line_punct_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        ends = np.asarray(pc.match_substring_regex(f.raw_lines, _ENDS_IN_TERMINAL), dtype=bool)
        return ratio(segment_sum(ends.astype(np.float64), f.line_parent, f.n), f.n_lines)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s >= self.min_ratio


@dataclass(frozen=True)
class ShortLineRule(Rule):
    """Share of non-blank lines of at most ``max_length`` characters (30) at most ``max_ratio``
    (0.67): navigation, button labels and lists are short lines."""

    max_ratio: float = 0.67
    max_length: int = 30

    @property
    def name(self) -> str:
        return "fineweb_short_line_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        short = np.asarray(pc.utf8_length(f.raw_lines), dtype=np.int64) <= self.max_length
        return ratio(segment_sum(short.astype(np.float64), f.line_parent, f.n), f.n_lines)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio


@dataclass(frozen=True)
class DuplicateLineCharRule(Rule):
    """Characters in duplicated lines / characters without newlines at most ``max_ratio`` (0.01).

    Far stricter than Gopher's 0.2: FineWeb found repeated lines (headers, footers, "Read more")
    in many pages that Gopher's rule keeps.
    """

    cost: ClassVar[Literal["cheap", "costly"]] = "costly"

    max_ratio: float = 0.01

    @property
    def name(self) -> str:
        return "fineweb_char_dup_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        cache = f.__dict__
        if "_dup_raw_lines" not in cache:
            cache["_dup_raw_lines"] = duplicates(f.raw_lines, f.line_parent, f.n)
        newlines = np.asarray(pc.count_substring(f.text, "\n"), dtype=np.float64)
        return ratio(cache["_dup_raw_lines"][1], f.char_len - newlines)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio


@dataclass(frozen=True)
class ListRatioRule(Rule):
    """Newlines per word at most ``max_ratio`` (0.3): a page of one- or two-word lines is a list.

    Abstains where the document's language is not segmented into words here (Thai...), like the
    Gopher word rules.
    """

    max_ratio: float = 0.3

    @property
    def name(self) -> str:
        return "fineweb_list_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        newlines = np.asarray(pc.count_substring(f.text, "\n"), dtype=np.float64)
        return ratio(newlines, f.n_words)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio

    def abstains(self, f: TextFeatures) -> np.ndarray | None:
        return f.language_in(UNSEGMENTED_LANGUAGES) if f.languages is not None else None
