"""The demo's multi-tenant scene: two customers share one provider quota. "noisy" floods it
with twenty times the traffic of "light"; every request has a 3 s deadline (what a user
waits). Plain LangChain at its best shares one ``InMemoryRateLimiter`` and ``with_retry``
between them (it has no notion of a customer); langscale names the tenant in each call's
``RunnableConfig``: its ``RateLimiter`` queues the tenants fairly and ``Budgets`` stops the
noisy tenant's spend at its budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.rate_limiters import InMemoryRateLimiter

from langscale import sim
from langscale._openai_http import OpenAIHTTPChatModel
from langscale.budgets import Budgets
from langscale.endpoint import ChatEndpoint
from langscale.limiter import RateLimiter
from langscale.scaled import Deployment, ScaledChatModel

TENANTS = {"light": 2.0, "noisy": 40.0}  # requests per second each sends
QUOTA_RPM = 600  # the provider's limit both share: 10 requests a second
DEADLINE = 3.0
PRICE = (0.15, 0.60)  # USD per million tokens in, out
BUDGETS_USD = {"light": 0.01, "noisy": 0.0008}

Ask = Callable[[str, list[BaseMessage]], Awaitable[Any]]


@dataclass
class Tenant:
    requests: int = 0
    ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    usd: float = 0.0


def provider() -> sim.Provider:
    return sim.Provider(
        "shared",
        models=("small-fast",),
        time_to_first_token=0.03,
        tokens_per_second=800.0,
        jitter=0.3,
        requests_per_minute=QUOTA_RPM,
        quota_burst_seconds=1.0,
        seed=3,
    )


def _spend(reply: Any) -> float:
    usage = getattr(reply, "usage_metadata", None) or {}
    used_in, used_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return (used_in * PRICE[0] + used_out * PRICE[1]) / 1e6


async def _traffic(ask: Ask, seconds: float) -> dict[str, Tenant]:
    """Open-loop arrivals of each tenant for ``seconds``; each request given ``DEADLINE``."""
    out = {name: Tenant() for name in TENANTS}
    tasks: list[asyncio.Task] = []

    async def one(name: str, i: int) -> None:
        seen = out[name]
        seen.requests += 1
        started = time.perf_counter()
        text = f"Customer {name}, request {i}: give me one fact about the number {i}."
        try:
            reply = await asyncio.wait_for(ask(name, [HumanMessage(text)]), DEADLINE)
        except Exception as exc:  # a failed request is a result of the scene
            kind = "deadline" if isinstance(exc, TimeoutError) else type(exc).__name__
            seen.errors[kind] = seen.errors.get(kind, 0) + 1
            return
        seen.ok += 1
        seen.latencies_ms.append((time.perf_counter() - started) * 1000)
        seen.usd += _spend(reply)

    async def arrivals(name: str, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while loop.time() - start < seconds:
            tasks.append(asyncio.create_task(one(name, sent)))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))

    await asyncio.gather(*(arrivals(n, r) for n, r in TENANTS.items()))
    await asyncio.gather(*tasks)
    return out


def _summary(seen: dict[str, Tenant], percentile: Callable[[list[float], float], float]) -> dict:
    return {
        name: {
            "requests": t.requests,
            "ok": t.ok,
            "success_rate": round(t.ok / t.requests, 4) if t.requests else 0.0,
            "p95_ms": round(percentile(t.latencies_ms, 95), 1),
            "errors": t.errors,
            "spend_usd": round(t.usd, 6),
        }
        for name, t in seen.items()
    }


async def run_scene(
    seconds: float, percentile: Callable[[list[float], float], float]
) -> dict[str, Any]:
    """Both sides, one after the other, against a fresh simulated provider each."""
    report: dict[str, Any] = {
        "seconds": seconds,
        "rates": TENANTS,
        "quota_rpm": QUOTA_RPM,
        "deadline_s": DEADLINE,
    }
    async with sim.serve(provider()) as s:
        model = OpenAIHTTPChatModel(base_url=s.url("shared"), model="small-fast", timeout=30.0)
        model.rate_limiter = InMemoryRateLimiter(requests_per_second=QUOTA_RPM / 60)
        plain = model.with_retry(stop_after_attempt=3, wait_exponential_jitter=True)

        async def ask_plain(name: str, messages: list[BaseMessage]) -> Any:
            return await plain.ainvoke(messages)

        report["plain"] = _summary(await _traffic(ask_plain, seconds), percentile)
        report["plain"]["setup"] = "one InMemoryRateLimiter + with_retry for both tenants"
        await model.aclose()
    async with sim.serve(provider()) as s:
        budgets = Budgets(
            {
                "tenants": {
                    name: {"budgets": [{"usd": usd, "window": "hour"}], "on_over": "raise"}
                    for name, usd in BUDGETS_USD.items()
                }
            }
        )
        endpoint = ChatEndpoint(s.url("shared"), "small-fast", timeout=30)
        scaled = ScaledChatModel(
            [
                Deployment(
                    endpoint,
                    name="shared",
                    limiter=RateLimiter(requests_per_minute=QUOTA_RPM),
                    price_in=PRICE[0] / 1000,
                    price_out=PRICE[1] / 1000,
                )
            ],
            budgets=budgets,
            deadline=DEADLINE,
        )

        async def ask_scaled(name: str, messages: list[BaseMessage]) -> Any:
            return await scaled.ainvoke(messages, config={"configurable": {"tenant": name}})

        report["langscale"] = _summary(await _traffic(ask_scaled, seconds), percentile)
        report["langscale"]["setup"] = (
            "RateLimiter (fair between tenants) + Budgets per tenant (raise when over)"
        )
        report["budgets_usd"] = BUDGETS_USD
        levels = budgets.report()["levels"]
        report["langscale_budget_report"] = {
            name: levels.get(f"tenant:{name}", {}) for name in TENANTS
        }
    return report


def scorecard_lines(scene: dict[str, Any], row: Callable[[str, Any, Any], str]) -> list[str]:
    plain, scaled = scene["plain"], scene["langscale"]
    rates = scene["rates"]

    def pct(v: float) -> str:
        return f"{v * 100:.1f}%"

    lines = [
        "",
        f"Two tenants share one {scene['quota_rpm']} rpm provider for {scene['seconds']:g} s: "
        f"noisy sends {rates['noisy']:g}/s, light {rates['light']:g}/s; "
        f"each request has a {scene['deadline_s']:g} s deadline.",
        f"plain LangChain: {plain['setup']}",
        f"langscale: {scaled['setup']}",
        "",
        row("", "plain LangChain", "langscale"),
    ]
    for name in ("light", "noisy"):
        a, b = plain[name], scaled[name]
        lines += [
            row(f"{name}: success rate", pct(a["success_rate"]), pct(b["success_rate"])),
            row(f"{name}: latency p95 (ms)", f"{a['p95_ms']:.0f}", f"{b['p95_ms']:.0f}"),
            row(
                f"{name}: spend/budget (USD)",
                f"{a['spend_usd']:.4f}/none",
                f"{b['spend_usd']:.4f}/{scene['budgets_usd'][name]:g}",
            ),
        ]
    refused = scaled["noisy"]["errors"].get("BudgetExceeded", 0)
    lines.append(row("noisy: refused over budget", "-", refused))
    return lines
