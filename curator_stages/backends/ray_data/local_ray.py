"""Starting an embedded local Ray the fast way and the safe way (no Prefect import: the executor
uses it too).

Two things decide how soon a local run's first batch is processed:

* **Prestarted workers.** At start-up the raylet prestarts one worker per CPU with the driver's
  environment. A job-level ``runtime_env`` makes every worker of the job a runtime-env worker,
  so those prestarted ones are never used and each task waits for a fresh process (plus a
  runtime-env agent round trip). For a local Ray, a ``runtime_env`` of only ``env_vars`` is
  therefore put into this process's environment instead: the raylet and its workers inherit
  it, same effect, no wasted workers.
* **Warm workers.** A fresh worker imports ``ray.data``, pyarrow and the stage modules the
  first time it deserialises a stage (2-3 CPU-seconds each on a small machine), one worker
  after the other as the plan ramps up. :func:`warm_workers` has every prestarted worker do
  those imports at once, while the driver is still building its plan (and, in a flow, while
  Prefect's API starts).

What Ray starts that a local run does not need is switched off where Ray 2.60 lets ``ray.init``
do it, through the env table (task events, metrics collection, the agent's 2.5 s process sweep:
:data:`curator_stages.env_defaults.RAY_LEAN_ENV`, which also lists what stays on and why).

And three things keep an embedded Ray private to the user who started it:

* **Loopback only.** On Linux Ray gives a new node the host's network address, and its GCS,
  raylet, workers, agents and metrics exporter then listen on every interface; Ray turns an
  explicit ``127.0.0.1`` back into that address. Ray keeps a single-machine node on loopback
  when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off (its macOS/Windows default), so
  :func:`start_local_ray` starts the node in that mode (see :func:`_loopback_node`) and checks
  the node's address afterwards.
* **Token authentication.** Ray 2.60 enables token authentication for a new local node unless
  ``RAY_AUTH_MODE`` says otherwise; nothing here turns it off. When no token is configured
  (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) a random token for this
  process is put into ``RAY_AUTH_TOKEN`` rather than letting Ray write one into the user's home:
  no file to leak, and two first runs cannot overwrite each other's token file while their
  workers start. ``RAY_AUTH_MODE=disabled`` in the environment still turns it off.
* **A failed start leaves nothing.** ``ray.init`` raises "The current node timed out during
  startup" when the raylet does not register within Ray's fixed 30 s (a busy machine), and it
  leaves the GCS and raylet it spawned running. Those are stopped, the start is tried once
  more, and a second failure raises :class:`LocalRayStartError` naming the cause and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

from curator_stages.backends.ray_data.plan_context import token_auth_notice_dropped
from curator_stages.env_defaults import RAY_ENV_DEFAULTS

logger = logging.getLogger(__name__)

#: Environment defaults for any Ray this package starts or joins (the one table).
QUIET_RAY_ENV = RAY_ENV_DEFAULTS

#: Modules a curation worker needs for nearly every plan (imported by :func:`warm_workers`).
WARM_MODULES = ("ray.data", "pyarrow.parquet", "curator_stages.backends.ray_data.adapter",
                "curator_stages.io", "curator_stages.text")


def env_vars_into_environ(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """For an embedded Ray, a runtime_env of only ``env_vars`` becomes this process's environment.

    Returns the runtime_env still to pass to ``ray.init`` (``None`` when it was moved).
    ``PYTHONPATH`` is prepended to the existing value; other variables are set. Any other
    runtime_env (pip, working_dir, ...) is returned unchanged.
    """
    if not runtime_env or set(runtime_env) != {"env_vars"}:
        return runtime_env
    for key, value in (runtime_env.get("env_vars") or {}).items():
        if key == "PYTHONPATH" and os.environ.get(key):
            parts = os.environ[key].split(os.pathsep)
            if value not in parts:
                os.environ[key] = os.pathsep.join([value, *parts])
        else:
            os.environ[key] = value
    return None


def _import_modules(modules: tuple[str, ...]) -> int:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional extra missing on this worker: the stage itself will say so
    return os.getpid()


def warm_workers(modules: tuple[str, ...] = WARM_MODULES, count: int | None = None) -> list[Any]:
    """Have ``count`` workers (default: one per CPU) import ``modules`` now; returns the refs.

    Fire and forget: the tasks hold no CPU reservation of their own beyond their run (a few
    seconds), and nothing waits for them unless the caller ``ray.get``s the refs.
    """
    import ray

    if count is None:
        count = max(1, int(ray.cluster_resources().get("CPU", 1)))
    remote = ray.remote(num_cpus=1, max_retries=0)(_import_modules)
    return [remote.options(name="WarmWorker").remote(modules) for _ in range(count)]


LOOPBACK = "127.0.0.1"
#: Ray's switch for multi-machine clusters on macOS/Windows; off means a loopback node.
CLUSTER_SWITCH_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: ray.init attempts for an embedded Ray (a busy machine can miss Ray's 30 s start window once).
START_ATTEMPTS = 2


class LocalRayStartError(RuntimeError):
    """The embedded local Ray could not be started (after a retry), or not privately."""


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host in ("localhost", "::1") or host.startswith("127.")


def ensure_auth_token() -> str | None:
    """Give this process (and the Ray processes it starts) a token when Ray would need one.

    Returns the mode in effect: ``"token"`` or the user's explicit ``RAY_AUTH_MODE``.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        logger.warning("RAY_AUTH_MODE=%s: the embedded Ray accepts unauthenticated connections "
                       "(on loopback only)", mode)
        return mode
    if not token_configured():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return "token"


def token_configured() -> bool:
    """A Ray auth token is available to this process (env, token file, or Ray's default file)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def join_cluster(address: str, *, log_to_driver: bool = True,
                 runtime_env: dict[str, Any] | None = None, **init_kwargs: Any) -> None:
    """``ray.init`` on a cluster someone else runs: ``"auto"``, ``"host:port"`` or a Ray Client
    ``"ray://host:10001"`` address. Never starts, and never stops, that cluster.

    Ray sends its token only when ``RAY_AUTH_MODE=token``, and a *joining* process defaults to
    ``disabled`` even with ``RAY_AUTH_TOKEN`` set: a Ray Client connection then waits for minutes
    and fails with "ray client connection timeout", naming neither the token nor the fix. So a
    configured token switches the mode on (an explicit ``RAY_AUTH_MODE`` is left as it is), and a
    failed connection is reported with the address, the auth mode and what to check.

    The warm local Ray (``curator-stages ray start``, :mod:`.warm_ray`) is what ``"auto"`` means
    while the user runs one, and is recognised by its address: with no token of its own this process uses the warm Ray's token file, and a
    runtime_env that only repeats the warm workers' PYTHONPATH is left out (it would make every
    worker of the run a runtime-env worker).
    """
    import ray

    from curator_stages.backends.ray_data import warm_ray

    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    try:
        address = warm_ray.resolve_auto(address)
    except warm_ray.WarmRayError as exc:
        raise ClusterConnectError(str(exc)) from None
    probe_address(address)
    bootstrap = _bootstrap_address(address)
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        warm_token = warm_ray.token_path_for(bootstrap)
        if warm_token:
            os.environ["RAY_AUTH_TOKEN_PATH"] = warm_token
    if warm_ray.redundant_env(runtime_env, bootstrap):
        runtime_env = None
    if "RAY_AUTH_MODE" not in os.environ and token_configured():
        _enable_token_mode()
    on_loopback = is_loopback(bootstrap)
    init = dict(init_kwargs, address=address, log_to_driver=log_to_driver,
                runtime_env=runtime_env)
    try:
        try:
            with _loopback_node() if on_loopback else contextlib.nullcontext():
                ray.init(**init)
        except ConnectionAbortedError as exc:
            # The Ray Client server could not start this client's session process (seen on a
            # busy head node: "Initialization failure from server"); a second try usually works.
            logger.warning("the Ray Client server at %s failed to start a session (%s); "
                           "trying once more", address, str(exc).strip().splitlines()[-1])
            ray.init(**init)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        mode = os.environ.get("RAY_AUTH_MODE", "disabled")
        raise ClusterConnectError(
            f"could not connect to the Ray cluster at {address} (auth mode {mode}): {exc}. "
            "Fix: check that the address and port are reachable from this machine (Ray Client "
            "port, default 10001, for ray://), and, when the cluster uses token authentication, "
            "give this process the cluster's token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
        ) from exc


#: Seconds a cluster's address has to accept a TCP connection before ``ray.init`` is tried
#: (which retries an address where nothing listens for many minutes).
CONNECT_PROBE_S = 5.0


def probe_address(address: str, timeout_s: float = CONNECT_PROBE_S) -> None:
    """Raise :class:`ClusterConnectError` naming ``address`` when nothing accepts a TCP
    connection at its ``host:port`` (GCS, or the Ray Client server for ``ray://``) within
    ``timeout_s``. An address without a port is left to ``ray.init``."""
    import socket

    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterConnectError(
            f"could not connect to the Ray cluster at {address}: nothing accepted a connection "
            f"at {host}:{port} within {timeout_s:.0f} s ({exc.strerror or exc}). Fix: check the "
            "address and port (the GCS port, default 6379; the Ray Client port, default 10001, "
            "for ray://) and that the cluster runs, or leave ray_address unset for an embedded "
            "local Ray") from None


def _bootstrap_address(address: str) -> str:
    """The ``host:port`` a plain (not Ray Client) address resolves to, ``""`` when unknown.

    ``"auto"`` is read the way ``ray.init`` reads it: ``RAY_ADDRESS``, else the address file of
    the newest cluster started on this machine (Ray's own reader; guarded by
    tests/test_process_safety.py::test_ray_loopback_switch_is_where_we_expect).
    """
    if address == "auto":
        from ray._private.utils import read_ray_address

        env = os.environ.get("RAY_ADDRESS", "")
        address = env if env not in ("", "auto") else (read_ray_address() or "")
    return "" if address.startswith("ray://") else address


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process, also in Ray's cached config (read before).

    Setting the variable alone is not enough once ``ray`` has read its config; Ray's own helper
    (used by ``ray.init(address="auto")``) refreshes it. Guarded by
    tests/test_external_cluster.py::test_ray_token_mode_helper_is_where_we_expect.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError as exc:
        os.environ["RAY_AUTH_MODE"] = "token"
        logger.warning("Ray's token-mode helper is gone (%s): set RAY_AUTH_MODE=token before "
                       "Python starts if the connection is refused", exc)
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


class ClusterConnectError(ConnectionError):
    """Joining an existing Ray cluster failed; the message names the address and the fix."""


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Within this block a new local Ray node takes 127.0.0.1 as its address.

    Ray's Python processes (agents, workers) read ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` from the
    environment they inherit. The driver read it when ``ray`` was imported, usually before this
    runs, so its copy in ``ray._private.ray_constants`` is switched too for the duration of the
    start (guarded by tests/test_process_safety.py::test_ray_loopback_switch_is_where_we_expect).
    Both are restored afterwards: a later ``ray.init(address=...)`` of this process joining a
    cluster must see the host's address again.
    """
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise LocalRayStartError(
            "this Ray version has no ray._private.ray_constants.ENABLE_RAY_CLUSTER, so the "
            "embedded Ray cannot be kept on 127.0.0.1; fix: pin ray==2.60.*, or start Ray "
            "yourself (`ray start --head`) and pass its address (--ray-address)")
    saved_env = os.environ.get(CLUSTER_SWITCH_ENV)
    saved_const = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_SWITCH_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop(CLUSTER_SWITCH_ENV, None)
        else:
            os.environ[CLUSTER_SWITCH_ENV] = saved_env


def _ray_descendants() -> dict[int, Any]:
    """This process's descendants that belong to Ray (by executable path or process title)."""
    import psutil
    import ray

    ray_dir = os.path.dirname(ray.__file__)
    found: dict[int, Any] = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.cmdline())
            if ray_dir in cmd or proc.name().startswith("ray::") or cmd.startswith("ray::"):
                found[proc.pid] = proc
    return found


def _stop_processes(procs: list[Any], timeout: float = 10.0) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


def _clean_up_failed_start(before: dict[int, Any]) -> None:
    """Stop what a failed ``ray.init`` left running (its GCS, raylet, agents, reaper)."""
    import ray

    try:
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - the processes are stopped below either way
        logger.warning("ray.shutdown after a failed start raised %r", exc)
    leftovers = [p for pid, p in _ray_descendants().items() if pid not in before]
    if leftovers:
        logger.info("stopping %d Ray process(es) left by the failed start", len(leftovers))
        _stop_processes(leftovers)


def start_local_ray(num_cpus: int | None = None, *, log_to_driver: bool = True,
                    runtime_env: dict[str, Any] | None = None, include_dashboard: bool = False,
                    warm: bool = True, **init_kwargs: Any) -> None:
    """``ray.init`` an embedded local Ray: loopback only, token auth, one retry, quiet, warmed.

    ``address="local"`` makes sure a ``RAY_ADDRESS`` set later by a library cannot redirect it.
    A caller passing ``_node_ip_address`` chooses the node's address itself (and its exposure).
    """
    import ray

    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ensure_auth_token()
    kwargs: dict[str, Any] = dict(address="local", num_cpus=num_cpus,
                                  include_dashboard=include_dashboard, dashboard_host=LOOPBACK,
                                  log_to_driver=log_to_driver,
                                  runtime_env=env_vars_into_environ(runtime_env))
    kwargs.update(init_kwargs)
    own_address = "_node_ip_address" not in init_kwargs
    if own_address:
        kwargs["_node_ip_address"] = LOOPBACK
    for attempt in range(1, START_ATTEMPTS + 1):
        before = _ray_descendants()
        started = time.monotonic()
        try:
            # Token auth is our choice for an embedded Ray: Ray's notice that it is on (and
            # how to turn it off) is not a warning for our user (see plan_context).
            with (_loopback_node() if own_address else contextlib.nullcontext()), \
                    token_auth_notice_dropped():
                ray.init(**kwargs)
            break
        except (TypeError, ValueError):
            raise  # a bad argument: a retry cannot help
        except Exception as exc:  # noqa: BLE001 - cleaned up, retried once, then raised
            _clean_up_failed_start(before)
            if attempt < START_ATTEMPTS:
                logger.warning("the local Ray did not start (%s, after %.0f s); stopped what it "
                               "left and trying once more", exc, time.monotonic() - started)
                continue
            raise LocalRayStartError(
                f"the embedded local Ray did not start, twice: {exc}. Cause: Ray gives its GCS "
                "and raylet a fixed 30 s to register, which a machine whose CPUs are busy can "
                "miss. Fix: re-run when the machine is less loaded, lower --num-cpus, or start "
                "Ray yourself (`ray start --head --node-ip-address 127.0.0.1`) and pass "
                "--ray-address") from exc
    node_ip = ray.util.get_node_ip_address()
    if own_address and not is_loopback(node_ip):
        ray.shutdown()
        raise LocalRayStartError(
            f"the embedded local Ray took the network address {node_ip} instead of "
            f"{LOOPBACK}, and would listen on it; stopped it. Fix: set "
            f"{CLUSTER_SWITCH_ENV}=0 before Python starts, or report this with your Ray version")
    if warm:
        warm_workers()
