"""A worker hands freed memory back between tasks (Ray workers live through many tasks).

Two parts keep a long-lived worker near its working set: the run's environment sets
``MIMALLOC_PURGE_DELAY=0`` (Arrow's default allocator, mimalloc, then returns freed pages at
once), and every checkpoint-loading task first calls ``return_freed_memory``. These
tests fail if a pyarrow upgrade changes the allocator or stops reading the setting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq

from curator_stages.runtime.arrow_pool import ARROW_POOL_VARIABLE
from curator_stages.runtime.env import RAY_ENV_DEFAULTS

# Reads a Parquet file of text 12 times, as a worker loading one checkpoint file per task
# does, and prints the memory it kept (USS above the start, MB) once every table is freed.
_READ_AND_FREE = textwrap.dedent("""
    import gc, sys, psutil, pyarrow.parquet as pq
    from curator_stages.runtime.worker_memory import return_freed_memory
    p = psutil.Process()
    base = p.memory_full_info().uss
    for _ in range(12):
        table = pq.read_table(sys.argv[1])
        del table
        gc.collect()
        if sys.argv[2] == "release":
            return_freed_memory()
    print((p.memory_full_info().uss - base) / 2**20)
""")


_PRINT_POOL = "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _kept_mb(path: str, purge: str | None, release: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    if purge is not None:
        env["MIMALLOC_PURGE_DELAY"] = purge
    out = subprocess.run([sys.executable, "-c", _READ_AND_FREE, path,
                          "release" if release else "keep"],
                         env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _fresh_python(code: str, env: dict[str, str] | None = None) -> list[str]:
    """What a fresh interpreter running ``code`` prints, word by word."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    return out.stdout.split()


def test_freed_arrow_memory_goes_back_with_the_run_environment(tmp_path):
    # A Ray worker's pool: a process that imports pyarrow by itself.
    assert _fresh_python(_PRINT_POOL) == ["mimalloc"], (
        "Arrow's default pool is no longer mimalloc: MIMALLOC_PURGE_DELAY in "
        "runtime/env.py no longer applies; check what the new allocator keeps")
    assert RAY_ENV_DEFAULTS["MIMALLOC_PURGE_DELAY"] == "0"
    words = [f"document {i} " + "text of a web page " * (20 + i % 80) for i in range(40_000)]
    path = str(tmp_path / "part.parquet")
    pq.write_table(pa.table({"id": [str(i) for i in range(len(words))], "text": words}), path,
                   row_group_size=4_000)
    kept_default = _kept_mb(path, None, release=False)
    kept_ours = _kept_mb(path, "0", release=True)
    assert kept_default > 40, f"mimalloc kept only {kept_default:.0f} MB: test data too small"
    assert kept_ours < 0.6 * kept_default, (
        f"with the run's settings a reader kept {kept_ours:.0f} MB, with mimalloc's defaults "
        f"{kept_default:.0f} MB: freed memory is no longer handed back")


def test_the_dedup_stages_a_worker_imports_leave_scipy_out():
    # Only the fit's driver computes connected components; a worker that signs or filters
    # documents would otherwise carry scipy.sparse (about 10 MiB private, 220 modules).
    code = ("import sys, curator_stages.text.dedup, curator_stages.text.dedup.fuzzy, "
            "curator_stages.text.dedup.exact; print('scipy' in sys.modules)")
    assert _fresh_python(code) == ["False"], "a dedup module imports scipy at module level again"


def test_a_driver_gets_glibcs_arrow_pool_and_the_processes_it_starts_mimalloc():
    # The driver's fuzzy fit left freed pages in mimalloc that glibc gives back
    # (runtime/arrow_pool.py); the processes it starts (Ray's workers) must keep mimalloc.
    code = ("import os, subprocess, sys, curator_stages, pyarrow as pa; "
            "print(pa.default_memory_pool().backend_name, "
            "os.environ.get('ARROW_DEFAULT_MEMORY_POOL', '-'), flush=True); "
            f"subprocess.run([sys.executable, '-c', {_PRINT_POOL!r}], check=True)")
    env = {k: v for k, v in os.environ.items() if k != ARROW_POOL_VARIABLE}
    assert _fresh_python(code, env) == ["system", "-", "mimalloc"]
    # A pool the user chose is kept.
    assert _fresh_python(code, {**env, ARROW_POOL_VARIABLE: "mimalloc"}) == [
        "mimalloc", "mimalloc", "mimalloc"]


def test_a_ray_worker_importing_curator_stages_keeps_mimalloc(ray_cluster):
    import ray

    # Its own runtime environment gives the task a fresh worker, one without pyarrow yet.
    @ray.remote(runtime_env={"env_vars": {"CURATOR_STAGES_POOL_CHECK": "1"}})
    def pool() -> tuple[bool, str]:
        had_pyarrow = "pyarrow" in sys.modules
        import curator_stages  # noqa: F401
        import pyarrow

        return had_pyarrow, pyarrow.default_memory_pool().backend_name

    had_pyarrow, name = ray.get(pool.remote())
    assert not had_pyarrow, "the worker had imported pyarrow already: this checks nothing"
    assert name == "mimalloc", f"a Ray worker importing curator_stages got Arrow's {name} pool"
