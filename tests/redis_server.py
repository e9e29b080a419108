"""One way to run a throwaway ``redis-server`` on loopback (Debian's package), for the tests'
fixtures (``tests/redis_fixtures.py``) and the benches (``benches/bench_redis.py``) alike: a
server on a free port, killable and restartable on the same port, and the pieces of a cluster.
No pytest here, so a bench can import it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


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


class Cluster:
    def __init__(self, nodes: list[Server]):
        self.nodes = nodes

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


@contextmanager
def running(args: list[str] | None = None) -> Iterator[Server]:
    """A server of its own in a temporary directory, killed on the way out."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        msg = "redis-server and redis-cli are not installed (apt-get install redis-server)"
        raise RuntimeError(msg)
    with tempfile.TemporaryDirectory() as d:
        server = Server(Path(d), args=args)
        server.start()
        try:
            yield server
        finally:
            server.kill()
