"""GraphCache beside LangGraph's own node caches: the cost of one ``get`` hit (a small dict
state) and of ``graph.invoke`` on a one-node graph whose node is answered from the cache.

Anchors: ``langgraph.cache.memory.InMemoryCache`` in process, and
``langgraph.cache.redis.RedisCache`` (on redis-py, the ``bench`` extra) beside
``GraphCache(store=...)`` reading from Redis (a fresh instance per round: its L1 is empty, as
in another worker process). Run alone: ``python benches/bench_graph_cache.py [--quick]``.
"""

from __future__ import annotations

import uuid

from _common import Case, Row, Settings, compare, time_calls, time_items, with_redis_server

import langscale

GROUP = "graph cache: GraphCache vs LangGraph's node caches"
STATE = {"question": "what is the refund window?", "answer": "30 days", "sources": [1, 2, 3]}


def cases(settings: Settings) -> list[Case]:
    try:
        import langgraph  # noqa: F401
    except ImportError:
        return [
            Case(
                "langgraph missing",
                lambda: [Row(GROUP, "skipped: no langgraph", "ns/call", 0.0, None)],
            )
        ]
    return [
        Case("get hit, in process", lambda: _get_hit(settings)),
        Case("invoke on a cached node", lambda: _invoke(settings)),
        Case("get hit from Redis", lambda: _with_server(_redis_hit, settings)),
    ]


def _get_hit(settings: Settings) -> list[Row]:
    from langgraph.cache.memory import InMemoryCache

    key = (("graph", "node"), "k")
    ours, theirs = langscale.GraphCache(), InMemoryCache()
    for cache in (ours, theirs):
        cache.set({key: (STATE, None)})
    calls = settings.pick(20_000, 1_000)
    medians = compare(
        {
            "langscale": lambda: time_calls(lambda: ours.get([key]), calls),
            "langchain": lambda: time_calls(lambda: theirs.get([key]), calls),
        },
        settings.pick(7, 2),
    )
    return [
        Row(
            GROUP,
            "get, 1 key hit vs InMemoryCache",
            "ns/call",
            medians["langscale"],
            medians["langchain"],
        )
    ]


def _invoke(settings: Settings) -> list[Row]:
    from langgraph.cache.memory import InMemoryCache
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import CachePolicy

    def build(cache):
        builder = StateGraph(dict)
        builder.add_node("answer", lambda s: {"answer": "30 days"}, cache_policy=CachePolicy())
        builder.add_edge(START, "answer")
        builder.add_edge("answer", END)
        return builder.compile(cache=cache)

    ours, theirs = build(langscale.GraphCache()), build(InMemoryCache())
    state = {"question": "what is the refund window?"}
    ours.invoke(state)
    theirs.invoke(state)
    calls = settings.pick(2_000, 100)
    medians = compare(
        {
            "langscale": lambda: time_calls(lambda: ours.invoke(state), calls),
            "langchain": lambda: time_calls(lambda: theirs.invoke(state), calls),
        },
        settings.pick(5, 2),
    )
    return [
        Row(
            GROUP,
            "graph.invoke, cached node vs InMemoryCache",
            "ns/call",
            medians["langscale"],
            medians["langchain"],
        )
    ]


def _with_server(run, settings: Settings) -> list[Row]:
    return with_redis_server(run, settings, GROUP)


def _redis_hit(url: str, settings: Settings) -> list[Row]:
    try:
        import redis
        from langgraph.cache.redis import RedisCache
    except ImportError:
        return [Row(GROUP, "skipped: redis-py not installed", "ns/call", 0.0, None)]
    prefix = f"b{uuid.uuid4().hex[:8]}"
    store = langscale.RedisStore(url, prefix=prefix, timeout=0.5)
    n = settings.pick(2_000, 200)
    keys = [(("graph", "node"), str(i)) for i in range(n)]
    langscale.GraphCache(store=store).set({k: (STATE, None) for k in keys})
    theirs = RedisCache(redis.Redis.from_url(url), prefix=f"{prefix}:lg:")
    theirs.set({k: (STATE, None) for k in keys})

    def ours() -> float:
        reader = langscale.GraphCache(store=store)  # empty L1: every get reads Redis
        return time_items(lambda k: reader.get([k]), keys)

    medians = compare(
        {"langscale": ours, "langchain": lambda: time_items(lambda k: theirs.get([k]), keys)},
        settings.pick(5, 2),
    )
    return [
        Row(
            GROUP,
            "get, 1 key from Redis (L2) vs RedisCache",
            "ns/call",
            medians["langscale"],
            medians["langchain"],
        )
    ]


if __name__ == "__main__":
    import argparse

    import run as runner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = [r for case in cases(Settings(quick=args.quick)) for r in case.run()]
    print(runner.render(rows))
