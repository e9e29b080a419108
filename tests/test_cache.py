"""ExactCache as a LangChain BaseCache: standard suites, lossless values, normalised keys."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langchain_core.caches import BaseCache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from langscale import ConfigError, ExactCache, _core


class TestExactCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return ExactCache()


class TestExactCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return ExactCache()


def _tool_turn(call_id: str, response_id: str, result: str = "18 C and sunny") -> list:
    return [
        SystemMessage("You are a weather bot."),
        HumanMessage("Weather in Paris?"),
        AIMessage(
            content="",
            tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": call_id}],
            additional_kwargs={
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ]
            },
            response_metadata={"id": response_id, "system_fingerprint": "fp_" + response_id},
            usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
            id=f"run-{response_id}",
        ),
        ToolMessage(result, tool_call_id=call_id),
    ]


def test_full_chat_generation_round_trips():
    cache = ExactCache()
    message = AIMessage(
        content="calling",
        tool_calls=[{"name": "search", "args": {"q": "x", "n": [1, 2]}, "id": "call_1"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        response_metadata={"model_name": "m"},
        additional_kwargs={"refusal": None},
    )
    gen = ChatGeneration(message=message, generation_info={"finish_reason": "tool_calls"})
    cache.update("p", "llm", [gen, Generation(text="plain", generation_info={"a": 1})])
    got = cache.lookup("p", "llm")
    assert got is not None and len(got) == 2
    assert isinstance(got[0], ChatGeneration)
    assert got[0].message == message
    assert got[0].message.tool_calls == message.tool_calls
    assert got[0].message.usage_metadata == message.usage_metadata
    assert got[0].generation_info == {"finish_reason": "tool_calls"}
    assert got[1] == Generation(text="plain", generation_info={"a": 1})


def test_mutating_a_returned_message_does_not_change_the_cache():
    cache = ExactCache()
    message = AIMessage(content="x", tool_calls=[{"name": "t", "args": {"k": 1}, "id": "c"}])
    cache.update("p", "llm", [ChatGeneration(message=message)])
    first = cache.lookup("p", "llm")
    first[0].message.tool_calls[0]["args"]["k"] = 99
    first[0].message.content = "changed"
    second = cache.lookup("p", "llm")
    assert second[0].message.content == "x"
    assert second[0].message.tool_calls[0]["args"] == {"k": 1}


def test_keys_ignore_tool_call_ids_and_response_metadata():
    a = dumps(_tool_turn("call_abc", "r1"))
    b = dumps(_tool_turn("call_xyz", "r2"))
    assert a != b
    assert _core.cache_key("", "llm", a) == _core.cache_key("", "llm", b)
    assert "call_abc" not in _core.canonical_prompt(a)


@pytest.mark.parametrize(
    "changed",
    [
        dumps(_tool_turn("call_abc", "r1", result="25 C and raining")),
        dumps([*_tool_turn("call_abc", "r1")[:3], ToolMessage("18 C", tool_call_id="other")]),
        dumps([HumanMessage("Weather in Paris?")]),
    ],
)
def test_keys_still_separate_different_conversations(changed):
    base = dumps(_tool_turn("call_abc", "r1"))
    assert _core.cache_key("", "llm", base) != _core.cache_key("", "llm", changed)


def test_keys_include_llm_string_and_namespace():
    prompt = dumps([HumanMessage("hi")])
    keys = {
        _core.cache_key("", "llm-a", prompt),
        _core.cache_key("", "llm-b", prompt),
        _core.cache_key("v2", "llm-a", prompt),
    }
    assert len(keys) == 3


def test_plain_string_prompts_work():
    cache = ExactCache()
    cache.update("Tell me a joke", "llm", [Generation(text="knock knock")])
    assert cache.lookup("Tell me a joke", "llm")[0].text == "knock knock"
    assert cache.lookup("Tell me a joke!", "llm") is None


def test_repeated_tool_calling_conversation_hits(tool_model):
    """A two-turn tool conversation repeated with fresh ids hits; a different result misses."""
    cache = ExactCache()
    model = tool_model.model_copy(update={"cache": cache}).bind_tools(
        [{"type": "function", "function": {"name": "get_weather"}}]
    )

    def conversation(result: str) -> AIMessage:
        history = [HumanMessage("Weather in Paris?")]
        ask = model.invoke(history)
        assert ask.tool_calls
        history += [ask, ToolMessage(result, tool_call_id=ask.tool_calls[0]["id"])]
        return model.invoke(history)

    first = conversation("18 C")
    calls = model.bound.calls
    assert calls == 2
    second = conversation("18 C")
    assert model.bound.calls == calls, "the repeated conversation was answered from cache"
    assert second.content == first.content == "It is 18 C."
    conversation("25 C")
    assert model.bound.calls == calls + 1, "a different tool result is a miss"
    stats = cache.stats()
    assert stats["hits"] == 3
    assert stats["misses"] == 3


def test_create_agent_repeated_run_hits_the_cache(tool_model):
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"18 C in {city}"

    cache = ExactCache()
    model = tool_model.model_copy(update={"cache": cache})
    agent = create_agent(model, [get_weather])
    first = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]})
    assert model.calls == 2
    second = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]})
    assert model.calls == 2, "the second agent run made no model call"
    assert first["messages"][-1].content == second["messages"][-1].content
    # the tool-call ids in the two runs differ, yet the keys matched
    assert first["messages"][1].tool_calls[0]["id"] == second["messages"][1].tool_calls[0]["id"]


def test_works_as_a_model_cache_argument():
    cache = ExactCache()
    model = GenericFakeChatModel(messages=iter(["one", "two"]), cache=cache)
    assert model.invoke("same").content == "one"
    assert model.invoke("same").content == "one"
    assert model.invoke("other").content == "two"
    assert cache.stats()["hits"] == 1


def test_namespace_bump_invalidates_and_clear_empties():
    cache = ExactCache(namespace="v1")
    cache.update("p", "llm", [Generation(text="a")])
    assert cache.lookup("p", "llm")
    cache.namespace = "v2"
    assert cache.namespace == "v2"
    assert cache.lookup("p", "llm") is None
    cache.update("p", "llm", [Generation(text="b")])
    cache.clear()
    assert cache.lookup("p", "llm") is None
    assert cache.stats()["entries"] == 0
    with pytest.raises(ConfigError):
        cache.namespace = 3  # type: ignore[assignment]


def test_stats_count_hits_misses_entries_bytes_and_evictions():
    cache = ExactCache(maxsize=50)
    for i in range(500):
        cache.update(f"p{i}", "llm", [Generation(text="x" * 100)])
    for i in range(10):
        cache.lookup(f"p{i}", "llm")
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 10
    assert 0 < stats["entries"] <= 50
    assert stats["evictions"] >= 450
    assert stats["bytes"] >= stats["entries"] * 100


def test_max_bytes_bounds_memory():
    cache = ExactCache(maxsize=10_000, max_bytes=20_000)
    for i in range(1000):
        cache.update(f"p{i}", "llm", [Generation(text="y" * 500)])
    assert cache.stats()["bytes"] <= 20_000 * 1.1


def test_ttl_expires_entries():
    cache = ExactCache(ttl=0.05)
    cache.update("p", "llm", [Generation(text="a")])
    assert cache.lookup("p", "llm")
    time.sleep(0.2)
    assert cache.lookup("p", "llm") is None


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"maxsize": 0}, "maxsize"),
        ({"maxsize": "big"}, "'big'"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": "1h"}, "'1h'"),
        ({"namespace": 3}, "namespace"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        ExactCache(**kwargs)


def test_corrupt_entry_is_a_miss_not_a_crash(caplog):
    cache = ExactCache()
    cache._core.update("p", "llm", b"\x00not json")
    assert cache.lookup("p", "llm") is None
    assert "unreadable cache entry" in caplog.text


def test_unserialisable_result_is_not_cached(caplog):
    cache = ExactCache()
    cache.update("p", "llm", [Generation(text="a", generation_info={"obj": object()})])
    assert cache.lookup("p", "llm") is None
    assert "not cached" in caplog.text


def test_concurrent_threads_and_tasks():
    cache = ExactCache(maxsize=1000)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(300):
                key = f"p{(i * 7 + n) % 100}"
                cache.update(key, "llm", [Generation(text=key)])
                got = cache.lookup(key, "llm")
                assert got is None or got[0].text == key
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    async def tasks() -> None:
        async def one(i: int) -> None:
            await cache.aupdate(f"a{i}", "llm", [Generation(text=str(i))])
            got = await cache.alookup(f"a{i}", "llm")
            assert got[0].text == str(i)

        await asyncio.gather(*(one(i) for i in range(200)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert cache.stats()["hits"] + cache.stats()["misses"] == 8 * 300 + 200
