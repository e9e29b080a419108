"""``Prices``: per-model prices from the JSON file LiteLLM publishes
(``model_prices_and_context_window.json``), so a team can reuse the price list it already
keeps. ``ScaledChatModel(prices=Prices.from_litellm(path))`` prices every deployment given no
``price_in``/``price_out`` of its own, by its model's name, and gives it the file's
``max_input_tokens`` as its context window when it has none.

Read: ``input_cost_per_token`` and ``output_cost_per_token`` (dollars per token; langscale's
prices are per 1,000 tokens), ``max_input_tokens``, and the prompt-cache prices
(``cache_read_input_token_cost``, ``cache_creation_input_token_cost``), charged for the input
tokens a call's usage reports as read from or written to the provider's prompt cache.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langscale import _core


@dataclass(frozen=True)
class Price:
    """One model's prices, dollars per 1,000 tokens, and its context window if known."""

    price_in: float
    price_out: float
    context_window: int | None = None
    cache_read: float | None = None
    cache_write: float | None = None


_MAX_WINDOW = 2**53  # tokens: far past any model's, and exact as a float


def _per_1k(model: str, entry: Mapping[str, Any], field: str) -> float | None:
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"prices: {model}.{field} must be a number, got {value!r}"
        raise _core.ConfigError(msg)
    try:
        number = float(value)
    except OverflowError:  # an int past what a float holds
        number = math.inf
    if not math.isfinite(number) or number < 0:
        msg = f"prices: {model}.{field} must be a finite number >= 0, got {value!r}"
        raise _core.ConfigError(msg)
    return number * 1000.0


class Prices:
    """Prices by model name. Thread-safe (read-only once built)."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        if not isinstance(table, Mapping):
            msg = f"prices must be a dict of model name -> entry, got {type(table).__name__}"
            raise _core.ConfigError(msg)
        self._table = dict(table)

    @classmethod
    def from_litellm(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> Prices:
        """From LiteLLM's price file (a path) or its parsed contents (a dict)."""
        if isinstance(source, Mapping):
            return cls(source)
        if not isinstance(source, (str, os.PathLike)):
            msg = f"prices must be a path or a dict, got {type(source).__name__}"
            raise _core.ConfigError(msg)
        try:
            with open(source, "rb") as f:
                return cls(json.loads(f.read()))
        except (OSError, ValueError) as err:
            msg = f"prices file {os.fspath(source)!r}: {err}"
            raise _core.ConfigError(msg) from None

    def get(self, model: str | None) -> Price | None:
        """The prices of ``model``: its own entry, else the entry of its name without a
        provider prefix (``openai/gpt-4o`` -> ``gpt-4o``); None when the file has neither or
        the entry has no input and output price. A bad value raises ``ConfigError`` naming it.
        """
        if not model:
            return None
        for key in (model, model.rsplit("/", 1)[-1]):
            entry = self._table.get(key)
            if isinstance(entry, Mapping):
                return _price(key, entry)
        return None


def _price(model: str, entry: Mapping[str, Any]) -> Price | None:
    price_in = _per_1k(model, entry, "input_cost_per_token")
    price_out = _per_1k(model, entry, "output_cost_per_token")
    if price_in is None and price_out is None:
        return None
    window = entry.get("max_input_tokens")
    # Text (LiteLLM's "sample_spec" describes its fields) or nothing: no window.
    context = window if isinstance(window, int) and not isinstance(window, bool) else None
    if context is not None and context > _MAX_WINDOW:
        msg = f"prices: {model}.max_input_tokens must be at most {_MAX_WINDOW}, got {window!r}"
        raise _core.ConfigError(msg)
    return Price(
        price_in or 0.0,
        price_out or 0.0,
        context if context and context > 0 else None,
        _per_1k(model, entry, "cache_read_input_token_cost"),
        _per_1k(model, entry, "cache_creation_input_token_cost"),
    )
