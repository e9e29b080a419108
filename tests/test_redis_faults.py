"""Faults and security: Redis killed mid-run or frozen (slow) never raises into the caller and
never holds a call up beyond the store's timeout; sharing resumes on recovery. AUTH/ACL users
and TLS (rediss://) connect; a wrong password is an outage, not an exception, and is never
logged."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

import langscale
from langscale import ExactCache, RateLimiter, SemanticCache
from tests.redis_fixtures import Server, free_port, require_redis

LLM = "fake-model"


def prompt(text: str) -> str:
    return dumps([HumanMessage(content=text)])


def gens(text: str) -> list[ChatGeneration]:
    return [ChatGeneration(message=AIMessage(content=text))]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_killed_mid_run_no_exception_then_recovery(killable_redis, redis_prefix):
    store = langscale.RedisStore(killable_redis.url, prefix=redis_prefix, timeout=0.05)
    limiter = RateLimiter(requests_per_second=400, store=store, name="k", local_share=0.5)
    exact = ExactCache(store=store)
    semantic = SemanticCache(store=store)
    errors: list[BaseException] = []
    counts = {"local": 0, "shared": 0}
    lock = threading.Lock()
    stop = time.monotonic() + 2.5

    def work(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            try:
                permit = limiter.acquire(timeout=2)
                with lock:
                    counts["local" if permit.local else "shared"] += 1
                p = prompt(f"worker {n} question {i % 20}")
                if exact.lookup(p, LLM) is None:
                    exact.update(p, LLM, gens("a"))
                if semantic.lookup(p, LLM) is None:
                    semantic.update(p, LLM, gens("b"))
            except BaseException as err:  # the point is that nothing escapes
                errors.append(err)
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    killable_redis.kill()
    time.sleep(0.8)
    killable_redis.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counts["local"] > 0 and counts["shared"] > 0
    wait_for(lambda: store.up)
    assert not limiter.acquire(timeout=2).local
    assert store.stats()["degraded"] >= 1 and store.stats()["recovered"] >= 1


def test_frozen_redis_never_holds_a_call_beyond_the_timeout(killable_redis, redis_prefix):
    store = langscale.RedisStore(killable_redis.url, prefix=redis_prefix, timeout=0.05)
    limiter = RateLimiter(requests_per_second=1000, store=store, name="slow")
    cache = ExactCache(store=store)
    assert not limiter.acquire().local
    assert killable_redis.process is not None
    pid = killable_redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # the server stops answering, its socket stays open
    try:
        started = time.monotonic()
        permit = limiter.acquire(timeout=5)
        cache.update(prompt("q"), LLM, gens("a"))
        assert cache.lookup(prompt("other"), LLM) is None
        elapsed = time.monotonic() - started
        assert permit.local
        assert elapsed < 1.0, elapsed  # a 50 ms timeout, then local: never the 5 s wait
        assert store.stats()["timeouts"] >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: store.up)
    wait_for(lambda: not limiter.acquire(timeout=2).local)


def test_acl_user_and_password(redis_prefix, caplog):
    require_redis()
    with tempfile.TemporaryDirectory() as d:
        server = Server(
            Path(d),
            args=[
                *("--user", "default", "off"),
                *("--user", "alice", "on", ">s3cret", "~*", "&*", "+@all"),
            ],
        )
        server.start(ping_args=["--user", "alice", "--pass", "s3cret", "--no-auth-warning"])
        try:
            url = f"redis://alice:s3cret@127.0.0.1:{server.port}"
            store = langscale.RedisStore(url, prefix=redis_prefix)
            assert store.up
            cache = ExactCache(store=store)
            cache.update(prompt("acl"), LLM, gens("ok"))
            assert ExactCache(store=store).lookup(prompt("acl"), LLM) is not None
            caplog.set_level(logging.WARNING, logger="langscale.store")
            bad = langscale.RedisStore(
                f"redis://alice:wrong-pass@127.0.0.1:{server.port}", prefix=redis_prefix
            )
            assert not bad.up  # an outage for this store, not an exception
            assert RateLimiter(requests_per_second=10, store=bad, name="a").acquire().local
            assert all("wrong-pass" not in r.getMessage() for r in caplog.records)
        finally:
            server.kill()


def _make_certs(directory: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=langscale-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip


def test_tls_rediss(redis_prefix):
    require_redis()
    if subprocess.run(["which", "openssl"], capture_output=True).returncode != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("openssl is needed for the TLS test")
        pytest.skip("openssl is not installed")
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        _make_certs(directory)
        port = free_port()
        server = Server(
            directory,
            port=port,
            args=[
                "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(directory / "server.crt"),
                "--tls-key-file", str(directory / "server.key"),
                "--tls-ca-cert-file", str(directory / "ca.crt"),
                "--tls-auth-clients", "no",
            ],
        )  # fmt: skip
        server.start(ping_args=["--tls", "--cacert", str(directory / "ca.crt")])
        try:
            ca = (directory / "ca.crt").read_bytes()
            store = langscale.RedisStore(
                f"rediss://127.0.0.1:{port}", prefix=redis_prefix, tls_ca=ca, timeout=1.0
            )
            assert store.up
            limiter = RateLimiter(requests_per_second=100, store=store, name="tls")
            assert not limiter.acquire(timeout=2).local
            cache = ExactCache(store=store)
            cache.update(prompt("tls"), LLM, gens("secure"))
            assert ExactCache(store=store).lookup(prompt("tls"), LLM) is not None
            # without the CA the server's certificate is not trusted: an outage, no exception
            untrusted = langscale.RedisStore(
                f"rediss://127.0.0.1:{port}", prefix=redis_prefix, timeout=1.0
            )
            assert not untrusted.up
        finally:
            server.kill()


def test_an_unreachable_redis_is_not_a_config_error():
    """A Redis outage degrades (local limits, L1 cache): it is never reported as a bad
    setting. Only a setting that can never work is a ConfigError."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = langscale.RedisStore(f"redis://127.0.0.1:{port}", timeout=0.2)
    limiter = langscale.RateLimiter(requests_per_second=100, store=store, name="down")
    with limiter.acquire(tokens=1) as permit:
        assert permit.local, "admitted from the local share while Redis is down"
    with pytest.raises(langscale.ConfigError):
        langscale.RedisStore(f"redis://127.0.0.1:{port}", timeout=0)
    assert issubclass(langscale.StoreError, langscale.LangscaleError)
    assert not issubclass(langscale.StoreError, langscale.ConfigError)
