"""Lossless, data-only encoding of LangChain generations for the caches.

JSON of the generation kind, the full message (content, tool calls, usage, metadata) and the
generation info. Decoding builds fresh objects every time, so a caller mutating a returned
message never changes the cached one. Nothing here can execute code (no pickle).

Decoding is on every cache hit, so it is kept cheap: orjson when it is importable (langsmith,
a langchain-core dependency, brings it), and messages of the standard types are rebuilt with
``model_construct`` from the fields our own encoder wrote, skipping a second validation (that
cut a hit from 20 to about 8 microseconds). Anything else goes through LangChain's validating
``messages_from_dict``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)

_VERSION = 1

_dumps: Callable[[Any], bytes]
_loads: Callable[[bytes], Any]
try:
    import orjson

    _dumps = orjson.dumps
    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with langsmith

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads

_MESSAGE_TYPES: dict[str, type[BaseMessage]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        AIMessage,
        AIMessageChunk,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        ChatMessage,
        FunctionMessage,
    )
}


def _message(item: dict[str, Any]) -> BaseMessage:
    cls = _MESSAGE_TYPES.get(item.get("type", ""))
    data = item.get("data")
    if cls is None or not isinstance(data, dict) or not isinstance(data.get("content"), str | list):
        return messages_from_dict([item])[0]
    return cls.model_construct(**data)


def encode(generations: Sequence[Generation]) -> bytes:
    """Encode generations; raises TypeError or ValueError if they hold non-JSON data."""
    items: list[dict[str, Any]] = []
    for gen in generations:
        if isinstance(gen, ChatGeneration):
            items.append(
                {
                    "k": "chat_chunk" if isinstance(gen, ChatGenerationChunk) else "chat",
                    "m": message_to_dict(gen.message),
                    "t": gen.text,
                    "i": gen.generation_info,
                }
            )
        elif isinstance(gen, Generation):
            items.append(
                {
                    "k": "text_chunk" if isinstance(gen, GenerationChunk) else "text",
                    "t": gen.text,
                    "i": gen.generation_info,
                }
            )
        else:
            msg = f"cannot cache {type(gen).__name__!r}: expected a Generation"
            raise TypeError(msg)
    return _dumps({"v": _VERSION, "g": items})


def decode(raw: bytes) -> list[Generation]:
    """Decode what ``encode`` wrote; raises ValueError on anything else."""
    doc = _loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != _VERSION:
        msg = "not a langscale cache entry"
        raise ValueError(msg)
    out: list[Generation] = []
    for item in doc["g"]:
        kind = item["k"]
        info = item.get("i")
        if kind in ("chat", "chat_chunk"):
            message = _message(item["m"])
            cls = ChatGenerationChunk if kind == "chat_chunk" else ChatGeneration
            text = item.get("t")
            if isinstance(text, str):
                out.append(cls.model_construct(message=message, text=text, generation_info=info))
            else:
                out.append(cls(message=message, generation_info=info))
        elif kind in ("text", "text_chunk"):
            cls = GenerationChunk if kind == "text_chunk" else Generation
            out.append(cls(text=item["t"], generation_info=info))
        else:
            msg = f"unknown generation kind {kind!r}"
            raise ValueError(msg)
    return out


class UnreadableLog:
    """One log line per unreadable cache entry: a warning for a cache's first (so a broken
    writer is noticed), debug after that (so garbage in Redis cannot flood the log)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._warned = False

    def note(self, err: object) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        self._logger.log(level, "langscale: unreadable cache entry treated as a miss: %s", err)
