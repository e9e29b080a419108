"""Redis servers for the tests: a single server, a 3-node cluster, and a server a test can kill
and restart, each on free loopback ports, started from the Debian ``redis-server`` through
``tests/redis_server.py`` (which the benches use too). Tests that use one are marked
``redis`` (``conftest.py``). Their worker processes start through ``tests/multiprocess.py``.

Without ``redis-server`` the tests that need one are skipped locally; in CI (``CI=true``) they
fail instead, so a missing package can never pass for green.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import (
    REDIS_CLI,
    REDIS_SERVER,
    Cluster,
    Server,
    cluster_port,
    free_port,
    running,
)

__all__ = ["Cluster", "Server", "cluster_port", "free_port", "require_redis"]


def require_redis() -> None:
    if REDIS_SERVER and REDIS_CLI:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("redis-server and redis-cli are required in CI (apt-get install redis-server)")
    pytest.skip("redis-server is not installed")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    """One server for the session; tests keep apart through a unique prefix (``redis_prefix``)."""
    require_redis()
    with running() as server:
        yield server


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def killable_redis() -> Iterator[Server]:
    """A server of the test's own, to kill and restart on the same port."""
    require_redis()
    with running() as server:
        yield server


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
