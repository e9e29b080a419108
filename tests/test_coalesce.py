"""Request coalescing through ScaledChatModel: identical requests in flight at once make one
provider call and all get its answer (or its exception); different prompts, parameters or
tenants never share one. Threads and asyncio; the core's single-flight is unit-tested in Rust
(cache/coalesce.rs)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.caches import InMemoryCache

import langscale
from tests.counting import CountingModel

N = 100


def slow(delay: float = 0.2, **kw: Any) -> CountingModel:
    """A provider whose calls take `delay` s each and answer with the call's number."""
    return CountingModel(delay=delay, numbered=True, **kw)


def scaled(inner: CountingModel, **kw: Any) -> langscale.ScaledChatModel:
    return langscale.ScaledChatModel([inner], cache=InMemoryCache(), **kw)


def test_100_threads_asking_the_same_make_one_call() -> None:
    # The call is held until every other caller waits for it: a thread arriving after the
    # answer would be served by LangChain's InMemoryCache (one shared object), not coalesced.
    inner = CountingModel(numbered=True)
    model = scaled(inner)
    flights = model._flights
    with ThreadPoolExecutor(N) as pool:
        asked = [pool.submit(model.invoke, "What is the capital of France?") for _ in range(N)]
        deadline = time.monotonic() + 60
        while flights.stats()["followed"] < N - 1:
            assert time.monotonic() < deadline, flights.stats()
            time.sleep(0.01)
        inner.gate.set()
        replies = [f.result(timeout=60) for f in asked]
    assert inner.calls == 1
    assert flights.stats()["led"] == 1
    assert {r.content for r in replies} == {"answer 1 to What is the capital of France?"}
    # Each caller gets its own message object, not one shared mutable reply.
    assert len({id(r) for r in replies}) == N


def test_100_coroutines_asking_the_same_make_one_call() -> None:
    inner = slow()
    model = scaled(inner)

    async def main() -> list[Any]:
        return await asyncio.gather(*(model.ainvoke("Capital of Peru?") for _ in range(N)))

    replies = asyncio.run(main())
    assert inner.calls == 1
    assert {r.content for r in replies} == {"answer 1 to Capital of Peru?"}
    assert len({id(r) for r in replies}) == N


def test_without_coalescing_every_caller_calls() -> None:
    """The baseline the test above beats: LangChain's cache alone lets all of them miss."""
    # Every call is held until all 20 are inside the provider (a caller arriving after the
    # first answer would be a cache hit, which this test is not about).
    inner = CountingModel(numbered=True)
    model = scaled(inner, coalesce=False)
    with ThreadPoolExecutor(20) as pool:
        asked = [pool.submit(model.invoke, "same question") for _ in range(20)]
        deadline = time.monotonic() + 60
        while inner.waiting < 20:
            assert time.monotonic() < deadline, f"{inner.waiting} of 20 callers reached it"
            time.sleep(0.01)
        inner.gate.set()
        for f in asked:
            f.result(timeout=60)
    assert inner.calls == 20


def test_a_failing_leader_fails_every_follower_and_nothing_is_cached() -> None:
    inner = slow(fail=True)
    model = scaled(inner, max_attempts=1)
    errors: list[BaseException] = []

    def ask(_: int) -> None:
        try:
            model.invoke("doomed")
        except Exception as exc:  # collected: each caller must see the failure
            errors.append(exc)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(ask, range(20)))
    assert inner.calls == 1
    assert len(errors) == 20
    assert all("provider failed (call 1)" in str(e) for e in errors)
    # Not cached: the next caller asks the provider again.
    inner.fail = False
    assert model.invoke("doomed").content == "answer 2 to doomed"


def test_a_failing_leader_fails_every_waiting_coroutine() -> None:
    inner = slow(fail=True)
    model = scaled(inner, max_attempts=1)

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(model.ainvoke("doomed") for _ in range(20)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert inner.calls == 1
    assert all(isinstance(r, Exception) and "call 1" in str(r) for r in results)


def test_different_tenants_never_share_a_call() -> None:
    inner = slow()
    model = scaled(inner)

    def ask(tenant: str) -> str:
        return str(model.invoke("same words", config={"configurable": {"tenant": tenant}}).content)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, ["acme", "globex"] * 10))
    assert inner.calls == 2
    assert len(set(answers[0::2])) == 1 and len(set(answers[1::2])) == 1
    assert answers[0] != answers[1]


def test_a_follower_that_waits_too_long_makes_its_own_call() -> None:
    inner = slow(delay=0.5)
    model = scaled(inner, coalesce_wait=0.05)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(model.invoke, "slow one")
        threading.Event().wait(0.1)
        second = pool.submit(model.invoke, "slow one")
        first.result(timeout=10), second.result(timeout=10)
    assert inner.calls == 2


def test_a_bad_wait_is_a_config_error() -> None:
    with pytest.raises(langscale.ConfigError, match="bound"):
        scaled(slow(), coalesce_wait=-1)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=24))
def test_calls_equal_distinct_prompts(prompts: list[str]) -> None:
    """Whatever the mix, one call per distinct prompt, and each caller its own prompt's answer."""
    inner = slow(delay=0.05)
    model = scaled(inner)
    with ThreadPoolExecutor(len(prompts)) as pool:
        replies = list(pool.map(model.invoke, prompts))
    assert inner.calls == len(set(prompts))
    for prompt, reply in zip(prompts, replies, strict=True):
        assert str(reply.content).endswith(f"to {prompt}")
