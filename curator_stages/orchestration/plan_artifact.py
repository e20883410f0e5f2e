"""The execution plan as a Prefect artifact of the flow run.

The plan itself (:mod:`curator_stages.plan`) is core: it is computed by a library user, by
``curator-stages plan`` and by a flow alike, and never imports Prefect. Attaching it to a flow
run is Prefect's business, so it lives here, in the orchestration layer.
"""

from __future__ import annotations

from curator_stages.orchestration.artifacts import artifact_key
from curator_stages.plan import PipelinePlan

__all__ = ["publish_plan_artifact"]


def publish_plan_artifact(plan: PipelinePlan, key: str | None = None) -> str | None:
    """Publish the plan as a Prefect markdown artifact of the current flow run.

    Call it first thing in a flow so the plan is the run's first artifact. Outside a flow or
    task run there is nothing to attach it to, and it returns None instead of failing a local
    script. Returns the artifact id otherwise.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    from prefect.artifacts import create_markdown_artifact

    result = create_markdown_artifact(
        markdown=plan.to_markdown(), key=key or artifact_key(f"plan-{plan.pipeline}"),
        description=f"Execution plan of {plan.pipeline} on the {plan.cluster_source} cluster",
    )
    return str(getattr(result, "id", result)) if result is not None else None
