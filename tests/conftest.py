"""Shared test helpers: a chat model that calls tools with random ids, like real providers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

# Redis servers for the shared-state tests (tests/test_redis_*.py).
from tests.redis_fixtures import (  # noqa: F401
    killable_redis,
    redis_cluster,
    redis_prefix,
    redis_server,
)

REDIS_FIXTURES = {"redis_server", "redis_cluster", "killable_redis"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``redis`` every test that starts or uses a redis-server (the fixtures above, or a
    ``test_redis_*`` module), so ``pytest -m "not redis and not slow"`` is the quick set."""
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & REDIS_FIXTURES or item.path.name.startswith("test_redis_"):
            item.add_marker(pytest.mark.redis)


class ToolCallingFakeModel(BaseChatModel):
    """Asks for the `get_weather` tool once, then answers from the tool's result.

    Every response carries fresh random tool-call ids and response metadata, as providers do.
    """

    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    @property
    def calls(self) -> int:
        return self._calls

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        names = [getattr(t, "name", None) or t["function"]["name"] for t in tools]
        return self.bind(tools=names, **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self._calls += 1
        rid = uuid.uuid4().hex
        meta = {"id": f"chatcmpl-{rid}", "system_fingerprint": f"fp_{rid[:8]}"}
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        last = messages[-1]
        if isinstance(last, ToolMessage):
            message = AIMessage(
                content=f"It is {last.content}.", response_metadata=meta, usage_metadata=usage
            )
        else:
            call_id = f"call_{uuid.uuid4().hex[:12]}"
            message = AIMessage(
                content="",
                tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": call_id}],
                response_metadata=meta,
                usage_metadata=usage,
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture
def tool_model() -> ToolCallingFakeModel:
    return ToolCallingFakeModel()
