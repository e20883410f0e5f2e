"""``benchmarks.phases`` prints the start-up figure of the benchmark table ("process start ->
first stage task") from the events its instrumentation records; a label that drifts between
the two silently dropped that line once."""

from benchmarks import phases


def event(label: str, start: float, end: float) -> dict:
    return {"label": label, "start": start, "end": end, "thread": "MainThread"}


def recorded_run() -> list[dict]:
    """The events of a run with two stage tasks, as the instrumentation labels them (the flow
    body itself is not timed: the flow function holds its own run_curation)."""
    return [
        event(phases.IMPORTS, 3.0, 3.0),
        event(phases.API_SPAWN, 3.1, 3.2),
        event(phases.RAY_START, 3.2, 8.2),
        event(phases.API_WAIT, 8.2, 9.0),
        event(phases.BEGIN_RUN, 9.5, 10.0),
        event(phases.STAGE_TASK, 10.5, 14.0),
        event(phases.TASK_BODY, 10.6, 13.9),
        event(phases.FIRST_PART, 11.0, 12.0),
        event(phases.WHOLE_STREAM, 11.0, 13.5),
        event(phases.COMMIT, 13.6, 13.7),
        event(phases.STAGE_TASK, 14.2, 15.0),
        event("main returned", 16.0, 16.0),
    ]


def test_the_summary_finds_the_first_stage_task_and_each_tasks_parts():
    rows = {label: round(value, 6) for label, value in phases.summary(recorded_run())}
    assert rows["process start -> first stage task submitted"] == 10.5
    assert rows["start-up: Ray start (main thread)"] == 5.0
    assert rows["start-up: flow body -> first stage task submitted"] == 0.5  # from begin_run
    assert rows["stage task 1: total (submit -> result)"] == 3.5
    assert rows["stage task 1:   stream start -> first output part"] == 1.0
    assert rows["stage task 2: total (submit -> result)"] == 0.8
