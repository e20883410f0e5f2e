"""Language-aware quality rules: per-language stop words, CJK word units, abstaining rules,
and language id feeding the filter (stage.run directly; no Ray needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curator_stages.tasks import DocumentBatch
from curator_stages.text.filters import (
    GOPHER_STOP_WORDS,
    HeuristicFilter,
    MeanWordLengthRule,
    StopWordsRule,
    SymbolWordRatioRule,
    TextFeatures,
    WordCountRule,
    default_quality_rules,
    gopher_quality_rules,
)
from curator_stages.text.filters.rules import STOP_WORDS, UNSEGMENTED_LANGUAGES

# Prose written for these tests: 50+ words, 3+ sentences, ordinary function words.
PROSE = {
    "en": (
        "The village library opened again last spring after a long repair of the roof. "
        "Volunteers sorted the old books, and the council paid for new shelves and lamps. "
        "Children come after school to read, and their parents borrow novels and maps of the "
        "region. On Saturdays a retired teacher explains how to use the catalogue, and she "
        "says that the visitors are more curious than ever before."
    ),
    "de": (
        "Die kleine Bibliothek im Dorf wurde im letzten Frühling nach einer langen Reparatur "
        "des Daches wieder geöffnet. Freiwillige haben die alten Bücher sortiert, und die "
        "Gemeinde hat neue Regale und Lampen bezahlt. Nach der Schule kommen die Kinder zum "
        "Lesen, und ihre Eltern leihen sich Romane und Karten der Region aus. Am Samstag "
        "erklärt eine pensionierte Lehrerin, wie man den Katalog benutzt, und sie sagt, dass "
        "die Besucher neugieriger sind als je zuvor."
    ),
    "fr": (
        "La petite bibliothèque du village a rouvert au printemps dernier après une longue "
        "réparation du toit. Des bénévoles ont trié les vieux livres, et la commune a payé de "
        "nouvelles étagères et des lampes. Les enfants viennent lire après l'école, et leurs "
        "parents empruntent des romans et des cartes de la région. Le samedi, une institutrice "
        "à la retraite explique comment utiliser le catalogue, et elle dit que les visiteurs "
        "sont plus curieux que jamais."
    ),
    "es": (
        "La pequeña biblioteca del pueblo volvió a abrir la primavera pasada después de una "
        "larga reparación del tejado. Los voluntarios ordenaron los libros viejos, y el "
        "ayuntamiento pagó estantes nuevos y lámparas. Los niños vienen a leer después de la "
        "escuela, y sus padres se llevan novelas y mapas de la región. Los sábados una maestra "
        "jubilada explica cómo usar el catálogo, y dice que los visitantes son más curiosos que "
        "nunca."
    ),
    "it": (
        "La piccola biblioteca del paese ha riaperto la scorsa primavera dopo una lunga "
        "riparazione del tetto. I volontari hanno ordinato i vecchi libri, e il comune ha "
        "pagato nuovi scaffali e lampade. I bambini vengono a leggere dopo la scuola, e i loro "
        "genitori prendono in prestito romanzi e carte della regione. Il sabato una maestra in "
        "pensione spiega come usare il catalogo, e dice che i visitatori sono più curiosi che "
        "mai."
    ),
    "pt": (
        "A pequena biblioteca da aldeia reabriu na primavera passada depois de uma longa "
        "reparação do telhado. Os voluntários organizaram os livros antigos, e a câmara pagou "
        "novas estantes e candeeiros. As crianças vêm ler depois da escola, e os pais levam "
        "romances e mapas da região. Aos sábados uma professora reformada explica como usar o "
        "catálogo, e diz que os visitantes estão mais curiosos do que nunca."
    ),
    "nl": (
        "De kleine bibliotheek in het dorp is afgelopen voorjaar weer opengegaan na een lange "
        "reparatie van het dak. Vrijwilligers hebben de oude boeken gesorteerd, en de gemeente "
        "heeft nieuwe planken en lampen betaald. Na school komen de kinderen lezen, en hun "
        "ouders lenen romans en kaarten van de streek. Op zaterdag legt een gepensioneerde "
        "lerares uit hoe je de catalogus gebruikt, en zij zegt dat de bezoekers nieuwsgieriger "
        "zijn dan ooit."
    ),
    "ru": (
        "Маленькая библиотека в деревне снова открылась прошлой весной после долгого ремонта "
        "крыши. Волонтёры разобрали старые книги, и совет оплатил новые полки и лампы. Дети "
        "приходят читать после школы, а их родители берут романы и карты края. По субботам "
        "учительница на пенсии объясняет, как пользоваться каталогом, и говорит, что "
        "посетители стали любопытнее, чем когда-либо. Это место снова стало центром жизни в "
        "деревне, и все этому рады."
    ),
    "zh": (
        "村里的小图书馆在去年春天修好屋顶以后重新开放了。志愿者们整理了旧书，村委会也出钱买了新的书架和台灯。"
        "孩子们放学以后常常来这里看书，他们的父母也会借一些小说和本地的地图。每个星期六，一位退休的老师会教大家"
        "怎么使用目录，她说现在来图书馆的人比以前更有好奇心了。"
    ),
    "ja": (
        "村の小さな図書館は、去年の春に屋根の修理が終わってから再び開館しました。ボランティアが古い本を整理し、"
        "村役場は新しい本棚とランプを買いました。子どもたちは放課後に本を読みに来て、親たちは小説や地図を借りて"
        "いきます。毎週土曜日には、退職した先生が目録の使い方を説明しています。"
    ),
}
NON_ENGLISH = [lang for lang in PROSE if lang != "en"]


def _batch(texts, languages=None):
    data = {"id": [f"d{i:03d}" for i in range(len(texts))], "text": texts}
    if languages is not None:
        data["language"] = languages
    return DocumentBatch(task_id="t", dataset_name="test", data=pa.table(data))


def _kept(stage, texts, languages=None):
    return stage.run([_batch(texts, languages)])[0].data.column("id").to_pylist()


def _drops(task):
    return {k: v for k, v in task._stage_perf[-1].custom_metrics.items()
            if k.startswith("dropped.") and v}


# ------------------------------------------------------------------ prose in its language
@pytest.mark.parametrize("lang", list(PROSE))
def test_prose_passes_every_default_rule_in_its_language(lang):
    stage = HeuristicFilter(default_quality_rules(), mode="both")
    out = stage.run([_batch([PROSE[lang]], [lang])])[0]
    assert out.num_items == 1, {c: out.data.column(c)[0].as_py() for c in stage.score_columns} \
        if out.num_items else _drops(out)


@pytest.mark.parametrize("lang", NON_ENGLISH)
def test_without_a_language_column_stop_words_stay_english(lang):
    """No language column: today's (Gopher) behaviour, so non-English prose fails stop words."""
    stage = HeuristicFilter([StopWordsRule()])
    out = stage.run([_batch([PROSE[lang], PROSE["en"]])])[0]
    assert out.data.column("id").to_pylist() == ["d001"]
    assert _drops(out) == {"dropped.gopher_stop_words": 1}


def test_english_scores_are_the_same_with_and_without_the_column():
    texts = [PROSE["en"], "Cats sit quietly. Dogs bark loudly.", "the the of"]
    rule = StopWordsRule()
    plain = rule.score(TextFeatures(texts))
    tagged = rule.score(TextFeatures(texts, languages=["en"] * 3))
    assert plain.tolist() == tagged.tolist() and plain[2] == 3
    assert dict(rule.stop_words_by_language)["en"] == GOPHER_STOP_WORDS


def test_stop_word_lists_cover_the_required_languages():
    for lang in ("en", "de", "fr", "es", "ru", "it", "pt", "nl"):
        words = STOP_WORDS[lang]
        assert 8 <= len(words) <= 20 and len(set(words)) == len(words), lang
        assert all(w == w.lower() and w.strip() == w for w in words), lang


def test_word_salad_without_function_words_fails_in_its_language():
    salad_de = " ".join(["Haus Baum Wasser Straße Himmel Brücke Garten Fenster Stadt Wald"] * 6)
    salad_ru = " ".join(["дом дерево вода улица небо мост сад окно город лес"] * 6)
    stage = HeuristicFilter([StopWordsRule()])
    out = stage.run([_batch([salad_de, PROSE["de"], salad_ru, PROSE["ru"]],
                            ["de", "de", "ru", "ru"])])[0]
    assert out.data.column("id").to_pylist() == ["d001", "d003"]
    assert _drops(out) == {"dropped.gopher_stop_words": 2}


def test_a_language_without_a_list_abstains_and_the_score_is_still_shown():
    swahili = ("Maktaba ndogo ya kijiji ilifunguliwa tena mwaka jana baada ya ukarabati. "
               "Watoto huja kusoma baada ya shule. Wazazi wao hukopa vitabu na ramani.")
    stage = HeuristicFilter([StopWordsRule()], mode="both")
    out = stage.run([_batch([swahili, swahili, swahili], ["sw", "unknown", None])])[0]
    assert out.num_items == 3  # no list for sw, "unknown" or a null language: pass
    assert out.data.column("gopher_stop_words").to_pylist() == [0.0, 0.0, 0.0]
    rule = StopWordsRule()
    f = TextFeatures([swahili] * 3, languages=["sw", "unknown", None])
    assert rule.abstains(f).tolist() == [True, True, True]
    assert rule.keep(rule.score(f)).tolist() == [False] * 3  # the raw verdict, for analysis


def test_language_codes_are_normalised():
    f = TextFeatures(["a", "b", "c", "d"], languages=["zh-Hans", "PT_br", " DE ", ""])
    assert f.languages.tolist() == ["zh", "pt", "de", ""]
    dict_col = pa.array(["de", "de", None, "fr"]).dictionary_encode()
    assert TextFeatures(["a"] * 4, languages=dict_col).languages.tolist() == ["de", "de", "", "fr"]
    with pytest.raises(ValueError, match="one language code"):
        TextFeatures(["a", "b"], languages=["en"])


def test_custom_lists_change_identity_and_accept_a_mapping():
    custom = StopWordsRule(stop_words_by_language={"EN": ["the", "a"], "sw": ["ya", "na"]})
    assert custom.stop_words_by_language == (("en", ("the", "a")), ("sw", ("ya", "na")))
    assert custom.languages == {"en", "sw"}
    assert hash(custom) != hash(StopWordsRule())
    a = HeuristicFilter([StopWordsRule()])
    b = HeuristicFilter([custom])
    assert a.identity_hash() != b.identity_hash()
    with pytest.raises(TypeError, match="stop_words_by_language"):
        StopWordsRule(stop_words_by_language={"en": 3})


# ------------------------------------------------------------------ CJK: characters are words
def test_cjk_characters_are_word_units():
    f = TextFeatures(["我们，学生。用Python编程2024年", "plain english words", "日本語のテキスト"])
    assert f.flat_words.to_pylist()[:10] == ["我", "们，", "学", "生。", "用", "Python", "编",
                                             "程", "2024", "年"]
    assert f.n_words.tolist() == [10, 3, 8]
    assert f.n_cjk_words.tolist() == [8, 0, 8]
    assert f.has_cjk.tolist() == [True, False, True]


def test_chinese_prose_passes_without_relying_on_a_language_column():
    """Word count and mean word length judge Chinese by script; only stop words need zh."""
    rules = [r for r in default_quality_rules() if r.name != "gopher_stop_words"]
    stage = HeuristicFilter(rules)
    assert _kept(stage, [PROSE["zh"], PROSE["ja"]]) == ["d000", "d001"]
    f = TextFeatures([PROSE["zh"]])
    assert WordCountRule().score(f)[0] >= 100  # ~110 characters: counted, not 1 "word"
    assert MeanWordLengthRule().abstains(f).tolist() == [True]


def test_mixed_latin_and_cjk_mean_word_length_uses_the_latin_words():
    text = "Python 与 JavaScript 都是 programming languages"
    f = TextFeatures([text])
    assert MeanWordLengthRule().abstains(f).tolist() == [False]  # 4 CJK units of 8 words
    latin = [len(w) for w in ("Python", "JavaScript", "programming", "languages")]
    assert MeanWordLengthRule().score(f)[0] == pytest.approx(sum(latin) / 4)


CHINESE_JUNK = {
    "symbols": " ".join(["★★★ 经济 $$$ ### 社会 @@@ ||| →→→ ■■■ %%%"] * 12),
    "short": "经济发展。",
    "repeated_lines": "\n".join(["我们今天去学校上课，老师讲了历史。"] * 12),
    "bullets": "\n".join(f"* 我们的第{i}个项目很重要。" for i in range(15)),
    "numbers": "\n".join(" ".join(str(10_000 + 37 * i + j) for j in range(10))
                         for i in range(8)),
    "ellipsis": "\n".join(f"他们说这个问题很重要……第{i}段" + "……" for i in range(10)),
    "urls": "\n".join(f"https://example.cn/新闻/{i}?id={i * 7919}" for i in range(20)),
}


@pytest.mark.parametrize("kind", list(CHINESE_JUNK))
def test_chinese_junk_is_still_dropped(kind):
    stage = HeuristicFilter(default_quality_rules())
    for languages in (["zh", "zh"], None):
        out = stage.run([_batch([CHINESE_JUNK[kind], PROSE["zh"]], languages)])[0]
        if languages is None:  # English stop words would drop the prose too: skip that check
            assert "d000" not in out.data.column("id").to_pylist()
            continue
        assert out.data.column("id").to_pylist() == ["d001"], (kind, _drops(out))


def test_chinese_stop_words_are_characters():
    stop = StopWordsRule()
    f = TextFeatures([PROSE["zh"], "经济市场城市。能源医院社会。天气环境学校。"] , languages=["zh", "zh"])
    scores = stop.score(f)
    assert scores[0] >= 5 and scores[1] == 0
    assert stop.keep(scores).tolist() == [True, False]


# ------------------------------------------------------------------ unsegmented scripts (Thai)
THAI = ("ห้องสมุดเล็กๆ ในหมู่บ้านเปิดอีกครั้งเมื่อฤดูใบไม้ผลิที่แล้ว หลังจากซ่อมหลังคาเสร็จ "
        "อาสาสมัครช่วยกันจัดหนังสือเก่า และเทศบาลซื้อชั้นหนังสือใหม่ "
        "เด็กๆ มาอ่านหนังสือหลังเลิกเรียนทุกวัน")


def test_word_rules_abstain_for_unsegmented_languages_when_the_language_is_known():
    assert "th" in UNSEGMENTED_LANGUAGES
    word_rules = [WordCountRule(), MeanWordLengthRule(), SymbolWordRatioRule()]
    unknown = TextFeatures([THAI])
    tagged = TextFeatures([THAI], languages=["th"])
    assert not WordCountRule().keep(WordCountRule().score(unknown))[0]  # ~10 "words"
    for rule in word_rules:
        assert rule.abstains(tagged).tolist() == [True], rule.name
    stage = HeuristicFilter(gopher_quality_rules())
    assert _kept(stage, [THAI], ["th"]) == ["d000"]
    assert _kept(stage, [THAI]) == []


def test_script_agnostic_rules_still_judge_unsegmented_languages():
    spam = "\n".join([THAI.split()[0]] * 20)  # one line repeated: repetition rules
    stage = HeuristicFilter(default_quality_rules())
    out = stage.run([_batch([spam, THAI + " lorem ipsum dolor."], ["th", "th"])])[0]
    assert out.num_items == 0
    assert set(_drops(out)) <= {"dropped.gopher_dup_line_frac", "dropped.c4_lorem_ipsum",
                                "dropped.gopher_dup_para_frac", "dropped.c4_sentence_count"}


# ------------------------------------------------------------------ totality and the stage
ODD = ["", "   ", None, "🙂" * 500, "。。。", "中" * 20000, "\u3000\u3000", "ー" * 10, "a 中 b",
       "x" * 10_000, "。\n。\n", "ไทย" * 300]


def test_every_rule_is_total_with_languages_and_cjk():
    langs = ["zh", None, "en", "unknown", "ja", "zh", "", "ja", "zh-Hant", "th", "xx", "th"]
    for languages in (None, langs):
        f = TextFeatures(pa.array(ODD, type=pa.string()), languages=languages)
        for rule in default_quality_rules():
            s = rule.score(f)
            assert s.shape == (len(ODD),) and np.all(np.isfinite(s)), rule.name
            a = rule.abstains(f)
            assert a is None or (a.dtype == bool and a.shape == (len(ODD),)), rule.name


def test_stage_rejects_a_non_string_language_column_naming_stage_and_field():
    task = DocumentBatch(task_id="t", dataset_name="x", data=pa.table(
        {"id": ["a"], "text": [PROSE["en"]], "language": [3]}))
    with pytest.raises(TypeError, match="'quality'.*'language'.*language_field"):
        HeuristicFilter([StopWordsRule()], name="quality").run([task])
    # language_field="" ignores the column: English rules for every document
    assert HeuristicFilter([StopWordsRule()], language_field="").run([task])[0].num_items == 1


def test_language_identifier_then_filter_keeps_prose_of_every_language():
    """End to end in process: the real fastText model labels, the filter judges by language."""
    from curator_stages.text.language import LanguageIdentifier

    junk = [CHINESE_JUNK["symbols"], CHINESE_JUNK["short"],
            " ".join(["Haus Baum Wasser Straße Himmel Brücke Garten Fenster Stadt Wald"] * 6)]
    texts = [*PROSE.values(), *junk]
    lid = LanguageIdentifier(mode="annotate")
    lid.setup()
    labelled = lid.run([_batch(texts)])
    assert labelled[0].data.column("language").to_pylist()[:len(PROSE)] == list(PROSE)
    out = HeuristicFilter(default_quality_rules()).run(labelled)[0]
    assert out.data.column("id").to_pylist() == [f"d{i:03d}" for i in range(len(PROSE))]
    assert sum(_drops(out).values()) == len(junk)
