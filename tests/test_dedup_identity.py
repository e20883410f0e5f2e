"""Dedup names documents by a row identity, never by the user's id alone.

Before: with ``id_field``, two records sharing an id made exact (and fuzzy) dedup remove that id
everywhere, so a unique text vanished as "exact_duplicate" while the identity still held. Now the
row key is id + source location (unique by construction), later occurrences of an id go to
quarantine with file, line and the first occurrence, and every unique text is written.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from curator_stages.io import JsonlReader, JsonlWriter, read_quarantine
from curator_stages.accounting import HistoryAggregator, summarise
from curator_stages.pipeline import Pipeline
from curator_stages.tasks import DOCUMENTS_QUARANTINED, DocumentBatch, EmptyTask
from curator_stages.text.dedup import (
    DuplicateIdCheck,
    ExactDuplicateRemover,
    FuzzyDuplicateRemover,
)
from curator_stages.text.dedup.rows import row_keys, split_key

WORDS = ("river stone field cloud market window garden letter harbor candle silver meadow "
         "bridge lantern forest orchard valley engine pencil thunder").split()


def long_text(seed: int, n: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(n))


def read(path: Path, **kw) -> list[DocumentBatch]:
    tasks = [EmptyTask()]
    for stage in Pipeline("t", [JsonlReader(str(path), id_field="id", **kw)]).execution_stages():
        tasks = stage.run(tasks)
    return tasks


def drops(tasks) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for t in tasks:
        for stats in t._stage_perf:
            for reason, n in stats.dropped_by_reason().items():
                out[reason] += n
    return dict(out)


def quarantined(tasks) -> int:
    return int(sum(s.custom_metrics.get(DOCUMENTS_QUARANTINED, 0) for t in tasks
                   for s in t._stage_perf if s.stage_name not in ("file_partitioning",
                                                                  "jsonl_read")))


UNIQUE = "a unique text that exists once and must never be dropped as a duplicate"
SHARED = "a text that two records hold, so exact dedup keeps one of them"


def write_shared_id_corpus(root: Path) -> Path:
    """id "b" twice (line 1: unique text, line 3: a copy of id "a"'s text); c/d a plain pair."""
    root.mkdir()
    lines = [{"id": "b", "text": UNIQUE}, {"id": "a", "text": SHARED}, {"id": "b", "text": SHARED},
             {"id": "c", "text": "plain copy"}, {"id": "d", "text": "plain copy"}]
    (root / "part.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return root / "part.jsonl"


def test_shared_id_keeps_unique_text_and_quarantines_the_later_record(ray_cluster, tmp_path: Path):
    path = write_shared_id_corpus(tmp_path / "in")
    tasks = read(tmp_path / "in")
    filt = ExactDuplicateRemover().fit(ray_cluster.data.from_items(tasks))
    out = filt.run(tasks)
    kept = [(r["id"], r["text"]) for t in out for r in t.to_pyarrow().to_pylist()]
    assert ("b", UNIQUE) in kept and ("a", SHARED) in kept  # before: ("b", UNIQUE) was dropped
    assert drops(out) == {"exact_duplicate": 1}             # only d, the copy of c
    assert ("d", "plain copy") not in kept
    records = [r for t in out for r in t.metadata.get("quarantine", [])]
    assert [(r["file"], r["line"], r["reason"]) for r in records] == [
        (str(path), 3, f"duplicate id b (first at {path}:1)")]
    assert records[0]["raw"] == SHARED
    assert len(kept) + 1 + quarantined(out) == 5


def test_in_process_fit_makes_the_same_decision(tmp_path: Path):
    write_shared_id_corpus(tmp_path / "in")
    tasks = read(tmp_path / "in")
    out = ExactDuplicateRemover().fit_local(tasks).run(tasks)
    kept = sorted(r["id"] + ":" + r["text"] for t in out for r in t.to_pyarrow().to_pylist())
    assert kept == sorted([f"b:{UNIQUE}", f"a:{SHARED}", "c:plain copy"])
    assert quarantined(out) == 1 and drops(out) == {"exact_duplicate": 1}  # 3 + 1 + 1 = 5 read


def test_fuzzy_dedup_never_removes_a_shared_id_everywhere(ray_cluster, tmp_path: Path):
    base, unique = long_text(1), long_text(2)
    near = base.replace(WORDS[0], "quartz", 1) + " extra"
    root = tmp_path / "in"
    root.mkdir()
    rows = [{"id": "b", "text": unique}, {"id": "a", "text": base}, {"id": "b", "text": near},
            {"id": "e", "text": near + " ."}]
    (root / "f.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = read(root)
    stage = FuzzyDuplicateRemover(threshold=0.7)
    result = stage.find_duplicates(ray_cluster.data.from_items(tasks))
    assert [split_key(k)[0] for k in result.quarantine] == ["b"]
    out = stage.fit(ray_cluster.data.from_items(tasks)).run(tasks)
    kept = {(r["id"], r["text"]) for t in out for r in t.to_pyarrow().to_pylist()}
    assert ("b", unique) in kept and ("a", base) in kept  # before: both "b" rows went
    assert drops(out) == {"fuzzy_duplicate": 1}  # e, a near copy of a
    assert quarantined(out) == 1 and len(kept) == 2


def test_duplicate_id_check_alone_quarantines_without_dedup(ray_cluster, tmp_path: Path):
    path = write_shared_id_corpus(tmp_path / "in")
    tasks = read(tmp_path / "in")
    for filt in (DuplicateIdCheck().fit(ray_cluster.data.from_items(tasks)),
                 DuplicateIdCheck().fit_local(tasks)):
        out = filt.run(tasks)
        assert sum(t.num_items for t in out) == 4 and not drops(out)
        assert [(r["line"], r["reason"]) for t in out for r in t.metadata["quarantine"]] == [
            (3, f"duplicate id b (first at {path}:1)")]


def test_row_keys_are_unique_and_sort_like_the_keep_rule():
    table = pa.table({"id": ["b", "a", "b", "ab"], "text": ["x"] * 4,
                      "source_file": ["/d/2.jsonl", "/d/9.jsonl", "/d/10.jsonl", "/d/1.jsonl"],
                      "source_line": [2, 1, 10, 7]})
    keys = row_keys(table, "id", "t").to_pylist()
    assert len(set(keys)) == 4
    assert [split_key(k) for k in sorted(keys)] == [
        ("a", "/d/9.jsonl", 1), ("ab", "/d/1.jsonl", 7), ("b", "/d/10.jsonl", 10),
        ("b", "/d/2.jsonl", 2)]


def test_shared_id_without_source_columns_is_a_clear_error(ray_cluster):
    task = DocumentBatch("t", "d", {"id": ["x", "x"], "text": ["one", "two"]})
    with pytest.raises(Exception, match="id 'x' is shared by several documents .* unique id"):
        ExactDuplicateRemover().fit_local([task])
    with pytest.raises(Exception, match="id 'x' is shared by several documents"):
        ExactDuplicateRemover().fit(ray_cluster.data.from_items([task]))


def test_whole_pipeline_accounts_for_every_line(ray_cluster, tmp_path: Path):
    """Reader (damaged gzip, lone surrogate, shared ids) -> exact -> fuzzy -> writer on Ray:
    read = written + dropped + quarantined, and every unique text is written."""
    from curator_stages.backends.ray_data import RayDataExecutor

    root = tmp_path / "in"
    write_shared_id_corpus(root)
    good = [json.dumps({"id": f"g{i}", "text": long_text(10 + i)}) for i in range(300)]
    blob = gzip.compress(("\n".join(good) + "\n").encode())
    (root / "z.jsonl.gz").write_bytes(blob + b"trailing garbage")
    (root / "s.jsonl").write_text('{"id": "s1", "text": "lone \\ud800 surrogate"}\n'
                                  '{"id": "s2", "text": "fine"}\n')
    out = tmp_path / "out"
    pipeline = Pipeline("dedup_identity", [
        JsonlReader(str(root), id_field="id"), ExactDuplicateRemover(), FuzzyDuplicateRemover(),
        JsonlWriter(str(out / "data"), quarantine_output=str(out / "quarantine")),
    ])
    tasks = RayDataExecutor().execute(pipeline)
    summary = summarise(HistoryAggregator().add_tasks(tasks).to_dict())
    summary.check()
    assert summary.documents_read == 5 + 301 + 2
    assert summary.dropped_by_reason == {"exact_duplicate": 1}
    assert summary.documents_quarantined == 3  # garbage tail, surrogate, duplicate id
    written = [json.loads(line) for f in sorted((out / "data").glob("*.jsonl"))
               for line in f.read_text().splitlines()]
    assert {r["text"] for r in written} >= {UNIQUE, SHARED, *(json.loads(g)["text"] for g in good)}
    reasons = sorted(r["reason"].split(":")[0].split(" (")[0]
                     for f in (out / "quarantine").glob("*.jsonl") for r in read_quarantine(str(f)))
    assert reasons == ["duplicate id b", "text field 'text' is not valid Unicode",
                       "truncated/corrupt compressed stream"]


def test_flow_checks_ids_even_without_dedup(tmp_path: Path):
    """The rule "ids are unique or the extra records are quarantined" holds on every flow run:
    each dedup fit checks ids, and with both dedups off the flow adds the stand-alone check."""
    from flows.text_curation import TextCurationParams, build_stage_groups

    write_shared_id_corpus(tmp_path / "in")

    def global_stages(**kw):
        params = TextCurationParams(input=str(tmp_path / "in"), output=str(tmp_path / "o"),
                                    work_dir=str(tmp_path / "w"), language_id=False, **kw)
        return [type(s).__name__ for g in build_stage_groups(params) for s in g
                if type(s).__name__.endswith(("Check", "Remover"))]

    assert global_stages(id_field="id", exact_dedup=False, fuzzy_dedup=False) == ["DuplicateIdCheck"]
    assert global_stages(id_field="id") == ["ExactDuplicateRemover", "FuzzyDuplicateRemover"]
    assert global_stages(exact_dedup=False, fuzzy_dedup=False) == []  # ids from file:line


def test_duplicate_id_records_never_replace_the_readers_quarantine_file(tmp_path: Path):
    """A reader with quarantine_dir and a writer with the same quarantine_output: the dedup
    filter's records get their own file beside the reader's, so neither replaces the other."""
    root = tmp_path / "in"
    write_shared_id_corpus(root)
    with open(root / "part.jsonl", "a") as f:
        f.write("{broken json\n")
    q = tmp_path / "quarantine"
    tasks = [EmptyTask()]
    for stage in Pipeline("t", [JsonlReader(str(root), id_field="id", quarantine_dir=str(q))]
                          ).execution_stages():
        tasks = stage.run(tasks)
    tasks = ExactDuplicateRemover().fit_local(tasks).run(tasks)
    tasks = JsonlWriter(str(tmp_path / "data"), quarantine_output=str(q)).run(tasks)
    reasons = sorted(r["reason"].split(":")[0].split(" (")[0]
                     for f in q.glob("*.jsonl") for r in read_quarantine(str(f)))
    assert reasons == ["duplicate id b", "invalid JSON"]
    summary = summarise(HistoryAggregator().add_tasks(tasks).to_dict())
    summary.check()
    assert summary.documents_quarantined == 2 and summary.documents_read == 6
