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


__all__ = ["RedisStore", "resolve"]
