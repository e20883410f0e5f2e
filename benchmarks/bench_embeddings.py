"""Embedding throughput: a plain sentence-transformers ``encode`` loop against EmbeddingStage on
Ray Data, on the same documents of about ``--tokens`` tokens; and the peak memory of a semantic
dedup fit on ``--semdedup-docs`` synthetic embeddings.

    python benchmarks/bench_embeddings.py [--docs 1000] [--tokens 256] [--repeats 3] [--cpus 2]
                                          [--semdedup-docs 200000]

Both sides use the bundled all-MiniLM-L6-v2 on the CPU with ``--cpus`` cores: the loop as one
process with that many torch threads (``encode(batch_size=32)``), the stage as a Ray Data actor
pool of one-thread actors (token-budget batches). The passes alternate (loop, stage, loop, ...)
so both see the same load. Each stage pass is a whole Ray Data execution, so it pays for
starting its actors and loading the weights; the loop loads once before timing. Prints
min/median/max docs/s per side and one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _ROOT)
# Ray workers import this checkout's package (and this script's stages) too, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from curator_stages.tasks import DocumentBatch  # noqa: E402

_WORDS = ("council approved plan build homes railway station residents raised concerns traffic "
          "narrow roads vote followed public consultation drew responses work expected begin "
          "spring spokesperson added bus route link town centre opponents argued land kept park "
          "final designs published website month team scored twice beat rivals crowd largest "
          "season manager praised spirit difficult results bakery sells sourdough flour mill "
          "loaves baked overnight sold customers queue early prices start energy bills river "
          "flooding closed evacuated forecasters warned insurers estimate damage library reopen "
          "renovation children reading room computers hospital wing beds nurses staffing").split()


def make_docs(n: int, tokens: int = 256, seed: int = 0) -> list[str]:
    """``n`` documents of about ``tokens`` word-piece tokens (about 0.8 words per token here)."""
    rng = random.Random(seed)
    words = max(8, int(tokens * 0.8))
    docs = []
    for i in range(n):
        body = " ".join(rng.choice(_WORDS) for _ in range(words))
        docs.append(f"Report {i}: {body}.")
    return docs


def doc_tasks(texts: list[str], per_task: int = 250) -> list[DocumentBatch]:
    return [DocumentBatch(task_id=f"b{i}", dataset_name="bench",
                          data=pa.table({"id": [f"d{j:08d}" for j in range(i, i + len(chunk))],
                                         "text": chunk}))
            for i in range(0, len(texts), per_task) for chunk in [texts[i:i + per_task]]]


def load_loop_model(cpus: int):
    import torch
    from sentence_transformers import SentenceTransformer

    from curator_stages.models import bundled_model_path

    torch.set_num_threads(cpus)
    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    model.encode(["warm-up"] * 32, batch_size=32)
    return model


def loop_rate(model, texts: list[str]) -> float:
    """One pass of the plain sentence-transformers loop (weights already loaded), docs/s."""
    start = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - start)


def stage_rate(texts: list[str]) -> float:
    """One whole Ray Data execution of EmbeddingStage (actor start and weight load included)."""
    import ray

    from curator_stages.backends.ray_data import apply_stages
    from curator_stages.models import EmbeddingStage

    ds = ray.data.from_items(doc_tasks(texts))
    start = time.perf_counter()
    rows = sum(r["item"].num_items for r in apply_stages(
        ds, [EmbeddingStage(device="cpu", cpus=1)]).iter_rows())
    return rows / (time.perf_counter() - start)


def bench_interleaved(texts: list[str], cpus: int, repeats: int) -> tuple[list[float], list[float]]:
    """Loop pass, stage pass, loop pass, ...: both sides see the same machine load. The embedded
    Ray is the product's own (127.0.0.1, token auth); its actors are idle during loop passes."""
    import ray

    from curator_stages.runtime.ray_cluster import start_local_ray

    model = load_loop_model(cpus)
    start_local_ray(cpus, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    loop, stage = [], []
    try:
        for _ in range(repeats):
            loop.append(loop_rate(model, texts))
            stage.append(stage_rate(texts))
            print(f"loop {loop[-1]:.1f} docs/s, stage {stage[-1]:.1f} docs/s", flush=True)
    finally:
        ray.shutdown()
    return loop, stage


def bench_semdedup(n: int, dim: int = 384, seed: int = 0) -> dict[str, float]:
    """Fit SemanticDuplicateRemover in process on ``n`` unit vectors with 10% planted near-copies;
    report wall time and the process's peak RSS above its baseline."""
    import psutil

    from curator_stages.models import SemanticDuplicateRemover

    rng = np.random.default_rng(seed)
    copies = n // 10
    base = rng.normal(size=(n - copies, dim)).astype(np.float32)
    near = base[:copies] + rng.normal(scale=0.02, size=(copies, dim)).astype(np.float32)
    vectors = np.vstack([base, near])
    ids = [f"d{i:08d}" for i in range(n)]
    per = 10_000
    tasks = [DocumentBatch(task_id=str(i), dataset_name="bench", data=pa.table({
        "id": ids[i:i + per],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[i:i + per].reshape(-1)),
                                                       dim)})) for i in range(0, n, per)]
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    filt = SemanticDuplicateRemover().fit_local(tasks)
    elapsed = time.perf_counter() - start
    done.set()
    watcher.join()
    return {"docs": n, "planted_copies": copies, "removed": len(filt.remove),
            "fit_s": round(elapsed, 1), "inputs_mb": round(vectors.nbytes / 2**20),
            "peak_rss_above_inputs_mb": round((peak[0] - baseline) / 2**20),
            "peak_rss_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _summary(rates: list[float]) -> dict[str, float]:
    return {"min": round(min(rates), 1), "median": round(statistics.median(rates), 1),
            "max": round(max(rates), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--semdedup-docs", type=int, default=0,
                        help="also fit semantic dedup on this many synthetic embeddings")
    args = parser.parse_args()
    texts = make_docs(args.docs, args.tokens)
    result: dict = {"docs": args.docs, "tokens": args.tokens, "cpus": args.cpus,
                    "load_avg_start": os.getloadavg()[0]}
    loop, stage = bench_interleaved(texts, args.cpus, args.repeats)
    result["st_encode_loop_docs_s"] = _summary(loop)
    print("sentence-transformers encode loop, docs/s:", result["st_encode_loop_docs_s"], flush=True)
    result["embedding_stage_ray_docs_s"] = _summary(stage)
    print("EmbeddingStage on Ray Data, docs/s:   ", result["embedding_stage_ray_docs_s"], flush=True)
    result["ratio_median"] = round(statistics.median(stage) / statistics.median(loop), 2)
    if args.semdedup_docs:
        result["semdedup"] = bench_semdedup(args.semdedup_docs)
        print("semantic dedup fit:", result["semdedup"], flush=True)
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
