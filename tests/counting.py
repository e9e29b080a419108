"""A chat model that counts its calls and holds each one open, so that callers overlap: the
provider behind the coalescing tests (``test_coalesce.py``, ``test_coalesce_similar.py``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class CountingModel(BaseChatModel):
    """Counts its calls; each waits ``delay`` seconds, or without one until ``gate`` opens
    (``waiting``: how many calls wait for it), then answers with the question (``numbered``:
    and the call's number), or raises with ``fail``."""

    calls: int = 0
    waiting: int = 0
    fail: bool = False
    delay: float | None = None
    numbered: bool = False
    lock: Any = None
    gate: Any = None

    def model_post_init(self, _: Any) -> None:
        self.lock = threading.Lock()
        self.gate = threading.Event()

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        with self.lock:
            self.calls += 1
            n = self.calls
        if self.fail:
            msg = f"provider failed (call {n})"
            raise RuntimeError(msg)
        which = f" {n}" if self.numbered else ""
        text = f"answer{which} to {messages[-1].content}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if self.delay is not None:
            time.sleep(self.delay)
        else:
            with self.lock:
                self.waiting += 1
            assert self.gate.wait(30), "the gate never opened"
        return self._answer(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if self.delay is not None:
            await asyncio.sleep(self.delay)
        else:
            while not self.gate.is_set():
                await asyncio.sleep(0.002)
        return self._answer(messages)
