"""The README's library example runs as written (only its output path is redirected)."""

from __future__ import annotations

import re

import pyarrow.parquet as pq


def _library_snippet(readme: str) -> str:
    section = readme.split("## Library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs(ray_cluster, repo_root, tmp_path, monkeypatch):
    code = _library_snippet((repo_root / "README.md").read_text())
    out_dir = tmp_path / "lib_demo"
    code = code.replace('"output/lib_demo"', repr(str(out_dir)))
    monkeypatch.chdir(repo_root)  # the example reads the shipped sample by a relative path
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    written = namespace["written"]
    files = [p for task in written for p in task.data]
    assert files and all(p.startswith(str(out_dir)) for p in files)
    rows = sum(pq.read_metadata(p).num_rows for p in files)
    summary = written.summary  # public counts: no reaching into a task's internals
    assert rows == summary.documents_out > 0
    assert summary.balanced, summary.to_text()
    assert summary.dropped_by_reason.get("exact_duplicate", 0) > 0
    assert all(task.task_id.startswith("curate-") for task in written)  # named after the pipeline
    ids = [i for p in files for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids))  # exact dedup left one copy of each document
    assert ray_cluster.is_initialized()  # the executor did not shut down the session's Ray
