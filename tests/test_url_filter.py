"""UrlFilter: domain blocklist (exact and subdomain match) and banned URL substrings."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from curator_stages.tasks import DocumentBatch
from curator_stages.text.url_filter import URL_DOMAIN, URL_SUBSTRING, UrlFilter

EXAMPLE_LIST = str(Path(__file__).resolve().parents[1] / "data" / "url_blocklist_example.txt")

#: Real URLs of real pages and ad servers, with traps for suffix-string matching.
URLS = [
    "https://www.debian.org/doc/manuals/debian-reference/",
    "https://docs.python.org/3/library/ipaddress.html",
    "https://securepubads.g.doubleclick.net/tag/js/gpt.js",   # subdomain of a listed domain
    "https://doubleclick.net/",                                # the listed domain itself
    "https://AD.DoubleClick.Net.:443/ddm/clk/1",               # case, trailing dot and port
    "https://user:secret@pagead2.googlesyndication.com/pagead/show_ads.js",  # user info
    "https://notdoubleclick.net/page",                         # shares a suffix string only
    "https://doubleclick.network/page",                        # shares a prefix only
    "https://www.doubleclick.net.debian.org/",                 # listed name inside another host
    None,                                                      # no URL: nothing to judge
    "",
    "not a url",
]


def _run(stage, urls, field="url"):
    table = pa.table({"id": [str(i) for i in range(len(urls))],
                      field: pa.array(urls, type=pa.string())})
    out = stage.run([DocumentBatch(task_id="t", dataset_name="d", data=table)])
    assert len(out) == 1
    return out[0].data.column(field).to_pylist(), out[0].stage_history[-1]


def test_blocklist_matches_domains_and_their_subdomains_only():
    kept, stats = _run(UrlFilter(EXAMPLE_LIST), URLS)
    assert kept == [URLS[i] for i in (0, 1, 6, 7, 8, 9, 10, 11)]
    assert stats.dropped_by_reason() == {URL_DOMAIN: 4}
    assert stats.num_items_in == len(URLS) == stats.num_items_out + 4


def test_banned_substrings_any_case_and_domain_wins_the_reason():
    stage = UrlFilter(blocked_domains=["doubleclick.net"], banned_substrings=["/AdServer/", "gpt.js"])
    urls = ["https://www.debian.org/doc/", "https://example.org/adserver/x",
            "https://securepubads.g.doubleclick.net/tag/js/gpt.js",  # both: counted as domain
            "https://cdn.example.org/tag/js/GPT.JS"]
    kept, stats = _run(stage, urls)
    assert kept == ["https://www.debian.org/doc/"]
    assert stats.dropped_by_reason() == {URL_DOMAIN: 1, URL_SUBSTRING: 2}


def test_url_field_is_a_parameter_and_a_missing_column_names_it():
    kept, _ = _run(UrlFilter(blocked_domains=["example.com"], url_field="source"),
                   ["https://www.example.com/", "https://www.debian.org/"], field="source")
    assert kept == ["https://www.debian.org/"]
    with pytest.raises(ValueError, match="url"):
        _run(UrlFilter(blocked_domains=["example.com"]), ["https://example.com/"], field="link")


def test_list_formats_gzip_hosts_lines_comments(tmp_path):
    path = tmp_path / "list.txt.gz"
    path.write_bytes(gzip.compress(
        b"# comment\n\n0.0.0.0 taboola.com\n*.outbrain.com  # trailing comment\n.adnxs.com\n"))
    kept, stats = _run(UrlFilter(str(path)), ["https://cdn.taboola.com/x", "https://outbrain.com/",
                                               "https://ib.adnxs.com/", "https://www.debian.org/"])
    assert kept == ["https://www.debian.org/"] and stats.dropped_by_reason() == {URL_DOMAIN: 3}


def test_bad_parameters_are_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="field 'blocklist'.*cannot read"):
        UrlFilter(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="field 'blocklist'.*no domain"):
        UrlFilter(str(empty))
    with pytest.raises(ValueError, match="nothing to filter by"):
        UrlFilter()
    with pytest.raises(TypeError, match="lists of strings"):
        UrlFilter(banned_substrings="porn")


def test_identity_follows_the_list_content_and_a_list_changed_after_build_fails(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("example.com\n")
    first = UrlFilter(str(path))
    path.write_text("example.com\nexample.net\n")
    second = UrlFilter(str(path))
    assert first.identity_hash() != second.identity_hash()
    with pytest.raises(RuntimeError, match="changed after the pipeline was built"):
        first.setup()


def test_blocklist_through_fsspec_url():
    import fsspec

    url = f"memory://url-filter-{uuid.uuid4().hex[:8]}/list.txt"
    with fsspec.open(url, "wb") as f:
        f.write(b"debian.org\n")
    kept, stats = _run(UrlFilter(url), ["https://www.debian.org/doc/", "https://python.org/"])
    assert kept == ["https://python.org/"] and stats.dropped_by_reason() == {URL_DOMAIN: 1}


@pytest.mark.slow
def test_blocklist_on_s3(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    url = s3_server.url(f"lists-{uuid.uuid4().hex[:8]}", "blocklist.txt")
    s3_server.filesystem().pipe(url.split("://", 1)[1],
                                Path(EXAMPLE_LIST).read_bytes())
    kept, stats = _run(UrlFilter(url), URLS[:4])
    assert kept == URLS[:2] and stats.dropped_by_reason() == {URL_DOMAIN: 2}
