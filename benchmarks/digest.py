"""An order-independent digest of a run's output documents, to compare executors.

Executors may write the same documents into different files and in a different order; what
must not differ is the set of (id, text) pairs. The digest is sha256 over the sorted
per-document xxh3_128 hashes of ``id + NUL + text``; duplicates count (a document written twice
changes it). Read: Parquet (the library's writer) and JSONL, plain or gzip (datatrove's
``JsonlWriter`` writes ``<rank>.jsonl.gz`` with ``id`` and ``text`` at the top level and the rest
under ``metadata``, which the digest ignores as it ignores extra Parquet columns).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import xxhash


def _documents(path: Path):
    if path.name.endswith(".parquet"):
        table = pq.read_table(path, columns=["id", "text"])
        yield from zip(table.column("id").to_pylist(), table.column("text").to_pylist())
    elif path.name.endswith((".jsonl", ".json", ".jsonl.gz")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    yield row.get("id"), row.get("text")


def output_digest(data_dir: str | Path) -> dict[str, Any]:
    """{"documents": n, "digest": hex} of the documents under ``data_dir`` (hidden and ``_``
    files skipped: manifests, temporaries); ``{"documents": 0, "digest": None}`` when absent."""
    root = Path(data_dir)
    if not root.is_dir():
        return {"documents": 0, "digest": None}
    hashes: list[bytes] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if not path.is_file() or any(p.startswith(("_", ".")) for p in rel):
            continue
        for doc_id, text in _documents(path):
            hashes.append(xxhash.xxh3_128_digest(f"{doc_id}\0{text}".encode("utf-8", "surrogatepass")))
    hashes.sort()
    return {"documents": len(hashes), "digest": hashlib.sha256(b"".join(hashes)).hexdigest()}


def compare_digests(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per corpus size: do all variants that finished write the same documents?"""
    out: dict[str, Any] = {}
    for size in sorted({r["documents"] for r in records}):
        by_variant: dict[str, set[str]] = {}
        for r in records:
            if r["documents"] == size and r.get("output_digest"):
                by_variant.setdefault(r["variant"], set()).add(r["output_digest"])
        digests = set().union(*by_variant.values()) if by_variant else set()
        out[str(size)] = {"same_output": len(digests) <= 1,
                          "digests": {v: sorted(d) for v, d in by_variant.items()}}
    return out
