"""``RateLimiter``: LangChain's ``BaseRateLimiter`` on the Rust GCRA limiter.

Works as ``rate_limiter=`` for any LangChain chat model, and offers more to callers that know
more: a token estimate, a priority, a timeout, and a permit to settle real usage with.
"""

from __future__ import annotations

from typing import Literal

from langchain_core.rate_limiters import BaseRateLimiter

from langscale import _core
from langscale import identity as _identity
from langscale import metrics as _metrics
from langscale import store as _store

Priority = Literal["high", "standard", "batch"]


class RateLimiter(BaseRateLimiter):
    """Requests-per-second/minute, tokens-per-minute and concurrency limits, any combination.

    Waiters are woken when their turn is due (no polling), served high, standard, then batch,
    first come first served within a priority; ``priority_aging`` seconds of waiting lift a
    waiter one level, so batch work is never starved.

    Waiters of different tenants (``langscale.tenant(...)``, the call's RunnableConfig, or
    ``tenant=``) share the limit by weighted fair queuing on tokens: a tenant sending 20x the
    traffic of another cannot push the other's wait above its share. ``tenant_weights``
    (``{"acme": 2}``, default 1 each; ``set_tenant_weight`` at run time) sets the shares. In one
    process exactly; shared through Redis, a tenant refused within its share holds every other
    tenant, in every process, to its own share (rate x weight / weights of the active tenants)
    until it is served (set the same weights in every process).

    ``burst`` is how many requests may go at once (default: 20 ms worth of the rate, at least
    1); ``token_burst`` how many tokens (default: one minute's worth).
    """

    def __init__(
        self,
        requests_per_second: float | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrency: int | None = None,
        burst: int | None = None,
        *,
        token_burst: int | None = None,
        priority_aging: float = 5.0,
        store: _core.RedisStore | None = None,
        redis_url: str | None = None,
        name: str = "default",
        lease: int = 1,
        local_share: float | None = None,
        slot_ttl: float = 30.0,
        tenant_weights: dict[str, float] | None = None,
    ) -> None:
        shared = _store.resolve(store, redis_url)
        self._shared = shared is not None
        self._store = shared
        # With a store: one limit for every process naming it (langscale.store, the README).
        self._core = _core.RateLimiter(
            requests_per_second,
            requests_per_minute,
            tokens_per_minute,
            max_concurrency,
            burst,
            token_burst,
            priority_aging,
            tenant_weights,
            store=shared,
            name=name,
            lease=lease,
            local_share=local_share,
            slot_ttl=slot_ttl,
        )
        if shared is None:
            _metrics.track(self)

    def acquire(
        self,
        *,
        blocking: bool = True,
        tokens: int = 0,
        priority: Priority = "standard",
        timeout: float | None = None,
        tenant: str | None = None,
    ) -> _core.Permit | _core.SharedPermit | Literal[False]:
        """Wait for admission (releasing the GIL) and return a ``Permit``.

        With ``blocking=False`` return a permit only if one is available now, else ``False``.
        Raises ``RateLimitTimeout`` if ``timeout`` seconds pass first. ``tenant``: whose turn
        this is (default: the current tenant).
        """
        if not blocking:
            return self._core.try_acquire(tokens, priority, self._tenant(tenant)) or False
        return self._core.acquire(tokens, priority, timeout, self._tenant(tenant))

    async def aacquire(
        self,
        *,
        blocking: bool = True,
        tokens: int = 0,
        priority: Priority = "standard",
        timeout: float | None = None,
        tenant: str | None = None,
    ) -> _core.Permit | _core.SharedPermit | Literal[False]:
        """Like ``acquire`` without blocking the event loop; cancelling gives the place back."""
        if self._shared and blocking:
            # A shared admission is a round trip: never made on the event loop's thread.
            permit = await self._core.acquire_async(tokens, priority, timeout, self._tenant(tenant))
            self._store.flush_events()  # log a health change seen meanwhile, here
            return permit
        permit = self._core.try_acquire(tokens, priority, self._tenant(tenant))
        if permit is not None:
            return permit
        if not blocking:
            return False
        return await self._core.acquire_async(tokens, priority, timeout, self._tenant(tenant))

    @staticmethod
    def _tenant(tenant: str | None) -> str | None:
        return _identity.current().tenant if tenant is None else tenant

    def set_tenant_weight(self, tenant: str, weight: float) -> None:
        """Change a tenant's share of this limit while tenants wait (default weight 1).

        Shared through Redis, each process sends its own weights: set them alike everywhere.
        """
        self._core.set_tenant_weight(tenant, weight)

    @property
    def max_tokens(self) -> int | None:
        """The most tokens one request may ask for, or None when tokens are not limited."""
        return self._core.max_tokens

    def stats(self) -> dict[str, float]:
        """acquired, waited, wait_seconds, timeouts, waiting, in_flight."""
        return self._core.stats()
