"""``GraphCache``: LangGraph's node cache (``graph.compile(cache=...)`` with ``CachePolicy``)
in-process, with an optional Redis L2 shared between processes.

Values go through LangGraph's typed serializer with pickle switched off and msgpack limited to
LangGraph's safe types; the Rust core stores the serializer's ``(type, bytes)`` pairs, keeps
the entries (in process and in Redis, with their TTL and the generations that make a clear
reach every process), and refuses any entry whose type is ``pickle`` (or anything not data):
such bytes are counted and treated as a miss, never handed to the serializer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from langgraph.cache.base import BaseCache, FullKey, Namespace
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
except ImportError as err:  # pragma: no cover - the extra is not installed
    msg = "langscale.GraphCache needs LangGraph: pip install 'langscale[graph]'"
    raise ImportError(msg) from err

from langscale import _core
from langscale import store as _store

logger = logging.getLogger("langscale.graph_cache")


def _safe_serde() -> JsonPlusSerializer:
    # allowed_msgpack_modules=None: only LangGraph's built-in safe types are rebuilt from
    # msgpack, so bytes from a shared store cannot name a class to construct.
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)


def _checked(full_key: Any) -> tuple[Namespace, str]:
    """``(namespace, key)`` as LangGraph passes it: a tuple of strings and a string."""
    if isinstance(full_key, tuple) and len(full_key) == 2:
        ns, key = full_key
        if (
            isinstance(ns, tuple)
            and all(isinstance(part, str) for part in ns)
            and isinstance(key, str)
        ):
            return ns, key
    msg = f"a graph cache key must be (tuple of str, str), got {full_key!r}"
    raise _core.ConfigError(msg)


class GraphCache(BaseCache[Any]):
    """LangGraph node cache: ``graph.compile(cache=langscale.GraphCache())``.

    ``GraphCache(max_entries=10_000, redis_url=None, store=None, serde=None)``. Each node
    with a ``CachePolicy`` is looked up here before it runs; ``CachePolicy(ttl=...)`` is
    honoured in process and in Redis. With ``redis_url=`` (or ``store=``) entries are shared
    between processes and ``clear(namespaces)`` reaches every process (a namespace's entries
    are keyed by a generation that ``clear`` moves on). Stored values are data only: pickle is
    off and an entry in Redis that asks for it is refused (``stats()["refused"]``).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        redis_url: str | None = None,
        store: _core.RedisStore | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        self._core = _core.NodeCache(max_entries)
        super().__init__(serde=serde or _safe_serde())
        self._store = _store.resolve(store, redis_url)
        if self._store is not None:
            self._core.share(self._store)

    # -- LangGraph's side: keys in, serializer in and out ----------------------------------

    def _loaded(
        self, keys: list[tuple[Namespace, str]], found: list[tuple[str, bytes] | None]
    ) -> dict[FullKey, Any]:
        out: dict[FullKey, Any] = {}
        for full_key, entry in zip(keys, found, strict=True):
            if entry is None:
                continue
            try:
                out[full_key] = self.serde.loads_typed(entry)
            except Exception as err:
                logger.warning("langscale: unreadable graph cache entry: %s", err)
                self._core.refuse(full_key)
        return out

    def _entries(
        self, pairs: Mapping[FullKey, tuple[Any, int | None]]
    ) -> list[tuple[Namespace, str, str, bytes, float | None]]:
        out = []
        for full_key, (value, ttl) in pairs.items():
            ns, key = _checked(full_key)
            try:
                type_, data = self.serde.dumps_typed(value)
            except (TypeError, ValueError) as err:
                # A node whose output the serializer cannot write still runs; it is not cached.
                logger.warning("langscale: graph node result not cached: %s", err)
                continue
            out.append((ns, key, type_, data, ttl))
        return out

    # -- the BaseCache interface -----------------------------------------------------------

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        """The cached values of ``keys`` that are present and not expired."""
        if not keys:
            return {}
        checked = [_checked(k) for k in keys]
        return self._loaded(checked, self._core.get(checked))

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        """``get`` for async graphs: the Redis reads are awaited."""
        if not keys:
            return {}
        checked = [_checked(k) for k in keys]
        return self._loaded(checked, await self._core.get_async(checked))

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        """Store each value for its TTL in seconds (None: until evicted or cleared)."""
        entries = self._entries(pairs)
        if entries:
            self._core.set(entries)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        """``set`` for async graphs: the Redis writes are awaited."""
        entries = self._entries(pairs)
        if entries:
            await self._core.set_async(entries)

    @staticmethod
    def _namespaces(namespaces: Sequence[Namespace] | None) -> list[Namespace] | None:
        if namespaces is None:
            return None
        return [_checked((ns, ""))[0] for ns in namespaces]

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop the entries of ``namespaces`` (all entries when None), in every process."""
        self._core.clear(self._namespaces(namespaces))

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """``clear``, for async graphs."""
        await self._core.clear_async(self._namespaces(namespaces))

    def stats(self) -> dict[str, int]:
        """hits, misses, l2_hits (misses here found in Redis), refused (entries not loaded:
        pickle or unreadable), evictions, entries."""
        return dict(self._core.stats())


__all__ = ["GraphCache"]
