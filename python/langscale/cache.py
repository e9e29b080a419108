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
from langscale import metrics as _metrics
from langscale import store as _store

logger = logging.getLogger("langscale.cache")


class ExactCache(BaseCache):
    """Exact-match LLM cache: bounded (TinyLFU), optional TTL and byte bound, namespaced.

    Use with ``set_llm_cache(ExactCache())`` or a model's ``cache=`` argument. Setting
    ``namespace`` to a new value drops everything stored under the old one.
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
    ) -> None:
        self._core = _core.ExactCache(maxsize, max_bytes, ttl, namespace)
        _metrics.track(self)
        # L2: entries shared through Redis (same JSON data, same TTL); an L2 hit fills L1.
        self._store = _store.resolve(store, redis_url)
        self._ttl = ttl
        self._l2 = {"l2_hits": 0, "l2_misses": 0}

    def _l2_key(self, prompt: str, llm_string: str) -> str:
        assert self._store is not None
        return self._store.key(f"exact:{self._core.key_of(prompt, llm_string):032x}", "")

    def _decode(self, prompt: str, llm_string: str, raw: bytes) -> list[Generation] | None:
        try:
            return _codec.decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("langscale: unreadable cache entry treated as a miss: %s", err)
            self._core.remove(prompt, llm_string)
            return None

    def _from_l2(self, prompt: str, llm_string: str, raw: bytes | None) -> list[Generation] | None:
        if raw is None:
            self._l2["l2_misses"] += 1
            return None
        found = self._decode(prompt, llm_string, raw)
        if found is not None:
            self._l2["l2_hits"] += 1
            self._core.update(prompt, llm_string, raw)
        return found

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        raw = self._core.lookup(prompt, llm_string)
        if raw is None:
            if self._store is None:
                return None
            return self._from_l2(
                prompt, llm_string, self._store.get(self._l2_key(prompt, llm_string))
            )
        return self._decode(prompt, llm_string, raw)

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        try:
            raw = _codec.encode(return_val)
        except (TypeError, ValueError) as err:
            logger.warning("langscale: result not cached, it holds non-JSON data: %s", err)
            return
        self._core.update(prompt, llm_string, raw)
        if self._store is not None:
            self._store.set(self._l2_key(prompt, llm_string), raw, self._ttl)

    def clear(self, **kwargs: Any) -> None:
        self._core.clear()

    # The work is microseconds and never blocks, so the async trio runs inline rather than
    # in an executor thread as BaseCache's defaults do.
    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        if self._store is None:
            return self.lookup(prompt, llm_string)
        raw = self._core.lookup(prompt, llm_string)
        if raw is not None:
            return self._decode(prompt, llm_string, raw)
        raw = await self._store.get_async(self._l2_key(prompt, llm_string))
        self._store.flush_events()  # log a health change seen meanwhile, here
        return self._from_l2(prompt, llm_string, raw)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        if self._store is None:
            self.update(prompt, llm_string, return_val)
            return
        try:
            raw = _codec.encode(return_val)
        except (TypeError, ValueError) as err:
            logger.warning("langscale: result not cached, it holds non-JSON data: %s", err)
            return
        self._core.update(prompt, llm_string, raw)
        await self._store.set_async(self._l2_key(prompt, llm_string), raw, self._ttl)

    async def aclear(self, **kwargs: Any) -> None:
        self.clear()

    @property
    def namespace(self) -> str:
        return self._core.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._core.namespace = value

    def stats(self) -> dict[str, int]:
        """hits, misses, evictions, entries, bytes (L1); with a store also l2_hits, l2_misses."""
        stats = self._core.stats()
        if self._store is not None:
            stats.update(self._l2)
        return stats
