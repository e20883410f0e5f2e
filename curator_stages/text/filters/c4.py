"""The C4 document rules (Raffel et al. 2020), with NeMo Curator's URL and symbol ratios.

The ratio rules sit here because, like C4's, they judge a document by its characters alone, so
they hold for any language and need no word split.

Sources of the defaults:
- C4: Raffel et al. 2020 (T5), section 2.2, and TensorFlow Datasets ``c4_utils.py``
  (``_MIN_NUM_SENTENCES = 3``, ``_END_MARKS``, lorem ipsum and ``{`` page rules). datatrove's
  ``C4QualityFilter`` uses other defaults (5 sentences, 3 words per line); we follow the original.
- URL and non-alphanumeric ratios: NeMo Curator's ``UrlsFilter`` (0.2) and
  ``NonAlphaNumericFilter`` (0.25) defaults, with a Unicode-aware definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from curator_stages.text.filters.base import Rule
from curator_stages.text.filters.features import TextFeatures, ratio

#: URLs with a scheme or a ``www.`` host, up to the next whitespace or quote/angle bracket.
URL_REGEX = r"(?i)(?:\b[a-z][a-z0-9+.\-]*://|\bwww\.)[^\s<>\"'`]+"


@dataclass(frozen=True)
class LoremIpsumRule(Rule):
    """C4: drop a page that contains "lorem ipsum" (any case): placeholder text. Score 1/0."""

    @property
    def name(self) -> str:
        return "c4_lorem_ipsum"

    def score(self, f: TextFeatures) -> np.ndarray:
        return np.asarray(
            pc.match_substring(f.text, "lorem ipsum", ignore_case=True), dtype=np.float64
        )

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s == 0


@dataclass(frozen=True)
class CurlyBracketRule(Rule):
    """C4: drop a page that contains ``{`` (likely code or templates). Score 1/0.

    C4 checks only lines that survived its line rules; we check the whole document, so run
    :class:`~curator_stages.text.modifiers.C4BoilerplateLineRemover` first to match C4 exactly.
    """

    @property
    def name(self) -> str:
        return "c4_curly_bracket"

    def score(self, f: TextFeatures) -> np.ndarray:
        return np.asarray(pc.match_substring(f.text, "{"), dtype=np.float64)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s == 0


#: A sentence end: Latin terminal marks followed by optional closing quotes/brackets and then
#: whitespace or the end of the text, or CJK full-width marks (which are not followed by spaces).
SENTENCE_END_REGEX = r"[.!?]+[\"'”’»)\]]*(?:\s|$)|[。！？]+"


@dataclass(frozen=True)
class SentenceCountRule(Rule):
    """C4: at least ``min_sentences`` sentences (default 3, TFDS ``_MIN_NUM_SENTENCES``).

    Sentences are counted as terminal-punctuation runs (``SENTENCE_END_REGEX``), one RE2 pass
    per batch, instead of C4's NLTK Punkt tokenizer (too slow for a per-document loop).
    """

    min_sentences: int = 3

    @property
    def name(self) -> str:
        return "c4_sentence_count"

    def score(self, f: TextFeatures) -> np.ndarray:
        return np.asarray(pc.count_substring_regex(f.text, SENTENCE_END_REGEX), dtype=np.float64)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s >= self.min_sentences


@dataclass(frozen=True)
class UrlRatioRule(Rule):
    """Share of the document's characters inside URLs at most ``max_ratio`` (NeMo default 0.2).

    URLs: a scheme (``http://``, ``ftp://``...) or ``www.`` up to the next whitespace. Measured
    as the length lost when every URL is removed (one RE2 replace per batch).
    """

    max_ratio: float = 0.2

    @property
    def name(self) -> str:
        return "url_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        stripped = np.asarray(
            pc.utf8_length(pc.replace_substring_regex(f.text, URL_REGEX, "")), dtype=np.int64
        )
        return ratio(f.char_len - stripped, f.char_len)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio


@dataclass(frozen=True)
class NonAlphaNumericRule(Rule):
    """Share of characters that are not letters, marks, digits (any script) at most ``max_ratio``.

    Default 0.25 (NeMo Curator's ``NonAlphaNumericFilter``). Whitespace is not counted as a
    symbol unless ``count_whitespace`` is True. NeMo counts whitespace *and* every non-ASCII
    letter as a symbol, which drops nearly all Cyrillic text; ``count_whitespace=True`` gives its
    English behaviour without that bug. An empty document scores 0.
    """

    max_ratio: float = 0.25
    count_whitespace: bool = False

    @property
    def name(self) -> str:
        return "non_alphanumeric_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        # RE2's \s is ASCII-only: Unicode separators (NBSP, ideographic space) are \pZ.
        pattern = r"[^\pL\pM\pN]" if self.count_whitespace else r"[^\pL\pM\pN\pZ\s]"
        symbols = np.asarray(pc.count_substring_regex(f.text, pattern), dtype=np.float64)
        return ratio(symbols, f.char_len)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio
