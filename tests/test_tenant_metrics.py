"""Per-tenant metrics of ScaledChatModel: requests, outcomes, latency, tokens, spend,
throttled/queued/rejected per tenant in ``metrics.snapshot()`` and Prometheus, the top N
tenants plus "other" (labels bounded), joined with the budgets' spend, cache savings and
budget remaining."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.exceptions import ModelAuthenticationError, ModelRateLimitError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

import langscale
from langscale import (
    BudgetExceeded,
    Budgets,
    ConfigError,
    Deployment,
    ExactCache,
    RateLimiter,
    ScaledChatModel,
    metrics,
)


class Usage(BaseChatModel):
    """Answers with 100 tokens in and 50 out (streams: five chunks, the usage last), after
    raising the queued failures; ``entered``/``gate`` hold a call in flight."""

    _failures: list[BaseException] = PrivateAttr(default_factory=list)
    _entered: threading.Event = PrivateAttr(default_factory=threading.Event)
    _gate: threading.Event | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "usage"

    def queue(self, *failures: BaseException) -> Usage:
        self._failures.extend(failures)
        return self

    def _enter(self) -> None:
        self._entered.set()
        if self._gate is not None:
            self._gate.wait(10)
        if self._failures:
            raise self._failures.pop(0)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self._enter()
        usage = {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}
        msg = AIMessage(content="answer", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(0)
        return self._generate(messages, stop, **kw)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self._enter()
        for _ in range(4):
            yield ChatGenerationChunk(message=AIMessageChunk(content="abcd"))
        usage = {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))


# $2 per 1k tokens in, $4 per 1k out: a call of 100 in + 50 out costs $0.40.
COST = 0.4


def priced(model: BaseChatModel | None = None, **kw: Any) -> Deployment:
    return Deployment(model or Usage(), price_in=2.0, price_out=4.0, **kw)


def scaled(*deps: Any, **kw: Any) -> ScaledChatModel:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_cap", 0.002)
    return ScaledChatModel(list(deps) or [priced()], **kw)


def tenants(model: ScaledChatModel) -> dict[str, dict[str, Any]]:
    name = metrics.register(model)
    return metrics.snapshot()["models"][name]["tenants"]


def config(tenant: str) -> dict[str, Any]:
    return {"configurable": {"tenant": tenant}}


def test_sync_async_and_stream_calls_are_counted_per_tenant():
    model = scaled()
    for _ in range(3):
        model.invoke("hi", config=config("acme"))
    with langscale.tenant("beta"):
        asyncio.run(model.ainvoke("hi"))
        asyncio.run(model.ainvoke("hi"))
    assert "".join(c.content for c in model.stream("hi", config=config("gamma"))) == "abcd" * 4

    async def astream() -> str:
        with langscale.tenant("acme", user="u1"):
            return "".join([c.content async for c in model.astream("hi")])

    assert asyncio.run(astream()) == "abcd" * 4
    model.invoke("no tenant")

    rows = tenants(model)
    assert list(rows) == ["acme", "beta", "gamma", "other"]
    acme, beta, gamma, other = (rows[t] for t in rows)
    assert (acme["requests"], acme["successes"], acme["errors"]) == (4, 4, 0)
    assert (beta["requests"], beta["successes"]) == (2, 2)
    assert (gamma["requests"], gamma["successes"]) == (1, 1)
    assert other["requests"] == 0, "a call without a tenant is no tenant's"
    # A stream's usage arrives with its last chunk and still reaches its tenant's row.
    assert (gamma["input_tokens"], gamma["output_tokens"]) == (100, 50)
    assert (acme["input_tokens"], acme["output_tokens"]) == (400, 200)
    assert acme["spend"] == pytest.approx(4 * COST)
    assert acme["cost_per_success"] == pytest.approx(COST)
    assert gamma["spend"] == pytest.approx(COST)
    for row in (acme, beta, gamma):
        assert row["latency_count"] == row["successes"]
        assert 0 < row["latency_p50"] <= row["latency_p95"] <= row["latency_p99"]
        assert (row["throttled"], row["queued"], row["rejected"]) == (0, 0, 0)
        # No budgets: nothing to say about savings or what is left.
        assert row["cache_hits"] is None and row["budget_remaining"] is None
    assert model.stats()["tenants"]["acme"]["requests"] == 4


def test_throttled_failed_and_rejected_requests_per_tenant():
    limited = Usage().queue(ModelRateLimitError("429"))
    model = scaled(priced(limited), priced())
    model.invoke("hi", config=config("acme"))  # 429 on the first, answered by the second

    broken = scaled(priced(Usage().queue(ModelAuthenticationError("401"))))
    with pytest.raises(ModelAuthenticationError), langscale.tenant("acme"):
        broken.invoke("hi")

    budgets = Budgets({"tenant_default": {"budgets": [{"usd": 0.1, "window": "day"}]}})
    poor = scaled(budgets=budgets)
    with pytest.raises(BudgetExceeded):
        poor.invoke("hi", config=config("acme"))

    acme = tenants(model)["acme"]
    assert (acme["requests"], acme["successes"], acme["throttled"]) == (1, 1, 1)
    acme = tenants(broken)["acme"]
    assert (acme["requests"], acme["errors"], acme["latency_count"]) == (1, 1, 0)
    acme = tenants(poor)["acme"]
    assert (acme["requests"], acme["errors"], acme["rejected"]) == (1, 1, 1)
    assert acme["spend"] == 0.0
    assert acme["budget_remaining"] == {"usd per day (rolling)": pytest.approx(0.1)}


def test_a_request_waiting_for_a_held_permit_is_counted_as_queued():
    slow = Usage()
    slow._gate = threading.Event()
    limits = RateLimiter(max_concurrency=1)
    model = scaled(priced(slow), limits=limits)
    first = threading.Thread(target=model.invoke, args=("one",), kwargs={"config": config("a")})
    first.start()
    assert slow._entered.wait(10)
    second = threading.Thread(target=model.invoke, args=("two",), kwargs={"config": config("b")})
    second.start()
    # Released only once the second request waits for the slot the first holds.
    for _ in range(1000):
        if limits.stats()["waiting"] >= 1:
            break
        time.sleep(0.01)
    slow._gate.set()
    first.join(10)
    second.join(10)
    rows = tenants(model)
    assert (rows["a"]["queued"], rows["b"]["queued"]) == (0, 1)
    assert rows["a"]["successes"] == rows["b"]["successes"] == 1


def test_more_tenants_than_top_n_fold_into_other_and_labels_stay_bounded():
    model = scaled(top_tenants=3)
    name = metrics.register(model, name="bounded")
    calls = {"t0": 6, "t1": 5, "t2": 4} | {f"once{i}": 1 for i in range(40)}
    for tenant, n in calls.items():
        for _ in range(n):
            model.invoke("hi", config=config(tenant))
    rows = metrics.snapshot()["models"][name]["tenants"]
    assert list(rows) == ["t0", "t1", "t2", "other"]
    assert [rows[t]["requests"] for t in ("t0", "t1", "t2")] == [6, 5, 4]
    assert rows["other"]["requests"] == 40
    assert sum(r["requests"] for r in rows.values()) == sum(calls.values())
    assert sum(r["successes"] for r in rows.values()) == sum(calls.values())

    text = metrics.prometheus()
    labels = set(re.findall(r'^langscale_tenant_\w+\{model="bounded",tenant="([^"]*)"', text, re.M))
    assert labels == {"t0", "t1", "t2", "other"}
    assert f'langscale_tenant_requests_total{{model="{name}",tenant="other"}} 40' in text
    assert 'langscale_tenant_latency_seconds{model="bounded",tenant="t0",quantile="0.95"}' in text

    model._router.set_top_tenants(1)
    rows = tenants(model)
    assert list(rows) == ["t0", "other"]
    assert rows["other"]["requests"] == sum(calls.values()) - 6


def test_a_tenant_named_other_shares_the_other_row():
    model = scaled(top_tenants=5)
    model.invoke("hi", config=config("other"))
    model.invoke("hi", config=config("acme"))
    rows = tenants(model)
    assert list(rows) == ["acme", "other"]
    assert rows["other"]["requests"] == 1


def test_spend_cache_savings_and_budget_remaining_come_from_the_budgets():
    budgets = Budgets({"tenant_default": {"budgets": [{"usd": 10, "window": "day"}]}})
    model = scaled(budgets=budgets, cache=ExactCache(), top_tenants=1)
    model.invoke("same question", config=config("acme"))
    model.invoke("same question", config=config("acme"))  # answered from the cache
    asyncio.run(model.ainvoke("same question", config=config("acme")))  # and again
    assert "".join(c.content for c in model.stream("streamed", config=config("acme")))
    assert "".join(c.content for c in model.stream("streamed", config=config("acme")))
    model.invoke("hi", config=config("beta"))  # outside the top 1: in "other"

    report = budgets.report()["levels"]
    assert report["tenant:acme"]["cache_hits"] == 3
    assert report["tenant:acme"]["saved_usd"] == pytest.approx(3 * COST)
    assert report["tenant:acme"]["saved_tokens"] == 3 * 150

    name = metrics.register(model, name="budgeted")
    rows = metrics.snapshot()["models"][name]["tenants"]
    acme, other = rows["acme"], rows["other"]
    assert list(rows) == ["acme", "other"]
    assert (acme["requests"], acme["successes"]) == (2, 2), "cache hits are not routed"
    assert acme["spend"] == pytest.approx(report["tenant:acme"]["usd"])
    assert acme["spend"] == pytest.approx(2 * COST)
    assert acme["cost_per_success"] == pytest.approx(COST)
    assert (acme["cache_hits"], acme["saved_tokens"]) == (3, 450)
    assert acme["saved_usd"] == pytest.approx(3 * COST)
    assert acme["budget_remaining"] == {"usd per day (rolling)": pytest.approx(10 - 2 * COST)}
    assert other["spend"] == pytest.approx(COST)
    assert other["budget_remaining"] is None

    text = metrics.prometheus()
    assert 'langscale_tenant_cache_hits_total{model="budgeted",tenant="acme"} 3' in text
    remaining = re.search(
        r'^langscale_tenant_budget_remaining\{model="budgeted",tenant="acme",'
        r'budget="usd per day \(rolling\)"\} (\S+)$',
        text,
        re.M,
    )
    assert remaining is not None and float(remaining.group(1)) == pytest.approx(10 - 2 * COST)


def test_the_native_loop_fills_the_same_rows():
    from tests.test_endpoint import FakeProvider

    provider = FakeProvider()
    try:
        endpoint = langscale.ChatEndpoint(provider.url, "fake-1")
        model = ScaledChatModel([endpoint], top_tenants=2)
        assert model._native is not None
        model.invoke("hi", config=config("acme"))
        with langscale.tenant("acme"):
            assert "".join(c.content for c in model.stream("hi")) == "echo: hi"
        acme = tenants(model)["acme"]
        assert (acme["requests"], acme["successes"]) == (2, 2)
        # 12 in + 4 out for the call; the stream's 16 arrive with its last event.
        assert acme["input_tokens"] + acme["output_tokens"] == 32
    finally:
        provider.close()


def test_top_tenants_off_reads_no_tenant():
    model = scaled(top_tenants=0)
    assert model._tenanted is False
    model.invoke("hi", config=config("acme"))
    assert list(tenants(model)) == ["other"]
    assert tenants(model)["other"]["requests"] == 0


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=1001),
        st.floats(),
        st.text(max_size=5),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    )
)
def test_bad_top_tenants_raise_config_error_naming_the_value(value):
    with pytest.raises(ConfigError) as err:
        ScaledChatModel([Usage()], top_tenants=value)
    assert "top_tenants" in str(err.value) and repr(value)[:60] in str(err.value)
    model = ScaledChatModel([Usage()])
    with pytest.raises(ConfigError) as err:
        model._router.set_top_tenants(value)
    assert repr(value)[:60] in str(err.value)
    assert model._router.top_tenants() == 20


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=1000))
def test_good_top_tenants_are_kept(value):
    model = ScaledChatModel([Usage()], top_tenants=value)
    assert model._router.top_tenants() == value
    assert model._tenanted is (value != 0)


def test_a_stream_cut_short_is_charged_to_the_tenant_its_config_names():
    budgets = Budgets({"tenant_default": {"budgets": [{"usd": 10, "window": "day"}]}})
    model = scaled(budgets=budgets)
    stream = model.stream("hi", config=config("acme"))
    assert next(stream).content == "abcd"
    stream.close()

    async def cut() -> None:
        stream = model.astream("hi", config=config("acme"))
        assert (await stream.__anext__()).content == "abcd"
        await stream.aclose()

    asyncio.run(cut())
    report = budgets.report()
    assert report["in_flight"] == 0
    assert report["levels"]["tenant:acme"]["requests"] == 2
    assert 0 < report["levels"]["tenant:acme"]["usd"] < 2 * COST
    acme = tenants(model)["acme"]
    assert (acme["requests"], acme["successes"]) == (2, 2)
    assert acme["spend"] == pytest.approx(report["levels"]["tenant:acme"]["usd"])


def test_many_threads_many_tenants_every_request_counted_once():
    model = scaled(top_tenants=5)
    name = metrics.register(model, name="threads")

    def work(i: int) -> None:
        for j in range(50):
            tenant = f"t{(i * 7 + j) % 12}" if j % 3 else f"heavy{i % 2}"
            model.invoke("hi", config=config(tenant))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rows = tenants(model)
    assert len(rows) <= 6 and list(rows)[-1] == "other"
    assert {"heavy0", "heavy1"} <= set(rows), "the two heaviest tenants have rows"
    assert sum(r["requests"] for r in rows.values()) == 8 * 50
    assert sum(r["successes"] for r in rows.values()) == 8 * 50
    text = metrics.prometheus()
    labels = set(
        re.findall(rf'^langscale_tenant_\w+\{{model="{name}",tenant="([^"]*)"', text, re.M)
    )
    assert labels == set(rows)


def test_a_budget_is_reported_near_before_it_is_hit():
    # $10 a day, near at 0.1 ($1): the first call (COST) leaves it below, more cross it.
    budgets = Budgets({"tenant_default": {"budgets": [{"usd": 10, "window": "day"}]}, "near": 0.1})
    model = scaled(budgets=budgets)
    name = metrics.register(model, name="nearly")
    model.invoke("first", config=config("acme"))

    def near() -> dict[str, bool]:
        return metrics.snapshot()["models"][name]["tenants"]["acme"]["budget_near"]

    assert near() == {"usd per day (rolling)": False}
    while budgets.report()["levels"]["tenant:acme"]["usd"] < 1.0:
        model.invoke("again", config=config("acme"))
    assert near() == {"usd per day (rolling)": True}
    assert budgets.report()["levels"]["tenant:acme"]["usd"] < 10.0, "not hit yet"
    flag = re.search(
        r'^langscale_tenant_budget_near\{model="nearly",tenant="acme",'
        r'budget="usd per day \(rolling\)"\} (\S+)$',
        metrics.prometheus(),
        re.M,
    )
    assert flag is not None and flag.group(1) == "1"
