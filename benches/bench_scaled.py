"""``ScaledChatModel`` beside LangChain's ``with_retry`` and ``with_fallbacks``.

The latency each wrapper adds over calling the inner chat model directly, on a fake model
with no I/O (so everything measured is overhead): p50 of per-call samples for sync
``invoke``, and wall time per call for 1,000 concurrent ``ainvoke`` under ``asyncio.gather``.

``python benches/bench_scaled.py profile`` prints where ``ScaledChatModel.invoke`` and
``ainvoke`` spend their time (cProfile, top functions by own time).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import Case, Row, Settings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable

from langscale import ScaledChatModel

ADDED_TARGET_US = 15.0
CONCURRENT = 1_000
PROMPT = [HumanMessage("What is the capital of France?")]


class FixedModel(BaseChatModel):
    """Answers every prompt with the same message, sync and async, doing nothing else."""

    label: str = "fixed"

    @property
    def _llm_type(self) -> str:
        return "fixed-" + self.label

    def _answer(self) -> ChatResult:
        usage = {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}
        message = AIMessage(content="Paris.", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._answer()

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._answer()


def runnables() -> dict[str, Runnable]:
    """The inner model alone, and each wrapper around the same inner model."""
    inner, spare = FixedModel(label="primary"), FixedModel(label="spare")
    return {
        "inner": inner,
        "scaled": ScaledChatModel([inner]),
        "with_fallbacks": inner.with_fallbacks([spare]),
        "with_retry": inner.with_retry(),
    }


def cases(settings: Settings) -> list[Case]:
    return [
        Case("sync invoke, p50", lambda: _sync(settings)),
        Case(f"{CONCURRENT:,} concurrent ainvoke", lambda: _concurrent(settings)),
    ]


# --- sync: p50 of per-call samples -----------------------------------------------------


def _per_call_us(call: Callable[[], object], calls: int) -> list[float]:
    """One sample per call, in µs. The collector stays on: allocations are part of the cost."""
    gc.collect()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        call()
        samples.append((clock() - start) / 1_000)
    return samples


def _sync(settings: Settings) -> list[Row]:
    calls, rounds = settings.pick((1_500, 6), (400, 3))
    sides = runnables()
    samples: dict[str, list[float]] = {side: [] for side in sides}
    # Interleaved rounds, the first discarded: load elsewhere hits every side alike.
    for round_ in range(rounds + 1):
        for side, runnable in sides.items():
            got = _per_call_us(lambda r=runnable: r.invoke(PROMPT), calls)
            if round_:
                samples[side] += got
    p50 = {side: statistics.median(values) for side, values in samples.items()}
    p99 = {side: _quantile(values, 0.99) for side, values in samples.items()}
    return _rows("scaled: sync invoke, p50 of per-call samples", p50, {"p99_us": p99})


# --- async: 1,000 concurrent ainvoke ---------------------------------------------------


def _concurrent(settings: Settings) -> list[Row]:
    rounds = settings.pick(6, 2)
    sides = runnables()
    loop = asyncio.new_event_loop()
    try:
        per_call: dict[str, list[float]] = {side: [] for side in sides}
        for round_ in range(rounds + 1):
            for side, runnable in sides.items():
                gc.collect()
                start = time.perf_counter_ns()
                loop.run_until_complete(_gather(runnable))
                if round_:
                    per_call[side].append((time.perf_counter_ns() - start) / 1_000 / CONCURRENT)
    finally:
        loop.close()
    wall = {side: statistics.median(values) for side, values in per_call.items()}
    return _rows(f"scaled: {CONCURRENT:,} concurrent ainvoke, wall time per call", wall, {})


async def _gather(runnable: Runnable) -> None:
    await asyncio.gather(*(runnable.ainvoke(PROMPT) for _ in range(CONCURRENT)))


# --- rows ------------------------------------------------------------------------------


def _rows(group: str, us: dict[str, float], extra: dict[str, dict[str, float]]) -> list[Row]:
    """The inner model's own time; then per call and added over it, ScaledChatModel beside
    with_retry and with_fallbacks."""
    inner = us["inner"]
    added = {side: us[side] - inner for side in us}
    detail = {"per_call_us": us, "added_us": added, **extra}
    rows = [Row(group, "inner model alone", "µs/invoke", inner, None, extra=detail)]
    for wrapper, label in (("with_retry", "with_retry()"), ("with_fallbacks", "with_fallbacks")):
        rows.append(
            Row(
                group,
                f"per call: ScaledChatModel vs {label}",
                "µs/invoke",
                us["scaled"],
                us[wrapper],
            )
        )
    for wrapper, label in (("with_retry", "with_retry()"), ("with_fallbacks", "with_fallbacks")):
        rows.append(
            Row(
                group,
                f"added over inner: ScaledChatModel vs {label}",
                "µs/invoke",
                added["scaled"],
                added[wrapper],
                target=f"under {ADDED_TARGET_US:g} µs added",
                met=added["scaled"] < ADDED_TARGET_US,
            )
        )
    return rows


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- where the added time goes ---------------------------------------------------------


def profile(calls: int = 20_000, top: int = 25) -> str:
    """cProfile of ``calls`` sync invokes and as many concurrent ainvokes of ScaledChatModel,
    the top functions by own time (the inner model's own work is in the list too)."""
    scaled = runnables()["scaled"]
    out = io.StringIO()
    for label, work in (
        ("invoke", lambda: [scaled.invoke(PROMPT) for _ in range(calls)]),
        ("ainvoke", lambda: asyncio.run(_gather_n(scaled, calls))),
    ):
        work()  # warm-up
        profiler = cProfile.Profile()
        profiler.runcall(work)
        out.write(f"\n=== ScaledChatModel.{label}, {calls:,} calls ===\n")
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


async def _gather_n(runnable: Runnable, calls: int) -> None:
    for _ in range(calls // CONCURRENT):
        await _gather(runnable)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "profile":
        print(profile(*(int(arg) for arg in sys.argv[2:4])))
    else:
        sys.exit("usage: bench_scaled.py profile [CALLS [TOP]] (run benches/run.py instead)")
