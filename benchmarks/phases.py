"""Where the seconds of ``python flows/text_curation.py`` go: start-up and each stage task.

    python -m benchmarks.phases --output /tmp/o --work-dir /tmp/w [flow options]

Runs the flow's own ``main`` in this process with timers wrapped around the functions a run
passes through (nothing else changes: same arguments, same code paths), then prints every
timed call as ``start``/``end`` seconds since the process started (the kernel's process start
time, so the interpreter's own start and the imports count) and a summary of the start-up and
of each stage task: Prefect's task-run creation, the driver's set-up, Ray Data's plan start up
to the first output part, the rest of the stream, the checkpoint commit and the artifacts.

Measurement only: the wrappers record ``time.time()`` around the calls and add no work.
``--json PATH`` also writes the events.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

EVENTS: list[dict[str, Any]] = []

#: The labels that both the instrumentation records and :func:`summary` reads.
IMPORTS = "imports done"
API_SPAWN = "API server: lock + spawn"
API_WAIT = "API server: wait for it (main thread)"
RAY_START = "RaySession enter (Ray start)"
FLOW_BODY = "flow body (run_curation)"
BEGIN_RUN = "prefect: begin run (Pending -> Running)"
STAGE_TASK = "stage task (call -> result)"
TASK_BODY = "stage task body (run_stages.fn)"
FIRST_PART = "stream: plan start -> first output part"
WHOLE_STREAM = "stream: whole stream"
COMMIT = "checkpoint: commit"

_LOCK = threading.Lock()


def process_start() -> float:
    """The kernel's start time of this process (seconds since the epoch)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[19])  # starttime, in clock ticks since boot
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


T0 = process_start()


def record(label: str, start: float, end: float, **extra: Any) -> None:
    with _LOCK:
        EVENTS.append({"label": label, "start": start - T0, "end": end - T0,
                       "thread": threading.current_thread().name, **extra})


def mark(label: str) -> None:
    now = time.time()
    record(label, now, now)


def timed(owner: Any, attr: str, label: str | None = None) -> None:
    """Replace ``owner.attr`` by a wrapper that records each call's start and end."""
    fn = getattr(owner, attr)
    name = label or f"{getattr(owner, '__name__', owner)}.{attr}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            record(name, start, time.time())

    setattr(owner, attr, wrapper)


def timed_stream(owner: Any, attr: str) -> None:
    """``streamed_tasks``: time to the first output part (the plan's start) and the rest."""
    fn = getattr(owner, attr)

    @contextlib.contextmanager
    def wrapper(dataset: Any) -> Iterator[Iterator[Any]]:
        start = time.time()
        with fn(dataset) as parts:
            entered = time.time()

            def items() -> Iterator[Any]:
                first = True
                for part in parts:
                    if first:
                        record(FIRST_PART, start, time.time())
                        first = False
                    yield part
                record(WHOLE_STREAM, start, time.time())

            record("stream: enter", start, entered)
            yield items()

    setattr(owner, attr, wrapper)


def instrument(flow_module: Any = None) -> None:
    """Wrap the functions a local flow run passes through (imports them: after the flow's)."""
    from prefect import flow_engine

    from curator_stages.orchestration import flow_cli
    from curator_stages import checkpoints as ckpt
    from curator_stages.backends.ray_data import executor
    import curator_stages.backends.ray_data as rd
    mod = importlib.import_module
    curation_run, fingerprint, pipeline_run, stage_task = (
        mod(f"curator_stages.orchestration.{m}") for m in (
            "curation_run", "fingerprint", "pipeline_run", "stage_task"))
    api_server, local_run, ray_session = (
        mod(f"curator_stages.runtime.{m}") for m in ("prefect_api", "local_run", "session"))

    timed(api_server.TemporaryApiServer, "start", API_SPAWN)
    timed(local_run.LocalRun, "use_api", API_WAIT)
    timed(ray_session.RaySession, "__enter__", RAY_START)
    timed(ray_session, "start_local_ray", "start_local_ray")
    timed(curation_run, "run_curation", FLOW_BODY)
    if flow_module is not None and hasattr(flow_module, "run_curation"):
        # the flow module holds its own reference: time the one its @flow calls
        flow_module.run_curation = curation_run.run_curation
    timed(flow_engine.FlowRunEngine, "create_flow_run", "prefect: create flow run (API)")
    timed(flow_engine.FlowRunEngine, "begin_run", BEGIN_RUN)
    timed(ray_session.RaySession, "__exit__", "RaySession exit (Ray shutdown)")
    timed(local_run.LocalRun, "close", "API server: stop")
    timed(flow_cli, "print_summary", "console summary")
    timed(curation_run, "_publish_plan", "plan: build + publish artifact")
    timed(fingerprint, "input_fingerprint", "input fingerprint (list + stat inputs)")
    timed(pipeline_run, "run_stage_task", STAGE_TASK)
    timed(pipeline_run, "finish_run", "finish_run (summary + artifacts)")
    timed(stage_task, "publish_stage_table", "stage task: publish stage table artifact")
    timed(ckpt, "read_manifest", "checkpoint: read_manifest")
    timed(ckpt, "file_dataset", "checkpoint: file_dataset")
    timed(ckpt.CheckpointWriter, "commit", COMMIT)
    timed(rd, "apply_stages", "ray data: apply_stages (plan build)")
    timed(executor.RayDataExecutor, "setup_nodes", "ray data: setup_nodes")
    timed_stream(rd, "streamed_tasks")
    with contextlib.suppress(ImportError, AttributeError):
        import curator_stages.reporting as reporting
        timed(reporting, "write_run_report", "write_run_report")
    # run_stages is a Prefect task: time its body (inside the task run) apart from the call.
    body = stage_task.run_stages.fn

    @functools.wraps(body)
    def run_stages_body(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return body(*args, **kwargs)
        finally:
            record(TASK_BODY, start, time.time())

    stage_task.run_stages.fn = run_stages_body


def summary(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Start-up phases and per-stage-task overheads, from the events."""
    def first(label: str) -> dict[str, Any] | None:
        return next((e for e in events if e["label"] == label), None)

    def all_(label: str) -> list[dict[str, Any]]:
        return [e for e in events if e["label"] == label]

    rows: list[tuple[str, float]] = []
    imports = first(IMPORTS)
    # The flow function holds its own reference to run_curation (bound when the flow is
    # defined), so the flow body starts where Prefect's begin_run ends.
    begun = first(BEGIN_RUN)
    flow = first(FLOW_BODY) or (begun and {
        "start": begun["end"], "end": max(e["end"] for e in events)})
    tasks = all_(STAGE_TASK)
    if imports:
        rows.append(("start-up: interpreter + imports (to flow_main)", imports["end"]))
    ray_ev = first(RAY_START)
    if ray_ev:
        rows.append(("start-up: Ray start (main thread)", ray_ev["end"] - ray_ev["start"]))
    api = first(API_SPAWN)
    if api:
        rows.append(("start-up: API server lock + spawn (main thread)", api["end"] - api["start"]))
    wait = first(API_WAIT)
    if wait:
        rows.append(("start-up: main thread waits for the API after Ray",
                     wait["end"] - wait["start"]))
    if wait and flow:
        rows.append(("start-up: flow run creation (API ready -> flow body)",
                     flow["start"] - wait["end"]))
    if flow and tasks:
        rows.append(("start-up: flow body -> first stage task submitted",
                     tasks[0]["start"] - flow["start"]))
        rows.append(("process start -> first stage task submitted", tasks[0]["start"]))
    bodies = all_(TASK_BODY)
    firsts = all_(FIRST_PART)
    wholes = all_(WHOLE_STREAM)
    commits = all_(COMMIT)
    for i, t in enumerate(tasks):
        b = bodies[i] if i < len(bodies) else None
        pre = f"stage task {i + 1}"
        rows.append((f"{pre}: total (submit -> result)", t["end"] - t["start"]))
        if b:
            rows.append((f"{pre}:   Prefect task run before body", b["start"] - t["start"]))
            rows.append((f"{pre}:   Prefect task run after body", t["end"] - b["end"]))
            inside = [e for e in events if b["start"] <= e["start"] <= b["end"]]
            f = next((e for e in inside if e in firsts), None)
            w = next((e for e in inside if e in wholes), None)
            c = next((e for e in inside if e in commits), None)
            if f:
                rows.append((f"{pre}:   body start -> stream start (set-up, plan build)",
                             f["start"] - b["start"]))
                rows.append((f"{pre}:   stream start -> first output part", f["end"] - f["start"]))
            if w and f:
                rows.append((f"{pre}:   first part -> last part", w["end"] - f["end"]))
            if c and w:
                rows.append((f"{pre}:   last part -> body end (commit, artifacts, logs)",
                             b["end"] - w["end"]))
    if flow and tasks:
        rows.append(("after last stage task: summary, report, flow end",
                     flow["end"] - tasks[-1]["end"]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--json", default=None)
    parser.add_argument("--flow", default="flows/text_curation.py")
    parser.add_argument("--langid-mode", choices=("default", "actor", "task"), default="default",
                        help="force the language identifier's Ray mode (A/B measurement)")
    known, rest = parser.parse_known_args()
    sys.argv = [known.flow, *rest]
    # What the flow script does first when run as __main__ (this loads it under another name).
    from curator_stages.runtime.env import apply_local_run_defaults

    apply_local_run_defaults()
    spec = importlib.util.spec_from_file_location("phases_flow", known.flow)
    module = importlib.util.module_from_spec(spec)
    sys.modules["phases_flow"] = module
    spec.loader.exec_module(module)  # the flow script's own imports
    mark(IMPORTS)
    instrument(module)
    if known.langid_mode != "default":
        from curator_stages.text.language import LanguageIdentifier

        forced = {"is_actor_stage": known.langid_mode == "actor"}
        LanguageIdentifier.ray_stage_spec = lambda self: dict(forced)  # type: ignore[method-assign]
    from curator_stages.orchestration.flow_cli import flow_main

    flow_fn = next(v for v in vars(module).values() if type(v).__name__ == "Flow")
    code = flow_main(module.SPEC, flow_fn, rest)
    mark("main returned")
    events = sorted(EVENTS, key=lambda e: e["start"])
    print("\n# timed calls (seconds since process start)", file=sys.stderr)
    for e in events:
        print(f"{e['start']:8.2f} {e['end']:8.2f} {e['end'] - e['start']:7.2f}  {e['label']}"
              f"  [{e['thread']}]", file=sys.stderr)
    print("\n# summary", file=sys.stderr)
    rows = summary(events)
    for label, value in rows:
        print(f"{value:8.2f}  {label}", file=sys.stderr)
    if known.json:
        Path(known.json).write_text(json.dumps({"events": events, "summary": rows}, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
