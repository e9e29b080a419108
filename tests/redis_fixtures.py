"""Redis servers for the tests: a single server, a 3-node cluster, and a server a test can kill
and restart, each on free loopback ports, started from the Debian ``redis-server``.

Without ``redis-server`` the tests that need one are skipped locally; in CI (``CI=true``) they
fail instead, so a missing package can never pass for green.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def require_redis() -> None:
    if REDIS_SERVER and REDIS_CLI:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("redis-server and redis-cli are required in CI (apt-get install redis-server)")
    pytest.skip("redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free as well."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _ping(port: int, extra: list[str] | None = None) -> bool:
    assert REDIS_CLI is not None
    try:
        out = subprocess.run(
            [REDIS_CLI, "-p", str(port), *(extra or []), "PING"],
            capture_output=True,
            text=True,
            timeout=2,
        )
    except subprocess.TimeoutExpired:
        return False
    return "PONG" in out.stdout


class Server:
    """One redis-server process on a fixed port; ``kill`` and ``start`` keep the port."""

    def __init__(self, directory: Path, port: int | None = None, args: list[str] | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.args = args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, ping_args: list[str] | None = None) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _ping(self.port, ping_args):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def cli(self, *args: str) -> str:
        assert REDIS_CLI is not None
        out = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    """One server for the session; tests keep apart through a unique prefix (``redis_prefix``)."""
    require_redis()
    with tempfile.TemporaryDirectory() as d:
        server = Server(Path(d))
        server.start()
        yield server
        server.kill()


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def killable_redis() -> Iterator[Server]:
    """A server of the test's own, to kill and restart on the same port."""
    require_redis()
    with tempfile.TemporaryDirectory() as d:
        server = Server(Path(d))
        server.start()
        yield server
        server.kill()


class Cluster:
    def __init__(self, nodes: list[Server]):
        self.nodes = nodes

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """Three masters, slots split by ``redis-cli --cluster create``."""
    require_redis()
    assert REDIS_CLI is not None
    with tempfile.TemporaryDirectory() as d:
        nodes = []
        for i in range(3):
            directory = Path(d) / str(i)
            directory.mkdir()
            node = Server(
                directory,
                port=cluster_port(),
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            node.start()
            nodes.append(node)
        try:
            subprocess.run(
                [
                    REDIS_CLI,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            deadline = time.monotonic() + 30
            while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the test cluster did not reach cluster_state:ok")
                time.sleep(0.1)
            yield Cluster(nodes)
        finally:
            for n in nodes:
                n.kill()
