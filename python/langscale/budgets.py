"""``Budgets``: tenant quotas and spend limits, global → tenant → user, enforced by the Rust
core by reservation (see docs/guides/tenants.md). Configured from a dict or a TOML file,
changeable at run time with ``update``; pass to ``ScaledChatModel(budgets=...)``.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import weakref
from collections.abc import Mapping
from typing import Any

from langscale import _core


def _finite(value: Any, path: str) -> None:
    """JSON has no NaN or infinity, and no setting takes one: name the first found."""
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"{path} must be a finite number, got {value}"
        raise _core.ConfigError(msg)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")


def _json(config: Any) -> str:
    if not isinstance(config, Mapping):
        msg = f"budgets must be a dict, got {config!r}"
        raise _core.ConfigError(msg)
    _finite(config, "")
    try:
        return json.dumps(config, allow_nan=True)
    except (TypeError, ValueError) as err:
        msg = f"budgets: {err}"
        raise _core.ConfigError(msg) from None


class Budgets:
    """``Budgets({"tenant_default": {"budgets": [{"usd": 5, "window": "day"}]}})``.

    Keys: ``global``, ``tenant_default``, ``tenants`` (by name), ``user_default``, ``users``
    (by "tenant/user"), each a level with ``requests_per_second``, ``requests_per_minute``,
    ``tokens_per_minute``, ``concurrency``, ``budgets`` (``usd`` and/or ``tokens`` over
    ``window`` second, minute, hour, day or month, ``calendar`` true for the UTC calendar
    period, else rolling), ``on_over``
    (raise, wait or degrade), ``wait_timeout`` and ``deadline`` (seconds: a request's time
    budget when its caller sets none with ``langscale.deadline``); and ``shadow``, ``near``,
    ``prefer_cheaper_near``, ``output_estimate``, ``reservation_ttl``, ``degrade_tag``,
    ``on_redis_down`` (``local_share`` or ``fail_closed``), ``local_share``, ``lease`` (true,
    the default, or false) and ``lease_share``. Unknown keys and bad values raise
    ``ConfigError`` naming them. Thread- and asyncio-safe.

    Before a budget runs out: once a USD budget of a request's tenant (any level) has used
    its ``near`` fraction (default 0.8), the router tries the cheapest deployments for that
    request first (``prefer_cheaper_near``, default true), so what is left lasts longer;
    ``stats()["cheaper_first"]`` of the model counts those requests. With budgets in Redis it
    follows what this process last heard from Redis (no extra round trip).

    ``store``: a ``langscale.RedisStore`` to hold the budgets in Redis, shared by every
    process using that store (and prefix); None (the default) keeps them in this process.
    With ``lease`` each process reserves from a slice of each budget it leased (no Redis round
    trip while it lasts) and writes its spend back within a second, on ``flush()``, and at
    interpreter exit.
    """

    def __init__(
        self, config: Mapping[str, Any] | None = None, *, store: _core.RedisStore | None = None
    ) -> None:
        if store is not None and not isinstance(store, _core.RedisStore):
            msg = f"store must be a langscale.RedisStore or None, got {store!r}"
            raise _core.ConfigError(msg)
        self._core = _core.Budgets(_json({} if config is None else config), store)
        if store is not None:
            # Spend settled under a lease is written back at exit (a process killed loses at
            # most its last second of it; its leases expire in Redis).
            atexit.register(_flush_at_exit, weakref.ref(self))

    @property
    def shared(self) -> bool:
        """Whether the budgets are held in Redis."""
        return self._core.shared

    def stats(self) -> dict[str, int]:
        """Budgets in Redis: ``local_admitted`` and ``local_refused`` (calls decided without
        Redis while it was down), ``pending`` (settlements still to be written back),
        ``leased`` (calls admitted from a lease, no round trip), ``lease_operations`` (lease
        scripts run) and ``leases`` (leases held now)."""
        return self._core.stats()

    def flush(self) -> None:
        """Write back spend settled while Redis was down or under a lease and hand leases
        back, now if Redis is up: for a process about to exit (done at interpreter exit too;
        ``multiprocessing`` workers skip that, so call it there)."""
        self._core.flush()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, store: _core.RedisStore | None = None
    ) -> Budgets:
        """Budgets from a TOML, YAML (``.yaml``/``.yml``) or JSON (``.json``) file, keys as
        for the dict."""
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


def _flush_at_exit(ref: weakref.ReferenceType[Budgets]) -> None:
    budgets = ref()
    if budgets is not None:
        budgets.flush()


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        msg = f"budgets file {os.fspath(path)!r}: {err}"
        raise _core.ConfigError(msg) from None
    name = os.fspath(path)
    if name.endswith((".yaml", ".yml")):
        import yaml  # PyYAML: a dependency of langchain-core

        try:
            found = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            msg = f"budgets file {name!r}: {err}"
            raise _core.ConfigError(msg) from None
        return {} if found is None else found
    if name.endswith(".json"):
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
