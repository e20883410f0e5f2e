"""A local run's processes: what they listen on, how they stop, and how they start under load.

Each test starts real processes (the flow script, Ray, Prefect's server) in subprocesses and
kills only the processes of its own run, found through the run's process tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tests.prefect_homes import clean_env

REPO = Path(__file__).resolve().parents[1]
FLOW_SCRIPT = REPO / "flows" / "text_curation.py"
SHARD = REPO / "data" / "sample" / "shard-00003.jsonl.zst"
#: Seconds a stopped run's processes get to disappear (Ray's reaper waits 1 s, then SIGKILLs).
GRACE_S = 30
#: Ray's agents outlive a SIGKILLed driver until their report to the dead GCS times out (~60 s).
AGENT_GRACE_S = 150
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class RunTree:
    """Every process a run started, collected while it runs (Ray's re-parented ones too)."""

    def __init__(self, root: subprocess.Popen) -> None:
        self.root = root
        self.procs: dict[int, psutil.Process] = {root.pid: psutil.Process(root.pid)}
        self.session_tag = f"_{root.pid}/"  # Ray's session dir ends with the driver's pid

    def collect(self) -> list[psutil.Process]:
        try:
            for child in self.procs[self.root.pid].children(recursive=True):
                self.procs.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        for proc in psutil.process_iter(["cmdline"]):
            if any(self.session_tag in part for part in proc.info["cmdline"] or ()):
                self.procs.setdefault(proc.pid, proc)
        return list(self.procs.values())

    def find(self, text: str) -> list[psutil.Process]:
        found = []
        for proc in self.collect():
            try:
                if text in " ".join(proc.cmdline()) or proc.name().startswith(text):
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def listening(self) -> list[tuple[int, str, str, int]]:
        sockets = []
        for proc in self.collect():
            try:
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        sockets.append((proc.pid, proc.name(), conn.laddr.ip, conn.laddr.port))
            except psutil.Error:
                pass
        return sockets

    def alive(self) -> list[psutil.Process]:
        alive = []
        for proc in self.procs.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        return alive

    def kill_all(self) -> None:
        """Test cleanup: only the processes of this run, by pid."""
        for proc in self.alive():
            try:
                proc.kill()
            except psutil.Error:
                pass


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "localhost") or ip.startswith("::ffff:127.")


def interactive_sigint() -> None:
    """In the run's process, before the flow starts: SIGINT at its default, as Ctrl-C in a
    terminal finds it. A test runner started in the background (``&`` in a script) ignores
    SIGINT, and a run rightly keeps a SIGINT it inherits ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_flow(tmp_path: Path) -> tuple[subprocess.Popen, RunTree]:
    log = open(tmp_path / "flow.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(FLOW_SCRIPT), "--input", str(SHARD), "--output",
         str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), "--num-cpus", "2",
         "--fuzzy-num-perm", "32", "--retries", "0"],
        env=clean_env(tmp_path, migrated=True), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        start_new_session=True, preexec_fn=interactive_sigint)
    return proc, RunTree(proc)


def wait_for_run_started(proc: subprocess.Popen, tree: RunTree, tmp_path: Path) -> None:
    """Until the API server and Ray listen and the flow body has begun (its work dir exists)."""
    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "flow.log").read_text()[-3000:]
        names = {name for _, name, _, _ in tree.listening()}
        api = any(p.pid in {s[0] for s in tree.listening()} for p in tree.find("uvicorn"))
        return api and "raylet" in names and "gcs_server" in names and (tmp_path / "work").exists()

    wait_until(up, 400, "the local run's API server, Ray and flow body")
    tree.collect()


def stop_and_check(proc, tree, tmp_path, signum: int) -> None:
    """Send ``signum``: the run exits 128 + signum, says it stopped by that signal, and none of
    its processes outlives it."""
    # The signal masks as the run had them (SIGINT=bit 1): an ignored or uncaught signal would
    # explain a run that did not stop.
    try:
        masks = " ".join(line.strip() for line in Path(f"/proc/{proc.pid}/status").read_text()
                         .splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError:
        masks = "(the run had already exited)"
    proc.send_signal(signum)
    proc.wait(timeout=180)
    log = (tmp_path / "flow.log").read_text()
    assert proc.returncode == 128 + signum, f"{masks}\n{log[-3000:]}"
    assert f"stopped by {signal.Signals(signum).name}" in log
    wait_until(lambda: not tree.alive(), GRACE_S,
               f"the run's processes to exit: {[p.name() for p in tree.alive()]}")


@pytest.mark.slow
def test_local_run_listens_on_loopback_only_and_stops_cleanly_on_sigterm(tmp_path):
    """Item 8: every socket of the run (Ray's GCS, raylet, agents, workers, metrics; the
    temporary API) is on loopback. Item 10: SIGTERM stops the run like Ctrl-C, and no process of
    the run outlives it."""
    proc, tree = start_flow(tmp_path)
    try:
        wait_for_run_started(proc, tree, tmp_path)
        sockets = tree.listening()
        exposed = [s for s in sockets if not is_loopback(s[2])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        api_pids = {p.pid for p in tree.find("uvicorn")}
        assert {ip for pid, _, ip, _ in sockets if pid in api_pids} == {"127.0.0.1"}
        assert len(tree.find("ray::")) >= 1  # Ray's workers were seen and checked too
        raylet_env = tree.find("raylet")[0].environ()
        assert raylet_env.get("RAY_AUTH_MODE", "token") == "token"  # Ray's default kept
        assert raylet_env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
        stop_and_check(proc, tree, tmp_path, signal.SIGTERM)
    finally:
        tree.kill_all()
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("signum,delay", [(signal.SIGTERM, 0.5), (signal.SIGINT, 3.0)])
def test_a_stop_right_after_ray_starts_ends_with_the_documented_code(tmp_path, signum, delay):
    """Issue 20 item 18: SIGTERM within a second of "Started a local Ray instance" aborted the
    run (exit 134: Ray's failure-signal handler armed a 3 s abort), and a stop could segfault
    in the interpreter's finalisation (exit 139) after the clean-stop line."""
    proc, tree = start_flow(tmp_path)
    log_path = tmp_path / "flow.log"
    try:
        wait_until(lambda: "Started a local Ray instance" in log_path.read_text(), 400,
                   "the embedded Ray to start")
        time.sleep(delay)
        stop_and_check(proc, tree, tmp_path, signum)
    finally:
        tree.kill_all()
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sigkill_of_a_local_run_takes_its_processes_along(tmp_path):
    """Item 10: SIGKILL cannot be handled, yet the temporary API server and Ray's processes
    (GCS, raylet, agents, workers) die with the flow process."""
    proc, tree = start_flow(tmp_path)
    try:
        wait_for_run_started(proc, tree, tmp_path)
        assert tree.find("uvicorn") and tree.find("raylet")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)

        def survivors() -> list[str]:
            return [p.name() for p in tree.alive() if p.name() not in RAY_AGENTS]

        # The kernel kills the API server, the GCS and the raylet (parent-death signal); the
        # workers exit with their raylet.
        wait_until(lambda: not survivors(), GRACE_S,
                   f"the API server and Ray to die with their parent: {survivors()}")
        # Ray's two agents notice the raylet's death themselves and exit after failing to
        # report it to the dead GCS (about 60 s, Ray's GCS client timeout).
        wait_until(lambda: not tree.alive(), AGENT_GRACE_S,
                   f"Ray's agents to exit: {[p.name() for p in tree.alive()]}")
    finally:
        tree.kill_all()
        if proc.poll() is None:
            proc.kill()


API_PROBE = textwrap.dedent("""
    import json, urllib.request
    from curator_stages.runtime.env import apply_local_run_defaults
    apply_local_run_defaults()  # as the flow scripts do, before Prefect is imported
    from curator_stages.runtime.prefect_api import start_temporary_api

    server = start_temporary_api()
    url = server.wait()
    assert url, server.error
    # A query that needs the migrated tables.
    request = urllib.request.Request(url + "/flows/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=120) as response:
        flows = json.loads(response.read())
    pid = server.process.pid
    server.stop()
    print(json.dumps({"url": url, "flows": flows, "pid": pid}))
""")


@pytest.mark.slow
def test_concurrent_temporary_api_starts_on_one_fresh_home_with_cpus_busy(tmp_path):
    """Item 5 / issue 12 bug 6: two local runs starting their temporary API at once on one fresh
    PREFECT_HOME, with both CPUs busy, both get a working server (the database is migrated once,
    under the per-home lock), and each server stops with its run."""
    env = clean_env(tmp_path)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        starts = [subprocess.Popen([sys.executable, "-c", API_PROBE], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(2)]
        results = [p.communicate(timeout=500) for p in starts]
    finally:
        for p in busy:
            p.kill()
            p.wait()
    outs = []
    for p, (out, err) in zip(starts, results):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err and "Starting temporary server" not in err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["flows"] for o in outs] == [[], []]
    assert outs[0]["url"] != outs[1]["url"]
    assert all(o["url"].startswith("http://127.0.0.1:") for o in outs)
    assert (tmp_path / "prefect-home" / ".curator-api-start.lock").exists()
    assert not any(psutil.pid_exists(o["pid"]) and psutil.Process(o["pid"]).status()
                   != psutil.STATUS_ZOMBIE for o in outs)


@pytest.mark.slow
def test_server_command_matches_prefects_own(monkeypatch):
    """Guard: our temporary server runs exactly the command and environment additions Prefect
    runs for its own (``SubprocessASGIServer._run_uvicorn_command``); fails if Prefect changes."""
    import prefect.server.api.server as prefect_server

    from curator_stages.runtime.prefect_api import SERVER_ENV, server_command

    seen = {}

    def record(args, env=None, **kwargs):
        seen.update(args=args, env=env)
        raise RuntimeError("recorded")

    monkeypatch.setattr(prefect_server.subprocess, "Popen", record)
    server = prefect_server.SubprocessASGIServer(port=24680)
    try:
        with pytest.raises(RuntimeError, match="recorded"):
            server._run_uvicorn_command()
    finally:
        prefect_server.SubprocessASGIServer._instances.pop(24680, None)
    assert seen["args"] == server_command(24680)
    assert {k: seen["env"][k] for k in SERVER_ENV} == SERVER_ENV


def test_ray_loopback_switch_is_where_we_expect():
    """Guard for runtime.ray_cluster._loopback_node: Ray decides a new node's address from
    ``ray_constants.ENABLE_RAY_CLUSTER`` (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``)."""
    import inspect

    from ray._private import ray_constants, services

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    assert "ray_constants.ENABLE_RAY_CLUSTER" in inspect.getsource(services.get_node_ip_address)
    # Joining: Ray rewrites a 127.0.0.1 address to the node address unless the switch is off.
    assert "get_node_ip_address" in inspect.getsource(services.resolve_ip_for_localhost)


FAILED_START = textwrap.dedent("""
    import json, logging
    logging.basicConfig(level=logging.WARNING)
    from curator_stages.runtime import ray_cluster as local_ray

    try:
        local_ray.start_local_ray(1, warm=False)
    except local_ray.LocalRayStartError as exc:
        left = [p.pid for p in local_ray._ray_descendants().values()
                if p.status() != "zombie"]
        print(json.dumps({"error": str(exc), "left": left}))
""")


@pytest.mark.slow
def test_failed_embedded_ray_start_is_retried_cleaned_up_and_named(tmp_path):
    """Issue 12 bug 6 / item 10: a node that does not register in time (Ray's own fault
    injection delays the GCS's RegisterNode past Ray's 30 s) is retried once; each failed start's
    GCS and raylet are stopped, and the error names the cause and the fix."""
    env = clean_env(tmp_path)
    env["RAY_testing_asio_delay_us"] = "NodeInfoGcsService.grpc_server.RegisterNode=45000000:45000000"
    res = subprocess.run([sys.executable, "-c", FAILED_START], env=env, capture_output=True,
                         text=True, timeout=400, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "timed out during startup" in out["error"] and "twice" in out["error"]
    assert "Fix:" in out["error"] and "--num-cpus" in out["error"]
    assert "trying once more" in res.stderr
    assert out["left"] == []


def test_auth_token_for_the_embedded_ray(monkeypatch, tmp_path):
    """Item 8: Ray's token authentication stays on; with no token configured the process gets a
    random one in its environment (nothing written to the home); an explicit
    RAY_AUTH_MODE=disabled is the user's call and is kept."""
    from curator_stages.runtime.ray_cluster import ensure_auth_token

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ensure_auth_token() == "token"
    token = os.environ["RAY_AUTH_TOKEN"]
    assert len(token) >= 32 and not (tmp_path / ".ray").exists()
    assert ensure_auth_token() == "token" and os.environ["RAY_AUTH_TOKEN"] == token
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ensure_auth_token() == "disabled" and "RAY_AUTH_TOKEN" not in os.environ


PRELOAD_PROBE = textwrap.dedent("""
    import json
    from curator_stages.runtime.ray_cluster import WARM_MODULES, start_local_ray
    import ray

    start_local_ray(1)

    def preloaded():
        import sys
        return [name for name in WARM_MODULES if name not in sys.modules]

    print(json.dumps(ray.get(ray.remote(num_cpus=1)(preloaded).remote())))
    ray.shutdown()
""")


@pytest.mark.slow
def test_embedded_ray_workers_preload_the_stage_modules(tmp_path):
    """Guard for Ray's own worker preload (``RAY_preload_python_modules``, which replaced our
    warm-up tasks): a worker of an embedded Ray has imported the modules nearly every plan
    needs before it runs its first task. Fails if Ray drops or renames the setting."""
    res = subprocess.run([sys.executable, "-c", PRELOAD_PROBE], env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
