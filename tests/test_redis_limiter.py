"""RateLimiter shared through Redis: one limit across threads, instances and OS processes;
concurrency slots that expire; priorities across processes; a local share while Redis is down."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import langscale
from langscale import ConfigError, RateLimiter, RateLimitTimeout
from tests.limiter_load import admissions, closed_loop, open_loop
from tests.multiprocess import Start, run_together, started


def shared(server, prefix, **kw) -> RateLimiter:
    # A store that waits up to 5 s: on a loaded machine an answer can take longer than the
    # 100 ms default, which these tests (not about Redis being slow) would see as Redis down.
    store = langscale.RedisStore(server.url, prefix=prefix, timeout=5.0)
    return RateLimiter(store=store, **kw)


def test_two_instances_share_one_limit(redis_server, redis_prefix):
    a = shared(redis_server, redis_prefix, requests_per_second=50, burst=1, name="x")
    b = shared(redis_server, redis_prefix, requests_per_second=50, burst=1, name="x")
    other = shared(redis_server, redis_prefix, requests_per_second=50, burst=1, name="y")
    assert a.acquire(blocking=False)
    # The same named limit is spent for b; another name is not.
    assert b.acquire(blocking=False) is False
    assert other.acquire(blocking=False)
    stats = a.stats()
    assert stats["acquired"] == 1 and stats["round_trips"] >= 1


def test_rate_held_across_threads_of_two_instances(redis_server, redis_prefix):
    # burst 5: 50 ms of slack for threads a loaded machine wakes late
    limiters = [
        shared(redis_server, redis_prefix, requests_per_second=100, burst=5, name="r")
        for _ in range(2)
    ]
    stamps: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 1.5

    def run(limiter: RateLimiter) -> None:
        while time.monotonic() < stop:
            limiter.acquire(timeout=2)
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(lim,)) for lim in limiters for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window = [s for s in stamps if stop - 1.0 <= s < stop]
    assert 90 <= len(window) <= 110, len(window)


def test_tokens_and_settle_are_shared(redis_server, redis_prefix):
    a = shared(redis_server, redis_prefix, tokens_per_minute=600, name="t")
    b = shared(redis_server, redis_prefix, tokens_per_minute=600, name="t")
    permit = a.acquire(tokens=600, blocking=False)
    assert permit and permit.tokens == 600
    assert b.acquire(tokens=100, blocking=False) is False
    permit.settle(300)  # refunds 300 tokens on the shared bucket
    deadline = time.monotonic() + 2
    while not b.acquire(tokens=100, blocking=False):
        assert time.monotonic() < deadline, "the refund never reached the shared bucket"
        time.sleep(0.01)
    with pytest.raises(ConfigError, match="700 tokens"):
        a.acquire(tokens=700)


def test_concurrency_slots_are_shared_and_released(redis_server, redis_prefix):
    a = shared(redis_server, redis_prefix, max_concurrency=2, name="c")
    b = shared(redis_server, redis_prefix, max_concurrency=2, name="c")
    p1 = a.acquire()
    p2 = b.acquire()
    assert b.acquire(blocking=False) is False
    with pytest.raises(RateLimitTimeout):
        a.acquire(timeout=0.1)
    p1.release()
    assert b.acquire(timeout=2)
    assert a.stats()["in_flight"] == 0 and b.stats()["in_flight"] >= 1
    p2.release()


async def test_async_acquire_and_cancel(redis_server, redis_prefix):
    a = shared(redis_server, redis_prefix, max_concurrency=1, name="ac")
    held = await a.aacquire()
    waiter = asyncio.ensure_future(a.aacquire())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    async with await a.aacquire(timeout=2) as permit:
        assert permit.tokens == 0


def test_bad_settings_raise_config_error(redis_server, redis_prefix):
    with pytest.raises(ConfigError, match="lease"):
        shared(redis_server, redis_prefix, requests_per_second=1, lease=0)
    with pytest.raises(ConfigError, match="local_share"):
        shared(redis_server, redis_prefix, requests_per_second=1, local_share=2)
    with pytest.raises(ConfigError, match="name"):
        shared(redis_server, redis_prefix, requests_per_second=1, name="a{b}")
    with pytest.raises(ConfigError, match="not a redis URL"):
        RateLimiter(requests_per_second=1, redis_url="http://nope")
    with pytest.raises(ConfigError, match="store"):
        RateLimiter(requests_per_second=1, store="redis://x")


def test_leasing_cuts_round_trips(redis_server, redis_prefix):
    plain = shared(redis_server, redis_prefix, requests_per_second=100_000, name="l1")
    leased = shared(
        redis_server, redis_prefix, requests_per_second=100_000, name="l2", burst=50, lease=10
    )
    for _ in range(200):
        assert plain.acquire(blocking=False)
        assert leased.acquire(blocking=False)
    assert plain.stats()["round_trips"] == 200
    assert leased.stats()["round_trips"] <= 40
    assert leased.stats()["leased"] >= 160


def test_priorities_hold_across_instances(redis_server, redis_prefix):
    # Two "processes": one with batch waiters, one with high waiters, all queued behind a
    # drained bucket; while a high waiter is registered no batch waiter may take a unit.
    low = shared(redis_server, redis_prefix, requests_per_second=20, burst=1, name="p")
    high = shared(redis_server, redis_prefix, requests_per_second=20, burst=1, name="p")
    order: list[str] = []
    lock = threading.Lock()

    def run(limiter: RateLimiter, priority: str) -> None:
        limiter.acquire(priority=priority, timeout=10)
        with lock:
            order.append(priority)

    assert low.acquire(blocking=False)
    threads = [threading.Thread(target=run, args=(low, "batch")) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    highs = [threading.Thread(target=run, args=(high, "high")) for _ in range(4)]
    for t in highs:
        t.start()
    for t in threads + highs:
        t.join()
    # At most the one batch waiter already due when the first high waiter registered goes
    # first; every other high waiter is served before every other batch waiter.
    assert order[:5].count("high") >= 4, order


def test_redis_down_uses_the_local_share_and_recovers(killable_redis, redis_prefix, caplog):
    store = langscale.RedisStore(killable_redis.url, prefix=redis_prefix, timeout=0.05)
    limiter = RateLimiter(requests_per_second=200, store=store, name="f", local_share=0.25, burst=1)
    assert not limiter.acquire().local
    caplog.set_level(logging.WARNING, logger="langscale.store")
    killable_redis.kill()
    started = time.monotonic()
    admitted = 0
    while time.monotonic() - started < 0.5:
        permit = limiter.acquire(timeout=1)  # never raises: the local share answers
        admitted += 1
    assert permit.local
    # a quarter of 200/s for 0.5 s, give or take the first call that found Redis gone
    assert 15 <= admitted <= 40, admitted
    assert store.stats()["degraded"] == 1 and not store.up
    assert any("unavailable" in r.getMessage() for r in caplog.records)
    killable_redis.start()
    deadline = time.monotonic() + 10
    while limiter.acquire(timeout=1).local:
        assert time.monotonic() < deadline, "sharing never resumed"
        time.sleep(0.02)
    assert store.up and store.stats()["recovered"] == 1
    limiter.stats()  # logs queued events
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_unreachable_at_start_is_local_not_an_error(redis_prefix):
    store = langscale.RedisStore("redis://127.0.0.1:1", prefix=redis_prefix, timeout=0.05)
    limiter = RateLimiter(requests_per_second=1000, store=store, name="u")
    assert limiter.acquire(timeout=1).local
    assert not store.up


# -- several OS processes -----------------------------------------------------------------------


def _admit_worker(start: Start, url, prefix, seconds, threads):
    store = langscale.RedisStore(url, prefix=prefix)
    # burst 10: 100 ms of slack, so a worker the OS schedules late (the test machine may be
    # loaded) does not lose the slot it was due
    limiter = RateLimiter(requests_per_second=100, burst=10, store=store, name="mp")
    begin = start.wait()
    stamps = admissions(limiter, begin, begin + seconds, threads)
    return len(stamps), limiter.stats()["local"]


def test_four_processes_stay_within_two_percent_of_the_shared_limit(redis_server, redis_prefix):
    seconds = 8.0
    results = run_together(
        _admit_worker, [(redis_server.url, redis_prefix, seconds, 4)] * 4, timeout=60
    )
    total = sum(n for n, _ in results)
    assert all(local == 0 for _, local in results)
    assert all(n > 0 for n, _ in results), results  # every process got a share
    # 100/s for 8 s (plus the 10-request burst at the start)
    expected = 100 * seconds
    print(f"4 processes x 4 threads admitted {total} of {expected:.0f}: {results}")
    assert abs(total - expected) <= 0.02 * expected, (total, results)


def _slot_holder(ready, url, prefix, tenant=None):
    store = langscale.RedisStore(url, prefix=prefix)
    limiter = RateLimiter(max_concurrency=1, store=store, name="crash", slot_ttl=1.0)
    permit = limiter.acquire(tenant=tenant)
    ready.set()
    time.sleep(60)  # killed long before this
    permit.release()


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_crashed_workers_slot_expires(redis_server, redis_prefix, tenant):
    with started(_slot_holder, (redis_server.url, redis_prefix, tenant)) as proc:
        limiter = shared(redis_server, redis_prefix, max_concurrency=1, name="crash", slot_ttl=1.0)
        # Alive, its heartbeat keeps the slot: nobody else gets in.
        time.sleep(1.5)
        assert limiter.acquire(blocking=False, tenant=tenant) is False
        proc.kill()
        proc.join()
    begun = time.monotonic()
    assert limiter.acquire(timeout=5, tenant=tenant)
    assert time.monotonic() - begun < 3


def test_extreme_rates_never_panic(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    slow = RateLimiter(requests_per_second=1e-300, store=store, name="slow", lease=5)
    assert not slow.acquire(blocking=False).local
    assert slow.acquire(blocking=False) is False
    with pytest.raises(RateLimitTimeout):
        slow.acquire(timeout=0.05)
    fast = RateLimiter(requests_per_second=1e300, store=store, name="fast", lease=5)
    for _ in range(20):
        assert not fast.acquire(timeout=1).local
    # every answer came from the shared script: no script errors, no fallback
    assert store.stats()["errors"] == 0
    assert slow.stats()["local"] == 0 and fast.stats()["local"] == 0


# -- fair shares between tenants across processes --------------------------------------------


def test_a_light_tenant_keeps_its_rate_beside_a_heavy_one_in_other_processes(
    redis_server, redis_prefix
):
    # One 40/s limit, two tenants of weight 1 (20/s each). The light tenant asks 15/s, within
    # its share; the heavy one 20x that from three processes. Served first come, first served
    # the light tenant would get about a quarter of the slots (one asker in each of four
    # processes) and fall behind by seconds; held to its share while the light one is
    # starved, the heavy tenant leaves it what it asks for.
    seconds = 6.0
    plan = [("light", 15.0, 4)] + [("heavy", 100.0, 8)] * 3
    results = run_together(
        open_loop,
        [(redis_server.url, redis_prefix, seconds, t, True, r, n) for t, r, n in plan],
        timeout=120,
    )
    assert all(r.local == 0 for r in results)
    light = next(r.records for r in results if r.tenant == "light")
    heavy = sum(len(r.records) for r in results if r.tenant == "heavy")
    p95 = _p95(sorted(admitted - asked for asked, admitted, _ in light))
    print(f"light admitted {len(light)} of {15 * seconds:.0f}, p95 wait {p95:.3f} s; heavy {heavy}")
    # the light tenant gets what it asks for (admitted before the end, generous margin)
    assert len(light) >= 0.85 * 15 * seconds
    # the heavy one takes the rest, and the two together no more than the limit
    assert heavy + len(light) <= 40 * seconds + 10
    assert heavy >= 0.5 * 25 * seconds
    # no backlog builds up behind the heavy tenant's requests (seconds of it first come,
    # first served)
    assert p95 < 1.0


def test_tenant_weights_of_a_shared_limiter(redis_server, redis_prefix):
    with pytest.raises(ConfigError, match="acme"):
        shared(redis_server, redis_prefix, requests_per_second=10, tenant_weights={"acme": -1})
    limiter = shared(
        redis_server,
        redis_prefix,
        requests_per_second=10,
        burst=8,
        name="tw",
        tenant_weights={"gold": 3},
    )
    with pytest.raises(ConfigError, match="weight"):
        limiter.set_tenant_weight("tin", float("nan"))
    limiter.set_tenant_weight("tin", 1)
    assert limiter.acquire(blocking=False, tenant="tin")
    # not starved, tin leaves gold the rest of the burst, beyond gold's share of 6
    assert sum(1 for _ in range(10) if limiter.acquire(blocking=False, tenant="gold")) == 7


# -- fair concurrency slots between tenants across processes ---------------------------------

SLOT_CALL = 0.05  # how long each admitted call holds its slot


def _slot_run(url: str, prefix: str, seconds: float, named: bool, heavy: bool) -> list[float]:
    """The light tenant's sorted waits: one caller, alone or beside 20 heavy callers in 3
    other processes."""
    plan = [("light", 1, 0.02)]
    if heavy:
        plan += [("heavy", 7, 0.0), ("heavy", 7, 0.0), ("heavy", 6, 0.0)]
    results = run_together(
        closed_loop,
        [(url, prefix, seconds, tenant, named, n, think, SLOT_CALL) for tenant, n, think in plan],
        timeout=120,
    )
    assert all(r.local == 0 for r in results)
    light = next(r.records for r in results if r.tenant == "light")
    return sorted(admitted - asked for asked, admitted, _ in light)


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def test_a_light_tenant_gets_its_slots_beside_a_heavy_one_in_other_processes(
    redis_server, redis_prefix
):
    # A cap of 4 slots, calls holding one 50 ms. The heavy tenant keeps 20 callers asking
    # from three processes; first come, the light tenant's one caller wins a freed slot only
    # against the heavy askers polling beside it (about one in four). With fair slots the
    # heavy tenant, at its slot share (2 of 4) or more, is refused a freed slot while the
    # light one is starved, so the light caller waits about until the next release.
    seconds = 3.0
    alone = _slot_run(redis_server.url, redis_prefix + "a", seconds, named=True, heavy=False)
    fair = _slot_run(redis_server.url, redis_prefix + "f", seconds, named=True, heavy=True)
    fifo = _slot_run(redis_server.url, redis_prefix + "o", seconds, named=False, heavy=True)
    p95 = {k: _p95(v) for k, v in (("alone", alone), ("fair", fair), ("fifo", fifo))}
    counts = {"alone": len(alone), "fair": len(fair), "fifo": len(fifo)}
    print(f"light p95 wait (s): {p95}; admissions: {counts}")
    assert len(fair) >= 10 and len(alone) >= 10
    # latency (wait + call) near its latency alone (measured ~1.6x on two loaded cores;
    # asserted with a generous margin) ...
    assert p95["fair"] + SLOT_CALL <= 2.5 * (p95["alone"] + SLOT_CALL), p95
    # ... and much better than first come, first served (~10x shorter waits measured)
    assert p95["fifo"] >= 2.0 * p95["fair"], p95


def test_fair_slots_work_on_redis_cluster(redis_cluster, redis_prefix):
    store = langscale.RedisStore(redis_cluster.urls, prefix=redis_prefix, cluster=True)
    a = RateLimiter(max_concurrency=2, store=store, name="cs")
    b = RateLimiter(max_concurrency=2, store=store, name="cs")
    held = [a.acquire(timeout=2, tenant="heavy") for _ in range(2)]
    assert not any(p.local for p in held)
    # light, holding none of its share of 1, waits on the full cap and is starved ...
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire(timeout=5, tenant="light")))
    waiter.start()
    time.sleep(0.1)
    held.pop().release()
    # ... so heavy, at its share, is refused the freed slot, which light then takes
    stolen = 0
    while waiter.is_alive():
        permit = a.acquire(blocking=False, tenant="heavy")
        if permit:
            stolen += 1
            held.append(permit)
    waiter.join()
    assert stolen == 0
    assert got and not got[0].local
    node = redis_cluster.nodes[0]
    keys = [store.key("limiter:cs", k) for k in ("s", "c", "cc", "cz", "ts", "ta", "tw", "tz")]
    assert len({node.cli("CLUSTER", "KEYSLOT", key) for key in keys}) == 1
    assert store.stats()["errors"] == 0
