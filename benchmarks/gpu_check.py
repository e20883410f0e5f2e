"""GPU proof for the model stages, in one command on a machine with one NVIDIA GPU:

    pip install -e ".[models]"   # torch with CUDA, transformers, the bundled model, faiss-cpu
    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --cpu --docs 400 --dedup-docs 2000   # the same steps on CPU

It shows, each as a section of the printed report and of the JSON written to ``--out``:

1. ``placement``: EmbeddingStage as a Ray Data actor with ``num_gpus=1``; the actor reports its
   torch device, the card's name, Ray's GPU ids and the memory torch allocated on the card.
2. ``sharing``: two EmbeddingStages of ``gpus=0.5`` in one pipeline; both actors report the same
   card, and Ray's plan shows 0.5 GPU each.
3. ``throughput``: docs/s on the GPU against the CPU on the same ``--docs`` documents (default
   20,000), and the cosine between the GPU and CPU embedding of every row (must be >= 0.999);
   with ``--cpu``, the CPU's docs/s only (no speedup: there is nothing to compare it with).
4. ``semantic_dedup``: EmbeddingStage on the GPU then SemanticDuplicateRemover on about
   ``--dedup-docs`` documents (default 100,000) of the paraphrase corpus, with the recall of
   its planted paraphrases, the fit's time and the machine's peak memory above its baseline;
   passes when the recall is within 0.5 points of an exhaustive comparison's on the same
   vectors at the same threshold (one cluster, in process, after the measured fit).

With ``--cpu`` every "GPU" step runs on the CPU instead (no card needed), so the script itself
is known to work on a machine without one. It exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, loopback-only cluster
_ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _ROOT)
# Ray workers import this checkout's package (and this script's stages) too, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402

from benchmarks.bench_embeddings import doc_tasks, make_docs  # noqa: E402
from curator_stages.models import EmbeddingStage, SemanticDuplicateRemover  # noqa: E402
from curator_stages.tasks import DocumentBatch  # noqa: E402

PROBE_KEY = "gpu_check_probe"


class ProbedEmbedding(EmbeddingStage):
    """EmbeddingStage that also says, on each output task, where its actor ran."""

    def process(self, task: DocumentBatch) -> DocumentBatch:
        import ray
        import torch

        out = super().process(task)
        probe: dict[str, Any] = {"stage": self.stage_name, "pid": os.getpid(),
                                 "device": self.worker_device,
                                 "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                                 "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if self.worker_device == "cuda":
            probe.update(torch_device=str(next(self._model.parameters()).device),
                         dtype=str(next(self._model.parameters()).dtype),
                         card=torch.cuda.get_device_name(),
                         max_memory_allocated_mb=round(torch.cuda.max_memory_allocated() / 2**20),
                         memory_reserved_mb=round(torch.cuda.memory_reserved() / 2**20))
        out._metadata[f"{PROBE_KEY}:{self.stage_name}"] = probe
        return out


def _run(stages: list, tasks: list[DocumentBatch]) -> tuple[list[DocumentBatch], list, float]:
    import ray

    from curator_stages.backends.ray_data import apply_stages, surfaced_stage_errors

    plans: list = []
    start = time.perf_counter()
    with surfaced_stage_errors():
        out = [r["item"] for r in apply_stages(ray.data.from_items(tasks), stages,
                                               plans=plans).take_all()]
    return out, plans, time.perf_counter() - start


def _vectors(tasks: list[DocumentBatch], field: str = "embedding") -> dict[str, np.ndarray]:
    out = {}
    for t in tasks:
        col = t.data.column(field).combine_chunks()
        vecs = col.flatten().to_numpy().reshape(len(col), -1)
        out.update(zip(t.data.column("id").to_pylist(), vecs))
    return out


def _probes(tasks: list[DocumentBatch]) -> list[dict[str, Any]]:
    seen = {}
    for t in tasks:
        for key, p in t._metadata.items():
            if key.startswith(PROBE_KEY):
                seen[(p["stage"], p["pid"])] = p
    return list(seen.values())


def check_placement(device: str, n: int) -> dict[str, Any]:
    stage = ProbedEmbedding(device=device, gpus=1.0, cpus=1, name="embed_gpu1")
    out, plans, elapsed = _run([stage], doc_tasks(make_docs(n), per_task=max(1, n // 4)))
    probes = _probes(out)
    ok = all(p["device"] == device for p in probes) and plans[0].mode == "actor"
    if device == "cuda":
        ok = ok and plans[0].gpus == 1 and all(p["torch_device"].startswith("cuda") for p in probes)
    return {"ok": ok, "plan": plans[0].describe(), "actors": probes, "seconds": round(elapsed, 1)}


def check_sharing(device: str, n: int) -> dict[str, Any]:
    a = ProbedEmbedding(device=device, gpus=0.5, cpus=1, name="embed_half_a")
    b = ProbedEmbedding(device=device, gpus=0.5, cpus=1, name="embed_half_b",
                        embedding_field="embedding_b")
    out, plans, elapsed = _run([a, b], doc_tasks(make_docs(n), per_task=max(1, n // 8)))
    probes = _probes(out)
    ok = {p["stage"] for p in probes} == {"embed_half_a", "embed_half_b"}
    if device == "cuda":
        ok = ok and all(p.gpus == 0.5 for p in plans) and len(
            {tuple(p["ray_gpu_ids"]) for p in probes}) == 1
    return {"ok": ok, "plans": [p.describe() for p in plans], "actors": probes,
            "seconds": round(elapsed, 1)}


class CardSampler:
    """Samples ``nvidia-smi`` (utilisation %, memory used) every half second while active."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import subprocess

        while not self._done.wait(0.5):
            try:
                line = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                     "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True, text=True, timeout=5).stdout.strip()
                util, mem = (float(x) for x in line.split(","))
                self.samples.append((util, mem))
            except (OSError, ValueError, subprocess.SubprocessError):
                return

    def __enter__(self) -> "CardSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0}
        util = [u for u, _ in self.samples]
        return {"samples": len(util), "util_mean_pct": round(float(np.mean(util)), 1),
                "util_max_pct": max(util), "memory_used_max_mb": max(m for _, m in self.samples)}


def check_throughput(device: str, n: int, cpus: int) -> dict[str, Any]:
    tasks = doc_tasks(make_docs(n, seed=1), per_task=1000 if n >= 4000 else max(1, n // 4))
    if device == "cpu":  # nothing to compare the CPU with: its rate only
        out, plans, elapsed = _run([EmbeddingStage(device="cpu", cpus=1)], tasks)
        return {"ok": sum(t.num_items for t in out) == n, "docs": n, "run_device": device,
                "run_docs_s": round(n / elapsed, 1), "cpu_actors_max": plans[0].pool_max,
                "cpu_count": cpus, "speedup": "not measured: --cpu has no GPU to compare",
                "plans": [plans[0].describe()]}
    with CardSampler() as card:
        fast, plans_fast, t_fast = _run([EmbeddingStage(device=device, gpus=1.0, cpus=1)], tasks)
    slow, plans_slow, t_slow = _run([EmbeddingStage(device="cpu", cpus=1)], tasks)
    vf, vs = _vectors(fast), _vectors(slow)
    ids = sorted(vs)
    cos = np.array([float(vf[i] @ vs[i]) for i in ids])
    return {"ok": bool(cos.min() >= 0.999) and len(vf) == n, "docs": n,
            "run_device": device, "run_docs_s": round(n / t_fast, 1),
            "cpu_docs_s": round(n / t_slow, 1),
            "speedup": round(t_slow / t_fast, 2), "cpu_actors_max": plans_slow[0].pool_max,
            "cpu_count": cpus, "cosine_min": round(float(cos.min()), 6),
            "cosine_mean": round(float(cos.mean()), 6), "card_during_run": card.summary(),
            "plans": [plans_fast[0].describe(), plans_slow[0].describe()]}


#: How far the product's recall may fall below the exhaustive comparison's on the same vectors.
RECALL_SLACK = 0.005


def check_semantic_dedup(device: str, n: int) -> dict[str, Any]:
    """Embed and dedup about ``n`` documents of the paraphrase corpus (tests/paraphrase_corpus.py:
    base, near-miss and paraphrase per group); report the paraphrases' recall and peak memory.

    The bar is what the model allows: an exhaustive comparison (one cluster, in process) of the
    same vectors at the same threshold; the product must come within ``RECALL_SLACK`` of its
    recall. (The corpus' absolute recall falls as it grows: with tens of thousands of bases drawn
    from 64 sentence frames, a paraphrase's nearest kept neighbour is often another base.)"""
    import psutil
    import ray

    from tests.paraphrase_corpus import make_paraphrase_corpus

    corpus = make_paraphrase_corpus(n_base=max(8, n // 3), n_single=0, n_templated=0)
    tasks = corpus.tasks(docs_per_task=1000 if n >= 4000 else max(1, n // 4))
    baseline = psutil.virtual_memory().used
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], psutil.virtual_memory().used)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    embedded, _, t_embed = _run([EmbeddingStage(device=device, gpus=1.0, cpus=1)], tasks)
    start = time.perf_counter()
    stage = SemanticDuplicateRemover()
    filt = stage.fit(ray.data.from_items(embedded))
    t_fit = time.perf_counter() - start
    done.set()
    watcher.join()
    removed = {i for t in embedded for i, gone in zip(t.data.column("id").to_pylist(),
                                                        filt.remove.contains(t.data.column("id")))
               if gone}
    score = corpus.score(removed)
    start = time.perf_counter()
    exhaustive_filter = SemanticDuplicateRemover(n_clusters=1).fit_local(embedded)
    t_exhaustive = time.perf_counter() - start
    exhaustive = corpus.score({i for t in embedded for i, gone in zip(
        t.data.column("id").to_pylist(), exhaustive_filter.remove.contains(t.data.column("id")))
        if gone})
    # With tens of thousands of bases drawn from 64 sentence frames, many bases share most
    # frames (templated look-alikes), so precision here is not the quality measure; recall is.
    return {"ok": score["recall"] >= exhaustive["recall"] - RECALL_SLACK,
            "docs": len(corpus.docs), "n_clusters": stage.clusters_for(len(corpus.docs)),
            "assignments": stage.assignments,
            "paraphrases": len(corpus.paraphrases), "removed": len(removed),
            "paraphrase_recall": round(score["recall"], 3),
            "paraphrase_precision": round(score["precision"], 3),
            "exhaustive_recall": round(exhaustive["recall"], 3),
            "exhaustive_precision": round(exhaustive["precision"], 3),
            "required_recall": round(exhaustive["recall"] - RECALL_SLACK, 3),
            "exhaustive_in_process_s": round(t_exhaustive, 1),
            "embed_s": round(t_embed, 1), "embed_docs_s": round(len(corpus.docs) / t_embed, 1),
            "fit_s": round(t_fit, 1),
            "peak_machine_memory_above_baseline_mb": round((peak[0] - baseline) / 2**20)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run every step on the CPU")
    parser.add_argument("--docs", type=int, default=20_000, help="documents for throughput")
    parser.add_argument("--dedup-docs", type=int, default=100_000)
    parser.add_argument("--probe-docs", type=int, default=2_000,
                        help="documents for the placement and sharing checks")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--checks", default="placement,sharing,throughput,semantic_dedup",
                        help="comma-separated subset of the checks to run")
    args = parser.parse_args()

    import ray
    import torch

    device = "cpu" if args.cpu else "cuda"
    report: dict[str, Any] = {"device": device, "torch": torch.__version__,
                              "torch_cuda": torch.version.cuda,
                              "cuda_available": torch.cuda.is_available()}
    if device == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device visible to torch; run with --cpu or on a GPU machine")
            return 2
        props = torch.cuda.get_device_properties(0)
        report["card"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    cpus = os.cpu_count() or 1
    for attempt in range(3):  # a loaded machine can time out Ray's node start; try again
        try:
            ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                     log_to_driver=False, **({"num_gpus": 0} if args.cpu else {}))
            break
        except Exception as exc:  # noqa: BLE001 - re-raised after the last attempt
            print(f"ray.init failed (attempt {attempt + 1}/3): {exc}", flush=True)
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(10)
    ray.data.DataContext.get_current().enable_progress_bars = False
    report["ray_cluster"] = {k: v for k, v in ray.cluster_resources().items()
                             if k in ("CPU", "GPU", "memory")}
    checks = [("placement", lambda: check_placement(device, args.probe_docs)),
              ("sharing", lambda: check_sharing(device, args.probe_docs)),
              ("throughput", lambda: check_throughput(device, args.docs, cpus)),
              ("semantic_dedup", lambda: check_semantic_dedup(device, args.dedup_docs))]
    wanted = set(args.checks.split(","))
    unknown = wanted - {name for name, _ in checks}
    if unknown:
        parser.error(f"--checks: unknown {sorted(unknown)}")
    checks = [(name, check) for name, check in checks if name in wanted]
    try:
        for name, check in checks:
            start = time.perf_counter()
            try:
                report[name] = check()
            except Exception as exc:  # noqa: BLE001 - reported, the next check still runs
                report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            report[name]["wall_s"] = round(time.perf_counter() - start, 1)
            print(f"== {name}: {json.dumps(report[name], default=str)}", flush=True)
    finally:
        ray.shutdown()
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    failed = [name for name, _ in checks if not report[name].get("ok")]
    print(f"checks failed: {failed}" if failed else "all checks passed", f"(report: {args.out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
