"""Environments and Prefect homes for flow subprocesses.

A local run on a new ``PREFECT_HOME`` migrates that home's database before its temporary API
answers: about 7 s of a start's 17 s here, paid again by every test whose run gets a home of
its own. Tests about the first start on a new home (a first local run, two runs starting on one
new home) keep a new home. The others ask for a migrated one: a copy of one database that
``prefect server database upgrade`` migrated once per test process, so the same schema and no
rows of any other run.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATABASE = "prefect.db"  # Prefect's default database, in PREFECT_HOME


def clean_env(tmp_path: Path, *, migrated: bool = False) -> dict[str, str]:
    """This process's environment without a Prefect API or a Ray address, with a PREFECT_HOME of
    its own under ``tmp_path`` (migrated first when ``migrated``) and the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    home = tmp_path / "prefect-home"
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if migrated:
        migrated_home(home)
    return env


def migrated_home(home: Path) -> Path:
    """``home`` with a migrated database, unless it already has a database (a run may be using
    it)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / DATABASE).exists():
        shutil.copyfile(_migrated_database(), home / DATABASE)
    return home


@functools.cache
def _migrated_database() -> Path:
    template = Path(os.environ["PREFECT_HOME"]) / "migrated-template"
    template.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(template), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    res = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and (template / DATABASE).exists(), res.stderr[-3000:]
    return template / DATABASE
