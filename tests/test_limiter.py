"""RateLimiter as a LangChain BaseRateLimiter and with its richer permit API."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.rate_limiters import BaseRateLimiter

import langscale
from langscale import ConfigError, LangscaleError, RateLimiter, RateLimitTimeout


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def await_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def test_is_a_langchain_rate_limiter():
    limiter = RateLimiter(requests_per_second=1000)
    assert isinstance(limiter, BaseRateLimiter)
    assert limiter.acquire() and limiter.acquire(blocking=True)


def test_limits_a_langchain_chat_model():
    limiter = RateLimiter(requests_per_second=1000)
    model = GenericFakeChatModel(messages=iter(["a", "b", "c"]), rate_limiter=limiter)
    assert [model.invoke("hi").content for _ in range(3)] == ["a", "b", "c"]
    assert limiter.stats()["acquired"] == 3


async def test_limits_a_langchain_chat_model_async():
    limiter = RateLimiter(requests_per_second=1000)
    model = GenericFakeChatModel(messages=iter(["a", "b"]), rate_limiter=limiter)
    assert (await model.ainvoke("hi")).content == "a"
    assert (await model.ainvoke("hi")).content == "b"
    assert limiter.stats()["acquired"] == 2


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"requests_per_second": 0}, "requests_per_second"),
        ({"requests_per_minute": -5}, "requests_per_minute"),
        ({"tokens_per_minute": "many"}, "'many'"),
        ({"requests_per_second": float("nan")}, "requests_per_second"),
        ({"requests_per_second": True}, "True"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "2.5"),
        ({"requests_per_second": 1, "burst": 0}, "burst"),
        ({"priority_aging": -1}, "priority_aging"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_value(kwargs, named):
    with pytest.raises(ConfigError, match=named) as info:
        RateLimiter(**kwargs)
    assert isinstance(info.value, LangscaleError)


def test_bad_calls_raise_config_error():
    limiter = RateLimiter(tokens_per_minute=1000)
    assert limiter.max_tokens == 1000
    with pytest.raises(ConfigError, match="1001 tokens can never be admitted"):
        limiter.acquire(tokens=1001)
    with pytest.raises(ConfigError, match="priority"):
        limiter.acquire(priority="urgent")
    with pytest.raises(ConfigError, match="tokens"):
        limiter.acquire(tokens=-1)
    with pytest.raises(ConfigError, match="timeout"):
        limiter.acquire(timeout="soon")


async def test_impossible_async_request_is_an_error_not_a_hang():
    limiter = RateLimiter(tokens_per_minute=100)
    with pytest.raises(ConfigError):
        await asyncio.wait_for(limiter.aacquire(tokens=101), timeout=5)


def test_non_blocking_acquire_returns_false_when_exhausted():
    limiter = RateLimiter(requests_per_minute=1, burst=1)
    assert limiter.acquire(blocking=False)
    assert limiter.acquire(blocking=False) is False


def test_timeout_raises_and_leaves_the_queue():
    limiter = RateLimiter(requests_per_minute=1, burst=1)
    limiter.acquire()
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(timeout=0.05)
    stats = limiter.stats()
    assert stats["timeouts"] == 1
    assert stats["waiting"] == 0


async def test_async_timeout_raises():
    limiter = RateLimiter(requests_per_minute=1, burst=1)
    await limiter.aacquire()
    with pytest.raises(RateLimitTimeout):
        await limiter.aacquire(timeout=0.05)
    assert limiter.stats()["waiting"] == 0


def test_permit_is_a_context_manager_that_frees_the_slot():
    limiter = RateLimiter(max_concurrency=1)
    with limiter.acquire() as permit:
        assert not permit.released
        assert limiter.stats()["in_flight"] == 1
        assert limiter.acquire(blocking=False) is False
    assert permit.released
    assert limiter.stats()["in_flight"] == 0
    assert limiter.acquire(blocking=False)


async def test_permit_is_an_async_context_manager():
    limiter = RateLimiter(max_concurrency=1)
    async with await limiter.aacquire(tokens=0, priority="high") as permit:
        assert permit.priority == "high"
        assert limiter.stats()["in_flight"] == 1
    assert limiter.stats()["in_flight"] == 0


def test_settle_refunds_an_overestimate_and_charges_an_underestimate():
    limiter = RateLimiter(tokens_per_minute=600, token_burst=1000)
    permit = limiter.acquire(tokens=900)
    assert limiter.acquire(tokens=500, blocking=False) is False
    permit.settle(300)
    assert permit.tokens == 300
    second = limiter.acquire(tokens=500, blocking=False)
    assert second
    second.settle(700)  # 200 more than estimated: the bucket is now in debt
    assert limiter.acquire(tokens=1, blocking=False) is False
    with pytest.raises(ConfigError, match="actual_tokens"):
        second.settle(-3)


def test_sync_wait_releases_the_gil_and_is_woken_by_a_release():
    limiter = RateLimiter(max_concurrency=1)
    held = limiter.acquire()
    got = []
    thread = threading.Thread(target=lambda: got.append(limiter.acquire(timeout=10)))
    thread.start()
    # If the waiting thread held the GIL this loop could not run and release the permit.
    wait_until(lambda: limiter.stats()["waiting"] == 1)
    held.release()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(got) == 1 and got[0]


def test_many_threads_share_one_limiter_without_exceeding_it():
    rate, threads, per_thread = 200.0, 8, 25
    limiter = RateLimiter(requests_per_second=rate, burst=1)
    start = time.perf_counter()

    def work():
        for _ in range(per_thread):
            limiter.acquire(timeout=30)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    elapsed = time.perf_counter() - start
    total = threads * per_thread
    assert limiter.stats()["acquired"] == total
    # never faster than the limit (the first request goes at once)
    assert elapsed >= (total - 1) / rate * 0.98


async def test_many_tasks_share_one_limiter_without_exceeding_it():
    rate, tasks = 500.0, 200
    limiter = RateLimiter(requests_per_second=rate, burst=1)
    start = time.perf_counter()
    permits = await asyncio.wait_for(
        asyncio.gather(*(limiter.aacquire() for _ in range(tasks))), timeout=60
    )
    elapsed = time.perf_counter() - start
    assert all(permits)
    assert limiter.stats()["acquired"] == tasks
    assert limiter.stats()["waiting"] == 0
    assert elapsed >= (tasks - 1) / rate * 0.98


async def test_waiters_are_served_in_priority_order():
    limiter = RateLimiter(max_concurrency=1)
    held = await limiter.aacquire()
    order: list[str] = []

    async def waiter(priority: str) -> None:
        async with await limiter.aacquire(priority=priority):
            order.append(priority)

    tasks = []
    for i, priority in enumerate(["batch", "standard", "high", "standard", "high"]):
        tasks.append(asyncio.create_task(waiter(priority)))
        await await_until(lambda n=i + 1: limiter.stats()["waiting"] == n)
    held.release()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert order == ["high", "high", "standard", "standard", "batch"]


async def test_cancelled_async_waiter_gives_its_place_back():
    limiter = RateLimiter(max_concurrency=1)
    held = await limiter.aacquire()
    task = asyncio.create_task(limiter.aacquire())
    await await_until(lambda: limiter.stats()["waiting"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await await_until(lambda: limiter.stats()["waiting"] == 0)
    held.release()
    permit = await asyncio.wait_for(limiter.aacquire(), timeout=5)
    assert permit
    assert limiter.stats()["in_flight"] == 1


def test_threads_and_event_loops_at_once():
    limiter = RateLimiter(requests_per_second=2000, max_concurrency=8)
    errors: list[BaseException] = []

    def sync_worker():
        try:
            for _ in range(50):
                with limiter.acquire(timeout=30):
                    pass
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def async_worker():
        async def go():
            async def one():
                async with await limiter.aacquire(timeout=30):
                    await asyncio.sleep(0)

            await asyncio.gather(*(one() for _ in range(50)))

        try:
            asyncio.run(go())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=sync_worker) for _ in range(4)]
    pool += [threading.Thread(target=async_worker) for _ in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert not errors
    assert limiter.stats()["acquired"] == 400
    assert limiter.stats()["in_flight"] == 0


def test_exported_names():
    assert issubclass(langscale.ConfigError, langscale.LangscaleError)
    assert issubclass(langscale.RateLimitTimeout, langscale.LangscaleError)


def test_huge_numbers_are_errors_or_no_deadline_never_a_panic():
    with pytest.raises(ConfigError, match="priority_aging is too large"):
        RateLimiter(requests_per_second=1, priority_aging=1e30)
    limiter = RateLimiter(requests_per_second=1000)
    assert limiter.acquire(timeout=1e19)


def test_settle_after_release_still_reconciles_tokens():
    limiter = RateLimiter(tokens_per_minute=600, token_burst=1000, max_concurrency=1)
    with limiter.acquire(tokens=900) as permit:
        pass  # usage figures usually arrive after the call
    assert permit.released and limiter.stats()["in_flight"] == 0
    permit.settle(100)
    assert limiter.acquire(tokens=800, blocking=False)
