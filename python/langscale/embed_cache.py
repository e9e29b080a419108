"""``CachedEmbeddings``: any LangChain ``Embeddings`` behind the Rust exact cache (moka: TinyLFU,
TTL, size bound) with an optional Redis L2 shared between processes.

Only the misses of a batch reach the inner model, in one call, each text once; concurrent
callers missing on the same text wait for the one call already fetching it (threads and
coroutines alike). Vectors are stored as little-endian f32 bytes, never pickled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
from array import array
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

from langscale import _core
from langscale import store as _store

logger = logging.getLogger("langscale.embed_cache")

# Documents and queries are keyed apart (see the class docstring); the prefix also keeps a
# text that happens to be a JSON message list from being canonicalised by the key function.
_DOCUMENT = "d:"
_QUERY = "q:"
_IDENTITY_FIELDS = ("model", "model_name", "model_id", "deployment_name", "dimensions", "size")


class _LeaderGone(Exception):
    """The caller fetching a text was cancelled: its waiters fetch for themselves."""


def _identity(embeddings: Embeddings) -> str:
    """The model identity part of the key: class plus the fields that name the model."""
    cls = type(embeddings)
    parts = [f"{cls.__module__}.{cls.__qualname__}"]
    for field in _IDENTITY_FIELDS:
        value = getattr(embeddings, field, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            parts.append(f"{field}={value}")
    return "|".join(parts)


def _encode(vector: Sequence[float]) -> bytes:
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _decode(raw: bytes) -> list[float]:
    if len(raw) % 4:
        msg = f"an embedding of {len(raw)} bytes is not f32 data"
        raise ValueError(msg)
    packed = array("f")
    packed.frombytes(raw)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


class CachedEmbeddings(Embeddings):
    """Any LangChain ``Embeddings`` behind a Rust cache, with an optional Redis L2.

    ``CachedEmbeddings(embeddings, ttl=None, max_entries=100_000, max_bytes=None,
    namespace="", model_id=None, redis_url=None, store=None)``.

    The key of a vector is the namespace, the model identity (``model_id``, by default the
    inner class and its ``model`` / ``model_name`` / ``dimensions`` fields) and a 128-bit hash
    of the text. ``embed_documents`` asks the inner model only for the texts it has not seen,
    in one batch, each distinct text once, and returns vectors in the caller's order; a text
    another caller is already fetching is waited for, not fetched again.

    Queries are cached too, keyed apart from documents: unlike LangChain's
    ``CacheBackedEmbeddings`` (which does not cache queries by default, and with
    ``query_embedding_cache=True`` shares one entry between a query and a document of the
    same text), a model that embeds queries differently from documents (instruction-tuned
    models do) never gets one answered with the other.

    Vectors are stored as f32 (what embedding models produce): results, hit or miss, are the
    inner model's values rounded to f32. With ``redis_url=`` (or ``store=``) entries are
    shared between processes for ``ttl`` seconds, labelled with the namespace; ``clear()``
    empties this namespace everywhere.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        *,
        ttl: float | None = None,
        max_entries: int = 100_000,
        max_bytes: int | None = None,
        namespace: str = "",
        model_id: str | None = None,
        redis_url: str | None = None,
        store: _core.RedisStore | None = None,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            msg = f"embeddings must be a LangChain Embeddings, got {embeddings!r}"
            raise _core.ConfigError(msg)
        if model_id is not None and not isinstance(model_id, str):
            msg = f"model_id must be a string, got {model_id!r}"
            raise _core.ConfigError(msg)
        self._inner = embeddings
        self._core = _core.ExactCache(max_entries, max_bytes, ttl, namespace)
        self._model = model_id if model_id is not None else _identity(embeddings)
        self._store = _store.resolve(store, redis_url)
        if self._store is not None:
            self._core.share(self._store)
        # Texts being fetched now: key -> the future every caller of that text waits on.
        self._inflight: dict[str, concurrent.futures.Future[list[float]]] = {}
        self._lock = threading.Lock()
        self._calls = 0
        self._texts = 0
        self._settled = 0  # batches stored so far (see _claim)

    @property
    def embeddings(self) -> Embeddings:
        """The inner model."""
        return self._inner

    @property
    def namespace(self) -> str:
        """The namespace in every key."""
        return self._core.namespace

    @property
    def model_id(self) -> str:
        """The model identity in every key."""
        return self._model

    # -- lookups --------------------------------------------------------------------------

    def _l1(self, key: str) -> list[float] | None:
        raw = self._core.lookup_local(key, self._model)
        if raw is None:
            return None
        try:
            return _decode(raw)
        except ValueError:
            self._core.unreadable(key, self._model)
            return None

    def _from_l2(
        self, keys: list[str], raws: list[bytes | None], found: dict[str, list[float]]
    ) -> list[str]:
        """Put the readable vectors the core fetched from Redis (and put in L1) into
        ``found``; returns the keys still missing."""
        missing = []
        for key, raw in zip(keys, raws, strict=True):
            try:
                if raw is not None:
                    found[key] = _decode(raw)
                    continue
            except ValueError as err:
                logger.warning("langscale: unreadable embedding in Redis: %s", err)
                self._core.unreadable(key, self._model, True)
            missing.append(key)
        return missing

    # -- single flight --------------------------------------------------------------------

    def _claim(
        self, keys: list[str], found: dict[str, list[float]], settled: int
    ) -> tuple[list[str], dict[str, concurrent.futures.Future[list[float]]]]:
        """Split missing keys into those this caller fetches (it leads) and those another
        caller is fetching (futures to wait on). A key stored since the first look (``settled``
        is the count of stores then) is taken from L1 into ``found``."""
        lead: list[str] = []
        wait: dict[str, concurrent.futures.Future[list[float]]] = {}
        with self._lock:
            recheck = self._settled != settled
            for key in keys:
                future = self._inflight.get(key)
                if future is not None:
                    wait[key] = future
                    continue
                # A leader stores before it lets go of the key, so this look under the lock
                # closes the gap between the first look and the claim (only needed when
                # something was stored meanwhile: each look counts in stats()).
                vector = self._l1(key) if recheck else None
                if vector is not None:
                    found[key] = vector
                    continue
                self._inflight[key] = concurrent.futures.Future()
                lead.append(key)
        return lead, wait

    def _settle(
        self, keys: list[str], vectors: list[list[float]]
    ) -> tuple[list[list[float]], _core.PendingWrite | None]:
        """Store the fetched vectors (L1) and hand them to every waiter; returns the vectors
        as stored and the Redis write still to send (None when not shared)."""
        raws = [_encode(vector) for vector in vectors]
        stored = [_decode(raw) for raw in raws]
        with self._lock:
            self._calls += 1
            self._texts += len(keys)
            write = self._core.insert_many(keys, self._model, raws)
            for key, vector in zip(keys, stored, strict=True):
                self._inflight.pop(key).set_result(vector)
            # Last: a caller that reads the new count finds every vector above in L1.
            self._settled += 1
        return stored, write

    def _fail(self, keys: list[str], error: BaseException) -> None:
        """The leader's call failed: every waiter gets the error, nothing is stored."""
        if not isinstance(error, Exception):
            # Cancelled (or interrupted): not an answer about the texts, so waiters retry.
            error = _LeaderGone()
        with self._lock:
            for key in keys:
                future = self._inflight.pop(key, None)
                if future is not None and not future.done():
                    future.set_exception(error)

    def _checked(self, vectors: Any, count: int) -> list[list[float]]:
        if not isinstance(vectors, list) or len(vectors) != count:
            msg = f"the inner model returned {vectors!r:.80} for {count} texts"
            raise _core.LangscaleError(msg)
        return vectors

    # -- the public API -------------------------------------------------------------------

    @staticmethod
    def _texts_of(texts: Any) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            msg = f"texts must be a list of strings, got {texts!r}"
            raise _core.ConfigError(msg)
        for text in texts:
            if not isinstance(text, str):
                msg = f"every text must be a string, got {text!r}"
                raise _core.ConfigError(msg)
        return list(texts)

    def _plan(self, texts: list[str], prefix: str) -> tuple[list[str], dict[str, list[float]], int]:
        settled = self._settled
        keys = [prefix + text for text in texts]
        found: dict[str, list[float]] = {}
        for key in dict.fromkeys(keys):
            try:
                vector = self._l1(key)
            except _core.ConfigError:
                msg = f"text must be valid Unicode (no lone surrogates), got {key[len(prefix) :]!r}"
                raise _core.ConfigError(msg) from None
            if vector is not None:
                found[key] = vector
        return keys, found, settled

    def _embed(self, texts: list[str], prefix: str, single: bool) -> list[list[float]]:
        keys, found, settled = self._plan(texts, prefix)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing and self._store is not None:
            missing = self._from_l2(missing, self._core.fetch_many(missing, self._model), found)
        if missing:
            lead, wait = self._claim(missing, found, settled)
            if lead:
                try:
                    batch = [key[len(prefix) :] for key in lead]
                    if single:
                        vectors = self._checked([self._inner.embed_query(batch[0])], 1)
                    else:
                        vectors = self._checked(self._inner.embed_documents(batch), len(batch))
                    stored, write = self._settle(lead, vectors)
                except BaseException as err:
                    self._fail(lead, err)
                    raise
                if write is not None:
                    write.send()
                found.update(zip(lead, stored, strict=True))
            try:
                for key, future in wait.items():
                    found[key] = future.result()
            except _LeaderGone:
                return self._embed(texts, prefix, single)
        # Every caller gets its own lists: mutating one never changes another's.
        return [list(found[key]) for key in keys]

    async def _aembed(self, texts: list[str], prefix: str, single: bool) -> list[list[float]]:
        keys, found, settled = self._plan(texts, prefix)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing and self._store is not None:
            raws = await self._core.fetch_many_async(missing, self._model)
            self._store.flush_events()
            missing = self._from_l2(missing, raws, found)
        if missing:
            lead, wait = self._claim(missing, found, settled)
            if lead:
                try:
                    batch = [key[len(prefix) :] for key in lead]
                    if single:
                        vectors = self._checked([await self._inner.aembed_query(batch[0])], 1)
                    else:
                        vectors = self._checked(
                            await self._inner.aembed_documents(batch), len(batch)
                        )
                    stored, write = self._settle(lead, vectors)
                except BaseException as err:
                    self._fail(lead, err)
                    raise
                if write is not None:
                    await write.send_async()
                    self._store.flush_events()  # type: ignore[union-attr]
                found.update(zip(lead, stored, strict=True))
            try:
                for key, future in wait.items():
                    found[key] = await asyncio.wrap_future(future)
            except _LeaderGone:
                return await self._aembed(texts, prefix, single)
        return [list(found[key]) for key in keys]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts`` in order; only texts not cached reach the inner model, in
        one ``embed_documents`` call, each once."""
        return self._embed(self._texts_of(texts), _DOCUMENT, single=False)

    def embed_query(self, text: str) -> list[float]:
        """The query vector of ``text`` (cached apart from documents)."""
        return self._embed(self._texts_of([text]), _QUERY, single=True)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` on the inner model's ``aembed_documents``, without a thread."""
        return await self._aembed(self._texts_of(texts), _DOCUMENT, single=False)

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` on the inner model's ``aembed_query``, without a thread."""
        return (await self._aembed(self._texts_of([text]), _QUERY, single=True))[0]

    def clear(self) -> None:
        """Drop every vector of this namespace: here, in Redis and in other processes' L1."""
        self._core.clear()

    def stats(self) -> dict[str, int]:
        """The exact cache's counters (hits, misses, entries, bytes, evictions; with Redis
        l2_hits, l2_misses, l2_errors) plus ``inner_calls`` and ``inner_texts``."""
        stats = dict(self._core.stats())
        stats["inner_calls"] = self._calls
        stats["inner_texts"] = self._texts
        return stats


__all__ = ["CachedEmbeddings"]
