"""``langscale.RateLimiter`` beside LangChain's ``InMemoryRateLimiter``.

Measures the cost of one admission when the rate never binds (ns per ``acquire`` and per
awaited ``aacquire``), and the rate each actually achieves against a configured one when
8 threads or 200 asyncio tasks all want more than it allows. And fairness between tenants:
the p95 latency of a light tenant while a heavy one sends 20x its traffic into one limit,
against its p95 alone, against langscale with no tenants named (one FIFO queue) and against
LangChain's limiter shared by both. The same across processes through Redis: a light tenant
in one process beside a heavy one in three others, one limit shared by all four; its
achieved share and p95 latency with tenants named, alone, and first come, first served; and
the same for concurrency slots: a light tenant's one caller beside 20 callers of a heavy
tenant in three other processes, all under one cap of 4 slots.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from _common import Case, Row, Settings, compare, time_calls, with_redis_server
from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

import langscale
from tests.limiter_load import SHARED_RATE, SHARED_SLOTS, closed_loop, open_loop
from tests.multiprocess import run_together

UNLIMITED = 1e9
RATES = (200.0, 2_000.0)
THREADS = 8
TASKS = 200
RATE_TOLERANCE = 0.02
# InMemoryRateLimiter's default poll period: workers that start together fail together, sleep
# together and wake together, one admission per period. The staggered variant spreads the
# workers' first attempts over one period, the case most favourable to polling.
POLL_PERIOD = 0.1


def cases(settings: Settings) -> list[Case]:
    out = [
        Case("acquire cost", lambda: _acquire_cost(settings)),
        Case("aacquire cost", lambda: _aacquire_cost(settings)),
        Case("fair queuing: light tenant beside a 20x heavy one", lambda: _fairness(settings)),
        Case(
            "fair shares over Redis: light tenant beside a 20x heavy one in 3 processes",
            lambda: with_redis_server(_shared_fairness, settings, SHARED_GROUP),
        ),
        Case(
            "fair slots over Redis: light tenant beside 20 heavy callers in 3 processes",
            lambda: with_redis_server(_slot_fairness, settings, SLOTS_GROUP),
        ),
    ]
    for stagger in (0.0, POLL_PERIOD):
        for rate in RATES:
            out.append(Case(f"threads @ {rate:g}/s", _bind(_threads_rate, rate, stagger, settings)))
            out.append(Case(f"tasks @ {rate:g}/s", _bind(_tasks_rate, rate, stagger, settings)))
    return out


def _bind(
    bench: Callable[[float, float, Settings], list[Row]],
    rate: float,
    stagger: float,
    settings: Settings,
) -> Callable[[], list[Row]]:
    return lambda: bench(rate, stagger, settings)


# --- cost of one admission -------------------------------------------------------------


def _unlimited_pair() -> tuple[langscale.RateLimiter, InMemoryRateLimiter]:
    ours = langscale.RateLimiter(requests_per_second=UNLIMITED, burst=int(UNLIMITED))
    theirs = InMemoryRateLimiter(requests_per_second=UNLIMITED, max_bucket_size=UNLIMITED)
    # InMemoryRateLimiter starts empty and sleeps 0.1 s on its first call; pay that here.
    theirs.acquire()
    return ours, theirs


def _acquire_cost(settings: Settings) -> list[Row]:
    calls, rounds = settings.pick((200_000, 7), (50_000, 3))
    ours, theirs = _unlimited_pair()
    ns = compare(
        {
            "langscale": lambda: time_calls(lambda: ours.acquire(blocking=True), calls),
            "langchain": lambda: time_calls(lambda: theirs.acquire(blocking=True), calls),
        },
        rounds,
    )
    return [_cost_row("acquire(blocking=True)", ns)]


def _aacquire_cost(settings: Settings) -> list[Row]:
    calls, rounds = settings.pick((100_000, 7), (25_000, 3))
    ours, theirs = _unlimited_pair()
    ns = compare(
        {
            "langscale": lambda: asyncio.run(_aacquire_loop(ours, calls)) / calls,
            "langchain": lambda: asyncio.run(_aacquire_loop(theirs, calls)) / calls,
        },
        rounds,
    )
    return [_cost_row("await aacquire()", ns)]


async def _aacquire_loop(limiter: BaseRateLimiter, calls: int) -> int:
    """ns for ``calls`` awaited acquisitions, timed inside the running loop."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        await limiter.aacquire()
    return time.perf_counter_ns() - start


def _cost_row(name: str, ns: dict[str, float]) -> Row:
    ns_ours, ns_theirs = ns["langscale"], ns["langchain"]
    return Row(
        group="limiter: cost, rate never binds",
        name=name,
        unit="ns/call",
        langscale=ns_ours,
        langchain=ns_theirs,
        target="no slower than LangChain",
        met=ns_ours <= ns_theirs,
    )


# --- achieved rate under contention ----------------------------------------------------


@dataclass
class Window:
    """The measuring window, and the admission times each worker saw inside it."""

    duration: float
    stagger: float = 0.0
    start: float = 0.0
    deadline: float = 0.0
    stamps: list[list[float]] = field(default_factory=list)

    def open(self) -> None:
        self.start = time.perf_counter()
        self.deadline = self.start + self.duration

    def lane(self) -> list[float]:
        stamps: list[float] = []
        self.stamps.append(stamps)
        return stamps

    def delay(self, worker: int, workers: int) -> float:
        """How long worker ``worker`` waits after the window opens before its first call."""
        return self.stagger * worker / workers


def _limiter_pair(rate: float) -> list[tuple[str, Callable[[], BaseRateLimiter]]]:
    return [
        ("langscale", lambda: langscale.RateLimiter(requests_per_second=rate)),
        ("langchain", lambda: InMemoryRateLimiter(requests_per_second=rate)),
    ]


def _threads_rate(rate: float, stagger: float, settings: Settings) -> list[Row]:
    duration = settings.pick(5.0, 1.0)
    achieved = {
        side: _summarise(_run_threads(make(), Window(duration, stagger)), rate)
        for side, make in _limiter_pair(rate)
    }
    return [_rate_row(f"{THREADS} threads, acquire()", rate, stagger, achieved)]


def _run_threads(limiter: BaseRateLimiter, window: Window) -> Window:
    # The last thread to reach the barrier opens the window, so no thread starts early.
    barrier = threading.Barrier(THREADS, action=window.open)
    lanes = [window.lane() for _ in range(THREADS)]
    threads = [
        threading.Thread(
            target=_thread_worker, args=(limiter, window, barrier, lane, window.delay(i, THREADS))
        )
        for i, lane in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return window


def _thread_worker(
    limiter: BaseRateLimiter,
    window: Window,
    barrier: threading.Barrier,
    stamps: list[float],
    delay: float,
) -> None:
    barrier.wait()
    time.sleep(delay)
    while True:
        limiter.acquire(blocking=True)
        now = time.perf_counter()
        if now >= window.deadline:
            return
        stamps.append(now)


def _tasks_rate(rate: float, stagger: float, settings: Settings) -> list[Row]:
    duration = settings.pick(5.0, 1.0)
    achieved = {
        side: _summarise(asyncio.run(_run_tasks(make(), Window(duration, stagger))), rate)
        for side, make in _limiter_pair(rate)
    }
    return [_rate_row(f"{TASKS} asyncio tasks, await aacquire()", rate, stagger, achieved)]


async def _run_tasks(limiter: BaseRateLimiter, window: Window) -> Window:
    go = asyncio.Event()
    tasks = [
        asyncio.create_task(_task_worker(limiter, window, go, window.delay(i, TASKS)))
        for i in range(TASKS)
    ]
    await asyncio.sleep(0)  # let every task reach go.wait()
    window.open()
    go.set()
    await asyncio.sleep(window.duration)
    # Admissions after the deadline are not counted, so waiters still queued can go.
    _, pending = await asyncio.wait(tasks, timeout=0.2)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return window


async def _task_worker(
    limiter: BaseRateLimiter, window: Window, go: asyncio.Event, delay: float
) -> None:
    stamps = window.lane()
    await go.wait()
    await asyncio.sleep(delay)
    while True:
        await limiter.aacquire()
        now = time.perf_counter()
        if now >= window.deadline:
            return
        stamps.append(now)


@dataclass(frozen=True)
class Achieved:
    """Admissions inside the window: over all of it, and over its second half only."""

    admitted: int
    rate: float
    steady_rate: float
    configured: float

    @property
    def percent(self) -> float:
        return 100.0 * self.rate / self.configured


def _summarise(window: Window, configured: float) -> Achieved:
    stamps = [t for lane in window.stamps for t in lane]
    half = window.start + window.duration / 2
    second_half = sum(1 for t in stamps if t >= half)
    return Achieved(
        admitted=len(stamps),
        rate=len(stamps) / window.duration,
        steady_rate=second_half / (window.duration / 2),
        configured=configured,
    )


def _rate_row(name: str, configured: float, stagger: float, achieved: dict[str, Achieved]) -> Row:
    ours, theirs = achieved["langscale"], achieved["langchain"]
    start = f"starts spread over {stagger * 1000:g} ms" if stagger else "all start together"
    return Row(
        group=f"limiter: achieved rate, {start}",
        name=f"{name} @ {configured:g}/s",
        unit="req/s",
        langscale=ours.rate,
        langchain=theirs.rate,
        target=f"within {RATE_TOLERANCE:.0%} of configured",
        met=abs(ours.rate - configured) <= RATE_TOLERANCE * configured,
        extra={
            "configured": configured,
            "langscale_percent": ours.percent,
            "langchain_percent": theirs.percent,
            "langscale_admitted": ours.admitted,
            "langchain_admitted": theirs.admitted,
            "langscale_steady_rate": ours.steady_rate,
            "langchain_steady_rate": theirs.steady_rate,
        },
    )


# --- fairness between tenants -------------------------------------------------------------

FAIR_RATE = 100.0  # the shared provider limit, requests per second
LIGHT_RATE = 5.0  # the light tenant's requests per second
HEAVY_FACTOR = 20  # the heavy tenant sends 20x that: together they ask more than the limit
CALL_SECONDS = 0.05  # what each admitted call then takes
FAIR_TARGET = 1.5


async def _tenant_traffic(
    acquire: Callable[[str], object], seconds: float, heavy: bool
) -> list[float]:
    """Open-loop arrivals for `seconds`: the light tenant's latencies (wait + call), in ms."""
    light_ms: list[float] = []
    tasks: list[asyncio.Task] = []

    async def one(tenant: str) -> None:
        started = time.perf_counter()
        await acquire(tenant)  # type: ignore[misc]
        await asyncio.sleep(CALL_SECONDS)
        if tenant == "light":
            light_ms.append((time.perf_counter() - started) * 1e3)

    async def arrivals(tenant: str, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while loop.time() - start < seconds:
            tasks.append(asyncio.create_task(one(tenant)))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))

    senders = [arrivals("light", LIGHT_RATE)]
    if heavy:
        senders.append(arrivals("heavy", LIGHT_RATE * HEAVY_FACTOR))
    await asyncio.gather(*senders)
    for t in tasks:
        t.cancel()  # the heavy backlog left over is not measured
    await asyncio.gather(*tasks, return_exceptions=True)
    return light_ms


def _fair_p95(side: str, seconds: float, heavy: bool) -> float:
    if side == "langchain":
        lc = InMemoryRateLimiter(
            requests_per_second=FAIR_RATE, check_every_n_seconds=0.01, max_bucket_size=1
        )

        async def acquire(tenant: str) -> None:
            await lc.aacquire()
    else:
        ls = langscale.RateLimiter(requests_per_second=FAIR_RATE, burst=1)
        named = side == "fair"

        async def acquire(tenant: str) -> None:
            await ls.aacquire(tenant=tenant if named else None, timeout=60)

    latencies = asyncio.run(_tenant_traffic(acquire, seconds, heavy))
    return _quantile_ms(latencies, 0.95)


def _quantile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _fairness(settings: Settings) -> list[Row]:
    seconds = settings.pick(6.0, 2.0)
    alone = _fair_p95("fair", seconds, heavy=False)
    fair = _fair_p95("fair", seconds, heavy=True)
    fifo = _fair_p95("fifo", seconds, heavy=True)
    langchain = _fair_p95("langchain", seconds, heavy=True)
    group = (
        f"limiter: light tenant p95 latency (ms), {LIGHT_RATE:g}/s beside a tenant sending "
        f"{HEAVY_FACTOR}x that into one {FAIR_RATE:g}/s limit, calls {CALL_SECONDS * 1e3:g} ms"
    )
    detail = {"alone_ms": alone, "fair_ms": fair, "fifo_ms": fifo, "langchain_ms": langchain}
    return [
        Row(
            group,
            "with tenants vs alone (langscale both)",
            "ms",
            fair,
            alone,
            target=f"within {FAIR_TARGET:g}x of alone",
            met=fair <= FAIR_TARGET * alone,
            extra=detail,
        ),
        Row(group, "with tenants vs no tenants named (one FIFO queue)", "ms", fair, fifo),
        Row(group, "langscale with tenants vs InMemoryRateLimiter", "ms", fair, langchain),
    ]


# --- fair shares across processes through Redis ------------------------------------------

SHARED_LIGHT = 15.0  # within the light tenant's half share (20/s)
SHARED_HEAVY_PROCESSES = 3  # each with one asking waiter, as the light process has
SHARED_GROUP = (
    f"limiter over Redis: light tenant p95 latency (ms), {SHARED_LIGHT:g}/s in one process "
    f"beside a tenant sending {HEAVY_FACTOR}x that from {SHARED_HEAVY_PROCESSES} others into "
    f"one {SHARED_RATE:g}/s limit, calls {CALL_SECONDS * 1e3:g} ms"
)


def _shared_run(url: str, seconds: float, named: bool, heavy: bool) -> dict[str, float]:
    plan = [("light", SHARED_LIGHT, 4)]
    if heavy:
        plan += [("heavy", SHARED_LIGHT * HEAVY_FACTOR / SHARED_HEAVY_PROCESSES, 8)] * (
            SHARED_HEAVY_PROCESSES
        )
    prefix = f"f{uuid.uuid4().hex[:8]}"
    results = run_together(
        open_loop,
        [
            (url, prefix, seconds, tenant, named, rate, threads, CALL_SECONDS)
            for tenant, rate, threads in plan
        ],
    )
    light = next(r for r in results if r.tenant == "light")
    # latency: wait + call, of the calls done before the end
    light_ms = [(done - asked) * 1e3 for asked, _, done in light.records if done < light.end]
    heavy = sum(len(r.records) for r in results if r.tenant == "heavy")
    return {
        "light_p95_ms": _quantile_ms(light_ms, 0.95),
        "light_share_of_offered": len(light.records) / (SHARED_LIGHT * seconds),
        "light_per_s": len(light.records) / seconds,
        "heavy_per_s": heavy / seconds,
        "local_admissions": sum(r.local for r in results),
    }


def _shared_fairness(url: str, settings: Settings) -> list[Row]:
    seconds = settings.pick(8.0, 2.0)
    alone = _shared_run(url, seconds, named=True, heavy=False)
    fair = _shared_run(url, seconds, named=True, heavy=True)
    fifo = _shared_run(url, seconds, named=False, heavy=True)
    detail = {
        "alone": alone,
        "fair": fair,
        "fifo": fifo,
        "light_fair_share_per_s": SHARED_RATE / 2,
    }
    return [
        Row(
            SHARED_GROUP,
            "with tenants vs alone (langscale both)",
            "ms",
            fair["light_p95_ms"],
            alone["light_p95_ms"],
            target=f"within {FAIR_TARGET:g}x of alone",
            met=fair["light_p95_ms"] <= FAIR_TARGET * alone["light_p95_ms"],
            extra=detail,
        ),
        Row(
            SHARED_GROUP,
            "with tenants vs no tenants named (first come, first served)",
            "ms",
            fair["light_p95_ms"],
            fifo["light_p95_ms"],
        ),
        Row(
            SHARED_GROUP,
            "light tenant admitted / offered, tenants vs first come, first served",
            "share",
            fair["light_share_of_offered"],
            fifo["light_share_of_offered"],
            target="at least 0.95 (it asks within its share)",
            met=fair["light_share_of_offered"] >= 0.95,
        ),
    ]


# --- fair concurrency slots across processes through Redis ---------------------------------

SLOTS_CAP = SHARED_SLOTS  # one concurrency cap held in Redis for every process
SLOTS_HEAVY = (7, 7, 6)  # the heavy tenant's closed-loop callers in each of its processes
SLOTS_THINK = 0.02  # the light caller's pause between calls
SLOTS_GROUP = (
    f"limiter over Redis: light tenant p95 latency (ms), one caller in one process beside "
    f"{sum(SLOTS_HEAVY)} callers of another tenant in {len(SLOTS_HEAVY)} others, one cap of "
    f"{SLOTS_CAP} slots, calls {CALL_SECONDS * 1e3:g} ms"
)


def _slot_run(url: str, seconds: float, named: bool, heavy: bool) -> dict[str, float]:
    plan = [("light", 1, SLOTS_THINK)]
    if heavy:
        plan += [("heavy", n, 0.0) for n in SLOTS_HEAVY]
    prefix = f"s{uuid.uuid4().hex[:8]}"
    results = run_together(
        closed_loop,
        [
            (url, prefix, seconds, tenant, named, n, think, CALL_SECONDS)
            for tenant, n, think in plan
        ],
    )
    light = next(r.records for r in results if r.tenant == "light")
    heavy = sum(len(r.records) for r in results if r.tenant == "heavy")
    return {
        # latency: wait + call; wait: for a slot
        "light_p95_ms": _quantile_ms([(done - asked) * 1e3 for asked, _, done in light], 0.95),
        "light_p95_wait_ms": _quantile_ms([(a - asked) * 1e3 for asked, a, _ in light], 0.95),
        "light_calls_per_s": len(light) / seconds,
        "heavy_calls_per_s": heavy / seconds,
        "local_admissions": sum(r.local for r in results),
    }


def _slot_fairness(url: str, settings: Settings) -> list[Row]:
    seconds = settings.pick(8.0, 2.0)
    alone = _slot_run(url, seconds, named=True, heavy=False)
    fair = _slot_run(url, seconds, named=True, heavy=True)
    fifo = _slot_run(url, seconds, named=False, heavy=True)
    detail = {"alone": alone, "fair": fair, "fifo": fifo}
    return [
        Row(
            SLOTS_GROUP,
            "with tenants vs alone (langscale both)",
            "ms",
            fair["light_p95_ms"],
            alone["light_p95_ms"],
            target=f"within {FAIR_TARGET:g}x of alone",
            met=fair["light_p95_ms"] <= FAIR_TARGET * alone["light_p95_ms"],
            extra=detail,
        ),
        Row(
            SLOTS_GROUP,
            "with tenants vs no tenants named (first come, first served)",
            "ms",
            fair["light_p95_ms"],
            fifo["light_p95_ms"],
        ),
        Row(
            SLOTS_GROUP,
            "p95 wait for a slot (ms), with tenants vs first come, first served",
            "ms",
            fair["light_p95_wait_ms"],
            fifo["light_p95_wait_ms"],
        ),
    ]
