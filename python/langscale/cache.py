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
    ) -> None:
        self._core = _core.ExactCache(maxsize, max_bytes, ttl, namespace)
        _metrics.track(self)

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        raw = self._core.lookup(prompt, llm_string)
        if raw is None:
            return None
        try:
            return _codec.decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("langscale: unreadable cache entry treated as a miss: %s", err)
            self._core.remove(prompt, llm_string)
            return None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        try:
            raw = _codec.encode(return_val)
        except (TypeError, ValueError) as err:
            logger.warning("langscale: result not cached, it holds non-JSON data: %s", err)
            return
        self._core.update(prompt, llm_string, raw)

    def clear(self, **kwargs: Any) -> None:
        self._core.clear()

    # The work is microseconds and never blocks, so the async trio runs inline rather than
    # in an executor thread as BaseCache's defaults do.
    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        return self.lookup(prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        self.update(prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        self.clear()

    @property
    def namespace(self) -> str:
        return self._core.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._core.namespace = value

    def stats(self) -> dict[str, int]:
        """hits, misses, evictions, entries, bytes."""
        return self._core.stats()
