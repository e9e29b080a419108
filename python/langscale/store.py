"""``RedisStore``: the shared state of many worker processes, in plain Redis, Valkey or Redis
Cluster (no modules needed).

One store per process is enough; every shared object (``ExactCache``, ``SemanticCache``,
``RateLimiter``, ``ScaledChatModel``) takes it as ``store=``, or a URL as ``redis_url=`` (one
store is made per URL and reused). Keys are ``{prefix}:{tenant}:...``. Every Redis call has a
short ``timeout``; when Redis is down, slow or killed, the objects fall back to local state,
``stats()`` counts it and one warning goes to the ``langscale.store`` logger when it degrades
and one when it recovers.
"""

from __future__ import annotations

import threading
import time
from array import array

from langscale import _core

RedisStore = _core.RedisStore

_stores: dict[tuple[str, str, str | None], _core.RedisStore] = {}
_lock = threading.Lock()


def resolve(
    store: _core.RedisStore | None,
    redis_url: str | None,
    *,
    prefix: str = "langscale",
    tenant: str | None = None,
) -> _core.RedisStore | None:
    """The store an object should use: ``store``, else one shared per ``redis_url``."""
    if store is not None:
        if not isinstance(store, _core.RedisStore):
            msg = f"store must be a langscale.RedisStore, got {store!r}"
            raise _core.ConfigError(msg)
        if redis_url is not None:
            msg = "give either store= or redis_url=, not both"
            raise _core.ConfigError(msg)
        return store
    if redis_url is None:
        return None
    if not isinstance(redis_url, str):
        msg = f"redis_url must be a string, got {redis_url!r}"
        raise _core.ConfigError(msg)
    key = (redis_url, prefix, tenant)
    with _lock:
        found = _stores.get(key)
        if found is None:
            found = _stores[key] = _core.RedisStore(redis_url, prefix, tenant)
        return found


__all__ = ["RedisStore", "pack_vector", "resolve", "unpack_vector", "unwrap", "wrap"]


# -- values that carry their own expiry (the semantic cache's replicated entries) ---------------

_EXPIRING = b"LSX1"


def wrap(raw: bytes, ttl: float | None) -> bytes:
    """``raw`` with its wall-clock expiry in front, so every process honours the same TTL."""
    expires = 0 if ttl is None else int((time.time() + ttl) * 1000)
    return _EXPIRING + expires.to_bytes(8, "big") + raw


def unwrap(raw: bytes) -> bytes | None:
    """The value ``wrap`` wrote, or None once it has expired."""
    if not raw.startswith(_EXPIRING) or len(raw) < 12:
        return raw
    expires = int.from_bytes(raw[4:12], "big")
    if expires and expires <= time.time() * 1000:
        return None
    return raw[12:]


def pack_vector(vector: list[float] | None) -> bytes:
    return b"" if vector is None else array("f", vector).tobytes()


def unpack_vector(raw: bytes | None) -> list[float] | None:
    if not raw or len(raw) % 4:
        return None
    return array("f", raw).tolist()
