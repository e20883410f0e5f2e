"""Importing the library changes no process-wide state: no ``os.environ`` writes at import.

A guard, not a bug fix: settings for a local run are applied by the code that starts the run
(``RaySession``, the flows' entry points), so a program that only imports a stage class keeps
its own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, json, os, pkgutil
import fsspec, prefect, pyarrow, pydantic, ray, ray.data  # their own import-time settings
before = dict(os.environ)
import curator_stages
names = sorted(m.name for m in pkgutil.walk_packages(curator_stages.__path__, "curator_stages.")
               if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
print(json.dumps({"modules": len(names), "changed": changed}))
"""


def test_importing_every_module_writes_no_environment_variable():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] > 20
    assert result["changed"] == [], f"importing curator_stages set {result['changed']}"
