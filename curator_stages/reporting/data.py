"""The numbers of a run report, gathered from ``run_summary.json`` and the run's output files.

Every count shown comes from the run summary that the orchestration layer writes (itself built
from the :class:`~curator_stages.tasks.StagePerfStats` custom metrics: ``documents_read``,
``documents_quarantined``, ``documents_written``, ``dropped.<reason>``), so the report and the
accounting check can never disagree. The summary is read through
:meth:`~curator_stages.accounting.RunSummary.from_dict`, the reader of exactly what
the run wrote. What the summary does not carry (the language mix, the text of dropped documents,
quarantine reasons) is read from the files the run wrote (for a flow's output: only the files
``_curator_outputs.json`` lists for the snapshot the summary names), and is simply left out when
those files do not exist; the title and stage modes come from the :class:`ReportContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from curator_stages.io.output_commit import published_files
from curator_stages.accounting import RunSummary
from curator_stages.reporting.context import LIBRARY_DROPPED_HINT, ReportContext
from curator_stages.reporting.output_files import (  # noqa: F401 - EXAMPLE_CHARS re-exported
    EXAMPLE_CHARS, dropped_examples, language_mix, quarantine_reasons,
)
from curator_stages.tasks import (DOCUMENTS_QUARANTINED, DOCUMENTS_READ, DOCUMENTS_WRITTEN,
                                  FILES_LISTED)


@dataclass(frozen=True)
class StageRow:
    """One stage of a run in one unit: documents. Files a stage lists, reads or writes are
    counted apart (``files``), never in the document columns."""

    stage: str
    mode: str | None
    documents_in: int | None  # None: the stage handles files, not documents
    documents_out: int | None
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    files: int | None = None
    files_role: str | None = None  # "listed" | "read" | "written"
    busy_s: float = 0.0

    @property
    def handles_documents(self) -> bool:
        return self.documents_in is not None or self.documents_out is not None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def removed(self) -> int:
        """Documents this stage removed: its drops and quarantines (never negative)."""
        counted = self.dropped_total + self.quarantined
        if counted:
            return counted
        if self.documents_in is not None and self.documents_out is not None:
            return max(0, self.documents_in - self.documents_out)
        return 0

    @property
    def files_text(self) -> str:
        return "-" if self.files is None else f"{self.files:,} {self.files_role}"

    @property
    def documents_per_s(self) -> float | None:
        """Documents per second of busy time, per worker; None below :data:`MIN_RATE_BUSY_S`
        of busy time (a filter that took milliseconds has no meaningful rate: dividing by a
        timer's resolution gave millions of documents per second)."""
        if not self.documents_in or self.busy_s < MIN_RATE_BUSY_S:
            return None
        return self.documents_in / self.busy_s


#: Busy time below which a stage's rate is not shown (see :attr:`StageRow.documents_per_s`).
MIN_RATE_BUSY_S = 0.5


@dataclass
class RunReportData:
    """Everything a report shows, independent of how it is rendered (markdown, chart)."""

    title: str
    documents_read: int
    documents_written: int
    documents_dropped: int
    documents_quarantined: int
    stages: list[StageRow]
    drops_by_rule: dict[tuple[str, str], int]
    dropped_hint: str = LIBRARY_DROPPED_HINT
    #: {drop or quarantine reason: the flag that changes it} (empty: the report has no column).
    rule_flags: dict[str, str] = field(default_factory=dict)
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    quarantine_examples: list[str] = field(default_factory=list)
    language_mix: dict[str, int] = field(default_factory=dict)
    #: (stage, drop reason) -> documents removed as duplicates.
    duplicates: dict[tuple[str, str], int] = field(default_factory=dict)
    dropped_examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    wall_time_s: float | None = None
    run_info: dict[str, str] = field(default_factory=dict)
    #: Records a reader set aside as not documents (WARC requests, images), by kind.
    documents_skipped: int = 0
    skipped_by_kind: dict[str, int] = field(default_factory=dict)
    #: (stage, documents it passed on, their tokens) for the run's first token counter.
    tokens_read: tuple[str, int, int] | None = None
    #: Tokens of the documents written (the writers' ``tokens_written``).
    tokens_written: int | None = None
    #: Personal data replaced, by kind (``email``, ``ip``, ``phone``).
    pii_redacted: dict[str, int] = field(default_factory=dict)

    @property
    def funnel(self) -> list[StageRow]:
        """The stages that handle documents, in order (the funnel chart's bars)."""
        return [r for r in self.stages if r.handles_documents]

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "documents_read": self.documents_read,
            "documents_written": self.documents_written,
            "documents_dropped": self.documents_dropped,
            "documents_quarantined": self.documents_quarantined,
            "documents_skipped": self.documents_skipped,
            "skipped_by_kind": self.skipped_by_kind,
            "stages": [{"stage": r.stage, "mode": r.mode, "documents_in": r.documents_in,
                        "documents_out": r.documents_out, "dropped": r.dropped,
                        "quarantined": r.quarantined, "removed": r.removed, "files": r.files,
                        "files_role": r.files_role, "busy_s": r.busy_s,
                        "documents_per_s": r.documents_per_s} for r in self.stages],
            "drops_by_rule": [{"stage": s, "rule": r, "documents": n}
                              for (s, r), n in self.drops_by_rule.items()],
            "quarantine_by_reason": self.quarantine_by_reason,
            "language_mix": self.language_mix,
            "duplicates": [{"stage": s, "reason": r, "documents": n}
                           for (s, r), n in self.duplicates.items()],
            "wall_time_s": self.wall_time_s,
            "tokens_read": (None if self.tokens_read is None else
                            dict(zip(("stage", "documents", "tokens"), self.tokens_read))),
            "tokens_written": self.tokens_written,
            "pii_redacted": self.pii_redacted,
        }


# ---------------------------------------------------------------------------- stage rows
def duplicate_reasons() -> tuple[str, ...]:
    """The drop reasons the dedup stages record for a removed duplicate."""
    # Imported here: the dedup package pulls Ray in, which rebuilding a report does not need.
    from curator_stages.models.semantic_dedup import SEMANTIC_DUPLICATE
    from curator_stages.text.dedup.exact import EXACT_DUPLICATE
    from curator_stages.text.dedup.fuzzy import FUZZY_DUPLICATE

    return (EXACT_DUPLICATE, FUZZY_DUPLICATE, SEMANTIC_DUPLICATE)


def stage_rows(summary: RunSummary, context: ReportContext | None = None) -> list[StageRow]:
    """One row per stage of ``summary``, every count in documents, files apart.

    A stage's ``items_in``/``items_out`` count whatever its tasks hold: file names before and
    into the reader, documents after it, written files out of a writer. So stages before the
    first reader (the first stage with ``documents_read``) list files; the reader reads its
    ``items_in`` files into ``documents_read`` documents; a writer (``documents_written``)
    takes documents in and writes ``items_out`` files. A run without a reader (documents built
    in memory) counts documents throughout.
    """
    context = context or ReportContext()
    stages = summary.stages
    readers = [i for i, s in enumerate(stages) if DOCUMENTS_READ in s.metrics]
    first_reader = readers[0] if readers else 0
    # Files, not read tasks: a file cut into byte ranges is one file listed and read.
    listed = [int(s.metrics[FILES_LISTED]) for s in stages if FILES_LISTED in s.metrics]
    rows = []
    for i, s in enumerate(stages):
        files: int | None = None
        role: str | None = None
        docs_in: int | None = s.items_in
        docs_out: int | None = s.items_out
        if i < first_reader:
            docs_in = docs_out = None
            files, role = (sum(listed) if listed else s.items_out), "listed"
        elif DOCUMENTS_READ in s.metrics:
            docs_in = int(s.metrics[DOCUMENTS_READ])
            files, role = (sum(listed) if listed else s.items_in), "read"
        if DOCUMENTS_WRITTEN in s.metrics:
            docs_out = int(s.metrics[DOCUMENTS_WRITTEN])
            files, role = s.items_out, "written"
        rows.append(StageRow(
            stage=s.stage, mode=context.mode_of(s.stage), documents_in=docs_in,
            documents_out=docs_out, dropped={k: int(v) for k, v in s.dropped.items() if v},
            quarantined=int(s.metrics.get(DOCUMENTS_QUARANTINED, 0)), files=files,
            files_role=role, busy_s=float(s.process_time_s),
        ))
    return rows


#: Columns of :func:`summary_rows`, the one stage table of a run (report and console alike).
SUMMARY_COLUMNS = ("stage", "mode", "docs in", "docs out", "dropped", "quarantined", "files",
                   "busy (s)", "docs/s/worker")


def _int(value: int | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def stage_table(rows: Iterable[StageRow],
                drop_reasons: bool = False) -> tuple[tuple[str, ...], list[list[str]]]:
    """(headers, rows) of stage rows as text; ``drop_reasons`` adds each stage's reasons to its
    dropped count (the report lists them in a table of their own instead)."""
    out = []
    for r in rows:
        dropped = _int(r.dropped_total) if r.handles_documents else "-"
        if drop_reasons and r.dropped:
            dropped += " (" + ", ".join(f"{k}={v:,}" for k, v in sorted(r.dropped.items())) + ")"
        out.append([
            r.stage, r.mode or "-", _int(r.documents_in), _int(r.documents_out), dropped,
            _int(r.quarantined) if r.handles_documents else "-", r.files_text,
            f"{r.busy_s:.3f}",
            f"{r.documents_per_s:,.0f}" if r.documents_per_s is not None else "-",
        ])
    return SUMMARY_COLUMNS, out


def summary_rows(summary: RunSummary | dict[str, Any], context: ReportContext | None = None,
                 drop_reasons: bool = False) -> tuple[tuple[str, ...], list[list[str]]]:
    """(headers, rows) of a run's stage table as text, every count in documents.

    The report's stage table and a flow's console table are both this, so they never show two
    units in one column.
    """
    if isinstance(summary, dict):
        summary = RunSummary.from_dict(summary)
    return stage_table(stage_rows(summary, context), drop_reasons=drop_reasons)


# ---------------------------------------------------------------------------- files
def build_report_data(summary: RunSummary | dict[str, Any],
                      output_dir: str | Path | None = None,
                      dropped_dirs: Iterable[str | Path] = (),
                      quarantine_dirs: Iterable[str | Path] = (),
                      context: ReportContext | None = None) -> RunReportData:
    """Gather a report's numbers from a run summary and, when given, the run's output files.

    ``summary`` is a :class:`RunSummary` or the dict its ``to_dict`` wrote (read back with
    ``RunSummary.from_dict``, which refuses a file with missing fields).
    """
    if isinstance(summary, dict):
        summary = RunSummary.from_dict(summary)
    context = context or ReportContext()
    rows = stage_rows(summary, context)
    drops: dict[tuple[str, str], int] = {}
    for r in rows:
        for rule, n in r.dropped.items():
            drops[(r.stage, rule)] = drops.get((r.stage, rule), 0) + n
    dup_reasons = duplicate_reasons()
    duplicates = {key: n for key, n in drops.items() if key[1] in dup_reasons}

    out_dir = Path(output_dir) if output_dir else None
    q_dirs = [Path(p) for p in quarantine_dirs]
    d_dirs = [Path(p) for p in dropped_dirs]
    data: list[Path] = []
    listed = published_files(str(out_dir), summary.snapshot) if out_dir is not None else None
    if out_dir is not None and listed is not None:
        # A flow's output: only the files of the published snapshot this summary describes.
        def part(sub: str) -> list[Path]:
            return [out_dir / rel for rel in listed if rel.startswith(f"{sub}/")]
        q_dirs, d_dirs, data = q_dirs or part("quarantine"), d_dirs or part("dropped"), part("data")
    elif out_dir is not None:  # a library pipeline's output: no record, the directories
        q_dirs = q_dirs or [out_dir / "quarantine" if (out_dir / "quarantine").is_dir()
                            else out_dir]
        d_dirs = d_dirs or [p for p in (out_dir / "dropped",) if p.is_dir()]
        data = [out_dir / "data" if (out_dir / "data").is_dir() else out_dir]
    q_by_reason, q_examples = quarantine_reasons(q_dirs) if q_dirs else ({}, [])
    if not q_by_reason and summary.documents_quarantined:
        q_by_reason = {"(records not found on disk; count from the run summary)":
                       summary.documents_quarantined}
    return RunReportData(
        title=context.title,
        documents_read=summary.documents_read, documents_written=summary.documents_written,
        documents_dropped=summary.documents_dropped,
        documents_quarantined=summary.documents_quarantined,
        stages=rows, drops_by_rule=dict(sorted(drops.items(), key=lambda kv: -kv[1])),
        dropped_hint=context.dropped_hint, rule_flags=context.rule_flags,
        quarantine_by_reason=q_by_reason, quarantine_examples=q_examples,
        language_mix=language_mix(data),
        duplicates=duplicates,
        dropped_examples=dropped_examples(d_dirs) if d_dirs else {},
        wall_time_s=summary.wall_time_s,
        run_info={"output": summary.output} if summary.output else {},
        documents_skipped=summary.documents_skipped, skipped_by_kind=summary.skipped_by_kind,
        tokens_read=_tokens_read(summary),
        tokens_written=summary.tokens_written,
        pii_redacted=dict(summary.pii_redacted),
    )


def _tokens_read(summary: RunSummary) -> tuple[str, int, int] | None:
    """(stage, documents out, tokens) of the first token counter, from the summary."""
    if summary.tokens_read is None:
        return None
    stage = next((s for s in summary.stages if s.stage == summary.tokens_read_stage), None)
    return (str(summary.tokens_read_stage), stage.items_out if stage else 0,
            int(summary.tokens_read))
