"""``langscale demo``: one agent workload twice, through plain LangChain and through langscale,
against two simulated providers in-process (no network, no key, no Redis).

The providers (``langscale.sim``): a fast, cheap *primary* with a tight token quota and a
scheduled outage (503s from 35% to 60% of the run), and a slower, pricier *fallback*. The
workload arrives open-loop over ``--seconds``: popular questions asked again and again, some
retyped or paraphrased, questions that differ only in a city or a number, two-turn
conversations and a tool-calling weather agent. A second, shorter scene (``_demo_tenants``):
two customers share one provider quota, one flooding it with 20x the other's traffic.

* plain LangChain at its best: the best of what LangChain ships for each job: an
  ``InMemoryCache`` (``cache=`` on both models), an ``InMemoryRateLimiter`` per model, and
  ``primary.with_retry(...).with_fallbacks([fallback.with_retry(...)])``.
* langscale: ``SemanticCache`` + ``RateLimiter`` (requests and tokens) per deployment +
  ``ScaledChatModel([primary, fallback])`` over two ``ChatEndpoint``s, so the whole executor
  loop runs in Rust: cost first (``routing`` below): within a ``deadline`` a request retries
  or waits for the cheap primary (``failover_price_ratio`` for 429 cool-downs) and pays the
  fallback's ~16x price only when the deadline would pass otherwise.

The plain side talks to the providers through a small httpx chat model (``chat_model`` below,
standing in for ``ChatOpenAI``, which is not a dependency); the simulator answers both alike.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, InMemoryCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.runnables import Runnable
from langchain_core.tools import tool

from langscale import _demo_tenants, sim
from langscale._openai_http import OpenAIHTTPChatModel
from langscale._progress import Progress
from langscale.endpoint import ChatEndpoint
from langscale.limiter import RateLimiter
from langscale.scaled import Deployment, ScaledChatModel
from langscale.semantic import SemanticCache

SYSTEM = "You are a concise travel and trivia assistant."

CITIES = ["Paris", "London", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul"]
NUMBERS = ["3", "5", "12", "20", "42", "100"]

# template -> paraphrases (same question, other words); {x} is a city or a number.
CITY_QUESTIONS: dict[str, list[str]] = {
    "What is the weather in {x} today?": [
        "How is the weather in {x} today?",
        "What's the weather like in {x} today?",
    ],
    "What time zone is {x} in?": ["Which time zone is {x} in?"],
    "Give me three things to do in {x}.": ["Name three things to do in {x}."],
    "How do I get from the airport to the centre of {x}?": [
        "How do I get from the airport to the center of {x}?"
    ],
    "What is the best time of year to visit {x}?": ["When is the best time of year to visit {x}?"],
}
NUMBER_QUESTIONS: dict[str, list[str]] = {
    "Convert {x} km to miles.": ["How many miles is {x} km?"],
    "How many seconds are in {x} hours?": ["How many seconds are there in {x} hours?"],
}
FOLLOW_UPS = ["And what about tomorrow?", "Can you say that in one sentence?", "Why is that?"]
AGENT_QUESTION = "What's the weather in {x} right now? Use the tool."

# Prices in dollars per million tokens (input, output), as a small and a large model.
PRICES = {"primary": (0.15, 0.60), "fallback": (2.50, 10.00)}


def routing(seconds: float) -> dict[str, Any]:
    """langscale's router settings for a run of ``seconds`` (the outage scales with it).

    Cost first: a request may take up to half the run (``deadline``), long enough to outlast
    the primary's outage, and retries the cheap primary (up to 8 calls, backoff capped at 1 s,
    no retry budget to speak of) rather than pay the fallback's ~16x price; a primary cooling
    down for a 429 is waited for when the fallback would cost more than 4x as much
    (``failover_price_ratio``). The fallback answers only a request that would otherwise
    miss its deadline. A breaker sized to the run (a failure rate of 0.2 over at least 10
    calls, open for 2% of the run) stops calls to the primary while it is down; a request
    that finds it open, or half open with its probe out, waits for the probe when its deadline
    allows (``Execution::available_at``) rather than fail over. Measured 2026-12-04 (default
    run, debug build, 2 loaded cores, 2 runs each): open for 2% of the run, the breaker opened
    6-8 times, 0 fallback calls, 113-115 provider calls, p95 232-363 ms; open for 5%, 3-4
    times, 110-111 calls, p95 250-546 ms; no breaker, 135 calls, p95 144-180 ms. Cost $0.0025
    every way (plain LangChain at its best: $0.0040-0.0050).
    """
    return {
        "attempt_timeout": 30,
        "deadline": 0.5 * seconds,
        "max_attempts": 8,
        "backoff_cap": 1.0,
        "retry_budget": 1.0,
        "failover_price_ratio": 4.0,
        "breaker_failure_rate": 0.2,
        "breaker_min_requests": 10,
        "breaker_open_for": 0.02 * seconds,
    }


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"{city}: 18 C, light wind, no rain."


def chat_model(base_url: str, model: str) -> BaseChatModel:
    """The chat model both sides use to talk to a provider (one place to change it)."""
    return OpenAIHTTPChatModel(base_url=base_url, model=model, timeout=30.0)


def providers(seconds: float) -> list[sim.Provider]:
    """The primary (tight token quota, outage from 35% to 60% of the run) and the fallback."""
    outage = sim.Fault(start=round(0.35 * seconds, 3), end=round(0.60 * seconds, 3), kind="down")
    primary = sim.Provider(
        "primary",
        models=("small-fast",),
        time_to_first_token=0.03,
        tokens_per_second=800.0,
        jitter=0.3,
        requests_per_minute=3000,
        tokens_per_minute=60_000,
        quota_burst_seconds=5.0,
        faults=(outage,),
        seed=1,
    )
    fallback = sim.Provider(
        "fallback",
        models=("large-slow",),
        time_to_first_token=0.15,
        tokens_per_second=200.0,
        jitter=0.3,
        requests_per_minute=3000,
        seed=2,
    )
    return [primary, fallback]


class CountedCache(InMemoryCache):
    """LangChain's ``InMemoryCache``, counting its hits for the scorecard (nothing else
    changed: ``alookup`` goes through ``lookup``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hits = 0
        self.lookups = 0

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        found = super().lookup(prompt, llm_string)
        self.lookups += 1
        self.hits += found is not None
        return found


# -- workload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    text: str
    slot: str | None  # the city or number the answer must be about
    kind: str  # repeat, retyped, paraphrase, follow_up, agent


@dataclass(frozen=True)
class Session:
    turns: tuple[Turn, ...]
    agent: bool
    start: float


def _retype(text: str, rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return text.lower()
    if style == 1:
        return text.rstrip("?.") + " please"
    return "hey, " + text[0].lower() + text[1:].rstrip("?.")


def workload(requests: int, seconds: float, seed: int = 7) -> list[Session]:
    """Sessions whose turns add up to ``requests``, starting evenly over ``seconds``."""
    rng = random.Random(seed)
    items = [(t, c) for t in CITY_QUESTIONS for c in CITIES] + [
        (t, n) for t in NUMBER_QUESTIONS for n in NUMBERS
    ]
    rng.shuffle(items)
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(items))]
    paraphrases = {**CITY_QUESTIONS, **NUMBER_QUESTIONS}

    def question() -> Turn:
        template, slot = rng.choices(items, weights=weights, k=1)[0]
        roll = rng.random()
        if roll < 0.55:
            return Turn(template.format(x=slot), slot, "repeat")
        if roll < 0.8:
            return Turn(_retype(template.format(x=slot), rng), slot, "retyped")
        return Turn(rng.choice(paraphrases[template]).format(x=slot), slot, "paraphrase")

    sessions: list[tuple[tuple[Turn, ...], bool]] = []
    left = requests
    while left > 0:
        roll = rng.random()
        if roll < 0.2:
            city = rng.choices(CITIES, weights=[1.0 / (i + 1) for i in range(len(CITIES))])[0]
            text = AGENT_QUESTION.format(x=city)
            if rng.random() < 0.3:
                text = _retype(text, rng)
            sessions.append(((Turn(text, city, "agent"),), True))
            left -= 1
        elif roll < 0.4 and left >= 2:
            first = question()
            follow = Turn(rng.choice(FOLLOW_UPS), None, "follow_up")
            sessions.append(((first, follow), False))
            left -= 2
        else:
            sessions.append(((question(),), False))
            left -= 1
    gap = seconds / max(len(sessions), 1)
    return [Session(turns, agent, i * gap) for i, (turns, agent) in enumerate(sessions)]


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    wrong: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


async def _converse(
    session: Session, chat: Runnable, agent_chat: Runnable, run: Run, bar: Progress
) -> None:
    history: list[BaseMessage] = [SystemMessage(SYSTEM)]
    for turn in session.turns:
        history.append(HumanMessage(turn.text))
        started = time.perf_counter()
        try:
            model = agent_chat if session.agent else chat
            reply = await model.ainvoke(history)
            rounds = 0
            while session.agent and reply.tool_calls and rounds < 3:
                rounds += 1
                history.append(reply)
                for call in reply.tool_calls:
                    result = get_weather.invoke(call["args"])
                    history.append(ToolMessage(str(result), tool_call_id=call["id"] or ""))
                reply = await agent_chat.ainvoke(history)
        except Exception as exc:  # a failed request is a result of the run, not a crash
            run.failed += 1
            kind = type(exc).__name__
            run.errors[kind] = run.errors.get(kind, 0) + 1
            bar.advance(len(session.turns) - session.turns.index(turn))
            return
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
        run.ok += 1
        if turn.slot is not None and turn.slot.lower() not in str(reply.content).lower():
            run.wrong += 1
        history.append(reply)
        bar.advance()


async def _drive(
    name: str, sessions: list[Session], chat: Runnable, agent_chat: Runnable, concurrency: int
) -> Run:
    run = Run(name)
    gate = asyncio.Semaphore(concurrency)
    total = sum(len(s.turns) for s in sessions)
    begin = time.perf_counter()

    async def one(session: Session, bar: Progress) -> None:
        delay = session.start - (time.perf_counter() - begin)
        if delay > 0:
            await asyncio.sleep(delay)
        async with gate:
            await _converse(session, chat, agent_chat, run, bar)

    with Progress(name, total) as bar:
        await asyncio.gather(*(one(s, bar) for s in sessions))
    run.seconds = time.perf_counter() - begin
    return run


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def _summary(run: Run, s: sim.Simulation, requests: int) -> dict[str, Any]:
    stats = s.stats()
    calls = {name: st["requests"] for name, st in stats.items()}
    cost = 0.0
    for name, st in stats.items():
        price_in, price_out = PRICES[name]
        cost += (st["prompt_tokens"] * price_in + st["completion_tokens"] * price_out) / 1e6
    return {
        "requests": requests,
        "ok": run.ok,
        "failed": requests - run.ok,
        "errors": run.errors,
        "wrong_answers": run.wrong,
        "success_rate": round(run.ok / requests, 4) if requests else 0.0,
        "seconds": round(run.seconds, 3),
        "latency_ms": {
            "p50": round(_percentile(run.latencies_ms, 50), 1),
            "p95": round(_percentile(run.latencies_ms, 95), 1),
            "p99": round(_percentile(run.latencies_ms, 99), 1),
            "mean": round(statistics.fmean(run.latencies_ms), 1) if run.latencies_ms else 0.0,
        },
        "provider_calls": sum(calls.values()),
        "provider_calls_by_provider": calls,
        "rate_limited_429": sum(st["rate_limited"] for st in stats.values()),
        "server_errors_5xx": sum(st["server_errors"] + st["unavailable"] for st in stats.values()),
        "fallback_calls": calls.get("fallback", 0),
        "prompt_tokens": sum(st["prompt_tokens"] for st in stats.values()),
        "completion_tokens": sum(st["completion_tokens"] for st in stats.values()),
        "cost_usd": round(cost, 6),
        "cache": {"exact_hits": 0, "semantic_hits": 0, "guard_rejections": 0},
        "setup": "",
        "breaker_trips": 0,
        "router_fallbacks": 0,
        "timeline": {name: [list(row) for row in s.timeline(name)] for name in stats},
        "latencies_ms": [round(v, 2) for v in run.latencies_ms],
    }


async def _close(*models: BaseChatModel) -> None:
    for m in models:
        if isinstance(m, OpenAIHTTPChatModel):
            await m.aclose()


async def run_plain(sessions: list[Session], concurrency: int, seconds: float) -> dict[str, Any]:
    requests = sum(len(s.turns) for s in sessions)
    primary_cfg, fallback_cfg = providers(seconds)
    async with sim.serve(primary_cfg, fallback_cfg) as s:
        primary = chat_model(s.url("primary"), "small-fast")
        fallback = chat_model(s.url("fallback"), "large-slow")
        # LangChain's own cache, shared by both models (each keys by its own llm_string).
        cache = CountedCache()
        primary.cache = cache
        fallback.cache = cache
        primary.rate_limiter = InMemoryRateLimiter(
            requests_per_second=(primary_cfg.requests_per_minute or 60) / 60
        )
        fallback.rate_limiter = InMemoryRateLimiter(
            requests_per_second=(fallback_cfg.requests_per_minute or 60) / 60
        )
        retry = {"stop_after_attempt": 3, "wait_exponential_jitter": True}
        chat = primary.with_retry(**retry).with_fallbacks([fallback.with_retry(**retry)])
        agent_chat = (
            primary.bind_tools([get_weather])
            .with_retry(**retry)
            .with_fallbacks([fallback.bind_tools([get_weather]).with_retry(**retry)])
        )
        s.reset()
        run = await _drive("plain LangChain", sessions, chat, agent_chat, concurrency)
        summary = _summary(run, s, requests)
        summary["cache"]["exact_hits"] = cache.hits
        summary["setup"] = (
            "InMemoryCache, InMemoryRateLimiter, with_retry(stop_after_attempt=3) + with_fallbacks"
        )
        await _close(primary, fallback)
    return summary


async def run_langscale(
    sessions: list[Session], concurrency: int, seconds: float
) -> dict[str, Any]:
    requests = sum(len(s.turns) for s in sessions)
    primary_cfg, fallback_cfg = providers(seconds)
    async with sim.serve(primary_cfg, fallback_cfg) as s:
        # langscale's own client: with ChatEndpoints the whole executor loop runs in Rust.
        primary = ChatEndpoint(s.url("primary"), "small-fast", timeout=30)
        fallback = ChatEndpoint(s.url("fallback"), "large-slow", timeout=30)
        cache = SemanticCache()
        settings = routing(seconds)
        burst = primary_cfg.quota_burst_seconds
        per_1k = {name: (p_in / 1000, p_out / 1000) for name, (p_in, p_out) in PRICES.items()}
        model = ScaledChatModel(
            [
                Deployment(
                    primary,
                    name="primary",
                    limiter=RateLimiter(
                        requests_per_minute=primary_cfg.requests_per_minute,
                        tokens_per_minute=primary_cfg.tokens_per_minute,
                        token_burst=int(burst * (primary_cfg.tokens_per_minute or 0) / 60),
                    ),
                    price_in=per_1k["primary"][0],
                    price_out=per_1k["primary"][1],
                ),
                Deployment(
                    fallback,
                    name="fallback",
                    limiter=RateLimiter(requests_per_minute=fallback_cfg.requests_per_minute),
                    price_in=per_1k["fallback"][0],
                    price_out=per_1k["fallback"][1],
                ),
            ],
            cache=cache,
            **settings,
        )
        agent_model = model.bind_tools([get_weather])
        s.reset()
        run = await _drive("langscale", sessions, model, agent_model, concurrency)
        summary = _summary(run, s, requests)
        cache_stats = cache.stats()
        summary["cache"] = {
            "exact_hits": int(cache_stats["exact_hits"]),
            "semantic_hits": int(cache_stats["semantic_hits"]),
            "guard_rejections": int(cache_stats["guard_rejections"]),
        }
        summary["setup"] = (
            "SemanticCache, RateLimiter (rpm + tpm), ScaledChatModel over ChatEndpoints: "
            f"deadline={settings['deadline']:g} s, "
            f"failover_price_ratio={settings['failover_price_ratio']:g}, "
            "retries within the deadline, a breaker"
        )
        router = model.stats()
        summary["breaker_trips"] = sum(d["breaker_opened"] for d in router["deployments"])
        summary["router_fallbacks"] = sum(d["fallbacks"] for d in router["deployments"])
        await _close(primary, fallback)
    return summary


async def run_demo(
    requests: int = 240, concurrency: int = 16, seconds: float = 8.0, seed: int = 7
) -> dict[str, Any]:
    sessions = workload(requests, seconds, seed)
    plain = await run_plain(sessions, concurrency, seconds)
    scaled = await run_langscale(sessions, concurrency, seconds)
    tenants = await _demo_tenants.run_scene(max(2.0, seconds / 2), _percentile)
    turns = [t for s in sessions for t in s.turns]
    primary_cfg, fallback_cfg = providers(seconds)
    outage = primary_cfg.faults[0]
    return {
        "settings": {
            "requests": requests,
            "sessions": len(sessions),
            "concurrency": concurrency,
            "seconds": seconds,
            "seed": seed,
            "turns_by_kind": {
                k: sum(t.kind == k for t in turns) for k in sorted({t.kind for t in turns})
            },
            "distinct_texts": len({t.text for t in turns}),
            "primary": {
                "requests_per_minute": primary_cfg.requests_per_minute,
                "tokens_per_minute": primary_cfg.tokens_per_minute,
                "quota_burst_seconds": primary_cfg.quota_burst_seconds,
                "outage_seconds": [outage.start, outage.end],  # type: ignore[union-attr]
                "price_per_million": PRICES["primary"],
            },
            "fallback": {
                "requests_per_minute": fallback_cfg.requests_per_minute,
                "price_per_million": PRICES["fallback"],
            },
        },
        "plain": plain,
        "langscale": scaled,
        "tenants": tenants,
    }


# -- scorecard --------------------------------------------------------------------------------


def scorecard(report: dict[str, Any]) -> str:
    plain, scaled = report["plain"], report["langscale"]
    s = report["settings"]

    def row(label: str, a: Any, b: Any) -> str:
        return f"{label:<30}{a!s:>18}{b!s:>14}"

    def pct(v: float) -> str:
        return f"{v * 100:.1f}%"

    p = s["primary"]
    lines = [
        "",
        f"{s['requests']} requests in {s['sessions']} sessions over ~{s['seconds']:g} s, "
        f"{s['concurrency']} at a time ({s['distinct_texts']} distinct texts)",
        f"primary: {p['requests_per_minute']:g} rpm, {p['tokens_per_minute']:g} tpm "
        f"(over {p['quota_burst_seconds']:g} s spans), down (503) from second "
        f"{p['outage_seconds'][0]:g} to {p['outage_seconds'][1]:g}; "
        f"fallback: slower, ~16x the price",
        f"plain LangChain, at its best: {plain.get('setup', '')}",
        f"langscale: {scaled.get('setup', '')}",
        "",
        row("", "plain LangChain", "langscale"),
        row("success rate", pct(plain["success_rate"]), pct(scaled["success_rate"])),
        row("wrong answers", plain["wrong_answers"], scaled["wrong_answers"]),
    ]
    for q in ("p50", "p95", "p99"):
        lines.append(
            row(
                f"latency {q} (ms)",
                f"{plain['latency_ms'][q]:.0f}",
                f"{scaled['latency_ms'][q]:.0f}",
            )
        )
    lines += [
        row("wall time (s)", f"{plain['seconds']:.1f}", f"{scaled['seconds']:.1f}"),
        row("provider calls", plain["provider_calls"], scaled["provider_calls"]),
        row(
            "  primary / fallback",
            "{primary} / {fallback}".format(**plain["provider_calls_by_provider"]),
            "{primary} / {fallback}".format(**scaled["provider_calls_by_provider"]),
        ),
        row("cache hits: exact", plain["cache"]["exact_hits"], scaled["cache"]["exact_hits"]),
        row("cache hits: semantic", "-", scaled["cache"]["semantic_hits"]),
        row("near misses refused (guard)", "-", scaled["cache"]["guard_rejections"]),
        row("429s received", plain["rate_limited_429"], scaled["rate_limited_429"]),
        row("5xx received", plain["server_errors_5xx"], scaled["server_errors_5xx"]),
        row("calls on the fallback", plain["fallback_calls"], scaled["fallback_calls"]),
        row("breaker trips", "-", scaled["breaker_trips"]),
        row(
            "tokens (prompt + completion)",
            plain["prompt_tokens"] + plain["completion_tokens"],
            scaled["prompt_tokens"] + scaled["completion_tokens"],
        ),
        row("cost (USD)", f"{plain['cost_usd']:.4f}", f"{scaled['cost_usd']:.4f}"),
    ]
    saved = plain["provider_calls"] - scaled["provider_calls"]
    share = saved / plain["provider_calls"] if plain["provider_calls"] else 0.0
    ratio = scaled["cost_usd"] / plain["cost_usd"] if plain["cost_usd"] else 1.0
    cost = f"{1 - ratio:.0%} less" if ratio <= 1 else f"{ratio - 1:.0%} more"
    p95 = (plain["latency_ms"]["p95"], scaled["latency_ms"]["p95"])
    faster = f" ({p95[0] / p95[1]:.1f}x lower)" if p95[1] else ""
    lines += [
        "",
        f"Against LangChain's own cache, limiter, retries and fallbacks, langscale made {saved} "
        f"fewer provider calls ({share:.0%}) and cost {cost}; p95 latency "
        f"{p95[0]:.0f} -> {p95[1]:.0f} ms{faster}.",
    ]
    if "tenants" in report:
        lines += _demo_tenants.scorecard_lines(report["tenants"], row)
    return "\n".join(lines)


def main(args: Any) -> int:
    report = asyncio.run(
        run_demo(requests=args.requests, concurrency=args.concurrency, seconds=args.seconds)
    )
    print(scorecard(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"figures written to {args.json}")
    if args.html:
        from langscale._demo_report import html_report

        with open(args.html, "w", encoding="utf-8") as f:
            f.write(html_report(report))
        print(f"report written to {args.html}")
    return 0
