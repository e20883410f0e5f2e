"""Document-level quality rules: the Gopher quality rules and the C4 document rules.

A rule is a frozen dataclass whose fields are its thresholds, so a stage's identity (which reads
public attributes, recursively) changes whenever a threshold does. A rule has

- ``name``: the score column and the drop reason (``dropped.<name>`` in stage metrics);
- ``score(features) -> float64 array``: one number per document, computed on the whole batch;
- ``keep(scores) -> bool array``: True where the document passes.

Every rule is total: empty, blank, huge or odd text gets a finite score, never an exception
(ratios with a zero denominator are 0.0). Rules are Unicode-aware: a letter is ``\\p{L}`` (any
script), a digit ``\\p{N}``, and combining marks ``\\p{M}`` count with letters.

Sources of the defaults:
- Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
  Gopher", section A.1.1 "MassiveText quality filters" (same values as datatrove's
  ``GopherQualityFilter``).
- C4: Raffel et al. 2020 (T5), section 2.2, and TensorFlow Datasets ``c4_utils.py``
  (``_MIN_NUM_SENTENCES = 3``, ``_END_MARKS``, lorem ipsum and ``{`` page rules). datatrove's
  ``C4QualityFilter`` uses other defaults (5 sentences, 3 words per line); we follow the original.
- URL and non-alphanumeric ratios: NeMo Curator's ``UrlsFilter`` (0.2) and
  ``NonAlphaNumericFilter`` (0.25) defaults, with a Unicode-aware definition.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.text.filters.features import TextFeatures, ratio, segment_sum

#: The Gopher stop words (Rae et al. 2021, A.1.1).
GOPHER_STOP_WORDS: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")

#: Characters stripped from both ends of a word before it is compared with a stop word.
_EDGE_PUNCTUATION = "\"'“”‘’«»„()[]{}<>.,;:!?¡¿…-–—*_/\\|`~"

#: A bullet at the start of a line. The en and em dashes are *not* bullets: Russian, French and
#: others open dialogue lines with them.
_BULLET_REGEX = r"^[•●○◦‣⁃∙▪▫■□◆◇►▶➢➤✓✔*\-]"

#: URLs with a scheme or a ``www.`` host, up to the next whitespace or quote/angle bracket.
URL_REGEX = r"(?i)(?:\b[a-z][a-z0-9+.\-]*://|\bwww\.)[^\s<>\"'`]+"


class Rule(ABC):
    """A named, thresholded, batched document score (see module docstring)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Score column suffix and drop reason."""

    @abstractmethod
    def score(self, features: TextFeatures) -> np.ndarray:
        """One float per document of the batch."""

    @abstractmethod
    def keep(self, scores: np.ndarray) -> np.ndarray:
        """True where a document with that score passes."""


# ---------------------------------------------------------------------------- Gopher quality
@dataclass(frozen=True)
class WordCountRule(Rule):
    """Whitespace-separated words per document within ``[min_words, max_words]``.

    Gopher default 50..100,000: shorter pages are rarely prose, longer ones are dumps.
    """

    min_words: int = 50
    max_words: int = 100_000

    @property
    def name(self) -> str:
        return "gopher_word_count"

    def score(self, f: TextFeatures) -> np.ndarray:
        return f.n_words.astype(np.float64)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return (s >= self.min_words) & (s <= self.max_words)


@dataclass(frozen=True)
class MeanWordLengthRule(Rule):
    """Mean characters per word within ``[min_length, max_length]`` (Gopher default 3..10).

    Very short means are lists of numbers or letters, very long ones are URLs, hashes or code.
    A document without words scores 0 (and fails).
    """

    min_length: float = 3.0
    max_length: float = 10.0

    @property
    def name(self) -> str:
        return "gopher_mean_word_length"

    def score(self, f: TextFeatures) -> np.ndarray:
        return ratio(f.word_chars, f.n_words)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return (s >= self.min_length) & (s <= self.max_length)


@dataclass(frozen=True)
class SymbolWordRatioRule(Rule):
    """(hash symbols ``#`` + ellipses ``...``/``…``) per word at most ``max_ratio`` (Gopher 0.1).

    Counted with plain substring search over the batch (no regex): hashtags and ellipses mark
    social-media and truncated snippet pages.
    """

    max_ratio: float = 0.1

    @property
    def name(self) -> str:
        return "gopher_symbol_word_ratio"

    def score(self, f: TextFeatures) -> np.ndarray:
        symbols = (
            np.asarray(pc.count_substring(f.text, "#"), dtype=np.float64)
            + np.asarray(pc.count_substring(f.text, "..."), dtype=np.float64)
            + np.asarray(pc.count_substring(f.text, "…"), dtype=np.float64)
        )
        return ratio(symbols, f.n_words)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio


@dataclass(frozen=True)
class BulletLinesRule(Rule):
    """Share of non-blank lines that start with a bullet at most ``max_ratio`` (Gopher 0.9).

    Bullets: ``• ● ○ ◦ ‣ ⁃ ∙ ▪ ▫ ■ □ ◆ ◇ ► ▶ ➢ ➤ ✓ ✔ * -`` (not en/em dashes, which open dialogue
    lines in many languages).
    """

    max_ratio: float = 0.9

    @property
    def name(self) -> str:
        return "gopher_bullet_lines"

    def score(self, f: TextFeatures) -> np.ndarray:
        bullet = np.asarray(pc.match_substring_regex(f.lines, _BULLET_REGEX), dtype=bool)
        return ratio(segment_sum(bullet.astype(np.float64), f.line_parent, f.n), f.n_lines)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio


@dataclass(frozen=True)
class EllipsisLinesRule(Rule):
    """Share of non-blank lines ending with ``...`` or ``…`` at most ``max_ratio`` (Gopher 0.3)."""

    max_ratio: float = 0.3

    @property
    def name(self) -> str:
        return "gopher_ellipsis_lines"

    def score(self, f: TextFeatures) -> np.ndarray:
        ends = np.asarray(pc.ends_with(f.lines, "..."), dtype=bool) | np.asarray(
            pc.ends_with(f.lines, "…"), dtype=bool
        )
        return ratio(segment_sum(ends.astype(np.float64), f.line_parent, f.n), f.n_lines)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s <= self.max_ratio


@dataclass(frozen=True)
class AlphabeticWordsRule(Rule):
    """Share of words containing at least one letter (any script) at least ``min_ratio``.

    Gopher default 0.8. A letter is ``\\p{L}``: Cyrillic, Han, Greek... count, unlike ASCII-only
    checks. A document without words scores 0 (and fails).
    """

    min_ratio: float = 0.8

    @property
    def name(self) -> str:
        return "gopher_alphabetic_words"

    def score(self, f: TextFeatures) -> np.ndarray:
        has_letter = np.asarray(pc.match_substring_regex(f.flat_words, r"\pL"), dtype=np.float64)
        return ratio(segment_sum(has_letter, f.word_parent, f.n), f.n_words)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s >= self.min_ratio


@dataclass(frozen=True)
class StopWordsRule(Rule):
    """At least ``min_count`` stop-word occurrences (Gopher: 2 of the, be, to, of, and, that,
    have, with).

    Words are lower-cased and stripped of surrounding punctuation before matching, so "The" and
    "that," count. English-only by design, as in Gopher: do not apply it to other languages.
    """

    min_count: int = 2
    stop_words: tuple[str, ...] = GOPHER_STOP_WORDS

    @property
    def name(self) -> str:
        return "gopher_stop_words"

    def score(self, f: TextFeatures) -> np.ndarray:
        if len(f.flat_words) == 0:
            return np.zeros(f.n)
        words = pc.utf8_trim(pc.utf8_lower(f.flat_words), characters=_EDGE_PUNCTUATION)
        hit = np.asarray(pc.is_in(words, value_set=pa.array(list(self.stop_words), type=pa.string())), dtype=np.float64)
        return segment_sum(hit, f.word_parent, f.n)

    def keep(self, s: np.ndarray) -> np.ndarray:
        return s >= self.min_count


# ---------------------------------------------------------------------------- C4 document rules
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
