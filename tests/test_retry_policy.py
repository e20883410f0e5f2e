"""Stage-task retries: a failure a retry cannot fix fails at once; a transient one is retried,
within a total time cap. Before, every failure was retried, and without any cap."""

from __future__ import annotations

import errno
import sys
import uuid
from pathlib import Path

import pytest
import ray.cloudpickle
from prefect import flow

from curator_stages import ProcessingStage
from curator_stages.backends.ray_data.adapter import StageSetupError
from curator_stages.orchestration import (
    DatasetRef,
    RaySession,
    StageTaskOptions,
    run_stage_groups,
)
from curator_stages.orchestration.retry_policy import is_permanent
from curator_stages.checkpoints.task_files import UnsafeTaskError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_error(kind: str) -> Exception:
    where = "stage 'fail'"
    return {
        "not_a_directory": NotADirectoryError(errno.ENOTDIR, f"{where}: Not a directory"),
        "permission": PermissionError(errno.EACCES, f"{where}: Permission denied"),
        "bad_parameter": ValueError(f"{where}: threshold must be in (0, 1]"),
        "io_error": OSError(errno.EIO, f"{where}: Input/output error"),
        "connection": ConnectionError(f"{where}: connection reset by peer"),
    }[kind]


@pytest.mark.parametrize("exc,permanent", [
    (NotADirectoryError(errno.ENOTDIR, "x"), True),
    (PermissionError(errno.EACCES, "x"), True),
    (FileNotFoundError(errno.ENOENT, "x"), True),
    (OSError(errno.ENOSPC, "x"), True),
    (ValueError("x"), True),
    (TypeError("x"), True),
    (UnsafeTaskError("x"), True),
    (StageSetupError("stage 's': setup() failed on node n: FileNotFoundError: weights"), True),
    (StageSetupError("stage 's': setup() failed on node n: TimeoutError: download"), False),
    (OSError(errno.EIO, "x"), False),
    (ConnectionError("x"), False),
    (TimeoutError("x"), False),
    (RuntimeError("x"), False),
])
def test_permanent_errors_are_told_from_transient_ones(exc, permanent):
    assert is_permanent(exc) is permanent


class Fail(ProcessingStage):
    """Fails its first ``times`` calls with ``kind``; each call leaves a file in attempts_dir."""

    name = "fail"

    def __init__(self, kind: str, attempts_dir: str, times: int = 1000) -> None:
        self.kind, self.attempts_dir, self.times = kind, attempts_dir, times

    def process(self, task):
        done = len(list(Path(self.attempts_dir).iterdir()))
        Path(self.attempts_dir, uuid.uuid4().hex).touch()
        if done < self.times:
            raise make_error(self.kind)
        return task


@flow(name="retry-policy-test")
def retry_flow(kind: str, attempts_dir: str, work_dir: str, times: int = 1000,
               retry_max_total_s: float | None = 3600.0) -> None:
    with RaySession():
        run_stage_groups([[Fail(kind, attempts_dir, times)]],
                         DatasetRef.seed(f"retry-{kind}-{uuid.uuid4().hex}"), work_dir,
                         options=StageTaskOptions(retries=2, retry_delay_seconds=0,
                                                  retry_max_total_s=retry_max_total_s))


def attempts_of(state) -> int:
    """How many times Prefect ran the flow's one stage task (its run_count)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        [run] = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return run.run_count


@pytest.mark.parametrize("kind", ["not_a_directory", "bad_parameter"])
def test_permanent_error_is_not_retried(ray_cluster, prefect_harness, tmp_path, kind):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    state = retry_flow(kind, str(attempts), str(tmp_path / "work"), return_state=True)
    assert state.is_failed()
    assert attempts_of(state) == 1
    assert len(list(attempts.iterdir())) == 1


@pytest.mark.parametrize("kind", ["io_error", "connection"])
def test_transient_error_is_retried(ray_cluster, prefect_harness, tmp_path, kind):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    state = retry_flow(kind, str(attempts), str(tmp_path / "work"), times=1, return_state=True)
    assert state.is_completed(), state.message
    assert attempts_of(state) == 2


def test_no_retry_starts_after_the_total_time_cap(ray_cluster, prefect_harness, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    state = retry_flow("io_error", str(attempts), str(tmp_path / "work"), times=1,
                       retry_max_total_s=0.0, return_state=True)
    assert state.is_failed()
    assert attempts_of(state) == 1
