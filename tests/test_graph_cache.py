"""GraphCache: LangGraph's node cache.

The scenarios of LangGraph's own cache tests (set/get, batches, TTL, namespaces, clear all and
by namespace, empty calls, corrupt entries, odd keys, large values: libs/checkpoint/tests/
test_redis_cache.py and libs/langgraph/tests/test_cache_clear.py, whose empty-list case differs
in the installed 1.2.24), rewritten for GraphCache in process and over Redis; a compiled
StateGraph with a cached node, sync and async; two caches sharing Redis; pickle refused.
"""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("langgraph")

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

import langscale
from langscale import GraphCache
from tests.test_bad_input import JUNK, SETTINGS, TEXT, clean


@pytest.fixture(params=["memory", "redis"])
def cache(request) -> GraphCache:
    if request.param == "memory":
        return GraphCache()
    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    return GraphCache(store=langscale.RedisStore(server.url, prefix=prefix))


# -- LangGraph's cache scenarios ---------------------------------------------------------


def test_set_and_get(cache):
    key = (("graph", "node"), "k1")
    cache.set({key: ({"result": 42}, None)})
    assert cache.get([key]) == {key: {"result": 42}}


def test_batch_with_and_without_ttl(cache):
    keys = [(("graph", "n1"), "k1"), (("graph", "n2"), "k2"), (("other", "n"), "k3")]
    cache.set({keys[0]: ({"r": 1}, None), keys[1]: ({"r": 2}, 60), keys[2]: ({"r": 3}, None)})
    assert cache.get(keys) == {keys[0]: {"r": 1}, keys[1]: {"r": 2}, keys[2]: {"r": 3}}


def test_ttl_expires(cache):
    key = (("graph", "node"), "ttl")
    cache.set({key: ({"data": "soon gone"}, 1)})
    assert cache.get([key]) == {key: {"data": "soon gone"}}
    time.sleep(1.2)
    assert cache.get([key]) == {}


def test_namespaces_are_isolated(cache):
    one, two = (("g1", "node"), "same"), (("g2", "node"), "same")
    cache.set({one: ({"g": 1}, None), two: ({"g": 2}, None)})
    assert cache.get([one, two]) == {one: {"g": 1}, two: {"g": 2}}


def test_clear_all(cache):
    keys = [(("graph", "n1"), "k1"), (("graph", "n2"), "k2")]
    cache.set({k: ({"r": i}, None) for i, k in enumerate(keys)})
    assert len(cache.get(keys)) == 2
    cache.clear()
    assert cache.get(keys) == {}
    cache.set({keys[0]: ({"r": "again"}, None)})
    assert cache.get(keys) == {keys[0]: {"r": "again"}}


def test_clear_by_namespace(cache):
    keys = [(("g1", "node"), "k1"), (("g2", "node"), "k2"), (("g1", "other"), "k3")]
    cache.set({k: ({"r": i}, None) for i, k in enumerate(keys)})
    cache.clear([("g1", "node"), ("g1", "other")])
    assert cache.get(keys) == {keys[1]: {"r": 1}}


def test_empty_calls(cache):
    assert cache.get([]) == {}
    cache.set({})
    assert cache.get([(("graph", "node"), "absent")]) == {}


def test_odd_keys_and_large_values(cache):
    empty_ns = ((), "empty-ns")
    colons = (("graph:with:colons", "node-with-dashes"), "key_with:colon")
    large = {"list": list(range(1000)), "nested": {"data": "x" * 1000}}
    cache.set({empty_ns: ("e", None), colons: (large, None)})
    assert cache.get([empty_ns, colons]) == {empty_ns: "e", colons: large}
    # The colons do not make one namespace alias another.
    assert cache.get([(("graph", "with", "colons", "node-with-dashes"), "key_with:colon")]) == {}


def test_async_trio(cache):
    key = (("graph", "node"), "async")

    async def main():
        await cache.aset({key: ({"async": True}, None)})
        assert await cache.aget([key]) == {key: {"async": True}}
        await cache.aclear()
        assert await cache.aget([key]) == {}

    asyncio.run(main())


def test_bad_values_raise_config_error():
    with pytest.raises(langscale.ConfigError, match="0"):
        GraphCache(max_entries=0)
    with pytest.raises(langscale.ConfigError, match="soon"):
        GraphCache().set({(("g",), "k"): (1, "soon")})
    with pytest.raises(langscale.ConfigError, match="7"):
        GraphCache(redis_url=7)  # type: ignore[arg-type]


def test_bound_evicts_oldest():
    cache = GraphCache(max_entries=2)
    keys = [(("g",), str(i)) for i in range(3)]
    for k in keys:
        cache.set({k: (k[1], None)})
    assert cache.get(keys) == {keys[1]: "1", keys[2]: "2"}
    assert cache.stats()["evictions"] == 1


def test_many_threads_set_and_get(cache):
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> dict:
        key = (("g", str(i % 4)), str(i))
        cache.set({key: ({"i": i}, None)})
        return cache.get([key])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(200)))
    assert all(r == {(("g", str(i % 4)), str(i)): {"i": i}} for i, r in enumerate(results))


# -- in a compiled graph -----------------------------------------------------------------


def build(cache: GraphCache, calls: list[int], ttl: int | None = None):
    def double(state: dict) -> dict:
        calls.append(state["value"])
        return {"value": state["value"] * 2}

    builder = StateGraph(dict)
    builder.add_node("double", double, cache_policy=CachePolicy(ttl=ttl))
    builder.add_edge(START, "double")
    builder.add_edge("double", END)
    return builder.compile(cache=cache)


def test_cached_node_runs_once_per_input(cache):
    calls: list[int] = []
    graph = build(cache, calls)
    assert graph.invoke({"value": 3}) == {"value": 6}
    assert graph.invoke({"value": 3}) == {"value": 6}
    assert graph.invoke({"value": 4}) == {"value": 8}
    assert calls == [3, 4]
    graph.clear_cache()
    graph.invoke({"value": 3})
    assert calls == [3, 4, 3]


def test_cached_node_runs_again_after_ttl(cache):
    calls: list[int] = []
    graph = build(cache, calls, ttl=1)
    graph.invoke({"value": 1})
    graph.invoke({"value": 1})
    assert calls == [1]
    time.sleep(1.2)
    graph.invoke({"value": 1})
    assert calls == [1, 1]


def test_cached_node_async(cache):
    calls: list[int] = []
    graph = build(cache, calls)

    async def main():
        assert await graph.ainvoke({"value": 5}) == {"value": 10}
        assert await graph.ainvoke({"value": 5}) == {"value": 10}
        assert calls == [5]
        await graph.aclear_cache()
        await graph.ainvoke({"value": 5})

    asyncio.run(main())
    assert calls == [5, 5]


# -- Redis shared between instances; no pickle -------------------------------------------


def test_two_instances_share_entries_and_clears(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    first, second = GraphCache(store=store), GraphCache(store=store)
    calls: list[int] = []
    build(first, calls).invoke({"value": 2})
    build(second, calls).invoke({"value": 2})
    assert calls == [2]
    assert second.stats()["l2_hits"] == 1
    # A clear in one instance reaches the other's L1 too.
    key = (("g",), "k")
    first.set({key: ("v", None)})
    assert second.get([key]) == {key: "v"}
    first.clear([("g",)])
    assert first.get([key]) == {}  # at once here
    deadline = time.monotonic() + 2
    while second.get([key]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert second.get([key]) == {}  # within a poll (0.1 s) there


def test_pickled_payload_in_redis_is_refused_not_executed(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    writer, reader = GraphCache(store=store), GraphCache(store=store)
    key = (("g",), "k")
    writer.set({key: ("honest", None)})
    # Overwrite the Redis entry with a pickle whose loading would run code.
    redis_key = writer._core.l2_key(key)
    payload = pickle.dumps(_Boom())
    # the core's wire format: magic, expiry (0: never), the framed type, the bytes
    framed = b"LSG2" + bytes(8) + len(b"pickle").to_bytes(4, "big") + b"pickle" + payload
    store.set(redis_key, framed)
    assert reader.get([key]) == {}
    assert reader.stats()["refused"] == 1
    assert not _Boom.ran
    store.set(redis_key, payload)  # not even our framing
    assert GraphCache(store=store).get([key]) == {}


def test_serializer_producing_pickle_is_refused():
    class PickleSerde:
        def dumps_typed(self, obj):
            return "pickle", pickle.dumps(obj)

        def loads_typed(self, data):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(langscale.ConfigError, match="pickle"):
        GraphCache(serde=PickleSerde()).set({(("g",), "k"): (1, None)})


class _Boom:
    ran = False

    def __reduce__(self):
        return (_Boom._run, ())

    @staticmethod
    def _run():  # pragma: no cover - must never run
        _Boom.ran = True
        return _Boom()


@settings(SETTINGS, max_examples=80)
@given(
    max_entries=st.one_of(st.just(10), JUNK),
    redis_url=st.one_of(st.none(), JUNK),
    ns=st.one_of(JUNK, st.tuples(TEXT, TEXT)),
    key=st.one_of(JUNK, TEXT),
    ttl=JUNK,
    # Lone surrogates are written as "?" by LangGraph's msgpack serializer (its InMemoryCache
    # too): not a cache matter, so left out of the values.
    value=st.one_of(JUNK, st.text(alphabet=st.characters(exclude_categories=["Cs"]))),
)
def test_junk_is_a_langscale_error_or_works(max_entries, redis_url, ns, key, ttl, value):
    if isinstance(redis_url, str):
        redis_url = None  # never dial a junk address
    cache = clean(GraphCache, max_entries=max_entries, redis_url=redis_url)
    if cache is None:
        return
    try:
        hash((ns, key))
    except TypeError:
        return  # cannot even be a dict key: LangGraph never builds one
    clean(cache.set, {(ns, key): (value, ttl)})
    got = clean(cache.get, [(ns, key)])
    if got is not None:
        assert got in ({}, {(ns, key): value}) or value != value  # NaN never equals itself
    clean(cache.clear, [ns])
    assert clean(cache.get, [(ns, key)]) in (None, {})


def test_core_node_cache_names_bad_input():
    from langscale import _core

    core = _core.NodeCache(4)
    with pytest.raises(langscale.ConfigError, match="max_entries must be a positive integer"):
        _core.NodeCache(0)
    with pytest.raises(langscale.ConfigError, match="got 'nope'"):
        core.get(["nope"])
    with pytest.raises(langscale.ConfigError, match=r"namespace\[0\] must be a str, got int 1"):
        core.get([((1,), "k")])
    with pytest.raises(langscale.ConfigError, match="ttl must be a positive number, got 'x'"):
        core.set([(("g",), "k", "json", b"1", "x")])
    with pytest.raises(langscale.ConfigError, match='produced "pickle"'):
        core.set([(("g",), "k", "json", b"1", None), (("g",), "j", "pickle", b"\x80", None)])
    assert core.get([(("g",), "k")]) == [None], "nothing of a refused batch is stored"
    with pytest.raises(langscale.ConfigError, match="no store"):
        core.l2_key((("g",), "k"))
    assert core.set([(("g",), "k", "json", b"1", None)]) is True
    assert core.get([(("g",), "k")]) == [("json", b"1")]
    core.refuse((("g",), "k"))
    stats = core.stats()
    assert (stats["hits"], stats["refused"], stats["entries"]) == (0, 1, 0)


def test_async_clear_reaches_another_instance(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    first, second = GraphCache(store=store), GraphCache(store=store)
    key = (("g",), "k")

    async def main():
        await first.aset({key: ("v", None)})
        assert await second.aget([key]) == {key: "v"}
        await first.aclear([("g",)])
        assert await first.aget([key]) == {}
        deadline = time.monotonic() + 2
        while await second.aget([key]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await second.aget([key]) == {}

    asyncio.run(main())
