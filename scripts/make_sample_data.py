"""Regenerate data/sample/: the small committed corpus used by examples, flows and tests.

3000 documents in 4 shards (two plain, one .gz, one .zst) with planted junk, exact and near
duplicates, a handful of malformed lines (bad JSON, invalid UTF-8, missing or non-string text,
non-object) and the ground-truth sidecars. Deterministic: running it again gives the same bytes.

    python scripts/make_sample_data.py [--out data/sample]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curator_stages.corpus import generate_corpus  # noqa: E402

SAMPLE = dict(num_docs=3000, shards=4, seed=20240601, malformed=True,
              compression=[None, None, "gzip", "zstd"], median_words=100, max_words=3000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "data" / "sample"))
    args = parser.parse_args()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    manifest = generate_corpus(args.out, workers=1, **SAMPLE)
    total = sum(p.stat().st_size for p in Path(args.out).iterdir())
    print(f"wrote {manifest['documents']} documents in {len(manifest['files'])} shards to "
          f"{args.out} ({total / 1e6:.2f} MB); kinds: {manifest['kinds']}; "
          f"malformed lines: {len(manifest['malformed_lines'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
