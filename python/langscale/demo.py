"""``langscale demo``: one workload twice, through plain LangChain and through langscale.

A simulated chat model answers in-process (no network, no key) with a fixed latency. The
workload repeats questions the way agents and their users do, often retyped (lower case,
"please", no question mark). The plain run uses LangChain's ``InMemoryRateLimiter`` and no
cache; the langscale run uses ``RateLimiter`` and ``SemanticCache``. Both are rate limited to
the same provider quota.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter
from pydantic import PrivateAttr

from langscale._progress import Progress
from langscale.limiter import RateLimiter
from langscale.semantic import SemanticCache

CITIES = ["Paris", "London", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito"]
TEMPLATES = [
    "What is the weather in {city} today?",
    "Give me three things to do in {city}.",
    "How do I get from the airport to the centre of {city}?",
    "What time zone is {city} in?",
    "Summarise the history of {city} in two sentences.",
]


class SimulatedChatModel(BaseChatModel):
    """A deterministic chat model with a fixed latency that counts its calls."""

    latency: float = 0.02
    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "langscale-simulated"

    @property
    def calls(self) -> int:
        return self._calls

    def _answer(self, messages: Sequence[BaseMessage]) -> ChatResult:
        self._calls += 1
        question = str(messages[-1].content)
        text = f"(simulated) An answer to: {question}"
        usage = {
            "input_tokens": len(question) // 4 + 1,
            "output_tokens": len(text) // 4 + 1,
            "total_tokens": (len(question) + len(text)) // 4 + 2,
        }
        message = AIMessage(content=text, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        time.sleep(self.latency)
        return self._answer(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(self.latency)
        return self._answer(messages)


def retype(question: str, rng: random.Random) -> str:
    """The same question as another user types it."""
    style = rng.randrange(3)
    if style == 0:
        return question.lower()
    if style == 1:
        return question.rstrip("?.") + " please"
    return "hey, " + question.rstrip("?.").lower()


def workload(requests: int, seed: int = 7) -> list[tuple[str, str]]:
    """(question, as typed): a popular few asked again and again, a long tail, and a third
    of them retyped."""
    rng = random.Random(seed)
    pool = [t.format(city=c) for t in TEMPLATES for c in CITIES]
    weights = [1.0 / (rank + 1) for rank in range(len(pool))]
    asked = rng.choices(pool, weights=weights, k=requests)
    return [(q, retype(q, rng) if rng.random() < 0.33 else q) for q in asked]


@dataclass
class RunResult:
    name: str
    requests: int
    ok: int
    provider_calls: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    cache_hits: int = 0
    semantic_hits: int = 0
    limiter_waits: int = 0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p95_ms(self) -> float:
        if len(self.latencies_ms) < 2:
            return self.p50_ms
        return statistics.quantiles(self.latencies_ms, n=20)[-1]

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data.update(
            p50_ms=round(self.p50_ms, 2),
            p95_ms=round(self.p95_ms, 2),
            requests_per_second=round(self.requests / self.seconds, 1),
            provider_calls_per_second=round(self.provider_calls / self.seconds, 1),
        )
        data["seconds"] = round(self.seconds, 3)
        return data


async def _drive(
    name: str,
    questions: list[tuple[str, str]],
    limiter: BaseRateLimiter,
    cache: BaseCache | bool,
    concurrency: int,
    latency: float,
) -> tuple[RunResult, SimulatedChatModel]:
    model = SimulatedChatModel(latency=latency, rate_limiter=limiter, cache=cache)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    ok = 0

    async def one(question: str, bar: Progress) -> None:
        nonlocal ok
        async with gate:
            start = time.perf_counter()
            await model.ainvoke([HumanMessage(question)])
            latencies.append((time.perf_counter() - start) * 1000)
            ok += 1
            bar.advance()

    start = time.perf_counter()
    with Progress(name, len(questions)) as bar:
        await asyncio.gather(*(one(typed, bar) for _, typed in questions))
    seconds = time.perf_counter() - start
    result = RunResult(name, len(questions), ok, model.calls, seconds, latencies)
    return result, model


async def run_demo(
    requests: int = 200, concurrency: int = 16, rate: float = 40.0, latency: float = 0.02
) -> dict[str, Any]:
    questions = workload(requests)
    plain, _ = await _drive(
        "plain LangChain",
        questions,
        InMemoryRateLimiter(requests_per_second=rate),
        False,
        concurrency,
        latency,
    )
    limiter = RateLimiter(requests_per_second=rate)
    cache = SemanticCache()
    scaled, _ = await _drive("langscale", questions, limiter, cache, concurrency, latency)
    stats = cache.stats()
    scaled.cache_hits = stats["hits"]
    scaled.semantic_hits = stats["semantic_hits"]
    scaled.limiter_waits = int(limiter.stats()["waited"])
    return {
        "settings": {
            "requests": requests,
            "concurrency": concurrency,
            "provider_requests_per_second": rate,
            "provider_latency_ms": latency * 1000,
            "distinct_questions": len({q for q, _ in questions}),
            "distinct_texts": len({typed for _, typed in questions}),
        },
        "plain": plain.summary(),
        "langscale": scaled.summary(),
    }


def scorecard(report: dict[str, Any]) -> str:
    plain, scaled = report["plain"], report["langscale"]
    rows = [
        ("requests answered", "ok", "{:d}"),
        ("provider calls", "provider_calls", "{:d}"),
        ("cache hits", "cache_hits", "{:d}"),
        ("  of which semantic", "semantic_hits", "{:d}"),
        ("limiter waits", "limiter_waits", "{:d}"),
        ("wall time (s)", "seconds", "{:.2f}"),
        ("requests/s", "requests_per_second", "{:.1f}"),
        ("provider calls/s", "provider_calls_per_second", "{:.1f}"),
        ("latency p50 (ms)", "p50_ms", "{:.1f}"),
        ("latency p95 (ms)", "p95_ms", "{:.1f}"),
    ]
    s = report["settings"]
    lines = [
        "",
        f"{s['requests']} requests ({s['distinct_questions']} distinct questions, "
        f"{s['distinct_texts']} distinct texts), {s['concurrency']} in "
        f"flight, provider limit {s['provider_requests_per_second']:g} req/s, "
        f"{s['provider_latency_ms']:g} ms per call",
        "",
        f"{'':<22}{'plain LangChain':>18}{'langscale':>14}",
    ]
    for label, key, fmt in rows:
        lines.append(f"{label:<22}{fmt.format(plain[key]):>18}{fmt.format(scaled[key]):>14}")
    saved = plain["provider_calls"] - scaled["provider_calls"]
    speedup = plain["seconds"] / scaled["seconds"] if scaled["seconds"] else float("inf")
    lines += ["", f"langscale saved {saved} provider calls and finished {speedup:.1f}x faster."]
    return "\n".join(lines)


def main(args: Any) -> int:
    report = asyncio.run(
        run_demo(
            requests=args.requests,
            concurrency=args.concurrency,
            rate=args.rate,
            latency=args.latency_ms / 1000,
        )
    )
    print(scorecard(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"figures written to {args.json}")
    return 0
