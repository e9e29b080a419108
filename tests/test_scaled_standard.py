"""LangChain's standard unit suite for ``ScaledChatModel``, over a fake deployment that binds
tools and answers with structured output the way a provider integration does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field

from langscale import ScaledChatModel


class ToolFakeModel(BaseChatModel):
    """Converts tools to the OpenAI format in ``bind_tools``, as most integrations do, and
    when a tool is forced (``tool_choice`` "any" or a tool's name) calls it with ``args``."""

    model: str = "tool-fake-1"
    args: dict[str, Any] = Field(default_factory=lambda: {"name": "Ada", "age": 36})

    @property
    def _llm_type(self) -> str:
        return "tool-fake"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Any:
        converted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=converted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
        forced = _forced_tool(kwargs.get("tools") or [], kwargs.get("tool_choice"))
        if forced is None:
            message = AIMessage(content="plain answer", usage_metadata=usage)
        else:
            call = {"name": forced, "args": dict(self.args), "id": "call_1", "type": "tool_call"}
            message = AIMessage(content="", tool_calls=[call], usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _forced_tool(tools: list[dict[str, Any]], choice: Any) -> str | None:
    names = [t["function"]["name"] for t in tools]
    if choice in ("any", "required") and names:
        return names[0]
    return choice if choice in names else None


class TestScaledChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ScaledChatModel]:
        return ScaledChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"deployments": [ToolFakeModel()]}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        # Through BaseChatModel.with_structured_output on top of bind_tools: every method
        # ("json_schema", "json_mode" too) becomes a forced tool call on each deployment.
        return True

    @property
    def supports_json_mode(self) -> bool:
        # No native JSON mode: method="json_mode" is accepted but served as a tool call.
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True


# --- what the standard unit suite only constructs, exercised end to end -----------------


class Person(BaseModel):
    """Record attributes of a person."""

    name: str = Field(..., description="The name of the person.")
    age: int = Field(..., description="The age of the person.")


def test_structured_output_round_trips_through_the_deployment():
    deployment = ToolFakeModel()
    model = ScaledChatModel([deployment])
    for method in ("function_calling", "json_schema"):
        person = model.with_structured_output(Person, method=method).invoke("Who is Ada?")
        assert person == Person(name="Ada", age=36)


async def test_structured_output_round_trips_async():
    model = ScaledChatModel([ToolFakeModel()])
    person = await model.with_structured_output(Person).ainvoke("Who is Ada?")
    assert person == Person(name="Ada", age=36)


def test_forced_tool_choice_reaches_the_deployment():
    def my_adder(a: int, b: int) -> int:
        """Return the sum of two integers."""
        return a + b

    model = ScaledChatModel([ToolFakeModel(args={"a": 1, "b": 2})])
    reply = model.bind_tools([my_adder], tool_choice="my_adder").invoke([HumanMessage("1+2?")])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("my_adder", {"a": 1, "b": 2})]
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["total_tokens"] == 10


class ChatRuns(BaseCallbackHandler):
    """Records each chat model run as (run id, parent run id)."""

    def __init__(self) -> None:
        self.runs: list[tuple[UUID, UUID | None]] = []

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self.runs.append((run_id, parent_run_id))


async def test_tracing_sees_the_deployment_call_nested_under_the_scaled_run():
    model = ScaledChatModel([ToolFakeModel()])
    for call in ("invoke", "ainvoke"):
        runs = ChatRuns()
        reply = getattr(model, call)([HumanMessage("hi")], config={"callbacks": [runs]})
        if call == "ainvoke":
            reply = await reply
        assert reply.content == "plain answer"
        (outer, no_parent), (_inner, parent) = runs.runs
        assert (no_parent, parent) == (None, outer), call
