"""Cache hits hand out objects nobody else holds: a caller mutating its answer (message
content, tool calls, metadata, generation info) never changes what another hit returns,
whichever cache, layer (exact, semantic, Redis L2) or API (sync, async, model.invoke)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.caches import BaseCache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)

from langscale import ExactCache, SemanticCache, _codec

PROMPT = dumps([SystemMessage("You ship orders."), HumanMessage("Where is order A-1042?")])
REWORDED = dumps([SystemMessage("You ship orders."), HumanMessage("where is order A-1042")])
LLM = "tool-model"


def tool_answer() -> list[Generation]:
    message = AIMessage(
        content=[{"type": "text", "text": "Checking."}],
        tool_calls=[
            {"name": "track", "args": {"order": "A-1042", "carriers": ["DHL"]}, "id": "call_1"}
        ],
        additional_kwargs={"refusal": None, "extra": {"k": [1, 2]}},
        response_metadata={"model_name": "m", "logprobs": {"content": [{"p": -0.1}]}},
        usage_metadata={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 4},
        },
        id="run-1",
    )
    return [
        ChatGeneration(message=message, generation_info={"finish_reason": "tool_calls"}),
        Generation(text="plain", generation_info={"logprobs": [0.5]}),
    ]


def mutate(generations: list[Generation]) -> None:
    """Change every mutable part of an answer in place."""
    chat, plain = generations[0], generations[1]
    assert isinstance(chat, ChatGeneration) and isinstance(chat.message, AIMessage)
    message = chat.message
    assert isinstance(message.content, list) and isinstance(message.content[0], dict)
    message.content[0]["text"] = "MUTATED"
    message.content.append("more")
    message.tool_calls[0]["args"]["order"] = "MUTATED"
    message.tool_calls[0]["args"]["carriers"].append("UPS")
    message.tool_calls.append({"name": "x", "args": {}, "id": "y", "type": "tool_call"})
    message.additional_kwargs["extra"]["k"].append(3)
    message.additional_kwargs["new"] = 1
    message.response_metadata["logprobs"]["content"][0]["p"] = 0.0
    message.response_metadata["model_name"] = "MUTATED"
    assert message.usage_metadata is not None
    message.usage_metadata["input_tokens"] = 999
    message.usage_metadata["input_token_details"]["cache_read"] = 999
    message.id = "MUTATED"
    assert chat.generation_info is not None and plain.generation_info is not None
    chat.generation_info["finish_reason"] = "MUTATED"
    chat.generation_info["new"] = True
    plain.generation_info["logprobs"].append(1.0)
    plain.text = "MUTATED"
    chat.message = AIMessage("replaced")


def assert_isolated(hit: Callable[[], list[Generation] | None]) -> None:
    """Hits in a row: mutating each one changes neither the hit taken before the mutation
    nor any taken after (the first hit after a store decodes; later ones are copies)."""
    stored = tool_answer()
    held = hit()
    assert held is not None and held == stored
    for _ in range(3):
        new = hit()
        assert new is not None and new == stored
        assert new[0] is not held[0] and new[0].message is not held[0].message
        mutate(held)
        assert held != stored
        assert new == stored
        assert new[0].message.content == [{"type": "text", "text": "Checking."}]
        assert new[0].message.tool_calls[0]["args"] == {"order": "A-1042", "carriers": ["DHL"]}
        assert new[0].message.usage_metadata["input_token_details"] == {"cache_read": 4}
        assert new[0].generation_info == {"finish_reason": "tool_calls"}
        held = new
    mutate(held)
    assert hit() == stored


def semantic() -> SemanticCache:
    return SemanticCache()


CACHES: dict[str, Callable[[], BaseCache]] = {"exact": ExactCache, "semantic": semantic}


@pytest.mark.parametrize("make", CACHES.values(), ids=CACHES.keys())
def test_sync_hits_share_nothing_mutable(make):
    cache = make()
    cache.update(PROMPT, LLM, tool_answer())
    assert_isolated(lambda: cache.lookup(PROMPT, LLM))


@pytest.mark.parametrize("make", CACHES.values(), ids=CACHES.keys())
def test_async_hits_share_nothing_mutable(make):
    cache = make()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cache.aupdate(PROMPT, LLM, tool_answer()))
        assert_isolated(lambda: loop.run_until_complete(cache.alookup(PROMPT, LLM)))
    finally:
        loop.close()


def test_semantic_layer_hits_share_nothing_mutable():
    cache = SemanticCache()
    cache.update(PROMPT, LLM, tool_answer())

    def hit() -> list[Generation] | None:
        got, info = cache.lookup_with_info(REWORDED, LLM)
        assert info["kind"] == "semantic"
        return got

    assert_isolated(hit)


class _EchoEmbeddings:
    """A LangChain-style Embeddings: the exact layer runs before it is ever called."""

    def embed_query(self, text: str) -> list[float]:
        return [1.0, float(len(text))]

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


def test_exact_hits_with_custom_embeddings_share_nothing_mutable():
    cache = SemanticCache(embeddings=_EchoEmbeddings(), threshold=0.9)  # type: ignore[arg-type]
    cache.update(PROMPT, LLM, tool_answer())
    assert_isolated(lambda: cache.lookup(PROMPT, LLM))
    loop = asyncio.new_event_loop()
    try:
        assert_isolated(lambda: loop.run_until_complete(cache.alookup(PROMPT, LLM)))
    finally:
        loop.close()


@pytest.mark.parametrize("make", CACHES.values(), ids=CACHES.keys())
def test_model_invoke_hits_return_independent_messages(make):
    cache = make()
    stored = tool_answer()[0].message
    model = GenericFakeChatModel(messages=iter([stored]), cache=cache)
    question = [HumanMessage("Where is order A-1042?")]
    model.invoke(question)  # the miss that stores the answer
    held = model.invoke(question)
    for _ in range(3):
        new = model.invoke(question)
        assert new.tool_calls == held.tool_calls == stored.tool_calls
        held.tool_calls[0]["args"]["order"] = "MUTATED"
        held.additional_kwargs["extra"]["k"].clear()
        held.response_metadata["logprobs"]["content"].clear()
        assert new.tool_calls[0]["args"]["order"] == "A-1042"
        assert new.additional_kwargs["extra"] == {"k": [1, 2]}
        assert new.response_metadata["logprobs"] == {"content": [{"p": -0.1}]}
        held = new


@pytest.mark.parametrize("make", CACHES.values(), ids=CACHES.keys())
def test_a_replaced_value_is_served_not_the_old_template(make):
    cache = make()
    cache.update(PROMPT, LLM, tool_answer())
    assert cache.lookup(PROMPT, LLM) == tool_answer()
    assert cache.lookup(PROMPT, LLM) == tool_answer()
    new = [ChatGeneration(message=AIMessage("new answer"))]
    cache.update(PROMPT, LLM, new)
    assert cache.lookup(PROMPT, LLM) == new
    cache.clear()
    assert cache.lookup(PROMPT, LLM) is None


def test_chunks_and_text_generations_keep_their_types():
    chunk = ChatGenerationChunk(
        message=AIMessageChunk(content="part", tool_call_chunks=[]),
        generation_info={"a": [1]},
    )
    stored = [chunk, GenerationChunk(text="t", generation_info=None)]
    cache = ExactCache()
    cache.update("p", "llm", stored)
    for _ in range(3):
        got = cache.lookup("p", "llm")
        assert got == stored
        assert [type(g) for g in got] == [ChatGenerationChunk, GenerationChunk]
        assert type(got[0].message) is AIMessageChunk
        got[0].generation_info["a"].append(2)  # type: ignore[index]


@pytest.mark.parametrize("bound", [{"size": 2}, {"max_bytes": 1_000}, {"max_bytes": 10}])
def test_decoder_answers_every_entry_within_its_bounds(bound):
    decoder = _codec.Decoder(**bound)
    entries = [_codec.encode([ChatGeneration(message=AIMessage(f"answer {i}"))]) for i in range(5)]
    for _ in range(3):
        for i, raw in enumerate(entries):
            got = decoder.decode(raw)
            assert got[0].text == f"answer {i}"
            assert got[0].message.content == f"answer {i}"
            assert len(decoder._templates) <= bound.get("size", 1_024)
            assert decoder._bytes <= bound.get("max_bytes", 16 << 20)
            assert decoder._bytes == sum(2 * len(k) for k in decoder._templates)
    decoder.forget()
    assert decoder._bytes == 0 and decoder.decode(entries[0])[0].text == "answer 0"


def test_messages_with_extra_attributes_are_decoded_on_every_hit():
    # Extra attributes (AIMessage allows them) are not templated: such an entry is decoded
    # afresh on each hit, which gives the same guarantees.
    message = AIMessage("x", custom={"tags": ["a"]})
    raw = _codec.encode([ChatGeneration(message=message)])
    decoder = _codec.Decoder()
    first, second, third = (decoder.decode(raw) for _ in range(3))
    assert first == second == third == [ChatGeneration(message=message)]
    assert decoder._templates[raw] is None
    second[0].message.custom["tags"].append("b")  # type: ignore[attr-defined]
    assert third[0].message.custom == {"tags": ["a"]}  # type: ignore[attr-defined]
    assert decoder.decode(raw)[0].message.custom == {"tags": ["a"]}  # type: ignore[attr-defined]


def test_threads_hitting_one_entry_each_get_their_own_objects():
    cache = ExactCache()
    cache.update(PROMPT, LLM, tool_answer())
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                got = cache.lookup(PROMPT, LLM)
                assert got == tool_answer()
                mutate(got)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.lookup(PROMPT, LLM) == tool_answer()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


def scribble(value: Any) -> None:
    """Change every dict and list inside ``value`` in place."""
    if isinstance(value, dict):
        for item in list(value.values()):
            scribble(item)
        value["scribbled"] = True
    elif isinstance(value, list):
        for item in value:
            scribble(item)
        value.append("scribbled")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(info=st.dictionaries(st.text(max_size=6), JSON, max_size=4), extra=JSON)
def test_any_json_answer_comes_back_equal_and_unshared(info: dict[str, Any], extra: Any):
    message = AIMessage("x", additional_kwargs={"extra": extra}, response_metadata=dict(info))
    stored = [ChatGeneration(message=message, generation_info=dict(info))]
    decoder = _codec.Decoder()
    raw = _codec.encode(stored)
    held = decoder.decode(raw)
    for _ in range(3):  # the decoded objects first, then copies of the template
        new = decoder.decode(raw)
        assert held == new == stored
        scribble(held[0].message.additional_kwargs)
        scribble(held[0].message.response_metadata)
        scribble(held[0].generation_info)
        assert new == stored
        held = new
