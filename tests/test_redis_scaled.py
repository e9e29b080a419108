"""ScaledChatModel with breakers shared through Redis: a breaker one worker opens makes the
others skip that deployment."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.exceptions import ModelAPIError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

import langscale
from langscale import Deployment, ScaledChatModel
from tests.multiprocess import Start, run_together


class Model(BaseChatModel):
    label: str
    fail: bool = False
    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "fake-" + self.label

    @property
    def calls(self) -> int:
        return self._calls

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self._calls += 1
        if self.fail:
            raise ModelAPIError("500 upstream")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.label))])


def scaled(store: langscale.RedisStore, primary: Model, fallback: Model) -> ScaledChatModel:
    return ScaledChatModel(
        [Deployment(primary, name="primary"), Deployment(fallback, name="fallback")],
        max_attempts=1,
        breaker_min_requests=3,
        breaker_failure_rate=0.5,
        breaker_open_for=30,
        backoff_base=0.001,
        backoff_cap=0.002,
        store=store,
        shared_name="bk",
    )


def test_breaker_opened_by_one_model_is_skipped_by_another(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    failing, fallback_a = Model(label="primary", fail=True), Model(label="fallback")
    a = scaled(store, failing, fallback_a)
    healthy_view, fallback_b = Model(label="primary"), Model(label="fallback")
    b = scaled(store, healthy_view, fallback_b)
    for _ in range(5):
        assert a.invoke("hi").content == "fallback"
    assert a.stats()["deployments"][0]["breaker"] == "open"
    # within a couple of exchange rounds b holds the primary off too, without calling it
    deadline = time.monotonic() + 3
    while b.stats()["deployments"][0]["cooldown_remaining"] is None:
        assert time.monotonic() < deadline, "b never heard of the open breaker"
        time.sleep(0.05)
    for _ in range(5):
        assert b.invoke("hi").content == "fallback"
    assert healthy_view.calls == 0
    assert b._shared_breakers.counts()[1] >= 1


def test_redis_down_keeps_breakers_local(killable_redis, redis_prefix):
    store = langscale.RedisStore(killable_redis.url, prefix=redis_prefix, timeout=0.05)
    killable_redis.kill()
    primary, fallback = Model(label="primary", fail=True), Model(label="fallback")
    model = scaled(store, primary, fallback)
    for _ in range(5):
        assert model.invoke("hi").content == "fallback"
    assert model.stats()["deployments"][0]["breaker"] == "open"


def _open_breaker(_start: Start, url, prefix):
    store = langscale.RedisStore(url, prefix=prefix)
    model = scaled(store, Model(label="primary", fail=True), Model(label="fallback"))
    for _ in range(5):
        model.invoke("hi")
    time.sleep(0.6)  # at least two exchange rounds, so the opening is published


def test_breaker_opened_in_one_process_is_seen_in_another(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    primary, fallback = Model(label="primary"), Model(label="fallback")
    model = scaled(store, primary, fallback)
    run_together(_open_breaker, [(redis_server.url, redis_prefix)], timeout=60)
    time.sleep(0.5)
    assert model.invoke("hi").content == "fallback"
    assert primary.calls == 0


def test_a_redis_backed_limiter_works_on_native_endpoints(redis_server, redis_prefix):
    from tests.test_endpoint import FakeProvider

    provider = FakeProvider()
    try:
        store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
        # One request at a time between every process naming this limit.
        shared = langscale.RateLimiter(max_concurrency=1, store=store, name="native")
        wide = langscale.RateLimiter(max_concurrency=1, store=store, name="model")
        for native in (True, False):
            model = ScaledChatModel(
                [Deployment(langscale.ChatEndpoint(provider.url, "fake-1"), limiter=shared)],
                limits=wide,
                native=native,
            )
            assert (model._native is not None) == native
            before = shared.stats()["acquired"]
            assert model.invoke("hi").content == "echo: hi"
            assert shared.stats()["acquired"] == before + 1
            assert wide.stats()["acquired"] >= 1
    finally:
        provider.close()
