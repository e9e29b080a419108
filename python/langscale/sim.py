"""Simulated OpenAI-compatible providers, in-process, for tests, benchmarks and the demo.

```python
from langscale import sim

primary = sim.Provider(
    "primary",
    requests_per_minute=60,
    time_to_first_token=0.2,
    tokens_per_second=80,
    faults=[sim.Fault(start=10, end=20, kind="down")],
)
with sim.serve(primary, sim.Provider("fallback")) as s:
    s.urls["primary"]          # "http://127.0.0.1:PORT/v1", for ChatOpenAI(base_url=...)
    s.stats("primary")         # requests, ok, rate_limited, server_errors, unavailable, ...
```

Each provider answers ``/v1/chat/completions`` (plain and SSE streaming, tool calls when
tools are sent, ``usage``), ``/v1/embeddings`` and ``/v1/models`` on its own loopback port,
from a tokio runtime in Rust (the GIL is not held while it serves). Answers are
deterministic for a given request. A request header ``x-sim-fault: 429|500|503|hang|reset``
forces one fault, for tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from langscale import _core

FaultKind = Literal["down", "error", "rate_limit", "hang", "reset", "slow"]


@dataclass(frozen=True)
class Fault:
    """A fault from ``start`` to ``end`` seconds after the provider started (``end=None``:
    for ever), hitting a ``rate`` share of the requests in that window.

    kinds: ``down`` (503), ``error`` (500), ``rate_limit`` (429 with ``Retry-After`` until the
    window ends), ``hang`` (no answer for ``hang_seconds``, then 504), ``reset`` (connection
    reset), ``slow`` (every delay times ``factor``).
    """

    start: float
    end: float | None = None
    kind: FaultKind = "down"
    rate: float = 1.0
    factor: float = 10.0


@dataclass(frozen=True)
class Provider:
    """Settings of one simulated provider; every field has a fast, fault-free default."""

    name: str = ""
    time_to_first_token: float = 0.0
    tokens_per_second: float | None = None
    jitter: float = 0.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    quota_burst_seconds: float = 60.0
    error_rate: float = 0.0
    unavailable_rate: float = 0.0
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    hang_seconds: float = 300.0
    min_completion_tokens: int = 12
    max_completion_tokens: int = 48
    context_window: int | None = None
    embedding_dimensions: int = 256
    api_key: str | None = None
    seed: int = 0
    models: Sequence[str] = ("sim-model",)
    faults: Sequence[Fault | Mapping[str, Any]] = field(default_factory=tuple)
    host: str = "127.0.0.1"
    port: int = 0
    # Count prompt tokens with this OpenAI encoding ("o200k_base", "cl100k_base"), as
    # OpenAI's usage does; None: about four characters a token (cheaper under load).
    tokenizer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return _plain({k: v for k, v in data.items() if v is not None})


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Settings as plain data: ``models`` and ``faults`` as lists, each fault a dict (the
    simulator checks every value and names a bad one)."""
    for key in ("models", "faults"):
        if key in data:
            value = data[key]
            if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
                msg = f"{key} must be a list, got {value!r}"
                raise _core.ConfigError(msg)
            data[key] = list(value)
    if "faults" in data:
        data["faults"] = [
            dataclasses.asdict(f) if isinstance(f, Fault) else f for f in data["faults"]
        ]
    return data


def _provider_dict(provider: Provider | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(provider, Provider):
        return provider.to_dict()
    if isinstance(provider, Mapping):
        return _plain(dict(provider))
    msg = f"a simulated provider must be a langscale.sim.Provider or a mapping, got {provider!r}"
    raise _core.ConfigError(msg)


class Simulation:
    """Running simulated providers. A context manager (``with`` or ``async with``) that stops
    them on exit; ``close()`` does the same and is safe to call twice."""

    def __init__(self, core: _core.Simulator) -> None:
        self._core = core
        self.urls: dict[str, str] = dict(core.base_urls())

    @property
    def names(self) -> list[str]:
        return list(self.urls)

    def url(self, name: str | None = None) -> str:
        """Base URL (``http://127.0.0.1:PORT/v1``) of ``name``, or of the first provider."""
        if name is None:
            return next(iter(self.urls.values()))
        try:
            return self.urls[name]
        except KeyError:
            raise _core.ConfigError(f"no simulated provider named {name!r}") from None

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """Counters of ``name``; without a name, ``{name: counters}`` for every provider."""
        if name is None:
            return {n: self._core.stats(n) for n in self.urls}
        return self._core.stats(name)

    def timeline(self, name: str) -> list[tuple[int, int, int, int]]:
        """Per second since start: ``(requests, ok, rate_limited, errors)``."""
        return self._core.timeline(name)

    def elapsed(self, name: str | None = None) -> float:
        """Seconds on the fault schedule's clock of ``name`` (or the first provider)."""
        return self._core.elapsed(name if name is not None else self.names[0])

    def reset(self) -> None:
        """Zero the counters, refill the quotas and restart the fault schedules."""
        self._core.reset()

    @property
    def running(self) -> bool:
        return self._core.running

    def close(self) -> None:
        self._core.stop()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Simulation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<langscale.sim.Simulation {state} {self.urls}>"


def _check_finite(value: Any, path: str) -> None:
    """NaN and infinities are not JSON: name them here instead of failing to parse."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _core.ConfigError(f"{path} must be a finite number, got {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")


def _threads(threads: object) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
        raise _core.ConfigError(f"threads must be an integer from 1 to 64, got {threads!r}")
    return threads


def serve(*providers: Provider | Mapping[str, Any], threads: int = 2) -> Simulation:
    """Start simulated providers on free loopback ports (one ``Provider()`` when none given).

    Returns a running ``Simulation``; use it as ``with sim.serve(...) as s:`` or
    ``async with sim.serve(...) as s:``. Bad settings raise ``langscale.ConfigError`` naming
    the provider and the value.
    """
    config = {"provider": [_provider_dict(p) for p in providers]}
    _check_finite(config["provider"], "provider")
    try:
        text = json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _core.ConfigError(f"simulated provider settings are not plain data: {exc}") from exc
    return Simulation(_core.Simulator(text, _threads(threads)))


def serve_toml(source: str | os.PathLike[str], threads: int = 2) -> Simulation:
    """Start the providers of a TOML file (``[[provider]]`` tables with the ``Provider``
    fields, ``[[provider.faults]]`` for the schedule), or of TOML text."""
    text = str(source)
    if isinstance(source, os.PathLike) or (
        "\n" not in text and "=" not in text and os.path.exists(text)
    ):
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except (OSError, ValueError) as exc:  # ValueError: a NUL or undecodable byte
            raise _core.ConfigError(f"cannot read simulator config {str(source)!r}: {exc}") from exc
    return Simulation(_core.Simulator.from_toml(text, _threads(threads)))


__all__ = ["Fault", "FaultKind", "Provider", "Simulation", "serve", "serve_toml"]
