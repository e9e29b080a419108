"""Lossless, data-only encoding of LangChain generations for the caches.

JSON of the generation kind, the full message (content, tool calls, usage, metadata) and the
generation info. Nothing here can execute code (no pickle).

Decoding is on every cache hit, so it is kept cheap. ``decode`` parses with orjson when it is
importable (langsmith, a langchain-core dependency, brings it) and rebuilds messages of the
standard types with ``model_construct`` from the fields our own encoder wrote, skipping a
second validation; anything else goes through LangChain's validating ``messages_from_dict``.
A ``Decoder`` (one per cache) goes further: it keeps the entries it decoded lately as
templates and answers a repeated hit with a copy built without pydantic (the template's
field dict copied, its dicts and lists parsed afresh from JSON), which costs a fraction of a
decode. Every call still returns objects no other caller holds: a caller mutating its answer
(message content, tool calls, metadata, generation info) never changes another's.
"""

from __future__ import annotations

import json
import logging
import threading
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
from pydantic import BaseModel

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
    if (
        cls is None
        or not isinstance(data, dict)
        or not isinstance(data.get("content"), (str, list))
    ):
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


# --- templates: fresh copies of recently decoded entries -------------------------------

# pydantic keeps a model's state in these four slots (``model_construct`` and ``__copy__`` set
# them the same way); their descriptors set them faster than ``object.__setattr__``.
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


class _Template:
    """How to build a fresh copy of one decoded pydantic object (a generation or its message)
    without pydantic: its field dict as JSON (parsed afresh for each copy, so every dict and
    list is new) and nested objects built from their own templates."""

    __slots__ = ("cls", "extra", "fields", "fields_set", "nested")

    def __init__(self, obj: BaseModel) -> None:
        if obj.__pydantic_private__ is not None or obj.__pydantic_extra__:
            msg = "private or extra attributes"
            raise ValueError(msg)
        fields = dict(obj.__dict__)
        nested = []
        for name, value in fields.items():
            if isinstance(value, BaseModel):
                nested.append((name, _Template(value)))
                fields[name] = None  # a placeholder keeps the field order
        self.cls = type(obj)
        self.fields = _dumps(fields)
        self.nested = tuple(nested)
        self.fields_set = frozenset(obj.__pydantic_fields_set__)
        self.extra = obj.__pydantic_extra__ is not None
        if self.build() != obj:  # JSON round trip lost something (NaN, a non-JSON value)
            msg = "fields do not survive a JSON round trip"
            raise ValueError(msg)

    def build(self) -> Any:
        """A new object equal to the template's, sharing nothing mutable with it or with any
        other copy (what ``model_copy(deep=True)`` gives, at a fraction of its cost)."""
        fields = _loads(self.fields)
        for name, template in self.nested:
            fields[name] = template.build()
        obj = _new(self.cls)
        _set_dict(obj, fields)
        _set_fields_set(obj, set(self.fields_set))
        _set_extra(obj, {} if self.extra else None)
        _set_private(obj, None)
        return obj


class Decoder:
    """``decode`` for one cache, remembering the templates of the last ``size`` entries it
    decoded, within about ``max_bytes`` (by their bytes, so a changed value is a new entry):
    a hit on a remembered entry costs a copy, not a decode. Entries whose objects cannot be
    templated (attributes that are not JSON data), or larger than the whole budget, are
    decoded on every hit. Thread-safe."""

    def __init__(self, size: int = 1_024, max_bytes: int = 16 << 20) -> None:
        self._size = size
        self._max_bytes = max_bytes
        # None: the entry cannot be templated.
        self._templates: dict[bytes, tuple[_Template, ...] | None] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def decode(self, raw: bytes) -> list[Generation]:
        """Fresh generations for ``raw``; raises what ``decode`` raises."""
        templates = self._templates.get(raw, False)
        if templates is False:
            return self._first(raw)
        if templates is None:
            return decode(raw)
        return [template.build() for template in templates]

    @staticmethod
    def _weight(raw: bytes) -> int:
        # The key, and the templates' JSON: about as long as the entry.
        return 2 * len(raw)

    def _first(self, raw: bytes) -> list[Generation]:
        generations = decode(raw)
        weight = self._weight(raw)
        if weight > self._max_bytes:
            return generations
        try:
            # Built from the decoded objects before they are handed out; a template holds
            # JSON of their fields, so it shares nothing with them.
            templates: tuple[_Template, ...] | None = tuple(_Template(g) for g in generations)
        except (TypeError, ValueError):
            templates = None
        with self._lock:
            if raw in self._templates:  # another thread got here first
                return generations
            while self._templates and (
                len(self._templates) >= self._size or self._bytes + weight > self._max_bytes
            ):
                oldest = next(iter(self._templates))
                del self._templates[oldest]
                self._bytes -= self._weight(oldest)
            self._templates[raw] = templates
            self._bytes += weight
        return generations

    def forget(self) -> None:
        """Drop every template (for ``clear()``: memory goes back with the entries)."""
        with self._lock:
            self._templates.clear()
            self._bytes = 0


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
