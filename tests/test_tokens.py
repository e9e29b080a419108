"""Input token counts (``langscale._tokens``, ``_core.count_tokens``): exact for OpenAI models,
the chars/4 estimate otherwise.

The reference counts below were computed once, by hand, with OpenAI's ``tiktoken`` package
(0.14) and the cookbook's ``num_tokens_from_messages`` (3 per message, its role and content
encoded with ``encode_ordinary``, 3 priming the reply). tiktoken is not a test dependency.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult

import langscale
from langscale import _core
from langscale._tokens import estimate_input_tokens, model_name_of

LONG = " ".join(f"The quick brown fox jumps over the lazy dog {i}." for i in range(400))

CHATS = {
    "chat": [
        SystemMessage("You are a helpful assistant."),
        HumanMessage("What is the weather in Paris today?"),
    ],
    "unicode": [HumanMessage("Größe: 日本語のテキスト, emoji 😀👍🏽 and naïve café — «quotes»")],
    "code": [HumanMessage("def add(a, b):\n    return a + b\n\nprint(add(2, 40))  # 42\n")],
    "tool_call": [
        HumanMessage("Weather in Paris?"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}, "id": "c1"}
            ],
        ),
        ToolMessage("18 C and sunny", tool_call_id="c1"),
    ],
    "blocks": [
        HumanMessage(
            [
                {"type": "text", "text": "Describe this picture."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                "Be brief.",
            ]
        )
    ],
    "special": [HumanMessage("Text with <|endoftext|> inside")],
    "long": [HumanMessage(LONG)],
}

# (chat, o200k_base count, cl100k_base count), from tiktoken (see the module doc).
REFERENCE = [
    ("chat", 25, 25),
    ("unicode", 30, 35),
    ("code", 32, 32),
    ("tool_call", 36, 36),
    ("blocks", 14, 14),
    ("special", 17, 16),
    ("long", 4807, 4807),
]


@pytest.mark.parametrize(("chat", "o200k", "cl100k"), REFERENCE)
def test_counts_match_tiktoken(chat: str, o200k: int, cl100k: int) -> None:
    messages = CHATS[chat]
    assert estimate_input_tokens(messages, "gpt-4o-mini") == o200k
    assert estimate_input_tokens(messages, "o3-mini") == o200k
    assert estimate_input_tokens(messages, "gpt-4-turbo") == cl100k
    assert estimate_input_tokens(messages, "gpt-3.5-turbo") == cl100k


def test_unknown_models_get_the_chars_over_4_estimate() -> None:
    messages = [HumanMessage("abcdefgh"), AIMessage("é" * 9)]
    # 17 characters // 4 = 4, plus 4 per message.
    assert estimate_input_tokens(messages, "claude-sonnet-4") == 4 + 8
    assert estimate_input_tokens(messages, None) == 4 + 8
    assert estimate_input_tokens([], None) == 0
    assert estimate_input_tokens([], "gpt-4o") == 3


def test_roles_of_every_message_kind() -> None:
    # A custom role costs its own tokens; the LangChain kinds map onto OpenAI's one-token roles.
    base = estimate_input_tokens([HumanMessage("hi")], "gpt-4o")
    assert estimate_input_tokens([SystemMessage("hi")], "gpt-4o") == base
    assert estimate_input_tokens([ChatMessage(role="user", content="hi")], "gpt-4o") == base
    longer_role = ChatMessage(role="a very unusual speaker", content="hi")
    assert estimate_input_tokens([longer_role], "gpt-4o") > base


def test_tool_calls_count_by_their_arguments() -> None:
    bare = AIMessage("")
    small = AIMessage("", tool_calls=[{"name": "f", "args": {"q": "x"}, "id": "1"}])
    large = AIMessage("", tool_calls=[{"name": "f", "args": {"q": "x " * 200}, "id": "1"}])
    counts = [estimate_input_tokens([m], "gpt-4o") for m in (bare, small, large)]
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] - counts[1] >= 150  # about one token per "x "


def test_model_name_of_reads_the_usual_attributes() -> None:
    class OpenAIish:
        model_name = "gpt-4o"

    class Anthropicish:
        model_name = None
        model = "claude-3-5-sonnet"

    class Bedrockish:
        model_id = "anthropic.claude-v2"

    assert model_name_of(OpenAIish()) == "gpt-4o"
    assert model_name_of(Anthropicish()) == "claude-3-5-sonnet"
    assert model_name_of(Bedrockish()) == "anthropic.claude-v2"
    assert model_name_of(object()) is None
    # ChatEndpoint keeps it under ``model`` (``model_name`` is only its alias).
    endpoint = langscale.ChatEndpoint(base_url="http://127.0.0.1:9/v1", model="gpt-4o-mini")
    assert model_name_of(endpoint) == "gpt-4o-mini"


@pytest.mark.parametrize(
    "messages",
    [
        "user: hi",
        [("user",)],
        [("user", "hi", "extra")],
        [("user", 3)],
        [None],
        [["user", b"hi"]],
    ],
)
def test_bad_messages_raise_config_error(messages: object) -> None:
    with pytest.raises(langscale.ConfigError, match="messages"):
        _core.count_tokens("gpt-4o", messages)  # type: ignore[arg-type]


def test_bad_model_raises_config_error() -> None:
    with pytest.raises(langscale.ConfigError, match="model"):
        _core.count_tokens(42, [("user", "hi")])  # type: ignore[arg-type]


def test_lone_surrogates_are_counted_not_refused() -> None:
    assert _core.count_tokens("gpt-4o", [("user", "a\ud800b")]) > 3
    assert _core.count_tokens(None, [("user", "a\ud800b")]) >= 4


def test_many_threads_count_alike() -> None:
    # The first calls race to build the encoder; every thread must see the same counts.
    barrier = threading.Barrier(8)

    def count(_: int) -> tuple[int, int]:
        barrier.wait()
        return (
            estimate_input_tokens(CHATS["long"], "gpt-4.1"),
            estimate_input_tokens(CHATS["unicode"], "gpt-4"),
        )

    with ThreadPoolExecutor(8) as pool:
        results = set(pool.map(count, range(8)))
    assert results == {(4807, 35)}


texts = st.text(max_size=400)


@settings(max_examples=60, deadline=None)
@given(
    model=st.sampled_from(["gpt-4o", "gpt-4", "mystery-model", None]),
    contents=st.lists(texts, max_size=5),
    extra=texts,
)
def test_any_text_counts_and_a_message_more_never_counts_less(
    model: str | None, contents: list[str], extra: str
) -> None:
    messages = [HumanMessage(c) for c in contents]
    before = estimate_input_tokens(messages, model)
    after = estimate_input_tokens([*messages, AIMessage(extra)], model)
    assert isinstance(before, int)
    assert before >= 0
    assert after > before


@settings(max_examples=60, deadline=None)
@given(content=texts)
def test_exact_count_never_exceeds_the_texts_bytes(content: str) -> None:
    # Every token is at least one byte, whatever the text (forced cuts in long runs included).
    exact = estimate_input_tokens([HumanMessage(content)], "gpt-4o")
    overhead = 3 + 1 + 3
    assert overhead <= exact <= overhead + len(content.encode("utf-8"))


class _Named(BaseChatModel):
    """A chat model named like an OpenAI one; records what its budget holds while it runs."""

    model_name: str = "gpt-4o"
    budgets: Any = None
    held: list[float] = []  # noqa: RUF012 - one list per test, reset there

    @property
    def _llm_type(self) -> str:
        return "named-fake"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        limits = self.budgets.report()["levels"]["tenant:acme"]["limits"]
        self.held.append(next(m["used"] for m in limits if m["budget"].startswith("tokens")))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


@pytest.mark.parametrize(("name", "exact"), [("gpt-4o", True), ("claude-sonnet-4", False)])
def test_budgets_reserve_the_exact_count_where_the_tokenizer_is_known(name, exact):
    """With budgets, a call's reservation holds its prompt's tokens counted with the primary
    deployment's tokenizer (plus max_tokens for the answer); other models: the estimate."""
    budgets = langscale.Budgets({"tenant_default": {"budgets": [{"tokens": 1e9, "window": "day"}]}})
    inner = _Named(model_name=name, budgets=budgets, held=[])
    model = langscale.ScaledChatModel([inner], budgets=budgets)
    messages = CHATS["unicode"] + CHATS["code"]
    with langscale.tenant("acme"):
        model.invoke(messages, max_tokens=50)
    pairs = [("user", m.content) for m in messages]
    counted = _core.count_tokens(name if exact else None, pairs)
    assert inner.held == [counted + 50]
    if exact:
        assert counted != _core.count_tokens(None, pairs)  # the two differ on this prompt
