"""Run reports: ``report.md`` and ``funnel.png`` beside a run's output, and a Prefect artifact.

A flow calls :func:`write_run_report` at its end with the run summary it wrote, its plan, its
title and how its users keep dropped documents; the report keeps those in
``report_context.json`` so that ``curator-stages report <output dir>`` rebuilds the same report
from the output directory alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from curator_stages.io.filesystem import put_bytes
from curator_stages.reporting.context import (
    LIBRARY_DROPPED_HINT,
    REPORT_CONTEXT_FILE,
    ReportContext,
    load_report_context,
    write_report_context,
)
from curator_stages.reporting.data import (
    SUMMARY_COLUMNS,
    RunReportData,
    StageRow,
    build_report_data,
    stage_rows,
    summary_rows,
)
from curator_stages.reporting.funnel import render_funnel_png
from curator_stages.reporting.markdown import render_report_markdown
from curator_stages.accounting import RUN_SUMMARY_FILE, RunSummary

#: File names a report writes into the output directory.
REPORT_FILE = "report.md"
FUNNEL_FILE = "funnel.png"
SUMMARY_FILE = RUN_SUMMARY_FILE

__all__ = [
    "FUNNEL_FILE",
    "LIBRARY_DROPPED_HINT",
    "REPORT_CONTEXT_FILE",
    "REPORT_FILE",
    "ReportContext",
    "RunReportData",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "StageRow",
    "artifact_key",
    "build_report_data",
    "load_report_context",
    "load_run_summary",
    "publish_report_artifact",
    "render_funnel_png",
    "render_report_markdown",
    "stage_rows",
    "summary_rows",
    "write_run_report",
]


def load_run_summary(output_dir: str | Path) -> RunSummary:
    """The ``run_summary.json`` of a finished run, with a clear error when it is missing."""
    path = Path(output_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {SUMMARY_FILE} in {str(output_dir)!r}: point at the output directory of a "
            "finished flow run (the flow writes the summary there at its end)"
        )
    return RunSummary.from_dict(json.loads(path.read_text(encoding="utf-8")))


def write_run_report(output_dir: str | Path, summary: RunSummary | dict[str, Any] | None = None,
                     *, dropped_dirs: Iterable[str | Path] = (),
                     quarantine_dirs: Iterable[str | Path] = (),
                     plan: Any = None, title: str | None = None,
                     dropped_hint: str | None = None,
                     rule_flags: dict[str, str] | None = None,
                     publish_artifact: bool = True) -> Path | str:
    """Write ``report.md`` and ``funnel.png`` into ``output_dir``; return the report's path
    (a URL string for an object-store output).

    ``summary`` defaults to the directory's ``run_summary.json``. Quarantine and dropped-document
    directories default to ``<output_dir>/quarantine`` and ``<output_dir>/dropped`` when present.
    ``plan`` (a :class:`~curator_stages.plan.PipelinePlan`) gives each stage's mode, ``title``
    the report's title, ``dropped_hint`` how this report's reader keeps dropped documents (a
    flow names its own option; the default names the writer's ``dropped_output``),
    ``rule_flags`` the flag that changes each drop or quarantine reason. Given any of
    them, they are kept in ``report_context.json``; given none, the context kept with this
    summary is used, so a rebuilt report equals the first. Inside a Prefect flow run the same
    markdown is published as an artifact (the image is referenced by file name, so it shows
    where the markdown sits next to it).
    """
    if "://" in str(output_dir):
        return _write_remote_report(str(output_dir), summary, dropped_dirs=dropped_dirs,
                                    quarantine_dirs=quarantine_dirs, plan=plan, title=title,
                                    dropped_hint=dropped_hint, rule_flags=rule_flags,
                                    publish_artifact=publish_artifact)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if summary is None:
        summary = load_run_summary(out)
    elif isinstance(summary, dict):
        summary = RunSummary.from_dict(summary)
    if plan is not None or title or dropped_hint or rule_flags:
        context = ReportContext.from_plan(plan, title=title, dropped_hint=dropped_hint,
                                          rule_flags=rule_flags)
        write_report_context(out, context, summary)
    else:
        context = load_report_context(out, summary) or ReportContext()
    data = build_report_data(summary, out, dropped_dirs=dropped_dirs,
                             quarantine_dirs=quarantine_dirs, context=context)
    render_funnel_png(data, out / FUNNEL_FILE)
    markdown = render_report_markdown(data, funnel_image=FUNNEL_FILE)
    report = out / REPORT_FILE
    put_bytes(str(report), markdown.encode("utf-8"))
    if publish_artifact:
        publish_report_artifact(markdown, data.title)
    return report


def _write_remote_report(output_url: str, summary: RunSummary | dict[str, Any] | None,
                         **options: Any) -> str:
    """An object-store output: the report is rendered in a local temporary directory (pathlib
    and matplotlib write local files) and each file is then uploaded whole next to the data.
    What the report reads from the output's files (quarantine reasons, language mix, dropped
    examples) is then left out; every count still comes from the run summary."""
    import tempfile

    from curator_stages.io.filesystem import put_bytes

    if summary is None:
        from curator_stages.io.filesystem import resolve

        fs, path = resolve(f"{output_url.rstrip('/')}/{RUN_SUMMARY_FILE}")
        with fs.open(path, "rb") as f:
            summary = json.loads(f.read())
    with tempfile.TemporaryDirectory(prefix="curator-report-") as local:
        report = write_run_report(local, summary, **options)
        for name in (REPORT_FILE, FUNNEL_FILE, REPORT_CONTEXT_FILE):
            if (Path(local) / name).is_file():
                put_bytes(f"{output_url.rstrip('/')}/{name}", (Path(local) / name).read_bytes())
        return f"{output_url.rstrip('/')}/{report.name}"


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only (here, below the
    orchestration layer, because the report publishes its own artifact)."""
    key = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    return key[:100] or "artifact"


def publish_report_artifact(markdown: str, title: str) -> str | None:
    """Publish the report as a markdown artifact of the current flow run (None outside one)."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    from prefect.artifacts import create_markdown_artifact

    result = create_markdown_artifact(markdown=markdown, key=artifact_key(f"report-{title}"),
                                      description=f"Run report of {title}")
    return str(getattr(result, "id", result)) if result is not None else None
