"""A local run sends Prefect's queued logs before it stops its temporary API (runtime.local_run.LocalRun.close).

Prefect batches run logs and sends them every few seconds; what is still queued when the run
ends used to be sent at interpreter exit, after the temporary API had stopped: lost, and the
exit hung on connection retries.
"""

from __future__ import annotations

import uuid

from prefect import flow, get_run_logger

from curator_stages.runtime.local_run import send_prefect_backlog


@flow(name="backlog-probe")
def _log_lines(marker: str, count: int) -> None:
    logger = get_run_logger()
    for i in range(count):
        logger.info("%s line %d", marker, i)


def test_queued_run_logs_reach_the_api_when_the_backlog_is_sent(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_LOGGING_TO_API_BATCH_INTERVAL, temporary_settings

    marker = uuid.uuid4().hex
    # A batch interval far longer than the test: only the explicit send can deliver the lines.
    with temporary_settings({PREFECT_LOGGING_TO_API_BATCH_INTERVAL: 600}):
        APILogWorker.drain_all(timeout=60, at_exit=False)  # the next worker reads the interval
        state = _log_lines(marker, 25, return_state=True)
        send_prefect_backlog(timeout=60)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    lines = [log.message for log in logs if marker in log.message]
    assert sorted(lines) == sorted(f"{marker} line {i}" for i in range(25))
