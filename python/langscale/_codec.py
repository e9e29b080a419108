"""Lossless, data-only encoding of LangChain generations for the caches.

JSON of the generation kind, the full message (content, tool calls, usage, metadata) and the
generation info. Decoding builds fresh objects every time, so a caller mutating a returned
message never changes the cached one. Nothing here can execute code (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import message_to_dict, messages_from_dict
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)

_VERSION = 1


def encode(generations: Sequence[Generation]) -> bytes:
    """Encode generations; raises TypeError or ValueError if they hold non-JSON data."""
    items: list[dict[str, Any]] = []
    for gen in generations:
        if isinstance(gen, ChatGeneration):
            items.append(
                {
                    "k": "chat_chunk" if isinstance(gen, ChatGenerationChunk) else "chat",
                    "m": message_to_dict(gen.message),
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
    doc = {"v": _VERSION, "g": items}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> list[Generation]:
    """Decode what ``encode`` wrote; raises ValueError on anything else."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != _VERSION:
        msg = "not a langscale cache entry"
        raise ValueError(msg)
    out: list[Generation] = []
    for item in doc["g"]:
        kind = item["k"]
        info = item.get("i")
        if kind in ("chat", "chat_chunk"):
            message = messages_from_dict([item["m"]])[0]
            cls = ChatGenerationChunk if kind == "chat_chunk" else ChatGeneration
            out.append(cls(message=message, generation_info=info))
        elif kind in ("text", "text_chunk"):
            cls = GenerationChunk if kind == "text_chunk" else Generation
            out.append(cls(text=item["t"], generation_info=info))
        else:
            msg = f"unknown generation kind {kind!r}"
            raise ValueError(msg)
    return out
