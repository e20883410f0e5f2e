"""Accounting, once for every executor and every flow: per-stage counts from the stage history
carried on tasks, and the run identity.

Every stage call appends a :class:`StagePerfStats` to the tasks it emits, and fan-out children
copy their parent's history, so one record can reach the end of a run on many tasks. Records are
therefore counted once per ``stats_id``. The identity every run must satisfy:

    documents read = documents written + documents dropped (all reasons) + documents quarantined
                     + documents skipped

(Skipped records are what a reader reads and sets aside as not documents, by kind: a WARC
``request`` record, an image. Readers of document files skip none, and the identity reads as
before.)

A run whose counts break it has lost (or invented) documents somewhere, and fails.

Beside documents, the summary carries what LLM teams budget in and what privacy reviews ask:
``tokens_read`` (the tokens the run's first token counter saw; the web flow counts every
extracted page before its filters), ``tokens_written`` (the writers' sum of the ``tokens`` column
of the rows they wrote), and ``pii_redacted`` (replacements by kind). Each is absent (None or
empty) in a run without the stage that measures it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from curator_stages.tasks import (
    DOCUMENTS_QUARANTINED,
    DOCUMENTS_READ,
    DOCUMENTS_SKIPPED,
    DOCUMENTS_WRITTEN,
    DROPPED_PREFIX,
    SKIPPED_PREFIX,
    PII_REDACTED_PREFIX,
    TOKENS_COUNTED,
    TOKENS_WRITTEN,
    StagePerfStats,
    Task,
)

RUN_SUMMARY_FILE = "run_summary.json"


class AccountingError(RuntimeError):
    """The run's counts do not add up: documents were lost or invented by some stage."""


class NothingKeptError(ValueError):
    """The run kept no document. Almost always a parameter that does not fit the data (a
    language code, a text field, a threshold): a run that "succeeds" with an empty output
    would hide it, so the run fails naming the reason and the flag that changes it."""


@dataclass
class StageCounts:
    """What one stage did over a whole run (all its calls, each record counted once)."""

    stage: str
    tasks_out: int = 0
    items_in: int = 0
    items_out: int = 0
    process_time_s: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def add(self, stats: StagePerfStats) -> None:
        self.tasks_out += 1
        self.items_in += int(stats.num_items_in)
        self.items_out += int(stats.num_items_out)
        self.process_time_s += float(stats.process_time_s)
        for key, value in stats.custom_metrics.items():
            if key.startswith(DROPPED_PREFIX):
                reason = key[len(DROPPED_PREFIX):]
                self.dropped[reason] = self.dropped.get(reason, 0) + int(value)
            else:
                self.metrics[key] = self.metrics.get(key, 0) + value

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageCounts":
        return cls(**d)


class HistoryAggregator:
    """Folds the stage histories of many tasks into per-stage counts (stage order kept)."""

    def __init__(self) -> None:
        self.stages: dict[str, StageCounts] = {}
        self._seen: set[str] = set()
        self.num_tasks = 0
        self.num_items = 0

    def add_task(self, task: Task) -> None:
        self.num_tasks += 1
        self.num_items += int(task.num_items)
        for stats in task._stage_perf:
            sid = getattr(stats, "stats_id", "")
            if sid:
                if sid in self._seen:
                    continue
                self._seen.add(sid)
            self.stages.setdefault(stats.stage_name, StageCounts(stats.stage_name)).add(stats)

    def add_tasks(self, tasks: Iterable[Task]) -> "HistoryAggregator":
        for task in tasks:
            self.add_task(task)
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(c) for name, c in self.stages.items()}


@dataclass
class RunSummary:
    """The counts of a run and whether they add up."""

    stages: list[StageCounts]
    documents_read: int
    documents_written: int
    documents_dropped: int
    documents_quarantined: int
    dropped_by_reason: dict[str, int]
    output: str | None = None
    written_source: str = DOCUMENTS_WRITTEN
    stage_tasks: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float | None = None
    #: The published snapshot this summary describes (a flow's run; see output_commit).
    snapshot: str | None = None
    documents_skipped: int = 0
    skipped_by_kind: dict[str, int] = field(default_factory=dict)
    tokens_read: int | None = None
    tokens_read_stage: str | None = None
    tokens_written: int | None = None
    pii_redacted: dict[str, int] = field(default_factory=dict)

    @property
    def identity_holds(self) -> bool:
        return self.documents_read == (self.documents_written + self.documents_dropped
                                       + self.documents_quarantined + self.documents_skipped)

    def identity_text(self) -> str:
        sign = "=" if self.identity_holds else "!="
        skipped = f" + skipped {self.documents_skipped}" if self.documents_skipped else ""
        return (f"read {self.documents_read} {sign} written {self.documents_written} + dropped "
                f"{self.documents_dropped} + quarantined {self.documents_quarantined}{skipped}")

    def check(self) -> None:
        """Raise :class:`AccountingError` when documents were lost or invented."""
        if not self.identity_holds:
            diff = self.documents_read - (self.documents_written + self.documents_dropped
                                          + self.documents_quarantined + self.documents_skipped)
            raise AccountingError(
                f"accounting identity broken: {self.identity_text()} "
                f"({abs(diff)} document(s) {'unaccounted for' if diff > 0 else 'too many'}); "
                f"per stage: {[(s.stage, s.items_in, s.items_out, s.dropped) for s in self.stages]}. "
                "Fix the stage that changes row counts without record_drops()/record_metrics()."
            )

    def check_kept(self, quarantined_by_reason: dict[str, int] | None = None,
                   flag_for: Any = None) -> None:
        """Raise :class:`NothingKeptError` when the run wrote no document, naming the reason
        that removed most of them and (``flag_for(reason)``) the flag that changes it."""
        if self.documents_written:
            return
        if not self.documents_read:
            raise NothingKeptError("the run read 0 documents: the input files hold no records")
        causes = [(n, f"dropped by {reason!r}", reason)
                  for reason, n in self.dropped_by_reason.items() if n]
        causes += [(n, f"quarantined as {reason!r}", reason)
                   for reason, n in (quarantined_by_reason or {}).items() if n]
        if not causes and self.documents_quarantined:
            causes = [(self.documents_quarantined, "quarantined", "")]
        n, what, reason = max(causes) if causes else (0, "removed", "")
        flag = flag_for(reason) if flag_for and reason else None
        raise NothingKeptError(
            f"the run kept 0 of {self.documents_read} documents: {n} {what}"
            + (f" (change it with {flag})" if flag else "")
            + (f"; all removals: {self.identity_text()}" if n != self.documents_read else ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents_read": self.documents_read,
            "documents_written": self.documents_written,
            "documents_dropped": self.documents_dropped,
            "documents_quarantined": self.documents_quarantined,
            "dropped_by_reason": self.dropped_by_reason,
            "documents_skipped": self.documents_skipped,
            "skipped_by_kind": self.skipped_by_kind,
            "identity": {
                "holds": self.identity_holds,
                "text": self.identity_text(),
                "formula": "documents_read = documents_written + documents_dropped "
                           "+ documents_quarantined + documents_skipped",
                "written_source": self.written_source,
            },
            "stages": [asdict(s) for s in self.stages],
            "stage_tasks": self.stage_tasks,
            "output": self.output,
            "snapshot": self.snapshot,
            "wall_time_s": self.wall_time_s,
            "tokens_read": self.tokens_read,
            "tokens_read_stage": self.tokens_read_stage,
            "tokens_written": self.tokens_written,
            "pii_redacted": self.pii_redacted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSummary":
        """The summary :meth:`to_dict` wrote (``run_summary.json``), read back field by field.

        A missing field is an error naming it: a reader that guesses key names would let a
        report and the run disagree silently.
        """
        try:
            return cls(
                stages=[StageCounts.from_dict(s) for s in d["stages"]],
                documents_read=int(d["documents_read"]),
                documents_written=int(d["documents_written"]),
                documents_dropped=int(d["documents_dropped"]),
                documents_quarantined=int(d["documents_quarantined"]),
                dropped_by_reason={k: int(v) for k, v in d["dropped_by_reason"].items()},
                output=d.get("output"),
                written_source=d.get("identity", {}).get("written_source", DOCUMENTS_WRITTEN),
                stage_tasks=list(d.get("stage_tasks") or []),
                wall_time_s=d.get("wall_time_s"),
                snapshot=d.get("snapshot"),
                documents_skipped=int(d.get("documents_skipped", 0)),
                skipped_by_kind={k: int(v) for k, v in (d.get("skipped_by_kind") or {}).items()},
                tokens_read=d.get("tokens_read"),
                tokens_read_stage=d.get("tokens_read_stage"),
                tokens_written=d.get("tokens_written"),
                pii_redacted={k: int(v) for k, v in (d.get("pii_redacted") or {}).items()},
            )
        except KeyError as exc:
            raise ValueError(
                f"{RUN_SUMMARY_FILE}: field {exc.args[0]!r} is missing; this file was not "
                "written by RunSummary.to_dict (rebuild it by re-running the flow)") from None


def reason_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """{reason: records} of quarantine records, a reason cut at its first ``:`` (the detail
    after it names a byte or a line, so every record would be its own reason)."""
    counts: dict[str, int] = {}
    for record in records:
        reason = str(record.get("reason", "")).split(":", 1)[0]
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def summarise(stage_counts: dict[str, dict[str, Any]] | dict[str, StageCounts],
              final_documents: int | None = None, output: str | None = None) -> RunSummary:
    """Build the run summary from per-stage counts (cumulative history of the final output).

    Written documents are the writers' ``documents_written``; a pipeline without a writer
    counts the documents in its final output instead (and says so in ``written_source``).
    """
    stages = [c if isinstance(c, StageCounts) else StageCounts.from_dict(c)
              for c in stage_counts.values()]
    read = sum(int(s.metrics.get(DOCUMENTS_READ, 0)) for s in stages)
    quarantined = sum(int(s.metrics.get(DOCUMENTS_QUARANTINED, 0)) for s in stages)
    has_writer = any(DOCUMENTS_WRITTEN in s.metrics for s in stages)
    written = sum(int(s.metrics.get(DOCUMENTS_WRITTEN, 0)) for s in stages)
    source = DOCUMENTS_WRITTEN
    if not has_writer and final_documents is not None:
        written, source = int(final_documents), "documents in the final output (no writer stage)"
    skipped = sum(int(s.metrics.get(DOCUMENTS_SKIPPED, 0)) for s in stages)
    by_kind = _sums_by_suffix(stages, SKIPPED_PREFIX)
    by_reason: dict[str, int] = {}
    for s in stages:
        for reason, n in s.dropped.items():
            key = reason if reason not in by_reason else f"{s.stage}.{reason}"
            by_reason[key] = by_reason.get(key, 0) + n
    counters = [s for s in stages if TOKENS_COUNTED in s.metrics]
    pii = _sums_by_suffix(stages, PII_REDACTED_PREFIX)
    return RunSummary(
        tokens_read=int(counters[0].metrics[TOKENS_COUNTED]) if counters else None,
        tokens_read_stage=counters[0].stage if counters else None,
        tokens_written=(sum(int(s.metrics.get(TOKENS_WRITTEN, 0)) for s in stages)
                        if any(TOKENS_WRITTEN in s.metrics for s in stages) else None),
        pii_redacted=pii,
        stages=stages, documents_read=read, documents_written=written,
        documents_dropped=sum(s.dropped_total for s in stages),
        documents_quarantined=quarantined, dropped_by_reason=by_reason, output=output,
        written_source=source, documents_skipped=skipped, skipped_by_kind=by_kind,
    )


def _sums_by_suffix(stages: list[StageCounts], prefix: str) -> dict[str, int]:
    """{what follows ``prefix``: its sum over the stages} of the metrics named ``prefix...``."""
    sums: dict[str, int] = {}
    for s in stages:
        for key, n in s.metrics.items():
            if key.startswith(prefix):
                sums[key[len(prefix):]] = sums.get(key[len(prefix):], 0) + int(n)
    return sums
