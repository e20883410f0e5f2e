"""Text modifiers: exact outputs, never dropping documents, metrics, identity."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curator_stages.tasks import DocumentBatch
from curator_stages.text.modifiers import (
    DOCUMENTS_MODIFIED,
    C4BoilerplateLineRemover,
    TextNormalizer,
    UnicodeRepair,
    UrlRemover,
    WhitespaceNormalizer,
)


def _run(stage, texts, field="text"):
    table = pa.table({"id": [str(i) for i in range(len(texts))],
                      field: pa.array(texts, type=pa.string())})
    out = stage.run([DocumentBatch(task_id="t", dataset_name="d", data=table)])
    assert len(out) == 1 and out[0].num_items == len(texts)  # modifiers never drop
    assert out[0].data.column("id").to_pylist() == [str(i) for i in range(len(texts))]
    return out[0].data.column(field).to_pylist(), out[0]._stage_perf[-1].custom_metrics


def test_whitespace_normalizer_exact_output():
    texts = [
        "  Hello   world \r\nNext\t\tline  \n\n\n\nPara\u00a0\u00a0end\u3000x\rX  ",
        "e\u0301te\u0301",  # decomposed accents -> NFC
        "already clean\n\ntext",
        None,
        "",
        " \n\t ",
    ]
    out, metrics = _run(WhitespaceNormalizer(), texts)
    assert out == ["Hello world\nNext line\n\nPara end x\nX", "\u00e9t\u00e9",
                   "already clean\n\ntext", None, "", ""]
    assert metrics[DOCUMENTS_MODIFIED] == 3


def test_url_remover_exact_output_and_count():
    out, metrics = _run(UrlRemover(), [
        "See https://example.com/x?y=1 and www.test.org now.", "no urls here", None,
        "ftp://files.example.net/a.zip",
    ])
    assert out == ["See  and  now.", "no urls here", None, ""]
    assert metrics["urls_removed"] == 3 and metrics[DOCUMENTS_MODIFIED] == 2
    out, _ = _run(UrlRemover(replacement="<URL>"), ["go to http://a.b/c."])
    assert out == ["go to <URL>"]  # a trailing period is part of the URL token


def test_unicode_repair_matches_ftfy_and_skips_clean_ascii():
    import ftfy

    texts = ["The Mona Lisa doesnâ€™t have eyebrows.", "plain ascii text", "AT&amp;T",
             None, "\ufb01ne \u201cquotes\u201d", "line\r\nbreak", "bell\x07char", "é"]
    out, metrics = _run(UnicodeRepair(), texts)
    assert out == [None if t is None else ftfy.fix_text(t) for t in texts]
    assert out[0] == "The Mona Lisa doesn't have eyebrows."
    assert metrics[DOCUMENTS_MODIFIED] == 5  # mojibake, entity, ligature/quotes, CRLF, bell


def test_unicode_repair_fast_path_is_exact_on_ascii():
    import ftfy

    ascii_texts = ["Hello, world! (1 < 2) and 3 > 2; x = {'a': 1}.", "tab\there", "<b>bold</b>",
                   "50% off -- now $5 #sale @user ~tilde `code` ^caret |pipe| \\back"]
    out, metrics = _run(UnicodeRepair(), ascii_texts)
    assert out == [ftfy.fix_text(t) for t in ascii_texts] == ascii_texts
    assert metrics[DOCUMENTS_MODIFIED] == 0


C4_DOC = """Home | About | Contact
This site uses cookies to improve your experience, please accept.
The harbour records describe storms and fog in detail.[1]
Please enable JavaScript to view the comments powered by Disqus.
Short line.
A line without terminal punctuation at the end
Read more about the history of the lighthouse here...
The keepers wrote "every storm was logged with care."
"""


def test_c4_line_remover_exact_output():
    out, metrics = _run(C4BoilerplateLineRemover(), [C4_DOC, "", None, "Nothing to keep"])
    assert out == [
        "The harbour records describe storms and fog in detail.\n"
        'The keepers wrote "every storm was logged with care."',
        "", None, "",  # an emptied document stays: filters decide
    ]
    assert metrics["lines_removed"] == 7
    assert metrics[DOCUMENTS_MODIFIED] == 2


def test_c4_line_remover_options():
    doc = "Tiny line here.\n\nUse of cookies is explained in this long line.\nAn ok line of words."
    out, _ = _run(C4BoilerplateLineRemover(min_words_per_line=3, remove_policy=False,
                                           keep_blank_lines=True), [doc])
    assert out == ["Tiny line here.\n\nUse of cookies is explained in this long line.\n"
                   "An ok line of words."]
    out, _ = _run(C4BoilerplateLineRemover(), ["word " * 5 + "x" * 1001 + " end."])
    assert out == [""]
    out, _ = _run(C4BoilerplateLineRemover(require_terminal_punctuation=False,
                                           min_words_per_line=0), ["a b\nc"])
    assert out == ["a b\nc"]


def test_text_normalizer_equals_the_chain_of_its_parts():
    texts = ["doesnâ€™t  see https://x.io/a   here\n\n\n\nok ", "  clean  ", None, ""]
    fused, metrics = _run(TextNormalizer(remove_urls=True), texts)
    chained = texts
    for stage in (UnicodeRepair(), UrlRemover(), WhitespaceNormalizer()):
        chained, _ = _run(stage, chained)
    assert fused == chained == ["doesn't see here\n\nok", "clean", None, ""]
    assert metrics[DOCUMENTS_MODIFIED] == 2 and metrics["urls_removed"] == 1


def test_modifiers_are_total_and_keep_other_columns():
    odd = ["", "   ", "\n\n", None, "🙂\x00\x1b[0m", "x" * 5_000_000]
    for stage in (WhitespaceNormalizer(), UrlRemover(), UnicodeRepair(),
                  C4BoilerplateLineRemover(), TextNormalizer(remove_urls=True)):
        out, _ = _run(stage, odd)
        assert len(out) == len(odd) and out[3] is None


def test_empty_batch_and_text_field():
    stage = WhitespaceNormalizer(text_field="body")
    out = stage.run([DocumentBatch(task_id="t", dataset_name="d", data=pa.table({"body": []}))])
    assert out[0].num_items == 0
    out, _ = _run(stage, ["a  b"], field="body")
    assert out == ["a b"]


def test_identity_changes_with_parameters():
    assert (C4BoilerplateLineRemover().identity_hash()
            == C4BoilerplateLineRemover().identity_hash())
    assert (C4BoilerplateLineRemover(min_words_per_line=3).identity_hash()
            != C4BoilerplateLineRemover().identity_hash())
    assert TextNormalizer(remove_urls=True).identity_hash() != TextNormalizer().identity_hash()


def test_missing_text_field_is_a_clear_error():
    from curator_stages.stage import StageInputError

    with pytest.raises(StageInputError, match="content"):
        _run(UrlRemover(text_field="content"), ["x"])
