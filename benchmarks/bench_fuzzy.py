"""Fuzzy dedup on a corpus with no near-duplicate: MinHash and LSH per core, and where the
stage's time goes.

Three measurements in one run, each repeated (min/median/max):
- ``minhash``: signatures + band keys in this process (one core), documents/s;
- ``lsh``: exploding band keys and bucketing them in this process (one core), documents/s;
- ``stage``: ``FuzzyDuplicateRemover.find_duplicates`` on a local Ray, wall seconds per step
  (``FuzzyDedupResult.timings``), against the signature step alone.

    python -m benchmarks.bench_fuzzy --docs 50000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from curator_stages.corpus.generator import CorpusConfig, document_text, doc_id, make_plan
from curator_stages.tasks import DocumentBatch
from curator_stages.text.dedup.fuzzy import FuzzyDuplicateRemover, _signature_batch
from curator_stages.text.dedup.lsh import bucket_pairs, explode_bands
from curator_stages.text.dedup.minhash import permutations


def corpus_tasks(num_docs: int, per_task: int = 2_000, seed: int = 3) -> list[DocumentBatch]:
    """Clean prose only (no junk, no planted copy): no pair is a near-duplicate."""
    cfg = CorpusConfig(num_docs=num_docs, seed=seed, junk_fraction=0.0,
                       exact_dup_fraction=0.0, near_dup_fraction=0.0)
    plan = make_plan(cfg)
    texts = [document_text(cfg, plan, i)[0] for i in range(num_docs)]
    return [DocumentBatch(f"t{k}", "fuzzy", {"id": [doc_id(i) for i in range(k, min(k + per_task, num_docs))],
                                             "text": texts[k:k + per_task]})
            for k in range(0, num_docs, per_task)]


def _stats(values: list[float]) -> str:
    return f"{min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args(argv)
    tasks = corpus_tasks(args.docs)
    stage = FuzzyDuplicateRemover()
    bands, rows = stage.banding()
    a, b = permutations(stage.num_perm, stage.seed)
    kw = dict(text_field="text", id_field="id", ngram_size=stage.ngram_size, word_ngrams=False,
              a=a, b=b, bands=bands, rows=rows, stage_name="bench")

    import ray

    from curator_stages.runtime.ray_cluster import start_local_ray

    start_local_ray(args.cpus, log_to_driver=False, warm=False)
    try:
        ds = ray.data.from_items(tasks).materialize()
        rates: dict[str, list[float]] = {}
        steps: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            t0 = time.process_time()
            sig_tables = [_signature_batch({"item": np.array([t], dtype=object)}, **kw) for t in tasks]
            rates.setdefault("minhash docs/s/core", []).append(args.docs / (time.process_time() - t0))
            t0 = time.process_time()
            for t in sig_tables:  # one partition per block: the per-core cost of LSH bucketing
                bucket_pairs(explode_bands(t))
            rates.setdefault("lsh docs/s/core", []).append(args.docs / (time.process_time() - t0))
            t0 = time.perf_counter()
            result = stage.find_duplicates(ds)
            steps.setdefault("total", []).append(time.perf_counter() - t0)
            for k, v in result.timings.items():
                steps.setdefault(k, []).append(v)
            assert result.candidate_pairs == 0 or result.remove.__len__() == 0, result.candidate_pairs
        print(f"{args.docs} documents, no near-duplicate, bands={bands} rows={rows}, "
              f"{args.cpus} Ray CPUs, {args.repeats} repeats (min median max)")
        for k, v in rates.items():
            print(f"{k:>24} {_stats(v)}")
        for k, v in steps.items():
            print(f"{'stage ' + k + ' s':>24} {_stats(v)}")
        ratio = [t / s for t, s in zip(steps["total"], steps["signatures"])]
        print(f"{'stage / signatures':>24} {min(ratio):8.2f} {statistics.median(ratio):8.2f} {max(ratio):8.2f}")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
