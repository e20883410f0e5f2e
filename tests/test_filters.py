"""Heuristic filter rules and the HeuristicFilter stage (no Ray needed: stage.run directly)."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pyarrow as pa
import pytest

from curator_stages.stage import StageInputError
from curator_stages.tasks import DocumentBatch
from curator_stages.text.filters import (
    DROP_REASON_COLUMN,
    DROPPED_DOCUMENTS_KEY,
    AlphabeticWordsRule,
    BulletLinesRule,
    CurlyBracketRule,
    DuplicateLineCharFractionRule,
    DuplicateLineFractionRule,
    DuplicateNGramRule,
    DuplicateParagraphCharFractionRule,
    DuplicateParagraphFractionRule,
    EllipsisLinesRule,
    HeuristicFilter,
    LoremIpsumRule,
    MeanWordLengthRule,
    NonAlphaNumericRule,
    SentenceCountRule,
    StopWordsRule,
    SymbolWordRatioRule,
    TextFeatures,
    TopNGramRule,
    UrlRatioRule,
    WordCountRule,
    c4_quality,
    default_quality,
    default_quality_rules,
    gopher_quality,
    gopher_repetition,
)

GOOD = (
    "The old lighthouse stood at the edge of the harbour for more than a century, and the "
    "keepers who lived in it kept careful notes about the weather. Their logbooks describe "
    "winter storms that tore boats from their moorings, summers when fog rolled in every "
    "morning, and the slow arrival of electric lamps.\n\n"
    "Historians have found that these records are surprisingly useful. Because the keepers "
    "measured wind speed and rainfall at fixed hours, their figures can be compared with "
    "modern instruments. A team at the university has started to transcribe the pages, "
    "checking each entry against newspaper reports from the same week.\n\n"
    "Volunteers with patience and good eyesight are welcome to help. The project hopes to "
    "publish a complete dataset next year, together with a short guide that explains how the "
    "original measurements were taken."
)

RUSSIAN = (
    "Старый маяк стоял на краю гавани больше ста лет, и смотрители, которые жили в нём, "
    "аккуратно записывали погоду. Их журналы описывают зимние штормы, срывавшие лодки с "
    "причалов, летние туманы и медленное появление электрических ламп. Историки считают, что "
    "эти записи удивительно полезны: ветер и осадки измеряли в одно и то же время, поэтому "
    "цифры можно сравнить с современными приборами. Ёжик, объём, подъезд — всё это буквы."
)
CHINESE = (
    "古老的灯塔在港口边矗立了一百多年，住在里面的守塔人认真地记录天气。他们的日志描述了把船只从"
    "泊位上卷走的冬季风暴，每天早晨涌来的夏季浓雾，以及电灯的缓慢到来。历史学家发现这些记录非常有用。"
)
GERMAN = (
    "Der alte Leuchtturm stand mehr als hundert Jahre am Rand des Hafens, und die Wärter, die "
    "darin wohnten, führten sorgfältig Buch über das Wetter. Ihre Logbücher beschreiben "
    "Winterstürme, die Boote von ihren Liegeplätzen rissen, und die langsame Ankunft "
    "elektrischer Lampen. Größe, Straße, Übermaß und Äpfel sind ganz normale Wörter."
)


def _scores(rule, texts):
    return rule.score(TextFeatures(pa.array(texts, type=pa.string())))


def _batch(texts, **extra):
    data = {"id": [f"d{i}" for i in range(len(texts))], "text": texts, **extra}
    return DocumentBatch(task_id="t", dataset_name="test", data=pa.table(data))


def _run(stage, texts):
    out = stage.run([_batch(texts)])
    assert len(out) == 1
    return out[0]


# ------------------------------------------------------------------ each rule: pass and fail
FAILING = [
    (WordCountRule(), "Far too short a text to be a page."),
    (MeanWordLengthRule(), " ".join(["a", "b", "c", "d"] * 20)),
    (MeanWordLengthRule(), " ".join(["incomprehensibilities"] * 60)),
    (SymbolWordRatioRule(), GOOD + " #tag #news #follow #like" * 10),
    (BulletLinesRule(), "\n".join(f"• item number {i} of the list" for i in range(10))),
    (EllipsisLinesRule(), "\n".join(f"Read more about topic {i}..." for i in range(10))),
    (AlphabeticWordsRule(), " ".join(str(i) for i in range(100)) + " the and of"),
    (StopWordsRule(), "Cats sit quietly. Dogs bark loudly. Birds sing sweetly. " * 10),
    (DuplicateLineFractionRule(), "Buy now.\nBuy now.\nBuy now.\nA different line here."),
    (DuplicateLineCharFractionRule(), "Subscribe to our newsletter today\n" * 3 + "Thanks."),
    (DuplicateParagraphFractionRule(), "Same paragraph.\n\nSame paragraph.\n\nOther one."),
    (DuplicateParagraphCharFractionRule(), ("Repeat this paragraph now.\n\n" * 3) + "End."),
    (TopNGramRule(n=2, max_fraction=0.20), "click here " * 20 + GOOD),
    (DuplicateNGramRule(n=5, max_fraction=0.15), GOOD + "\n" + GOOD),
    (LoremIpsumRule(), GOOD + " Lorem Ipsum dolor sit amet."),
    (CurlyBracketRule(), GOOD + " function() { return 1; }"),
    (SentenceCountRule(), "Only one sentence here. And a second"),
    (UrlRatioRule(), "See https://example.com/a/very/long/path/to/a/page/index.html now"),
    (NonAlphaNumericRule(), "@@@ ### $$$ %%% ^^^ &&& *** ((( ))) word"),
]


@pytest.mark.parametrize("rule,bad", FAILING, ids=[f"{r.name}-{i}" for i, (r, _) in enumerate(FAILING)])
def test_rule_passes_good_prose_and_fails_bad_text_with_defaults(rule, bad):
    scores = _scores(rule, [GOOD, bad])
    assert rule.keep(scores).tolist() == [True, False], (rule.name, scores)


def test_good_prose_passes_every_default_rule():
    stage = default_quality(mode="both")
    out = _run(stage, [GOOD])
    assert out.num_items == 1, out.to_pandas().T


def test_exact_scores():
    f = TextFeatures(pa.array([" a  bb\tccc\n", "x\nx\ny\n\n", "One. Two! Three? Four", ""]))
    assert WordCountRule().score(f).tolist() == [3, 3, 4, 0]
    assert MeanWordLengthRule().score(f).tolist() == [2.0, 1.0, 4.5, 0.0]
    assert DuplicateLineFractionRule().score(f)[1] == pytest.approx(1 / 3)
    assert DuplicateLineCharFractionRule().score(f)[1] == pytest.approx(1 / 7)
    assert SentenceCountRule().score(f).tolist() == [0, 0, 3, 0]
    f2 = TextFeatures(pa.array(["The cat and the dog. THE end, with that."]))
    assert StopWordsRule().score(f2).tolist() == [6]  # The, and, the, THE, with, that
    f3 = TextFeatures(pa.array(["ab, cd!"]))
    assert NonAlphaNumericRule().score(f3)[0] == pytest.approx(2 / 7)
    assert NonAlphaNumericRule(count_whitespace=True).score(f3)[0] == pytest.approx(3 / 7)
    f4 = TextFeatures(pa.array(["go to https://x.io/abc now"]))
    assert UrlRatioRule().score(f4)[0] == pytest.approx(len("https://x.io/abc") / 26)


def test_duplicate_ngram_counts_only_repeats_without_double_counting_overlaps():
    words = "x y z w v u t s r q p".split()
    text = " ".join(words + words)  # an 11-word run repeated once
    assert DuplicateNGramRule(n=5).score(TextFeatures(pa.array([text])))[0] == pytest.approx(0.5)
    # the top 2-gram occurs twice: 2 occurrences x 2 chars / 22 chars
    assert TopNGramRule(n=2).score(TextFeatures(pa.array([text])))[0] == pytest.approx(4 / 22)


def test_scores_do_not_depend_on_other_documents_in_the_batch():
    """N-grams and lines are scoped per document: a twin document must not count as repetition."""
    rules = default_quality_rules()
    alone = TextFeatures(pa.array([GOOD]))
    paired = TextFeatures(pa.array([GOOD, GOOD, "", GERMAN]))
    for rule in rules:
        assert rule.score(alone)[0] == pytest.approx(rule.score(paired)[0]), rule.name
        assert rule.score(paired)[1] == pytest.approx(rule.score(paired)[0]), rule.name


# ------------------------------------------------------------------ totality
ODD = [
    "", "   ", "\n\n", "\t\r\n \u3000", None, "🙂" * 1000, "\x00\x01\x02\x1b[31m red \x7f",
    "a", "...", "#", "{", "\u200b\u200d\ufeff", "ñ" * 5000, "word " * 20000,
    "\n".join(["- x"] * 500), "x" * 100_000,
]


def test_every_rule_is_total_on_odd_text():
    f = TextFeatures(pa.array(ODD, type=pa.string()))
    for rule in default_quality_rules():
        scores = rule.score(f)
        assert scores.shape == (len(ODD),), rule.name
        assert np.all(np.isfinite(scores)), (rule.name, scores)
        keep = rule.keep(scores)
        assert keep.dtype == bool and keep.shape == (len(ODD),)


def test_every_rule_is_total_on_a_5mb_document():
    big = (GOOD + "\n\n") * (5_000_000 // len(GOOD))
    nospace = "y" * 5_000_000
    f = TextFeatures(pa.array([big, nospace]))
    for rule in default_quality_rules():
        scores = rule.score(f)
        assert np.all(np.isfinite(scores)), rule.name
    assert WordCountRule().score(f)[1] == 1
    assert DuplicateParagraphFractionRule().score(f)[0] > 0.9
    assert DuplicateNGramRule(n=10).score(f)[0] > 0.99


def test_stage_handles_blank_null_and_empty_batches():
    stage = default_quality()
    out = _run(stage, ["", "   ", "\n\n", None, GOOD])
    assert out.data.column("id").to_pylist() == ["d4"]
    empty = stage.run([_batch([])])[0]
    assert empty.num_items == 0


# ------------------------------------------------------------------ Unicode
@pytest.mark.parametrize("text", [RUSSIAN, CHINESE, GERMAN], ids=["ru", "zh", "de"])
def test_non_latin_scripts_are_letters(text):
    for rule in (AlphabeticWordsRule(), NonAlphaNumericRule(),
                 NonAlphaNumericRule(count_whitespace=True, max_ratio=0.25)):
        assert rule.keep(_scores(rule, [text]))[0], (rule, _scores(rule, [text]))
    stage = HeuristicFilter([AlphabeticWordsRule(), NonAlphaNumericRule(), UrlRatioRule(),
                             SentenceCountRule()])
    assert _run(stage, [text]).num_items == 1


def test_unicode_spaces_are_not_symbols():
    f = TextFeatures(pa.array(["a\u00a0b\u3000c\u2009d"]))
    assert NonAlphaNumericRule().score(f)[0] == 0.0


def test_sentence_count_understands_cjk_full_stops():
    assert SentenceCountRule().score(TextFeatures(pa.array([CHINESE])))[0] == 3


# ------------------------------------------------------------------ stage modes and drops
MIXED = [GOOD, "Too short.", GOOD + " { code }", "", RUSSIAN, GOOD + " lorem ipsum"]


def test_mode_score_keeps_every_document_and_adds_columns():
    stage = default_quality(mode="score", score_prefix="q_")
    out = _run(stage, MIXED)
    assert out.num_items == len(MIXED)
    for rule in default_quality_rules():
        col = out.data.column(f"q_{rule.name}")
        assert col.type == pa.float64() and len(col) == len(MIXED)
    assert out._stage_perf[-1].dropped_by_reason() == {}
    assert out.data.column("q_gopher_word_count")[3].as_py() == 0


def test_mode_filter_drops_without_columns_and_records_first_failing_rule():
    stage = HeuristicFilter(
        [WordCountRule(), CurlyBracketRule(), LoremIpsumRule(), StopWordsRule()], mode="filter")
    out = _run(stage, MIXED)
    assert out.data.column("id").to_pylist() == ["d0"]
    assert out.data.column_names == ["id", "text"]
    drops = out._stage_perf[-1].dropped_by_reason()
    # "Too short." and "" fail word count first; RUSSIAN passes word count and fails stop words
    assert drops == {"gopher_word_count": 2, "c4_curly_bracket": 1, "c4_lorem_ipsum": 1,
                     "gopher_stop_words": 1}
    assert sum(drops.values()) == len(MIXED) - out.num_items
    stats = out._stage_perf[-1]
    assert (stats.num_items_in, stats.num_items_out) == (6, 1)


def test_mode_both_drops_and_keeps_scores():
    out = _run(gopher_quality(mode="both"), MIXED)
    # the three GOOD variants pass (C4 rules are not in gopher_quality); Russian has no English
    # stop words, which is why the stop-word rule is English-only
    assert out.data.column("id").to_pylist() == ["d0", "d2", "d5"]
    assert "gopher_stop_words" in out.data.column_names
    assert out._stage_perf[-1].dropped_by_reason() == {"gopher_word_count": 2,
                                                       "gopher_stop_words": 1}


def test_all_dropped_batch_is_empty_but_accounted():
    out = _run(gopher_quality(), ["", "x", "Too short."])
    assert out.num_items == 0
    assert out._stage_perf[-1].dropped_by_reason() == {"gopher_word_count": 3}


def test_keep_dropped_puts_rows_with_reason_in_metadata_and_accumulates():
    first = HeuristicFilter([WordCountRule()], keep_dropped=True)
    second = HeuristicFilter([CurlyBracketRule()], keep_dropped=True)
    out = second.run(first.run([_batch(MIXED)]))[0]
    dropped = out.metadata[DROPPED_DOCUMENTS_KEY]
    json.dumps(dropped)  # JSON rows: checkpoints store metadata as JSON, never pickled
    assert [r["id"] for r in dropped] == ["d1", "d3", "d2"]
    assert [r[DROP_REASON_COLUMN] for r in dropped] == [
        "gopher_word_count", "gopher_word_count", "c4_curly_bracket"]
    assert out.num_items + len(dropped) == len(MIXED)


def test_keep_dropped_count_keeps_at_most_n_examples_per_rule():
    texts = ["", "x", "Too short.", "tiny {", "{ also short"]
    stage = HeuristicFilter([WordCountRule(), CurlyBracketRule()], keep_dropped=2)
    out = stage.run([_batch(texts)])[0]
    dropped = out.metadata[DROPPED_DOCUMENTS_KEY]
    reasons = [r[DROP_REASON_COLUMN] for r in dropped]
    # every text fails word count first: 5 dropped, only 2 kept as examples
    assert reasons == ["gopher_word_count", "gopher_word_count"]
    assert out._stage_perf[-1].dropped_by_reason() == {"gopher_word_count": 5}
    with pytest.raises(ValueError, match="keep_dropped"):
        HeuristicFilter([WordCountRule()], keep_dropped=-1)


def test_default_off_keep_dropped():
    out = _run(c4_quality(), MIXED)
    assert DROPPED_DOCUMENTS_KEY not in out.metadata


# ------------------------------------------------------------------ identity and validation
def test_identity_changes_with_a_threshold_and_is_stable_otherwise():
    base = gopher_quality().identity_hash()
    assert gopher_quality().identity_hash() == base
    rules = [WordCountRule(min_words=10), MeanWordLengthRule(), SymbolWordRatioRule(),
             BulletLinesRule(), EllipsisLinesRule(), AlphabeticWordsRule(), StopWordsRule()]
    assert HeuristicFilter(rules, name="gopher_quality").identity_hash() != base
    assert gopher_quality(mode="score").identity_hash() != base
    assert (HeuristicFilter([TopNGramRule(n=2, max_fraction=0.2)]).identity_hash()
            != HeuristicFilter([TopNGramRule(n=2, max_fraction=0.21)]).identity_hash())


def test_stage_is_picklable_for_ray():
    stage = default_quality(mode="both")
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.identity_hash() == stage.identity_hash()
    assert _run(clone, [GOOD]).num_items == 1


def test_validation_errors_name_the_problem():
    with pytest.raises(ValueError, match="unique"):
        HeuristicFilter([WordCountRule(), WordCountRule(min_words=3)])
    with pytest.raises(ValueError, match="mode"):
        HeuristicFilter([WordCountRule()], mode="drop")
    with pytest.raises(ValueError, match="empty"):
        HeuristicFilter([])
    with pytest.raises(ValueError, match=">= 2"):
        TopNGramRule(n=1)
    with pytest.raises(StageInputError, match="content"):
        HeuristicFilter([WordCountRule()], text_field="content").run([_batch([GOOD])])


def test_text_field_and_repetition_preset():
    table = pa.table({"body": [GOOD, "spam spam spam spam spam spam " * 20]})
    stage = gopher_repetition(text_field="body")
    out = stage.run([DocumentBatch(task_id="t", dataset_name="d", data=table)])[0]
    assert out.data.column("body").to_pylist() == [GOOD]
    assert math.isclose(sum(out._stage_perf[-1].dropped_by_reason().values()), 1)


def test_the_flow_can_switch_every_quality_rule_off():
    """Before: the bullet-lines and ellipsis-lines rules had no parameter in the flow, so with
    every other rule off the quality filter still dropped such documents."""
    from flows.text_curation import TextCurationParams, build_stage_groups

    off = dict(min_words=0, max_words=10_000_000, min_mean_word_length=0,
               max_mean_word_length=1000, max_symbol_word_ratio=10, min_alpha_word_ratio=0,
               min_stop_words=0, repetition_filters=False, c4_filters=False, language_id=False,
               exact_dedup=False, fuzzy_dedup=False)
    texts = [text for rule, text in FAILING
             if isinstance(rule, (BulletLinesRule, EllipsisLinesRule))]
    task = DocumentBatch(task_id="t", dataset_name="d",
                         data=pa.table({"text": texts, "id": [str(i) for i in range(len(texts))]}))

    def kept(**params) -> int:
        groups = build_stage_groups(TextCurationParams(**off, **params))
        quality = next(s for g in groups for s in g if s.stage_name == "quality_filter")
        return quality.run([task])[0].num_items

    assert len(texts) == 2 and kept() == 0  # the Gopher defaults drop both
    assert kept(max_bullet_lines_ratio=1.0, max_ellipsis_lines_ratio=1.0) == 2
    assert kept(max_bullet_lines_ratio=1.0) == 1  # the ellipsis rule alone still drops its one
