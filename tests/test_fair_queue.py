"""Fair queuing between tenants on one limit: a tenant flooding the limiter cannot push
another's turn behind its backlog; priorities still hold inside a tenant. Checked by the
order of admissions (never by wall-clock time), on threads, on asyncio and through
ScaledChatModel's own limits."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import langscale

RATE = 200.0  # admissions per second: one every 5 ms, burst 1
HEAVY_BACKLOG = 20


class Book:
    """The order admissions happen in, shared by every waiter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.order: list[str] = []

    def admitted(self, who: str) -> int:
        with self.lock:
            self.order.append(who)
            return len(self.order)

    def count(self) -> int:
        with self.lock:
            return len(self.order)


def _waited_behind(book: Book, light: str) -> int:
    """How many heavy admissions came between the first heavy one and the light tenant's."""
    return book.order.index(light)


def _wait_for_waiters(limiter: langscale.RateLimiter, n: int) -> None:
    """Until `n` callers wait in the limiter's queue (a bounded wait: the test fails, never
    hangs)."""
    deadline = time.monotonic() + 30
    while limiter.stats()["waiting"] < n:
        assert time.monotonic() < deadline, f"only {limiter.stats()['waiting']} of {n} queued"
        time.sleep(0.001)


def _flood_then_ask(fair: bool) -> int:
    """One slot, held while a heavy backlog and then the light caller queue; released, every
    waiter goes in turn (each gives the slot back at once). The light caller's place."""
    limiter = langscale.RateLimiter(max_concurrency=1)
    book = Book()
    held = limiter.acquire()

    def one(who: str, tenant: str) -> None:
        with limiter.acquire(tenant=tenant if fair else None, timeout=30):
            book.admitted(who)

    heavy = [
        threading.Thread(target=one, args=(f"heavy{i}", "heavy")) for i in range(HEAVY_BACKLOG)
    ]
    for t in heavy:
        t.start()
    _wait_for_waiters(limiter, HEAVY_BACKLOG)
    light = threading.Thread(target=one, args=("light", "light"))
    light.start()
    _wait_for_waiters(limiter, HEAVY_BACKLOG + 1)
    held.release()
    for t in [*heavy, light]:
        t.join(timeout=30)
    assert len(book.order) == HEAVY_BACKLOG + 1, "every waiter was admitted"
    return _waited_behind(book, "light")


def test_a_light_tenant_does_not_wait_behind_a_heavy_backlog_threads() -> None:
    assert _flood_then_ask(fair=True) <= 1
    # The same flood without tenants is one FIFO queue: the light caller waits behind all.
    assert _flood_then_ask(fair=False) == HEAVY_BACKLOG


def test_a_light_tenant_does_not_wait_behind_a_heavy_backlog_asyncio() -> None:
    async def main() -> list[str]:
        # One admission every 40 ms (not RATE's 5 ms): heavy callers keep being admitted
        # while the light one is on its way into the queue, and on a loaded machine the event
        # loop can take 15 ms to get it there (a CI run saw three heavy ones go first).
        limiter = langscale.RateLimiter(requests_per_second=25.0, burst=1)
        await limiter.aacquire()
        order: list[str] = []

        async def one(who: str, tenant: str) -> None:
            with langscale.tenant(tenant):
                await limiter.aacquire(timeout=30)
            order.append(who)

        heavy = [asyncio.create_task(one(f"heavy{i}", "heavy")) for i in range(HEAVY_BACKLOG)]
        while limiter.stats()["waiting"] < HEAVY_BACKLOG and not order:
            await asyncio.sleep(0.001)
        await one("light", "light")
        await asyncio.gather(*heavy)
        return order

    order = asyncio.run(main())
    assert order.index("light") <= 2, order
    # (Each wait joins the queue on the runtime's threads, so heavy's own order is theirs.)
    assert sorted(order) == sorted(["light"] + [f"heavy{i}" for i in range(HEAVY_BACKLOG)])


class Quick(BaseChatModel):
    """Answers at once, counting its calls."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "quick"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._generate(messages)


@pytest.mark.parametrize("how", ["context", "config"])
def test_scaled_chat_model_queues_tenants_fairly(how: str) -> None:
    limits = langscale.RateLimiter(max_concurrency=1)
    order: list[str] = []
    lock = threading.Lock()

    class Recording(Quick):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            with lock:
                order.append(str(messages[-1].content))
            return super()._generate(messages)

    model = langscale.ScaledChatModel([Recording()], limits=limits)
    held = limits.acquire()

    def ask(tenant: str) -> None:
        if how == "context":
            with langscale.tenant(tenant):
                model.invoke(tenant)
        else:
            model.invoke(tenant, config={"configurable": {"tenant": tenant}})

    heavy = [threading.Thread(target=ask, args=("heavy",)) for _ in range(HEAVY_BACKLOG)]
    for t in heavy:
        t.start()
    _wait_for_waiters(limits, HEAVY_BACKLOG)
    light = threading.Thread(target=ask, args=("light",))
    light.start()
    _wait_for_waiters(limits, HEAVY_BACKLOG + 1)
    held.release()
    for t in [*heavy, light]:
        t.join(timeout=30)
    assert len(order) == HEAVY_BACKLOG + 1
    assert order.index("light") <= 1, order


def test_tenant_weights_are_checked() -> None:
    with pytest.raises(langscale.ConfigError, match="acme"):
        langscale.RateLimiter(requests_per_second=1, tenant_weights={"acme": 0})
    with pytest.raises(langscale.ConfigError, match="tenant_weights"):
        langscale.RateLimiter(requests_per_second=1, tenant_weights=[("acme", 1)])  # type: ignore[arg-type]
    limiter = langscale.RateLimiter(requests_per_second=1)
    with pytest.raises(langscale.ConfigError, match="weight"):
        limiter.set_tenant_weight("acme", float("inf"))
    with pytest.raises(langscale.ConfigError, match="tenant"):
        limiter.acquire(tenant=3)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=30),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0.1, 10.0), max_size=3),
)
def test_every_waiter_is_admitted_exactly_once(tenants: list[str | None], weights: dict) -> None:
    """Whatever the mix of tenants and weights, nobody is lost or admitted twice."""
    limiter = langscale.RateLimiter(requests_per_second=2_000, burst=1, tenant_weights=weights)
    limiter.acquire()
    admitted: list[int] = []
    lock = threading.Lock()

    def one(i: int, tenant: str | None) -> None:
        limiter.acquire(tenant=tenant, timeout=30)
        with lock:
            admitted.append(i)

    threads = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(tenants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(admitted) == list(range(len(tenants)))
    assert limiter.stats()["waiting"] == 0
