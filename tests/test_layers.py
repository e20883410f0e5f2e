"""The import layers of pyproject.toml's ``[tool.importlinter]`` hold (import-linter).

Runs ``lint-imports`` on this checkout with the repository's contracts: a new import that goes
up a layer (the core importing a backend, reporting importing orchestration...), a new cycle
between sibling modules, or Prefect imported below orchestration fails here with the chain of
imports that breaks the contract. Skipped where import-linter (the ``dev`` extra) is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parent.parent
_CLI = ("import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())")


def _lint(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", _CLI, "--config", str(config), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_repository_keeps_its_import_contracts():
    result = _lint(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_up_a_layer_breaks_the_contract(tmp_path: Path):
    """The check is not vacuous: the same tool fails on a package whose lower layer imports up."""
    package = tmp_path / "layerprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "high.py").write_text("")
    (package / "low.py").write_text("from layerprobe import high\n")
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "layerprobe"\n\n'
                      '[[tool.importlinter.contracts]]\nname = "probe"\ntype = "layers"\n'
                      'layers = ["layerprobe.high", "layerprobe.low"]\n')
    result = _lint(config, tmp_path)
    assert result.returncode != 0
    assert "layerprobe.low is not allowed to import layerprobe.high" in result.stdout
