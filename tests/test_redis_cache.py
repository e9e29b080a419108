"""ExactCache with a Redis L2 and SemanticCache replicated through a Redis Stream: one process's
answer is a hit in another; data only (a poisoned entry is a miss); TTL across processes; Redis
down means L1 only, never an exception."""

from __future__ import annotations

import time

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

import langscale
from langscale import ExactCache, SemanticCache
from tests.multiprocess import Start, run_together

LLM = "fake-model{temperature:0}"


def prompt(text: str) -> str:
    from langchain_core.load import dumps

    return dumps([HumanMessage(content=text)])


def answer(text: str) -> list[ChatGeneration]:
    return [
        ChatGeneration(
            message=AIMessage(
                content=text,
                tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}],
            )
        )
    ]


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- ExactCache L2 ------------------------------------------------------------------------------


def test_exact_l2_hit_in_another_cache_fills_l1(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    a = ExactCache(store=store, ttl=60)
    b = ExactCache(store=store, ttl=60)
    a.update(prompt("hi"), LLM, answer("hello"))
    found = b.lookup(prompt("hi"), LLM)
    assert found is not None
    assert found[0].message.content == "hello"
    assert found[0].message.tool_calls[0]["args"] == {"city": "Paris"}
    assert b.stats()["l2_hits"] == 1 and b.stats()["entries"] == 1  # filled L1
    assert b.lookup(prompt("hi"), LLM) is not None
    assert b.stats()["l2_hits"] == 1 and b.stats()["hits"] == 1  # second hit from L1
    assert b.lookup(prompt("other"), LLM) is None and b.stats()["l2_misses"] == 1


def test_exact_l2_ttl_and_namespace(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    a = ExactCache(store=store, ttl=0.3)
    a.update(prompt("short"), LLM, answer("x"))
    key = a._l2_key(prompt("short"), LLM)
    ttl_ms = int(redis_server.cli("PTTL", key))
    assert 0 < ttl_ms <= 300
    other_ns = ExactCache(store=store, namespace="v2")
    assert other_ns.lookup(prompt("short"), LLM) is None
    time.sleep(0.4)
    assert ExactCache(store=store).lookup(prompt("short"), LLM) is None


def test_exact_l2_poisoned_entry_is_a_miss(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    cache = ExactCache(store=store)
    key = cache._l2_key(prompt("p"), LLM)
    # A pickle payload (or any non-langscale bytes) is never executed: it is a miss.
    assert store.set(key, b"\x80\x04\x95cos\nsystem\n", None)
    assert cache.lookup(prompt("p"), LLM) is None
    assert store.set(key, b'{"v":1,"g":[{"k":"nope"}]}', None)
    assert cache.lookup(prompt("p"), LLM) is None


async def test_exact_l2_async(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    a = ExactCache(store=store)
    b = ExactCache(store=store)
    await a.aupdate(prompt("async"), LLM, answer("yes"))
    found = await b.alookup(prompt("async"), LLM)
    assert found is not None and found[0].message.content == "yes"
    # the same judgement as the sync path: L1 filled, counted, a second lookup from L1
    assert (b.stats()["l2_hits"], b.stats()["entries"]) == (1, 1)
    again = await b.alookup(prompt("async"), LLM)
    assert again is not None and b.stats()["hits"] == 1 and b.stats()["l2_hits"] == 1
    assert await b.alookup(prompt("none"), LLM) is None and b.stats()["l2_misses"] == 1
    # an entry that opens but does not decode: a miss, an l2_errors, gone from L1
    key, sealed = b._core.l2_entry(prompt("bad"), LLM, b'{"v":1,"g":[{"k":"nope"}]}')
    assert store.set(key, sealed, None)
    assert await b.alookup(prompt("bad"), LLM) is None
    s = b.stats()
    assert (s["l2_hits"], s["l2_errors"], s["entries"]) == (1, 1, 1)
    assert s["l2_hits"] + s["l2_misses"] + s["l2_errors"] == s["misses"]
    # and the sync lookup of the same entry reads Redis again (not L1), counted alike
    assert b.lookup(prompt("bad"), LLM) is None and b.stats()["l2_errors"] == 2


def test_exact_with_redis_down_is_l1_only(killable_redis, redis_prefix):
    store = langscale.RedisStore(killable_redis.url, prefix=redis_prefix, timeout=0.05)
    cache = ExactCache(store=store)
    cache.update(prompt("a"), LLM, answer("1"))
    killable_redis.kill()
    cache.update(prompt("b"), LLM, answer("2"))  # no exception
    assert cache.lookup(prompt("b"), LLM) is not None  # L1
    started = time.monotonic()
    for i in range(50):
        assert cache.lookup(prompt(f"missing {i}"), LLM) is None
    # down is known after the first failure: later misses do not wait for a timeout each
    assert time.monotonic() - started < 1.0
    assert store.stats()["skipped"] >= 40
    killable_redis.start()
    wait_for(lambda: store.up, timeout=10)
    cache.update(prompt("c"), LLM, answer("3"))
    assert ExactCache(store=store).lookup(prompt("c"), LLM) is not None


# -- SemanticCache through a Redis Stream --------------------------------------------------------


def test_semantic_entries_reach_another_cache(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    a = SemanticCache(store=store, ttl=60)
    b = SemanticCache(store=store, ttl=60)
    a.update(prompt("What's the weather like in Berlin today?"), LLM, answer("sunny"))
    found = wait_for(
        lambda: b.lookup_with_info(prompt("what's the weather like in berlin today"), LLM)[0]
    )
    assert found[0].message.content == "sunny"
    _, info = b.lookup_with_info(prompt("what's the weather like in berlin today"), LLM)
    assert info["kind"] in ("semantic", "exact")
    # the guard still holds on replicated entries
    assert b.lookup(prompt("What's the weather like in Madrid today?"), LLM) is None
    # a cache that starts late loads what is there
    late = SemanticCache(store=store)
    assert wait_for(lambda: late.lookup(prompt("What's the weather like in Berlin today?"), LLM))


def test_semantic_clear_and_ttl_cross_processes(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    a = SemanticCache(store=store, ttl=0.5)
    b = SemanticCache(store=store, ttl=60)  # its own longer TTL does not extend a's entries
    a.update(prompt("How tall is the Eiffel tower?"), LLM, answer("330 m"))
    assert wait_for(lambda: b.lookup(prompt("How tall is the Eiffel tower?"), LLM))
    time.sleep(0.6)
    assert b.lookup(prompt("How tall is the Eiffel tower?"), LLM) is None
    b.update(prompt("Capital of France?"), LLM, answer("Paris"))
    assert wait_for(lambda: a.lookup(prompt("Capital of France?"), LLM))
    b.clear()
    wait_for(lambda: a.lookup(prompt("Capital of France?"), LLM) is None)


def test_semantic_with_redis_down_stays_local(killable_redis, redis_prefix):
    store = langscale.RedisStore(killable_redis.url, prefix=redis_prefix, timeout=0.05)
    cache = SemanticCache(store=store)
    killable_redis.kill()
    cache.update(prompt("Who wrote Hamlet?"), LLM, answer("Shakespeare"))
    assert cache.lookup(prompt("who wrote hamlet"), LLM) is not None


# -- several OS processes -----------------------------------------------------------------------


def _producer(_start: Start, url, prefix):
    store = langscale.RedisStore(url, prefix=prefix)
    exact = ExactCache(store=store)
    semantic = SemanticCache(store=store, shared_name="mp")
    exact.update(prompt("exact question"), LLM, answer("exact answer"))
    semantic.update(prompt("How many moons does Mars have?"), LLM, answer("two"))
    time.sleep(0.3)  # let the stream append go out


def test_answers_cached_in_one_process_hit_in_another(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    exact = ExactCache(store=store)
    semantic = SemanticCache(store=store, shared_name="mp")
    run_together(_producer, [(redis_server.url, redis_prefix)], timeout=60)
    found = exact.lookup(prompt("exact question"), LLM)
    assert found is not None and found[0].message.content == "exact answer"
    hit = wait_for(lambda: semantic.lookup(prompt("how many moons does mars have"), LLM))
    assert hit[0].message.content == "two"
    assert semantic.stats()["semantic_hits"] + semantic.stats()["exact_hits"] >= 1


def test_redis_url_shares_one_store_per_url(redis_server):
    a = ExactCache(redis_url=redis_server.url)
    b = SemanticCache(redis_url=redis_server.url, shared_name="url")
    assert b._stream is not None
    assert a._store is ExactCache(redis_url=redis_server.url)._store
    p = prompt(f"url {time.time()}")
    a.update(p, LLM, answer("via url"))
    assert ExactCache(redis_url=redis_server.url).lookup(p, LLM) is not None
