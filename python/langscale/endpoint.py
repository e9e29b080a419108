"""``ChatEndpoint``: a LangChain chat model for any OpenAI-compatible endpoint, with the
HTTP client in Rust (reqwest: pooled keep-alive connections, HTTP/2 where offered, SSE
streaming, per-call timeouts). Python converts messages and builds LangChain objects; the
request, the wait and the parsing happen in Rust with the GIL released.

Provider errors are raised as langchain-core's ``ModelError`` family (rate limit, API,
timeout, connection, authentication, invalid request, context overflow), each also a
``langscale.ProviderError``, with ``status_code``, ``retry_after`` and ``code`` set.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core import exceptions as lc
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

from langscale import _core

try:  # orjson comes with langsmith; the standard library is the fallback
    import orjson

    def _dumps(value: Any) -> str:
        return orjson.dumps(value).decode()

except ImportError:  # pragma: no cover - orjson is nearly always there

    def _dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))


ProviderError = _core.ProviderError


class EndpointRateLimitError(lc.ModelRateLimitError, ProviderError):
    """HTTP 429: ``retry_after`` holds the provider's Retry-After in seconds, if sent."""


class EndpointAPIError(lc.ModelAPIError, ProviderError):
    """HTTP 5xx, an error event in a stream, or an answer that is not a completion."""


class EndpointTimeoutError(lc.ModelTimeoutError, ProviderError):
    """No answer within the timeout."""


class EndpointConnectionError(lc.ModelConnectionError, ProviderError):
    """Could not connect, or the connection broke."""


class EndpointContextOverflowError(lc.ContextOverflowError, ProviderError):
    """The prompt does not fit the model's context window."""


class EndpointAuthenticationError(lc.ModelAuthenticationError, ProviderError):
    """HTTP 401."""


class EndpointPermissionDeniedError(lc.ModelPermissionDeniedError, ProviderError):
    """HTTP 403."""


class EndpointNotFoundError(lc.ModelNotFoundError, ProviderError):
    """HTTP 404."""


class EndpointInvalidRequestError(lc.ModelInvalidRequestError, ProviderError):
    """HTTP 400, 422 and other refusals of the request itself."""


class EndpointError(lc.ModelError, ProviderError):
    """Any other provider error."""


_BY_KIND: dict[str, type[Exception]] = {
    "rate_limited": EndpointRateLimitError,
    "server": EndpointAPIError,
    "timeout": EndpointTimeoutError,
    "connection": EndpointConnectionError,
    "context_overflow": EndpointContextOverflowError,
    "invalid_request": EndpointInvalidRequestError,
}


def provider_error(exc: BaseException) -> BaseException:
    """The LangChain exception for a ``_core.ProviderError``; anything else unchanged."""
    if not isinstance(exc, ProviderError) or len(exc.args) != 5:
        return exc
    message, kind, status, retry_after, code = exc.args
    if kind == "auth":
        cls: type[Exception] = (
            EndpointPermissionDeniedError if status == 403 else EndpointAuthenticationError
        )
    elif kind == "invalid_request" and status == 404:
        cls = EndpointNotFoundError
    else:
        cls = _BY_KIND.get(kind, EndpointError)
    err = cls(message)
    err.kind = kind  # type: ignore[attr-defined]
    err.status_code = status  # type: ignore[attr-defined]
    err.retry_after = retry_after  # type: ignore[attr-defined]
    err.code = code  # type: ignore[attr-defined]
    if kind == "other_retryable":
        err.is_retryable = True  # type: ignore[attr-defined]
    return err


# -- requests ---------------------------------------------------------------------------------

# Kwargs BaseChatModel adds for tracing; never a body parameter.
_TRACING_KWARGS = ("ls_structured_output_format", "structured_output_format")


def openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages in the chat-completions format. Plain text turns are converted here (fast);
    anything else (content blocks, images) goes through langchain-core's converter."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.content
        if not isinstance(content, str):
            return convert_to_openai_messages(list(messages))  # type: ignore[return-value]
        if isinstance(m, HumanMessage):
            out.append({"role": "user", "content": content})
        elif isinstance(m, AIMessage):
            if m.invalid_tool_calls:
                return convert_to_openai_messages(list(messages))  # type: ignore[return-value]
            d: dict[str, Any] = {"role": "assistant", "content": content}
            if m.tool_calls:
                d["content"] = content or None
                d["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": _dumps(c["args"])},
                    }
                    for c in m.tool_calls
                ]
            out.append(d)
        elif isinstance(m, SystemMessage):
            out.append({"role": "system", "content": content})
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": content, "tool_call_id": m.tool_call_id})
        elif isinstance(m, ChatMessage) and m.role in ("user", "system", "developer"):
            out.append({"role": m.role, "content": content})
        else:
            return convert_to_openai_messages(list(messages))  # type: ignore[return-value]
    return out


def openai_tool_choice(choice: Any) -> Any:
    """LangChain's tool_choice spellings in the chat-completions form."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def _is_openai_tool(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool


def request_json(
    messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
) -> str:
    """The request as the JSON object the Rust side takes: messages, then the call's
    kwargs (tools converted where they are not in the OpenAI format yet)."""
    body: dict[str, Any] = {"messages": openai_messages(messages)}
    for key, value in kwargs.items():
        if key in _TRACING_KWARGS or value is None:
            continue
        if key == "tools":
            value = [t if _is_openai_tool(t) else convert_to_openai_tool(t) for t in value]
        elif key == "tool_choice":
            value = openai_tool_choice(value)
        body[key] = value
    if stop:
        body["stop"] = stop
    try:
        return _dumps(body)
    except TypeError as exc:  # orjson: not JSON data, or text that is not valid Unicode
        msg = f"the request (messages, tools, model arguments) cannot be sent as JSON: {exc}"
        raise _core.ConfigError(msg) from None


# -- answers ----------------------------------------------------------------------------------

Response = tuple[
    str | None,
    str | None,
    str,
    list[tuple[str, str, str]],
    str | None,
    tuple[int, int, int] | None,
]


def _usage(usage: tuple[int, int, int] | None) -> dict[str, int] | None:
    if usage is None:
        return None
    i, o, t = usage
    return {"input_tokens": i, "output_tokens": o, "total_tokens": t or i + o}


def chat_result(raw: Response) -> ChatResult:
    """A completion from the Rust client as LangChain's result."""
    rid, model, content, calls, finish, usage = raw
    tool_calls = []
    invalid = []
    for cid, name, arguments in calls:
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            invalid.append(invalid_tool_call(name=name, args=arguments, id=cid, error=str(exc)))
            continue
        if isinstance(args, dict):
            tool_calls.append(tool_call(name=name, args=args, id=cid))
        else:
            invalid.append(
                invalid_tool_call(name=name, args=arguments, id=cid, error="not an object")
            )
    metadata = {"model_name": model, "finish_reason": finish}
    # Every field is built here from checked data: construct without a second validation
    # (AIMessage + ChatGeneration validation cost ~3/4 of this function).
    message = AIMessage.model_construct(
        content=content,
        additional_kwargs={},
        response_metadata=metadata,
        type="ai",
        name=None,
        id=rid,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(usage),
    )
    llm_output = {"model_name": model, "token_usage": _usage(usage)}
    generation = ChatGeneration.model_construct(
        message=message, text=content, generation_info={"finish_reason": finish}
    )
    return ChatResult.model_construct(generations=[generation], llm_output=llm_output)


def chat_chunk(delta: tuple) -> ChatGenerationChunk:
    """A stream delta from the Rust client as LangChain's chunk."""
    content, calls, finish, usage, model, rid = delta
    metadata: dict[str, Any] = {}
    if finish is not None:
        metadata["finish_reason"] = finish
    if model is not None and finish is not None:
        metadata["model_name"] = model
    message = AIMessageChunk(
        content=content,
        tool_call_chunks=[
            tool_call_chunk(name=name, args=arguments, id=cid, index=index)
            for index, cid, name, arguments in calls
        ],
        usage_metadata=_usage(usage),  # type: ignore[arg-type]
        response_metadata=metadata,
        id=rid,
    )
    info = {"finish_reason": finish} if finish is not None else None
    return ChatGenerationChunk(message=message, generation_info=info)


# -- the model --------------------------------------------------------------------------------

_PARAMS = ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty", "seed")


class ChatEndpoint(BaseChatModel):
    """``ChatEndpoint(base_url, model, api_key=None, ...)``: an OpenAI-compatible
    chat-completions endpoint called from Rust.

    ``timeout`` bounds each call (for streams: until the first event, then between
    events); ``max_retries`` retries rate limits (after Retry-After), server errors,
    timeouts and broken connections with jittered backoff (under a ``ScaledChatModel`` the
    router does the retrying instead). Settings are read when the model is made. The API
    key never appears in errors, reprs or logs.
    """

    model_config = ConfigDict(
        populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=()
    )

    base_url: str
    model: str = Field(alias="model_name")
    api_key: SecretStr | None = None
    timeout: float = 60.0
    connect_timeout: float = 10.0
    max_retries: int = 0
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    default_headers: dict[str, str] | None = Field(default=None, repr=False, exclude=True)
    """Headers sent with every call (e.g. ``{"api-key": ...}``); never shown or dumped."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other body parameters sent with every call (e.g. ``{"response_format": ...}``)."""
    streaming: bool = False
    """Serve ``invoke`` by streaming (callbacks see tokens as they come)."""

    _endpoint: Any = PrivateAttr(default=None)

    def __init__(
        self, base_url: str | None = None, model: str | None = None, /, **kwargs: Any
    ) -> None:
        if base_url is not None:
            kwargs["base_url"] = base_url
        if model is not None:
            kwargs["model"] = model
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise _core.ConfigError(f"ChatEndpoint: {exc}") from None
        params = {k: getattr(self, k) for k in _PARAMS if getattr(self, k) is not None}
        params.update(self.model_kwargs)
        if self.stop:
            params["stop"] = list(self.stop)
        api_key = self.api_key.get_secret_value() if self.api_key is not None else None
        self._endpoint = _core.Endpoint(
            self.base_url,
            self.model,
            api_key=api_key,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            max_retries=self.max_retries,
            params_json=request_params_json(params),
            headers=list((self.default_headers or {}).items()),
        )

    @property
    def _llm_type(self) -> str:
        return "langscale-endpoint"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params = {k: getattr(self, k) for k in _PARAMS if getattr(self, k) is not None}
        return {"model": self.model, "base_url": self._endpoint.url, **params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai-compatible"
        params["ls_model_name"] = kwargs.get("model") or self.model
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        choice = openai_tool_choice(tool_choice)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    # -- calls --------------------------------------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> str:
        return request_json(messages, stop, kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        body = self._request(messages, stop, kwargs)
        try:
            raw = self._endpoint.chat(body)
        except ProviderError as exc:
            raise provider_error(exc) from None
        return chat_result(raw)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            stream = self._astream(messages, stop, run_manager, **kwargs)
            return await agenerate_from_stream(stream)
        body = self._request(messages, stop, kwargs)
        try:
            raw = await self._endpoint.achat(body)
        except ProviderError as exc:
            raise provider_error(exc) from None
        return chat_result(raw)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        body = self._request(messages, stop, kwargs)
        try:
            stream = self._endpoint.stream(body)
            yield from stream_chunks(stream, run_manager.on_llm_new_token if run_manager else None)
        except ProviderError as exc:
            raise provider_error(exc) from None

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        body = self._request(messages, stop, kwargs)
        try:
            stream = await self._endpoint.astream(body)
            async for delta in stream:
                chunk = chat_chunk(delta)
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        except ProviderError as exc:
            raise provider_error(exc) from None

    def __repr__(self) -> str:
        return f"ChatEndpoint({self._endpoint.url!r}, model={self.model!r})"


def stream_chunks(
    stream: Any, on_token: Callable[..., Any] | None
) -> Iterator[ChatGenerationChunk]:
    """A Rust stream's deltas as chunks, told to the callbacks as they come."""
    for delta in stream:
        chunk = chat_chunk(delta)
        if on_token is not None:
            on_token(chunk.text, chunk=chunk)
        yield chunk


def request_params_json(params: dict[str, Any]) -> str:
    """The model's parameters as JSON, strictly: NaN and infinities are refused (orjson would
    send them as null), and so is text that is not valid Unicode; the error names the
    parameter. Made once per model, so the stricter standard encoder costs nothing per call."""
    for key, value in params.items():
        try:
            json.dumps({key: value}, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            msg = f"model parameter {key!r} must be JSON data, got {value!r}: {exc}"
            raise _core.ConfigError(msg) from None
    return json.dumps(params, allow_nan=False, ensure_ascii=False)


__all__ = [
    "ChatEndpoint",
    "EndpointAPIError",
    "EndpointAuthenticationError",
    "EndpointConnectionError",
    "EndpointContextOverflowError",
    "EndpointError",
    "EndpointInvalidRequestError",
    "EndpointNotFoundError",
    "EndpointPermissionDeniedError",
    "EndpointRateLimitError",
    "EndpointTimeoutError",
    "ProviderError",
]
