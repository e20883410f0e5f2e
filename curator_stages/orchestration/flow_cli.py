"""``python flows/<name>.py``: the one command line of every curation flow, from its spec.

The options are generated from the flow's parameter model (:func:`params.parse_params`): a bad
value exits 2 naming the option, before Ray or Prefect starts. ``--plan [--cluster ...]`` prints
the execution plan and processes nothing. Otherwise the flow runs as a local run
(:func:`curator_stages.runtime.local_run.run_local`): the temporary Prefect API starts while Ray starts, each says so
on the console while it starts, and the run ends with the stage table of its report and one
wall time (the run's, with the start-up stated apart).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any, Callable, Sequence

from curator_stages.orchestration.curation_run import (SINGLE_FILE_NOTE, CurationFlowSpec,
                                                      plan_for, skipped_note)
from curator_stages.orchestration.params import parse_params

PLAN_FORMATS = ("text", "markdown", "json")
#: Columns of the run's stage table the console leaves to report.md (80 columns).
CONSOLE_LEFT_OUT = ("busy (s)", "docs/s/worker")


def plan_main(spec: CurationFlowSpec[Any], argv: Sequence[str], prog: str) -> int:
    """``--plan [--cluster "2 nodes x 16 cpus"] [--plan-format F] [flow parameters]``."""
    from curator_stages.plan import UnschedulableStageError

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plan", action="store_true")
    pre.add_argument("--cluster", default=None)
    pre.add_argument("--plan-format", choices=PLAN_FORMATS, default="text")
    known, rest = pre.parse_known_args(list(argv))
    params = parse_params(spec.params_model, rest, prog=f"{prog} --plan",
                          epilog=help_epilog(spec))
    try:
        plan = plan_for(spec, params, cluster=known.cluster)
    except UnschedulableStageError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    emit_plan(plan, known.plan_format)
    if known.plan_format == "text":
        listing = params.input_listing(params.input)
        if listing is not None and len(listing) == 1:
            print(f"note: {SINGLE_FILE_NOTE}")
        if listing is not None and listing.skipped:
            print(f"note: {skipped_note(listing.skipped, params)}")
    return 0


def emit_plan(plan: Any, fmt: str) -> None:
    if fmt == "markdown":
        print(plan.to_markdown())
    elif fmt == "json":
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        plan.print()


def flow_main(spec: CurationFlowSpec[Any], flow_fn: Callable[..., Any],
              argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The ``main`` of a flow script; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"python flows/{spec.name.replace('-', '_')}.py"
    if "--plan" in args:  # print the plan, process nothing
        return plan_main(spec, args, prog)
    params = parse_params(spec.params_model, args, prog=prog, epilog=help_epilog(spec))
    from curator_stages.runtime import ClusterConnectError, RaySession
    from curator_stages.runtime.local_run import run_local

    start = time.perf_counter() - process_age_s()  # the imports count: the user waited

    def body(run: Any) -> int:
        # The temporary API (without PREFECT_API_URL) starts while Ray starts; SIGTERM stops
        # the run like Ctrl-C, and nothing the run started outlives it (local_run). The flow's
        # own RaySession then reuses this one.
        session = contextlib.ExitStack()
        try:
            session.enter_context(RaySession.for_params(
                params, runtime_env=spec.runtime_env(params), announce=run.announce))
        except ClusterConnectError as exc:  # one line naming the address and the fix
            print(f"{spec.title} failed: {exc}", file=sys.stderr)
            return 1
        with session:
            run.use_api()
            run.announce(f"starting the flow run ({spec.title}; Prefect logs follow)")
            state = flow_fn(params, return_state=True)
        if not state.is_completed():
            print(f"{spec.title} failed: {state.message}", file=sys.stderr)
            return 1
        print_summary(spec, state.result(), params.output, time.perf_counter() - start)
        return 0

    return run_local(body, what=spec.title)


def help_epilog(spec: CurationFlowSpec[Any]) -> str:
    """What ``--help`` says after the parameters: the plan options (handled before the
    parameters are parsed) and, for a flow with rules, the flag that changes each rule."""
    lines = ["plan (processes nothing, starts no Ray):",
             "  --plan                  print how the run will execute and exit",
             '  --cluster SPEC          with --plan: a declared cluster instead of this machine,',
             '                          e.g. "2 nodes x 16 cpus, 1 node x 8 cpus 2 gpus"',
             f"  --plan-format FORMAT    {' | '.join(PLAN_FORMATS)} (default: text)"]
    if spec.rule_flags:
        width = max(len(k) for k in spec.rule_flags) + 2
        lines += ["", "rules (drop reasons), quarantine reasons and the flag that changes each",
                  "(a trailing * matches every reason that starts so):"]
        lines += [f"  {reason:<{width}}{flag}" for reason, flag in spec.rule_flags.items()]
    return "\n".join(lines)


def process_age_s() -> float:
    """Seconds since this process started (0.0 where unknown), so the start-up a run reports
    includes the interpreter's start and the imports before ``flow_main``."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - only shifts the reported start-up; never fails a run
        return 0.0


def print_summary(spec: CurationFlowSpec[Any], summary: dict[str, Any], output: str,
                  total_s: float) -> None:
    """The report's stage table (one unit: documents), the accounting, one wall time."""
    from rich.console import Console
    from rich.table import Table

    from curator_stages.reporting import load_report_context, summary_rows

    from rich import box

    headers, rows = summary_rows(summary, load_report_context(output, summary))
    console = Console() if sys.stdout.isatty() else Console(width=80)  # a log: 80 columns
    # The counts fit 80 columns; busy time and rates per worker are in report.md.
    keep = [i for i, h in enumerate(headers) if h not in CONSOLE_LEFT_OUT]
    table = Table(title=spec.title, box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), show_edge=False,
                  collapse_padding=True)
    for i in keep:
        table.add_column(headers[i], no_wrap=True,
                         justify="left" if i == 0 or headers[i] == "mode" else "right")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    ident = summary["identity"]
    console.print(f"accounting: {ident['text']} -> "
                  f"{'[green]holds[/green]' if ident['holds'] else '[red]BROKEN[/red]'}")
    console.print("stage tasks: " + ", ".join(t["status"] for t in summary["stage_tasks"]))
    run_s = float(summary.get("wall_time_s") or 0.0)
    startup = (f" (+ {total_s - run_s:.1f}s start-up: imports, Ray, Prefect's API and flow run)"
               if run_s else "")
    for label, path in (("output", "data"), ("summary", "run_summary.json"),
                        ("report", "report.md")):
        console.print(f"{label + ':':<9}{output}/{path}", soft_wrap=True, highlight=False)
    console.print(f"wall time: {run_s or total_s:.1f}s{startup}")


__all__ = ["emit_plan", "flow_main", "plan_main", "print_summary", "process_age_s"]
