"""Web curation speed: our flow against datatrove on the same WARC files, and the extractors.

    python benchmarks/bench_web.py --source DIR [--pages 200] [--files 4] [--out /tmp/bench_web]

``--source`` is where the Debian documentation packages are unpacked (see
scripts/make_web_sample.py; without it they are downloaded). The script builds ``--files``
WARC files of ``--pages`` real pages (clean records: datatrove's reader stops at a damaged
member), then measures, each as a process tree (wall, peak PSS: benchmarks/monitor.py):

* ``ours``: ``python flows/web_curation.py`` on the files (read -> trafilatura -> the Gopher +
  C4 + FineWeb quality filter -> write; language id, dedup, PII and tokens off, since the peer
  has none of them), 2 CPUs;
* ``ours-resiliparse``: the same with ``--extractor resiliparse``;
* ``datatrove``: datatrove's ``WarcReader`` -> ``Trafilatura`` (same options) -> the very same
  ``HeuristicFilter`` object (a small datatrove step) -> ``JsonlWriter`` on its
  ``LocalPipelineExecutor`` with 2 workers, one task per file.

It checks the outputs are equal (same pages, same text), and times both extractors on every
page in this one process (docs/s per core) with their agreement: the share of pages whose
extracted word sets have a Jaccard similarity >= 0.8. Results: JSON on stdout, in
``<out>/bench_web.json`` and in ``benchmarks/results/bench_web-<stamp>.json`` (ignored by git).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

WORKERS = 2


def build_warcs(root: Path, out: Path, pages: int, files: int) -> list[Path]:
    """``files`` WARC files holding ``pages`` Python-docs and Debian Reference pages."""
    import make_web_sample as mk

    chosen = mk.python_pages(root, pages - 12) + mk.debref_pages(root)
    warcs = [mk.Warc(f"bench-{i:05d}.warc.gz") for i in range(files)]
    for w in warcs:
        w.warcinfo()
    for i, page in enumerate(chosen):
        url = (mk.DEBREF_URL + page.name if "debian-reference" in str(page)
               else mk.PY_URL + page.relative_to(root / mk.PY_HTML).as_posix())
        warcs[i % files].fetch(url, page.read_bytes(), "text/html; charset=utf-8")
    out.mkdir(parents=True, exist_ok=True)
    return [w.write(out) for w in warcs]


def quality_filter() -> Any:
    """The web flow's quality filter with its default rules (the same object for both)."""
    from flows.web_curation import WebCurationParams, build_stage_groups

    params = WebCurationParams.model_construct(**{
        k: f.default for k, f in WebCurationParams.model_fields.items()
        if f.default_factory is None})
    params.banned_url_substrings = []
    return next(s for g in build_stage_groups(params) for s in g
                if s.stage_name == "quality_filter")


def run_datatrove(input_dir: str, output_dir: str, work_dir: str) -> None:
    from datatrove.data import Document
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    import pyarrow as pa

    from curator_stages.tasks import DocumentBatch
    from curator_stages.text.html_extract import DEFAULT_OPTIONS

    class Quality(PipelineStep):
        """Our HeuristicFilter on batches of datatrove documents."""

        name, type = "curator_stages quality filter", "Filter"

        def __init__(self, stage: Any) -> None:
            super().__init__()
            self.stage = stage

        def _flush(self, docs: list[Document]) -> Iterator[Document]:
            table = pa.table({"id": [d.id for d in docs], "text": [d.text for d in docs]})
            kept = set(self.stage.run([DocumentBatch(task_id="b", dataset_name="d",
                                                     data=table)])[0].data.column("id")
                       .to_pylist())
            yield from (d for d in docs if d.id in kept)

        def run(self, data, rank: int = 0, world_size: int = 1):
            batch: list[Document] = []
            for doc in data:
                batch.append(doc)
                if len(batch) == 256:
                    yield from self._flush(batch)
                    batch = []
            if batch:
                yield from self._flush(batch)

    opts = DEFAULT_OPTIONS["trafilatura"]
    files = len([f for f in os.listdir(input_dir) if f.endswith(".warc.gz")])
    LocalPipelineExecutor(pipeline=[
        WarcReader(input_dir, glob_pattern="*.warc.gz"),
        Trafilatura(favour_precision=opts["favor_precision"], deduplicate=opts["deduplicate"],
                    timeout=60),
        Quality(quality_filter()),
        JsonlWriter(output_dir),
    ], tasks=files, workers=WORKERS, logging_dir=work_dir).run()


def texts_by_url(output_dir: Path) -> dict[str, str]:
    out = {}
    for path in sorted(output_dir.rglob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            for line in f:
                row = json.loads(line)
                url = row.get("url") or row.get("metadata", {}).get("url")
                out[url] = row["text"]
    return out


def extractor_speed(warcs: list[Path]) -> dict[str, Any]:
    """Both extractors on every page, serially in this process: docs/s per core, agreement."""
    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    from curator_stages.io.warc_reader import WarcReadStage
    from curator_stages.tasks import FileGroupTask
    from curator_stages.text.html_extract import DEFAULT_OPTIONS

    htmls = []
    for path in warcs:
        batch = WarcReadStage().run([FileGroupTask(task_id=path.name, dataset_name="w",
                                                   data=[str(path)])])[0]
        htmls += batch.to_pyarrow().column("html").to_pylist()
    t_opts, r_opts = DEFAULT_OPTIONS["trafilatura"], DEFAULT_OPTIONS["resiliparse"]
    start = time.perf_counter()
    traf = [trafilatura.extract(h, **t_opts) or "" for h in htmls]
    t_traf = time.perf_counter() - start
    start = time.perf_counter()
    resi = [extract_plain_text(HTMLTree.parse(h), **r_opts) for h in htmls]
    t_resi = time.perf_counter() - start
    agree = 0
    for a, b in zip(traf, resi):
        wa, wb = set(a.split()), set(b.split())
        agree += (len(wa & wb) / len(wa | wb) if wa | wb else 1.0) >= 0.8
    mb = sum(p.stat().st_size for p in warcs) / 1e6
    return {"pages": len(htmls), "trafilatura_docs_per_s": len(htmls) / t_traf,
            "resiliparse_docs_per_s": len(htmls) / t_resi, "speedup": t_traf / t_resi,
            "trafilatura_warc_mb_per_s": mb / t_traf, "resiliparse_warc_mb_per_s": mb / t_resi,
            "agreement_jaccard_0_8": agree / len(htmls)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="unpacked documentation packages (else downloaded)")
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "bench_web"))
    parser.add_argument("--variant", choices=["datatrove"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant == "datatrove":
        run_datatrove(args.input, args.output, args.work)
        return 0

    from benchmarks.monitor import run_measured
    import make_web_sample as mk

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.source) if args.source else mk.unpack(Path(tmp))
        warcs = build_warcs(root, out / "warc", args.pages, args.files)
    mb = sum(p.stat().st_size for p in warcs) / 1e6
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(out / "prefect-home"))
    flow = [sys.executable, str(REPO / "flows" / "web_curation.py"), "--input",
            str(out / "warc"), "--no-language-id", "--no-exact-dedup", "--no-fuzzy-dedup",
            "--no-pii", "--no-count-tokens",
            "--output-format", "jsonl", "--num-cpus", str(WORKERS), "--extract-timeout-s", "60",
            "--dropped-examples-per-rule", "0"]
    variants = {
        "ours": [*flow, "--output", str(out / "ours"), "--work-dir", str(out / "ours-work")],
        "ours-resiliparse": [*flow, "--extractor", "resiliparse", "--output",
                             str(out / "ours-resiliparse"), "--work-dir", str(out / "rp-work")],
        "datatrove": [sys.executable, __file__, "--variant", "datatrove", "--input",
                      str(out / "warc"), "--output", str(out / "datatrove"), "--work",
                      str(out / "dt-work")],
    }
    results: dict[str, Any] = {"warc_mb": mb, "files": len(warcs), "workers": WORKERS}
    for name, cmd in variants.items():
        log = open(out / f"{name}.log", "w")
        usage = run_measured(cmd, env=env, stdout=log, stderr=log, timeout_s=1200)
        assert usage.returncode == 0, f"{name} failed: see {out / (name + '.log')}"
        row = {"wall_s": usage.wall_s, "cpu_s": usage.cpu_s,
               "peak_tree_pss_mb": usage.peak_tree_pss_mb}
        if name.startswith("ours"):
            summary = json.loads((out / name / "run_summary.json").read_text())
            row["flow_wall_s"] = summary["wall_time_s"]
            row["pages"] = summary["documents_read"] - summary["documents_skipped"]
            row["written"] = summary["documents_written"]
        results[name] = row
    pages = results["ours"]["pages"]
    for name in variants:
        r = results[name]
        r["docs_per_s"] = pages / r["wall_s"]
        r["warc_mb_per_s_per_core"] = mb / r["wall_s"] / WORKERS
        if "flow_wall_s" in r:
            r["docs_per_s_flow"] = pages / r["flow_wall_s"]
    ours, theirs = texts_by_url(out / "ours" / "data"), texts_by_url(out / "datatrove")
    results["outputs_equal"] = ours == theirs
    results["pages_written"] = {"ours": len(ours), "datatrove": len(theirs),
                                "same_text": sum(ours.get(u) == t for u, t in theirs.items())}
    results["extractors"] = extractor_speed(warcs)
    (out / "bench_web.json").write_text(json.dumps(results, indent=1))
    kept = REPO / "benchmarks" / "results" / time.strftime("bench_web-%Y%m%d-%H%M%S.json")
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(results, indent=1))  # beside the harness's results (not in git)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
