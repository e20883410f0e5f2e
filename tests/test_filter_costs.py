"""HeuristicFilter scores costly (repetition) rules only on documents no earlier rule failed.

The optimisation must change no result: kept rows, drop reasons, drop counts, kept score columns
("both") and dropped examples are compared with it off (``_skip_failed_costly = False``, the
previous code path, every rule on every document). And it must actually skip: a costly spy rule
records which documents its features hold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest

from curator_stages.tasks import DocumentBatch, rows_table
from curator_stages.text.filters import (
    DROPPED_DOCUMENTS_KEY,
    DuplicateLineFractionRule,
    HeuristicFilter,
    StopWordsRule,
    TextFeatures,
    TopNGramRule,
    WordCountRule,
    default_quality_rules,
)

_STOP = ["the", "of", "and", "to", "a", "in", "that", "is", "with", "for", "as", "it", "was"]
_WORDS = ["harbour", "keeper", "storm", "lamp", "record", "winter", "boat", "measure", "page",
          "volunteer", "weather", "figure", "island", "rope", "signal", "light", "north"]


def _prose(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_STOP + _WORDS, weights=[4] * len(_STOP) + [1] * len(_WORDS), k=n_words)
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, n_words, 12)]
    return "\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4))


def _varied_texts(seed: int = 0) -> tuple[list[str | None], list[str | None]]:
    """Texts and languages that fail different rules, cheap and costly, alone and together."""
    rng = random.Random(seed)
    line = _prose(rng, 14).replace("\n\n", " ")
    texts: list[str | None] = [
        _prose(rng, 300),                                  # good
        _prose(rng, 20),                                   # too short (cheap)
        "\n".join([line] * 40),                            # repeated lines (costly + cheap)
        " ".join(["spam"] * 200_000),                      # too long AND repetitive
        "#tag... " * 300,                                  # symbols / ellipsis (cheap)
        _prose(rng, 80) + "\n\n" + "\n\n".join([_prose(rng, 30)] * 6),  # dup paragraphs
        "Старый маяк стоял на краю гавани больше ста лет и смотрители записывали погоду. " * 12,
        "灯塔在港口边上矗立了一百多年，看守人仔细记录天气。" * 20,
        None,
        "",
        "{ lorem ipsum } " + _prose(rng, 200),             # C4 rules (cheap, listed last)
        _prose(rng, 600),
        " ".join([" ".join(rng.choices(_WORDS, k=7))] * 30),   # repeated n-grams, no stop words
    ]
    langs: list[str | None] = ["en", "en", "en", "en", None, "en", "ru", "zh", None, "en", "en",
                               "en", "en"]
    return texts, langs


def _run(rules, mode: str, skip: bool, keep_dropped: bool | int, texts, langs):
    stage = HeuristicFilter(rules, mode=mode, keep_dropped=keep_dropped)
    stage._skip_failed_costly = skip
    table = pa.table({"id": [f"d{i:02d}" for i in range(len(texts))],
                      "text": pa.array(texts, pa.string()),
                      "language": pa.array(langs, pa.string())})
    [out] = stage.run([DocumentBatch(task_id="t", dataset_name="costs", data=table)])
    dropped = out.metadata.get(DROPPED_DOCUMENTS_KEY)
    return out.to_pyarrow(), out._stage_perf[-1].dropped_by_reason(), dropped


def _orders() -> list[list]:
    rules = default_quality_rules()
    costly = [r for r in rules if r.cost == "costly"]
    cheap = [r for r in rules if r.cost == "cheap"]
    shuffled = list(rules)
    random.Random(7).shuffle(shuffled)
    # default order; costly first (a doc failing both is attributed to the costly rule);
    # interleaved at random
    return [rules, costly + cheap, shuffled]


@pytest.mark.parametrize("order", range(3))
@pytest.mark.parametrize("mode,keep_dropped", [("filter", False), ("filter", True),
                                               ("filter", 1), ("both", False), ("both", True)])
def test_results_identical_with_and_without_skipping(order, mode, keep_dropped):
    texts, langs = _varied_texts()
    rules = _orders()[order]
    kept_a, drops_a, dropped_a = _run(rules, mode, False, keep_dropped, texts, langs)
    kept_b, drops_b, dropped_b = _run(rules, mode, True, keep_dropped, texts, langs)
    assert kept_b.equals(kept_a)  # same rows, same columns, same score values
    assert drops_b == drops_a
    assert len(drops_a) >= 4 and 0 < kept_a.num_rows < len(texts)  # the batch is varied
    if keep_dropped:
        assert rows_table(dropped_b).equals(rows_table(dropped_a))  # same rows, reasons (and scores in "both")
    else:
        assert dropped_a is None and dropped_b is None


def test_first_failing_rule_wins_when_a_costly_rule_is_listed_first():
    texts, langs = _varied_texts()
    rules = [DuplicateLineFractionRule(), TopNGramRule(), WordCountRule(), StopWordsRule()]
    for skip in (False, True):
        _, drops, dropped = _run(rules, "filter", skip, True, texts, langs)
        reasons = {r["id"]: r["drop_reason"] for r in dropped}
        # d03 fails the word count too, listed after the costly n-gram rule
        assert reasons["d03"] == "gopher_top_2gram_char_frac"
        assert reasons["d02"] == "gopher_dup_line_frac"
        assert reasons["d01"] == "gopher_word_count"


def test_decisions_match_score_mode():
    """Filter mode with skipping keeps exactly the documents score mode finds no failure in."""
    texts, langs = _varied_texts(seed=3)
    rules = default_quality_rules()
    scored, _, _ = _run(rules, "score", True, False, texts, langs)
    features = TextFeatures(scored.column("text"), scored.column("language"))
    ok = np.ones(scored.num_rows, dtype=bool)
    for rule in rules:
        passes = rule.keep(scored.column(rule.name).to_numpy())
        abstain = rule.abstains(features)
        ok &= passes | (abstain if abstain is not None else False)
    kept, _, _ = _run(rules, "filter", True, False, texts, langs)
    assert kept.column("id").to_pylist() == scored.filter(pa.array(ok)).column("id").to_pylist()


_SEEN: list[tuple[int, int]] = []  # (documents, characters) each SpyNGram call's features hold


@dataclass(frozen=True)
class SpyNGram(TopNGramRule):
    """A real costly n-gram rule that records the size of the features it is scored on."""

    cost: ClassVar[str] = "costly"

    @property
    def name(self) -> str:
        return "spy_top_2gram"

    def score(self, f: TextFeatures) -> np.ndarray:
        _SEEN.append((f.n, int(f.char_len.sum())))
        return super().score(f)


@pytest.fixture
def one_chunk(monkeypatch):
    """The whole batch in one row chunk, so the spy sees the batch's features in one call."""
    from curator_stages.text.filters import filter_stage

    monkeypatch.setattr(filter_stage, "MAX_TEXT_BYTES_PER_CHUNK", 10**12)


@pytest.mark.parametrize("mode", ["filter", "both"])
def test_document_failing_word_count_never_reaches_costly_rules(mode, one_chunk):
    rng = random.Random(1)
    huge = "word " * 1_200_000  # 6 MB, 1.2 M words: fails the 100,000-word limit
    texts = [huge, _prose(rng, 300), _prose(rng, 200), _prose(rng, 10)]
    rules = [WordCountRule(), SpyNGram(), *default_quality_rules()[1:]]
    _SEEN.clear()
    kept, drops, _ = _run(rules, mode, True, False, texts, [None] * 4)
    assert drops["gopher_word_count"] == 2  # the huge one and the short one
    assert kept.num_rows == 2
    # the spy (and every costly rule after it) saw only the two surviving documents
    assert _SEEN == [(2, len(texts[1]) + len(texts[2]))]
    _SEEN.clear()
    _run(rules, mode, False, False, texts, [None] * 4)
    assert _SEEN[0][0] == 4 and _SEEN[0][1] > len(huge)  # off: the whole batch, as before


def test_score_mode_scores_every_rule_on_every_document(one_chunk):
    texts, langs = _varied_texts()
    _SEEN.clear()
    scored, _, _ = _run([WordCountRule(), SpyNGram()], "score", True, False, texts, langs)
    assert _SEEN[0][0] == len(texts)
    assert not np.isnan(scored.column("spy_top_2gram").to_numpy()).any()


def test_subset_features_score_like_the_whole_batch():
    texts, langs = _varied_texts()
    full = TextFeatures(pa.array(texts, pa.string()), pa.array(langs, pa.string()))
    full.n_words  # computed word split: the subset reuses it
    rows = np.array([0, 2, 5, 7, 11, 12])
    sub = full.subset(rows)
    fresh = TextFeatures(pa.array([texts[i] for i in rows], pa.string()),
                         pa.array([langs[i] for i in rows], pa.string()))
    for rule in default_quality_rules():
        np.testing.assert_array_equal(rule.score(sub), rule.score(full)[rows], err_msg=rule.name)
        np.testing.assert_array_equal(rule.score(sub), rule.score(fresh), err_msg=rule.name)


@pytest.mark.parametrize("mode,keep_dropped", [("filter", True), ("both", True), ("score", False)])
def test_row_chunks_give_the_same_result_as_one_chunk(monkeypatch, mode, keep_dropped):
    """The batch is scored in row chunks of bounded text (memory); every rule judges a document
    alone, so kept rows, scores, drop reasons and dropped examples match one whole-batch chunk."""
    from curator_stages.text.filters import filter_stage

    texts, langs = [], []
    for seed in range(4):
        t, g = _varied_texts(seed)
        texts += t
        langs += g
    rules = default_quality_rules()
    monkeypatch.setattr(filter_stage, "MAX_TEXT_BYTES_PER_CHUNK", 10**12)
    whole = _run(rules, mode, True, keep_dropped, texts, langs)
    monkeypatch.setattr(filter_stage, "MAX_TEXT_BYTES_PER_CHUNK", 3_000)  # most documents alone
    chunked = _run(rules, mode, True, keep_dropped, texts, langs)
    assert chunked[0].equals(whole[0]) and chunked[1] == whole[1]
    if keep_dropped:
        assert rows_table(chunked[2]).equals(rows_table(whole[2]))
    assert len(whole[1]) >= 4 if mode != "score" else whole[0].num_rows == len(texts)


def test_row_chunks_cover_every_row_once_within_the_budget():
    from curator_stages.text.filters.filter_stage import _row_chunks

    sizes = [5, 0, 70, 3, 3, 3, 200, 1, 1]
    column = pa.chunked_array([pa.array(["x" * s for s in sizes[:4]]),
                               pa.array(["x" * s for s in sizes[4:]] + [None])])
    chunks = _row_chunks(column, 10)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(column)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # contiguous, no overlap
    sizes.append(0)
    for lo, hi in chunks:
        assert sum(sizes[lo:hi]) <= 10 or hi - lo == 1  # a longer document is a chunk alone
    assert _row_chunks(pa.chunked_array([], pa.string()), 10) == [(0, 0)]
