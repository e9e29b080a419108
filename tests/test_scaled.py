"""ScaledChatModel: routing, retries, failover, breakers and LangChain features, on fake models
that fail the way providers do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelError,
    ModelRateLimitError,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langscale import ConfigError, Deployment, RateLimiter, ScaledChatModel, ScaledModelError


class Model(BaseChatModel):
    """Answers with its own name, after raising the queued failures (or forever, if set)."""

    label: str
    fail_always: Any = None
    _failures: list[BaseException] = PrivateAttr(default_factory=list)
    _calls: int = PrivateAttr(default=0)
    _seen_kwargs: list[dict] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-" + self.label

    def queue(self, *failures: BaseException) -> Model:
        self._failures.extend(failures)
        return self

    @property
    def calls(self) -> int:
        return self._calls

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        names = [getattr(t, "name", None) or t["function"]["name"] for t in tools]
        return self.bind(tools=[{"converted_by": self.label, "name": n} for n in names], **kwargs)

    def _maybe_fail(self, kwargs: dict) -> None:
        self._calls += 1
        self._seen_kwargs.append(kwargs)
        if self.fail_always is not None:
            raise self.fail_always
        if self._failures:
            raise self._failures.pop(0)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self._maybe_fail(kw)
        usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(self.label, usage_metadata=usage))]
        )

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(0)
        return self._generate(messages, stop, **kw)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self._maybe_fail(kw)
        for part in (self.label, "-", "stream"):
            yield ChatGenerationChunk(message=AIMessageChunk(part))


def rate_limited(after: float) -> ModelRateLimitError:
    err = ModelRateLimitError("429 Too Many Requests")
    err.retry_after = after  # type: ignore[attr-defined]
    return err


class SdkError(Exception):
    """Shaped like an SDK's HTTP error: status_code and response headers."""

    def __init__(self, status: int, headers: dict | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = type("R", (), {"status_code": status, "headers": headers or {}})()


FAST = {"backoff_base": 0.001, "backoff_cap": 0.005}


def answer(model: Any, text: str = "hi") -> str:
    return model.invoke([HumanMessage(text)]).content


def test_primary_answers_when_healthy():
    primary, fallback = Model(label="primary"), Model(label="fallback")
    model = ScaledChatModel([primary, fallback])
    assert answer(model) == "primary"
    assert (primary.calls, fallback.calls) == (1, 0)
    stats = model.stats()
    assert stats["successes"] == 1
    assert stats["deployments"][0]["input_tokens"] == 3


def test_rate_limit_cools_down_and_fails_over_at_once():
    primary = Model(label="primary").queue(rate_limited(30))
    fallback = Model(label="fallback")
    model = ScaledChatModel([primary, fallback], **FAST)
    start = time.perf_counter()
    assert answer(model) == "fallback"
    assert answer(model) == "fallback", "the cooled-down primary is skipped"
    assert time.perf_counter() - start < 5, "no sleep for the Retry-After"
    assert primary.calls == 1
    deps = model.stats()["deployments"]
    assert deps[0]["errors"]["rate_limited"] == 1
    assert deps[0]["cooldown_remaining"] > 20


def test_sdk_style_429_with_retry_after_header():
    primary = Model(label="primary").queue(SdkError(429, {"retry-after": "30"}))
    model = ScaledChatModel([primary, Model(label="fallback")], **FAST)
    assert answer(model) == "fallback"
    assert model.stats()["deployments"][0]["cooldown_remaining"] > 20


def test_server_errors_retry_with_backoff_then_succeed():
    primary = Model(label="primary").queue(ModelAPIError("500"), SdkError(503))
    fallback = Model(label="fallback")
    model = ScaledChatModel([primary, fallback], max_attempts=3, **FAST)
    assert answer(model) == "primary"
    assert (primary.calls, fallback.calls) == (3, 0)
    assert model.stats()["deployments"][0]["retries"] == 2


def test_persistent_server_errors_fail_over_after_max_attempts():
    primary = Model(label="primary", fail_always=ModelAPIError("500"))
    fallback = Model(label="fallback")
    model = ScaledChatModel([primary, fallback], max_attempts=2, **FAST)
    assert answer(model) == "fallback"
    assert primary.calls == 2
    assert model.stats()["deployments"][1]["fallbacks"] == 1


def test_auth_errors_fail_fast_with_the_original_exception():
    error = ModelAuthenticationError("401 bad key")
    primary = Model(label="primary").queue(error)
    fallback = Model(label="fallback")
    model = ScaledChatModel([primary, fallback], **FAST)
    with pytest.raises(ModelAuthenticationError) as info:
        answer(model)
    assert info.value is error
    assert fallback.calls == 0


def test_context_overflow_moves_to_a_larger_window():
    small = Model(label="small").queue(ContextOverflowError("too long"))
    smaller = Model(label="smaller")
    large = Model(label="large")
    model = ScaledChatModel(
        [
            Deployment(small, context_window=8_000),
            Deployment(smaller, context_window=4_000),
            Deployment(large, context_window=128_000),
        ],
        **FAST,
    )
    assert answer(model) == "large"
    assert smaller.calls == 0


def test_everything_failing_raises_the_last_error():
    a = Model(label="a", fail_always=ModelAPIError("down"))
    b = Model(label="b", fail_always=ModelAPIError("down too"))
    model = ScaledChatModel([a, b], max_attempts=2, **FAST)
    with pytest.raises(ModelAPIError):
        answer(model)


def attempt_notes(err: BaseException) -> list[str]:
    """The per-attempt notes langscale put on a failure, one per failed attempt."""
    notes = getattr(err, "__notes__", [])
    return [n for n in notes if n.startswith("langscale:   ")]


async def fail_through(model: ScaledChatModel, path: str) -> BaseException:
    prompt = [HumanMessage("x")]
    try:
        if path == "invoke":
            model.invoke(prompt)
        elif path == "ainvoke":
            await model.ainvoke(prompt)
        elif path == "stream":
            list(model.stream(prompt))
        else:
            [c async for c in model.astream(prompt)]
    except Exception as exc:
        return exc
    raise AssertionError("every deployment fails, yet the call succeeded")


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream", "hedged"])
async def test_when_every_deployment_fails_the_error_names_every_attempt(path):
    a = Model(label="a", fail_always=ModelAPIError("a is down"))
    b = Model(label="b", fail_always=ModelAuthenticationError("b has no key"))
    hedge = {"hedge_delay": 0.001} if path == "hedged" else {}
    model = ScaledChatModel(
        [Deployment(a, name="alpha"), Deployment(b, name="bee")], max_attempts=2, **FAST, **hedge
    )
    for _ in range(2):  # the same exception objects again: notes replaced, not stacked
        err = await fail_through(model, "ainvoke" if path == "hedged" else path)
        # The deciding attempt's own exception: LangChain code catches it by its type.
        assert isinstance(err, ModelAuthenticationError)
        notes = attempt_notes(err)
        alpha = "deployment 0 (alpha): ModelAPIError: a is down"
        bee = "deployment 1 (bee): ModelAuthenticationError: b has no key"
        if path == "hedged":
            # A 1 ms hedge starts b whenever an attempt of a takes longer (a loaded machine):
            # b's fatal answer may then come before a's retry, or before a's first answer.
            assert 1 <= len(notes) <= 3, notes
            assert sum(bee in n for n in notes) == 1, notes
            assert all(alpha in n for n in notes if bee not in n), notes
        else:
            assert len(notes) == 3, notes  # a twice (retried), then b once (auth: fatal)
            assert all(alpha in n for n in notes[:2])
            assert bee in notes[2]
        assert f"{len(notes)} failed attempt(s)" in "\n".join(err.__notes__)


def test_a_deadline_giving_up_keeps_the_model_error_and_its_notes():
    primary = Model(label="primary", fail_always=ModelAPIError("500"))
    model = ScaledChatModel(
        [primary], max_attempts=1, deadline=0.05, backoff_base=0.2, backoff_cap=0.2
    )
    err = asyncio.run(fail_through(model, "invoke"))
    assert isinstance(err, ModelError)
    assert attempt_notes(err), err


def test_breaker_opens_and_stops_calls_to_a_failing_deployment():
    primary = Model(label="primary", fail_always=ModelAPIError("500"))
    fallback = Model(label="fallback")
    model = ScaledChatModel(
        [primary, fallback],
        max_attempts=1,
        breaker_min_requests=5,
        breaker_failure_rate=0.5,
        breaker_open_for=60,
        **FAST,
    )
    for _ in range(20):
        assert answer(model) == "fallback"
    assert primary.calls <= 6, "the open breaker stopped the calls"
    dep = model.stats()["deployments"][0]
    assert dep["breaker"] == "open"
    assert dep["breaker_opened"] == 1


def test_retry_budget_caps_retries_during_an_outage():
    primary = Model(label="primary", fail_always=SdkError(503))
    model = ScaledChatModel(
        [primary], max_attempts=5, retry_budget=0.2, breaker_min_requests=10_000, **FAST
    )
    for _ in range(100):
        with pytest.raises(SdkError):
            answer(model)
    retries = primary.calls - 100
    # 20% of requests plus the per-second floor, never the 400 that max_attempts would allow
    assert retries <= 20 + 15, retries
    assert model.stats()["retries_denied"] > 0


def test_strategies_route_as_described():
    a, b = Model(label="a"), Model(label="b")
    rr = ScaledChatModel([a, b], strategy="round_robin")
    assert [answer(rr) for _ in range(4)] == ["a", "b", "a", "b"]
    cheap, dear = Model(label="cheap"), Model(label="dear")
    cost = ScaledChatModel(
        [
            Deployment(dear, price_in=10.0, price_out=30.0),
            Deployment(cheap, price_in=0.1, price_out=0.2),
        ],
        strategy="lowest_cost",
    )
    assert answer(cost) == "cheap"


def test_tools_are_converted_by_each_deployment():
    primary = Model(label="primary").queue(ModelAPIError("500"))
    fallback = Model(label="fallback")
    model = ScaledChatModel([primary, fallback], max_attempts=1, **FAST)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    bound = model.bind_tools([tool], tool_choice="auto")
    assert bound.invoke([HumanMessage("x")]).content == "fallback"
    assert primary._seen_kwargs[0]["tools"] == [{"converted_by": "primary", "name": "get_weather"}]
    assert fallback._seen_kwargs[0]["tools"] == [
        {"converted_by": "fallback", "name": "get_weather"}
    ]
    assert fallback._seen_kwargs[0]["tool_choice"] == "auto"


def test_limits_are_applied_per_call():
    limiter = RateLimiter(requests_per_second=1000)
    model = ScaledChatModel([Model(label="a")], limits=limiter)
    answer(model)
    answer(model)
    assert limiter.stats()["acquired"] == 2


async def test_async_fails_over_and_fails_fast():
    primary = Model(label="primary").queue(rate_limited(30))
    model = ScaledChatModel([primary, Model(label="fallback")], **FAST)
    assert (await model.ainvoke([HumanMessage("x")])).content == "fallback"
    auth = Model(label="auth", fail_always=ModelAuthenticationError("401"))
    model = ScaledChatModel([auth, Model(label="fallback")], **FAST)
    with pytest.raises(ModelAuthenticationError):
        await model.ainvoke([HumanMessage("x")])


async def test_async_attempt_timeout_fails_over():
    class Slow(Model):
        async def _agenerate(self, *a: Any, **kw: Any) -> ChatResult:
            await asyncio.sleep(5)
            return self._generate(*a, **kw)

    model = ScaledChatModel(
        [Slow(label="slow"), Model(label="fast")], attempt_timeout=0.05, max_attempts=1, **FAST
    )
    start = time.perf_counter()
    assert (await model.ainvoke([HumanMessage("x")])).content == "fast"
    assert time.perf_counter() - start < 4
    assert model.stats()["deployments"][0]["errors"]["timeout"] == 1


async def test_hedging_starts_a_second_call_and_the_first_answer_wins():
    class Slow(Model):
        async def _agenerate(self, *a: Any, **kw: Any) -> ChatResult:
            await asyncio.sleep(2)
            return self._generate(*a, **kw)

    model = ScaledChatModel([Slow(label="slow"), Model(label="fast")], hedge_delay=0.05)
    start = time.perf_counter()
    assert (await model.ainvoke([HumanMessage("x")])).content == "fast"
    assert time.perf_counter() - start < 1.5
    assert model.stats()["deployments"][1]["hedges"] == 1


def test_stream_fails_over_before_the_first_chunk():
    primary = Model(label="primary").queue(ModelAPIError("500"))
    model = ScaledChatModel([primary, Model(label="fallback")], max_attempts=1, **FAST)
    chunks = [c.content for c in model.stream([HumanMessage("x")])]
    assert "".join(chunks) == "fallback-stream"


async def test_astream_fails_over_before_the_first_chunk():
    primary = Model(label="primary").queue(SdkError(502))
    model = ScaledChatModel([primary, Model(label="fallback")], max_attempts=1, **FAST)
    chunks = [c.content async for c in model.astream([HumanMessage("x")])]
    assert "".join(chunks) == "fallback-stream"


def test_create_agent_runs_a_tool_loop_end_to_end(tool_model):
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"18 C in {city}"

    agent = create_agent(ScaledChatModel([tool_model]), [get_weather])
    result = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]})
    assert result["messages"][-1].content == "It is 18 C in Paris."
    assert tool_model.calls == 2


def test_concurrent_threads_share_one_router():
    from concurrent.futures import ThreadPoolExecutor

    a, b = Model(label="a"), Model(label="b")
    model = ScaledChatModel([a, b], strategy="round_robin")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: answer(model), range(200)))
    assert sorted(set(answers)) == ["a", "b"]
    stats = model.stats()
    assert stats["successes"] == 200
    assert all(d["in_flight"] == 0 for d in stats["deployments"])


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ([[]], {}, "at least one deployment"),
        ([["not a model"]], {}, "chat model"),
        ([[Model(label="a")]], {"strategy": "fastest"}, "strategy"),
        ([[Model(label="a")]], {"max_attempts": 0}, "max_attempts"),
        ([[Model(label="a")]], {"limits": "500/min"}, "limits"),
    ],
)
def test_bad_configuration_raises_config_error(args, kwargs, named):
    with pytest.raises(ConfigError, match=named):
        ScaledChatModel(*args, **kwargs)


def test_scaled_model_error_when_no_deployment_is_available():
    primary = Model(label="primary", fail_always=ModelAPIError("500"))
    model = ScaledChatModel(
        [primary], max_attempts=1, breaker_min_requests=2, breaker_open_for=60, **FAST
    )
    for _ in range(2):
        with pytest.raises(ModelAPIError):
            answer(model)
    with pytest.raises(ScaledModelError, match="no deployment is available") as info:
        answer(model)
    assert isinstance(info.value, ModelError)  # LangChain code catches it with the others


def test_streams_use_the_cache_both_ways():
    from langscale import ExactCache

    primary = Model(label="primary")
    model = ScaledChatModel([primary], cache=ExactCache())
    first = "".join(c.content for c in model.stream([HumanMessage("x")]))
    assert first == "primary-stream"
    again = "".join(c.content for c in model.stream([HumanMessage("x")]))
    assert again == first
    assert primary.calls == 1, "the second stream was replayed from the cache"
    assert model.invoke([HumanMessage("x")]).content == first, "a completed stream was stored"
    assert primary.calls == 1


async def test_astream_hit_replays_tool_calls():
    from langscale import ExactCache

    cache = ExactCache()
    model = ScaledChatModel([Model(label="primary")], cache=cache)
    message = AIMessage("", tool_calls=[{"name": "t", "args": {"k": 1}, "id": "c1"}])
    llm_string = model._get_llm_string()
    from langchain_core.load import dumps

    cache.update(dumps([HumanMessage("x")]), llm_string, [ChatGeneration(message=message)])
    chunks = [c async for c in model.astream([HumanMessage("x")])]
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.tool_calls == [{"name": "t", "args": {"k": 1}, "id": "c1", "type": "tool_call"}]


def test_complexity_routing_by_heuristic_and_by_callable():
    small, large = Model(label="small"), Model(label="large")
    model = ScaledChatModel([small, large], strategy="complexity")
    assert answer(model, "hi") == "small"
    long_question = "explain " * 20_000
    assert answer(model, long_question) == "large"
    by_hand = ScaledChatModel(
        [Model(label="small"), Model(label="large")],
        strategy="complexity",
        complexity=lambda messages: 1.0 if "prove" in messages[-1].content else 0.0,
    )
    assert answer(by_hand, "prove it") == "large"
    assert answer(by_hand, "hello") == "small"
    with pytest.raises(ConfigError, match="complexity"):
        ScaledChatModel([Model(label="a")], complexity="hard")


def test_sync_attempt_timeout_fails_over():
    class Slow(Model):
        def _generate(self, *a: Any, **kw: Any) -> ChatResult:
            time.sleep(1.0)
            return super()._generate(*a, **kw)

    model = ScaledChatModel(
        [Slow(label="slow"), Model(label="fast")], attempt_timeout=0.05, max_attempts=1, **FAST
    )
    start = time.perf_counter()
    assert answer(model) == "fast"
    assert time.perf_counter() - start < 0.9
    assert model.stats()["deployments"][0]["errors"]["timeout"] == 1


def test_breaker_half_opens_after_the_cool_down_and_closes_on_success():
    primary = Model(label="primary", fail_always=ModelAPIError("500"))
    model = ScaledChatModel(
        [primary, Model(label="fallback")],
        max_attempts=1,
        breaker_min_requests=4,
        breaker_failure_rate=0.5,
        breaker_open_for=0.1,
        **FAST,
    )
    for _ in range(6):
        answer(model)
    assert model.stats()["deployments"][0]["breaker"] == "open"
    primary.fail_always = None  # the provider recovers
    time.sleep(0.2)
    assert answer(model) == "primary", "the half-open probe went to the primary"
    dep = model.stats()["deployments"][0]
    assert dep["breaker"] == "closed"
    assert dep["breaker_half_opened"] == 1 and dep["breaker_closed"] == 1


@pytest.mark.parametrize(
    ("stop", "kwargs"),
    [
        (None, {}),
        (["END"], {"temperature": 0.2, "max_tokens": 5}),
        (None, {"model": "gpt-x", "temperature": "hot", "max_tokens": 2.5}),
    ],
)
def test_tracing_params_are_langchains_with_langscale_as_provider(stop, kwargs):
    """Built without BaseChatModel's attribute probing, the params are still what it would
    give, named langscale, the model being the deployments' names unless the call names one."""
    model = ScaledChatModel([Model(label="a"), Deployment(Model(label="b"), name="second")])
    ours = model._get_ls_params(stop=stop, **kwargs)
    theirs = BaseChatModel._get_ls_params(model, stop=stop, **kwargs)
    theirs["ls_provider"] = "langscale"
    theirs.setdefault("ls_model_name", "Model,second")
    assert ours == theirs
