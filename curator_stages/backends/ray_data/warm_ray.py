"""A warm local Ray: started once, joined by many runs, stopped on request.

A cold run pays Ray's start and stop (GCS, raylet, agents: 5-10 s on a small machine) every time;
a developer iterating on a flow, or a deployment worker running many, pays it once with

    curator-stages ray start [--num-cpus N]     # prints: export RAY_ADDRESS=127.0.0.1:PORT ...
    curator-stages ray status
    curator-stages ray stop

(``ray start`` also takes ``--object-store-memory SIZE`` and ``--spill-dir DIR``: a run that
joins cannot change them.)

How, and why this way:

* **The same Ray as an embedded run.** A small holder process (``python -m`` this module) calls
  :func:`~curator_stages.backends.ray_data.local_ray.start_local_ray`, so the warm cluster has
  exactly the embedded Ray's settings: 127.0.0.1 only, token authentication, the lean start.
  ``ray start --head`` would add a Ray Client server on the fixed port 10001 and an autoscaler
  monitor, neither of which a local run uses. The holder runs in its own session, so it
  outlives the command; Ray's processes are its descendants.
* **The token lives in a file only the user can read** (``auth_token``, mode 0600, in a 0700
  per-user directory: ``$CURATOR_STAGES_RAY_DIR``, else ``$XDG_STATE_HOME/curator-stages/ray``,
  else ``~/.local/state/curator-stages/ray``), given to the holder as ``RAY_AUTH_TOKEN_PATH``. A
  run of this package that joins the recorded address with no token of its own finds it there
  (:func:`token_path_for`, used by ``local_ray.join_cluster``), so ``RAY_ADDRESS`` is all a user
  exports; plain Ray tools need the printed ``RAY_AUTH_TOKEN_PATH`` too. The token is never
  printed, and ``~/.ray/auth_token`` (shared with every other Ray of the user) is not touched.
* **Auto-detection, per user.** ``RAY_ADDRESS=auto`` (or a flow's ``--ray-address auto``) joins
  this user's warm Ray of this state directory (:func:`resolve_auto`); without one it is an
  error at once, never Ray's own search of the machine (which can find another state
  directory's cluster, rewrite its address to the host IP and hang). The holder deliberately does *not*
  write Ray's machine-wide address file (``/tmp/ray/ray_current_cluster``) as ``ray start``
  does: a plain ``ray.init()`` of any process on the machine would then try to join this
  cluster instead of starting its own, and fail on the token.
* **Stopping stops only this cluster**: the recorded holder (checked by pid *and* start time, so a
  reused pid is never signalled) and the processes descended from it, never a global
  ``ray stop`` that would take other users' clusters along.
"""

from __future__ import annotations

import argparse
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

#: Directory of the warm Ray's state, token and log (default: a per-user state directory).
STATE_DIR_ENV = "CURATOR_STAGES_RAY_DIR"
STATE_FILE = "state.json"
TOKEN_FILE = "auth_token"
LOG_FILE = "holder.log"
#: Seconds ``start`` waits for the holder to report its address (Ray's start on a busy machine,
#: with one retry of Ray's own 30 s registration window).
START_TIMEOUT_S = 240.0


class WarmRayError(RuntimeError):
    """The warm Ray could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class WarmRay:
    """What ``start`` recorded about the running warm Ray."""

    pid: int
    create_time: float
    address: str
    num_cpus: float
    token_path: str
    #: The holder's PYTHONPATH: what every worker of the cluster imports from.
    pythonpath: str = ""
    #: Bytes of its object store (``--object-store-memory``, else Ray's default).
    object_store_memory: float = 0.0


def state_dir() -> Path:
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "curator-stages" / "ray"


def _private_to_this_user(path: Path) -> bool:
    """Owned by this user and writable by nobody else (a file another user could plant would
    point runs at a cluster, and a token, of that user's choosing)."""
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def recorded() -> WarmRay | None:
    """The warm Ray recorded in the state directory, if its holder is still alive.

    A state directory or file that another user owns or can write is not trusted: the run then
    behaves as if no warm Ray were running (and ``start`` refuses that directory).
    """
    folder = state_dir()
    try:
        if not (_private_to_this_user(folder) and _private_to_this_user(folder / STATE_FILE)):
            return None
        warm = WarmRay(**json.loads((folder / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return warm if _holder(warm) is not None else None


def token_path_for(address: str) -> str | None:
    """The warm Ray's token file when ``address`` is the running warm Ray's, else ``None``."""
    warm = recorded()
    if warm is None or not address or address != warm.address:
        return None
    return warm.token_path if Path(warm.token_path).is_file() else None


def resolve_auto(address: str) -> str:
    """``address``, with ``"auto"`` (argument or ``RAY_ADDRESS``) made the address of this
    user's warm Ray of this state directory; anything else is returned unchanged.

    Raises :class:`WarmRayError` when none runs: Ray's own ``"auto"`` would join whatever Ray
    it finds on the machine (another state directory's, another user's), rewrite its address
    to the host IP and wait for minutes on a cluster that listens on 127.0.0.1 only."""
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
    """True when ``runtime_env`` only sets a PYTHONPATH the warm Ray's workers already have.

    A job-level runtime_env makes every worker of the job a runtime-env worker (a round trip to
    the runtime-env agent first); when the warm workers import from the same path anyway, the
    joining run can leave it out.
    """
    warm = recorded()
    if warm is None or address != warm.address or not runtime_env:
        return False
    if set(runtime_env) != {"env_vars"} or set(runtime_env["env_vars"] or {}) != {"PYTHONPATH"}:
        return False
    have = [os.path.realpath(p) for p in warm.pythonpath.split(os.pathsep) if p]
    want = [os.path.realpath(p) for p in runtime_env["env_vars"]["PYTHONPATH"].split(os.pathsep)
            if p]
    return all(p in have for p in want)


def _holder(warm: WarmRay) -> Any:
    """The holder's psutil.Process when that pid is still the recorded process, else None."""
    import psutil

    try:
        proc = psutil.Process(warm.pid)
        if abs(proc.create_time() - warm.create_time) > 1.0:
            return None  # the pid was reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


# ----------------------------------------------------------------------------- start
def start(num_cpus: int | None = None, *, timeout_s: float = START_TIMEOUT_S,
          object_store_memory: int | None = None, spill_dir: str | None = None) -> WarmRay:
    """Start the warm Ray (refused when one is running); returns what was recorded.

    ``object_store_memory`` (bytes) and ``spill_dir`` are the embedded start's: a run joining
    the warm Ray cannot change them, so they are given here (checked by the caller)."""
    running = recorded()
    if running is not None:
        raise WarmRayError(
            f"a warm Ray is already running at {running.address} (pid {running.pid}); use it "
            "(export RAY_ADDRESS=" + running.address + "), or stop it first: "
            "curator-stages ray stop")
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
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    cmd = [sys.executable, "-m", __name__, "--hold"]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if object_store_memory is not None:
        cmd += ["--object-store-memory", str(int(object_store_memory))]
    if spill_dir is not None:
        cmd += ["--spill-dir", os.path.abspath(spill_dir)]
    with open(folder / LOG_FILE, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=os.getcwd())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        warm = recorded()
        if warm is not None and warm.pid == proc.pid:
            return warm
        if proc.poll() is not None:
            raise WarmRayError(f"the warm Ray did not start (exit {proc.returncode}); its log, "
                               f"{folder / LOG_FILE}, ends:\n{_tail(folder / LOG_FILE)}")
        time.sleep(0.2)
    _stop_tree(proc.pid)
    raise WarmRayError(f"the warm Ray did not report its address within {timeout_s:.0f} s and "
                       f"was stopped; its log, {folder / LOG_FILE}, ends:\n"
                       f"{_tail(folder / LOG_FILE)}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------- stop
def stop(timeout_s: float = 30.0) -> WarmRay | None:
    """Stop the recorded warm Ray and every process descended from it; None when none ran."""
    warm = recorded()
    folder = state_dir()
    if warm is None:
        with contextlib.suppress(FileNotFoundError):
            (folder / STATE_FILE).unlink()
        return None
    _stop_tree(warm.pid, timeout_s)
    for name in (STATE_FILE, TOKEN_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
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


# ----------------------------------------------------------------------------- holder
def _hold(num_cpus: int | None, object_store_memory: int | None = None,
          spill_dir: str | None = None) -> int:
    """Body of the holder process: start the embedded Ray, record it, wait for SIGTERM."""
    import ray

    from curator_stages.backends.ray_data.local_ray import start_local_ray

    stopping = []

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Workers are per job: warming the holder's own workers would help no later run.
    start_local_ray(num_cpus, log_to_driver=False, warm=False,
                    object_store_memory=object_store_memory, object_spilling_directory=spill_dir)
    address = ray.get_runtime_context().gcs_address
    me = __import__("psutil").Process()
    warm = WarmRay(pid=os.getpid(), create_time=me.create_time(), address=address,
                   num_cpus=float(ray.cluster_resources().get("CPU", 0)),
                   token_path=os.environ["RAY_AUTH_TOKEN_PATH"],
                   pythonpath=os.environ.get("PYTHONPATH", ""),
                   object_store_memory=float(
                       ray.cluster_resources().get("object_store_memory", 0)))
    path = state_dir() / STATE_FILE
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(json.dumps(asdict(warm)))
    os.replace(tmp, path)
    print(f"warm Ray at {address} ({warm.num_cpus:g} CPUs), holder pid {warm.pid}", flush=True)
    while not stopping:
        time.sleep(0.5)
    print("stopping the warm Ray", flush=True)
    ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="holder process of the warm local Ray")
    parser.add_argument("--hold", action="store_true", required=True)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--object-store-memory", type=int, default=None)
    parser.add_argument("--spill-dir", default=None)
    args = parser.parse_args(argv)
    from curator_stages.env_defaults import apply_local_run_defaults

    apply_local_run_defaults()
    return _hold(args.num_cpus, args.object_store_memory, args.spill_dir)


if __name__ == "__main__":
    sys.exit(main())
