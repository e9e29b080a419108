"""``ChatEndpoint`` against a small OpenAI-compatible server on loopback (threads, keep-alive),
plus LangChain's standard unit suite."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core import exceptions as lc
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field

import langscale
from langscale import ChatEndpoint
from langscale._classify import classify

Reply = tuple[int, dict[str, str], Any]
"""(status, headers, body): a dict is sent as JSON, a list as SSE events (then [DONE])."""


def answer(body: dict[str, Any], args: dict[str, Any] | None = None) -> Reply:
    """What a provider would say: a forced tool call when a tool is forced, else an echo of
    the last user turn. Streams when asked, usage last."""
    last = next(
        (m["content"] for m in reversed(body["messages"]) if m["role"] in ("user", "tool")), ""
    )
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    forced = None
    if tools and choice == "required":
        forced = tools[0]["function"]["name"]
    elif isinstance(choice, dict):
        forced = choice["function"]["name"]
    usage = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    if forced:
        call = {
            "id": "call_7",
            "type": "function",
            "function": {"name": forced, "arguments": json.dumps(args or {"city": "Paris"})},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": f"echo: {last}"}
        finish = "stop"
    if not body.get("stream"):
        choice_out = {"index": 0, "message": message, "finish_reason": finish}
        return 200, {}, {"id": "cmpl-1", "model": "fake-1", "choices": [choice_out], "usage": usage}
    events: list[dict[str, Any]] = []

    def chunk(delta: dict[str, Any], fin: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "finish_reason": fin}
        events.append({"id": "cmpl-1", "model": "fake-1", "choices": [choice]})

    if forced:
        call = message["tool_calls"][0]
        arguments = call["function"]["arguments"]
        head = {"index": 0, "id": call["id"], "type": "function"}
        chunk({"tool_calls": [{**head, "function": {"name": forced, "arguments": ""}}]})
        for piece in (arguments[:5], arguments[5:]):
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        text = message["content"]
        for i in range(0, len(text), 4):
            chunk({"content": text[i : i + 4]})
    chunk({}, finish)
    events.append({"id": "cmpl-1", "model": "fake-1", "choices": [], "usage": usage})
    return 200, {}, events


class FakeProvider:
    """A threaded HTTP/1.1 server; ``script(body) -> Reply`` decides each answer (default:
    ``answer``). Records every request body and header set."""

    def __init__(self, script: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.script = script or answer
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with provider.lock:
                    provider.connections += 1

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with provider.lock:
                    provider.bodies.append(body)
                    provider.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, headers, payload = provider.script(body)
                if isinstance(payload, list):
                    self.send_response(status)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("connection", "close")
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    for event in payload:
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    p = FakeProvider()
    yield p
    p.close()


def serve(script: Callable[[dict[str, Any]], Reply]) -> FakeProvider:
    return FakeProvider(script)


class Weather(BaseModel):
    """Look up the weather in a city."""

    city: str = Field(..., description="The city.")


# --- plain calls ----------------------------------------------------------------------------


def test_invoke_sends_the_conversation_and_reads_usage_and_metadata(provider):
    model = ChatEndpoint(
        provider.url, "fake-1", api_key="sk-abc-123", temperature=0.3, max_tokens=64
    )
    history = [
        SystemMessage("be brief"),
        HumanMessage("weather?"),
        AIMessage("", tool_calls=[{"name": "Weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("rain", tool_call_id="c1"),
    ]
    reply = model.invoke(history, stop=["END"])
    assert reply.content == "echo: rain"
    assert reply.usage_metadata == {"input_tokens": 12, "output_tokens": 4, "total_tokens": 16}
    assert reply.response_metadata["model_name"] == "fake-1"
    assert reply.response_metadata["finish_reason"] == "stop"
    body = provider.bodies[0]
    assert body["model"] == "fake-1"
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0.3, 64, ["END"])
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "Weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "content": "rain", "tool_call_id": "c1"},
    ]
    assert provider.headers[0]["authorization"] == "Bearer sk-abc-123"


async def test_ainvoke_and_connection_reuse(provider):
    model = ChatEndpoint(provider.url, "fake-1")
    replies = [await model.ainvoke(f"q{i}") for i in range(10)]
    assert [r.content for r in replies] == [f"echo: q{i}" for i in range(10)]
    assert provider.connections <= 2, "keep-alive connections are reused"


def test_content_blocks_go_through_langchain_converter(provider):
    model = ChatEndpoint(provider.url, "fake-1")
    blocks = [{"type": "text", "text": "look"}, {"type": "text", "text": "here"}]
    model.invoke([HumanMessage(content=blocks)])
    assert provider.bodies[0]["messages"][0]["role"] == "user"
    assert "look" in json.dumps(provider.bodies[0]["messages"][0]["content"])


def test_bind_tools_forces_a_tool_and_parses_the_call(provider):
    model = ChatEndpoint(provider.url, "fake-1").bind_tools([Weather], tool_choice="Weather")
    reply = model.invoke("weather in Paris?")
    assert reply.tool_calls == [
        {"name": "Weather", "args": {"city": "Paris"}, "id": "call_7", "type": "tool_call"}
    ]
    body = provider.bodies[0]
    assert body["tools"][0]["function"]["name"] == "Weather"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}


def test_structured_output_through_a_forced_tool(provider):
    model = ChatEndpoint(provider.url, "fake-1")
    assert model.with_structured_output(Weather).invoke("Paris?") == Weather(city="Paris")
    assert provider.bodies[0]["tool_choice"] == "required"


def test_a_tool_call_with_bad_json_is_an_invalid_tool_call():
    def script(body: dict[str, Any]) -> Reply:
        call = {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        return 200, {}, {"choices": [{"message": message, "finish_reason": "tool_calls"}]}

    p = serve(script)
    try:
        reply = ChatEndpoint(p.url, "m").invoke("hi")
        assert reply.tool_calls == []
        assert reply.invalid_tool_calls[0]["args"] == "{oops"
        assert reply.usage_metadata is None
    finally:
        p.close()


# --- streaming ------------------------------------------------------------------------------


def test_stream_yields_text_then_usage(provider):
    model = ChatEndpoint(provider.url, "fake-1")
    chunks = list(model.stream("hello there"))
    assert len(chunks) > 3
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.content == "echo: hello there"
    assert total.usage_metadata["total_tokens"] == 16
    assert total.response_metadata["finish_reason"] == "stop"
    assert provider.bodies[0]["stream"] is True


async def test_astream_assembles_tool_calls(provider):
    model = ChatEndpoint(provider.url, "fake-1").bind_tools([Weather], tool_choice="any")
    total = None
    async for c in model.astream("weather?"):
        total = c if total is None else total + c
    assert total is not None
    assert total.tool_calls == [
        {"name": "Weather", "args": {"city": "Paris"}, "id": "call_7", "type": "tool_call"}
    ]


def test_streaming_flag_serves_invoke_by_streaming(provider):
    model = ChatEndpoint(provider.url, "fake-1", streaming=True)
    assert model.invoke("x").content == "echo: x"
    assert provider.bodies[0]["stream"] is True


# --- errors ---------------------------------------------------------------------------------


def erroring(status: int, body: Any, headers: dict[str, str] | None = None) -> FakeProvider:
    return serve(lambda _: (status, headers or {}, body))


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "kind"),
    [
        (
            429,
            {"error": {"message": "slow"}},
            {"retry-after": "7"},
            lc.ModelRateLimitError,
            "rate_limited",
        ),
        (500, {"error": {"message": "boom"}}, {}, lc.ModelAPIError, "server"),
        (503, b"<html>down</html>", {}, lc.ModelAPIError, "server"),
        (
            401,
            {"error": {"message": "bad key sk-abc-123"}},
            {},
            lc.ModelAuthenticationError,
            "auth",
        ),
        (403, {"error": {"message": "no"}}, {}, lc.ModelPermissionDeniedError, "auth"),
        (404, {"error": {"message": "no model"}}, {}, lc.ModelNotFoundError, "invalid_request"),
        (422, {"error": {"message": "bad"}}, {}, lc.ModelInvalidRequestError, "invalid_request"),
        (
            400,
            {"error": {"message": "too long", "code": "context_length_exceeded"}},
            {},
            lc.ContextOverflowError,
            "context_overflow",
        ),
    ],
)
def test_errors_map_to_langchain_and_classify(status, body, headers, cls, kind):
    p = erroring(status, body, headers)
    try:
        model = ChatEndpoint(p.url, "m", api_key="sk-abc-123")
        with pytest.raises(cls) as info:
            model.invoke("hi")
        err = info.value
        assert isinstance(err, langscale.ProviderError)
        assert isinstance(err, langscale.LangscaleError)
        assert err.status_code == status
        assert classify(err)[0] == kind
        if status == 429:
            assert err.retry_after == 7.0
            assert classify(err) == ("rate_limited", 7.0)
        assert "sk-abc-123" not in str(err)
        assert "sk-abc-123" not in repr(model)
    finally:
        p.close()


async def test_async_errors_map_too():
    p = erroring(429, {"error": {"message": "slow"}}, {"retry-after-ms": "250"})
    try:
        with pytest.raises(lc.ModelRateLimitError) as info:
            await ChatEndpoint(p.url, "m").ainvoke("hi")
        assert info.value.retry_after == 0.25
        with pytest.raises(lc.ModelRateLimitError):
            async for _ in ChatEndpoint(p.url, "m").astream("hi"):
                pass
    finally:
        p.close()


def test_timeouts_and_refused_connections():
    def slow(body: dict[str, Any]) -> Reply:
        time.sleep(5)
        return answer(body)

    p = serve(slow)
    try:
        started = time.monotonic()
        with pytest.raises(lc.ModelTimeoutError):
            ChatEndpoint(p.url, "m", timeout=0.2).invoke("hi")
        assert time.monotonic() - started < 4
    finally:
        p.close()
    with pytest.raises(lc.ModelConnectionError):
        ChatEndpoint(p.url, "m").invoke("hi")


def test_max_retries_retries_server_errors():
    calls = []

    def flaky(body: dict[str, Any]) -> Reply:
        calls.append(1)
        if len(calls) <= 3:
            return 500, {"retry-after": "0.01"}, {"error": {"message": "try again"}}
        return answer(body)

    p = serve(flaky)
    try:
        with pytest.raises(lc.ModelAPIError):
            ChatEndpoint(p.url, "m").invoke("a")
        assert ChatEndpoint(p.url, "m", max_retries=2).invoke("b").content == "echo: b"
        assert len(calls) == 4
    finally:
        p.close()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "ftp://x/v1"}, "http"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"model": ""}, "model"),
        ({"model_kwargs": {"x": object()}}, "JSON"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, says):
    settings = {"base_url": "http://127.0.0.1:9/v1", "model": "m", **kwargs}
    with pytest.raises(langscale.ConfigError, match=says):
        ChatEndpoint(**settings)


def test_default_headers_are_sent_and_hidden(provider):
    model = ChatEndpoint(provider.url, "m", default_headers={"api-key": "hdr-secret-5"})
    model.invoke("hi")
    assert provider.headers[0]["api-key"] == "hdr-secret-5"
    for text in (repr(model), str(model), repr(model._endpoint), str(model.model_dump())):
        assert "hdr-secret-5" not in text
    with pytest.raises(langscale.ConfigError, match="header name"):
        ChatEndpoint(provider.url, "m", default_headers={"bad name": "x"})
    with pytest.raises(langscale.ConfigError, match="x-evil"):
        ChatEndpoint(provider.url, "m", default_headers={"x-evil": "a\nb"})


def test_the_key_is_hidden_everywhere():
    model = ChatEndpoint("http://127.0.0.1:9/v1", "m", api_key="sk-very-secret")
    for text in (repr(model), str(model), repr(model._endpoint), str(model.model_dump())):
        assert "sk-very-secret" not in text


def test_many_threads_share_one_endpoint(provider):
    model = ChatEndpoint(provider.url, "fake-1")

    def ask(i: int) -> str:
        return model.invoke(f"n{i}").content  # type: ignore[return-value]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(160)))
    assert answers == [f"echo: n{i}" for i in range(160)]


async def test_many_coroutines_share_one_endpoint(provider):
    model = ChatEndpoint(provider.url, "fake-1")
    replies = await asyncio.gather(*(model.ainvoke(f"c{i}") for i in range(100)))
    assert [r.content for r in replies] == [f"echo: c{i}" for i in range(100)]


# --- LangChain's standard unit suite --------------------------------------------------------


class TestChatEndpointStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatEndpoint]:
        return ChatEndpoint

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": "http://127.0.0.1:9/v1", "model": "fake-1", "temperature": 0}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True
