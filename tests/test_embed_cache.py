"""CachedEmbeddings: misses-only batching, order, duplicates, single flight across threads and
coroutines, TTL, namespaces, Redis L2 shared by two instances, LangChain's standard suites."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

import langscale
from langscale import CachedEmbeddings, _core
from tests.test_bad_input import JUNK, SETTINGS, TEXT, clean

DIM = 8


def vector(text: str, kind: str = "d") -> list[float]:
    """Deterministic, exactly representable in f32 (multiples of 1/256 below 1)."""
    digest = hashlib.sha256((kind + text).encode()).digest()
    return [b / 256 for b in digest[:DIM]]


class FakeEmbedder(Embeddings):
    """Deterministic vectors; records every call; optional delay to hold callers in flight."""

    def __init__(self, delay: float = 0.0, model: str = "fake-1") -> None:
        self.delay = delay
        self.model = model
        self.calls: list[list[str]] = []
        self.queries: list[str] = []
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.calls.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        return [vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            self.queries.append(text)
        if self.delay:
            time.sleep(self.delay)
        return vector(text, "q")

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.calls.append(list(texts))
        await asyncio.sleep(self.delay)
        return [vector(t) for t in texts]

    async def aembed_query(self, text: str) -> list[float]:
        with self._lock:
            self.queries.append(text)
        await asyncio.sleep(self.delay)
        return vector(text, "q")


# -- LangChain's standard suites ---------------------------------------------------------


class TestCachedEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"embeddings": FakeEmbedder()}


class TestCachedEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"embeddings": FakeEmbedder()}


# -- batching ----------------------------------------------------------------------------


def test_only_misses_reach_the_model_in_one_batch_in_order():
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner)
    assert cached.embed_documents(["a", "b"]) == [vector("a"), vector("b")]
    got = cached.embed_documents(["c", "a", "d", "b"])
    assert got == [vector("c"), vector("a"), vector("d"), vector("b")]
    assert inner.calls == [["a", "b"], ["c", "d"]]
    stats = cached.stats()
    assert stats["inner_texts"] == 4
    assert (stats["hits"], stats["misses"]) == (2, 4)


def test_duplicates_in_one_batch_are_fetched_once():
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner)
    got = cached.embed_documents(["x", "y", "x", "x", "y"])
    assert got == [vector("x"), vector("y"), vector("x"), vector("x"), vector("y")]
    assert inner.calls == [["x", "y"]]
    got[0][0] = 99.0  # every position is its own list
    assert got[2][0] == vector("x")[0]
    assert cached.embed_documents(["x"]) == [vector("x")]


def test_all_hits_make_no_call_and_empty_input_is_empty():
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner)
    cached.embed_documents(["a"])
    cached.embed_documents(["a", "a"])
    assert cached.embed_documents([]) == []
    assert inner.calls == [["a"]]


def test_query_is_cached_apart_from_documents():
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner)
    assert cached.embed_query("q") == vector("q", "q")
    assert cached.embed_query("q") == vector("q", "q")
    assert inner.queries == ["q"]
    assert cached.embed_documents(["q"]) == [vector("q")]  # not the query vector
    assert inner.calls == [["q"]]


def test_inner_error_reaches_caller_and_is_not_cached():
    class Failing(FakeEmbedder):
        fail = True

        def embed_documents(self, texts):
            if self.fail:
                raise RuntimeError("provider down")
            return super().embed_documents(texts)

    inner = Failing()
    cached = CachedEmbeddings(inner)
    with pytest.raises(RuntimeError, match="provider down"):
        cached.embed_documents(["a"])
    inner.fail = False
    assert cached.embed_documents(["a"]) == [vector("a")]
    assert inner.calls == [["a"]]


def test_wrong_vector_count_from_inner_is_an_error_not_cached():
    class Short(FakeEmbedder):
        def embed_documents(self, texts):
            return [vector(texts[0])]

    cached = CachedEmbeddings(Short())
    with pytest.raises(langscale.LangscaleError):
        cached.embed_documents(["a", "b"])
    assert cached.stats()["entries"] == 0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ttl": -1}, "-1"),
        ({"max_entries": 0}, "0"),
        ({"max_entries": "many"}, "many"),
        ({"max_bytes": -5}, "-5"),
        ({"namespace": 3}, "3"),
        ({"model_id": 5}, "5"),
        ({"redis_url": 7}, "7"),
    ],
)
def test_bad_values_raise_config_error_naming_them(kwargs, named):
    with pytest.raises(langscale.ConfigError, match=named):
        CachedEmbeddings(FakeEmbedder(), **kwargs)


def test_bad_inner_and_texts_raise_config_error():
    with pytest.raises(langscale.ConfigError, match="not-a-model"):
        CachedEmbeddings("not-a-model")  # type: ignore[arg-type]
    cached = CachedEmbeddings(FakeEmbedder())
    with pytest.raises(langscale.ConfigError, match="42"):
        cached.embed_documents(["ok", 42])  # type: ignore[list-item]
    with pytest.raises(langscale.ConfigError, match="text must be valid Unicode"):
        cached.embed_documents(["ok", "bad \ud800"])
    with pytest.raises(langscale.ConfigError, match="plain"):
        cached.embed_documents("plain")  # type: ignore[arg-type]


# -- keys: namespace and model identity --------------------------------------------------


def test_namespaces_and_models_are_isolated():
    inner = FakeEmbedder()
    one = CachedEmbeddings(inner, namespace="one")
    one.embed_documents(["t"])
    one.embed_documents(["t"])
    assert len(inner.calls) == 1
    # Same store through Redis is tested below; in process each object has its own L1, so
    # isolation shows in the model identity carried in the key.
    other_model = FakeEmbedder(model="fake-2")
    assert CachedEmbeddings(other_model).model_id != CachedEmbeddings(inner).model_id
    assert "model=fake-1" in CachedEmbeddings(inner).model_id


def test_max_bytes_bounds_the_cache():
    cached = CachedEmbeddings(FakeEmbedder(), max_bytes=DIM * 4 * 10)
    cached.embed_documents([f"t{i}" for i in range(200)])
    assert cached.stats()["bytes"] <= DIM * 4 * 10 * 2  # moka settles its bound lazily
    assert cached.namespace == ""


def test_ttl_expires_entries():
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner, ttl=0.2)
    cached.embed_documents(["a"])
    cached.embed_documents(["a"])
    assert len(inner.calls) == 1
    time.sleep(0.4)
    cached.embed_documents(["a"])
    assert len(inner.calls) == 2


def test_clear_drops_entries():
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner)
    cached.embed_documents(["a"])
    cached.clear()
    cached.embed_documents(["a"])
    assert len(inner.calls) == 2


# -- single flight -----------------------------------------------------------------------


def test_threads_asking_the_same_text_make_one_inner_call():
    inner = FakeEmbedder(delay=0.2)
    cached = CachedEmbeddings(inner)
    start = threading.Barrier(16)

    def ask(_: int) -> list[list[float]]:
        start.wait()
        return cached.embed_documents(["same", "same"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(16)))
    assert all(r == [vector("same"), vector("same")] for r in results)
    assert sum(len(c) for c in inner.calls) == 1


def test_coroutines_asking_the_same_text_make_one_inner_call():
    inner = FakeEmbedder(delay=0.1)
    cached = CachedEmbeddings(inner)

    async def main():
        return await asyncio.gather(*(cached.aembed_documents(["same"]) for _ in range(100)))

    results = asyncio.run(main())
    assert all(r == [vector("same")] for r in results)
    assert inner.calls == [["same"]]


def test_coroutines_overlapping_batches_fetch_each_text_once():
    inner = FakeEmbedder(delay=0.05)
    cached = CachedEmbeddings(inner)

    async def main():
        return await asyncio.gather(
            cached.aembed_documents(["a", "b"]),
            cached.aembed_documents(["b", "c"]),
            cached.aembed_query("a"),
        )

    ab, bc, qa = asyncio.run(main())
    assert ab == [vector("a"), vector("b")]
    assert bc == [vector("b"), vector("c")]
    assert qa == vector("a", "q")
    fetched = [t for call in inner.calls for t in call]
    assert sorted(fetched) == ["a", "b", "c"]


def test_leader_error_reaches_every_waiter_and_is_not_cached():
    class SlowFailing(FakeEmbedder):
        async def aembed_documents(self, texts):
            self.calls.append(list(texts))
            await asyncio.sleep(0.05)
            raise RuntimeError("boom")

    inner = SlowFailing()
    cached = CachedEmbeddings(inner)

    async def main():
        return await asyncio.gather(
            *(cached.aembed_documents(["x"]) for _ in range(10)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(inner.calls) == 1
    assert cached.stats()["entries"] == 0


def test_cancelled_leader_hands_over_to_a_waiter():
    inner = FakeEmbedder(delay=0.1)
    cached = CachedEmbeddings(inner)

    async def main():
        leader = asyncio.ensure_future(cached.aembed_documents(["x"]))
        await asyncio.sleep(0.02)  # the leader is inside the inner call
        waiter = asyncio.ensure_future(cached.aembed_documents(["x"]))
        await asyncio.sleep(0.02)
        leader.cancel()
        return await waiter, leader

    got, leader = asyncio.run(main())
    assert leader.cancelled()
    assert got == [vector("x")]
    assert inner.calls == [["x"], ["x"]]  # the waiter fetched it itself


def test_threads_and_coroutines_share_one_fetch():
    inner = FakeEmbedder(delay=0.2)
    cached = CachedEmbeddings(inner)
    results: list[list[list[float]]] = []

    def in_thread() -> None:
        results.append(cached.embed_documents(["shared"]))

    async def main():
        threads = [threading.Thread(target=in_thread) for _ in range(4)]
        for t in threads:
            t.start()
        got = await asyncio.gather(*(cached.aembed_documents(["shared"]) for _ in range(4)))
        for t in threads:
            t.join()
        return got

    results.extend(asyncio.run(main()))
    assert results == [[vector("shared")]] * 8
    assert sum(len(c) for c in inner.calls) == 1


# -- property: the cache never changes an answer -----------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12), max_size=8), min_size=1, max_size=4))
def test_results_equal_the_inner_model(batches):
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner)
    for batch in batches:
        assert cached.embed_documents(batch) == inner.embed_documents(batch)
        for text in batch[:2]:
            assert cached.embed_query(text) == inner.embed_query(text)


# -- Redis L2 ----------------------------------------------------------------------------


def test_redis_l2_shared_between_two_instances(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    first_inner, second_inner = FakeEmbedder(), FakeEmbedder()
    first = CachedEmbeddings(first_inner, store=store, namespace="n")
    second = CachedEmbeddings(second_inner, store=store, namespace="n")
    assert first.embed_documents(["a", "b"]) == [vector("a"), vector("b")]
    assert second.embed_documents(["b", "a", "c"]) == [vector("b"), vector("a"), vector("c")]
    assert second_inner.calls == [["c"]]
    assert second.stats()["l2_hits"] == 2
    # An L2 hit filled L1: no Redis read the second time.
    second.embed_documents(["a"])
    assert second.stats()["l2_hits"] == 2


def test_redis_l2_async_and_namespace_isolation(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    first = CachedEmbeddings(FakeEmbedder(), store=store, namespace="n1")
    other_inner = FakeEmbedder()
    other = CachedEmbeddings(other_inner, store=store, namespace="n2")
    same_inner = FakeEmbedder()
    same = CachedEmbeddings(same_inner, store=store, namespace="n1")

    async def main():
        await first.aembed_documents(["a"])
        await first.aembed_query("a")
        assert await other.aembed_documents(["a"]) == [vector("a")]
        assert await same.aembed_documents(["a"]) == [vector("a")]
        assert await same.aembed_query("a") == vector("a", "q")

    asyncio.run(main())
    assert other_inner.calls == [["a"]]
    assert same_inner.calls == [] and same_inner.queries == []


def test_redis_l2_ttl(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    CachedEmbeddings(FakeEmbedder(), store=store, ttl=1).embed_documents(["a"])
    time.sleep(1.5)
    late_inner = FakeEmbedder()
    CachedEmbeddings(late_inner, store=store, ttl=1).embed_documents(["a"])
    assert late_inner.calls == [["a"]]


def test_redis_unreadable_value_is_a_miss(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    inner = FakeEmbedder()
    cached = CachedEmbeddings(inner, store=store)
    key = cached._core.l2_key("d:a", cached.model_id)
    store.set(key, b"\x80\x04 not a langscale entry")
    assert cached.embed_documents(["a"]) == [vector("a")]
    assert inner.calls == [["a"]]
    assert cached.stats()["l2_errors"] == 1


# -- junk in every public input: a langscale error or a working cache, nothing else --------


@settings(SETTINGS, max_examples=80)
@given(
    ttl=JUNK,
    max_entries=JUNK,
    max_bytes=JUNK,
    namespace=st.one_of(JUNK, TEXT),
    model_id=st.one_of(JUNK, TEXT),
    texts=st.one_of(JUNK, st.lists(st.one_of(TEXT, JUNK), max_size=4)),
)
def test_junk_is_a_langscale_error_or_works(
    ttl, max_entries, max_bytes, namespace, model_id, texts
):
    cached = clean(
        CachedEmbeddings,
        FakeEmbedder(),
        ttl=ttl,
        max_entries=max_entries,
        max_bytes=max_bytes,
        namespace=namespace,
        model_id=model_id,
    )
    if cached is None:
        return
    got = clean(cached.embed_documents, texts)
    if got is not None:
        assert got == [vector(t) for t in texts]
    query = texts[0] if isinstance(texts, list) and texts else texts
    got = clean(cached.embed_query, query)
    if got is not None:
        assert got == vector(query, "q")


# -- the core's batch calls under CachedEmbeddings ------------------------------------------


async def awaited(start):
    """Await what ``start`` returns (the core's awaitables need a running loop)."""
    return await start()


def test_core_batch_calls_name_bad_input():
    core = _core.ExactCache()
    with pytest.raises(_core.ConfigError, match="prompts must be a list of str, got 'abc'"):
        core.fetch_many("abc", "m")
    with pytest.raises(_core.ConfigError, match=r"prompts\[1\] must be a str, got int 3"):
        core.fetch_many(["a", 3], "m")
    with pytest.raises(_core.ConfigError, match=r"values\[0\] must be bytes, got 'x'"):
        core.insert_many(["a"], "m", ["x"])
    with pytest.raises(_core.ConfigError, match="2 prompts but 1 values"):
        core.insert_many(["a", "b"], "m", [b"x"])
    # unshared: L1 only, nothing to send, nothing to fetch
    assert core.insert_many(["a"], "m", [b"x"]) is None
    assert core.lookup_local("a", "m") == b"x"
    assert core.fetch_many(["a", "b"], "m") == [None, None]
    assert asyncio.run(awaited(lambda: core.fetch_many_async(["a"], "m"))) == [None]


def test_core_batches_blocking_and_awaited_agree(redis_server, redis_prefix):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    writer = _core.ExactCache()
    writer.share(store)
    write = writer.insert_many(["a", "b"], "m", [b"1", b"2"])
    assert write is not None and write.send() is True
    with pytest.raises(_core.ConfigError, match="sent already"):
        write.send()
    key = writer.l2_key("bad", "m")
    store.set(key, b"not a langscale entry")
    readers = [_core.ExactCache(), _core.ExactCache()]
    for reader in readers:
        reader.share(store)
    prompts = ["b", "bad", "none", "a"]
    blocking = readers[0].fetch_many(prompts, "m")
    fetched = asyncio.run(awaited(lambda: readers[1].fetch_many_async(prompts, "m")))
    assert blocking == fetched == [b"2", None, None, b"1"]
    assert readers[0].stats() == readers[1].stats()
    stats = readers[0].stats()
    assert (stats["l2_hits"], stats["l2_misses"], stats["l2_errors"]) == (2, 1, 1)
    # the awaited write lands like the blocking one
    pending = readers[1].insert_many(["c"], "m", [b"3"])
    assert pending is not None
    assert asyncio.run(awaited(pending.send_async)) is True
    assert readers[0].fetch_many(["c"], "m") == [b"3"]


def test_redis_batch_written_once_per_text(redis_server, redis_prefix):
    """Each new text reaches Redis once, in the batch's one write (no per-text SET)."""
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    inner = FakeEmbedder()
    first = CachedEmbeddings(inner, store=store)
    texts = [f"t{i}" for i in range(50)]
    assert first.embed_documents(texts) == [vector(t) for t in texts]
    second_inner = FakeEmbedder()
    second = CachedEmbeddings(second_inner, store=store)
    assert asyncio.run(second.aembed_documents(texts[::-1])) == [vector(t) for t in texts[::-1]]
    assert second_inner.calls == []
    assert second.stats()["l2_hits"] == 50
