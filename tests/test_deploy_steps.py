"""prefect.yaml's pull steps: a worker started without CURATOR_STAGES_HOME fails in one line
naming it, not later with a missing flows/<name>.py in a temporary directory."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path

import pytest
import yaml

from curator_stages.orchestration.deploy_steps import CheckoutNotSetError, require_checkout

REPO = Path(__file__).resolve().parents[1]


def _pull_steps() -> list[dict]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"]


def test_the_pull_steps_check_the_checkout_variable_first():
    (first, kwargs), = _pull_steps()[0].items()
    module, name = first.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is require_checkout
    assert kwargs == {"env_var": "CURATOR_STAGES_HOME"}
    assert list(_pull_steps()[1]) == ["prefect.deployments.steps.set_working_directory"]


def test_a_missing_or_wrong_checkout_is_one_line_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("CURATOR_STAGES_HOME", raising=False)
    with pytest.raises(CheckoutNotSetError) as err:
        require_checkout()
    assert str(err.value).startswith("CURATOR_STAGES_HOME is not set in the worker's environment")
    assert "\n" not in str(err.value)
    monkeypatch.setenv("CURATOR_STAGES_HOME", str(tmp_path))
    with pytest.raises(CheckoutNotSetError, match="is not a checkout of curator_stages"):
        require_checkout()
    monkeypatch.setenv("CURATOR_STAGES_HOME", str(REPO))
    assert require_checkout() == {"directory": str(REPO)}


@pytest.mark.slow
def test_prefects_step_runner_stops_at_the_check(monkeypatch, tmp_path):
    """Prefect's own runner of pull steps (it starts a temporary API: slow)."""
    from prefect.deployments.steps.core import StepExecutionError, run_steps

    monkeypatch.delenv("CURATOR_STAGES_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StepExecutionError) as err:
        asyncio.run(run_steps(_pull_steps(), print_function=lambda *a, **k: None))
    assert str(err.value.__cause__).startswith("CURATOR_STAGES_HOME is not set")
    assert os.getcwd() == str(tmp_path)  # set_working_directory never ran
