"""``ChatEndpoint`` and the native loop against the simulated provider (``langscale.sim``):
the same answers as ``ChatOpenAI``, quotas, outages, hangs, resets, keys and context windows."""

from __future__ import annotations

import time

import pytest
from langchain_core import exceptions as lc
from langchain_core.messages import HumanMessage

import langscale
from langscale import ChatEndpoint, ScaledChatModel, sim
from tests.test_endpoint import Weather

FAST = {"backoff_base": 0.001, "backoff_cap": 0.005, "seed": 3}


def test_same_answers_as_chat_openai():
    openai = pytest.importorskip("langchain_openai")
    with sim.serve(sim.Provider("p")) as s:
        ours = ChatEndpoint(s.url("p"), "sim-model", api_key="x")
        theirs = openai.ChatOpenAI(base_url=s.url("p"), model="sim-model", api_key="x")
        for prompt in ("What is the capital of France?", "Tell me a joke"):
            a, b = ours.invoke(prompt), theirs.invoke(prompt)
            assert a.content == b.content
            assert a.usage_metadata is not None and b.usage_metadata is not None
            assert a.usage_metadata["total_tokens"] == b.usage_metadata["total_tokens"]
        a = ours.bind_tools([Weather], tool_choice="Weather").invoke("weather in Rome?")
        b = theirs.bind_tools([Weather], tool_choice="Weather").invoke("weather in Rome?")
        assert [(c["name"], c["args"]) for c in a.tool_calls] == [
            (c["name"], c["args"]) for c in b.tool_calls
        ]
        assert a.tool_calls and a.tool_calls[0]["id"]
        streamed = list(ours.stream("What is the capital of France?"))
        total = streamed[0]
        for c in streamed[1:]:
            total = total + c
        assert total.content == ours.invoke("What is the capital of France?").content
        assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0


def test_quota_429_carries_retry_after():
    with sim.serve(sim.Provider("p", requests_per_minute=2)) as s:
        model = ChatEndpoint(s.url("p"), "sim-model")
        model.invoke("a")
        model.invoke("b")
        with pytest.raises(lc.ModelRateLimitError) as info:
            model.invoke("c")
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert s.stats("p")["rate_limited"] == 1


def test_keys_and_context_windows():
    with sim.serve(sim.Provider("p", api_key="sk-sim-1", context_window=60)) as s:
        with pytest.raises(lc.ModelAuthenticationError):
            ChatEndpoint(s.url("p"), "sim-model").invoke("hi")
        model = ChatEndpoint(s.url("p"), "sim-model", api_key="sk-sim-1")
        assert model.invoke("hi").content
        with pytest.raises(lc.ContextOverflowError):
            model.invoke("word " * 400)


def test_native_loop_fails_over_an_outage_a_hang_and_a_reset():
    providers = (
        sim.Provider("down", faults=[sim.Fault(start=0, kind="down")]),
        sim.Provider("hang", hang_rate=1.0, hang_seconds=30),
        sim.Provider("reset", reset_rate=1.0),
        sim.Provider("ok"),
    )
    with sim.serve(*providers) as s:
        deployments = [ChatEndpoint(s.url(p.name), "sim-model") for p in providers]
        model = ScaledChatModel(deployments, max_attempts=1, attempt_timeout=0.3, **FAST)
        assert model._native is not None
        started = time.monotonic()
        reply = model.invoke([HumanMessage("hello")])
        assert reply.content
        assert time.monotonic() - started < 5
        errors = [d["errors"] for d in model.stats()["deployments"]]
        assert (errors[0]["server"], errors[1]["timeout"], errors[2]["connection"]) == (1, 1, 1)
        assert s.stats("ok")["ok"] == 1


async def test_native_stream_fails_over_and_keeps_usage():
    down = sim.Provider("down", faults=[sim.Fault(start=0, kind="error")])
    with sim.serve(down, sim.Provider("ok")) as s:
        model = ScaledChatModel(
            [ChatEndpoint(s.url("down"), "m"), ChatEndpoint(s.url("ok"), "m")],
            max_attempts=1,
            **FAST,
        )
        total = None
        async for chunk in model.astream("stream please"):
            total = chunk if total is None else total + chunk
        assert total is not None and total.content
        assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] > 0
        assert s.stats("down")["server_errors"] == 1


def test_context_overflow_moves_to_the_larger_window():
    small = sim.Provider("small", context_window=60)
    with sim.serve(small, sim.Provider("large")) as s:
        model = ScaledChatModel(
            [
                langscale.Deployment(ChatEndpoint(s.url("small"), "m")),
                langscale.Deployment(ChatEndpoint(s.url("large"), "m"), context_window=100_000),
            ],
            **FAST,
        )
        assert model.invoke("word " * 400).content
        assert s.stats("large")["ok"] == 1
        assert model.stats()["deployments"][0]["errors"]["context_overflow"] == 1


def test_create_agent_runs_on_the_native_loop():
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return f"sunny in {city}"

    down = sim.Provider("down", faults=[sim.Fault(start=0, kind="down")])
    with sim.serve(down, sim.Provider("ok")) as s:
        model = ScaledChatModel(
            [ChatEndpoint(s.url("down"), "m"), ChatEndpoint(s.url("ok"), "m")],
            max_attempts=1,
            **FAST,
        )
        out = create_agent(model, [get_weather]).invoke(
            {"messages": [("user", "What's the weather in Paris?")]}
        )
        kinds = [type(m) for m in out["messages"]]
        assert kinds[1:] == [AIMessage, ToolMessage, AIMessage]
        assert out["messages"][1].tool_calls[0]["name"] == "get_weather"
        assert out["messages"][2].content == "sunny in Paris"
        assert out["messages"][3].content
        assert s.stats("ok")["ok"] == 2


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream"])
async def test_native_loop_failure_names_every_attempt(path):
    from tests.test_scaled import attempt_notes, fail_through

    providers = (
        sim.Provider("down", faults=[sim.Fault(start=0, kind="down")]),
        sim.Provider("broken", faults=[sim.Fault(start=0, kind="error")]),
    )
    with sim.serve(*providers) as s:
        model = ScaledChatModel(
            [ChatEndpoint(s.url(p.name), "sim-model") for p in providers], max_attempts=2, **FAST
        )
        assert model._native is not None
        err = await fail_through(model, path)
        # The deciding provider error, as LangChain's ModelError family.
        assert isinstance(err, lc.ModelAPIError) and isinstance(err, langscale.ProviderError)
        notes = attempt_notes(err)
        assert len(notes) == 4, notes
        assert all("deployment 0 (sim-model)" in n and "503" in n for n in notes[:2])
        assert all("deployment 1 (sim-model)" in n and "500" in n for n in notes[2:])
        assert s.stats("down")["requests"] == 2 and s.stats("broken")["requests"] == 2
