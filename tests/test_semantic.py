"""SemanticCache: LangChain standard suites, scoping, guard, embeddings, bad input, concurrency."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest
from langchain_core.caches import BaseCache
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from langscale import ConfigError, SemanticCache


class TestSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return SemanticCache()


class TestSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return SemanticCache()


def chat(question: str, system: str = "You are helpful.", history: tuple = ()) -> str:
    return dumps([SystemMessage(system), *history, HumanMessage(question)])


def gen(text: str) -> list[Generation]:
    return [ChatGeneration(message=AIMessage(text))]


def answer(cache: SemanticCache, prompt: str, llm: str = "m") -> str | None:
    got = cache.lookup(prompt, llm)
    return None if got is None else got[0].text


def test_retyped_question_hits_and_reports_its_similarity():
    cache = SemanticCache()
    cache.update(chat("What's the weather like in Berlin today?"), "m", gen("sunny"))
    got, info = cache.lookup_with_info(chat("what's the weather like in berlin today"), "m")
    assert got is not None and got[0].text == "sunny"
    assert info["kind"] == "semantic"
    assert cache.threshold <= info["similarity"] <= 1.0001
    assert info["matched"] == "What's the weather like in Berlin today?"
    _, exact = cache.lookup_with_info(chat("What's the weather like in Berlin today?"), "m")
    assert exact["kind"] == "exact"
    stats = cache.stats()
    assert (stats["semantic_hits"], stats["exact_hits"], stats["hits"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What's the weather like in Berlin today?", "What's the weather like in Madrid today?"),
        ("Convert 10 km to miles.", "Convert 12 km to miles."),
        (
            "How do I enable two-factor authentication?",
            "How do I disable two-factor authentication?",
        ),
        ("Which plants grow well in shade?", "Which plants don't grow well in shade?"),
        ("What events are happening in May?", "What events are happening in June?"),
    ],
)
def test_the_guard_never_answers_a_different_question(stored, asked):
    cache = SemanticCache(threshold=0.3)
    cache.update(chat(stored), "m", gen("stored answer"))
    got, info = cache.lookup_with_info(chat(asked), "m")
    assert got is None, info
    assert cache.stats()["misses"] == 1


def test_scope_separates_model_system_prompt_history_and_namespace():
    cache = SemanticCache(threshold=0.5)
    cache.update(chat("How do I reset my password?"), "m", gen("a"))
    assert answer(cache, chat("how do I reset my password"), "m") == "a"
    assert answer(cache, chat("how do I reset my password"), "other-model") is None
    assert answer(cache, chat("how do I reset my password", system="Be terse."), "m") is None
    earlier = (HumanMessage("hi"), AIMessage("hello"))
    assert answer(cache, chat("how do I reset my password", history=earlier), "m") is None
    cache.namespace = "v2"
    assert answer(cache, chat("How do I reset my password?"), "m") is None


def test_plain_string_prompts_match_whole_within_llm_string():
    cache = SemanticCache(threshold=0.5)
    cache.update("How do I reset my password?", "llm", [Generation(text="p")])
    assert cache.lookup("how do i reset my password", "llm")[0].text == "p"
    assert cache.lookup("how do i reset my password", "other") is None


def test_tool_calls_round_trip_through_a_semantic_hit():
    cache = SemanticCache()
    message = AIMessage(
        "", tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "call_1"}]
    )
    cache.update(chat("What is the weather in Oslo?"), "m", [ChatGeneration(message=message)])
    got = cache.lookup(chat("what is the weather in oslo"), "m")
    assert got[0].message.tool_calls == message.tool_calls


def test_works_with_set_llm_cache_style_models():
    cache = SemanticCache()
    model = GenericFakeChatModel(messages=iter(["first", "second"]), cache=cache)
    assert model.invoke("How many moons does Mars have?").content == "first"
    assert model.invoke("how many moons does mars have").content == "first"
    assert model.invoke("How many moons does Jupiter have?").content == "second"
    assert cache.stats()["semantic_hits"] == 1


def test_cacheable_predicate_can_veto():
    cache = SemanticCache(cacheable=lambda prompt, llm, gens: "secret" not in gens[0].text)
    cache.update("q1", "m", [Generation(text="a secret answer")])
    cache.update("q2", "m", [Generation(text="public")])
    assert cache.lookup("q1", "m") is None
    assert cache.lookup("q2", "m")[0].text == "public"


class WordEmbeddings(Embeddings):
    """A tiny deterministic bag-of-words embedder, standing in for a real one."""

    vocab = ("reset", "password", "weather", "paris", "change", "how", "forgot", "capital")

    def __init__(self) -> None:
        self.calls = 0

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        words = text.lower().replace("?", " ").split()
        v = [float(sum(w.startswith(t) for w in words)) for t in self.vocab]
        return v if any(v) else [1.0] + [0.0] * (len(self.vocab) - 1)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


def test_langchain_embeddings_are_used_and_remembered():
    emb = WordEmbeddings()
    cache = SemanticCache(embeddings=emb, threshold=0.8)
    cache.update(chat("How do I reset my password?"), "m", gen("reset it"))
    assert answer(cache, chat("password reset how?"), "m") == "reset it"
    calls = emb.calls
    assert answer(cache, chat("password reset how?"), "m") == "reset it"
    assert emb.calls == calls, "the second embedding came from the embedding cache"


async def test_langchain_embeddings_async_path():
    cache = SemanticCache(embeddings=WordEmbeddings(), threshold=0.8)
    await cache.aupdate(chat("How do I reset my password?"), "m", gen("reset it"))
    got = await cache.alookup(chat("password reset how?"), "m")
    assert got[0].text == "reset it"


class BrokenEmbeddings(WordEmbeddings):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def embed_query(self, text: str) -> list[float]:
        if self.mode == "raise":
            raise RuntimeError("provider down")
        if self.mode == "nan":
            return [math.nan] * 8
        if self.mode == "dims":
            return [1.0] * (3 + self.calls % 2)
        return [0.5] * 8


@pytest.mark.parametrize("mode", ["raise", "nan", "dims"])
def test_bad_embeddings_are_a_miss_with_a_warning_never_a_wrong_hit(mode, caplog):
    emb = BrokenEmbeddings(mode)
    cache = SemanticCache(embeddings=emb, threshold=0.01)
    for i in range(3):
        emb.calls = i
        cache.update(chat(f"question {i}"), "m", gen(f"answer {i}"))
    emb.calls = 5
    got = cache.lookup(chat("a different question"), "m")
    assert got is None
    assert "langscale" in caplog.text
    # the exact layer still works even when embeddings fail
    assert answer(cache, chat("question 0"), "m") == "answer 0"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -2}, "threshold"),
        ({"threshold": "high"}, "'high'"),
        ({"maxsize": 0}, "maxsize"),
        ({"ttl": -1}, "ttl"),
        ({"embeddings": "openai"}, "embeddings"),
        ({"embeddings": WordEmbeddings()}, "threshold is required"),
        ({"cacheable": 3}, "cacheable"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        SemanticCache(**kwargs)


def test_maxsize_bounds_entries():
    cache = SemanticCache(maxsize=50)
    for i in range(400):
        cache.update(chat(f"tell me about item number {i}"), "m", gen(str(i)))
    assert cache.stats()["entries"] <= 50


@pytest.mark.slow
def test_concurrent_threads_and_tasks_insert_and_look_up():
    cache = SemanticCache(maxsize=2000, flat_max=64)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(150):
                cache.update(chat(f"thread {t} asks question {i}"), "m", gen(f"{t}-{i}"))
                got = cache.lookup(chat(f"Thread {t} asks question {i}!"), "m")
                assert got is None or got[0].text == f"{t}-{i}"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    async def tasks() -> None:
        async def one(i: int) -> None:
            await cache.aupdate(chat(f"async question {i}"), "m", gen(str(i)))
            got = await cache.alookup(chat(f"async question {i}"), "m")
            assert got[0].text == str(i)

        await asyncio.gather(*(one(i) for i in range(100)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join(timeout=120)
    assert not errors
    stats = cache.stats()
    assert stats["exact_hits"] + stats["semantic_hits"] + stats["misses"] == 6 * 150 + 100


def test_ttl_expires_exact_and_semantic_entries():
    import time

    cache = SemanticCache(ttl=0.05)
    cache.update(chat("How do I reset my password?"), "m", gen("a"))
    assert answer(cache, chat("how do I reset my password"), "m") == "a"
    time.sleep(0.2)
    assert answer(cache, chat("How do I reset my password?"), "m") is None
    assert answer(cache, chat("how do I reset my password"), "m") is None
    assert cache.stats()["entries"] == 0


def test_failing_embeddings_still_count_misses():
    cache = SemanticCache(embeddings=BrokenEmbeddings("raise"), threshold=0.5)
    for _ in range(3):
        assert cache.lookup(chat("anything"), "m") is None
    assert cache.stats()["misses"] == 3


def test_tool_arguments_named_id_keep_conversations_apart():
    from langchain_core.messages import ToolMessage

    def convo(order: str) -> str:
        call = {"name": "get_order", "args": {"id": order}, "id": "call_1"}
        return dumps(
            [
                HumanMessage("status?"),
                AIMessage("", tool_calls=[call]),
                ToolMessage("shipped", tool_call_id="call_1"),
            ]
        )

    cache = SemanticCache()
    cache.update(convo("ORD-111"), "m", gen("order 111 shipped"))
    assert cache.lookup(convo("ORD-999"), "m") is None
