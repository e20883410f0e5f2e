"""A warm local Ray: started once (``curator-stages ray start``), joined by many runs.

A cold run pays Ray's start and stop (5-10 s on a small machine) every time. The warm Ray is the
embedded Ray kept running: a holder process (:mod:`.warm_holder`, in its own session) starts it
with :func:`~curator_stages.runtime.ray_cluster.start_local_ray`, so it has the same safety
rules (127.0.0.1 only, token authentication). ``ray start --head`` is not used: it adds a Ray
Client server and an autoscaler monitor, writes Ray's machine-wide address file (a plain
``ray.init()`` of any process would then join this cluster and fail on its token), and
``ray stop`` stops every Ray of the user, embedded runs included.

* The token lives in ``auth_token`` (0600) in a 0700 per-user state directory
  (``$CURATOR_STAGES_RAY_DIR``, else ``$XDG_STATE_HOME/curator-stages/ray``, else
  ``~/.local/state/curator-stages/ray``); a run joining the recorded address with no token of
  its own uses it (:func:`token_path_for`). It is never printed.
* ``"auto"`` means this state directory's warm Ray (:func:`resolve_auto`), never Ray's own
  search of the machine (which can find another user's cluster and hang on it).
* Stopping stops the recorded holder (pid *and* start time, so a reused pid is never signalled)
  and its descendants only.
* A state directory or file another user could write is not trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "CURATOR_STAGES_RAY_DIR"
STATE_FILE, TOKEN_FILE, LOG_FILE = "state.json", "auth_token", "holder.log"
#: Seconds ``start`` waits for the holder's address (Ray's start, with one retry, when busy).
START_TIMEOUT_S = 240.0


class WarmRayError(RuntimeError):
    """The warm Ray could not be started or used; the message says why and what to do."""


@dataclass(frozen=True)
class WarmRay:
    """What the holder recorded about the running warm Ray."""

    pid: int
    create_time: float
    address: str
    num_cpus: float
    token_path: str
    pythonpath: str = ""  # what every worker of the cluster imports from
    object_store_memory: float = 0.0


def state_dir() -> Path:
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "curator-stages" / "ray"


def _private(path: Path) -> bool:
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def recorded() -> WarmRay | None:
    """The warm Ray recorded in the (private) state directory, if its holder still runs."""
    folder = state_dir()
    try:
        if not (_private(folder) and _private(folder / STATE_FILE)):
            return None
        warm = WarmRay(**json.loads((folder / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return warm if _holder(warm) is not None else None


def record(warm: WarmRay) -> None:
    """Write the state file atomically (the holder, once its Ray runs)."""
    path = state_dir() / STATE_FILE
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(json.dumps(asdict(warm)))
    os.replace(tmp, path)


def token_path_for(address: str) -> str | None:
    """The warm Ray's token file when ``address`` is the running warm Ray's, else ``None``."""
    warm = recorded()
    if warm is None or not address or address != warm.address:
        return None
    return warm.token_path if Path(warm.token_path).is_file() else None


def resolve_auto(address: str) -> str:
    """``address``, with ``"auto"`` (argument or ``RAY_ADDRESS``) made this state directory's
    warm Ray's address; :class:`WarmRayError` when none runs."""
    if address == "auto" or (not address and os.environ.get("RAY_ADDRESS") == "auto"):
        warm = recorded()
        if warm is None:
            raise WarmRayError(
                f"ray address 'auto' means this user's warm Ray of {state_dir()}, and none runs "
                "there; start one (curator-stages ray start), give a cluster's host:port, or "
                "leave the address unset (and RAY_ADDRESS empty) for an embedded Ray")
        return warm.address
    return address


def redundant_env(runtime_env: dict[str, Any] | None, address: str) -> bool:
    """True when ``runtime_env`` only sets a PYTHONPATH the warm Ray's workers already have
    (a job-level runtime_env would make every worker of the run a runtime-env worker)."""
    warm = recorded()
    if warm is None or address != warm.address or not runtime_env:
        return False
    if set(runtime_env) != {"env_vars"} or set(runtime_env["env_vars"] or {}) != {"PYTHONPATH"}:
        return False
    have = {os.path.realpath(p) for p in warm.pythonpath.split(os.pathsep) if p}
    return all(os.path.realpath(p) in have
               for p in runtime_env["env_vars"]["PYTHONPATH"].split(os.pathsep) if p)


def _holder(warm: WarmRay) -> Any:
    """The holder's psutil.Process when that pid is still the recorded process, else None."""
    import psutil

    try:
        proc = psutil.Process(warm.pid)
        if abs(proc.create_time() - warm.create_time) > 1.0 or \
                proc.status() == psutil.STATUS_ZOMBIE:
            return None  # the pid was reused, or the holder has ended
        return proc
    except psutil.Error:
        return None


def start(num_cpus: int | None = None, *, timeout_s: float = START_TIMEOUT_S,
          object_store_memory: int | None = None, spill_dir: str | None = None) -> WarmRay:
    """Start the warm Ray (refused when one runs); returns what the holder recorded.

    ``object_store_memory`` (bytes) and ``spill_dir`` are given here: a joining run cannot
    change them."""
    running = recorded()
    if running is not None:
        raise WarmRayError(
            f"a warm Ray is already running at {running.address} (pid {running.pid}); use it "
            f"(export RAY_ADDRESS={running.address}), or stop it first: curator-stages ray stop")
    if num_cpus is not None and num_cpus < 1:
        raise WarmRayError(f"--num-cpus must be at least 1, got {num_cpus}")
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.stat().st_uid != os.getuid():
        raise WarmRayError(f"the warm Ray's state directory {folder} belongs to another user; "
                           f"set {STATE_DIR_ENV} to a directory of your own")
    os.chmod(folder, 0o700)
    for stale in (STATE_FILE, TOKEN_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / stale).unlink()
    token_path = folder / TOKEN_FILE
    with os.fdopen(os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    cmd = [sys.executable, "-m", "curator_stages.runtime.warm_holder"]
    for flag, value in (("--num-cpus", num_cpus), ("--object-store-memory", object_store_memory),
                        ("--spill-dir", spill_dir and os.path.abspath(spill_dir))):
        if value is not None:
            cmd += [flag, str(int(value) if flag != "--spill-dir" else value)]
    log_path = folder / LOG_FILE
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        warm = recorded()
        if warm is not None and warm.pid == proc.pid:
            return warm
        if proc.poll() is not None:
            raise WarmRayError(f"the warm Ray did not start (exit {proc.returncode}); its log, "
                               f"{log_path}, ends:\n{_tail(log_path)}")
        time.sleep(0.2)
    _stop_tree(proc.pid)
    raise WarmRayError(f"the warm Ray did not report its address within {timeout_s:.0f} s and "
                       f"was stopped; its log, {log_path}, ends:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def stop(timeout_s: float = 30.0) -> WarmRay | None:
    """Stop the recorded warm Ray and its descendants; None when none ran."""
    warm = recorded()
    if warm is not None:
        _stop_tree(warm.pid, timeout_s)
    for name in (STATE_FILE, TOKEN_FILE) if warm is not None else (STATE_FILE,):
        with contextlib.suppress(FileNotFoundError):
            (state_dir() / name).unlink()
    return warm


def _stop_tree(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the holder (it shuts its Ray down), then kill whatever of its tree is left."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    with contextlib.suppress(psutil.Error):
        root.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
