"""Agent middleware: model calls through the router, tool calls with timeout, bulkhead, cache."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain.agents import create_agent
from langchain_core.exceptions import ModelAPIError
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from langscale import ConfigError, RateLimiter
from langscale.middleware import ScaledModelMiddleware, ToolCallMiddleware
from tests.conftest import ToolCallingFakeModel


class Broken(ToolCallingFakeModel):
    def _generate(self, *args, **kwargs):
        self._calls += 1
        raise ModelAPIError("500 from the agent's own model")


def weather_tool(counter: list[int], delay: float = 0.0):
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        counter.append(1)
        time.sleep(delay)
        return f"18 C in {city}"

    return get_weather


def ask(agent) -> str:
    return agent.invoke({"messages": [HumanMessage("Weather in Paris?")]})["messages"][-1].content


def test_model_middleware_fails_over_to_a_fallback():
    broken, fallback = Broken(), ToolCallingFakeModel()
    limiter = RateLimiter(requests_per_second=1000)
    middleware = ScaledModelMiddleware([fallback], limits=limiter, max_attempts=1)
    agent = create_agent(broken, [weather_tool([])], middleware=[middleware])
    assert ask(agent) == "It is 18 C in Paris."
    assert broken.calls >= 1
    assert fallback.calls == 2
    assert limiter.stats()["acquired"] >= 3


async def test_model_middleware_async():
    broken, fallback = Broken(), ToolCallingFakeModel()
    agent = create_agent(
        broken, [weather_tool([])], middleware=[ScaledModelMiddleware([fallback], max_attempts=1)]
    )
    result = await agent.ainvoke({"messages": [HumanMessage("Weather in Paris?")]})
    assert result["messages"][-1].content == "It is 18 C in Paris."


def test_model_middleware_rejects_bad_settings():
    with pytest.raises(ConfigError):
        ScaledModelMiddleware([], strategy="fastest")


def test_cacheable_tool_runs_once_for_equal_arguments():
    runs: list[int] = []
    middleware = ToolCallMiddleware(cacheable=["get_weather"])
    agent = create_agent(ToolCallingFakeModel(), [weather_tool(runs)], middleware=[middleware])
    assert ask(agent) == ask(agent) == "It is 18 C in Paris."
    assert len(runs) == 1


def test_tool_timeout_returns_an_error_message():
    middleware = ToolCallMiddleware(timeout={"get_weather": 0.05})
    agent = create_agent(
        ToolCallingFakeModel(), [weather_tool([], delay=1.0)], middleware=[middleware]
    )
    result = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]})
    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert tool_messages[0].status == "error"
    assert "timed out" in tool_messages[0].content


async def test_async_bulkhead_limits_concurrent_calls_of_a_tool():
    active, peak = 0, 0

    @tool
    async def slow_lookup(q: str) -> str:
        """Look something up slowly."""
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return q

    middleware = ToolCallMiddleware(max_concurrency={"slow_lookup": 2}, timeout=5)

    async def call(i: int):
        request = type(
            "R", (), {"tool_call": {"name": "slow_lookup", "id": f"c{i}", "args": {"q": str(i)}}}
        )()

        async def handler(req):
            out = await slow_lookup.ainvoke(req.tool_call["args"])
            return ToolMessage(out, tool_call_id=req.tool_call["id"])

        return await middleware.awrap_tool_call(request, handler)

    results = await asyncio.gather(*(call(i) for i in range(10)))
    assert [r.content for r in results] == [str(i) for i in range(10)]
    assert peak == 2


def test_bad_tool_settings():
    with pytest.raises(ConfigError):
        ToolCallMiddleware(timeout=-1)
    with pytest.raises(ConfigError):
        ToolCallMiddleware(max_concurrency={"x": 0})
