"""A stage's identity (its checkpoint fingerprint) changes whenever its output can, and a
function stage travels to worker processes.

Identity: values without a canonical form are refused (no ``repr()`` fallback: numpy elides
the middle of large arrays, default reprs hold memory addresses), and a function stage's
identity covers the whole module that defines it, so editing a helper it calls invalidates old
checkpoints.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import BaseModel

from curator_stages import DocumentBatch, ProcessingStage, StageIdentityError, processing_stage
from curator_stages.backends.local import LocalExecutor, MultiprocessExecutor


class Weighted(ProcessingStage):
    """A stage whose only parameter is whatever the test hands it."""

    name = "weighted"

    def __init__(self, weights):
        self.weights = weights

    def process(self, task):
        return task


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Rule:
    field: str
    threshold: float


class Options(BaseModel):
    lower: bool = True
    limit: int = 3


def _hash(value) -> str:
    return Weighted(value).identity_hash()


# --------------------------------------------------------------------------- refusing reprs
def test_large_arrays_that_differ_in_the_middle_have_different_identities():
    a = np.zeros(100_000)
    b = a.copy()
    b[50_000] = 1.0
    assert repr(a) == repr(b), "the trap: numpy elides the middle of a large array's repr"
    assert _hash(a) != _hash(b)
    assert _hash(a) == _hash(a.copy())
    assert _hash(a) != _hash(a.astype(np.float32)), "same values, other dtype: other output"
    assert _hash(a) != _hash(a.reshape(1000, 100))


def test_an_object_with_a_default_repr_is_refused_naming_stage_and_parameter():
    class Tokenizer:  # a default repr: <...Tokenizer object at 0x...>
        def __init__(self):
            self.vocab = {"a": 1}

    with pytest.raises(StageIdentityError) as err:
        Weighted({"tok": Tokenizer()}).identity_hash()
    text = str(err.value)
    assert "stage 'weighted'" in text and "'weights.tok'" in text and "Tokenizer" in text
    assert "identity()" in text and "JSON-able" in text  # the fix


def test_supported_values_are_stable_and_sensitive():
    from curator_stages.text.dedup.idset import IdSet

    values = [
        np.float32(0.5), np.int64(7), np.array(["a", "b"]), Path("/data/in"), (1, 2),
        {3, 1, 2}, {"outer": {"inner": [1, 2]}}, Colour.RED, Rule("text", 0.5),
        Options(limit=4), Weighted(5), IdSet(["x", "y"]), b"\x00\x01",
    ]
    for value in values:
        assert _hash(value) == _hash(value), value
    assert _hash({3, 1, 2}) == _hash({1, 2, 3})
    assert _hash({"a": 1, "b": 2}) == _hash({"b": 2, "a": 1})
    assert _hash(Colour.RED) != _hash(Colour.BLUE)
    assert _hash(Rule("text", 0.5)) != _hash(Rule("text", 0.6))
    assert _hash(Options(limit=4)) != _hash(Options(limit=5))
    assert _hash(Weighted(5)) != _hash(Weighted(6))
    assert _hash(IdSet(["x", "y"])) != _hash(IdSet(["x", "z"]))
    assert _hash(Path("/data/in")) != _hash(Path("/data/out"))
    assert _hash({"outer": {"inner": [1, 2]}}) != _hash({"outer": {"inner": [2, 1]}})


def test_a_closure_is_identified_by_the_values_it_captured():
    def threshold_stage(limit):
        @processing_stage(name="short")
        def short(task):
            return task if task.num_items < limit else None
        return short

    assert threshold_stage(3).identity_hash() == threshold_stage(3).identity_hash()
    assert threshold_stage(3).identity_hash() != threshold_stage(4).identity_hash()


# --------------------------------------------------------------------------- module source
def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


MODULE = """
from curator_stages import processing_stage

def helper(text):
    return text.{method}()

@processing_stage(name="normalise")
def normalise(task):
    texts = [helper(t) for t in task.data["text"].to_pylist()]
    return task.derive(task.data.set_column(0, "text", [texts]))
"""


def test_editing_a_helper_of_a_function_stage_changes_its_identity(tmp_path):
    path = tmp_path / "my_stages.py"
    path.write_text(textwrap.dedent(MODULE.format(method="lower")))
    try:
        before = _import_file(path, "my_stages").normalise.identity_hash()
        path.write_text(textwrap.dedent(MODULE.format(method="upper")))  # only the helper
        after = _import_file(path, "my_stages").normalise.identity_hash()
        path.write_text(textwrap.dedent(MODULE.format(method="upper")))  # unchanged again
        again = _import_file(path, "my_stages").normalise.identity_hash()
    finally:
        sys.modules.pop("my_stages", None)
    assert before != after
    assert after == again


# --------------------------------------------------------------------------- pickling
@processing_stage(name="shout")
def shout(task: DocumentBatch) -> DocumentBatch:
    """Upper-case the text: a module-level function stage, as users write them."""
    table = task.to_pyarrow()
    upper = pc.utf8_upper(table["text"])
    return task.derive(table.set_column(table.column_names.index("text"), "text", upper))


def _batches() -> list[DocumentBatch]:
    return [DocumentBatch(f"b{i}", "docs", pa.table({"id": [f"d{i}-{j}" for j in range(3)],
                                                     "text": [f"doc {i} {j}" for j in range(3)]}))
            for i in range(4)]


def _rows(tasks) -> list[dict]:
    return sorted((r for t in tasks for r in t.to_pyarrow().to_pylist()), key=lambda r: r["id"])


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_function_stage_runs_under_multiprocess_executor_like_local(tmp_path, start_method):
    stages = [shout, shout.with_(name="shout_again", batch_size=2)]  # a configured copy too
    local = LocalExecutor().execute(stages, _batches())
    multi = MultiprocessExecutor(workers=2, spill_dir=str(tmp_path),
                                 start_method=start_method).execute(stages, _batches())
    assert _rows(multi) == _rows(local)
    assert _rows(multi)[0]["text"] == "DOC 0 0"
    assert [s.stage_name for s in multi[0].stage_history] == ["shout", "shout_again"]


def test_a_stage_that_cannot_reach_a_worker_is_named_with_the_fix(tmp_path):
    @processing_stage(name="local_only")
    def local_only(task):
        return task

    with pytest.raises(pickle.PicklingError, match="stage 'local_only'.*module level"):
        MultiprocessExecutor(workers=1, spill_dir=str(tmp_path)).execute([local_only], _batches())
