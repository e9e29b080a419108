"""Input tokens of a LangChain chat, for limiter charges and budget reservations before a call.

Exact for OpenAI models (``o200k_base`` for GPT-4o, GPT-4.1, GPT-5 and the o-series,
``cl100k_base`` for GPT-4 and GPT-3.5; counted in Rust with the vocabularies compiled in), and
the chars/4 estimate (plus 4 per message) for any other model. This module only turns
LangChain messages into ``(role, content)`` text pairs; the counting is ``_core.count_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage

from langscale import _core

# LangChain's message types under the role names OpenAI counts (each is one token).
_ROLES = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
    "HumanMessageChunk": "user",
    "AIMessageChunk": "assistant",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "function",
}
# The attributes LangChain chat models keep their model name under: ChatOpenAI and most
# integrations ``model_name`` (alias ``model``), ChatAnthropic and others ``model``, Bedrock
# ``model_id``.
MODEL_NAME_ATTRIBUTES = ("model_name", "model", "model_id")


def estimate_input_tokens(messages: Sequence[BaseMessage], model_name: str | None = None) -> int:
    """Input tokens of ``messages`` sent to ``model_name``: exact where its encoding is known,
    estimated otherwise (and where ``model_name`` is None).

    Counted: text content (a str, or the text of content blocks), tool calls by their name and
    JSON arguments. Images, audio and files in content blocks are not counted.
    """
    return _core.count_tokens(model_name, [(_role(m), _text(m)) for m in messages])


# (input, output, prompt-cache read, prompt-cache write) tokens, as _core.Run takes them.
Usage = tuple[int, int, int, int]
NO_USAGE: Usage = (0, 0, 0, 0)


def tokens_of(usage: Any) -> Usage:
    """The counts of LangChain's ``usage_metadata`` (``input_tokens`` counts the cached ones;
    ``input_token_details`` says how many were read from or written to the provider's
    prompt cache)."""
    details = usage.get("input_token_details") or {}
    if not isinstance(details, dict):
        details = {}
    return (
        _count(usage.get("input_tokens")),
        _count(usage.get("output_tokens")),
        _count(details.get("cache_read")),
        _count(details.get("cache_creation")),
    )


def _count(value: Any) -> int:
    """A reported token count: a whole number from 0 below 2**63, else 0. A provider's odd
    usage (negative, absurd, not a number) must not fail a call that succeeded, nor credit a
    budget with negative spend."""
    if isinstance(value, bool):
        return 0
    try:
        n = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return n if 0 <= n < 2**63 else 0


def usage_of(generations: Iterable[Any]) -> Usage:
    """The usage an answer reports: the first generation's message that has any."""
    for gen in generations:
        usage = getattr(getattr(gen, "message", None), "usage_metadata", None)
        if usage:
            return tokens_of(usage)
    return NO_USAGE


def model_name_of(model: Any) -> str | None:
    """The model name a LangChain chat model was configured with, or None: the first str among
    its ``model_name``, ``model`` and ``model_id`` attributes."""
    for attribute in MODEL_NAME_ATTRIBUTES:
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return None


# isinstance, not getattr with a default: a missing attribute of a pydantic model costs
# microseconds (the AttributeError), several per message.
def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):  # carries its own
        return message.role
    return _ROLES.get(message.type, message.type)


def _text(message: BaseMessage) -> str:
    content = message.content
    parts = [content] if isinstance(content, str) else [_block_text(b) for b in content]
    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            parts += (call.get("name") or "", _json(call.get("args")))
        for bad in message.invalid_tool_calls:
            parts += (bad.get("name") or "", bad.get("args") or "")
    return "\n".join(p for p in parts if p)


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    text = block.get("text")
    if isinstance(text, str):
        return text
    if block.get("type") == "tool_use":  # Anthropic's tool call block
        return _json(block.get("input"))
    return ""


def _json(value: Any) -> str:
    """Arguments as a model writes them: compact JSON, non-ASCII kept."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)
