"""Task.metadata: a read-only view, and writes that never reach a fan-out sibling."""

import pickle

import pyarrow as pa
import pytest

from curator_stages.tasks import DocumentBatch


def _batch(**meta) -> DocumentBatch:
    return DocumentBatch(task_id="t", dataset_name="ds", data=pa.table({"id": ["a"]}),
                         _metadata=dict(meta))


def test_metadata_is_a_read_only_view():
    task = _batch(source="s.jsonl")
    assert task.metadata == {"source": "s.jsonl"} and task.metadata["source"] == "s.jsonl"
    with pytest.raises(TypeError):
        task.metadata["source"] = "other"  # type: ignore[index]


def test_writes_replace_the_dict_so_siblings_sharing_it_are_untouched():
    shared = {"file_group_key": "k"}  # as fan-out siblings may share their parent's dict
    a, b = (DocumentBatch(task_id=i, dataset_name="ds", data=pa.table({"id": [i]}),
                          _metadata=shared) for i in "ab")
    a.set_metadata("x", 1)
    a.update_metadata({"y": 2, "z:with colon": 3})
    b.remove_metadata("file_group_key")
    assert a.metadata == {"file_group_key": "k", "x": 1, "y": 2, "z:with colon": 3}
    assert b.metadata == {}
    assert shared == {"file_group_key": "k"}
    b.remove_metadata("absent")  # no error for a missing key
    assert b.metadata == {}


def test_metadata_set_through_the_api_survives_pickling_and_derive():
    task = _batch()
    task.set_metadata("k", [1, 2])
    back = pickle.loads(pickle.dumps(task))
    assert back.metadata == {"k": [1, 2]}
    child = back.derive(pa.table({"id": ["c"]}), extra=True)
    assert child.metadata == {"k": [1, 2], "extra": True} and back.metadata == {"k": [1, 2]}
