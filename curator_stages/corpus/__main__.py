"""CLI: ``python -m curator_stages.corpus --num-docs N --shards K --out DIR [--seed S] [--malformed]``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from curator_stages.corpus.generator import generate_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m curator_stages.corpus",
        description="Write a deterministic synthetic JSONL corpus with planted junk and duplicates "
                    "and a ground-truth sidecar (_ground_truth.jsonl, _manifest.json).")
    parser.add_argument("--num-docs", type=int, required=True, help="documents to generate")
    parser.add_argument("--shards", type=int, default=4, help="JSONL shard files (default 4)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--malformed", action="store_true",
                        help="plant malformed lines (bad JSON, invalid UTF-8, missing text, ...)")
    parser.add_argument("--compression", default="none",
                        help="none, gzip, zstd, or a comma list cycled over shards (none,gzip,zstd)")
    parser.add_argument("--near-dup-edit-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    args = parser.parse_args(argv)
    comps = [None if c in ("", "none") else c for c in args.compression.split(",")]
    start = time.perf_counter()
    manifest = generate_corpus(args.out, num_docs=args.num_docs, shards=args.shards,
                               seed=args.seed, malformed=args.malformed,
                               compression=comps if len(comps) > 1 else comps[0],
                               workers=args.workers, near_dup_edit_rate=args.near_dup_edit_rate)
    elapsed = time.perf_counter() - start
    print(json.dumps({"out": args.out, "documents": manifest["documents"],
                      "files": manifest["files"], "kinds": manifest["kinds"],
                      "seconds": round(elapsed, 2),
                      "docs_per_s": round(manifest["documents"] / max(elapsed, 1e-9))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
