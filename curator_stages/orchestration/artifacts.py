"""Prefect artifacts of a curation run: per-stage tables, a progress bar, the run summary.

Each function is a no-op outside a Prefect flow or task run, so library code can call them
unconditionally (a script, a test, a notebook).
"""

from __future__ import annotations

from typing import Any, Sequence

from curator_stages.reporting import artifact_key
from curator_stages.accounting import RunSummary, StageCounts


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def stage_rows(stage_names: Sequence[str], plans: Sequence[Any], counts: dict[str, StageCounts],
               wall_time_s: float, tasks_in: int, docs_in: int, tasks_out: int,
               docs_out: int) -> list[dict[str, Any]]:
    """One row per stage of a stage task: how it ran and what it did to the documents.

    Wall time and documents/s belong to the stage task (fused stages share one streaming plan
    and cannot be timed apart); per-stage CPU time comes from the tasks' history.
    """
    plan_by_name = {getattr(p, "stage_name", None): p for p in plans}
    rows = []
    for i, name in enumerate(stage_names):
        plan = plan_by_name.get(name) or (plans[i] if i < len(plans) else None)
        c = counts.get(name) or (counts.get(getattr(plan, "stage_name", "")) if plan else None)
        if plan is not None and plan.mode == "actor":
            pool = (f"{plan.pool_max}" if plan.fixed_pool else f"{plan.pool_min}..{plan.pool_max}")
        elif plan is not None:
            pool = "unbounded" if plan.pool_max is None else f"<= {plan.pool_max}"
        else:
            pool = "-"
        rows.append({
            "stage": name,
            "mode": getattr(plan, "mode", "global" if plan is None else "?"),
            "cpus_per_worker": getattr(plan, "cpus", None),
            "gpus_per_worker": getattr(plan, "gpus", None),
            "pool": pool,
            "batch_size": getattr(plan, "batch_size", None),
            "tasks_in": tasks_in if i == 0 else None,
            "documents_in": docs_in if i == 0 else None,
            "items_in": c.items_in if c else None,
            "items_out": c.items_out if c else None,
            "tasks_out": tasks_out if i == len(stage_names) - 1 else None,
            "documents_out": docs_out if i == len(stage_names) - 1 else None,
            "dropped": ", ".join(f"{k}={v}" for k, v in sorted(c.dropped.items())) if c else "",
            "cpu_time_s": round(c.process_time_s, 3) if c else None,
            "wall_time_s": round(wall_time_s, 3),
            "docs_per_s": round(max(docs_in, docs_out) / wall_time_s, 1) if wall_time_s else None,
        })
    return rows


def publish_stage_table(key: str, rows: list[dict[str, Any]], description: str) -> Any:
    if not _in_run():
        return None
    from prefect.artifacts import create_table_artifact

    return create_table_artifact(table=rows, key=artifact_key(key), description=description)


class Progress:
    """A progress artifact that moves as stage tasks finish."""

    def __init__(self, key: str, total: int, description: str = "") -> None:
        self.total = max(total, 1)
        self.done = 0
        self.artifact_id = None
        if _in_run():
            from prefect.artifacts import create_progress_artifact

            self.artifact_id = create_progress_artifact(
                progress=0.0, key=artifact_key(key), description=description)

    def advance(self, n: int = 1) -> float:
        self.done = min(self.total, self.done + n)
        pct = round(100.0 * self.done / self.total, 1)
        if self.artifact_id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self.artifact_id, progress=pct)
        return pct


def summary_markdown(summary: RunSummary, title: str) -> str:
    ok = "holds" if summary.identity_holds else "**BROKEN**"
    lines = [
        f"# {title}",
        "",
        f"Accounting identity {ok}: {summary.identity_text()}",
        "",
        f"Output: `{summary.output}`" if summary.output else "",
        "",
        *([f"Tokens: {_tokens_text(summary)}", ""]
          if summary.tokens_read is not None or summary.tokens_written is not None else []),
        *(["PII redacted: " + ", ".join(f"{k}={v:,}" for k, v in
                                          sorted(summary.pii_redacted.items())), ""]
          if summary.pii_redacted else []),
        "| stage | items in | items out | dropped | cpu s |",
        "|---|---:|---:|---|---:|",
    ]
    for s in summary.stages:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(s.dropped.items())) or "-"
        lines.append(f"| {s.stage} | {s.items_in} | {s.items_out} | {dropped} | "
                     f"{s.process_time_s:.2f} |")
    if summary.stage_tasks:
        lines += ["", "| stage task | status | documents out | wall s |", "|---|---|---:|---:|"]
        for t in summary.stage_tasks:
            lines.append(f"| {t['stages']} | {t['status']} | {t['documents_out']} | "
                         f"{t.get('wall_time_s') or 0:.2f} |")
    return "\n".join(lines)


def _tokens_text(summary: RunSummary) -> str:
    parts = []
    if summary.tokens_read is not None:
        parts.append(f"{summary.tokens_read:,} counted at {summary.tokens_read_stage}")
    if summary.tokens_written is not None:
        parts.append(f"{summary.tokens_written:,} written")
    return "; ".join(parts)


def publish_run_summary(summary: RunSummary, key: str, title: str) -> None:
    """A markdown report and a per-stage table of the run."""
    if not _in_run():
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=summary_markdown(summary, title), key=artifact_key(key),
                             description=f"{title}: {summary.identity_text()}")
    create_table_artifact(
        table=[{"stage": s.stage, "items_in": s.items_in, "items_out": s.items_out,
                "dropped": s.dropped_total, **{f"dropped.{k}": v for k, v in s.dropped.items()},
                **{k: v for k, v in s.metrics.items()}} for s in summary.stages],
        key=artifact_key(f"{key}-stages"), description=f"{title}: per-stage counts")
