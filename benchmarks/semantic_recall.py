"""Semantic dedup's recall and precision by threshold: the product against an exhaustive comparison.

    python benchmarks/semantic_recall.py --n-base 400 --n-single 200 --n-templated 100 \
        --cache /tmp/paraphrase_1500.npz [--n-clusters 15]

Embeds a corpus of ``tests/paraphrase_corpus.py`` with the bundled model (CPU; ``--cache`` keeps
the vectors for the next run), then fits :class:`SemanticDuplicateRemover` in process at each
threshold three ways: the product (each document compared in its ``assignments`` nearest
clusters), one cluster per document (``assignments=1``, the rule before multi-assignment) and
one cluster for all (the exhaustive comparison). Prints, per threshold, precision and recall of
the planted paraphrases, the similarity pairs each way computes and its fit time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from curator_stages.tasks import DocumentBatch  # noqa: E402
from tests.paraphrase_corpus import make_paraphrase_corpus  # noqa: E402

THRESHOLDS = (0.80, 0.84, 0.86, 0.88, 0.90)


def embedded(corpus, cache: str | None) -> np.ndarray:
    """(docs, 384) vectors of the corpus, from ``cache`` when it holds the same ids."""
    ids = [d["id"] for d in corpus.docs]
    if cache and Path(cache).is_file():
        saved = np.load(cache, allow_pickle=False)
        if saved["ids"].tolist() == ids:
            return saved["vectors"]
    from curator_stages.models import EmbeddingStage

    stage = EmbeddingStage(device="cpu", cpus=os.cpu_count() or 1)
    stage.setup()
    out = [o for t in corpus.tasks(docs_per_task=500) for o in stage.run([t])]
    col = pa.chunked_array([o.data.column("embedding") for o in out]).combine_chunks()
    vectors = col.flatten().to_numpy().reshape(len(col), -1)
    if cache:
        np.savez(cache, ids=np.array(ids), vectors=vectors)
    return vectors


def pairs_compared(stage, vectors: np.ndarray) -> int:
    """Similarity pairs the fit computes: sum over clusters of n(n-1)/2."""
    from curator_stages.models.semantic_dedup import assign_clusters, train_centroids

    table = pa.table({"key": [f"{i:08d}" for i in range(len(vectors))],
                      "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                               vectors.shape[1])})
    k = stage.clusters_for(len(vectors))
    centroids = train_centroids(table, k, stage.iterations, stage.seed, stage.stage_name)
    sizes = np.bincount(assign_clusters(vectors, centroids, stage.assignments).reshape(-1))
    return int((sizes * (sizes - 1) // 2).sum())


def main() -> None:
    from curator_stages.models import SemanticDuplicateRemover

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-base", type=int, default=400)
    parser.add_argument("--n-single", type=int, default=200)
    parser.add_argument("--n-templated", type=int, default=100)
    parser.add_argument("--n-clusters", type=int, default=None,
                        help="k-means clusters (default: the stage's, one per 1000 documents)")
    parser.add_argument("--assignments", type=int, default=None,
                        help="nearest clusters per document for the product (default: the stage's)")
    parser.add_argument("--cache", default=None, help=".npz file that keeps the embeddings")
    args = parser.parse_args()
    corpus = make_paraphrase_corpus(args.n_base, args.n_single, args.n_templated)
    start = time.perf_counter()
    vectors = embedded(corpus, args.cache)
    print(f"{len(vectors)} documents, {len(corpus.paraphrases)} paraphrases "
          f"(embedded or loaded in {time.perf_counter() - start:.0f} s)")
    ids = [d["id"] for d in corpus.docs]
    tasks = [DocumentBatch(task_id=str(i), dataset_name="paraphrase", data=pa.table({
        "id": ids[i:i + 500], "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vectors[i:i + 500].reshape(-1)), vectors.shape[1])}))
        for i in range(0, len(ids), 500)]
    product = {"n_clusters": args.n_clusters}
    if args.assignments:
        product["assignments"] = args.assignments
    ways = {"product": product,
            "1 cluster/doc": {"n_clusters": args.n_clusters, "assignments": 1},
            "exhaustive": {"n_clusters": 1, "assignments": 1}}
    print("| threshold | " + " | ".join(f"{w} P / R" for w in ways) + " |")
    print("|---" * (len(ways) + 1) + "|")
    cost: dict[str, list[float]] = {w: [] for w in ways}
    for t in THRESHOLDS:
        cells = []
        for way, kwargs in ways.items():
            stage = SemanticDuplicateRemover(threshold=t, **kwargs)
            start = time.perf_counter()
            filt = stage.fit_local(tasks)
            cost[way].append(time.perf_counter() - start)
            removed = {i for t_ in tasks for i, gone in zip(
                t_.data.column("id").to_pylist(), filt.remove.contains(t_.data.column("id")))
                if gone}
            score = corpus.score(removed)
            cells.append(f"{score['precision']:.3f} / {score['recall']:.3f}")
        print(f"| {t:.2f} | " + " | ".join(cells) + " |")
    for way, kwargs in ways.items():
        stage = SemanticDuplicateRemover(**kwargs)
        print(f"{way}: {stage.clusters_for(len(vectors))} clusters x {stage.assignments} "
              f"assignment(s), {pairs_compared(stage, vectors):,} pairs compared, fit "
              f"{np.median(cost[way]):.2f} s (median of {len(THRESHOLDS)})")


if __name__ == "__main__":
    main()
