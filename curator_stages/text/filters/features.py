"""Per-batch text features shared by every rule of one filter stage.

Rules never look at a document on its own: they read arrays from a :class:`TextFeatures`
built once per batch. Each feature is computed lazily (``cached_property``) the first time a
rule asks for it and then reused, so ten rules that all need the words of a document split
the batch into words once. Every feature is a whole-batch pyarrow or numpy operation; nothing
here loops over documents in Python.

Conventions that make every rule total (no exception on any input):
- a null text is treated as ``""``;
- "words" are whitespace-separated tokens (``utf8_split_whitespace``: Unicode whitespace),
  except in scripts written without spaces between words: each Han, Hiragana or Katakana
  character (with the punctuation that directly follows it) is one word (see
  :data:`CJK_WORD_CHARS`);
- a ratio whose denominator is zero is 0.0.

Why one CJK character = one word: Chinese and Japanese put no spaces between words, so
whitespace splitting sees one "word" per sentence or paragraph and every word-based rule (word
count, mean word length, stop words, n-gram repetition) measures nothing. A dictionary segmenter
(jieba, MeCab) would be exact but is a per-document Python loop and a dependency; one character
per word is the standard cheap approximation (a Chinese word averages ~1.5 characters, so counts
run ~1.5x high: lenient, never dropping well-formed prose), and it is one vectorised RE2 pass.
Rules whose meaning does not survive it (mean word length) abstain on such documents.

Languages: a batch may carry each document's language code (``languages``, e.g. from
:class:`~curator_stages.text.language.LanguageIdentifier`); rules that depend on the language
(stop words; word rules for unsegmented scripts like Thai) read it from here. ``None`` means
unknown for the whole batch.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Characters of scripts written without spaces that count as one word each: Han (Chinese
#: characters, kanji; includes 々), Hiragana, Katakana and the Katakana prolonged sound mark (a
#: Common-script letter). Hangul is not here: Korean separates words with spaces.
CJK_WORD_CHARS = r"\p{Han}\p{Hiragana}\p{Katakana}\x{30FC}"
#: A CJK character plus the punctuation/symbols that directly follow it (kept with it, so "们，"
#: is one word with a letter and punctuation does not become a letterless "word").
_CJK_UNIT_REGEX = rf"([{CJK_WORD_CHARS}][^\pL\pN\s]*)"
_CJK_CHAR_REGEX = rf"[{CJK_WORD_CHARS}]"

#: Multiplier of the rolling n-gram hash (an odd 64-bit constant; arithmetic wraps mod 2**64).
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0.0 where ``den`` is 0 (keeps rules total)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def segment_sum(values: np.ndarray | None, parent: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` (or a count when None) per document index in ``parent``."""
    if values is None:
        return np.bincount(parent, minlength=n).astype(np.float64)
    return np.bincount(parent, weights=values, minlength=n)


def segment_max(values: np.ndarray, parent: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` per document; 0 for documents with no values.

    ``parent`` must be sorted (flattened list arrays are), so ``reduceat`` over group starts works.
    """
    out = np.zeros(n, dtype=np.float64)
    if len(values) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, parent[1:] != parent[:-1]])
    out[parent[starts]] = np.maximum.reduceat(values, starts)
    return out


def first_occurrence(keys: pa.Array | np.ndarray) -> np.ndarray:
    """Boolean mask: True where ``keys[i]`` has not occurred at an earlier position.

    Arrow's hash dictionary encoder numbers distinct values in order of first appearance, so an
    element is a first occurrence exactly when its code exceeds every earlier code.
    """
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    codes = np.asarray(pc.dictionary_encode(pa.array(keys)).indices, dtype=np.int64)
    prev_max = np.maximum.accumulate(np.r_[-1, codes[:-1]])
    return codes > prev_max


def normalise_language(code: str | None) -> str:
    """``"zh-Hans"``/``"pt_BR"``/``" EN "`` -> ``"zh"``/``"pt"``/``"en"``; None -> ``""``."""
    if not code:
        return ""
    return code.strip().lower().replace("_", "-").split("-")[0]


def _normalise_languages(languages: pa.Array | pa.ChunkedArray | list[str | None] | None,
                         n: int) -> np.ndarray | None:
    """Per-document base language codes as an object array (``""`` for null), or None.

    Vectorised: the column is dictionary-encoded and only its few distinct codes are normalised.
    """
    if languages is None:
        return None
    if isinstance(languages, list):
        languages = pa.array(languages, type=pa.string())
    if isinstance(languages, pa.ChunkedArray):
        languages = (languages.combine_chunks() if languages.num_chunks != 1
                     else languages.chunk(0))
    if len(languages) != n:
        raise ValueError(f"TextFeatures: {len(languages)} languages for {n} texts; give one "
                         "language code (or None) per document")
    if pa.types.is_dictionary(languages.type):
        languages = languages.dictionary_decode()
    if pa.types.is_null(languages.type):
        return np.full(n, "", dtype=object)
    if not (pa.types.is_string(languages.type) or pa.types.is_large_string(languages.type)):
        raise TypeError(f"TextFeatures: languages must be a string column, got {languages.type}")
    encoded = pc.dictionary_encode(pc.fill_null(languages, ""))
    codes = np.array([normalise_language(c) for c in encoded.dictionary.to_pylist()] or [""],
                     dtype=object)
    return codes[np.asarray(encoded.indices, dtype=np.int64)]


def _mix(h: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """One step of the rolling n-gram hash (uint64 arithmetic wraps)."""
    h = (h ^ codes) * _HASH_MUL
    return h ^ (h >> np.uint64(29))


def _count_and_first(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Occurrences of each key at each position, and True at each key's first position."""
    codes = np.asarray(pc.dictionary_encode(pa.array(keys)).indices, dtype=np.int64)
    counts = np.bincount(codes)[codes]
    first = codes > np.maximum.accumulate(np.r_[-1, codes[:-1]])
    return counts, first


class TextFeatures:
    """Lazily computed, shared intermediate results for one column of texts."""

    def __init__(self, texts: pa.Array | pa.ChunkedArray | list[str | None],
                 languages: pa.Array | pa.ChunkedArray | list[str | None] | None = None):
        if isinstance(texts, list):
            texts = pa.array(texts, type=pa.string())
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
        if pa.types.is_dictionary(texts.type):
            texts = texts.dictionary_decode()
        if pa.types.is_null(texts.type):  # an empty or all-null column inferred without a type
            texts = pa.nulls(len(texts), pa.string())
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise TypeError(f"TextFeatures: texts must be a string column, got {texts.type}")
        if texts.null_count:
            texts = pc.fill_null(texts, "")
        self.text: pa.Array = texts
        self.n: int = len(texts)
        self.languages: np.ndarray | None = _normalise_languages(languages, self.n)

    def subset(self, rows: np.ndarray) -> TextFeatures:
        """Fresh (uncomputed) features of the documents at positions ``rows`` (sorted indices).

        Why: costly rules need only judge the documents no earlier rule has failed, so
        :class:`HeuristicFilter` builds their features on that subset. Every feature is
        per-document (n-gram hashes and element keys are scoped by document), so a document's
        scores are the same in the subset as in the whole batch.
        """
        sub = TextFeatures.__new__(TextFeatures)
        sub.text = self.text.take(pa.array(rows, type=pa.int64()))
        sub.n = len(rows)
        sub.languages = None if self.languages is None else self.languages[rows]
        # Reuse what is already computed and per document: the word split (the costliest
        # intermediate the cheap rules share) is filtered, not redone.
        cache = self.__dict__
        for name in ("char_len", "has_cjk"):
            if name in cache:
                sub.__dict__[name] = cache[name][rows]
        if "_split_words" in cache:
            flat, parent, lengths = cache["_split_words"]
            new_index = np.full(self.n, -1, dtype=np.int64)
            new_index[rows] = np.arange(len(rows))
            keep = new_index[parent] >= 0
            sub.__dict__["_split_words"] = (flat.filter(pa.array(keep)), new_index[parent[keep]],
                                            lengths[keep])
        return sub

    # ------------------------------------------------------------------ characters
    @cached_property
    def char_len(self) -> np.ndarray:
        """Characters (code points) per document."""
        return np.asarray(pc.utf8_length(self.text), dtype=np.int64)

    @cached_property
    def lower(self) -> pa.Array:
        return pc.utf8_lower(self.text)

    # ------------------------------------------------------------------ words
    @cached_property
    def _split_words(self) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(flat words, document index of each word, characters per word).

        Arrow's whitespace split collapses inner runs but yields empty strings for leading and
        trailing whitespace (and one for an empty text); those are removed here, once.
        """
        lists = pc.utf8_split_whitespace(self._word_text)
        flat = pc.list_flatten(lists)
        parent = np.asarray(pc.list_parent_indices(lists), dtype=np.int64)
        lengths = np.asarray(pc.utf8_length(flat), dtype=np.int64)
        nonempty = lengths > 0
        if not nonempty.all():
            flat = flat.filter(pa.array(nonempty))
            parent = parent[nonempty]
            lengths = lengths[nonempty]
        return flat, parent, lengths

    @cached_property
    def has_cjk(self) -> np.ndarray:
        """True for documents with at least one Han/Hiragana/Katakana character."""
        return np.asarray(pc.match_substring_regex(self.text, _CJK_CHAR_REGEX), dtype=bool)

    @cached_property
    def _word_text(self) -> pa.Array:
        """The text with every CJK word unit surrounded by spaces (unchanged without CJK)."""
        if not self.has_cjk.any():
            return self.text
        return pc.replace_substring_regex(self.text, _CJK_UNIT_REGEX, r" \1 ")

    @cached_property
    def word_is_cjk(self) -> np.ndarray:
        """True for each flattened word that is one CJK character unit."""
        if not self.has_cjk.any() or len(self.flat_words) == 0:
            return np.zeros(len(self.flat_words), dtype=bool)
        return np.asarray(pc.match_substring_regex(self.flat_words, _CJK_CHAR_REGEX), dtype=bool)

    @cached_property
    def n_cjk_words(self) -> np.ndarray:
        """CJK character units per document (a part of :attr:`n_words`)."""
        return segment_sum(self.word_is_cjk.astype(np.float64), self.word_parent, self.n)

    def language_in(self, codes: frozenset[str] | set[str]) -> np.ndarray:
        """True where the document's language is one of ``codes``; all False when unknown."""
        if self.languages is None:
            return np.zeros(self.n, dtype=bool)
        return np.isin(self.languages, list(codes))

    @property
    def flat_words(self) -> pa.Array:
        """Every word of the batch, in document order."""
        return self._split_words[0]

    @property
    def word_parent(self) -> np.ndarray:
        """Document index of each flattened word (sorted)."""
        return self._split_words[1]

    @property
    def word_len(self) -> np.ndarray:
        """Characters per flattened word."""
        return self._split_words[2]

    @cached_property
    def n_words(self) -> np.ndarray:
        return np.bincount(self.word_parent, minlength=self.n).astype(np.int64)

    @cached_property
    def word_chars(self) -> np.ndarray:
        """Characters in words (whitespace excluded) per document."""
        return segment_sum(self.word_len, self.word_parent, self.n)

    @cached_property
    def word_codes(self) -> np.ndarray:
        """An integer per distinct word of the batch (exact, no hashing): n-grams are built on these."""
        if len(self.flat_words) == 0:
            return np.zeros(0, dtype=np.uint64)
        return np.asarray(pc.dictionary_encode(self.flat_words).indices).astype(np.uint64)

    # ------------------------------------------------------------------ lines and paragraphs
    @cached_property
    def _lines(self) -> pa.ListArray:
        return pc.split_pattern(self.text, "\n")

    @cached_property
    def flat_lines_stripped(self) -> pa.Array:
        return pc.utf8_trim_whitespace(pc.list_flatten(self._lines))

    @cached_property
    def _line_parent_all(self) -> np.ndarray:
        return np.asarray(pc.list_parent_indices(self._lines), dtype=np.int64)

    @cached_property
    def _line_nonblank(self) -> np.ndarray:
        return np.asarray(pc.utf8_length(self.flat_lines_stripped), dtype=np.int64) > 0

    @cached_property
    def lines(self) -> pa.Array:
        """Non-blank lines, stripped of surrounding whitespace, flattened over the batch."""
        return self.flat_lines_stripped.filter(pa.array(self._line_nonblank))

    @cached_property
    def raw_lines(self) -> pa.Array:
        """The same non-blank lines as :attr:`lines`, as written (not stripped): FineWeb's rules
        measure line lengths and endings on these."""
        return pc.list_flatten(self._lines).filter(pa.array(self._line_nonblank))

    @cached_property
    def line_parent(self) -> np.ndarray:
        return self._line_parent_all[self._line_nonblank]

    @cached_property
    def n_lines(self) -> np.ndarray:
        """Non-blank lines per document."""
        return segment_sum(None, self.line_parent, self.n)

    @cached_property
    def _paragraphs(self) -> tuple[pa.Array, np.ndarray]:
        paras = pc.split_pattern_regex(self.text, r"\n[ \t\r\f\v]*\n")
        flat = pc.utf8_trim_whitespace(pc.list_flatten(paras))
        parent = np.asarray(pc.list_parent_indices(paras), dtype=np.int64)
        keep = np.asarray(pc.utf8_length(flat), dtype=np.int64) > 0
        return flat.filter(pa.array(keep)), parent[keep]

    @property
    def paragraphs(self) -> pa.Array:
        """Non-blank paragraphs (text between blank lines), stripped, flattened over the batch."""
        return self._paragraphs[0]

    @property
    def paragraph_parent(self) -> np.ndarray:
        return self._paragraphs[1]

    # ------------------------------------------------------------------ n-grams
    def ngram_occurrences(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Word n-grams that occur at least twice in their document, for ``n >= 2``.

        Returns (start positions in the flat word array, occurrences of the n-gram starting
        there, True where that occurrence is the document's first). N-grams that occur once
        are left out: no repetition rule needs them.

        How: a 64-bit rolling hash over exact word codes, seeded with the document index (so
        equal n-grams of different documents differ), counted with Arrow's hash dictionary
        encoder. Level 2 hashes every position; level n only the positions whose (n-1)-gram
        and following (n-1)-gram both repeat -- a repeated n-gram needs both -- which on prose
        shrinks the work by orders of magnitude from n=4 on. A hash collision needs two distinct
        n-grams of one batch to agree on 64 bits; it could only raise a repetition score.
        """
        if n < 2:
            raise ValueError(f"TextFeatures.ngram_occurrences: n must be >= 2, got {n}")
        levels = self.__dict__.setdefault("_ngram_levels", {})
        if n in levels:
            return levels[n]
        codes, parent = self.word_codes, self.word_parent
        w = len(codes)
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
        if n == 2:
            m = w - 1
            if m <= 0:
                levels[2] = empty
                return empty
            h = parent.astype(np.uint64) * _HASH_MUL + np.uint64(0x632BE59BD9B4E019)
            h = _mix(_mix(h[:m], codes[:m]), codes[1 : m + 1])
            self.__dict__["_ngram_hash"] = np.r_[h, np.zeros(1, np.uint64)]
            pos = np.flatnonzero(parent[:m] == parent[1 : m + 1])
        else:
            prev_pos = self.ngram_occurrences(n - 1)[0]
            if len(prev_pos) == 0:
                levels[n] = empty
                return empty
            repeated = np.zeros(w + 1, dtype=bool)
            repeated[prev_pos] = True
            pos = prev_pos[repeated[prev_pos + 1]]
            hashes = self.__dict__["_ngram_hash"]
            hashes[pos] = _mix(hashes[pos], codes[pos + n - 1])
        if len(pos) == 0:
            levels[n] = empty
            return empty
        counts, first = _count_and_first(self.__dict__["_ngram_hash"][pos])
        keep = counts > 1
        result = (pos[keep], counts[keep], first[keep])
        levels[n] = result
        return result

    def window_chars(self, n: int, starts: np.ndarray) -> np.ndarray:
        """Characters of the n words starting at each position in ``starts``."""
        cs = self.word_len_cumsum
        return (cs[starts + n] - cs[starts]).astype(np.float64)

    @cached_property
    def word_len_cumsum(self) -> np.ndarray:
        return np.r_[0, np.cumsum(self.word_len)]
