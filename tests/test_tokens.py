"""TokenCounter: real BPE counts offline, a tokens column, tokens read/written and PII counts in
the run summary, report and Prefect summary markdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator_stages.backends.local import LocalExecutor
from curator_stages.io import JsonlReader, ParquetWriter
from curator_stages.orchestration.artifacts import summary_markdown
from curator_stages.accounting import HistoryAggregator, RunSummary, summarise
from curator_stages.reporting.run_summary import write_run_summary
from curator_stages.reporting import write_run_report
from curator_stages.tasks import DocumentBatch
from curator_stages.text import TextNormalizer
from curator_stages.text.filters import HeuristicFilter
from curator_stages.text.filters.rules import WordCountRule
from curator_stages.text.pii import PiiRedactor
from curator_stages.text.tokens import TokenCounter
from tests.test_pii import EMAILS, GETADDRINFO, SOCKET

REPO = Path(__file__).resolve().parents[1]
SHARD = REPO / "data" / "sample" / "shard-00000.jsonl"


def _batch(texts):
    return DocumentBatch("t", "d", pa.table({"text": pa.array(texts, type=pa.string())}))


def test_cl100k_counts_are_openais():
    # Token ids OpenAI publishes for cl100k_base (tiktoken's README and cookbook examples).
    stage = TokenCounter()
    stage.setup()
    assert stage._encoder.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert stage._encoder.encode_ordinary("hello world") == [15339, 1917]
    assert stage.count(["hello world", None, "", "<|endoftext|>"]) == [2, 0, 0, 7]


def test_tokens_column_and_metric():
    texts = ["hello world", None, "tiktoken is great!"]
    out = TokenCounter().run([_batch(texts)])[0]
    assert out.data.column("tokens").type == pa.int64()
    assert out.data.column("tokens").to_pylist() == [2, 0, 6]
    assert out.stage_history[-1].custom_metrics == {"tokens_counted": 8}
    again = TokenCounter().run([out])[0]  # an existing column is replaced, not duplicated
    assert again.data.column_names == ["text", "tokens"]
    quiet = TokenCounter(tokens_field=None).run([_batch(texts)])[0]
    assert quiet.data.column_names == ["text"]
    assert quiet.stage_history[-1].custom_metrics == {"tokens_counted": 8}


def test_bad_encoding_is_refused_naming_the_field_and_fix():
    with pytest.raises(ValueError, match="field 'encoding'.*choose one of"):
        TokenCounter("gpt2")


def test_counts_offline_with_an_empty_cache_and_no_network(tmp_path):
    """A download would go through the proxy, where nothing listens. (tiktoken copies even a
    local encoding file into its cache, hence a fresh cache directory.)"""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": "", "PYTHONPATH": str(REPO)}
    code = ("from curator_stages.text.tokens import TokenCounter; s = TokenCounter(); "
            "print(s.count(['tiktoken is great!']))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[6]"


def test_o200k_through_bpe_openai():
    pytest.importorskip("bpe_openai", reason="o200k_base needs the o200k extra (bpe-openai)")
    stage = TokenCounter("o200k_base")
    stage.setup()
    assert stage._encoder.encode_ordinary("hello world") == [24912, 2375]  # published ids
    assert stage._encoder.encode_ordinary(" 日本語とEnglish 12345!\n") == [
        17428, 40909, 5330, 28881, 220, 7633, 2548, 4175]
    assert stage.count(["hello world", ""]) == [2, 0]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """Sample shard -> normalise -> filter -> PII -> tokens -> Parquet, in this process."""
    out = tmp_path_factory.mktemp("tokens_run")
    corpus = out / "corpus"
    corpus.mkdir()
    shutil.copy(SHARD, corpus / SHARD.name)
    (corpus / "python-docs.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in (SOCKET, GETADDRINFO, EMAILS)))
    stages = [JsonlReader(str(corpus), quarantine_dir=str(out / "quarantine")),
              TextNormalizer(),
              TokenCounter(tokens_field=None, name="tokens_read"),
              HeuristicFilter([WordCountRule(min_words=8)], name="quality"),
              PiiRedactor(),
              TokenCounter(),
              ParquetWriter(str(out / "data"))]
    tasks = LocalExecutor().execute(stages)
    summary = summarise(HistoryAggregator().add_tasks(tasks).to_dict(), output=str(out))
    summary.check()
    write_run_summary(summary, str(out))
    write_run_report(out, summary, title="tokens test", publish_artifact=False)
    table = pa.concat_tables(pq.read_table(f) for f in sorted((out / "data").glob("*.parquet")))
    return out, summary, table


def test_summary_tokens_read_and_written(local_run):
    _, summary, table = local_run
    assert summary.tokens_written == sum(table.column("tokens").to_pylist()) > 0
    assert summary.tokens_read_stage == "tokens_read"
    read_stage = next(s for s in summary.stages if s.stage == "tokens_read")
    assert summary.tokens_read == read_stage.metrics["tokens_counted"] > summary.tokens_written
    assert summary.documents_written == table.num_rows < summary.documents_read
    counter = TokenCounter()
    assert table.column("tokens").to_pylist() == counter.count(table.column("text").to_pylist())


def test_summary_round_trips_and_reads_older_files(local_run):
    out, summary, _ = local_run
    stored = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    back = RunSummary.from_dict(stored)
    assert (back.tokens_read, back.tokens_written, back.pii_redacted) == (
        summary.tokens_read, summary.tokens_written, summary.pii_redacted)
    for key in ("tokens_read", "tokens_read_stage", "tokens_written", "pii_redacted"):
        stored.pop(key)
    old = RunSummary.from_dict(stored)
    assert old.tokens_read is None and old.tokens_written is None and old.pii_redacted == {}


def test_report_and_artifact_show_tokens_and_pii(local_run):
    out, summary, _ = local_run
    report = (out / "report.md").read_text(encoding="utf-8")
    tokens = report.split("## Tokens", 1)[1].split("## ", 1)[0]
    assert "| counted at tokens_read (the first token counter) | " in tokens
    assert f"{summary.tokens_read:,}" in tokens and f"{summary.tokens_written:,}" in tokens
    pii = report.split("## PII redacted", 1)[1].split("## ", 1)[0]
    assert summary.pii_redacted == {"email": 3, "ip": 3}
    for kind, n in summary.pii_redacted.items():
        assert f"| {kind} | {n:,} |" in pii
    markdown = summary_markdown(summary, "tokens test")
    assert f"{summary.tokens_written:,} written" in markdown


def test_pii_counts_per_kind_reach_the_summary():
    texts = ["Mail penelope@example.com or pepe@example.com from 93.184.216.34.",
             "Nothing here: 192.168.0.1 and version 1.2.3.4."]
    tasks = PiiRedactor().run([_batch(texts)])
    summary = summarise(HistoryAggregator().add_tasks(tasks).to_dict(), final_documents=2)
    assert summary.pii_redacted == {"email": 2, "ip": 1}


def test_text_flow_counts_tokens_only_when_asked():
    from flows.text_curation import TextCurationParams, build_stage_groups

    def counters(**kwargs):
        groups = build_stage_groups(TextCurationParams(language_id=False, **kwargs))
        return [s for g in groups for s in g if isinstance(s, TokenCounter)]

    assert counters() == []
    (only,) = counters(count_tokens=True)
    assert only.tokens_field == "tokens" and only.encoding == "cl100k_base"


@pytest.mark.slow
def test_url_filter_pii_and_tokens_on_the_ray_adapter(ray_cluster, tmp_path):
    """The three stages (two with per-process state) on Ray Data: same output as in process."""
    from curator_stages.backends.ray_data import RayDataExecutor
    from curator_stages.text.url_filter import UrlFilter

    rows = [{"url": url, "text": text} for url, text in [
        ("https://docs.python.org/3/library/socket.html", SOCKET),
        ("https://securepubads.g.doubleclick.net/tag/js/gpt.js", GETADDRINFO),
        ("https://docs.python.org/3/library/email.examples.html", EMAILS)]]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(executor, out):
        stages = [JsonlReader(str(tmp_path / "in.jsonl"), fields=["url"]),
                  UrlFilter(str(REPO / "data" / "url_blocklist_example.txt")),
                  PiiRedactor(), TokenCounter(), ParquetWriter(str(out))]
        tasks = executor.execute(stages)
        summary = summarise(HistoryAggregator().add_tasks(tasks).to_dict())
        summary.check()
        table = pq.read_table(out).sort_by("id")
        return summary, table.select(["url", "text", "tokens"]).to_pylist()

    on_ray, ray_rows = run(RayDataExecutor(), tmp_path / "ray")
    local, local_rows = run(LocalExecutor(), tmp_path / "local")
    assert ray_rows == local_rows and len(ray_rows) == 2
    assert (on_ray.dropped_by_reason, on_ray.pii_redacted, on_ray.tokens_written) == (
        {"url_domain": 1}, {"email": 3, "ip": 1}, local.tokens_written)
