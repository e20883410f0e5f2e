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
--record-dir DIR [--ignore-head-node] [--ray-address ADDR]``; prints the run summary as JSON.
"""

from __future__ import annotations

import argparse
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

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import ray.cloudpickle  # noqa: E402
from prefect import flow  # noqa: E402

from curator_stages import ProcessingStage  # noqa: E402
from curator_stages.io import JsonlReader, JsonlWriter  # noqa: E402
from curator_stages.orchestration import (  # noqa: E402
    DatasetRef,
    RaySession,
    SessionRayTaskRunner,
    StageTaskOptions,
    finish_run,
    input_fingerprint,
    resolve_input_files,
    run_stage_groups,
)

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


def build_groups(input_path: str, output: str, record_dir: str) -> list[list[Any]]:
    reader = JsonlReader(input_path, files_per_group=1, quarantine_dir=f"{output}/quarantine")
    return [reader.decompose(), [Tag(record_dir)], [Where(record_dir), SlowUpper(record_dir)],
            [JsonlWriter(f"{output}/data", mode="overwrite")]]


@flow(name="fault-test-flow", task_runner=SessionRayTaskRunner())
def fault_flow(input_path: str, output: str, work_dir: str, record_dir: str = "",
               ignore_head_node: bool = False, ray_address: str | None = None) -> dict:
    files = resolve_input_files(input_path)
    groups = build_groups(input_path, output, record_dir)
    env = {"PYTHONPATH": str(REPO)}
    if os.environ.get(BLOCK_ENV):
        env[BLOCK_ENV] = os.environ[BLOCK_ENV]
    with RaySession(ray_address, runtime_env={"env_vars": env}):
        result = run_stage_groups(groups, DatasetRef.seed(input_fingerprint(files)), work_dir,
                                  options=StageTaskOptions(retries=0),
                                  ignore_head_node=ignore_head_node,
                                  progress_key="fault-test-progress")
        summary = finish_run(result, output, "fault test", "fault-test-summary")
    return summary.to_dict()


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


@flow(name="setup-failure-test", task_runner=SessionRayTaskRunner())
def setup_failure_flow(attempts_dir: str, work_dir: str, retries: int = 1) -> None:
    with RaySession():
        run_stage_groups([[LoadModel(attempts_dir)]], DatasetRef.seed("setup-failure"), work_dir,
                         options=StageTaskOptions(retries=retries))


if __name__ != "__main__" and __name__ in sys.modules:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--record-dir", default="")
    parser.add_argument("--ignore-head-node", action="store_true")
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args(argv)
    summary = fault_flow(args.input, args.output, args.work_dir, args.record_dir,
                         args.ignore_head_node, args.ray_address)
    print("SUMMARY " + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sys.exit(main())
