"""``Budgets``: tenant quotas and spend limits, global → tenant → user, enforced by the Rust
core by reservation (see docs/guides/tenants.md). Configured from a dict or a TOML file,
changeable at run time with ``update``; pass to ``ScaledChatModel(budgets=...)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from langscale import _core


def _json(config: Any) -> str:
    if not isinstance(config, Mapping):
        msg = f"budgets must be a dict, got {config!r}"
        raise _core.ConfigError(msg)
    try:
        return json.dumps(config, allow_nan=True)
    except (TypeError, ValueError) as err:
        msg = f"budgets: {err}"
        raise _core.ConfigError(msg) from None


class Budgets:
    """``Budgets({"tenant_default": {"budgets": [{"usd": 5, "window": "day"}]}})``.

    Keys: ``global``, ``tenant_default``, ``tenants`` (by name), ``user_default``, ``users``
    (by "tenant/user"), each a level with ``requests_per_minute``, ``tokens_per_minute``,
    ``concurrency``, ``budgets`` (``usd`` and/or ``tokens`` over ``window`` minute, hour,
    day or month, ``calendar`` true for the UTC calendar period, else rolling), ``on_over``
    (raise, wait or degrade) and ``wait_timeout``; and ``shadow``, ``near``,
    ``output_estimate``, ``reservation_ttl``, ``degrade_tag``, ``on_redis_down``
    (``local_share`` or ``fail_closed``) and ``local_share``. Unknown keys and bad values
    raise ``ConfigError`` naming them. Thread- and asyncio-safe.

    ``store``: a ``langscale.RedisStore`` to hold the budgets in Redis, shared by every
    process using that store (and prefix); None (the default) keeps them in this process.
    """

    def __init__(
        self, config: Mapping[str, Any] | None = None, *, store: _core.RedisStore | None = None
    ) -> None:
        if store is not None and not isinstance(store, _core.RedisStore):
            msg = f"store must be a langscale.RedisStore or None, got {store!r}"
            raise _core.ConfigError(msg)
        self._core = _core.Budgets(_json({} if config is None else config), store)

    @property
    def shared(self) -> bool:
        """Whether the budgets are held in Redis."""
        return self._core.shared

    def stats(self) -> dict[str, int]:
        """Budgets in Redis: ``local_admitted`` and ``local_refused`` (calls decided without
        Redis while it was down) and ``pending`` (settlements still to be written back)."""
        return self._core.stats()

    def flush(self) -> None:
        """Write back spend settled while Redis was down, now if it is up (it is also done on
        every call): for a process about to exit."""
        self._core.flush()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, store: _core.RedisStore | None = None
    ) -> Budgets:
        """Budgets from a TOML (or JSON) file, keys as for the dict."""
        return cls(_read(path), store=store)

    def update(self, config: Mapping[str, Any]) -> None:
        """New settings, now, for every model using these budgets; spend so far is kept."""
        self._core.update(_json(config))

    def update_from_file(self, path: str | os.PathLike[str]) -> None:
        self.update(_read(path))

    def saved(self, tenant: str | None, user: str | None, usd: float, tokens: int) -> None:
        """Count a call answered from a cache: no spend, ``usd``/``tokens`` saved."""
        self._core.saved(tenant, user, usd, tokens)

    def report(self) -> dict[str, Any]:
        """Per level ("global", "tenant:<name>", "user:<tenant>/<user>"): requests, refused,
        would_refuse (shadow), usd, tokens, cache hits and savings, and each limit's use,
        remaining and ``near`` flag."""
        return self._core.report()


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        msg = f"budgets file {os.fspath(path)!r}: {err}"
        raise _core.ConfigError(msg) from None
    if os.fspath(path).endswith(".json"):
        try:
            return json.loads(raw)
        except ValueError as err:
            msg = f"budgets file {os.fspath(path)!r}: {err}"
            raise _core.ConfigError(msg) from None
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        msg = "reading TOML needs Python 3.11+ (tomllib); use a .json file or a dict"
        raise _core.ConfigError(msg) from None
    try:
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        msg = f"budgets file {os.fspath(path)!r}: {err}"
        raise _core.ConfigError(msg) from None


__all__ = ["Budgets"]
