"""A small curation flow on the real orchestration layer, for the fault and cluster tests.

    read JSONL (partition + read)  |  tag (task)  |  where (actor) + slow_upper (task)  |  write

Four stage tasks, four checkpoints, like the reference flow; the stages record what ran where:

- every stage call leaves a file ``<record_dir>/<stage>-<node id>-<pid>-<uuid>`` (executions
  and the node that ran them);
- with ``CURATOR_FAULT_BLOCK_DIR`` set, ``slow_upper`` blocks forever on the file group of
  ``part-03.jsonl`` after writing its pid to ``<dir>/blocked.pid``: the test SIGKILLs the flow
  process there. The variable reaches Ray workers through the job's runtime env, and it is not
  a stage parameter, so the blocked run and the resumed run have the same fingerprints.

Run: ``python tests/scripts/fault_flow.py --input DIR --output DIR --work-dir DIR
--record-dir DIR [--ignore-head-node] [--ray-address ADDR]``
(the CLI every flow has); prints the run summary as JSON. The run is :func:`run_curation`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyarrow.compute as pc  # noqa: E402
import ray  # noqa: E402
from prefect import flow  # noqa: E402
from pydantic import Field, ValidationInfo, field_validator  # noqa: E402

from curator_stages import ProcessingStage  # noqa: E402
from curator_stages.io import JsonlReader, JsonlWriter  # noqa: E402
from curator_stages.orchestration import (  # noqa: E402
    DatasetRef,
    RaySession,
    StageTaskOptions,
    run_stage_groups,
)
from curator_stages.orchestration.curation_params import CurationParams  # noqa: E402
from curator_stages.orchestration.curation_run import CurationFlowSpec, run_curation  # noqa: E402
from curator_stages.orchestration.params import parse_params  # noqa: E402
BLOCK_ENV = "CURATOR_FAULT_BLOCK_DIR"
BLOCK_FILE = "part-03.jsonl"


def record(record_dir: str, stage: str) -> None:
    if record_dir:
        node = ray.get_runtime_context().get_node_id()
        Path(record_dir, f"{stage}-{node}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()


class Tag(ProcessingStage):
    """Adds a ``length`` column (task mode)."""

    name = "tag"

    def __init__(self, record_dir: str = "") -> None:
        self.record_dir = record_dir

    def process(self, task):
        record(self.record_dir, self.stage_name)
        table = task.to_pyarrow()
        return task.derive(table.append_column("length", pc.utf8_length(table["text"])))


class Where(ProcessingStage):
    """An actor stage (it has per-worker state) that records the node of each call."""

    name = "where"

    def __init__(self, record_dir: str = "") -> None:
        self.record_dir = record_dir

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        self._node = ray.get_runtime_context().get_node_id()

    def process(self, task):
        record(self.record_dir, self.stage_name)
        time.sleep(0.2)  # long enough that the pool grows past one actor
        return task


class SlowUpper(ProcessingStage):
    """Upper-cases text (task mode); blocks on one file group when asked to (see module doc)."""

    name = "slow_upper"

    def __init__(self, record_dir: str = "") -> None:
        self.record_dir = record_dir

    def process(self, task):
        record(self.record_dir, self.stage_name)
        table = task.to_pyarrow()
        block_dir = os.environ.get(BLOCK_ENV)
        if block_dir and table.num_rows and str(table["source_file"][0]).endswith(BLOCK_FILE):
            tmp = Path(block_dir, f".blocked.{os.getpid()}")
            tmp.write_text(str(os.getpid()))
            os.replace(tmp, Path(block_dir, "blocked.pid"))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:  # only a SIGKILL of the flow ends this
                time.sleep(0.1)
        time.sleep(0.1)
        return task.derive(table.set_column(table.column_names.index("text"), "text",
                                            pc.utf8_upper(table["text"])))


class FaultParams(CurationParams):
    """The fault flow's parameters: the shared vocabulary plus where to record executions."""

    retries: int = Field(0, ge=0, le=10, description="Retries of a failed stage task")
    record_dir: str = Field("", description="Directory for the stages' execution records")

    @field_validator("output", "work_dir")
    @classmethod
    def _apart_and_writable(cls, value: str, info: ValidationInfo) -> str:
        # Not probed here: a test gives an output under a file on purpose, to see the run
        # refuse it when it takes the output's lock.
        return value if "://" in value else os.path.abspath(value)


def build_groups(p: FaultParams) -> list[list[Any]]:
    reader = JsonlReader(p.input, files_per_group=1)
    return [reader.decompose(), [Tag(p.record_dir)],
            [Where(p.record_dir), SlowUpper(p.record_dir)],
            [JsonlWriter(f"{p.output}/data", mode="overwrite",
                         quarantine_output=f"{p.output}/quarantine")]]


def runtime_env(p: FaultParams) -> dict[str, Any]:
    env = {"PYTHONPATH": str(REPO)}
    if os.environ.get(BLOCK_ENV):
        env[BLOCK_ENV] = os.environ[BLOCK_ENV]
    return {"env_vars": env}


SPEC = CurationFlowSpec("fault-test-flow", "fault test", FaultParams, build_groups,
                        runtime_env=runtime_env, report=False)


@flow(name="fault-test-flow")
def fault_flow(input_path: str, output: str, work_dir: str, record_dir: str = "",
               ignore_head_node: bool = False, ray_address: str | None = None) -> dict:
    params = FaultParams(input=input_path, output=output, work_dir=work_dir,
                         record_dir=record_dir, ignore_head_node=ignore_head_node,
                         ray_address=ray_address)
    return run_curation(SPEC, params)


class LoadModel(ProcessingStage):
    """A model-loading stage whose ``setup`` fails; each attempt leaves a file in attempts_dir."""

    name = "load_model"

    def __init__(self, attempts_dir: str = "") -> None:
        self.attempts_dir = attempts_dir

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        if self.attempts_dir:
            Path(self.attempts_dir, f"{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
        raise FileNotFoundError("model weights /models/classifier.bin not found")

    def process(self, task):
        return task


@flow(name="setup-failure-test")
def setup_failure_flow(attempts_dir: str, work_dir: str, retries: int = 1) -> None:
    with RaySession():
        run_stage_groups([[LoadModel(attempts_dir)]], DatasetRef.seed("setup-failure"), work_dir,
                         options=StageTaskOptions(retries=retries))


def main(argv: list[str] | None = None) -> int:
    params = parse_params(FaultParams, argv, prog="python tests/scripts/fault_flow.py")
    summary = fault_flow(params.input, params.output, params.work_dir, params.record_dir,
                         params.ignore_head_node, params.ray_address)
    print("SUMMARY " + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
