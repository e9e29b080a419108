"""``GraphCache``: LangGraph's node cache (``graph.compile(cache=...)`` with ``CachePolicy``)
in-process, with an optional Redis L2 shared between processes.

Values go through LangGraph's typed serializer with pickle switched off and msgpack limited to
LangGraph's safe types; an entry read from Redis whose type is ``pickle`` (or anything not data)
is refused, counted and treated as a miss, never loaded.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
import uuid
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

# The serializer types that are data: anything else read back (``pickle``) is refused.
_DATA_TYPES = frozenset({"null", "bytes", "bytearray", "json", "msgpack"})
_MAGIC = b"lsg1\n"
_POLL = 0.1  # seconds between reads of a namespace's generation in Redis
# An entry in process: (generation, namespace, key); Redis keys hash the last two.
_LocalKey = tuple[str, Namespace, str]


def _safe_serde() -> JsonPlusSerializer:
    # allowed_msgpack_modules=None: only LangGraph's built-in safe types are rebuilt from
    # msgpack, so bytes from a shared store cannot name a class to construct.
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)


@functools.lru_cache(maxsize=4096)
def _ns_id(ns: Namespace) -> str:
    return hashlib.sha256(json.dumps(list(ns)).encode()).hexdigest()[:32]


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


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


def _pack(type_: str, data: bytes, expiry: float | None) -> bytes:
    header = json.dumps({"t": type_, "e": expiry}, separators=(",", ":")).encode()
    return _MAGIC + header + b"\n" + data


def _unpack(raw: bytes) -> tuple[str, bytes, float | None]:
    if not raw.startswith(_MAGIC):
        msg = "not a langscale graph cache entry"
        raise ValueError(msg)
    header, sep, data = raw[len(_MAGIC) :].partition(b"\n")
    if not sep:
        msg = "truncated graph cache entry"
        raise ValueError(msg)
    fields = json.loads(header)
    type_, expiry = fields.get("t"), fields.get("e")
    if not isinstance(type_, str) or not (expiry is None or isinstance(expiry, (int, float))):
        msg = "malformed graph cache entry header"
        raise ValueError(msg)
    return type_, data, expiry


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
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            msg = f"max_entries must be a positive integer, got {max_entries!r}"
            raise _core.ConfigError(msg)
        super().__init__(serde=serde or _safe_serde())
        self._max = max_entries
        self._store = _store.resolve(store, redis_url)
        # L1: local key -> (namespace, serializer type, bytes, expiry); insertion order is the
        # eviction order (oldest first).
        self._entries: dict[_LocalKey, tuple[Namespace, str, bytes, float | None]] = {}
        self._lock = threading.Lock()
        # Redis generation key -> (value, when read); see _generations.
        self._seen: dict[str, tuple[bytes | None, float]] = {}
        self._counts = {"hits": 0, "misses": 0, "l2_hits": 0, "refused": 0, "evictions": 0}

    # -- keys -----------------------------------------------------------------------------

    # A namespace's entries are keyed by its generation, which clear() moves on in Redis.
    # Generations are re-read at most every _POLL seconds, so a hit in this process costs no
    # Redis call; a clear() elsewhere is seen within _POLL (here, at once).

    def _generation_key(self, ns: Namespace | None) -> str:
        assert self._store is not None
        return self._store.key("graph-gen", "*" if ns is None else _ns_id(ns))

    def _cached_generations(self, keys: list[str]) -> tuple[dict[str, bytes | None], list[str]]:
        now = time.monotonic()
        fresh: dict[str, bytes | None] = {}
        with self._lock:
            for key in keys:
                seen = self._seen.get(key)
                if seen is not None and now - seen[1] < _POLL:
                    fresh[key] = seen[0]
        return fresh, [key for key in keys if key not in fresh]

    def _remember(self, fetched: dict[str, bytes | None]) -> None:
        now = time.monotonic()
        with self._lock:
            for key, value in fetched.items():
                self._seen[key] = (value, now)

    def _joined(
        self, namespaces: set[Namespace], known: dict[str, bytes | None]
    ) -> dict[Namespace, str]:
        everything = (known[self._generation_key(None)] or b"0").decode(errors="replace")
        return {
            ns: everything
            + "."
            + (known[self._generation_key(ns)] or b"0").decode(errors="replace")
            for ns in namespaces
        }

    def _generations(self, namespaces: set[Namespace]) -> dict[Namespace, str]:
        """The current generation of each namespace (the ``clear()``-all one + its own)."""
        if self._store is None:
            return dict.fromkeys(namespaces, "0")
        keys = [self._generation_key(None)] + [self._generation_key(ns) for ns in namespaces]
        known, stale = self._cached_generations(keys)
        fetched = {key: self._store.get(key) for key in stale}
        self._remember(fetched)
        return self._joined(namespaces, {**known, **fetched})

    async def _agenerations(self, namespaces: set[Namespace]) -> dict[Namespace, str]:
        if self._store is None:
            return dict.fromkeys(namespaces, "0")
        keys = [self._generation_key(None)] + [self._generation_key(ns) for ns in namespaces]
        known, stale = self._cached_generations(keys)
        store = self._store
        values = await asyncio.gather(*(store.get_async(key) for key in stale))
        fetched = dict(zip(stale, values, strict=True))
        self._remember(fetched)
        return self._joined(namespaces, {**known, **fetched})

    @staticmethod
    def _local_key(ns: Namespace, key: str, generation: str) -> _LocalKey:
        return (generation, ns, key)

    def _redis_key(self, local: _LocalKey) -> str:
        assert self._store is not None
        generation, ns, key = local
        return self._store.key("graph", f"{generation}:{_ns_id(ns)}:{_key_id(key)}")

    # -- the BaseCache interface -----------------------------------------------------------

    def _load(self, type_: str, data: bytes) -> tuple[bool, Any]:
        if type_ not in _DATA_TYPES:
            with self._lock:
                self._counts["refused"] += 1
            logger.warning("langscale: refused a graph cache entry of type %r", type_)
            return False, None
        try:
            return True, self.serde.loads_typed((type_, data))
        except Exception as err:
            with self._lock:
                self._counts["refused"] += 1
            logger.warning("langscale: unreadable graph cache entry: %s", err)
            return False, None

    def _local(
        self, local: _LocalKey, now: float
    ) -> tuple[Namespace, str, bytes, float | None] | None:
        with self._lock:
            entry = self._entries.get(local)
            if entry is not None and entry[3] is not None and entry[3] <= now:
                del self._entries[local]
                entry = None
        return entry

    def _finish(
        self,
        wanted: list[tuple[FullKey, tuple[Namespace, str, bytes, float | None] | None]],
    ) -> dict[FullKey, Any]:
        out: dict[FullKey, Any] = {}
        for full_key, entry in wanted:
            if entry is None:
                with self._lock:
                    self._counts["misses"] += 1
                continue
            ok, value = self._load(entry[1], entry[2])
            if ok:
                with self._lock:
                    self._counts["hits"] += 1
                out[full_key] = value
        return out

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        """The cached values of ``keys`` that are present and not expired."""
        if not keys:
            return {}
        keys = [_checked(k) for k in keys]
        generations = self._generations({ns for ns, _ in keys})
        now = time.time()
        wanted = []
        for ns, key in keys:
            local = self._local_key(tuple(ns), key, generations[tuple(ns)])
            entry = self._local(local, now)
            if entry is None and self._store is not None:
                raw = self._store.get(self._redis_key(local))
                entry = self._from_l2(tuple(ns), local, raw, now)
            wanted.append(((ns, key), entry))
        return self._finish(wanted)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        """``get`` for async graphs: the Redis reads are awaited, concurrently."""
        if not keys:
            return {}
        if self._store is None:
            return self.get(keys)
        keys = [_checked(k) for k in keys]
        generations = await self._agenerations({ns for ns, _ in keys})
        now = time.time()
        locals_ = [self._local_key(tuple(ns), key, generations[tuple(ns)]) for ns, key in keys]
        entries = [self._local(local, now) for local in locals_]
        missing = [i for i, entry in enumerate(entries) if entry is None]
        store = self._store
        raws = await asyncio.gather(
            *(store.get_async(self._redis_key(locals_[i])) for i in missing)
        )
        for i, raw in zip(missing, raws, strict=True):
            entries[i] = self._from_l2(tuple(keys[i][0]), locals_[i], raw, now)
        return self._finish([((ns, key), e) for (ns, key), e in zip(keys, entries, strict=True)])

    def _from_l2(
        self, ns: Namespace, local: _LocalKey, raw: bytes | None, now: float
    ) -> tuple[Namespace, str, bytes, float | None] | None:
        if raw is None:
            return None
        try:
            type_, data, expiry = _unpack(raw)
        except ValueError as err:
            with self._lock:
                self._counts["refused"] += 1
            logger.warning("langscale: unreadable graph cache entry in Redis: %s", err)
            return None
        if expiry is not None and expiry <= now:
            return None
        if type_ not in _DATA_TYPES:
            return (ns, type_, data, expiry)  # refused by _load, never stored in L1
        entry = (ns, type_, data, expiry)
        self._put(local, entry)
        with self._lock:
            self._counts["l2_hits"] += 1
        return entry

    def _put(self, local: _LocalKey, entry: tuple[Namespace, str, bytes, float | None]) -> None:
        with self._lock:
            self._entries.pop(local, None)
            self._entries[local] = entry
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]
                self._counts["evictions"] += 1

    def _entries_for(
        self, pairs: Mapping[FullKey, tuple[Any, int | None]], generations: dict[Namespace, str]
    ) -> list[tuple[str, bytes, float | None]]:
        """Store each pair in L1; returns (Redis key, value, ttl) for each."""
        now = time.time()
        out = []
        for (ns, key), (value, ttl) in pairs.items():
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))):
                msg = f"ttl must be a number of seconds or None, got {ttl!r}"
                raise _core.ConfigError(msg)
            try:
                type_, data = self.serde.dumps_typed(value)
            except (TypeError, ValueError) as err:
                # A node whose output the serializer cannot write still runs; it is not cached.
                logger.warning("langscale: graph node result not cached: %s", err)
                continue
            if type_ not in _DATA_TYPES:
                msg = f"GraphCache stores data only; the serializer produced {type_!r}"
                raise _core.ConfigError(msg)
            expiry = None if ttl is None else now + ttl
            local = self._local_key(tuple(ns), key, generations[tuple(ns)])
            self._put(local, (tuple(ns), type_, data, expiry))
            if self._store is not None:
                out.append((self._redis_key(local), _pack(type_, data, expiry), ttl))
        return out

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        """Store each value for its TTL in seconds (None: until evicted or cleared)."""
        if not pairs:
            return
        pairs = {_checked(k): v for k, v in pairs.items()}
        generations = self._generations({ns for ns, _ in pairs})
        for key, value, ttl in self._entries_for(pairs, generations):
            self._store.set(key, value, ttl)  # type: ignore[union-attr]

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        """``set`` for async graphs: the Redis writes are awaited, concurrently."""
        if not pairs:
            return
        pairs = {_checked(k): v for k, v in pairs.items()}
        generations = await self._agenerations({ns for ns, _ in pairs})
        writes = self._entries_for(pairs, generations)
        if writes:
            store = self._store
            assert store is not None
            await asyncio.gather(*(store.set_async(k, v, ttl) for k, v, ttl in writes))

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop the entries of ``namespaces`` (all entries when None), in every process."""
        if namespaces is not None:
            namespaces = [_checked((ns, ""))[0] for ns in namespaces]
        with self._lock:
            if namespaces is None:
                self._entries.clear()
            else:
                dropped = {_checked((ns, ""))[0] for ns in namespaces}
                for local in [k for k, v in self._entries.items() if v[0] in dropped]:
                    del self._entries[local]
        if self._store is not None:
            token = uuid.uuid4().hex.encode()
            keys = (
                [self._generation_key(None)]
                if namespaces is None
                else [self._generation_key(tuple(ns)) for ns in namespaces]
            )
            for key in keys:
                self._store.set(key, token)
            self._remember(dict.fromkeys(keys, token))

    # clear() is two short Redis writes at most per namespace; it runs inline.
    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """``clear``, for async graphs."""
        self.clear(namespaces)

    def stats(self) -> dict[str, int]:
        """hits, misses, l2_hits (misses here found in Redis), refused (entries not loaded:
        pickle or unreadable), evictions, entries."""
        with self._lock:
            return {**self._counts, "entries": len(self._entries)}


__all__ = ["GraphCache"]
