"""Throughput of PiiRedactor and TokenCounter on real text, one core.

    python benchmarks/bench_pii_tokens.py [--html-dir DIR]

Corpora: two shards of ``data/sample``, and with ``--html-dir`` every HTML page under DIR as
plain text (resiliparse), for example Debian's Python documentation:
``apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb doc`` then
``--html-dir doc/usr/share/doc/python3.11/html`` (pages with real addresses, code and version
numbers). Rates are documents (and MB of text) per CPU-second of this process
(``time.process_time``), best of three passes over one batch, so a busy machine distorts them
less than wall time would.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import pyarrow as pa

from curator_stages.tasks import DocumentBatch
from curator_stages.text import PiiRedactor, TokenCounter

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def sample_texts() -> list[str]:
    texts = []
    for path in ("shard-00000.jsonl", "shard-00001.jsonl"):
        for line in (SAMPLE / path).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("text"), str):
                texts.append(row["text"])
    return texts


def html_texts(root: str) -> list[str]:
    from resiliparse.extract.html2text import extract_plain_text

    return [extract_plain_text(Path(f).read_text(encoding="utf-8", errors="replace"),
                               main_content=True)
            for f in sorted(glob.glob(f"{root}/**/*.html", recursive=True))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html-dir", default=None)
    args = parser.parse_args()
    corpora = {"data/sample": sample_texts()}
    if args.html_dir:
        corpora[args.html_dir] = html_texts(args.html_dir)
    stages = {"pii (emails, ips)": PiiRedactor(), "pii (+ phones)": PiiRedactor(phones=True),
              "tokens cl100k_base": TokenCounter()}
    stages["tokens cl100k_base"].setup()  # the load is per worker, not per batch
    for corpus, texts in corpora.items():
        mb = sum(len(t.encode()) for t in texts) / 1e6
        batch = DocumentBatch("bench", "bench", pa.table({"text": texts}))
        for label, stage in stages.items():
            best = float("inf")
            for _ in range(3):
                start = time.process_time()
                out = stage.run([batch])[0]
                best = min(best, time.process_time() - start)
            print(f"{corpus}: {len(texts)} docs, {mb:.1f} MB | {label}: "
                  f"{len(texts) / best:,.0f} docs/s/core, {mb / best:.1f} MB/s/core | "
                  f"{out.stage_history[-1].custom_metrics}")


if __name__ == "__main__":
    main()
