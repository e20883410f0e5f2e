"""The commonest first-hour mistakes fail in one line, before any work, and leave a previous
output alone: an unknown language code, the text under another key, a Parquet file, a plain
JSON file, a format no reader takes; a run that keeps nothing fails naming the reason and the
flag that changes it. Everything here runs without Ray or Prefect (the quick tier)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curator_stages.backends.local import LocalExecutor
from curator_stages.io import JsonlReader
from curator_stages.io.input_check import InputFormatError, missing_text_field, sniff
from curator_stages.accounting import NothingKeptError, StageCounts, summarise
from curator_stages.text.language import LanguageIdentifier, check_language_codes

from flows import text_curation as flow


def _cli(argv):
    """``python flows/text_curation.py ARGV``; its exit code."""
    from curator_stages.orchestration.flow_cli import flow_main

    return flow_main(flow.SPEC, flow.text_curation, argv)


@pytest.fixture()
def previous_output(tmp_path):
    """An output directory holding a good run's files: a refused run must not touch them."""
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "part-0.parquet").write_bytes(b"previous good output")
    (out / "run_summary.json").write_text('{"documents_written": 1}')
    return out


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _cli_refusal(capsys, args: list[str], out: Path, work: Path) -> str:
    """Run the flow's CLI in this process; it must exit 2 with one line on stderr."""
    before = _snapshot(out)
    with pytest.raises(SystemExit) as exit_:
        _cli([*args, "--output", str(out), "--work-dir", str(work)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, no usage text
    assert _snapshot(out) == before and not work.exists()
    return err


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ----------------------------------------------------------------------------- 1. languages
def test_a_language_name_is_refused_naming_the_code(tmp_path, capsys, previous_output):
    err = _cli_refusal(capsys, ["--languages", "english"], previous_output, tmp_path / "w")
    assert "--languages" in err and "'english'" in err and "did you mean 'en'" in err
    with pytest.raises(ValueError, match="'German'.*did you mean 'de'"):
        check_language_codes(["en", "German"])
    with pytest.raises(ValueError, match="'pt-BR'.*did you mean 'pt'"):
        LanguageIdentifier(languages=["pt-BR"])
    check_language_codes(["en", "de", "zh", "als"])  # codes of the model pass
    LanguageIdentifier(languages=["english"], mode="annotate")  # annotate keeps everything


# ----------------------------------------------------------------------------- 2. text field
def test_text_under_another_key_is_refused_naming_the_fields(tmp_path, capsys,
                                                             previous_output):
    corpus = tmp_path / "corpus"
    _jsonl(corpus / "a.jsonl", [{"id": i, "content": "a longer body of text " * 3,
                                 "url": "http://x"} for i in range(20)])
    err = _cli_refusal(capsys, ["--input", str(corpus)], previous_output, tmp_path / "w")
    assert "--text-field" in err and "content, id, url" in err
    assert "use --text-field content" in err
    params = flow.TextCurationParams(input=str(corpus), text_field="content",
                                     output=str(tmp_path / "o"), work_dir=str(tmp_path / "w"))
    assert params.input_format == "jsonl"


def test_the_reader_stops_when_the_first_file_has_no_text_field(tmp_path):
    """A library run (or an object-store input, which validation does not read) stops within
    the first file instead of quarantining the whole input."""
    corpus = tmp_path / "corpus"
    _jsonl(corpus / "a.jsonl", [{"body": f"text {i}"} for i in range(5)])
    _jsonl(corpus / "b.jsonl", [{"text": "fine"}])
    with pytest.raises(ValueError, match="first input file.*has a field 'text'.*--text-field body"):
        LocalExecutor().execute(JsonlReader(str(corpus)).decompose())
    # A later file without the field is quarantined as before: only the first one decides.
    _jsonl(corpus / "a.jsonl", [{"text": "fine"}])
    _jsonl(corpus / "b.jsonl", [{"body": "x"}])
    out = LocalExecutor().execute(JsonlReader(str(corpus)).decompose())
    assert sum(t.num_items for t in out) == 1


def test_missing_text_field_judges_records_not_lines(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"title": "t", "body": "a long body"}, {"text": "x"}])
    assert missing_text_field(str(path), "jsonl", "text") is None  # one record has it
    path.write_text("not json\n")
    assert missing_text_field(str(path), "jsonl", "text") is None  # nothing to judge by


# ----------------------------------------------------------------------------- 3/4. Parquet
def _parquet(path: Path, n: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": [f"document number {i}" for i in range(n)]}), path)
    return path


@pytest.mark.parametrize("as_directory", [False, True])
def test_parquet_input_is_read_by_the_parquet_reader(tmp_path, as_directory):
    one = _parquet(tmp_path / "pq" / "a.parquet")
    _parquet(tmp_path / "pq" / "b.parquet", 3)
    source = tmp_path / "pq" if as_directory else one
    params = flow.TextCurationParams(input=str(source), output=str(tmp_path / "o"),
                                     work_dir=str(tmp_path / "w"))
    assert params.input_format == "parquet"
    front = flow.build_stage_groups(params)[0]
    names = [s.stage_name for s in front]
    assert names[:2] == ["file_partitioning", "parquet_read"]
    read = LocalExecutor().execute(front[:2])
    assert sum(t.num_items for t in read) == (7 if as_directory else 4)


def test_a_directory_of_parquet_files_is_not_refused_as_empty(tmp_path):
    _parquet(tmp_path / "pq" / "a.parquet")
    flow.TextCurationParams(input=str(tmp_path / "pq"), output=str(tmp_path / "o"),
                            work_dir=str(tmp_path / "w"))  # no "no input files match"


def test_a_parquet_file_without_the_text_column_names_its_columns(tmp_path, capsys,
                                                                 previous_output):
    path = tmp_path / "pq" / "a.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"content": ["x" * 50], "n": [1]}), path)
    err = _cli_refusal(capsys, ["--input", str(path)], previous_output, tmp_path / "w")
    assert "a.parquet has no column 'text'" in err and "use --text-field content" in err


# ----------------------------------------------------------------------------- 5. formats
def test_a_plain_json_file_beside_the_shards_is_skipped_and_listed(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    _jsonl(corpus / "shard-0.jsonl", [{"text": "hello"}])
    (corpus / "truth.json").write_text('[{"a": 1}]')
    (corpus / "notes.txt").write_text("notes")
    params = flow.TextCurationParams(input=str(corpus), output=str(tmp_path / "o"),
                                     work_dir=str(tmp_path / "w"))
    listing = params.input_listing(params.input)
    assert listing.paths == [str(corpus / "shard-0.jsonl")]
    assert [Path(p).name for p in listing.skipped] == ["notes.txt", "truth.json"]
    assert _cli(["--input", str(corpus), "--output", str(tmp_path / "o"), "--plan",
                      "--cluster", "1 node x 2 cpus"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert notes == ["note: input: skipped 2 file(s) that are not JSONL (.jsonl, .jsonl.gz, "
                     ".jsonl.zst, .jsonl.zstd, .ndjson, .ndjson.gz, .ndjson.zst) or Parquet "
                     "(.parquet, .pq): notes.txt, truth.json"]


@pytest.mark.parametrize("name, body, what", [
    ("truth.json", '[{"text": "x"}]', "a .json file that is a JSON array"),
    ("data.csv", "text,id\nx,1\n", "a .csv file that is neither JSON Lines nor Parquet"),
])
def test_a_format_no_reader_takes_is_refused_naming_it(tmp_path, capsys, previous_output,
                                                       name, body, what):
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_text(body)
    err = _cli_refusal(capsys, ["--input", str(path)], previous_output, tmp_path / "w")
    assert "--input" in err and what in err and "this flow reads JSONL" in err


def test_a_named_file_is_read_by_its_content_when_its_name_says_nothing(tmp_path):
    lines = _jsonl(tmp_path / "lines.json", [{"text": "x"}])
    assert sniff(str(lines)) == "jsonl"
    renamed = _parquet(tmp_path / "table.bin")
    assert sniff(str(renamed)) == "parquet"
    (tmp_path / "empty.dat").write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty"):
        sniff(str(tmp_path / "empty.dat"))


def test_a_directory_with_two_formats_is_refused(tmp_path):
    _parquet(tmp_path / "mixed" / "a.parquet")
    _jsonl(tmp_path / "mixed" / "b.jsonl", [{"text": "x"}])
    with pytest.raises(ValidationError, match="several formats"):
        flow.TextCurationParams(input=str(tmp_path / "mixed"), output=str(tmp_path / "o"),
                                work_dir=str(tmp_path / "w"))


def test_an_empty_directory_says_what_a_directory_takes(tmp_path, capsys, previous_output):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    err = _cli_refusal(capsys, ["--input", str(tmp_path / "empty")], previous_output,
                       tmp_path / "w")
    assert "it holds readme.md" in err and "Parquet (.parquet, .pq)" in err


# ----------------------------------------------------------------------------- 6. nothing kept
def _summary(read: int, dropped: dict[str, int], quarantined: int = 0, written: int = 0):
    reader = StageCounts("jsonl_read", metrics={"documents_read": read,
                                                "documents_quarantined": quarantined})
    filt = StageCounts("quality_filter", dropped=dropped)
    writer = StageCounts("parquet_writer", metrics={"documents_written": written})
    return summarise({s.stage: s for s in (reader, filt, writer)})


def test_a_run_that_keeps_nothing_names_the_reason_and_its_flag():
    summary = _summary(3000, {"language": 3000})
    with pytest.raises(NothingKeptError) as err:
        summary.check_kept(flag_for=flow.SPEC.flag_for)
    assert str(err.value) == ("the run kept 0 of 3000 documents: 3000 dropped by 'language' "
                              "(change it with --languages / --min-language-score / "
                              "--no-language-id)")
    mixed = _summary(100, {"gopher_word_count": 70, "c4_sentence_count": 10}, quarantined=20)
    with pytest.raises(NothingKeptError, match="70 dropped by 'gopher_word_count' \\(change it "
                       "with --min-words / --max-words\\); all removals: read 100"):
        mixed.check_kept(flag_for=flow.SPEC.flag_for)
    quarantined = _summary(2000, {}, quarantined=2000)
    with pytest.raises(NothingKeptError, match="2000 quarantined as \"missing text field "
                       "'text'\" \\(change it with --text-field\\)"):
        quarantined.check_kept({"missing text field 'text'": 2000}, flow.SPEC.flag_for)
    with pytest.raises(NothingKeptError, match="read 0 documents"):
        _summary(0, {}).check_kept()
    _summary(10, {"language": 9}, written=1).check_kept()  # one kept: a result, not a mistake


def test_every_rule_of_the_flow_names_a_flag_or_says_it_has_none(tmp_path):
    params = flow.TextCurationParams(output=str(tmp_path / "o"), work_dir=str(tmp_path / "w"))
    quality = [s for g in flow.build_stage_groups(params) for s in g
               if s.stage_name == "quality_filter"][0]
    for rule in quality.rules:
        assert flow.SPEC.flag_for(rule.name), rule.name
    for reason in ("language", "exact_duplicate", "fuzzy_duplicate"):
        assert flow.SPEC.flag_for(reason).startswith("--")


def test_the_c4_sentence_minimum_is_a_flag(tmp_path):
    def sentence_rules(**kw):
        params = flow.TextCurationParams(output=str(tmp_path / "o"),
                                         work_dir=str(tmp_path / "w"), **kw)
        quality = [s for g in flow.build_stage_groups(params) for s in g
                   if s.stage_name == "quality_filter"][0]
        return [r for r in quality.rules if r.name == "c4_sentence_count"]

    assert [r.min_sentences for r in sentence_rules()] == [3]
    assert [r.min_sentences for r in sentence_rules(c4_min_sentences=1)] == [1]
    assert sentence_rules(c4_min_sentences=0) == []
