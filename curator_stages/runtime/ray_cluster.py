"""The Ray of a run: an embedded local Ray started safely, or a cluster joined the one way.

No Prefect import: the Ray Data executor and the planner use it too. Safety rules:

* **Loopback only.** On Linux Ray gives a new node the host's address, and its GCS, raylet,
  workers and agents then listen on every interface (an explicit ``127.0.0.1`` is turned back
  into that address). Ray keeps a node on loopback while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
  is off (its macOS/Windows default), so :func:`start_local_ray` starts the node in that mode
  (:func:`_loopback_node`) and checks the node's address afterwards.
* **Token authentication.** Ray 2.60 turns token auth on for a new local node itself; nothing
  here turns it off. Without a configured token it would write one into ``~/.ray/auth_token``
  (two first runs race on that file while their workers start), so a random token for this
  process goes into ``RAY_AUTH_TOKEN`` instead (:func:`ensure_auth_token`). A *joining* driver
  with an explicit address stays in ``disabled`` mode even with a token (Ray enables it only
  for ``address="auto"``), so :func:`join_cluster` switches token mode on when a token is
  configured.
* **Dies with its parent.** Ray does this itself (``PR_SET_PDEATHSIG`` and a reaper on Linux).
* **A failed start leaves nothing.** ``ray.init`` gives the raylet a fixed 30 s to register
  (missed on a busy machine) and leaves the GCS and raylet it spawned running: they are
  stopped, the start is tried once more, and a second failure names the cause and the fix.
* **No Ray Client.** A flow drives Ray Data plans from its own process, and Ray Data's streaming
  executor does not run over ``ray://`` (Ray 2.60: ``'Worker' object has no attribute
  'core_worker'``): :func:`refuse_ray_client`.

Speed: a job-level ``runtime_env`` of only ``env_vars`` goes into this process's environment for
an embedded Ray (else the workers Ray prestarts are never used), and Ray's own worker preload
(``RAY_preload_python_modules``: every worker imports them before it accepts work) imports the
modules nearly every plan needs (``ray.data``, pyarrow, the stage modules: 2-3 CPU-seconds
each) while the driver builds its plan; guarded by
tests/test_process_safety.py::test_embedded_ray_workers_preload_the_stage_modules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

from curator_stages.runtime import warm
from curator_stages.runtime.env import apply_ray_defaults

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Ray's switch for multi-machine clusters on macOS/Windows; off means a loopback node.
CLUSTER_SWITCH_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
START_ATTEMPTS = 2
#: Seconds a failed start's processes get between SIGTERM and SIGKILL.
FAILED_START_GRACE_S = 2.0
#: Seconds an address has to accept a TCP connection before ``ray.init`` (which retries an
#: address where nothing listens for minutes) is tried.
CONNECT_PROBE_S = 5.0
#: Modules a curation worker needs for nearly every plan (preloaded by every worker).
PRELOAD_ENV = "RAY_preload_python_modules"
WARM_MODULES = ("ray.data", "pyarrow.parquet", "curator_stages.backends.ray_data.adapter",
                "curator_stages.io", "curator_stages.text")
RAY_JOB_FIX = (
    "run the flow inside the cluster instead: submit it as a Ray Job (ray job submit --address "
    "http://<head>:8265 -- python <checkout>/flows/text_curation.py --input ...; the job finds "
    "the cluster through its RAY_ADDRESS, so give no --ray-address; pass PREFECT_API_URL "
    "with --runtime-env-json '{\"env_vars\": {\"PREFECT_API_URL\": \"...\"}}'), or run the "
    "Prefect worker on the cluster's head node with --ray-address <head>:6379 (docs/operations.md, "
    "\"On a Ray cluster the flow does not own\")")
#: Ray's notice that token auth is on: our deliberate choice for our own Ray, so not a warning
#: for our user (a notice that auth is *disabled* still shows). Guarded by
#: tests/test_ray_private_guards.py (logger and message) and tests/test_flow.py.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster."


class LocalRayStartError(RuntimeError):
    """The embedded local Ray could not be started (after a retry), or not privately."""


class ClusterConnectError(ConnectionError):
    """Joining an existing Ray cluster failed; the message names the address and the fix."""


def refuse_ray_client(address: str | None) -> str | None:
    """``address`` unchanged, unless it (or, when unset, ``RAY_ADDRESS``) is a Ray Client
    address: then a ValueError naming where it came from and the fix."""
    given = address or os.environ.get("RAY_ADDRESS") or ""
    if not given.startswith("ray://"):
        return address
    where = repr(address) if address else f"RAY_ADDRESS={given!r} (ray_address is unset)"
    raise ValueError(
        f"{where} is a Ray Client address; a curation flow drives Ray Data plans from its own "
        "process, and Ray Data does not run over the Ray Client. Fix: " + RAY_JOB_FIX)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host in ("localhost", "::1") or host.startswith("127.")


def token_configured() -> bool:
    """A Ray auth token is available to this process (env, token file, or Ray's default file)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def ensure_auth_token() -> str:
    """A token for this process and the Ray it starts; returns the auth mode in effect."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        logger.warning("RAY_AUTH_MODE=%s: the embedded Ray accepts unauthenticated connections "
                       "(on loopback only)", mode)
        return mode
    if not token_configured():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return "token"


def env_vars_into_environ(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """A runtime_env of only ``env_vars`` becomes this process's environment (PYTHONPATH
    prepended); returns what is still to pass to ``ray.init``."""
    if not runtime_env or set(runtime_env) != {"env_vars"}:
        return runtime_env
    for key, value in (runtime_env.get("env_vars") or {}).items():
        parts = os.environ.get(key, "").split(os.pathsep) if key == "PYTHONPATH" else [""]
        if parts != [""]:
            value = os.pathsep.join(parts if value in parts else [value, *parts])
        os.environ[key] = value
    return None


class DropMessages(logging.Filter):
    """Drops the records of one logger whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Within this block a new local Ray node takes 127.0.0.1 (the environment for Ray's child
    processes, and the driver's copy read at import: guarded by
    tests/test_process_safety.py::test_ray_loopback_switch_is_where_we_expect). Restored after:
    a later join of this process must see the host's address again."""
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise LocalRayStartError(
            "this Ray version has no ray._private.ray_constants.ENABLE_RAY_CLUSTER, so the "
            "embedded Ray cannot be kept on 127.0.0.1; fix: pin ray==2.60.*, or start Ray "
            "yourself (`ray start --head`) and pass its address (--ray-address)")
    saved_env, saved = os.environ.get(CLUSTER_SWITCH_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_SWITCH_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
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


def _clean_up_failed_start(before: dict[int, Any]) -> None:
    """Stop what a failed ``ray.init`` left running (its GCS, raylet, agents, reaper).

    A short grace: a node that never came up holds nothing to save, and a raylet still waiting
    to register ignores SIGTERM, so a longer wait only delays the retry."""
    import psutil
    import ray

    try:
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - the processes are stopped below either way
        logger.warning("ray.shutdown after a failed start raised %r", exc)
    left = [p for pid, p in _ray_descendants().items() if pid not in before]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=FAILED_START_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


def _init_with_retry(kwargs: dict[str, Any], own_address: bool) -> None:
    import ray

    notice, auth_logger = DropMessages((_AUTH_NOTICE,)), logging.getLogger(_AUTH_LOGGER)
    for attempt in range(1, START_ATTEMPTS + 1):
        before, started = _ray_descendants(), time.monotonic()
        auth_logger.addFilter(notice)
        try:
            with _loopback_node() if own_address else contextlib.nullcontext():
                ray.init(**kwargs)
            return
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
        finally:
            auth_logger.removeFilter(notice)


def start_local_ray(num_cpus: int | None = None, *, log_to_driver: bool = True,
                    runtime_env: dict[str, Any] | None = None, include_dashboard: bool = False,
                    warm: bool = True, **init_kwargs: Any) -> None:
    """``ray.init`` an embedded local Ray: loopback only, token auth, one retry, quiet, and
    (``warm``) every worker preloading :data:`WARM_MODULES`.

    ``address="local"``: a ``RAY_ADDRESS`` set later by a library cannot redirect it. A caller
    passing ``_node_ip_address`` chooses the node's address (and its exposure) itself.
    """
    import ray

    apply_ray_defaults()
    ensure_auth_token()
    preload = warm and PRELOAD_ENV not in os.environ
    if preload:  # read by the raylet at its start; not left behind for other Rays
        os.environ[PRELOAD_ENV] = ",".join(WARM_MODULES)
    kwargs: dict[str, Any] = dict(address="local", num_cpus=num_cpus,
                                  include_dashboard=include_dashboard, dashboard_host=LOOPBACK,
                                  log_to_driver=log_to_driver,
                                  runtime_env=env_vars_into_environ(runtime_env))
    kwargs.update(init_kwargs)
    own_address = "_node_ip_address" not in init_kwargs
    if own_address:
        kwargs["_node_ip_address"] = LOOPBACK
    try:
        _init_with_retry(kwargs, own_address)
    finally:
        if preload:
            os.environ.pop(PRELOAD_ENV, None)
    node_ip = ray.util.get_node_ip_address()
    if own_address and not is_loopback(node_ip):
        ray.shutdown()
        raise LocalRayStartError(
            f"the embedded local Ray took the network address {node_ip} instead of "
            f"{LOOPBACK}, and would listen on it; stopped it. Fix: set "
            f"{CLUSTER_SWITCH_ENV}=0 before Python starts, or report this with your Ray version")


def join_cluster(address: str, *, log_to_driver: bool = True,
                 runtime_env: dict[str, Any] | None = None, **init_kwargs: Any) -> None:
    """``ray.init`` on a cluster someone else runs (``"auto"``, ``"host:port"``, ``"ray://"``
    for planning); never starts or stops it. ``"auto"`` is this user's warm Ray, whose token
    file is used when this process has no token; a failure names the address and the fix."""
    import ray

    apply_ray_defaults()
    try:
        address = warm.resolve_auto(address)
    except warm.WarmRayError as exc:
        raise ClusterConnectError(str(exc)) from None
    probe_address(address)
    bootstrap = "" if address.startswith("ray://") else address
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        warm_token = warm.token_path_for(bootstrap)
        if warm_token:
            os.environ["RAY_AUTH_TOKEN_PATH"] = warm_token
    if warm.redundant_env(runtime_env, bootstrap):
        runtime_env = None
    if "RAY_AUTH_MODE" not in os.environ and token_configured():
        _enable_token_mode()
    init = dict(init_kwargs, address=address, log_to_driver=log_to_driver,
                runtime_env=runtime_env)
    try:
        try:
            with _loopback_node() if is_loopback(bootstrap) else contextlib.nullcontext():
                ray.init(**init)
        except ConnectionAbortedError as exc:
            # A busy head's Ray Client server failed to start this session; once more works.
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


def probe_address(address: str, timeout_s: float = CONNECT_PROBE_S) -> None:
    """:class:`ClusterConnectError` when nothing accepts a TCP connection at ``address``'s
    ``host:port`` within ``timeout_s``; an address without a port is left to ``ray.init``."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
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


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process, also in Ray's cached config (Ray's own helper;
    guarded by tests/test_external_cluster.py::test_ray_token_mode_helper_is_where_we_expect)."""
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
