"""What a report needs that the run's counts do not carry: its title, each stage's mode, and how
the reader of this report keeps dropped documents.

The flow knows these when it writes the report (it has its plan and its own option names), but
``curator-stages report <output>`` runs later with only the output directory. So the report
writes them beside ``run_summary.json`` as ``report_context.json``, and a rebuild reads them back:
the rebuilt report is then the one the flow wrote. The file names the summary it belongs to (a
digest), so a summary written later by another run is never reported under a stale title.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curator_stages.io.filesystem import put_bytes
from curator_stages.accounting import RunSummary

#: File name of the context, beside ``run_summary.json``.
REPORT_CONTEXT_FILE = "report_context.json"

#: What a report says to a library user about keeping dropped documents.
LIBRARY_DROPPED_HINT = "give the writer `dropped_output` to keep them"


def summary_digest(summary: RunSummary) -> str:
    """A short digest of a run summary's content, to tie a context to the run it describes."""
    text = json.dumps(summary.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ReportContext:
    """The parts of a report that come from whoever ran the pipeline, not from its counts."""

    title: str = "run"
    #: Execution stage name -> "actor" | "task" | "global", from the run's plan.
    stage_modes: dict[str, str] = field(default_factory=dict)
    #: How a reader of this report keeps dropped documents (a flow names its own option).
    dropped_hint: str = LIBRARY_DROPPED_HINT
    #: :func:`summary_digest` of the summary this context was written with.
    summary_digest: str | None = None
    #: {drop or quarantine reason: the flag that changes it, or "not configurable"} (a flow
    #: names its own options; a library run has none).
    rule_flags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_plan(cls, plan: Any, title: str | None = None,
                  dropped_hint: str | None = None,
                  rule_flags: dict[str, str] | None = None) -> "ReportContext":
        """A context from a :class:`~curator_stages.plan.PipelinePlan` (or None)."""
        modes = {s.name: s.mode for s in plan.stages} if plan is not None else {}
        return cls(title=title or (plan.pipeline if plan is not None else "run"),
                   stage_modes=modes, dropped_hint=dropped_hint or LIBRARY_DROPPED_HINT,
                   rule_flags=dict(rule_flags or {}))

    def mode_of(self, stage: str) -> str | None:
        """The stage's mode; the filter a global stage's fit returns runs as part of that global
        stage (the dedup stages give it their own name; ``<global>_...`` for other names)."""
        if stage in self.stage_modes:
            return self.stage_modes[stage]
        for name, mode in self.stage_modes.items():
            if mode == "global" and stage.startswith(f"{name}_"):
                return "global"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReportContext":
        return cls(title=str(d["title"]), stage_modes=dict(d["stage_modes"]),
                   dropped_hint=str(d["dropped_hint"]), summary_digest=d.get("summary_digest"),
                   rule_flags=dict(d.get("rule_flags") or {}))


def write_report_context(output_dir: str | Path, context: ReportContext,
                         summary: RunSummary) -> Path:
    """Write ``report_context.json`` for ``summary`` (atomic: temp then rename)."""
    path = Path(output_dir) / REPORT_CONTEXT_FILE
    tied = ReportContext(title=context.title, stage_modes=context.stage_modes,
                         dropped_hint=context.dropped_hint,
                         summary_digest=summary_digest(summary), rule_flags=context.rule_flags)
    put_bytes(str(path), json.dumps(tied.to_dict(), indent=2).encode("utf-8"))
    return path


def load_report_context(output_dir: str | Path,
                        summary: RunSummary | dict[str, Any]) -> ReportContext | None:
    """The context written with ``summary`` (a :class:`RunSummary` or its ``to_dict``), or None
    when there is none for this summary."""
    if isinstance(summary, dict):
        summary = RunSummary.from_dict(summary)
    path = Path(output_dir) / REPORT_CONTEXT_FILE
    if not path.is_file():
        return None
    context = ReportContext.from_dict(json.loads(path.read_text(encoding="utf-8")))
    if context.summary_digest != summary_digest(summary):
        return None  # written for another run's summary: its title and modes may not apply
    return context
