"""The temporary API spawned at process start (``api_server.start_early``): refused wherever
Prefect's settings could disagree with the guess, adopted only when they agree, stopped otherwise.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from curator_stages.orchestration import api_server


def warm_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "prefect.db").write_bytes(b"")  # an empty SQLite file: the server migrates it
    return home


def refusal(tmp_path: Path, argv=("--output", "o"), **environ: str) -> str | None:
    env = {"PREFECT_HOME": str(tmp_path / "home"), **environ}
    return api_server.early_start_refusal(list(argv), env, tmp_path)


def test_early_start_is_refused_wherever_prefect_could_decide_otherwise(tmp_path):
    assert "first run" in refusal(tmp_path)  # no database yet: a first run migrates it
    home = warm_home(tmp_path)
    assert refusal(tmp_path) is None
    assert refusal(tmp_path, argv=["--help"]) and refusal(tmp_path, argv=["--plan"])
    for name in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_PROFILE",
                 "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
        assert name in refusal(tmp_path, **{name: "x"})
    assert "not a number" in refusal(
        tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="soon")
    profiles = home / "profiles.toml"
    profiles.write_text('active = "ephemeral"\n[profiles.ephemeral]\n'
                        'PREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"\n')
    assert refusal(tmp_path) is None  # Prefect's own default profile
    profiles.write_text('active = "local"\n[profiles.local]\n'
                        'PREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    assert "profile" in refusal(tmp_path)
    profiles.write_text('active = "off"\n[profiles.off]\n'
                        'PREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "false"\n')
    assert "profile" in refusal(tmp_path)
    profiles.write_text("active = [")
    assert "unreadable" in refusal(tmp_path)
    profiles.unlink()
    (tmp_path / ".env").write_text("PREFECT_API_URL=http://example.invalid/api\n")
    assert ".env" in refusal(tmp_path)
    (tmp_path / ".env").write_text("OTHER=1\n")
    (tmp_path / "prefect.toml").write_text("[api]\nurl = 'http://example.invalid/api'\n")
    assert "prefect.toml" in refusal(tmp_path)


def _gone(server: api_server.TemporaryApiServer, pid: int) -> bool:
    return server.process is None and (not psutil.pid_exists(pid) or
                                       psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


@pytest.mark.slow
def test_an_early_server_is_adopted_when_prefect_agrees_and_stopped_when_not(
        tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = warm_home(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH",
                 "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(api_server, "_early", None)

    early = api_server.start_early(["--output", "o"])
    assert early is not None and early.spawned_early
    assert api_server.start_early(["--output", "o"]) is None  # one per process
    url = early.wait()
    assert url is not None and url.startswith("http://127.0.0.1:"), early.error
    pid = early.process.pid
    try:
        # Prefect's settings agree (no API URL, same home): the very same server is used.
        with temporary_settings(updates={PREFECT_HOME: str(home)},
                                restore_defaults={PREFECT_API_URL}):
            adopted = api_server.start_temporary_api()
        assert adopted is early and api_server._healthy(url)
    finally:
        early.stop()
    assert _gone(early, pid)

    # Settings that disagree (an API URL from somewhere the guess cannot see): stopped, unused.
    again = api_server.start_early(["--output", "o"])
    assert again is not None and again.wait() is not None
    pid = again.process.pid
    with temporary_settings(updates={PREFECT_HOME: str(home),
                                     PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert api_server.start_temporary_api() is None
    assert _gone(again, pid) and api_server._early is None


@pytest.mark.parametrize("argv", [["--help"], ["--plan"]])
def test_help_and_plan_spawn_nothing(tmp_path, monkeypatch, argv):
    warm_home(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(api_server, "_early", None)
    assert api_server.start_early(argv) is None and api_server._early is None
