"""Text modifiers: stages that rewrite the text column and never drop a document.

A document that a modifier empties stays (as ``""``); deciding to drop it is a filter's job, so
accounting stays in one place. Each modifier records ``documents_modified`` (and, where it
applies, ``lines_removed`` or ``urls_removed``) in its stage metrics.

All modifiers except :class:`UnicodeRepair` are whole-batch Arrow kernels (RE2 regex replace,
Unicode normalisation, list split/filter/join); ``ftfy`` is per document but skips documents
that cannot need it. :class:`TextNormalizer` fuses repair, whitespace and (optionally) URL
removal into one stage: one pass over the task, one column rebuild, one metrics record.
Null texts stay null.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.stage import ProcessingStage, record_metrics
from curator_stages.tasks import DocumentBatch
from curator_stages.text.filters.rules import URL_REGEX

DOCUMENTS_MODIFIED = "documents_modified"


def _as_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _count_changed(before: pa.Array, after: pa.Array) -> int:
    changed = pc.fill_null(pc.not_equal(before, after), False)
    return int(pc.sum(changed).as_py() or 0)


class TextModifier(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Base of the modifiers: rewrite ``text_field`` batch-wise, keep every row."""

    batch_size = 1

    def __init__(self, text_field: str = "text") -> None:
        self.text_field = text_field

    def inputs(self) -> tuple[list[str], list[str]]:
        return [], [self.text_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], [self.text_field]

    @abstractmethod
    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, float]]:
        """New texts (same length, same order) and extra metrics for this batch."""

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        idx = table.schema.get_field_index(self.text_field)
        before = _as_array(table.column(idx))
        if pa.types.is_null(before.type):  # empty or all-null column: nothing to modify
            out = task.derive(table)
            record_metrics(out, **{DOCUMENTS_MODIFIED: 0})
            return out
        if not (pa.types.is_string(before.type) or pa.types.is_large_string(before.type)):
            raise TypeError(f"stage {self.stage_name!r}: field {self.text_field!r} must hold "
                            f"strings, got {before.type}; set text_field to the text column")
        after, metrics = self.modify(before)
        if after.type != before.type:
            after = after.cast(before.type)
        out = task.derive(table.set_column(idx, self.text_field, after))
        record_metrics(out, **{DOCUMENTS_MODIFIED: _count_changed(before, after)}, **metrics)
        return out


# ---------------------------------------------------------------------------- unicode repair
#: Texts that are pure ASCII and hold none of these characters are left alone by ftfy's default
#: fixes (HTML entities need ``&``; line-break fixes need ``\r``; control characters and
#: terminal escapes are below 0x20 or 0x7f), so they skip the per-document call.
_ASCII_NEEDS_FTFY = r"[&\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


class UnicodeRepair(TextModifier):
    """Repair mojibake and broken Unicode with ``ftfy.fix_text`` (its default configuration).

    Per document (ftfy has no batched form), but ASCII documents that cannot change are skipped
    with one batched check, which on English web text is most of them.
    """

    name = "unicode_repair"

    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, float]]:
        import ftfy

        candidate = pc.fill_null(
            pc.or_(pc.invert(pc.string_is_ascii(texts)),
                   pc.match_substring_regex(texts, _ASCII_NEEDS_FTFY)),
            False,
        )
        idx = np.flatnonzero(np.asarray(candidate, dtype=bool))
        if len(idx) == 0:
            return texts, {}
        values = texts.to_pylist()
        for i in idx:
            values[i] = ftfy.fix_text(values[i])
        return pa.array(values, type=texts.type), {}


# ---------------------------------------------------------------------------- whitespace
class WhitespaceNormalizer(TextModifier):
    """Normalise whitespace so that repetition rules and dedup see equal text as equal.

    In order: Unicode NFC; ``\\r\\n`` and lone ``\\r`` -> ``\\n``; runs of spaces, tabs and other
    horizontal Unicode spaces (NBSP, ideographic space...) -> one space; spaces at the end of a
    line removed; 3+ consecutive newlines (blank lines) -> 2 (one blank line keeps paragraphs);
    leading and trailing whitespace of the document removed.
    """

    name = "whitespace_normalizer"

    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, float]]:
        return normalize_whitespace(texts), {}


#: Runs of horizontal whitespace: space, tab and the Unicode space separators (Zs: NBSP, en/em
#: spaces, narrow NBSP, ideographic space...). RE2's ``\s`` is ASCII-only, so they are listed.
_HORIZONTAL_SPACE_RUN = r"[\t\p{Zs}]+"


def normalize_whitespace(texts: pa.Array) -> pa.Array:
    """The :class:`WhitespaceNormalizer` transformation as a function on an Arrow string array."""
    t = pc.utf8_normalize(texts, form="NFC")
    t = pc.replace_substring_regex(t, r"\r\n?", "\n")
    t = pc.replace_substring_regex(t, _HORIZONTAL_SPACE_RUN, " ")
    t = pc.replace_substring_regex(t, r" \n", "\n")
    t = pc.replace_substring_regex(t, r"\n{3,}", "\n\n")
    return pc.utf8_trim_whitespace(t)


# ---------------------------------------------------------------------------- URLs
class UrlRemover(TextModifier):
    """Replace URLs (scheme or ``www.`` host up to the next whitespace; the same pattern as the
    URL-ratio rule) by ``replacement`` (default: remove). Metric: ``urls_removed``."""

    name = "url_remover"

    def __init__(self, text_field: str = "text", replacement: str = "") -> None:
        super().__init__(text_field)
        self.replacement = replacement

    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, float]]:
        n_urls = int(pc.sum(pc.count_substring_regex(texts, URL_REGEX)).as_py() or 0)
        if n_urls == 0:
            return texts, {}
        return (pc.replace_substring_regex(texts, URL_REGEX, self.replacement),
                {"urls_removed": n_urls})


# ---------------------------------------------------------------------------- C4 lines
#: C4 (TFDS c4_utils) end marks and policy substrings.
C4_END_MARKS: tuple[str, ...] = (".", "?", "!", '"')
C4_POLICY_SUBSTRINGS: tuple[str, ...] = (
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
    "use cookies",
)
#: Wikipedia-style citations C4 removes from lines: ``[12]``, ``[edit]``, ``[citation needed]``.
C4_CITATION_REGEX = r"\[\d*\]|\[edit\]|\[citation needed\]"


class C4BoilerplateLineRemover(TextModifier):
    """Remove boilerplate lines with C4's line rules (Raffel et al. 2020; TFDS ``c4_utils``).

    Each line is stripped and citations are removed (``remove_citations``); then it is dropped
    when it
    - does not end with a terminal mark in ``end_marks`` (default ``. ? ! "``) or ends with an
      ellipsis ``...`` (``require_terminal_punctuation``);
    - has fewer than ``min_words_per_line`` words (C4 default 5);
    - contains "javascript" (any case) (``remove_javascript``);
    - contains a privacy/cookie/terms-of-use phrase (``remove_policy``);
    - holds a word longer than ``max_word_length`` characters (C4 default 1000).
    Kept lines are joined with ``\\n``; C4 drops blank lines too unless ``keep_blank_lines``
    (which keeps paragraph breaks for the paragraph repetition rules). The document-level C4
    rules (lorem ipsum, ``{``, sentence count) are filters: ``c4_quality_rules()``.
    Metric: ``lines_removed``. Whole batch: one split, vectorised masks, one join.
    """

    name = "c4_boilerplate_line_remover"

    def __init__(
        self,
        text_field: str = "text",
        min_words_per_line: int = 5,
        end_marks: Sequence[str] = C4_END_MARKS,
        require_terminal_punctuation: bool = True,
        remove_javascript: bool = True,
        remove_policy: bool = True,
        policy_substrings: Sequence[str] = C4_POLICY_SUBSTRINGS,
        remove_citations: bool = True,
        max_word_length: int = 1000,
        keep_blank_lines: bool = False,
    ) -> None:
        super().__init__(text_field)
        self.min_words_per_line = min_words_per_line
        self.end_marks = tuple(end_marks)
        self.require_terminal_punctuation = require_terminal_punctuation
        self.remove_javascript = remove_javascript
        self.remove_policy = remove_policy
        self.policy_substrings = tuple(policy_substrings)
        self.remove_citations = remove_citations
        self.max_word_length = max_word_length
        self.keep_blank_lines = keep_blank_lines

    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, float]]:
        n = len(texts)
        valid = pc.is_valid(texts)
        filled = pc.fill_null(texts, "")
        lists = pc.split_pattern(filled, "\n")
        parent = np.asarray(pc.list_parent_indices(lists), dtype=np.int64)
        lines = pc.utf8_trim_whitespace(pc.list_flatten(lists))
        if self.remove_citations:
            lines = pc.utf8_trim_whitespace(pc.replace_substring_regex(lines, C4_CITATION_REGEX, ""))
        n_lines = len(lines)
        keep = np.ones(n_lines, dtype=bool)
        blank = np.asarray(pc.utf8_length(lines), dtype=np.int64) == 0
        if self.require_terminal_punctuation and self.end_marks:
            ends = np.zeros(n_lines, dtype=bool)
            for mark in self.end_marks:
                ends |= np.asarray(pc.ends_with(lines, mark), dtype=bool)
            ends &= ~np.asarray(pc.ends_with(lines, "..."), dtype=bool)
            keep &= ends
        words = pc.utf8_split_whitespace(lines)
        if self.min_words_per_line > 0:
            keep &= np.asarray(pc.list_value_length(words), dtype=np.int64) >= self.min_words_per_line
        if self.max_word_length > 0:
            flat = pc.list_flatten(words)
            if len(flat):
                wl = np.asarray(pc.utf8_length(flat), dtype=np.int64)
                wparent = np.asarray(pc.list_parent_indices(words), dtype=np.int64)
                too_long = np.bincount(wparent[wl > self.max_word_length], minlength=n_lines) > 0
                keep &= ~too_long
        if self.remove_javascript:
            keep &= ~np.asarray(pc.match_substring(lines, "javascript", ignore_case=True), dtype=bool)
        if self.remove_policy and self.policy_substrings:
            pattern = "|".join(re.escape(p) for p in self.policy_substrings)
            keep &= ~np.asarray(pc.match_substring_regex(lines, pattern, ignore_case=True), dtype=bool)
        removed = int(np.sum(~keep & ~blank))
        if self.keep_blank_lines:
            keep |= blank
            # collapse the blank lines left by removed ones into single paragraph breaks below
        kept_lines = lines.filter(pa.array(keep))
        counts = np.bincount(parent[keep], minlength=n)
        offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), kept_lines), "\n")
        if self.keep_blank_lines:
            joined = pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, r"\n{3,}", "\n\n"))
        joined = pc.if_else(valid, joined, pa.scalar(None, pa.string()))
        return joined, {"lines_removed": removed}


# ---------------------------------------------------------------------------- fused
class TextNormalizer(TextModifier):
    """Unicode repair + whitespace normalisation (+ optional URL removal) as one fused stage.

    Cheap steps fused into one stage cost one task pass and one stage hop instead of three.
    Order: repair (ftfy), remove URLs, normalise whitespace (so gaps left by URLs collapse).
    """

    name = "text_normalizer"

    def __init__(self, text_field: str = "text", repair_unicode: bool = True,
                 normalize_whitespace: bool = True, remove_urls: bool = False) -> None:
        super().__init__(text_field)
        self.repair_unicode = repair_unicode
        self.normalize_whitespace = normalize_whitespace
        self.remove_urls = remove_urls

    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, Any]]:
        metrics: dict[str, Any] = {}
        if self.repair_unicode:
            texts, m = UnicodeRepair(self.text_field).modify(texts)
            metrics.update(m)
        if self.remove_urls:
            texts, m = UrlRemover(self.text_field).modify(texts)
            metrics.update(m)
        if self.normalize_whitespace:
            texts = normalize_whitespace(texts)
        return texts, metrics
