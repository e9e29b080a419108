"""Agent middleware for ``langchain.agents.create_agent`` (needs the ``langchain`` package).

``ScaledModelMiddleware`` routes every model call of an agent through the same executor as
``ScaledChatModel`` — the agent's own model first, then fallbacks, with retries, breakers,
limits and cache — for agents whose model object you would rather not replace.

``ToolCallMiddleware`` guards tool calls: a per-tool timeout, a per-tool concurrency
bulkhead, and a result cache for the tools you mark cacheable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        ModelRequest,
        ModelResponse,
        ToolCallRequest,
    )
except ImportError as err:  # pragma: no cover - depends on the environment
    msg = "langscale.middleware needs the langchain package: pip install langchain"
    raise ImportError(msg) from err

from langchain_core.caches import BaseCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import ToolMessage

from langscale import _core
from langscale.limiter import RateLimiter
from langscale.scaled import Deployment, ScaledChatModel


class ScaledModelMiddleware(AgentMiddleware):
    """``create_agent(model, tools, middleware=[ScaledModelMiddleware([fallback], limits=...)])``.

    Each model call goes to a ``ScaledChatModel`` over ``[agent's model, *fallbacks]`` built
    once per agent model and shared by every call; ``router_settings`` are its keyword
    arguments (strategy, max_attempts, attempt_timeout, hedge_delay, breaker_*, ...).
    """

    def __init__(
        self,
        fallbacks: Sequence[BaseChatModel | Deployment] = (),
        *,
        limits: RateLimiter | None = None,
        cache: BaseCache | None = None,
        **router_settings: Any,
    ) -> None:
        super().__init__()
        self._fallbacks = _iterable(fallbacks, "fallbacks")
        self._limits = limits
        self._cache = cache
        self._settings = router_settings
        self._scaled: dict[int, ScaledChatModel] = {}
        self._lock = threading.Lock()
        # fail now, not on the first call, if the settings are bad
        ScaledChatModel([*self._fallbacks] or [_Placeholder()], limits=limits, **router_settings)

    def _scaled_for(self, model: BaseChatModel) -> ScaledChatModel:
        if isinstance(model, ScaledChatModel):
            return model
        with self._lock:
            scaled = self._scaled.get(id(model))
            if scaled is None:
                extra = {"cache": self._cache} if self._cache is not None else {}
                scaled = ScaledChatModel(
                    [model, *self._fallbacks], limits=self._limits, **extra, **self._settings
                )
                self._scaled[id(model)] = scaled
            return scaled

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        return handler(request.override(model=self._scaled_for(request.model)))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(request.override(model=self._scaled_for(request.model)))


class _Placeholder(BaseChatModel):
    """Stands in for the agent's model when checking settings at construction."""

    @property
    def _llm_type(self) -> str:
        return "placeholder"

    def _generate(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise NotImplementedError


def _iterable(value: Any, name: str) -> list[Any]:
    try:
        return list(value)
    except TypeError:
        msg = f"{name} must be a list, got {value!r}"
        raise _core.ConfigError(msg) from None


def _per_tool(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else value


class ToolCallMiddleware(AgentMiddleware):
    """Per-tool timeout (seconds), concurrency bulkhead and result cache.

    ``timeout`` and ``max_concurrency`` are one value for every tool or a ``{tool: value}``
    mapping. ``cacheable`` names the tools whose results may be reused for equal arguments
    (``cache_ttl`` seconds, ``cache_maxsize`` entries). A timed-out call returns an error
    ``ToolMessage`` so the model can react; a sync tool that overruns keeps running on its
    worker thread (Python cannot stop it), but the agent moves on.
    """

    def __init__(
        self,
        *,
        timeout: float | Mapping[str, float] | None = None,
        max_concurrency: int | Mapping[str, int] | None = None,
        cacheable: Sequence[str] = (),
        cache_ttl: float | None = None,
        cache_maxsize: int = 10_000,
    ) -> None:
        super().__init__()
        names = _iterable(cacheable, "cacheable")
        if isinstance(cacheable, str) or not all(isinstance(name, str) for name in names):
            msg = f"cacheable must be a list of tool names, got {cacheable!r}"
            raise _core.ConfigError(msg)
        self._timeout = timeout
        self._concurrency = max_concurrency
        self._cacheable = frozenset(names)
        self._cache = _core.ExactCache(cache_maxsize, None, cache_ttl, "tools") if names else None
        self._bulkheads: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        for value in (timeout, max_concurrency):
            for v in value.values() if isinstance(value, Mapping) else [value]:
                if v is not None and (
                    isinstance(v, bool)
                    or not isinstance(v, int | float)
                    or not 0 < v < math.inf  # also refuses NaN
                ):
                    msg = f"timeout and max_concurrency must be positive numbers, got {v!r}"
                    raise _core.ConfigError(msg)

    # -- pieces --------------------------------------------------------------------------------

    def _bulkhead(self, name: str) -> RateLimiter | None:
        limit = _per_tool(self._concurrency, name)
        if limit is None:
            return None
        with self._lock:
            if name not in self._bulkheads:
                self._bulkheads[name] = RateLimiter(max_concurrency=int(limit))
            return self._bulkheads[name]

    def _key(self, request: ToolCallRequest) -> tuple[str, str] | None:
        call = request.tool_call
        if self._cache is None or call["name"] not in self._cacheable:
            return None
        try:
            args = json.dumps(call.get("args", {}), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        return args, f"tool:{call['name']}"

    def _cached(self, request: ToolCallRequest, key: tuple[str, str] | None) -> ToolMessage | None:
        if key is None or self._cache is None:
            return None
        raw = self._cache.lookup_local(*key)
        if raw is None:
            return None
        call = request.tool_call
        return ToolMessage(content=json.loads(raw), tool_call_id=call["id"], name=call["name"])

    def _store(self, key: tuple[str, str] | None, result: Any) -> None:
        if key is None or self._cache is None or not isinstance(result, ToolMessage):
            return
        if result.status == "error":
            return
        try:
            self._cache.update(*key, json.dumps(result.content).encode())
        except (TypeError, ValueError):
            return

    def _timed_out(self, request: ToolCallRequest, seconds: float) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(
            content=f"tool {call['name']!r} timed out after {seconds:g} s",
            tool_call_id=call["id"],
            name=call["name"],
            status="error",
        )

    # -- sync and async ------------------------------------------------------------------------

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]
    ) -> Any:
        name = request.tool_call["name"]
        key = self._key(request)
        cached = self._cached(request, key)
        if cached is not None:
            return cached
        bulkhead = self._bulkhead(name)
        timeout = _per_tool(self._timeout, name)
        with bulkhead.acquire() if bulkhead else contextlib.nullcontext():
            if timeout is None:
                result = handler(request)
            else:
                with self._lock:
                    if self._pool is None:
                        self._pool = concurrent.futures.ThreadPoolExecutor(
                            thread_name_prefix="langscale-tool"
                        )
                future = self._pool.submit(handler, request)
                try:
                    result = future.result(timeout=timeout)
                except concurrent.futures.TimeoutError:
                    return self._timed_out(request, timeout)
        self._store(key, result)
        return result

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]
    ) -> Any:
        name = request.tool_call["name"]
        key = self._key(request)
        cached = self._cached(request, key)
        if cached is not None:
            return cached
        bulkhead = self._bulkhead(name)
        timeout = _per_tool(self._timeout, name)
        permit = await bulkhead.aacquire() if bulkhead else None
        try:
            if timeout is None:
                result = await handler(request)
            else:
                try:
                    result = await asyncio.wait_for(handler(request), timeout)
                except asyncio.TimeoutError:
                    return self._timed_out(request, timeout)
        finally:
            if permit:
                permit.release()
        self._store(key, result)
        return result


__all__ = ["ScaledModelMiddleware", "ToolCallMiddleware"]
