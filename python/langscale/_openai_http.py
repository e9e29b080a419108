"""A minimal chat model for OpenAI-compatible endpoints over httpx (a dependency of
langchain-core), so ``langscale demo`` talks HTTP to the simulator without langchain-openai.

Sync and async ``invoke``, ``bind_tools`` and ``usage_metadata``; no streaming. HTTP errors are
raised as langchain-core's ``ModelError`` family (where the installed version has it) carrying
``status_code``, ``response`` and ``retry_after``, as provider integrations do, so LangChain's
``with_retry`` and langscale's router both see what happened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from langchain_core import exceptions as lc_exceptions
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr


def _family(name: str, fallback: type[Exception]) -> type[Exception]:
    cls = getattr(lc_exceptions, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else fallback


class ProviderError(Exception):
    """An HTTP error answer from an OpenAI-compatible endpoint."""

    status_code: int | None = None
    response: httpx.Response | None = None
    retry_after: float | None = None


class ProviderRateLimitError(ProviderError, _family("ModelRateLimitError", Exception)):
    """429."""


class ProviderServerError(ProviderError, _family("ModelAPIError", Exception)):
    """5xx."""


class ProviderRequestError(ProviderError, _family("ModelInvalidRequestError", Exception)):
    """4xx other than 429."""


class ProviderConnectionError(ProviderError, _family("ModelConnectionError", ConnectionError)):
    """No HTTP answer: refused, reset, closed."""


class ProviderTimeoutError(ProviderError, _family("ModelTimeoutError", TimeoutError)):
    """No answer within the timeout."""


def _retry_after(response: httpx.Response) -> float | None:
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is not None:
            try:
                return max(float(value) / scale, 0.0)
            except ValueError:
                continue
    return None


def _http_error(response: httpx.Response) -> ProviderError:
    try:
        message = response.json()["error"]["message"]
    except Exception:
        message = response.text[:200]
    status = response.status_code
    cls: type[ProviderError]
    if status == 429:
        cls = ProviderRateLimitError
    elif status >= 500:
        cls = ProviderServerError
    else:
        cls = ProviderRequestError
    err = cls(f"HTTP {status}: {message}")
    err.status_code = status
    err.response = response
    err.retry_after = _retry_after(response)
    return err


def _transport_error(exc: httpx.TransportError) -> ProviderError:
    cls = (
        ProviderTimeoutError if isinstance(exc, httpx.TimeoutException) else ProviderConnectionError
    )
    return cls(f"{type(exc).__name__}: {exc}")


def _result(body: dict[str, Any]) -> ChatResult:
    choice = body["choices"][0]
    message = choice.get("message") or {}
    tool_calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            args = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = {}
        tool_calls.append(
            {
                "name": function.get("name", ""),
                "args": args,
                "id": call.get("id"),
                "type": "tool_call",
            }
        )
    usage = body.get("usage") or {}
    usage_metadata = None
    if usage:
        usage_metadata = {
            "input_tokens": int(usage.get("prompt_tokens", 0)),
            "output_tokens": int(usage.get("completion_tokens", 0)),
            "total_tokens": int(usage.get("total_tokens", 0)),
        }
    ai = AIMessage(
        content=message.get("content") or "",
        tool_calls=tool_calls,
        usage_metadata=usage_metadata,  # type: ignore[arg-type]
        response_metadata={
            "model_name": body.get("model"),
            "finish_reason": choice.get("finish_reason"),
        },
        id=body.get("id"),
    )
    return ChatResult(generations=[ChatGeneration(message=ai)])


class OpenAIHTTPChatModel(BaseChatModel):
    """``OpenAIHTTPChatModel(base_url="http://127.0.0.1:PORT/v1", model="sim-model")``."""

    base_url: str
    model: str = "sim-model"
    api_key: str = "not-needed"
    timeout: float = 30.0
    max_tokens: int | None = None

    _client: httpx.Client | None = PrivateAttr(default=None)
    _aclient: httpx.AsyncClient | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "openai-compatible-http"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def _payload(self, messages: list[BaseMessage], stop: Any, kwargs: dict[str, Any]) -> dict:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": convert_to_openai_messages(messages),
        }
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        if stop:
            payload["stop"] = stop
        for key in ("tools", "tool_choice", "temperature", "max_tokens"):
            if kwargs.get(key) is not None:
                payload[key] = kwargs[key]
        return payload

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout)
        try:
            response = self._client.post(
                "/chat/completions",
                json=self._payload(messages, stop, kwargs),
                headers=self._headers(),
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc) from exc
        if response.status_code >= 400:
            raise _http_error(response)
        return _result(response.json())

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self._aclient is None:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            self._aclient = httpx.AsyncClient(
                base_url=self.base_url, timeout=self.timeout, limits=limits
            )
        try:
            response = await self._aclient.post(
                "/chat/completions",
                json=self._payload(messages, stop, kwargs),
                headers=self._headers(),
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc) from exc
        if response.status_code >= 400:
            raise _http_error(response)
        return _result(response.json())

    async def aclose(self) -> None:
        """Close the connection pools (the async one must close on its own event loop)."""
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
        if self._client is not None:
            self._client.close()
            self._client = None
