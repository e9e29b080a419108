"""Who a call is for: the tenant (and optionally a user inside it), from LangChain's
``RunnableConfig`` (``configurable`` or ``metadata``) or from ``with langscale.tenant(...)``.

The identity reaches the router's run (budgets and limits), the caches' scopes (a lookup made
for one tenant never answers another unless the cache is built with ``share_tenants=True``)
and the per-tenant metrics. It lives in a ``contextvars.ContextVar``, so it follows asyncio
tasks and threads started with a copied context.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from langchain_core.runnables.config import var_child_runnable_config

from langscale import _core


class Identity(NamedTuple):
    """A tenant and, optionally, a user inside it. ``Identity(None, None)``: nobody."""

    tenant: str | None
    user: str | None = None


T = TypeVar("T")
NOBODY = Identity(None, None)
_CURRENT: contextvars.ContextVar[Identity] = contextvars.ContextVar(
    "langscale_tenant", default=NOBODY
)
_KEYS_LOCK = threading.Lock()
_KEYS = ("tenant", "user")


def _name(what: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        msg = f"{what} must be a non-empty string of at most 256 characters, got {value!r}"
        raise _core.ConfigError(msg)
    return value


def set_keys(tenant: str = "tenant", user: str = "user") -> None:
    """The ``configurable``/``metadata`` keys the tenant and user are read from (default
    "tenant" and "user"), for every model and cache in this process."""
    global _KEYS
    t, u = _name("tenant key", tenant), _name("user key", user)
    assert t is not None and u is not None
    with _KEYS_LOCK:
        _KEYS = (t, u)


def keys() -> tuple[str, str]:
    """The (tenant, user) keys read from a RunnableConfig."""
    return _KEYS


@contextmanager
def tenant(name: str, user: str | None = None) -> Iterator[Identity]:
    """``with langscale.tenant("acme", user="u1"):`` every langscale call inside (sync or
    async, in this context) is made for that tenant. Works under ``async with`` code too:
    ``contextvars`` follow the task, so no async twin is needed."""
    identity = Identity(_name("tenant", name), _name("user", user))
    token = _CURRENT.set(identity)
    try:
        yield identity
    finally:
        _CURRENT.reset(token)


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "langscale_deadline", default=None
)


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """``with langscale.deadline(2.0):`` every request a ``ScaledChatModel`` starts inside
    (sync or async, streams included, in this context) has a time budget of ``seconds``:
    retries, waits and fail-overs included, and cost-aware fail-over weighs price against
    it. It wins over a tenant's ``deadline`` in the budgets and the model's own. Nested, the
    innermost applies."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        msg = f"deadline must be a number of seconds, got {seconds!r}"
        raise _core.ConfigError(msg)
    if not (0 < seconds < 1e12):  # NaN fails too
        msg = f"deadline must be above 0 seconds, got {seconds!r}"
        raise _core.ConfigError(msg)
    token = _DEADLINE.set(float(seconds))
    try:
        yield float(seconds)
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    """The time budget ``with langscale.deadline(...)`` set for this context, if any."""
    return _DEADLINE.get()


def _from_mapping(found: Mapping[str, Any] | None) -> Identity:
    if not found:
        return NOBODY
    t_key, u_key = _KEYS
    t, u = found.get(t_key), found.get(u_key)
    if t is None and u is None:  # the common case, without building a tuple
        return NOBODY
    return Identity(
        str(t) if t is not None and t != "" else None, str(u) if u is not None and u != "" else None
    )


def from_config(config: Mapping[str, Any] | None) -> Identity:
    """The identity a RunnableConfig names: ``configurable`` first, then ``metadata``."""
    if not config:
        return NOBODY
    for part in ("configurable", "metadata"):
        found = _from_mapping(config.get(part))
        if found != NOBODY:
            return found
    return NOBODY


def into_metadata(config: Any) -> Any:
    """A RunnableConfig with the tenant and user its ``configurable`` names copied into its
    ``metadata`` (where LangChain hands them to the run's callbacks and to us); unchanged
    when it names none."""
    if not isinstance(config, Mapping):
        return config
    found = _from_mapping(config.get("configurable"))
    if found == NOBODY:
        return config
    t_key, u_key = _KEYS
    metadata = dict(config.get("metadata") or {})
    if found.tenant is not None:
        metadata.setdefault(t_key, found.tenant)
    if found.user is not None:
        metadata.setdefault(u_key, found.user)
    return {**config, "metadata": metadata}


def current(metadata: Mapping[str, Any] | None = None) -> Identity:
    """Who the call now running is for: the run's own metadata (``metadata`` from a callback
    run manager: LangChain copies ``configurable`` values there), then the RunnableConfig
    LangChain set for this context, then ``with langscale.tenant(...)``. Missing parts of
    one source are not filled from another: the first that names a tenant or user wins."""
    found = _from_mapping(metadata)
    if found != NOBODY:
        return found
    config = var_child_runnable_config.get()
    if config:
        found = from_config(config)
        if found != NOBODY:
            return found
    return _CURRENT.get()


def of_run(run_manager: Any) -> Identity:
    """The identity of a LangChain run (its metadata), else of this context."""
    return current(getattr(run_manager, "metadata", None) if run_manager is not None else None)


@contextmanager
def bound(identity: Identity) -> Iterator[None]:
    """Make ``identity`` current for the block (used around cache calls LangChain makes
    without passing the config along)."""
    token = _CURRENT.set(identity)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def streamed(config: Any, items: Iterator[T]) -> Iterator[T]:
    """``items`` (a model's stream) with the identity ``config`` names current while each
    item is produced, not while the caller holds it; unchanged when it names none."""
    who = from_config(config) if isinstance(config, Mapping) else NOBODY
    return items if who == NOBODY else _bound_iter(who, items)


def _bound_iter(identity: Identity, items: Iterator[T]) -> Iterator[T]:
    try:
        while True:
            with bound(identity):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            with bound(identity):
                close()


def astreamed(config: Any, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """The same for an async stream."""
    who = from_config(config) if isinstance(config, Mapping) else NOBODY
    return items if who == NOBODY else _bound_aiter(who, items)


async def _bound_aiter(identity: Identity, items: AsyncIterator[T]) -> AsyncIterator[T]:
    it = items.__aiter__()
    try:
        while True:
            with bound(identity):
                try:
                    item = await it.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with bound(identity):
                await aclose()


def scoped(llm_string: str) -> str:
    """A cache's ``llm_string`` within the current tenant's scope: unchanged with no tenant,
    else the tenant appended, so an entry stored for one tenant is never another's."""
    identity = current()
    if identity.tenant is None:
        return llm_string
    suffix = f"\x00langscale-tenant={identity.tenant}"
    return llm_string if llm_string.endswith(suffix) else llm_string + suffix


def _unscoped(llm_string: str) -> str:
    return llm_string


def scope_for(share_tenants: Any) -> Callable[[str], str]:
    """A cache's scoping function: per tenant, or (``share_tenants=True``) one for all."""
    if not isinstance(share_tenants, bool):
        msg = f"share_tenants must be True or False, got {share_tenants!r}"
        raise _core.ConfigError(msg)
    return _unscoped if share_tenants else scoped


__all__ = [
    "Identity",
    "bound",
    "current",
    "from_config",
    "into_metadata",
    "keys",
    "of_run",
    "scope_for",
    "scoped",
    "set_keys",
    "streamed",
    "astreamed",
    "tenant",
]
