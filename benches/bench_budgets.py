"""Tenant budgets shared through Redis (issue 16): how far 200 concurrent requests in 4
processes overshoot one shared budget, beside the check-then-increment a gateway does in Redis
(LiteLLM's pattern: read the spend, call, then add the cost), and what a budget check costs
per call (Redis round trips, time per ``ScaledChatModel.invoke`` on a fake model).

Starts its own ``redis-server`` on loopback through ``tests/redis_server.py``; the baseline
needs ``redis`` (the ``bench`` extra).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from typing import Any

from _common import Case, Row, Settings, compare, rust_example, time_calls, with_redis_server
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import langscale
from langscale import BudgetExceeded, Budgets, Deployment, ScaledChatModel

GROUP_OVERSHOOT = "budgets: one shared $50 budget, 4 processes x 50 threads, $1 calls of 20 ms"
GROUP_COST = "budgets: cost of a budget check, ScaledChatModel.invoke on a fake model"
GROUP_IN_PROCESS = "budgets: cost of a budget check in process (reserve + settle, 3 levels)"
PROCESSES, THREADS, LIMIT = 4, 50, 50.0


def cases(settings: Settings) -> list[Case]:
    return [
        Case("shared budget overshoot", lambda: _with_server(_overshoot, settings)),
        Case("budget check cost", lambda: _with_server(_check_cost, settings)),
        Case("budget check in process (Rust)", lambda: _check_in_process(settings)),
    ]


def _check_in_process(settings: Settings) -> list[Row]:
    """The Rust example ``budget_check``: reserve then settle, three levels (global, tenant,
    user) each with a rate and a spend budget, 50 tenants in turn; one thread and four."""
    rows = []
    for r in rust_example("budget_check", settings):
        one_thread = "1 thread" in r["case"]
        rows.append(
            Row(
                GROUP_IN_PROCESS,
                r["case"],
                "µs",
                r["ns"] / 1000,
                None,
                target="<= 1 µs (issue 16)" if one_thread else "",
                met=r["ns"] <= 1000 if one_thread else None,
            )
        )
    return rows


def _with_server(run, settings: Settings) -> list[Row]:
    return with_redis_server(run, settings, GROUP_OVERSHOOT)


class Priced(BaseChatModel):
    """100 tokens in and out ($1 at $5/1k), after ``delay`` seconds."""

    delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "priced"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        if self.delay:
            time.sleep(self.delay)
        usage = {"input_tokens": 100, "output_tokens": 100, "total_tokens": 200}
        msg = AIMessage(content="ok", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])


def _config(usd: float) -> dict[str, Any]:
    return {"tenant_default": {"budgets": [{"usd": usd, "window": "day"}]}}


def _model(budgets: Budgets | None, delay: float = 0.0) -> ScaledChatModel:
    return ScaledChatModel(
        [Deployment(Priced(delay=delay), price_in=5.0, price_out=5.0)], budgets=budgets
    )


# --- overshoot -------------------------------------------------------------------------


def _ours_worker(url: str, prefix: str, go: Any, out: Any) -> None:
    store = langscale.RedisStore(url, prefix=prefix, timeout=1.0)
    llm = _model(Budgets(_config(LIMIT), store=store), delay=0.02)
    admitted = [0] * THREADS

    def run(i: int) -> None:
        with langscale.tenant("acme"):
            while True:
                try:
                    # Reserves the prompt's estimate (4 tokens) + 196 out: $1, what it uses.
                    llm.invoke([HumanMessage("hi")], max_tokens=196)
                except BudgetExceeded:
                    return
                admitted[i] += 1

    out.put("ready")
    go.wait(120)
    _threads(run)
    out.put(sum(admitted))


def _theirs_worker(url: str, prefix: str, go: Any, out: Any) -> None:
    import redis

    client = redis.Redis.from_url(url)
    key = f"{prefix}:spend:acme"
    admitted = [0] * THREADS

    def run(i: int) -> None:
        while True:
            spent = float(client.get(key) or 0.0)
            if spent + 1.0 > LIMIT:
                return
            time.sleep(0.02)  # the call
            client.incrbyfloat(key, 1.0)
            admitted[i] += 1

    out.put("ready")
    go.wait(120)
    _threads(run)
    out.put(sum(admitted))


def _threads(run: Any) -> None:
    pool = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def _in_processes(worker: Any, url: str, prefix: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=worker, args=(url, prefix, go, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    ready = [out.get(timeout=120) for _ in procs]
    assert ready == ["ready"] * PROCESSES, ready
    go.set()
    admitted = sum(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return admitted


def _overshoot(url: str, settings: Settings) -> list[Row]:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    admitted = _in_processes(_ours_worker, url, prefix)
    report = Budgets(_config(LIMIT), store=langscale.RedisStore(url, prefix=prefix)).report()
    level = report["levels"]["tenant:acme"]
    spent = level["usd"]
    ours = max(0.0, spent - LIMIT)
    extra: dict[str, Any] = {
        "langscale_admitted": admitted,
        "langscale_spent_usd": spent,
        "langscale_refused": level["refused"],
        "in_flight_at_end": report["in_flight"],
    }
    theirs = None
    try:
        import redis

        admitted_theirs = _in_processes(_theirs_worker, url, prefix)
        spent_theirs = float(redis.Redis.from_url(url).get(f"{prefix}:spend:acme") or 0.0)
        theirs = max(0.0, spent_theirs - LIMIT)
        extra |= {"langchain_admitted": admitted_theirs, "langchain_spent_usd": spent_theirs}
    except ImportError:
        extra["langchain"] = "skipped: redis (the bench extra) is not installed"
    return [
        Row(
            GROUP_OVERSHOOT,
            "spend beyond the budget vs check-then-increment in Redis",
            "USD",
            ours,
            theirs,
            target="0 beyond reservations in flight",
            met=ours <= 1e-9,
            extra=extra,
        )
    ]


# --- cost of a check -------------------------------------------------------------------


def _check_cost(url: str, settings: Settings) -> list[Row]:
    n = settings.pick(2000, 200)
    rounds = settings.pick(7, 2)
    store = langscale.RedisStore(url, prefix=f"b{uuid.uuid4().hex[:8]}", timeout=0.5)
    big = _config(1e12)
    shared, local = Budgets(big, store=store), Budgets(big)
    plain, with_local, with_shared = _model(None), _model(local), _model(shared)
    messages = [HumanMessage("hi")]

    def invoke(llm: ScaledChatModel) -> Any:
        return lambda: llm.invoke(messages, max_tokens=196)

    def per_call(llm: ScaledChatModel) -> Any:
        def sample() -> float:
            with langscale.tenant("acme"):
                return time_calls(invoke(llm), n, gc_off=False) / 1000

        return sample

    medians = compare(
        {
            "plain": per_call(plain),
            "local": per_call(with_local),
            "shared": per_call(with_shared),
        },
        rounds,
    )
    before = store.stats()["calls"]
    with langscale.tenant("acme"):
        for _ in range(n):
            invoke(with_shared)()
    trips = (store.stats()["calls"] - before) / n
    return [
        Row(
            GROUP_COST,
            "Redis round trips per call (reserve, settle)",
            "round trips",
            trips,
            None,
            target="1 per call (issue 16; leasing not built)",
            met=trips <= 1.0,
        ),
        Row(
            GROUP_COST,
            "budgets in this process vs no budgets",
            "µs/invoke",
            medians["local"],
            medians["plain"],
        ),
        Row(
            GROUP_COST,
            "budgets in Redis vs no budgets",
            "µs/invoke",
            medians["shared"],
            medians["plain"],
            extra={"in_process_us": medians["local"]},
        ),
    ]
