"""The numbers of a run report, gathered from ``run_summary.json`` and the run's output files.

Every count shown comes from the run summary that the orchestration layer writes (itself built
from the :class:`~curator_stages.tasks.StagePerfStats` custom metrics: ``documents_read``,
``documents_quarantined``, ``documents_written``, ``dropped.<reason>``), so the report and the
accounting check can never disagree. What the summary does not carry (the language mix, the text
of dropped documents, quarantine reasons) is read from the files the run wrote, and is simply
left out when those files do not exist.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from curator_stages.tasks import (
    DOCUMENTS_QUARANTINED,
    DOCUMENTS_READ,
    DOCUMENTS_WRITTEN,
    DROPPED_PREFIX,
)

#: How many characters of a dropped document's text a report shows.
EXAMPLE_CHARS = 240
#: Custom-metric keys (of any stage) that a dedup stage may use for what it found.
DUPLICATE_METRIC_KEYS = (
    "duplicate_clusters", "duplicate_groups", "duplicates_found", "duplicate_documents",
    "documents_in_duplicate_clusters",
)


@dataclass(frozen=True)
class FunnelRow:
    stage: str
    documents_in: int | None
    documents_out: int | None
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0

    @property
    def removed(self) -> int:
        """Documents this stage removed: its drops and quarantines (never negative)."""
        counted = sum(self.dropped.values()) + self.quarantined
        if counted:
            return counted
        if self.documents_in is not None and self.documents_out is not None:
            return max(0, self.documents_in - self.documents_out)
        return 0


@dataclass(frozen=True)
class StageTiming:
    stage: str
    time_s: float
    documents_in: int | None
    mode: str | None = None

    @property
    def documents_per_s(self) -> float | None:
        if not self.documents_in or self.time_s <= 0:
            return None
        return self.documents_in / self.time_s


@dataclass
class RunReportData:
    """Everything a report shows, independent of how it is rendered (markdown, chart)."""

    title: str
    documents_read: int
    documents_written: int
    documents_dropped: int
    documents_quarantined: int
    funnel: list[FunnelRow]
    drops_by_rule: dict[tuple[str, str], int]
    timings: list[StageTiming]
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    quarantine_examples: list[str] = field(default_factory=list)
    language_mix: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dropped_examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    wall_time_s: float | None = None
    run_info: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "documents_read": self.documents_read,
            "documents_written": self.documents_written,
            "documents_dropped": self.documents_dropped,
            "documents_quarantined": self.documents_quarantined,
            "funnel": [{"stage": r.stage, "documents_in": r.documents_in,
                        "documents_out": r.documents_out, "dropped": r.dropped,
                        "quarantined": r.quarantined, "removed": r.removed} for r in self.funnel],
            "drops_by_rule": [{"stage": s, "rule": r, "documents": n}
                              for (s, r), n in self.drops_by_rule.items()],
            "quarantine_by_reason": self.quarantine_by_reason,
            "language_mix": self.language_mix,
            "duplicates": self.duplicates,
            "timings": [{"stage": t.stage, "time_s": t.time_s, "documents_in": t.documents_in,
                         "documents_per_s": t.documents_per_s, "mode": t.mode}
                        for t in self.timings],
            "wall_time_s": self.wall_time_s,
        }


# ---------------------------------------------------------------------------- summary access
def _num(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _first(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in d and d[key] is not None:
            return d[key]
    return None


def _stage_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-stage entries of a summary, each with a ``name``, in pipeline order."""
    stages = summary.get("stages") or []
    if isinstance(stages, dict):
        stages = [{"name": k, **v} for k, v in stages.items()]
    out = []
    for entry in stages:
        name = _first(entry, "name", "stage", "stage_name")
        out.append({**entry, "name": str(name)})
    return out


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    metrics = dict(_first(entry, "custom_metrics", "metrics") or {})
    for reason, n in (entry.get("dropped") or {}).items() if isinstance(entry.get("dropped"),
                                                                         dict) else []:
        metrics.setdefault(f"{DROPPED_PREFIX}{reason}", n)
    return metrics


def _drops(entry: dict[str, Any]) -> dict[str, int]:
    return {k[len(DROPPED_PREFIX):]: int(v) for k, v in _metrics(entry).items()
            if k.startswith(DROPPED_PREFIX) and v}


def _totals(summary: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, int]:
    """Run totals from the summary's own totals, else summed over its stages."""
    block = summary.get("totals") or summary.get("accounting") or summary
    names = {
        "read": ("documents_read", "read"),
        "written": ("documents_written", "written"),
        "dropped": ("documents_dropped", "dropped"),
        "quarantined": ("documents_quarantined", "quarantined"),
    }
    totals: dict[str, int] = {}
    for key, candidates in names.items():
        value = _num(_first(block, *candidates)) if isinstance(block, dict) else None
        if value is None:
            if key == "dropped":
                value = sum(sum(_drops(s).values()) for s in stages)
            else:
                metric = {"read": DOCUMENTS_READ, "written": DOCUMENTS_WRITTEN,
                          "quarantined": DOCUMENTS_QUARANTINED}[key]
                value = int(sum(_metrics(s).get(metric, 0) for s in stages))
        totals[key] = value
    return totals


def _funnel_rows(stages: list[dict[str, Any]]) -> list[FunnelRow]:
    """Documents in/out per stage, in the units of documents.

    ``items_in``/``items_out`` count whatever a stage's tasks hold: files before the reader,
    documents after it, files again out of a writer. So: a stage with ``documents_read`` takes
    that as its documents in; a stage with ``documents_written`` gives that as its documents
    out; stages before the first reader handle files, not documents, and are left out.
    """
    readers = [i for i, s in enumerate(stages) if DOCUMENTS_READ in _metrics(s)]
    first_doc_stage = readers[0] if readers else 0
    rows = []
    for entry in stages[first_doc_stage:]:
        metrics = _metrics(entry)
        docs_in = _num(_first(entry, "documents_in", "docs_in"))
        docs_out = _num(_first(entry, "documents_out", "docs_out"))
        if docs_in is None:
            docs_in = (int(metrics[DOCUMENTS_READ]) if DOCUMENTS_READ in metrics
                       else _num(entry.get("items_in")))
        if docs_out is None:
            docs_out = (int(metrics[DOCUMENTS_WRITTEN]) if DOCUMENTS_WRITTEN in metrics
                        else _num(entry.get("items_out")))
        quarantined = int(_num(_first(entry, "documents_quarantined"))
                          or metrics.get(DOCUMENTS_QUARANTINED, 0))
        rows.append(FunnelRow(stage=entry["name"], documents_in=docs_in, documents_out=docs_out,
                              dropped=_drops(entry), quarantined=quarantined))
    return rows


def _timing(entry: dict[str, Any], row: FunnelRow | None) -> StageTiming:
    time_s = float(_first(entry, "wall_time_s", "time_s", "elapsed_s", "process_time_s") or 0.0)
    return StageTiming(stage=entry["name"], time_s=time_s,
                       documents_in=row.documents_in if row else None, mode=_first(entry, "mode"))


# ---------------------------------------------------------------------------- files
def _files(directory: Path, patterns: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    if directory.is_dir():
        for pattern in patterns:
            found.extend(p for p in directory.rglob(pattern) if p.is_file())
    return sorted(set(found))


def _read_table(path: Path, columns: list[str] | None = None):
    """A pyarrow table from a Parquet or JSONL(.gz/.zst) file, or None when unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            schema = pq.read_schema(path)
            cols = [c for c in (columns or schema.names) if c in schema.names]
            return pq.read_table(path, columns=cols)
        import fsspec

        compression = {".gz": "gzip", ".zst": "zstd"}.get(path.suffix)
        with fsspec.open(str(path), "rt", compression=compression, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if columns:
            rows = [{c: r.get(c) for c in columns if c in r} for r in rows]
        return pa.Table.from_pylist(rows) if rows else None
    except Exception:  # noqa: BLE001 - a report never fails on a file it only samples
        return None


_DATA_PATTERNS = ("*.parquet", "*.jsonl", "*.jsonl.gz", "*.jsonl.zst")


def language_mix(output_dir: Path, column: str = "language") -> dict[str, int]:
    """Documents per language in the run's output files (empty when there is no such column)."""
    counts: Counter[str] = Counter()
    for path in _files(output_dir, _DATA_PATTERNS):
        if any(part.startswith(("dropped", "quarantine", ".")) for part in
               path.relative_to(output_dir).parts[:-1]) or path.name.startswith("quarantine-"):
            continue
        table = _read_table(path, [column])
        if table is None or column not in table.column_names:
            continue
        counts.update(str(v) for v in table[column].to_pylist())
    return dict(counts.most_common())


def dropped_examples(directories: Iterable[Path], per_rule: int = 3,
                     chars: int = EXAMPLE_CHARS) -> dict[str, list[tuple[str, str]]]:
    """A few dropped documents per ``drop_reason``, text truncated, from dropped-output files."""
    examples: dict[str, list[tuple[str, str]]] = {}
    for directory in directories:
        for path in _files(directory, _DATA_PATTERNS):
            table = _read_table(path, ["id", "text", "drop_reason"])
            if table is None or "drop_reason" not in table.column_names:
                continue
            for row in table.to_pylist():
                rule = str(row.get("drop_reason"))
                bucket = examples.setdefault(rule, [])
                if len(bucket) < per_rule:
                    bucket.append((str(row.get("id", "")), _truncate(row.get("text"), chars)))
    return dict(sorted(examples.items()))


def quarantine_reasons(directories: Iterable[Path], examples: int = 3,
                       chars: int = 120) -> tuple[dict[str, int], list[str]]:
    """Quarantined records by reason, and a few of them, from quarantine files."""
    counts: Counter[str] = Counter()
    shown: list[str] = []
    for directory in directories:
        for path in _files(directory, ("quarantine-*.jsonl",)):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                reason = str(rec.get("reason", "unknown")).split(":")[0]
                counts[reason] += 1
                if len(shown) < examples:
                    shown.append(f"{rec.get('file')}:{rec.get('line')} {reason}: "
                                 f"{_truncate(rec.get('raw'), chars)}")
    return dict(counts.most_common()), shown


def _truncate(text: Any, chars: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= chars else s[: chars - 1] + "…"


# ---------------------------------------------------------------------------- assembly
def build_report_data(summary: dict[str, Any], output_dir: str | Path | None = None,
                      dropped_dirs: Iterable[str | Path] = (),
                      quarantine_dirs: Iterable[str | Path] = ()) -> RunReportData:
    """Gather a report's numbers from a run summary and, when given, the run's output files."""
    stages = _stage_entries(summary)
    totals = _totals(summary, stages)
    funnel = _funnel_rows(stages)
    by_stage = {r.stage: r for r in funnel}
    drops: dict[tuple[str, str], int] = {}
    for entry in stages:
        for rule, n in _drops(entry).items():
            drops[(entry["name"], rule)] = drops.get((entry["name"], rule), 0) + n
    duplicates: dict[str, int] = {}
    for entry in stages:
        metrics = _metrics(entry)
        for key in DUPLICATE_METRIC_KEYS:
            if metrics.get(key):
                duplicates[key] = duplicates.get(key, 0) + int(metrics[key])
    for key in DUPLICATE_METRIC_KEYS:
        if summary.get(key):
            duplicates[key] = int(summary[key])

    out_dir = Path(output_dir) if output_dir else None
    q_dirs = [Path(p) for p in quarantine_dirs]
    d_dirs = [Path(p) for p in dropped_dirs]
    if out_dir is not None:
        q_dirs = q_dirs or [out_dir / "quarantine" if (out_dir / "quarantine").is_dir()
                            else out_dir]
        d_dirs = d_dirs or [p for p in (out_dir / "dropped",) if p.is_dir()]
    q_by_reason, q_examples = quarantine_reasons(q_dirs) if q_dirs else ({}, [])
    if not q_by_reason and totals["quarantined"]:
        q_by_reason = {"(records not found on disk; count from the run summary)":
                       totals["quarantined"]}
    data_dir = out_dir
    if out_dir is not None and (out_dir / "data").is_dir():
        data_dir = out_dir / "data"
    info = {k: str(summary[k]) for k in ("flow_run_id", "flow", "started", "finished",
                                         "input", "output", "status") if summary.get(k)}
    return RunReportData(
        title=str(_first(summary, "pipeline", "flow", "name") or "run"),
        documents_read=totals["read"], documents_written=totals["written"],
        documents_dropped=totals["dropped"], documents_quarantined=totals["quarantined"],
        funnel=funnel, drops_by_rule=dict(sorted(drops.items(), key=lambda kv: -kv[1])),
        timings=[_timing(s, by_stage.get(s["name"])) for s in stages],
        quarantine_by_reason=q_by_reason, quarantine_examples=q_examples,
        language_mix=language_mix(data_dir) if data_dir is not None else {},
        duplicates=duplicates,
        dropped_examples=dropped_examples(d_dirs) if d_dirs else {},
        wall_time_s=_first(summary, "wall_time_s", "duration_s", "elapsed_s"),
        run_info=info,
    )
