"""Tenants: identity from langscale.tenant(...) and RunnableConfig, budgets enforced by
reservation around ScaledChatModel calls, the error naming the budget, cache isolation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda

import langscale
from langscale import (
    BudgetExceeded,
    Budgets,
    ConfigError,
    Deployment,
    ExactCache,
    LangscaleError,
    ScaledChatModel,
    identity,
)


class Priced(BaseChatModel):
    """100 tokens in, 100 out (a call costs $1 at $5/1k); streams five chunks, usage last.
    ``gate``: wait for it inside the call; ``entered``: set on entering; ``on_call``: run."""

    calls: int = 0
    gate: Any = None
    entered: Any = None
    on_call: Any = None

    @property
    def _llm_type(self) -> str:
        return "priced"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        self.calls += 1
        if self.entered is not None:
            self.entered.set()
        if self.on_call is not None:
            self.on_call()
        if self.gate is not None:
            self.gate.wait(120)
        usage = {"input_tokens": 100, "output_tokens": 100, "total_tokens": 200}
        msg = AIMessage(content=f"answer {self.calls}", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        for _ in range(5):
            yield ChatGenerationChunk(message=AIMessageChunk(content="abcd"))
        usage = {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))


def call(llm: Any, max_tokens: int = 196) -> str:
    """One call of tenant acme: "ok", or "refused" by a budget. It reserves the prompt's
    estimate (4 tokens) + ``max_tokens`` out: at 196, $1 at $5/1k, what ``Priced`` uses."""
    with langscale.tenant("acme"):
        try:
            llm.invoke([HumanMessage("hi")], max_tokens=max_tokens)
            return "ok"
        except BudgetExceeded:
            return "refused"


def daily(usd: float, on_over: str = "raise") -> dict[str, Any]:
    return {"budgets": [{"usd": usd, "window": "day", "calendar": True}], "on_over": on_over}


def model(budgets: Budgets, *deps: Any) -> ScaledChatModel:
    # $5 per 1k tokens in and out: one call of 200 tokens costs $1.
    deps = deps or (Deployment(Priced(), price_in=5.0, price_out=5.0),)
    return ScaledChatModel(list(deps), budgets=budgets)


def tenant_usd(budgets: Budgets, name: str) -> float:
    return budgets.report()["levels"][f"tenant:{name}"]["usd"]


def test_identity_from_context_manager_and_config():
    assert identity.current() == identity.NOBODY
    with langscale.tenant("acme", user="u1"):
        assert identity.current() == ("acme", "u1")
        assert identity.current({"tenant": "beta"}) == ("beta", None)
    seen = []
    chain = RunnableLambda(lambda x: seen.append(identity.current()) or x)
    chain.invoke(1, config={"configurable": {"tenant": "gamma", "user": "u9"}})
    chain.invoke(1, config={"metadata": {"tenant": "delta"}})
    assert seen == [("gamma", "u9"), ("delta", None)]
    with pytest.raises(ConfigError, match="tenant"):
        with langscale.tenant(""):
            pass


def test_identity_follows_asyncio_tasks():
    async def main() -> list[Any]:
        async def who() -> Any:
            await asyncio.sleep(0)
            return identity.current().tenant

        with langscale.tenant("a"):
            first = asyncio.create_task(who())
        with langscale.tenant("b"):
            second = asyncio.create_task(who())
        return [await first, await second]

    assert asyncio.run(main()) == ["a", "b"]


def test_budget_charges_real_usage_and_raises_naming_the_budget():
    budgets = Budgets({"tenant_default": daily(2.5)})
    llm = model(budgets)
    with langscale.tenant("acme"):
        llm.invoke([HumanMessage("hi")])
        llm.invoke([HumanMessage("hi")])
        with pytest.raises(BudgetExceeded) as info:
            llm.invoke([HumanMessage("hi")])
    err = info.value
    assert isinstance(err, LangscaleError)
    assert (err.tenant, err.level, err.limit) == ("acme", "tenant", 2.5)
    assert err.spent == pytest.approx(2.0)
    assert err.budget == "usd per day (calendar)"
    assert err.resets_in is not None and 0 < err.resets_in <= 86_400
    assert "acme" in str(err) and "usd per day" in str(err)
    assert tenant_usd(budgets, "acme") == pytest.approx(2.0)
    # Another tenant has its own budget.
    llm.invoke([HumanMessage("hi")], config={"configurable": {"tenant": "beta"}})
    assert tenant_usd(budgets, "beta") == pytest.approx(1.0)


def test_two_hundred_threads_against_room_for_ten_admit_ten():
    budgets = Budgets({"tenant_default": daily(10.0)})
    gate = threading.Event()
    priced = Priced(gate=gate)
    llm = model(budgets, Deployment(priced, price_in=5.0, price_out=5.0))

    with ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(call, llm) for _ in range(200)]
        # Refusals come at once; the admitted calls hold their reservations at the gate.
        while sum(f.done() for f in futures) < 190:
            threading.Event().wait(0.01)
        gate.set()
        done = [f.result() for f in futures]
    assert done.count("ok") == 10
    assert priced.calls == 10
    assert tenant_usd(budgets, "acme") == pytest.approx(10.0)


def test_streamed_spend_comes_from_the_final_chunk_and_a_cut_stream_pays_what_it_got():
    budgets = Budgets({"tenant_default": daily(100.0)})
    llm = model(budgets)
    with langscale.tenant("acme"):
        assert "".join(c.text for c in llm.stream([HumanMessage("hi")])) == "abcd" * 5
    # 100 in + 50 out at $5/1k.
    assert tenant_usd(budgets, "acme") == pytest.approx(0.75)
    with langscale.tenant("cut"):
        stream = llm.stream([HumanMessage("hi")])
        next(stream)
        stream.close()
    spent = tenant_usd(budgets, "cut")
    # The prompt's estimate plus one chunk (4 chars: one token), not the reserved maximum.
    assert 0 < spent < 0.1


def test_degrade_routes_to_the_cheap_deployment():
    budgets = Budgets({"tenant_default": daily(1.5, "degrade")})
    pricey, cheap = Priced(), Priced()
    llm = model(
        budgets,
        Deployment(pricey, name="big", price_in=5.0, price_out=5.0),
        Deployment(cheap, name="small", price_in=0.5, price_out=0.5, tags=["cheap"]),
    )
    with langscale.tenant("acme"):
        llm.invoke([HumanMessage("hi")], max_tokens=100)
        llm.invoke([HumanMessage("hi")], max_tokens=100)
    assert (pricey.calls, cheap.calls) == (1, 1)


def test_shadow_counts_without_refusing_and_update_applies_at_once():
    budgets = Budgets({"tenant_default": daily(1.0), "shadow": True})
    llm = model(budgets)
    with langscale.tenant("acme"):
        for _ in range(3):
            llm.invoke([HumanMessage("hi")], max_tokens=100)
        level = budgets.report()["levels"]["tenant:acme"]
        assert level["would_refuse"] == 2 and level["refused"] == 0
        assert level["limits"][0]["near"] is True
        budgets.update({"tenant_default": daily(1.0)})
        with pytest.raises(BudgetExceeded):
            llm.invoke([HumanMessage("hi")])
    with pytest.raises(ConfigError, match="usd"):
        budgets.update({"tenant_default": {"budgets": [{"usd": -1, "window": "day"}]}})
    with pytest.raises(ConfigError, match="nonsense"):
        Budgets({"nonsense": 1})
    with pytest.raises(ConfigError):
        ScaledChatModel([Priced()], budgets={"tenant_default": {}})


def test_budgets_from_a_toml_file(tmp_path: Any):
    path = tmp_path / "budgets.toml"
    path.write_text(
        "[tenants.acme]\nrequests_per_minute = 1\n\n"
        '[[tenants.acme.budgets]]\nusd = 5\nwindow = "month"\n'
    )
    budgets = Budgets.from_file(path)
    llm = model(budgets)
    with langscale.tenant("acme"):
        llm.invoke([HumanMessage("hi")])
        with pytest.raises(BudgetExceeded, match="requests per minute"):
            llm.invoke([HumanMessage("hi")])
    with pytest.raises(ConfigError, match="missing"):
        Budgets.from_file(tmp_path / "missing.toml")


def test_budgets_from_a_yaml_file_and_requests_per_second(tmp_path: Any):
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "tenants:\n  acme:\n    requests_per_second: 1\n"
        "    budgets:\n      - {usd: 5, window: month}\n"
    )
    budgets = Budgets.from_file(path)
    llm = model(budgets)
    with langscale.tenant("acme"):
        llm.invoke([HumanMessage("hi")])
        with pytest.raises(BudgetExceeded, match="requests per second") as info:
            llm.invoke([HumanMessage("hi")])
    assert info.value.resets_in is not None and 0 < info.value.resets_in <= 1.0
    # The same settings through update_from_file, and bad files named.
    budgets.update_from_file(path)
    (tmp_path / "bad.yml").write_text("tenants: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yml"):
        Budgets.from_file(tmp_path / "bad.yml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="dict"):
        Budgets.from_file(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="requests_per_second"):
        Budgets({"global": {"requests_per_second": -1}})


def test_a_cache_never_answers_one_tenant_with_anothers_entry():
    cache = ExactCache()
    gen = [ChatGeneration(message=AIMessage(content="acme's secret"))]
    with langscale.tenant("acme"):
        cache.update("prompt", "llm", gen)
        assert cache.lookup("prompt", "llm") is not None
    with langscale.tenant("beta"):
        assert cache.lookup("prompt", "llm") is None
    assert cache.lookup("prompt", "llm") is None
    shared = ExactCache(share_tenants=True)
    with langscale.tenant("acme"):
        shared.update("prompt", "llm", gen)
    with langscale.tenant("beta"):
        assert shared.lookup("prompt", "llm") is not None
    with pytest.raises(ConfigError, match="share_tenants"):
        ExactCache(share_tenants="yes")  # type: ignore[arg-type]


def test_a_model_call_under_config_reads_and_fills_only_its_tenants_cache_entries():
    cache = ExactCache()
    priced = Priced()
    llm = ScaledChatModel([priced], cache=cache)
    for tenant in ("acme", "beta", "acme"):
        llm.invoke([HumanMessage("same question")], config={"configurable": {"tenant": tenant}})
    assert priced.calls == 2


_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["day", "month", "minute", "raise", "wait", "degrade", "x", ""]),
)
_KEYS = st.sampled_from(
    [
        "global",
        "tenant_default",
        "tenants",
        "users",
        "user_default",
        "budgets",
        "usd",
        "tokens",
        "window",
        "calendar",
        "on_over",
        "concurrency",
        "requests_per_minute",
        "near",
        "shadow",
        "acme",
        "acme/u1",
        "junk",
    ]
)
_JUNK = st.recursive(
    _LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(config=_JUNK)
def test_budgets_config_junk_is_a_config_error_or_works(config: Any):
    try:
        budgets = Budgets(config)
    except ConfigError:
        return
    report = budgets.report()
    assert report["in_flight"] == 0
    if config is None:  # Budgets() is empty budgets; update() needs a dict
        with pytest.raises(ConfigError, match="dict"):
            budgets.update(config)
        return
    budgets.update(config)  # accepted once: accepted again


class OddUsage(BaseChatModel):
    """Reports usage no provider should: ``usage`` as given (negative, absurd), or none."""

    usage: dict[str, Any] | None

    @property
    def _llm_type(self) -> str:
        return "odd-usage"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        msg = AIMessage(content="fine", usage_metadata=self.usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="fine"))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=self.usage))


ODD_USAGE = [
    {"input_tokens": -5, "output_tokens": -1, "total_tokens": -6},
    {"input_tokens": 10**30, "output_tokens": 2**63, "total_tokens": 10**30},
    {
        "input_tokens": 3,
        "output_tokens": 4,
        "total_tokens": 7,
        "input_token_details": {"cache_read": -2, "cache_creation": 2**64},
    },
]


@pytest.mark.parametrize("usage", ODD_USAGE)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_odd_usage_from_a_provider_neither_fails_the_call_nor_credits_a_budget(usage, mode):
    """An unreadable count reads as 0: the call succeeds and is charged as one that reported
    nothing (what the budgets know of it), never a negative or absurd amount."""

    def spend(usage: dict[str, Any] | None) -> float:
        budgets = Budgets({"tenant_default": daily(100.0)})
        llm = model(budgets, Deployment(OddUsage(usage=usage), price_in=5.0, price_out=5.0))
        messages = [HumanMessage("hi")]

        async def collect() -> str:
            if mode == "ainvoke":
                return (await llm.ainvoke(messages)).text
            return "".join([c.text async for c in llm.astream(messages)])

        with langscale.tenant("acme"):
            if mode == "invoke":
                text = llm.invoke(messages).text
            elif mode == "stream":
                text = "".join(c.text for c in llm.stream(messages))
            else:
                text = asyncio.run(collect())
        assert text == "fine"
        return tenant_usd(budgets, "acme")

    spent, silent = spend(usage), spend(None)
    assert 0.0 <= spent <= max(silent, 7 * 5 / 1000), (spent, silent)


@given(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
        st.booleans(),
        st.none(),
    )
)
def test_any_reported_count_reads_as_a_count(value):
    from langscale._tokens import tokens_of

    got = tokens_of({"input_tokens": value, "input_token_details": {"cache_read": value}})
    assert all(isinstance(n, int) and 0 <= n < 2**63 for n in got)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        assert got[0] == value == got[2]
