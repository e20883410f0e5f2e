"""FineWeb's extra quality rules: exact scores, FineWeb's defaults, batch = per-document reference,
flags of the text flow."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow as pa
import pytest
import regex  # tiktoken's dependency

from curator_stages.tasks import DocumentBatch
from curator_stages.text.filters import (
    DuplicateLineCharRule,
    HeuristicFilter,
    LinePunctuationRule,
    ListRatioRule,
    ShortLineRule,
    TextFeatures,
    fineweb_quality_rules,
)
from curator_stages.text.filters.fineweb import SENTENCE_TERMINALS

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "shard-00000.jsonl"

MENU = "Home\nAbout us\nProducts\nContact\nWelcome to our shop, where we sell tea from Assam."
FOOTER_LINE = "Copyright 2024 The Example Tea Company. All rights reserved."
BODY = ("Black tea is more oxidised than oolong, yellow, white and green teas, and it is "
        "generally stronger in flavour.")


def _scores(texts, languages=None):
    f = TextFeatures(texts, languages)
    return {r.name: r.score(f) for r in fineweb_quality_rules()}, f


def test_defaults_are_fineweb_published_ones():
    assert fineweb_quality_rules() == [LinePunctuationRule(0.12), ShortLineRule(0.67, 30),
                                       DuplicateLineCharRule(0.01), ListRatioRule(0.3)]


def test_menu_page_fails_on_short_lines_not_on_punctuation():
    s, _ = _scores([MENU])
    assert s["fineweb_line_punct_ratio"][0] == pytest.approx(1 / 5)
    assert s["fineweb_short_line_ratio"][0] == pytest.approx(4 / 5)
    assert LinePunctuationRule().keep(s["fineweb_line_punct_ratio"]).all()
    assert not ShortLineRule().keep(s["fineweb_short_line_ratio"]).any()


def test_sentence_terminals_of_other_scripts_end_lines():
    texts = ["今天天气很好。\n我们去公园散步吧！", "यह एक वाक्य है।\nक्या यह दूसरा है?",
             "هل هذا سؤال؟\nline without an end", "A quote: \"like this.\"\n(and this.)"]
    s, _ = _scores(texts)
    assert s["fineweb_line_punct_ratio"].tolist() == [1.0, 1.0, 0.5, 0.0]


def test_blank_lines_are_ignored_and_lines_are_measured_as_written():
    indented = "   " + "x" * 28  # 31 characters as written, 28 stripped
    s, _ = _scores([f"\n\n{indented}\n\n   \n" + "y" * 30 + "."])
    assert s["fineweb_short_line_ratio"][0] == pytest.approx(0.0)  # 31 and 31 characters
    s, _ = _scores(["x" * 30 + "\n" + "y" * 31])
    assert s["fineweb_short_line_ratio"][0] == pytest.approx(0.5)  # 30 is short (<=)


def test_duplicated_line_characters_over_characters_without_newlines():
    text = f"{BODY}\n{FOOTER_LINE}\n\n{BODY} Second.\n{FOOTER_LINE}\n{FOOTER_LINE}"
    s, _ = _scores([text, BODY])
    expected = 2 * len(FOOTER_LINE) / len(text.replace("\n", ""))
    assert s["fineweb_char_dup_ratio"].tolist() == pytest.approx([expected, 0.0])
    assert not DuplicateLineCharRule().keep(s["fineweb_char_dup_ratio"][:1]).any()


def test_list_ratio_is_newlines_per_word_and_abstains_for_unsegmented_languages():
    shopping = "apples\noranges\npears\nplums"
    s, f = _scores([shopping, BODY])
    assert s["fineweb_list_ratio"].tolist() == pytest.approx([3 / 4, 0.0])
    thai = "ภาษาไทย\nเขียนติดกัน\nไม่มีช่องว่าง"
    _, f = _scores([thai, shopping], languages=["th", "en"])
    assert ListRatioRule().abstains(f).tolist() == [True, False]


def test_empty_document_fails_the_first_rule_like_datatrove():
    out = HeuristicFilter(fineweb_quality_rules()).run(
        [DocumentBatch("t", "d", pa.table({"text": ["", "  \n ", None, MENU]}))])[0]
    assert out.num_items == 0
    assert out.stage_history[-1].dropped_by_reason() == {"fineweb_line_punct_ratio": 3,
                                                         "fineweb_short_line_ratio": 1}


def _reference(text: str) -> str | None:
    """FineWeb's rules, one document at a time, straight from their definitions."""
    terminals = _terminal_chars()
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines or sum(line[-1] in terminals for line in lines) / len(lines) < 0.12:
        return "fineweb_line_punct_ratio"
    if sum(len(line) <= 30 for line in lines) / len(lines) > 0.67:
        return "fineweb_short_line_ratio"
    seen, dup = set(), 0
    for line in lines:
        dup += len(line) if line in seen else 0
        seen.add(line)
    if dup / max(len(text.replace("\n", "")), 1) > 0.01:
        return "fineweb_char_dup_ratio"
    words = len(_CJK_UNIT.sub(" x ", text).split())  # this package's words (see features)
    if words and text.count("\n") / words > 0.3:
        return "fineweb_list_ratio"
    return None


#: One word per Han/Hiragana/Katakana character with the punctuation right after it.
_CJK_UNIT = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\u30FC][^\pL\pN\s]*")


@functools.cache
def _terminal_chars() -> frozenset[str]:
    every = "".join(map(chr, range(0x110000)))
    return frozenset(regex.findall(r"\p{Sentence_Terminal}", every))


def test_sentence_terminals_class_is_unicodes_property():
    listed = _class_chars(SENTENCE_TERMINALS)
    assert listed == _terminal_chars()


def _class_chars(body: str) -> set[str]:
    """The characters of an RE2 class body of ``\\x{HEX}`` and ``\\x{HEX}-\\x{HEX}`` items."""
    import re

    chars = set()
    for lo, hi in re.findall(r"\\x\{([0-9A-F]+)\}(?:-\\x\{([0-9A-F]+)\})?", body):
        chars.update(chr(c) for c in range(int(lo, 16), int(hi or lo, 16) + 1))
    return chars


def test_filter_on_the_sample_equals_the_per_document_reference():
    texts = []
    for line in SAMPLE.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("text"), str):
            texts.append(row["text"])
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    out = HeuristicFilter(fineweb_quality_rules()).run([DocumentBatch("t", "d", table)])[0]
    expected = [_reference(t) for t in texts]
    kept = [str(i) for i, reason in enumerate(expected) if reason is None]
    assert out.data.column("id").to_pylist() == kept
    counts = {r: expected.count(r) for r in set(expected) - {None}}
    assert out.stage_history[-1].dropped_by_reason() == counts
    assert len(counts) >= 2 and len(kept) < len(texts)  # the sample exercises the rules


def test_text_flow_flags_are_off_by_default_and_add_each_rule():
    from flows.text_curation import TextCurationParams, build_stage_groups

    def rule_names(**kwargs):
        groups = build_stage_groups(TextCurationParams(language_id=False, **kwargs))
        quality = next(s for g in groups for s in g if isinstance(s, HeuristicFilter))
        return [r.name for r in quality.rules]

    assert not any(n.startswith("fineweb_") for n in rule_names())
    names = rule_names(fineweb_line_punct=True, fineweb_short_lines=True, fineweb_char_dup=True,
                       fineweb_list_ratio=True)
    assert names[-4:] == ["fineweb_line_punct_ratio", "fineweb_short_line_ratio",
                          "fineweb_char_dup_ratio", "fineweb_list_ratio"]
    assert rule_names(fineweb_char_dup=True)[-1] == "fineweb_char_dup_ratio"
