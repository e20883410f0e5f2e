"""Bad input through the reference flow: each refused with a clear message, or quarantined and
counted, never lost (docs/reliability.md has the table).

Reader-level cases one by one (each malformed line, truncated gzip/zstd, empty file, 50 MB line,
globs) are in tests/test_readers.py; bounds of single flow parameters in tests/test_params_bounds.py.
Here: all of them together through the real flow (accounting must hold), wrong types and bounds
at the CLI (the script's main) and the flow, and a deployment run's server-side parameter
validation.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from curator_stages.orchestration.flow_cli import flow_main
from flows.text_curation import SPEC, TextCurationParams, text_curation

GOOD = "the quick brown fox jumps over the lazy dog and then it runs back to the river bank"


def good(i: int) -> str:
    return json.dumps({"text": f"{GOOD} number {i}"})


def write_bad_corpus(root: Path) -> dict[str, object]:
    """Every kind of bad input in one directory; returns what the run must report."""
    root.mkdir()
    expected: dict[tuple[str, int], str] = {}  # (file, line) -> reason prefix

    (root / "good.jsonl").write_text("\n".join(good(i) for i in range(4)) + "\n")
    (root / "malformed.jsonl").write_text("\n".join([
        good(10), '{"text": "broken', "not json at all", "[1, 2, 3]", good(11)]) + "\n")
    expected.update({("malformed.jsonl", 2): "invalid JSON", ("malformed.jsonl", 3): "invalid JSON",
                     ("malformed.jsonl", 4): "not a JSON object"})
    (root / "bad_utf8.jsonl").write_bytes(
        good(20).encode() + b"\n" + b'{"text": "caf\xe9 au lait"}\n' + good(21).encode() + b"\n")
    expected[("bad_utf8.jsonl", 2)] = "invalid UTF-8"
    (root / "fields.jsonl").write_text("\n".join([
        json.dumps({"title": "no text field"}), json.dumps({"text": 42}),
        json.dumps({"text": None}), json.dumps({"text": ["a", "list"]}), good(30)]) + "\n")
    expected.update({("fields.jsonl", 1): "missing text field",
                     ("fields.jsonl", 2): "text field 'text' is not a string",
                     ("fields.jsonl", 3): "text field 'text' is not a string",
                     ("fields.jsonl", 4): "text field 'text' is not a string"})
    whole = gzip.compress(("\n".join(good(100 + i) for i in range(200)) + "\n").encode())
    (root / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    # Garbage after a complete gzip member: all 200 lines read, the tail is one record.
    tail = gzip.compress(("\n".join(good(400 + i) for i in range(200)) + "\n").encode())
    (root / "tail_garbage.jsonl.gz").write_bytes(tail + bytes(range(0xA0, 0xB0)))
    expected[("tail_garbage.jsonl.gz", 201)] = "truncated/corrupt compressed stream"
    # Valid JSON, not valid Unicode: the record goes to quarantine, not the whole file group.
    (root / "surrogate.jsonl").write_text(good(40) + "\n" + '{"text": "caf\\ud800 au lait"}\n'
                                          + good(41) + "\n")
    expected[("surrogate.jsonl", 2)] = "text field 'text' is not valid Unicode (lone surrogate)"
    (root / "empty.jsonl").write_bytes(b"")
    (root / "blank_lines.jsonl").write_text("\n  \n\n")
    (root / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "the", "and", "of", "river", "quickly"]
    big = " ".join(rng.choice(words) for _ in range(50_500_000 // 5))
    with open(root / "huge.jsonl", "w") as f:
        f.write(json.dumps({"text": big}) + "\n")
    return {"quarantined": expected, "huge_bytes": len(big)}


def test_every_bad_input_is_quarantined_or_dropped_and_counted(ray_cluster, prefect_harness,
                                                              tmp_path):
    corpus = write_bad_corpus(tmp_path / "in")
    assert corpus["huge_bytes"] >= 50_000_000
    out = tmp_path / "out"
    params = TextCurationParams(
        input=str(tmp_path / "in"), output=str(out), work_dir=str(tmp_path / "work"),
        min_words=3, min_stop_words=0, repetition_filters=False, c4_filters=False,
        language_id=False, fuzzy_dedup=False, retries=0, max_document_bytes=64 << 20)
    state = text_curation(params, return_state=True)
    assert state.is_completed(), state.message
    summary = json.loads((out / "run_summary.json").read_text())

    records = [json.loads(line) for f in sorted((out / "quarantine").iterdir())
               for line in f.read_text().splitlines()]
    by_line = {(Path(r["file"]).name, r["line"]): r["reason"] for r in records}
    truncated = [r for r in records if Path(r["file"]).name == "truncated.jsonl.gz"]
    # The cut member never reached its CRC: its lines are salvaged unverified, then the cut.
    assert "truncated" in truncated[-1]["reason"] and len(truncated) > 1
    assert all(r["reason"].startswith("unverified:") for r in truncated[:-1])
    for r in truncated:
        del by_line[(Path(r["file"]).name, r["line"])]
    expected = corpus["quarantined"]
    assert set(by_line) == set(expected)
    for key, reason in expected.items():
        assert by_line[key].startswith(reason), (key, by_line[key])
    assert summary["documents_quarantined"] == len(expected) + len(truncated)

    # Nothing lost: read = written + dropped + quarantined, and the lines before the damage in
    # the truncated gzip were read (and salvaged) rather than the whole file lost.
    assert summary["identity"]["holds"], summary["identity"]
    good_lines = 4 + 2 + 2 + 1 + 1 + 200 + 2  # good, malformed, bad_utf8, fields, huge, tail, surrogate
    assert summary["documents_read"] > good_lines + len(expected) + 1
    # The 50 MB document was read whole and dropped by a rule (too many words), not lost.
    assert summary["dropped_by_reason"].get("gopher_word_count", 0) >= 1
    assert summary["documents_written"] >= 4 + 200 + 2


def test_a_run_that_keeps_nothing_fails_and_the_previous_output_survives(ray_cluster,
                                                                         prefect_harness,
                                                                         tmp_path):
    """A threshold that drops every document fails the run (it exited 0 with an empty output
    and pruned the previous one), naming the rule and its flag; the good output stays."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(good(i) + "\n" for i in range(20)))
    out = tmp_path / "out"
    common = dict(input=str(tmp_path / "in"), output=str(out), work_dir=str(tmp_path / "work"),
                  min_words=3, min_stop_words=0, repetition_filters=False, c4_filters=False,
                  language_id=False, fuzzy_dedup=False, exact_dedup=False, retries=0)
    assert text_curation(TextCurationParams(**common), return_state=True).is_completed()
    before = {p: p.read_bytes() for p in (out / "data").iterdir()}
    assert before

    state = text_curation(TextCurationParams(**{**common, "max_words": 3}), return_state=True)
    assert state.is_failed()
    assert ("the run kept 0 of 20 documents: 20 dropped by 'gopher_word_count' (change it "
            "with --min-words / --max-words)") in state.message
    assert {p: p.read_bytes() for p in (out / "data").iterdir()} == before


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("args,flag", [
    (["--min-words", "many"], "--min-words"),
    (["--min-words", "-5"], "--min-words"),
    (["--retries", "1.5"], "--retries"),
    (["--num-cpus", "0"], "--num-cpus"),
    (["--fuzzy-num-perm", "100000"], "--fuzzy-num-perm"),
    (["--fuzzy-threshold", "1.5"], "--fuzzy-threshold"),
    (["--output-format", "csv"], "--output-format"),
    (["--input", "/definitely/not/here/*.jsonl"], "--input"),
])
def test_cli_refuses_wrong_types_and_bounds_naming_the_flag(tmp_path, capsys, args, flag):
    """The script's main, in this process (tests/test_flow.py runs the script itself)."""
    with pytest.raises(SystemExit) as exited:
        flow_main(SPEC, text_curation, [*args, "--output", str(tmp_path / "o"),
                                        "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err[-2000:]
    assert flag in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_flow_refuses_wrong_types_before_any_stage_task(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    for bad, field in (({"min_words": "many"}, "min_words"),
                       ({"languages": "en"}, "languages"),
                       ({"retries": 1.5}, "retries"),
                       ({"input": str(tmp_path)}, "input")):  # a directory with nothing to read
        state = text_curation(params={**bad, "output": str(tmp_path / "o")}, return_state=True)
        assert state.is_failed(), bad
        assert field in state.message, state.message
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        assert runs == []
    assert not (tmp_path / "o").exists()


def test_deployment_run_parameters_are_validated_like_the_server_does():
    """A deployment stores the flow's parameter schema; the server validates each run's
    parameters against it (enforce_parameter_schema, Prefect's default) and the worker
    validates them again with the flow's own model before the flow starts."""
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    schema = parameter_schema(text_curation).model_dump_for_openapi()
    fields = schema["definitions"]["TextCurationParams"]["properties"]
    assert fields["min_words"]["minimum"] == 0 and fields["fuzzy_threshold"]["exclusiveMaximum"] == 1

    validate({"params": {"min_words": 10, "languages": ["en"]}}, schema, raise_on_error=True)
    for bad, field in (({"min_words": "many"}, "min_words"),
                       ({"fuzzy_threshold": 1.5}, "fuzzy_threshold"),
                       ({"output_format": "csv"}, "output_format"),
                       ({"no_such_option": 1}, "no_such_option")):
        with pytest.raises(ValidationError) as err:
            validate({"params": bad}, schema, raise_on_error=True)
        assert field in str(err.value) or field in json.dumps(err.value.args, default=str)
        with pytest.raises(ParameterTypeError) as err:
            text_curation.validate_parameters({"params": bad})
        assert field in str(err.value)
