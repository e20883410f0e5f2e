"""Work dirs and outputs that cannot be turned against the user (issue 20, items 4-9).

Anyone who can write a shared work dir or output must not be able to make a run read files
outside its input, delete or overwrite files outside its output, slip past the lock, or leave a
checkpoint that breaks every later run: a file list is checked against the run's own listing,
no symbolic link inside an output or work dir is followed, temporaries are created exclusively
and never through a link, locks are keyed on the canonical location, and an object-store commit
is safe without a lock.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from curator_stages import DocumentBatch
from curator_stages import checkpoints as ckpt
from curator_stages.checkpoints.task_files import UnsafeCheckpointError
from curator_stages.io.output_commit import clean_unfinished, publish
from curator_stages.io.output_manifest import MANIFEST_NAME
from curator_stages.orchestration.work_dir_lock import (
    HOLDER_FILE,
    LOCK_FILE,
    OutputBusyError,
    WorkDirBusyError,
    output_lock,
    work_dir_lock,
)
from curator_stages.tasks import FileGroupTask

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def other_thread(fn) -> BaseException | None:
    """Run ``fn`` in another thread (locks re-enter within one); return what it raised."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return errors[0] if errors else None


# ----------------------------------------------------------------------------- item 4
def file_group_checkpoint(work: Path, files: list[str]) -> str:
    final = str(work / "0123456789abcdef-file_partitioning")
    with ckpt.CheckpointWriter(final) as writer:
        writer.write(FileGroupTask(task_id="g0", dataset_name="d", data=files))
        writer.commit(fingerprint="0" * 64, stages=["file_partitioning"])
    return final


def test_a_file_list_naming_a_file_outside_the_input_listing_is_refused_unread(tmp_path):
    listed = [str(tmp_path / "in" / "a.jsonl")]
    secret = str(tmp_path / "secret.jsonl")
    final = file_group_checkpoint(tmp_path / "work", [*listed, secret])
    [path] = ckpt.checkpoint_files(final)
    loader = ckpt.tasks_loader(listed)
    with pytest.raises(UnsafeCheckpointError) as err:
        loader({"item": np.array([path], dtype=object)})
    assert secret in str(err.value) and final in str(err.value) and "--refresh" in str(err.value)
    with pytest.raises(UnsafeCheckpointError, match="no input listing"):
        ckpt.tasks_loader(None)({"item": np.array([path], dtype=object)})
    with pytest.raises(UnsafeCheckpointError, match="not a file of this run's input listing"):
        ckpt.tasks_loader(())({"item": np.array([path], dtype=object)})  # undeclared list
    # The run's own listing passes.
    ok = file_group_checkpoint(tmp_path / "work2", listed)
    [task] = ckpt.tasks_loader(listed)({"item": np.array(ckpt.checkpoint_files(ok),
                                                          dtype=object)})["item"]
    assert task.data == listed


@pytest.mark.slow
def test_a_crafted_file_list_checkpoint_fails_the_run_and_reads_nothing(
        ray_cluster, prefect_harness, tmp_path):
    """The issue's reproduction: a path appended to the file partitioner's checkpoint of an
    unfused run was read and copied into <output>/quarantine by the re-run."""
    from flows.text_curation import TextCurationParams, text_curation

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE / "shard-00001.jsonl", src)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-7f3a9 not json\n")
    work, out = tmp_path / "work", tmp_path / "out"
    # Unfused, so the file partitioner has a checkpoint of its own; the dedup stages (not what
    # is tested) are off, which leaves fewer stage tasks to run.
    params = TextCurationParams(input=str(src), output=str(out), work_dir=str(work),
                                fuse_cheap_stages=False, exact_dedup=False, fuzzy_dedup=False,
                                retries=0, language_id=False)
    assert text_curation(params)["identity"]["holds"]
    [part] = list(work.glob("*-file_partitioning/part-*.json"))
    body = json.loads(part.read_text())
    body["data"].append(str(secret))
    part.write_text(json.dumps(body))
    for d in work.iterdir():
        if not d.name.endswith("-file_partitioning"):
            shutil.rmtree(d)
    with pytest.raises(UnsafeCheckpointError) as err:
        text_curation(params)
    assert str(err.value).startswith("stage 'jsonl_read': checkpoint file ")
    assert str(secret) in str(err.value) and "input listing" in str(err.value)
    leaked = [p for p in out.rglob("*") if p.is_file() and b"SECRET-7f3a9" in p.read_bytes()]
    assert leaked == []


# ----------------------------------------------------------------------------- items 5 and 6
def test_prune_never_deletes_through_a_linked_output_subdir(tmp_path):
    """Item 5: <output>/data linked to another directory, and a record listing data/keep:
    the prune deleted the file outside the output."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "keep"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").symlink_to(elsewhere)
    (out / MANIFEST_NAME).write_text(json.dumps({
        "format": "curator_stages.outputs", "version": 1,
        "flows": {"text-curation": {"files": ["data/keep"]}}}))
    with pytest.raises(ValueError, match="symbolic link") as err:
        publish(str(out), "text-curation", "0123456789abcdef", [])
    assert str(out / "data") in str(err.value)
    assert victim.read_text() == "precious"
    # An unfinished publish's intent naming the same file deletes nothing through the link.
    attempt = out / "_attempts" / "0123456789abcdef"
    attempt.mkdir(parents=True, exist_ok=True)
    (attempt / "_publish.json").write_text(json.dumps({"files": ["data/keep"]}))
    (out / MANIFEST_NAME).unlink()
    with pytest.raises(ValueError, match="symbolic link"):
        clean_unfinished(str(out))
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("target", ["input", "elsewhere"])
def test_an_output_subdir_that_is_a_link_is_refused_at_validation(tmp_path, target):
    """Item 6 (<output>/data linked into the input: parts were written into the input and read
    back by the next run) and item 5 (linked elsewhere): refused before anything runs."""
    from flows.text_curation import TextCurationParams

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE / "shard-00001.jsonl", src)
    aim = src if target == "input" else tmp_path / "elsewhere"
    aim.mkdir(exist_ok=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").symlink_to(aim)
    with pytest.raises(ValidationError) as err:
        TextCurationParams(input=str(src), output=str(out), work_dir=str(tmp_path / "w"))
    assert [e["loc"][0] for e in err.value.errors()] == ["output"]
    assert str(out / "data") in str(err.value) and "Remove the link" in str(err.value)
    assert sorted(p.name for p in src.iterdir()) == ["shard-00001.jsonl"]


def test_a_linked_checkpoint_or_task_file_is_refused_unread(tmp_path):
    real = file_group_checkpoint(tmp_path / "elsewhere", [str(tmp_path / "a.jsonl")])
    work = tmp_path / "work"
    work.mkdir()
    (work / "0123456789abcdef-x").symlink_to(real)
    with pytest.raises(UnsafeCheckpointError, match="symbolic link"):
        ckpt.read_manifest(str(work / "0123456789abcdef-x"))
    [part] = ckpt.checkpoint_files(real)
    os.replace(part, part + ".moved")
    os.symlink(part + ".moved", part)
    with pytest.raises(UnsafeCheckpointError, match="symbolic link"):
        ckpt.read_tasks(real)


# ----------------------------------------------------------------------------- item 7
def test_the_lock_record_never_writes_through_a_planted_link(tmp_path):
    """Item 7: ``ln -s VICTIM <work_dir>/.curator.lock.json.<pid>.tmp`` made the run overwrite
    VICTIM (the temporary had a predictable name and was opened following links)."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    (work / f"{HOLDER_FILE}.{os.getpid()}.tmp").symlink_to(victim)
    (work / HOLDER_FILE).symlink_to(victim)
    with work_dir_lock(str(work)):
        record = json.loads((work / HOLDER_FILE).read_text())
        assert record["pid"] == os.getpid() and not (work / HOLDER_FILE).is_symlink()
    assert victim.read_text() == "precious"


def test_a_linked_lock_file_is_refused(tmp_path):
    victim = tmp_path / "victim"
    work = tmp_path / "work"
    work.mkdir()
    (work / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        with work_dir_lock(str(work)):
            pass
    assert not victim.exists()


def test_report_files_are_never_written_through_links_planted_in_the_output(tmp_path):
    """The same attack on the output: the report and its context went through fixed temporary
    names (``report.md.tmp``, ``.report_context.json.tmp``) opened following links."""
    from curator_stages.accounting import summarise
    from curator_stages.reporting.run_summary import write_run_summary
    from curator_stages.reporting import write_run_report

    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.md.tmp", ".report_context.json.tmp", "report.md", "funnel.png"):
        (out / name).symlink_to(victim)
    summary = summarise({}, final_documents=0)
    write_run_summary(summary, str(out))
    write_run_report(out, summary, title="t")
    assert victim.read_text() == "precious"
    assert not (out / "report.md").is_symlink() and (out / "report.md").read_text()
    assert not (out / "funnel.png").is_symlink()


def test_a_temporary_is_created_exclusively_and_never_through_a_link(tmp_path):
    from curator_stages.io.filesystem import open_new

    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(FileExistsError):
        open_new(str(tmp_path / "planted"))
    assert victim.read_text() == "precious"


# ----------------------------------------------------------------------------- item 8
@pytest.mark.parametrize("spelling", ["local://{}", "file://{}", "{}/", "{}/./", "{}-link"])
def test_the_work_dir_lock_is_keyed_on_the_canonical_location(tmp_path, spelling):
    """Item 8: --work-dir local://$T/w4 beside a run holding $T/w4 took no lock."""
    work = tmp_path / "w4"
    work.mkdir()
    (tmp_path / "w4-link").symlink_to(work)
    other = spelling.format(work)
    with work_dir_lock(str(work)):
        err = other_thread(lambda: work_dir_lock(other).__enter__())
    assert isinstance(err, WorkDirBusyError), err
    assert "in use by another run" in str(err) and "--work-dir" in str(err)


def test_output_lock_refuses_a_second_holder_naming_it_and_frees_itself(tmp_path):
    out = tmp_path / "out"
    with output_lock(str(out)) as held:
        assert held and (out / LOCK_FILE).exists()
        with output_lock(f"local://{out}") as again:  # the same thread re-enters
            assert again
        err = other_thread(lambda: output_lock(f"file://{out}/").__enter__())
        assert isinstance(err, OutputBusyError), err
        message = str(err)
        assert f"pid {os.getpid()}" in message and "--output" in message and "Wait" in message
    assert list(out.iterdir()) == []  # lock and holder record removed
    with output_lock(str(out)) as held:
        assert held
    with output_lock("memory://bucket/out") as held:
        assert held is False


# ----------------------------------------------------------------------------- item 9
def doc_batch(i: int) -> DocumentBatch:
    return DocumentBatch(task_id=f"t{i}", dataset_name="d",
                         data=pa.table({"id": [f"{i}-{j}" for j in range(3)],
                                        "text": [f"doc {i} {j}" for j in range(3)]}))


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.slow)])
def store(request, monkeypatch):
    """(checkpoint URL, fsspec filesystem) on an in-memory store or the real S3 server."""
    run = f"race-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        import fsspec

        return f"memory://{run}/0123456789abcdef-stage", fsspec.filesystem("memory")
    server = request.getfixturevalue("s3_server")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return server.url(run, "0123456789abcdef-stage"), server.filesystem()


def all_listed_files_exist(final: str, fs) -> bool:
    fs.invalidate_cache()
    manifest = ckpt.read_manifest(final)
    root = final.split("://", 1)[1]
    return manifest is not None and all(fs.exists(f"{root}/{f['file']}")
                                        for f in manifest["files"])


def test_two_attempts_committing_one_checkpoint_leave_a_whole_manifest(store):
    """Item 9: two runs on one object-store work dir: run A's commit removed run B's attempt
    in progress as an orphan, B's manifest then listed deleted files, and every later run
    failed (FileNotFoundError ...attempt-...)."""
    final, fs = store
    b = ckpt.CheckpointWriter(final).__enter__()
    b.write(doc_batch(0))  # B is mid-attempt
    with ckpt.CheckpointWriter(final) as a:
        a.write(doc_batch(0))
        a.write(doc_batch(1))
        a.commit(fingerprint="f" * 64, stages=["stage"])
    root = final.split("://", 1)[1]
    fs.invalidate_cache()
    assert fs.exists(f"{b.tmp_path.split('://', 1)[1]}/part-000000.parquet")  # B's part kept
    b.write(doc_batch(1))
    b.commit(fingerprint="f" * 64, stages=["stage"])
    assert all_listed_files_exist(final, fs)
    assert [t.task_id for t in ckpt.read_tasks(final)] == ["t0", "t1"]
    # Attempts the manifest does not list go once stale (here: at once), never the listed one.
    ckpt.remove_stale_attempts(final, older_than_s=0)
    assert all_listed_files_exist(final, fs)
    fs.invalidate_cache()
    tops = {p.split("0123456789abcdef-stage/", 1)[1].split("/")[0] for p in fs.find(root)}
    assert len(tops) == 2 and "manifest.json" in tops  # the manifest and its one attempt


def test_a_manifest_is_never_published_over_files_that_vanished(store):
    final, fs = store
    with pytest.raises(ckpt.CheckpointWriteError, match="vanished"):
        with ckpt.CheckpointWriter(final) as writer:
            writer.write(doc_batch(0))
            writer.write(doc_batch(1))
            fs.rm(f"{writer.tmp_path.split('://', 1)[1]}/part-000000.parquet")
            writer.commit(fingerprint="f" * 64, stages=["stage"])
    assert not ckpt.is_complete(final)


def test_a_checkpoint_whose_listed_file_is_gone_is_not_complete_for_a_resume(tmp_path):
    final = str(tmp_path / "0123456789abcdef-stage")
    with ckpt.CheckpointWriter(final) as writer:
        writer.write(doc_batch(0))
        manifest = writer.commit(fingerprint="f" * 64, stages=["stage"])
    assert ckpt.missing_files(final, manifest) == []
    [part] = ckpt.checkpoint_files(final)
    os.remove(part)
    assert ckpt.missing_files(final, manifest) == [os.path.basename(part)]


@pytest.mark.slow
def test_a_run_recomputes_a_checkpoint_whose_listed_file_is_gone(ray_cluster, prefect_harness,
                                                                  tmp_path):
    """The state item 9 left behind (a manifest listing a deleted file) failed every later run
    with FileNotFoundError; now the checkpoint is recomputed and the run completes."""
    from flows.text_curation import TextCurationParams, text_curation

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE / "shard-00001.jsonl", src)
    # Fuzzy dedup (not what is tested) is off: fewer stage tasks, still one after the reader's.
    params = TextCurationParams(input=str(src), output=str(tmp_path / "out"),
                                work_dir=str(tmp_path / "work"), fuzzy_dedup=False, retries=0,
                                language_id=False)
    first = text_curation(params)
    assert len(first["stage_tasks"]) >= 2
    read, after = (Path(t["checkpoint"]) for t in first["stage_tasks"][:2])
    os.remove(next(read.glob("part-*")))
    shutil.rmtree(after)  # the stage after it must read it again
    again = text_curation(params)
    assert again["stage_tasks"][0]["status"] == "Completed"  # recomputed, not served
    assert again["documents_written"] == first["documents_written"]
    assert again["identity"]["holds"]
