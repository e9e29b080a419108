"""A chat model behind langscale's RateLimiter and ExactCache, sync and async.

Run: python examples/rate_limited_agent.py
"""

from __future__ import annotations

import asyncio

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

import langscale


def main() -> None:
    limiter = langscale.RateLimiter(requests_per_second=20, max_concurrency=4)
    cache = langscale.ExactCache(maxsize=10_000, ttl=3600)
    model = GenericFakeChatModel(
        messages=iter(["Paris is sunny.", "London is grey."]),
        rate_limiter=limiter,
        cache=cache,
    )
    print(model.invoke("Weather in Paris?").content)
    print(model.invoke("Weather in Paris?").content, "(from cache)")
    print(model.invoke("Weather in London?").content)
    print("cache:", cache.stats())

    async def priority_work() -> None:
        # Callers that know more pass a token estimate and a priority, then settle real usage.
        async with await limiter.aacquire(tokens=0, priority="high") as permit:
            print("admitted with priority", permit.priority)

    asyncio.run(priority_work())
    print("limiter:", limiter.stats())


if __name__ == "__main__":
    main()
