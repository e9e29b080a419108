"""``ScaledChatModel`` over ``ChatEndpoint``s: the executor loop runs in Rust. Failover,
cool-downs, breakers, Retry-After, timeouts, streaming, limits, the cache layer, and the
same answers as the Python path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core import exceptions as lc
from langchain_core.messages import HumanMessage

import langscale
from langscale import ChatEndpoint, ScaledChatModel
from tests.test_endpoint import FakeProvider, Reply, Weather, answer


def failing(status: int, headers: dict[str, str] | None = None) -> FakeProvider:
    return FakeProvider(lambda _: (status, headers or {}, {"error": {"message": f"{status}"}}))


@pytest.fixture
def healthy() -> Iterator[FakeProvider]:
    p = FakeProvider()
    yield p
    p.close()


@pytest.fixture
def limited() -> Iterator[FakeProvider]:
    p = failing(429, {"retry-after": "30"})
    yield p
    p.close()


@pytest.fixture
def broken() -> Iterator[FakeProvider]:
    p = failing(500)
    yield p
    p.close()


def endpoint(p: FakeProvider, **kw: Any) -> ChatEndpoint:
    return ChatEndpoint(p.url, "fake-1", **kw)


FAST = {"backoff_base": 0.001, "backoff_cap": 0.005, "seed": 1}


def test_all_endpoints_run_natively_and_others_do_not(healthy):
    assert ScaledChatModel([endpoint(healthy)])._native is not None
    assert ScaledChatModel([endpoint(healthy)], native=False)._native is None
    with_limiter = endpoint(healthy, rate_limiter=langscale.RateLimiter(requests_per_second=9))
    assert ScaledChatModel([with_limiter])._native is None


def test_failover_on_429_and_500_with_cool_down(limited, broken, healthy):
    model = ScaledChatModel(
        [endpoint(limited), endpoint(broken), endpoint(healthy)], max_attempts=2, **FAST
    )
    assert model.invoke("hi").content == "echo: hi"
    assert model.invoke("again").content == "echo: again"
    # The 429 said 30 s: the second request did not go back to it.
    assert len(limited.bodies) == 1
    assert len(broken.bodies) == 4
    stats = {d["name"]: d for d in model.stats()["deployments"]}
    first, second, third = model.stats()["deployments"]
    assert first["errors"]["rate_limited"] == 1 and first["cooldown_remaining"] > 20
    assert second["errors"]["server"] == 4 and second["retries"] == 2
    assert third["successes"] == 2 and third["input_tokens"] == 24
    assert len(stats) == 3


async def test_async_failover_and_fatal_errors_re_raise_the_provider_error(broken, healthy):
    model = ScaledChatModel([endpoint(broken), endpoint(healthy)], max_attempts=1, **FAST)
    assert (await model.ainvoke("x")).content == "echo: x"
    auth = failing(401)
    try:
        fatal = ScaledChatModel([endpoint(auth), endpoint(healthy)], **FAST)
        with pytest.raises(lc.ModelAuthenticationError):
            await fatal.ainvoke("x")
        with pytest.raises(lc.ModelAuthenticationError):
            fatal.invoke("x")
        assert len(auth.bodies) == 2
    finally:
        auth.close()


def test_the_breaker_opens_and_the_error_says_so(broken):
    model = ScaledChatModel(
        [endpoint(broken)],
        max_attempts=1,
        breaker_min_requests=3,
        breaker_failure_rate=0.5,
        breaker_open_for=30,
        **FAST,
    )
    for _ in range(3):
        with pytest.raises(lc.ModelAPIError):
            model.invoke("x")
    with pytest.raises(langscale.ScaledModelError, match="open circuit breaker"):
        model.invoke("x")
    assert len(broken.bodies) == 3
    assert model.stats()["deployments"][0]["breaker"] == "open"


def test_retry_after_is_honoured_before_trying_again():
    calls: list[float] = []

    def script(body: dict[str, Any]) -> Reply:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, {"retry-after": "0.4"}, {"error": {"message": "later"}}
        return answer(body)

    p = FakeProvider(script)
    try:
        model = ScaledChatModel([endpoint(p)], **FAST)
        assert model.invoke("hi").content == "echo: hi"
        assert len(calls) == 2
        assert calls[1] - calls[0] >= 0.38
    finally:
        p.close()


def test_attempt_timeout_moves_to_the_next_deployment(healthy):
    def slow(body: dict[str, Any]) -> Reply:
        time.sleep(5)
        return answer(body)

    p = FakeProvider(slow)
    try:
        model = ScaledChatModel(
            [endpoint(p), endpoint(healthy)], attempt_timeout=0.2, max_attempts=1, **FAST
        )
        started = time.monotonic()
        assert model.invoke("t").content == "echo: t"
        assert time.monotonic() - started < 4
        assert model.stats()["deployments"][0]["errors"]["timeout"] == 1
    finally:
        p.close()


async def test_streams_fail_over_before_the_first_chunk(broken, healthy):
    model = ScaledChatModel([endpoint(broken), endpoint(healthy)], max_attempts=1, **FAST)
    text = "".join(str(c.content) for c in model.stream("stream me"))
    assert text == "echo: stream me"
    text = "".join([str(c.content) async for c in model.astream("again")])
    assert text == "echo: again"
    assert model.stats()["deployments"][1]["successes"] == 2


def test_same_answers_as_the_python_path(healthy):
    native = ScaledChatModel([endpoint(healthy)])
    python = ScaledChatModel([endpoint(healthy)], native=False)
    assert native._native is not None and python._native is None
    for build in (lambda m: m, lambda m: m.bind_tools([Weather], tool_choice="Weather")):
        a = build(native).invoke([HumanMessage("Paris?")])
        b = build(python).invoke([HumanMessage("Paris?")])
        assert (a.content, a.tool_calls, a.usage_metadata) == (
            b.content,
            b.tool_calls,
            b.usage_metadata,
        )
        assert a.response_metadata["finish_reason"] == b.response_metadata["finish_reason"]
    assert native.with_structured_output(Weather).invoke("x") == Weather(city="Paris")
    first, second = healthy.bodies[0], healthy.bodies[1]
    assert first == second


def test_limits_are_acquired_in_rust(healthy):
    shared = langscale.RateLimiter(requests_per_second=1000, max_concurrency=4)
    own = langscale.RateLimiter(requests_per_second=1000)
    model = ScaledChatModel([langscale.Deployment(endpoint(healthy), limiter=own)], limits=shared)
    assert model._native is not None
    for i in range(5):
        model.invoke(f"{i}")
    assert shared.stats()["acquired"] == 5
    assert own.stats()["acquired"] == 5
    assert shared.stats()["in_flight"] == 0


def test_the_cache_layer_still_answers(healthy):
    model = ScaledChatModel([endpoint(healthy)], cache=langscale.ExactCache())
    assert model.invoke("same").content == "echo: same"
    assert model.invoke("same").content == "echo: same"
    assert len(healthy.bodies) == 1


async def test_many_coroutines_through_the_native_loop(healthy):
    model = ScaledChatModel([endpoint(healthy), endpoint(healthy)], strategy="round_robin")
    replies = await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(200)))
    assert [r.content for r in replies] == [f"echo: q{i}" for i in range(200)]
    assert model.stats()["successes"] == 200


def test_many_threads_through_the_native_loop_and_no_key_in_stats(healthy, broken):
    from concurrent.futures import ThreadPoolExecutor

    model = ScaledChatModel(
        [endpoint(broken, api_key="sk-hidden-9"), endpoint(healthy, api_key="sk-hidden-9")],
        max_attempts=1,
        breaker_min_requests=1000,
        **FAST,
    )
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: model.invoke(f"t{i}").content, range(120)))
    assert replies == [f"echo: t{i}" for i in range(120)]
    stats = model.stats()
    assert stats["successes"] == 120 and stats["active"] == 0
    assert "sk-hidden-9" not in repr(stats) + repr(model)
