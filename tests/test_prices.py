"""Prices from LiteLLM's price file (``langscale.Prices``): deployments without prices of
their own are priced by their model's name; costs reach the router's figures."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

import langscale
from langscale import ConfigError, Deployment, Prices, ScaledChatModel

# The shape of LiteLLM's model_prices_and_context_window.json (values as it publishes them:
# dollars per token), including its "sample_spec" entry whose values are descriptions.
TABLE = {
    "sample_spec": {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "max_input_tokens": "max input tokens, if the provider specifies it",
    },
    "some-embedding": {"mode": "embedding"},
    "gpt-4o-mini": {
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 7.5e-08,
        "max_input_tokens": 128000,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "claude-3-5-haiku-latest": {
        "input_cost_per_token": 8e-07,
        "output_cost_per_token": 4e-06,
        "max_input_tokens": 200000,
    },
}


class Named(BaseChatModel):
    """Answers with 1,000 tokens in and 500 out, reported as usage."""

    model_name: str

    @property
    def _llm_type(self) -> str:
        return "named"

    def _generate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
        usage = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500}
        message = AIMessage("ok", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_a_file_prices_deployments_by_their_model_name(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(TABLE))
    prices = Prices.from_litellm(path)
    price = prices.get("gpt-4o-mini")
    assert price is not None
    assert math.isclose(price.price_in, 0.00015) and math.isclose(price.price_out, 0.0006)
    assert price.context_window == 128000
    assert math.isclose(price.cache_read or 0, 0.000075)
    assert prices.get("openai/gpt-4o-mini") == price, "a provider prefix is looked through"
    assert prices.get("no-such-model") is None
    assert prices.get("some-embedding") is None, "an entry without input or output price"
    assert prices.get("sample_spec") == langscale.prices.Price(0.0, 0.0), "text is no window"

    own = Deployment(Named(model_name="claude-3-5-haiku-latest"), price_in=1.0, price_out=2.0)
    model = ScaledChatModel([Named(model_name="gpt-4o-mini"), own], prices=prices)
    model.invoke("hi")
    stats = model.stats()
    first = stats["deployments"][0]
    assert math.isclose(first["cost"], (1000 * 0.00015 + 500 * 0.0006) / 1000)
    deps = model._private()["_deps"]
    assert deps[0].context_window == 128000
    assert (deps[1].price_in, deps[1].price_out) == (1.0, 2.0), "its own prices win"
    assert own.context_window is None, "a shared Deployment is not changed"


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"m": {"input_cost_per_token": "cheap"}}, "m.input_cost_per_token"),
        ({"m": {"output_cost_per_token": -1e-6}}, "m.output_cost_per_token"),
        ({"m": {"input_cost_per_token": float("nan")}}, "m.input_cost_per_token"),
        ({"m": {"input_cost_per_token": 10**400}}, "m.input_cost_per_token"),
        ({"m": {"input_cost_per_token": 1e-6, "max_input_tokens": 10**30}}, "m.max_input_tokens"),
    ],
)
def test_bad_prices_name_the_entry(table, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        ScaledChatModel([Named(model_name="m")], prices=Prices.from_litellm(table))


def test_bad_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.json"):
        Prices.from_litellm(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        Prices.from_litellm(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="a path or a dict"):
        Prices.from_litellm(["gpt-4o"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"langscale\.Prices"):
        ScaledChatModel([Named(model_name="m")], prices=TABLE)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
FIELDS = st.sampled_from(["input_cost_per_token", "output_cost_per_token", "max_input_tokens"])


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.dictionaries(FIELDS | st.text(max_size=8), JSON, max_size=4) | JSON,
        max_size=4,
    )
)
def test_any_table_gives_a_price_or_none_or_a_config_error(table):
    """Junk in the price file: every lookup gives a price, None, or a ConfigError; so does
    a model priced from it."""
    prices = langscale.Prices.from_litellm(table)
    for name in [*table, "x"]:
        try:
            price = prices.get(name)
            ScaledChatModel([Named(model_name=name or "x")], prices=prices)
        except ConfigError:
            continue
        assert price is None or (price.price_in >= 0 and price.price_out >= 0)
        if price is not None and price.context_window is not None:
            assert price.context_window > 0


class PromptCached(BaseChatModel):
    """1,000 input tokens (600 read from the provider's prompt cache, 200 written to it) and
    500 out, as LangChain reports them; streams its answer with the usage on the last chunk."""

    model_name: str = "cached-model"

    @property
    def _llm_type(self) -> str:
        return "prompt-cached"

    @staticmethod
    def _usage() -> dict[str, Any]:
        return {
            "input_tokens": 1000,
            "output_tokens": 500,
            "total_tokens": 1500,
            "input_token_details": {"cache_read": 600, "cache_creation": 200},
        }

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        message = AIMessage("ok", usage_metadata=self._usage())  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        yield ChatGenerationChunk(message=AIMessageChunk(content="o"))
        last = AIMessageChunk(content="k", usage_metadata=self._usage())  # type: ignore[arg-type]
        yield ChatGenerationChunk(message=last)


# dollars per 1k: 200 plain at 1.0, 600 read at 0.1, 200 written at 1.25, 500 out at 4.0
CACHED_COST = (200 * 1.0 + 600 * 0.1 + 200 * 1.25 + 500 * 4.0) / 1000


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream"])
def test_prompt_cache_tokens_are_charged_at_their_prices(path):
    budgets = langscale.Budgets(
        {"tenant_default": {"budgets": [{"usd": 1000.0, "window": "day"}], "on_over": "raise"}}
    )
    dep = Deployment(
        PromptCached(),
        price_in=1.0,
        price_out=4.0,
        price_cache_read=0.1,
        price_cache_write=1.25,
    )
    model = ScaledChatModel([dep], budgets=budgets)
    with langscale.tenant("acme"):
        if path == "invoke":
            model.invoke("hi")
        elif path == "ainvoke":
            asyncio.run(model.ainvoke("hi"))
        elif path == "stream":
            assert "".join(str(c.content) for c in model.stream("hi")) == "ok"
        else:

            async def read() -> str:
                return "".join([str(c.content) async for c in model.astream("hi")])

            assert asyncio.run(read()) == "ok"
    spent = budgets.report()["levels"]["tenant:acme"]["usd"]
    assert spent == pytest.approx(CACHED_COST)
    if path in ("invoke", "ainvoke"):
        assert model.stats()["deployments"][0]["cost"] == pytest.approx(CACHED_COST)
    # without cache prices every input token costs price_in
    plain = ScaledChatModel([Deployment(PromptCached(), price_in=1.0, price_out=4.0)])
    plain.invoke("hi")
    assert plain.stats()["deployments"][0]["cost"] == pytest.approx(3.0)


def test_price_file_cache_prices_reach_the_deployment():
    table = {
        "cached-model": {
            "input_cost_per_token": 1e-3,
            "output_cost_per_token": 4e-3,
            "cache_read_input_token_cost": 1e-4,
            "cache_creation_input_token_cost": 1.25e-3,
        }
    }
    model = ScaledChatModel([PromptCached()], prices=Prices.from_litellm(table))
    model.invoke("hi")
    assert model.stats()["deployments"][0]["cost"] == pytest.approx(CACHED_COST)
    dep = model._private()["_deps"][0]
    assert dep.price_cache_read == pytest.approx(0.1)
    assert dep.price_cache_write == pytest.approx(1.25)
    # its own cache price wins over the file's
    own = Deployment(PromptCached(), price_cache_read=0.0)
    model = ScaledChatModel([own], prices=Prices.from_litellm(table))
    assert model._private()["_deps"][0].price_cache_read == 0.0


@pytest.mark.parametrize("field", ["price_cache_read", "price_cache_write"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "cheap"])
def test_bad_cache_prices_are_named(field, value):
    with pytest.raises(ConfigError, match=field):
        Deployment(PromptCached(), **{field: value})
