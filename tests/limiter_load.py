"""Load on a rate limiter, for the tests that assert on it and the benches that measure it
(``tests/test_redis_limiter.py``, ``benches/bench_limiter.py``, ``benches/bench_redis.py``):
threads acquiring as fast as admitted, one tenant's open-loop arrivals into a shared rate,
and one tenant's closed-loop callers holding shared concurrency slots. The two tenant loads
run in a worker process each (``run_together``). No pytest here, so a bench can import it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import langscale
from tests.multiprocess import Start

SHARED_RATE = 40.0  # the shared rate the open-loop tenants share (requests/s, burst 2)
SHARED_SLOTS = 4  # the shared concurrency cap the closed-loop tenants share


class Load(NamedTuple):
    """What one tenant's worker saw: an (asked, admitted, done) record of each admission
    before ``end`` (time.time() seconds; done is after the call), and how many admissions
    came from the process's local share (Redis down)."""

    tenant: str
    records: list[tuple[float, float, float]]
    local: int
    end: float


def admissions(
    limiter: Any, begin: float, end: float, threads: int, clock: Callable[[], float] = time.time
) -> list[float]:
    """``threads`` threads acquiring from ``begin`` as fast as admitted: when each admission
    before ``end`` came, by ``clock``."""
    stamps: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        while clock() < begin:
            time.sleep(0.001)
        while True:
            limiter.acquire(timeout=5)
            now = clock()
            if now >= end:
                return
            with lock:
                stamps.append(now)

    _in_threads(run, [()] * threads)
    return stamps


def _store(url: str, prefix: str) -> langscale.RedisStore:
    """A store that waits up to 5 s for Redis, not the 100 ms default: on a loaded machine a
    slow answer fell back to local state and failed a run that measures the shared one."""
    return langscale.RedisStore(url, prefix=prefix, timeout=5.0)


def open_loop(
    start: Start,
    url: str,
    prefix: str,
    seconds: float,
    tenant: str,
    named: bool,
    rate: float,
    threads: int,
    call: float = 0.0,
) -> Load:
    """One tenant's requests at ``rate``/s over ``threads`` senders, whether admitted or not,
    into one ``SHARED_RATE``/s limit; each admitted call then takes ``call`` s. ``named``:
    the tenant is named to the limiter (else first come, first served)."""
    store = _store(url, prefix)
    limiter = langscale.RateLimiter(
        requests_per_second=SHARED_RATE, burst=2, store=store, name="fair"
    )
    records: list[tuple[float, float, float]] = []
    lock = threading.Lock()
    begin = start.wait()
    end = begin + seconds

    def run(offset: float) -> None:
        sent = 0
        while True:
            due = begin + offset + sent * threads / rate
            if due >= end:
                return
            time.sleep(max(0.0, due - time.time()))
            sent += 1
            asked = time.time()
            # wait no later than the end: a backlog left behind is not measured, only drained
            try:
                limiter.acquire(timeout=max(0.001, end - asked), tenant=tenant if named else None)
            except langscale.RateLimitTimeout:
                continue
            admitted = time.time()
            time.sleep(call)
            if admitted < end:
                with lock:
                    records.append((asked, admitted, time.time()))

    _in_threads(run, [(i / rate,) for i in range(threads)])
    return Load(tenant, records, limiter.stats()["local"], end)


def closed_loop(
    start: Start,
    url: str,
    prefix: str,
    seconds: float,
    tenant: str,
    named: bool,
    threads: int,
    think: float,
    call: float,
) -> Load:
    """One tenant's ``threads`` callers: each pauses ``think`` s, waits for one of ``SHARED_SLOTS``
    shared slots and holds it ``call`` s. ``named`` as for ``open_loop``."""
    store = _store(url, prefix)
    limiter = langscale.RateLimiter(max_concurrency=SHARED_SLOTS, store=store, name="slots")
    records: list[tuple[float, float, float]] = []
    lock = threading.Lock()
    begin = start.wait()
    end = begin + seconds

    def run() -> None:
        time.sleep(max(0.0, begin - time.time()))
        while True:
            time.sleep(think)
            asked = time.time()
            if asked >= end:
                return
            try:
                permit = limiter.acquire(
                    timeout=max(0.001, end - asked), tenant=tenant if named else None
                )
            except langscale.RateLimitTimeout:
                return
            admitted = time.time()
            time.sleep(call)
            permit.release()
            if admitted < end:
                with lock:
                    records.append((asked, admitted, time.time()))

    _in_threads(run, [()] * threads)
    return Load(tenant, records, limiter.stats()["local"], end)


def _in_threads(run: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
    pool = [threading.Thread(target=run, args=a) for a in args]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
