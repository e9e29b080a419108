"""What the caches count: every lookup is a hit or a miss (an unreadable or expired entry is a
miss), entries from Redis that cannot be read are counted in ``l2_errors`` by both caches, and
a stored empty list is a hit in both, as in LangChain's InMemoryCache."""

from __future__ import annotations

import logging
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.caches import InMemoryCache
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

import langscale
from langscale import ExactCache, SemanticCache, _core

LLM = "fake-model{temperature:0}"
QUESTIONS = [
    "What is the capital of Peru?",
    "what is the capital of peru",
    "How many legs does a spider have?",
    "Who wrote Don Quixote?",
    "who wrote don quixote",
]


def prompt(text: str) -> str:
    return dumps([HumanMessage(content=text)])


def answer(text: str) -> list[ChatGeneration]:
    return [ChatGeneration(message=AIMessage(content=text))]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def hits(cache) -> int:
    return cache.stats()["hits"]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.sampled_from(QUESTIONS), st.booleans()),
        st.tuples(st.just("lookup"), st.sampled_from(QUESTIONS), st.booleans()),
        st.tuples(st.just("clear"), st.just(""), st.booleans()),
        st.tuples(st.just("namespace"), st.sampled_from(["", "a", "b:c"]), st.booleans()),
    ),
    max_size=30,
)


def run(cache, steps) -> tuple[int, int]:
    """Apply the steps; (lookups made, lookups that returned a value)."""
    lookups = found = 0
    for op, text, empty in steps:
        if op == "update":
            cache.update(prompt(text), LLM, [] if empty else answer(text))
        elif op == "lookup":
            lookups += 1
            found += cache.lookup(prompt(text), LLM) is not None
        elif op == "clear":
            cache.clear()
        else:
            cache.namespace = text
    return lookups, found


@settings(max_examples=60, deadline=None)
@given(steps=ops)
def test_lookups_are_hits_plus_misses(steps):
    for cache in (ExactCache(), SemanticCache()):
        lookups, found = run(cache, steps)
        stats = cache.stats()
        assert stats["hits"] + stats["misses"] == lookups
        assert stats["hits"] == found


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=ops)
def test_lookups_are_hits_plus_misses_with_redis(redis_server, steps):
    store = langscale.RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
    exact = ExactCache(store=store)
    lookups, found = run(exact, steps)
    s = exact.stats()
    assert s["hits"] + s["misses"] == lookups
    assert s["l2_hits"] + s["l2_misses"] + s["l2_errors"] == s["misses"]
    assert s["hits"] + s["l2_hits"] == found
    semantic = SemanticCache(store=store)
    lookups, found = run(semantic, steps)
    s = semantic.stats()
    assert s["hits"] + s["misses"] == lookups and s["hits"] == found


# -- an empty generations list -------------------------------------------------------------


def test_an_empty_list_is_stored_and_served_as_by_in_memory_cache():
    reference = InMemoryCache()
    reference.update(prompt("q"), LLM, [])
    assert reference.lookup(prompt("q"), LLM) == []
    for cache in (ExactCache(), SemanticCache()):
        cache.update(prompt("q"), LLM, [])
        assert cache.lookup(prompt("q"), LLM) == [], type(cache).__name__
        assert hits(cache) == 1


async def test_an_empty_list_async_and_through_redis(redis_server):
    store = langscale.RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
    for make in (lambda: ExactCache(store=store), lambda: SemanticCache(store=store)):
        writer, reader = make(), make()
        await writer.aupdate(prompt("empty"), LLM, [])
        assert await writer.alookup(prompt("empty"), LLM) == []
        assert wait_for(lambda r=reader: r.lookup(prompt("empty"), LLM) is not None) is True
        assert reader.lookup(prompt("empty"), LLM) == []


# -- unreadable entries from Redis -----------------------------------------------------------

GARBAGE = [
    b"\x80\x04\x95cos\nsystem\n",  # a pickle: never executed
    b'{"v":1,"g":[{"k":"nope"}]}',  # our codec's framing, a kind it does not know
    b"LSX1\x00\x00\x00\x00\x00\x00\x00\x00{}",  # another wrapper
    b"",
]


def test_exact_l2_unreadable_entries_are_counted_and_logged_once(redis_server, caplog):
    store = langscale.RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
    cache = ExactCache(store=store)
    caplog.set_level(logging.DEBUG, logger="langscale.cache")
    for i, raw in enumerate(GARBAGE):
        assert store.set(cache._l2_key(prompt(f"p{i}"), LLM), raw, None)
        assert cache.lookup(prompt(f"p{i}"), LLM) is None
    # a value sealed with the right label whose payload the codec refuses
    key, sealed = cache._core.l2_entry(prompt("bad codec"), LLM, GARBAGE[1])
    assert store.set(key, sealed, None)
    assert ExactCache(store=store).lookup(prompt("bad codec"), LLM) is None
    s = cache.stats()
    assert s["l2_errors"] == len(GARBAGE) and s["l2_hits"] == 0 and s["l2_misses"] == 0
    assert s["misses"] == len(GARBAGE) and s["hits"] == 0
    records = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(records) == len(GARBAGE) + 1  # one line per entry
    assert [r.levelno for r in records[: len(GARBAGE)]] == [logging.WARNING] + [logging.DEBUG] * (
        len(GARBAGE) - 1
    )


def test_semantic_unreadable_entries_are_counted(redis_server, caplog):
    store = langscale.RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
    cache = SemanticCache(store=store)
    raw_stream = _core.IndexStream(store, "default")
    # a labelled entry whose value the codec refuses: applied, then a miss when looked up
    raw_stream.publish(
        [
            ("k", b"entry"),
            ("n", b""),
            ("p", prompt("Who discovered penicillin?").encode()),
            ("l", LLM.encode()),
            ("v", GARBAGE[0]),
            ("x", bytes(8)),
            ("e", b""),
        ]
    )
    # an event that is not readable at all, and one of the old unlabelled format
    raw_stream.publish([("k", b"entry"), ("n", b"")])
    raw_stream.publish([("k", b"add"), ("p", b"x"), ("l", b"y"), ("v", b"z")])

    def applied() -> bool:
        cache._apply_shared()
        s = cache.stats()
        return s["entries"] == 1 and s["l2_errors"] == 2

    wait_for(applied)
    assert cache.lookup(prompt("Who discovered penicillin?"), LLM) is None
    assert cache.lookup(prompt("who discovered penicillin"), LLM) is None  # entry dropped
    s = cache.stats()
    assert (s["l2_errors"], s["hits"], s["misses"], s["entries"]) == (3, 0, 2, 0)
