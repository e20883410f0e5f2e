"""Synthetic corpus generator: determinism, realism, ground truth, malformed lines, CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from curator_stages.corpus import (
    GROUND_TRUTH_FILE,
    JUNK_KINDS,
    MANIFEST_FILE,
    duplicate_clusters,
    generate_corpus,
    load_ground_truth,
)


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def docs(directory: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(directory.glob("shard-*")):
        raw = p.read_bytes()
        if p.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        elif p.name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        for line in raw.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("text"), str):
                out[rec["id"]] = rec
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    generate_corpus(str(out), num_docs=2000, shards=3, seed=11, malformed=True,
                    compression=[None, "gzip", "zstd"], workers=1)
    return out


def test_same_seed_same_bytes_different_seed_different(corpus: Path, tmp_path: Path):
    generate_corpus(str(tmp_path / "again"), num_docs=2000, shards=3, seed=11, malformed=True,
                    compression=[None, "gzip", "zstd"], workers=2)  # process pool: same bytes
    assert digest(tmp_path / "again") == digest(corpus)
    generate_corpus(str(tmp_path / "other"), num_docs=2000, shards=3, seed=12, malformed=True,
                    compression=[None, "gzip", "zstd"], workers=1)
    assert digest(tmp_path / "other")["shard-00000.jsonl"] != digest(corpus)["shard-00000.jsonl"]


def test_files_and_manifest(corpus: Path):
    manifest = json.loads((corpus / MANIFEST_FILE).read_text())
    assert manifest["files"] == ["shard-00000.jsonl", "shard-00001.jsonl.gz", "shard-00002.jsonl.zst"]
    assert manifest["documents"] == 2000 == sum(manifest["kinds"].values())
    assert set(JUNK_KINDS) <= set(manifest["kinds"])
    assert len(docs(corpus)) == 2000


def test_ground_truth_has_every_document_and_true_duplicate_clusters(corpus: Path):
    truth = load_ground_truth(str(corpus))
    assert (corpus / GROUND_TRUTH_FILE).exists() and len(truth) == 2000
    texts = {k: v["text"] for k, v in docs(corpus).items()}
    clusters = duplicate_clusters(truth)
    assert clusters
    roles = {r["id"]: r for r in truth}
    n_exact = n_near = 0
    for cluster, members in clusters.items():
        assert members[0] == cluster and roles[cluster]["dup_role"] == "original"
        for member in members[1:]:
            rec = roles[member]
            if rec["dup_role"] == "exact_copy":
                n_exact += 1
                assert texts[member] == texts[cluster]
            else:
                n_near += 1
                assert texts[member] != texts[cluster]
                assert 0 < rec["edit_rate"] < 0.25
                a, b = set(texts[member].split()), set(texts[cluster].split())
                assert len(a & b) / len(a | b) > 0.6  # near, not unrelated
    assert n_exact > 10 and n_near > 10
    # the originals themselves are not copies of each other
    originals = [texts[c] for c in clusters]
    assert len(set(originals)) == len(originals)


def test_text_is_multilingual_prose_with_structure(corpus: Path):
    truth = {r["id"]: r for r in load_ground_truth(str(corpus))}
    texts = docs(corpus)
    langs = {r["lang"] for r in truth.values()}
    assert {"en", "de", "fr", "es", "ru", "zh"} <= langs
    en = [texts[i]["text"] for i, r in truth.items() if r["kind"] == "clean" and r["lang"] == "en"]
    assert sum(len(t.split()) for t in en) / len(en) > 50
    assert any("\n\n" in t for t in en) and all(t[0].isupper() for t in en)
    joined = " ".join(en[:50]).split()
    assert sum(w.lower().strip(".,?!") in {"the", "of", "and", "to"} for w in joined) / len(joined) > 0.1
    ru = next(texts[i]["text"] for i, r in truth.items() if r["kind"] == "clean" and r["lang"] == "ru")
    assert any("а" <= ch <= "я" for ch in ru)
    zh = next(texts[i]["text"] for i, r in truth.items() if r["kind"] == "clean" and r["lang"] == "zh")
    assert "。" in zh and " " not in zh
    lengths = [r["words"] for r in truth.values() if r["kind"] == "clean"]
    assert min(lengths) < 40 and max(lengths) > 1000
    lorem = next(texts[i]["text"] for i, r in truth.items() if r["kind"] == "junk_lorem")
    assert "ipsum" in lorem.lower()
    urls = next(texts[i]["text"] for i, r in truth.items() if r["kind"] == "junk_urls")
    assert all(line.startswith("https://") for line in urls.splitlines())


def test_malformed_lines_are_where_the_manifest_says(corpus: Path):
    manifest = json.loads((corpus / MANIFEST_FILE).read_text())
    malformed = manifest["malformed_lines"]
    assert {m["reason"] for m in malformed} == {"invalid_json", "invalid_utf8", "missing_text",
                                                "non_string_text", "not_an_object"}
    raw = (corpus / "shard-00000.jsonl").read_bytes().split(b"\n")
    for m in (m for m in malformed if m["file"] == "shard-00000.jsonl"):
        line = raw[m["line"] - 1]
        if m["reason"] == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                line.decode("utf-8")
        else:
            value = None
            try:
                value = json.loads(line)
            except ValueError:
                assert m["reason"] == "invalid_json"
            if value is not None:
                assert not (isinstance(value, dict) and isinstance(value.get("text"), str))


def test_cli(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "curator_stages.corpus", "--num-docs", "300", "--shards", "2",
         "--out", str(tmp_path / "cli"), "--seed", "5", "--malformed", "--workers", "1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["documents"] == 300
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        GROUND_TRUTH_FILE, MANIFEST_FILE, "shard-00000.jsonl", "shard-00001.jsonl"]


def test_committed_sample_data_is_small_and_current(repo_root: Path, tmp_path: Path):
    sample = repo_root / "data" / "sample"
    assert sum(p.stat().st_size for p in sample.iterdir()) < 3_000_000
    names = {p.name for p in sample.iterdir()}
    assert any(n.endswith(".jsonl.gz") for n in names) and any(n.endswith(".jsonl.zst") for n in names)
    result = subprocess.run([sys.executable, str(repo_root / "scripts" / "make_sample_data.py"),
                             "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert digest(tmp_path / "s") == digest(sample)  # regenerating gives the committed bytes
