"""ScaledChatModel failing over between two simulated providers, with metrics.

The primary goes down (503) from second 1 to second 3; requests keep being answered by the
fallback while its breaker is open. Prints the simulator's counters and a few Prometheus lines.

Run: pip install langchain-openai && python examples/simulated_failover.py
"""

from __future__ import annotations

import asyncio

from langchain_openai import ChatOpenAI

import langscale
from langscale import metrics, sim


def chat(url: str) -> ChatOpenAI:
    # max_retries=0: retries and fail-over are the router's job, not the SDK's
    return ChatOpenAI(base_url=url, api_key="sim", model="sim-model", max_retries=0)


async def main() -> None:
    primary = sim.Provider(
        "primary",
        time_to_first_token=0.02,
        requests_per_minute=600,
        faults=[sim.Fault(start=1, end=3, kind="down")],
    )
    fallback = sim.Provider("fallback", time_to_first_token=0.1)
    async with sim.serve(primary, fallback) as s:
        model = langscale.ScaledChatModel(
            [
                langscale.Deployment(chat(s.url("primary")), name="primary"),
                langscale.Deployment(chat(s.url("fallback")), name="fallback"),
            ],
            breaker_min_requests=5,
            breaker_open_for=1.0,
        )
        metrics.register(model, name="chat")
        for second in range(5):
            answers = await asyncio.gather(
                *(model.ainvoke(f"Question {second}-{i}?") for i in range(10))
            )
            print(f"second {second}: {len(answers)} answered")
            await asyncio.sleep(1)
        for name, stats in s.stats().items():
            print(name, {k: stats[k] for k in ("requests", "ok", "unavailable", "rate_limited")})
        print(
            "\n".join(line for line in metrics.prometheus().splitlines() if "chat" in line)[:1500]
        )


if __name__ == "__main__":
    asyncio.run(main())
