"""Shared state through Redis: the L2 hit of ``ExactCache`` beside ``langchain_redis.RedisCache``
on the same local ``redis-server``, the cost of a shared limiter admission with and without
leasing, the rate leasing delivers, and Redis round trips per request.

Starts its own ``redis-server`` on a free loopback port (Debian's package) through
``tests/redis_server.py``, as the tests do; without it, or
without ``langchain-redis`` (the ``bench`` extra), the rows that need them say so.
"""

from __future__ import annotations

import time
import uuid

from _common import Case, Row, Settings, compare, time_items, with_redis_server
from bench_cache import answer, llm_string, prompt_template, prompts

import langscale
from langscale import ExactCache, RateLimiter
from tests.limiter_load import admissions

GROUP_CACHE = "redis: cache L2 hit, ~2 KB tool-calling prompt, local redis-server"
GROUP_LIMIT = "redis: shared limiter, rate never binds"
GROUP_RATE = "redis: shared limiter, achieved rate, 8 threads @ 200/s"
GROUP_TRIPS = "redis: round trips per request"


def cases(settings: Settings) -> list[Case]:
    return [
        Case("L2 hit vs RedisCache", lambda: _with_server(_l2_hit, settings)),
        Case("limiter acquire cost", lambda: _with_server(_acquire_cost, settings)),
        Case("limiter achieved rate", lambda: _with_server(_achieved_rate, settings)),
        Case("round trips", lambda: _with_server(_round_trips, settings)),
    ]


def _with_server(run, settings: Settings) -> list[Row]:
    return with_redis_server(run, settings, GROUP_CACHE)


def _store(url: str) -> langscale.RedisStore:
    return langscale.RedisStore(url, prefix=f"b{uuid.uuid4().hex[:8]}", timeout=0.5)


def _l2_hit(url: str, settings: Settings) -> list[Row]:
    n = settings.pick(2000, 200)
    rounds = settings.pick(7, 2)
    template = prompt_template()
    llm = llm_string()
    value = [answer()]
    store = _store(url)
    writer = ExactCache(store=store)
    theirs, anchor = _langchain_redis_cache(url)
    batches = []
    for r in range(rounds + 1):
        ps = prompts(template, r * n, n)
        for p in ps:
            writer.update(p, llm, value)
            if theirs is not None:
                theirs.update(p, llm, value)
        batches.append(ps)
    it_ours, it_theirs = iter(batches), iter(batches)

    def ours() -> float:
        # A fresh cache: every lookup misses L1 and is answered from Redis (then fills L1).
        reader = ExactCache(store=store)
        return time_items(lambda p: reader.lookup(p, llm), next(it_ours))

    samplers = {"langscale": ours}
    if theirs is not None:
        samplers["langchain"] = lambda: time_items(lambda p: theirs.lookup(p, llm), next(it_theirs))
    medians = compare(samplers, rounds)
    return [
        Row(
            GROUP_CACHE,
            f"ExactCache L2 hit vs {anchor} hit",
            "ns/call",
            medians["langscale"],
            medians.get("langchain"),
        )
    ]


def _langchain_redis_cache(url: str) -> tuple[object | None, str]:
    """The LangChain Redis cache that runs on a plain redis-server, and what it is.

    ``langchain_redis.RedisCache`` stores entries with JSON.SET, which needs the RedisJSON
    module (Redis Stack); Debian's redis-server lacks it, so there the anchor is
    ``langchain_community.cache.RedisCache`` (plain hashes), if installed.
    """
    why = "langchain-redis not installed"
    try:
        import redis
        from langchain_redis import RedisCache

        cache = RedisCache(redis_url=url, prefix=f"lc{uuid.uuid4().hex[:8]}")
        cache.update("probe", "probe", [answer()])
        return cache, "langchain_redis.RedisCache"
    except ImportError:
        pass
    except redis.exceptions.ResponseError:
        why = "langchain_redis.RedisCache needs RedisJSON, absent here"
    try:
        import redis
        from langchain_community.cache import RedisCache as CommunityCache

        client = redis.Redis.from_url(url)
        return CommunityCache(client), f"langchain_community RedisCache ({why})"
    except ImportError:
        return None, f"nothing ({why}; langchain-community not installed)"


def _acquire_cost(url: str, settings: Settings) -> list[Row]:
    n = settings.pick(3000, 300)
    store = _store(url)
    plain = RateLimiter(requests_per_second=1_000_000, store=store, name="plain")
    leased = RateLimiter(
        requests_per_second=1_000_000, burst=1000, store=store, name="leased", lease=10
    )
    local = RateLimiter(requests_per_second=1_000_000)
    items = list(range(n))
    medians = compare(
        {
            "plain": lambda: time_items(lambda _: plain.acquire(), items),
            "leased": lambda: time_items(lambda _: leased.acquire(), items),
            "local": lambda: time_items(lambda _: local.acquire(), items),
        },
        settings.pick(5, 2),
    )
    return [
        Row(GROUP_LIMIT, label, "ns/call", medians[side], None)
        for label, side in (
            ("acquire(), shared, one round trip each", "plain"),
            ("acquire(), shared, lease=10", "leased"),
            ("acquire(), local (no Redis), for scale", "local"),
        )
    ]


def _rate(limiter: RateLimiter, seconds: float, threads: int = 8) -> float:
    begin = time.monotonic() + 0.2
    stamps = admissions(limiter, begin, begin + seconds, threads, clock=time.monotonic)
    return len(stamps) / seconds


def _achieved_rate(url: str, settings: Settings) -> list[Row]:
    seconds = settings.pick(5.0, 1.0)
    rows = []
    for label, kw in (
        ("lease=1 (default burst, 20 ms)", {}),
        ("lease=10, burst=10", {"lease": 10, "burst": 10}),
    ):
        store = _store(url)
        limiter = RateLimiter(requests_per_second=200, store=store, name="rate", **kw)
        rate = _rate(limiter, seconds)
        stats = limiter.stats()
        rows.append(
            Row(
                GROUP_RATE,
                f"{label}: req/s (% of configured), round trips per admission "
                f"{stats['round_trips'] / max(stats['acquired'], 1):.2f}",
                "req/s",
                rate,
                None,
                target="within 2% of configured",
                met=abs(rate - 200) <= 4,
                extra={"langscale_percent": rate / 2},
            )
        )
    return rows


def _round_trips(url: str, settings: Settings) -> list[Row]:
    n = settings.pick(500, 100)
    store = _store(url)
    template = prompt_template()
    llm = llm_string()
    value = [answer()]
    limiter = RateLimiter(requests_per_second=1_000_000, store=store, name="trips")
    leased = RateLimiter(
        requests_per_second=1_000_000, burst=1000, store=store, name="trips-l", lease=10
    )
    a, b = ExactCache(store=store), ExactCache(store=store)
    ps = prompts(template, 0, n)

    def calls(work) -> float:
        before = store.stats()["calls"]
        for p in ps:
            work(p)
        return (store.stats()["calls"] - before) / n

    miss_then_store = calls(lambda p: (a.lookup(p, llm), a.update(p, llm, value)))
    l1_hit = calls(lambda p: a.lookup(p, llm))
    l2_hit = calls(lambda p: b.lookup(p, llm))
    admit = calls(lambda p: limiter.acquire())
    admit_leased = calls(lambda p: leased.acquire())
    return [
        Row(GROUP_TRIPS, "cache miss + store (GET, SET)", "trips", miss_then_store, None),
        Row(GROUP_TRIPS, "cache hit in this process (L1)", "trips", l1_hit, None),
        Row(GROUP_TRIPS, "cache hit stored by another process (L2)", "trips", l2_hit, None),
        Row(GROUP_TRIPS, "limiter admission, lease=1", "trips", admit, None),
        Row(GROUP_TRIPS, "limiter admission, lease=10", "trips", admit_leased, None),
    ]
