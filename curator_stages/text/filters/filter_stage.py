"""The heuristic filter stage: score a batch with many rules at once, drop what fails.

One stage evaluates all its rules on one shared :class:`TextFeatures`, so the batch is split
into words, lines and n-grams once, not once per rule; that sharing plus whole-batch Arrow/numpy
kernels is where the speed over a per-document, per-rule loop comes from.

Drop reasons: a failing document is attributed to the **first** failing rule in the stage's
rule order (so counts by reason sum exactly to the documents dropped); in ``score``/``both``
mode the score columns show every rule's value, so all failing rules can be recovered.

Cost: rules walk in that order with a mask of documents not yet failed. A ``cost == "costly"``
rule (the repetition rules: duplicate lines/paragraphs, n-grams) is scored only on those
documents, on features built for that subset and shared by the following costly rules, when no
failed document's score is output (``filter``; ``both`` without ``keep_dropped``). A failed
document cannot change its first failing rule, so kept rows, drop reasons and kept score
columns are the same; a 50 MB dump that fails the word count never reaches the n-gram rules.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.stage import ProcessingStage, record_drops, record_metrics
from curator_stages.tasks import DROP_REASON_COLUMN, DROPPED_DOCUMENTS_KEY, DocumentBatch, json_rows
from curator_stages.text.filters.features import TextFeatures
from curator_stages.text.filters.repetition import (
    DuplicateLineCharFractionRule,
    DuplicateLineFractionRule,
    DuplicateParagraphCharFractionRule,
    DuplicateParagraphFractionRule,
    duplicate_ngram_rules,
    top_ngram_rules,
)
from curator_stages.text.filters.rules import (
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

FilterMode = Literal["filter", "score", "both"]
_MODES = ("filter", "score", "both")


class HeuristicFilter(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Score documents with ``rules`` and, depending on ``mode``, drop those that fail.

    - ``mode="filter"``: drop failing documents, add no columns;
    - ``mode="score"``: keep every document, add one float column per rule named
      ``f"{score_prefix}{rule.name}"``;
    - ``mode="both"``: drop failing documents and keep the score columns on the survivors.

    Drops are recorded per rule (``dropped.<rule name>``) on the returned batch, first failing
    rule wins. With ``keep_dropped=True`` the dropped rows, plus a ``drop_reason`` column, are
    appended to ``task.metadata["dropped_documents"]`` (JSON rows, see ``tasks.json_rows``) for a
    writer to save;
    with ``keep_dropped=N`` only the first N rows per rule and batch are kept: examples that let
    a person judge a threshold, at a cost that does not grow with the corpus.
    Rules are frozen dataclasses, so the stage's identity changes whenever a threshold does.

    Language: when the batch has a ``language_field`` column (``LanguageIdentifier`` adds
    ``language``), its codes reach the rules, which then judge each document by its language
    (per-language stop words; word rules abstain for unsegmented scripts). A rule that
    *abstains* on a document lets it pass that rule (see ``Rule.abstains``). Without the column
    the rules see no language (stop words are English, as in Gopher): run language id first.
    """

    name = "heuristic_filter"
    batch_size = 1
    #: Score ``cost == "costly"`` rules only on documents no earlier rule failed (when no
    #: failed document's score is output). Private: it changes no result, only the work done;
    #: tests turn it off to compare.
    _skip_failed_costly: bool = True

    def __init__(
        self,
        rules: Sequence[Rule],
        mode: FilterMode = "filter",
        text_field: str = "text",
        score_prefix: str = "",
        keep_dropped: bool | int = False,
        name: str | None = None,
        language_field: str = "language",
    ) -> None:
        rules = list(rules)
        if not rules:
            raise ValueError("HeuristicFilter: rules is empty; pass at least one Rule "
                             "(e.g. gopher_quality_rules())")
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"HeuristicFilter: rules must be Rule instances, got {rule!r}")
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"HeuristicFilter: rule names must be unique, repeated: {dupes}; "
                             "each rule is a score column and a drop reason")
        if mode not in _MODES:
            raise ValueError(f"HeuristicFilter: mode must be one of {_MODES}, got {mode!r}")
        self.rules = rules
        self.mode = mode
        self.text_field = text_field
        self.score_prefix = score_prefix
        if isinstance(keep_dropped, bool) is False and (
                not isinstance(keep_dropped, int) or keep_dropped < 0):
            raise ValueError(f"HeuristicFilter: keep_dropped must be a bool or a count >= 0 of "
                             f"examples per rule, got {keep_dropped!r}")
        self.keep_dropped = keep_dropped
        self.language_field = language_field
        if name:
            self.name = name

    def inputs(self) -> tuple[list[str], list[str]]:
        return [], [self.text_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        if self.mode == "filter":
            return [], [self.text_field]
        return [], [self.text_field, *self.score_columns]

    @property
    def score_columns(self) -> list[str]:
        return [f"{self.score_prefix}{r.name}" for r in self.rules]

    def score_table(self, texts: pa.Array | pa.ChunkedArray,
                    languages: pa.Array | pa.ChunkedArray | None = None) -> dict[str, np.ndarray]:
        """Every rule's score for ``texts``, by rule name (handy for analysis notebooks)."""
        features = TextFeatures(texts, languages)
        return {r.name: r.score(features) for r in self.rules}

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        n = table.num_rows
        column = table.column(self.text_field)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
                or pa.types.is_null(column.type) or pa.types.is_dictionary(column.type)):
            raise TypeError(f"stage {self.stage_name!r}: field {self.text_field!r} must hold "
                            f"strings, got {column.type}; set text_field to the text column")
        languages = None
        if self.language_field and self.language_field in table.column_names:
            languages = table.column(self.language_field)
            if not (pa.types.is_string(languages.type) or pa.types.is_large_string(languages.type)
                    or pa.types.is_null(languages.type)
                    or pa.types.is_dictionary(languages.type)):
                raise TypeError(f"stage {self.stage_name!r}: field {self.language_field!r} must "
                                f"hold language codes (strings), got {languages.type}; set "
                                "language_field to the language column, or '' to ignore it")
        # Skip failed documents in costly rules only where no score of a failed document is
        # output: a failed document keeps its first failing rule whatever later rules say.
        lazy = self._skip_failed_costly and (
            self.mode == "filter" or (self.mode == "both" and not self.keep_dropped))
        # Every rule judges each document alone, so row chunks give the same scores while the
        # shared features (words, lines, n-grams) are held for one chunk at a time.
        first_fail = np.full(n, -1, dtype=np.int64)
        scores = [np.full(n, np.nan) for _ in self.rules]
        for lo, hi in _row_chunks(column, MAX_TEXT_BYTES_PER_CHUNK):
            sub_languages = None if languages is None else languages.slice(lo, hi - lo)
            chunk_fail, chunk_scores = self._judge_rows(column.slice(lo, hi - lo),
                                                        sub_languages, lazy)
            first_fail[lo:hi] = chunk_fail
            for whole, part in zip(scores, chunk_scores):
                whole[lo:hi] = part

        out_table = table
        if self.mode != "filter":
            for column, s in zip(self.score_columns, scores):
                col = pa.array(s, type=pa.float64())
                idx = out_table.schema.get_field_index(column)
                out_table = (out_table.set_column(idx, column, col) if idx >= 0
                             else out_table.append_column(column, col))
        if self.mode == "score":
            out = task.derive(out_table)
            flagged = {f"flagged.{r.name}": int(np.sum(first_fail == i))
                       for i, r in enumerate(self.rules)}
            record_metrics(out, **{k: v for k, v in flagged.items() if v})
            return out

        keep = first_fail < 0
        metadata: dict[str, Any] = {}
        if self.keep_dropped and not keep.all():
            kept_rows = ~keep
            if self.keep_dropped is not True:  # a count: the first N rows each rule dropped
                kept_rows = np.zeros(n, dtype=bool)
                for i in range(len(self.rules)):
                    kept_rows[np.flatnonzero(first_fail == i)[: int(self.keep_dropped)]] = True
            reasons = np.array([r.name for r in self.rules], dtype=object)[first_fail[kept_rows]]
            dropped = out_table.filter(pa.array(kept_rows)).append_column(
                DROP_REASON_COLUMN, pa.array(reasons.tolist(), type=pa.string()))
            # JSON rows, not a table: task metadata is stored as JSON in checkpoints (never
            # pickled), and the writer turns the rows back into a table.
            previous = task.metadata.get(DROPPED_DOCUMENTS_KEY)
            if isinstance(previous, pa.Table):
                previous = json_rows(previous)
            metadata[DROPPED_DOCUMENTS_KEY] = [*(previous or []), *json_rows(dropped)]
        out = task.derive(out_table.filter(pa.array(keep)), **metadata)
        counts = np.bincount(first_fail[~keep], minlength=len(self.rules))
        record_drops(out, {r.name: int(c) for r, c in zip(self.rules, counts)})
        return out

    def _judge_rows(self, column: pa.ChunkedArray | pa.Array,
                    languages: pa.ChunkedArray | pa.Array | None,
                    lazy: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """(index of the first failing rule or -1, every rule's scores) for these rows."""
        n = len(column)
        features = TextFeatures(column, languages)
        first_fail = np.full(n, -1, dtype=np.int64)
        scores: list[np.ndarray] = []
        # The rows the costly rules are scored on, and their features: the whole chunk (sharing
        # the cheap rules' intermediates) until enough of its text has failed to pay a subset.
        costly: tuple[np.ndarray, TextFeatures] = (np.arange(n), features)
        for i, rule in enumerate(self.rules):
            if not (lazy and rule.cost == "costly"):
                s, failed = _judge(rule, features)
            else:
                alive = np.flatnonzero(first_fail < 0)
                if _worth_subset(features, costly, alive):
                    costly = (alive, features.subset(alive))
                rows, sub = costly
                s, failed = np.full(n, np.nan), np.zeros(n, dtype=bool)
                if len(rows):
                    s[rows], failed[rows] = _judge(rule, sub)
            first_fail[failed & (first_fail < 0)] = i
            scores.append(s)
        return first_fail, scores


#: Text (UTF-8 bytes) one chunk of rows is scored with. The shared features cost many times the
#: text they describe, so a whole task's batch scored at once held far more memory, and ran
#: slower, than the same batch in chunks (benchmarks/BENCHMARKS.md, the "quality filter" row).
MAX_TEXT_BYTES_PER_CHUNK = 1_000_000


def _row_chunks(column: pa.ChunkedArray | pa.Array, max_bytes: int) -> list[tuple[int, int]]:
    """``(start, end)`` row ranges of at most ``max_bytes`` of text each (a longer document
    is a chunk of its own); one range where the lengths cannot be read cheaply."""
    n = len(column)
    if n == 0 or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return [(0, n)]
    ends = np.cumsum(pc.binary_length(column).fill_null(0).to_numpy(zero_copy_only=False))
    bounds, lo = [], 0
    while lo < n:
        limit = (ends[lo - 1] if lo else 0) + max_bytes
        hi = max(int(np.searchsorted(ends, limit, side="right")), lo + 1)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _judge(rule: Rule, features: TextFeatures) -> tuple[np.ndarray, np.ndarray]:
    """(scores, failed) of ``rule`` on ``features``; an abstaining rule fails no document."""
    s = np.asarray(rule.score(features), dtype=np.float64)
    failed = ~np.asarray(rule.keep(s), dtype=bool)
    abstain = rule.abstains(features)
    if abstain is not None:
        failed &= ~np.asarray(abstain, dtype=bool)
    return s, failed


def _worth_subset(features: TextFeatures, costly: tuple[np.ndarray, TextFeatures],
                 alive: np.ndarray) -> bool:
    """Whether to build new features for the ``alive`` rows before a costly rule.

    Costly work grows with text, so what a subset saves is the text of the failed documents.
    From the whole batch (whose word split the subset reuses) a subset pays once a tenth of the
    text has failed; from an earlier subset, whose duplicate and n-gram intermediates the
    following costly rules would share, only once half of its text has.
    """
    rows, current = costly
    if len(alive) == len(rows):  # alive only shrinks: same length means the same rows
        return False
    chars = features.char_len
    dead_share = 1.0 - (chars[alive].sum() + len(alive)) / (chars[rows].sum() + len(rows))
    return dead_share >= (0.1 if current is features else 0.5)


# ---------------------------------------------------------------------------- presets
def gopher_quality_rules() -> list[Rule]:
    """The seven Gopher quality rules with their published defaults."""
    return [
        WordCountRule(),
        MeanWordLengthRule(),
        SymbolWordRatioRule(),
        BulletLinesRule(),
        EllipsisLinesRule(),
        AlphabeticWordsRule(),
        StopWordsRule(),
    ]


def gopher_repetition_rules() -> list[Rule]:
    """The Gopher repetition rules: lines, paragraphs, top 2-4-grams, duplicated 5-10-grams."""
    return [
        DuplicateLineFractionRule(),
        DuplicateParagraphFractionRule(),
        DuplicateLineCharFractionRule(),
        DuplicateParagraphCharFractionRule(),
        *top_ngram_rules(),
        *duplicate_ngram_rules(),
    ]


def c4_quality_rules() -> list[Rule]:
    """C4 document rules (lorem ipsum, ``{``, >= 3 sentences) plus the URL and non-alphanumeric
    ratios. C4's line rules are a modifier: ``C4BoilerplateLineRemover``."""
    return [
        LoremIpsumRule(),
        CurlyBracketRule(),
        SentenceCountRule(),
        UrlRatioRule(),
        NonAlphaNumericRule(),
    ]


def fineweb_quality_rules() -> list[Rule]:
    """FineWeb's extra rules with its published defaults: line punctuation, short lines,
    duplicated-line characters, list ratio (run after the Gopher and C4 rules, as FineWeb did)."""
    return [LinePunctuationRule(), ShortLineRule(), DuplicateLineCharRule(), ListRatioRule()]


def default_quality_rules() -> list[Rule]:
    """Gopher quality + Gopher repetition + C4 document rules, in that order of precedence."""
    return [*gopher_quality_rules(), *gopher_repetition_rules(), *c4_quality_rules()]


def gopher_quality(**kwargs: Any) -> HeuristicFilter:
    """A :class:`HeuristicFilter` with the Gopher quality rules (kwargs go to the stage)."""
    return HeuristicFilter(gopher_quality_rules(), **{"name": "gopher_quality", **kwargs})


def gopher_repetition(**kwargs: Any) -> HeuristicFilter:
    """A :class:`HeuristicFilter` with the Gopher repetition rules."""
    return HeuristicFilter(gopher_repetition_rules(), **{"name": "gopher_repetition", **kwargs})


def c4_quality(**kwargs: Any) -> HeuristicFilter:
    """A :class:`HeuristicFilter` with the C4 document rules and URL/non-alphanumeric ratios."""
    return HeuristicFilter(c4_quality_rules(), **{"name": "c4_quality", **kwargs})


def fineweb_quality(**kwargs: Any) -> HeuristicFilter:
    """A :class:`HeuristicFilter` with FineWeb's extra rules."""
    return HeuristicFilter(fineweb_quality_rules(), **{"name": "fineweb_quality", **kwargs})


def default_quality(**kwargs: Any) -> HeuristicFilter:
    """One stage running every rule of :func:`default_quality_rules` on shared features."""
    return HeuristicFilter(default_quality_rules(), **{"name": "default_quality", **kwargs})
