"""Guard for the one Prefect <-> Ray workaround left in ``runtime.session``: ``ship_by_value``.

Prefect loads a deployment's entrypoint file as a module named after the file (or a generated
``__prefect_loader_<hash>__``), which no Ray worker can import; Ray's cloudpickle pickles a
class of that module by reference, so a stage defined in a deployed flow file would fail to
unpickle on the workers. If the first half of the test starts to fail, Prefect or Ray now do
this themselves and ``ship_by_value`` can go. Nothing here starts Ray: "a worker" is a fresh
interpreter that, like a Ray worker, has the package but not the flow file's directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cloudpickle
import ray.cloudpickle

from curator_stages.runtime.session import ship_by_value

REPO = Path(__file__).resolve().parents[1]
FLOW_FILE = '''
from curator_stages import ProcessingStage


class Shout(ProcessingStage):
    name = "shout"

    def process(self, task):
        return task
'''
UNPICKLE = "import pickle, sys; print(type(pickle.loads(sys.stdin.buffer.read())).__name__)"


def unpickle_on_a_worker(data: bytes, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", UNPICKLE], input=data, capture_output=True,
                          cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=120)


def test_a_deployed_flow_files_stage_reaches_workers_only_by_value(tmp_path):
    from prefect.utilities.importtools import load_script_as_module

    flows, elsewhere = tmp_path / "flows", tmp_path / "worker"
    flows.mkdir()
    elsewhere.mkdir()
    path = flows / "deployed_flow_guard.py"
    path.write_text(FLOW_FILE)
    module = load_script_as_module(str(path))  # what a deployment's flow run does
    try:
        assert module.__name__ == "deployed_flow_guard" or module.__name__.startswith(
            "__prefect_loader_")
        by_reference = unpickle_on_a_worker(ray.cloudpickle.dumps(module.Shout()), elsewhere)
        assert by_reference.returncode != 0
        assert b"No module named" in by_reference.stderr, by_reference.stderr[-2000:]

        ship_by_value(module.__name__)
        by_value = unpickle_on_a_worker(ray.cloudpickle.dumps(module.Shout()), elsewhere)
        assert by_value.returncode == 0, by_value.stderr[-2000:]
        assert by_value.stdout.strip() == b"Shout"
    finally:
        for pickler in (cloudpickle, ray.cloudpickle):
            try:
                pickler.unregister_pickle_by_value(module)
            except ValueError:
                pass
        sys.modules.pop(module.__name__, None)
        sys.path[:] = [p for p in sys.path if p != str(flows)]


def test_an_importable_module_is_left_to_pickle_by_reference():
    """A module workers import by name (the package's own) is never shipped by value."""
    import curator_stages.text.filters as filters

    ship_by_value(filters.__name__)
    assert filters.__name__ not in ray.cloudpickle.cloudpickle.list_registry_pickle_by_value()
