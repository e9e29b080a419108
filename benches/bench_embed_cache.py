"""CachedEmbeddings beside LangChain's ``CacheBackedEmbeddings``: the cost of a hit and of a
batch of 1,000 texts (all hits; and half new), over the same instant fake embedder (384
dimensions), so only the caches' own cost is measured.

Anchors: ``CacheBackedEmbeddings`` over ``InMemoryByteStore``, and over Redis. LangChain ships
no Redis ``ByteStore`` outside langchain-community (not a dependency here), so the Redis
anchor is ``_RedisByteStore`` below: a minimal ``ByteStore`` on redis-py with one MGET / MSET
per batch, as langchain-community's ``RedisStore`` does. Without redis-py that row is skipped.
Both Redis sides use the same local redis-server. ``CacheBackedEmbeddings`` lives in
langchain-classic since LangChain 1.0 (the ``bench`` extra installs it and redis-py). Run alone:
``python benches/bench_embed_cache.py [--quick]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

from _common import Case, Row, Settings, compare, time_calls, time_items, with_redis_server
from langchain_core.embeddings import Embeddings
from langchain_core.stores import ByteStore

import langscale
from langscale import CachedEmbeddings

DIM = 384
GROUP = "embeddings cache: CachedEmbeddings vs CacheBackedEmbeddings, 384-d, instant model"
GROUP_REDIS = "embeddings cache over Redis (local redis-server)"


class _Instant(Embeddings):
    """The same vector for every text, at no cost: what remains is the cache."""

    def __init__(self) -> None:
        self.vector = [i / DIM for i in range(DIM)]
        self.model = "instant-384"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(self.vector) for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return list(self.vector)


class _RedisByteStore(ByteStore):
    """A minimal ``ByteStore`` on redis-py: MGET / MSET / DEL / SCAN under a prefix."""

    def __init__(self, client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.client.mget([self.prefix + k for k in keys])

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        self.client.mset({self.prefix + k: v for k, v in key_value_pairs})

    def mdelete(self, keys: Sequence[str]) -> None:
        if keys:
            self.client.delete(*[self.prefix + k for k in keys])

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        for key in self.client.scan_iter(match=f"{self.prefix}{prefix or ''}*"):
            yield key.decode()[len(self.prefix) :]


def _texts(start: int, n: int) -> list[str]:
    return [
        f"chunk {i}: the quarterly report says revenue grew in region {i % 17}"
        for i in range(start, start + n)
    ]


def cases(settings: Settings) -> list[Case]:
    try:
        import langchain_classic.embeddings  # noqa: F401
    except ImportError:
        skipped = Row(
            GROUP,
            "skipped: langchain-classic (CacheBackedEmbeddings) not installed",
            "ns/call",
            0.0,
            None,
        )
        return [Case("CacheBackedEmbeddings missing", lambda: [skipped])]
    return [
        Case("hit and batch, in memory", lambda: _in_memory(settings)),
        Case("hit and batch, Redis", lambda: _with_server(_redis, settings)),
    ]


def _theirs(store: ByteStore) -> Embeddings:
    from langchain_classic.embeddings import CacheBackedEmbeddings

    return CacheBackedEmbeddings.from_bytes_store(
        _Instant(), store, namespace="instant-384", query_embedding_cache=True
    )


def _rows(group: str, ours: Embeddings, theirs: Embeddings, settings: Settings, anchor: str):
    calls = settings.pick(20_000, 1_000)
    rounds = settings.pick(7, 2)
    batch = _texts(0, 1000)
    ours.embed_documents(batch)
    theirs.embed_documents(batch)
    one = batch[:1]
    hit = compare(
        {
            "langscale": lambda: time_calls(lambda: ours.embed_documents(one), calls),
            "langchain": lambda: time_calls(lambda: theirs.embed_documents(one), calls),
        },
        rounds,
    )
    full = compare(
        {
            "langscale": lambda: time_calls(lambda: ours.embed_documents(batch), 5),
            "langchain": lambda: time_calls(lambda: theirs.embed_documents(batch), 5),
        },
        rounds,
    )
    # Half new texts per batch: each round gets fresh ones (the misses go to the model).
    fresh = iter(range(1, 100))

    def half(side: Embeddings) -> float:
        start = next(fresh) * 10_000
        mixed = [t for pair in zip(batch[:500], _texts(start, 500), strict=True) for t in pair]
        return time_items(side.embed_documents, [mixed])

    mixed = compare({"langscale": lambda: half(ours), "langchain": lambda: half(theirs)}, rounds)
    return [
        Row(
            group,
            f"hit, embed_documents([1 text]) vs {anchor}",
            "ns/call",
            hit["langscale"],
            hit["langchain"],
        ),
        Row(
            group,
            f"batch of 1,000, all hits vs {anchor}",
            "ns/call",
            full["langscale"],
            full["langchain"],
        ),
        Row(
            group,
            f"batch of 1,000, 500 new vs {anchor}",
            "ns/call",
            mixed["langscale"],
            mixed["langchain"],
        ),
    ]


def _in_memory(settings: Settings) -> list[Row]:
    from langchain_core.stores import InMemoryByteStore

    ours = CachedEmbeddings(_Instant())
    theirs = _theirs(InMemoryByteStore())
    return _rows(GROUP, ours, theirs, settings, "InMemoryByteStore")


def _with_server(run, settings: Settings) -> list[Row]:
    return with_redis_server(run, settings, GROUP_REDIS)


def _redis(url: str, settings: Settings) -> list[Row]:
    try:
        import redis
    except ImportError:
        return [Row(GROUP_REDIS, "skipped: redis-py not installed", "ns/call", 0.0, None)]
    prefix = f"b{uuid.uuid4().hex[:8]}"
    store = langscale.RedisStore(url, prefix=prefix, timeout=0.5)
    # Warm in one instance, measure in a fresh one: its L1 is empty, so the first pass of
    # each batch is answered from Redis, as in a second worker process.
    CachedEmbeddings(_Instant(), store=store).embed_documents(_texts(0, 1000))
    ours = CachedEmbeddings(_Instant(), store=store)
    theirs = _theirs(_RedisByteStore(redis.Redis.from_url(url), prefix + ":lc:"))
    cold = compare(
        {
            "langscale": lambda: time_items(
                lambda t: CachedEmbeddings(_Instant(), store=store).embed_documents(t),
                [_texts(0, 1000)],
            ),
            "langchain": lambda: time_items(theirs.embed_documents, [_texts(0, 1000)]),
        },
        settings.pick(5, 2),
    )
    rows = _rows(GROUP_REDIS, ours, theirs, settings, "_RedisByteStore (redis-py)")
    rows.append(
        Row(
            GROUP_REDIS,
            "batch of 1,000 stored by another process (L2) vs _RedisByteStore",
            "ns/call",
            cold["langscale"],
            cold["langchain"],
        )
    )
    return rows


if __name__ == "__main__":
    import argparse

    import run as runner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = [r for case in cases(Settings(quick=args.quick)) for r in case.run()]
    print(runner.render(rows))
