"""``ExactCache``: LangChain's ``BaseCache`` on a Rust moka cache with normalised keys.

Keys ignore what changes between identical conversations (tool-call ids, message ids,
response metadata, usage), so repeated agent conversations hit; values keep the whole
generation (tool calls, usage, generation info).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.outputs import Generation

from langscale import _codec, _core
from langscale import identity as _tenant
from langscale import metrics as _metrics
from langscale import store as _store

logger = logging.getLogger("langscale.cache")


class ExactCache(BaseCache):
    """Exact-match LLM cache: bounded (TinyLFU), optional TTL and byte bound, namespaced.

    Use with ``set_llm_cache(ExactCache())`` or a model's ``cache=`` argument. Setting
    ``namespace`` to a new value drops everything stored under the old one. With a store,
    entries are shared through Redis, each labelled with its namespace and the store's tenant
    (never served under another), and ``clear()`` clears this namespace in every process.
    """

    def __init__(
        self,
        maxsize: int = 100_000,
        max_bytes: int | None = None,
        ttl: float | None = None,
        namespace: str = "",
        *,
        store: _core.RedisStore | None = None,
        redis_url: str | None = None,
        share_tenants: bool = False,
    ) -> None:
        self._core = _core.ExactCache(maxsize, max_bytes, ttl, namespace)
        # Each tenant (langscale.tenant / RunnableConfig) has its own entries unless shared.
        self._scope = _tenant.scope_for(share_tenants)
        _metrics.track(self)
        # L2: entries shared through Redis (same JSON data, same TTL); the core reads Redis
        # on an L1 miss and fills L1 from it.
        self._store = _store.resolve(store, redis_url)
        if self._store is not None:
            self._core.share(self._store)
        self._unreadable = _codec.UnreadableLog(logger)
        # Hits on recent entries are answered with copies of their decoded templates.
        self._decoder = _codec.Decoder()

    def _l2_key(self, prompt: str, llm_string: str) -> str:
        return self._core.l2_key(prompt, llm_string)

    def _unreadable_value(self, prompt: str, llm_string: str, shared: bool, err: Exception) -> None:
        self._unreadable.note(err)
        self._core.unreadable(prompt, llm_string, shared)

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        llm_string = self._scope(llm_string)
        try:
            # One call: L1, then Redis when shared (an entry found there fills L1).
            found = self._core.lookup(prompt, llm_string)
        except ValueError as err:  # not a langscale entry in Redis (counted by the core)
            self._unreadable.note(err)
            return None
        if found is None:
            return None
        raw, shared = found
        try:
            return self._decoder.decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            self._unreadable_value(prompt, llm_string, shared, err)
            return None

    def _encode(self, return_val: Sequence[Generation]) -> bytes | None:
        try:
            return _codec.encode(return_val)
        except (TypeError, ValueError) as err:
            logger.warning("langscale: result not cached, it holds non-JSON data: %s", err)
            return None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        llm_string = self._scope(llm_string)
        raw = self._encode(return_val)
        if raw is not None:
            # L1, and Redis when shared (the value sealed with namespace and tenant).
            self._core.update(prompt, llm_string, raw)

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry of this namespace: here, in Redis and (within a poll, about
        0.1 s) in every other process's L1; other namespaces and tenants keep theirs."""
        self._core.clear()
        self._decoder.forget()

    # L1 answers inline (microseconds, never blocks) rather than in an executor thread as
    # BaseCache's defaults do; only the Redis round trip is awaited.
    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        llm_string = self._scope(llm_string)
        raw = self._core.lookup_local(prompt, llm_string)
        shared = raw is None
        if shared:
            if self._store is None:
                return None
            try:
                raw = await self._core.fetch_async(prompt, llm_string)
            except ValueError as err:  # not a langscale entry in Redis (counted by the core)
                self._unreadable.note(err)
                return None
            finally:
                self._store.flush_events()  # log a health change seen meanwhile, here
            if raw is None:
                return None
        try:
            return self._decoder.decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            self._unreadable_value(prompt, llm_string, shared, err)
            return None

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        llm_string = self._scope(llm_string)
        raw = self._encode(return_val)
        if raw is None:
            return
        if self._store is None:
            self._core.update(prompt, llm_string, raw)
        else:
            await self._core.update_async(prompt, llm_string, raw)

    async def aclear(self, **kwargs: Any) -> None:
        self.clear()

    @property
    def namespace(self) -> str:
        return self._core.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._core.namespace = value

    def stats(self) -> dict[str, int]:
        """hits, misses, evictions, entries, bytes (L1; hits + misses = lookups); with a
        store also l2_hits, l2_misses, l2_errors (L1 misses found in Redis, not found there,
        found unreadable there: they add up to misses)."""
        return self._core.stats()
