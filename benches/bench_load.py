"""Load benchmark (``make bench-load``): open-loop offered load against the simulated provider.

Each run schedules ``rate x seconds`` requests at exact times ``start + i / rate`` whatever
happened to the earlier ones (open loop: a slow client does not slow the offered load down),
with at most ``concurrency`` in flight (the rest wait their turn, and that wait counts).
Latency is from a request's scheduled time to its answer. Paths, side by side in one process:

- ``direct``: the Rust HTTP client alone (``_core.Endpoint.achat`` on a prepared body), the
  baseline every other path's added latency is measured against;
- ``native router``: ``_core.NativeRouter.achat``, the executor loop in Rust without LangChain;
- ``native``: ``ScaledChatModel([ChatEndpoint, ChatEndpoint]).ainvoke(messages)``;
- ``python``: ``ScaledChatModel`` over Python chat models (``ChatOpenAI`` when
  langchain-openai is installed, else ``ChatEndpoint`` with ``native=False``);
- ``langchain``: that Python chat model alone, what a user would otherwise call.

Reports achieved req/s (answers / time from the first scheduled request to the last answer),
p50/p99 latency, and p50/p99 added over ``direct`` at the same rate and concurrency.
The simulator runs in this process on its own tokio threads: on a small machine client and
server share the cores, which caps every path (the report says how many cores there were).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from langscale import ChatEndpoint, ScaledChatModel, _core, sim
from langscale._progress import Progress
from langscale.endpoint import request_json

Call = Callable[[], Awaitable[Any]]
RESULTS = Path(__file__).resolve().parent.parent / "bench-results" / "load.json"
PROMPT = "What is the capital of France?"


@dataclass
class Run:
    path: str
    rate: float
    concurrency: int
    requests: int
    ok: int
    errors: int
    dropped: int
    achieved: float
    p50_ms: float
    p99_ms: float
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def drive(
    call: Call, rate: float, concurrency: int, seconds: float, drain: float | None = None
) -> dict[str, Any]:
    """Offer ``rate`` req/s for ``seconds`` (open loop), at most ``concurrency`` in flight.
    Requests still unanswered ``drain`` seconds after the last was offered (default: as long
    as the offering took, at least 2 s) are cancelled and counted as dropped."""
    total = max(1, int(rate * seconds))
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: list[BaseException] = []
    last_done = 0.0

    async def one(scheduled: float) -> None:
        nonlocal last_done
        async with gate:
            try:
                await call()
            except Exception as exc:
                errors.append(exc)
                return
        done = time.perf_counter()
        latencies.append(done - scheduled)
        last_done = max(last_done, done)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.005
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = start + sent / rate
        if due > now:
            await asyncio.sleep(due - now)
            now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            tasks.append(asyncio.ensure_future(one(start + sent / rate)))
            sent += 1
    _, pending = await asyncio.wait(tasks, timeout=max(2.0, seconds) if drain is None else drain)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    elapsed = (last_done if latencies else time.perf_counter()) - start
    return {
        "requests": total,
        "ok": len(latencies),
        "errors": len(errors),
        "dropped": len(pending),
        "achieved": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "first_error": repr(errors[0])[:200] if errors else None,
    }


def paths(urls: list[str], python_paths: bool = True) -> dict[str, Call]:
    """The calls to compare, each over the same simulated providers."""
    messages = [HumanMessage(PROMPT)]
    body = request_json(messages, None, {})
    direct = _core.Endpoint(urls[0], "sim-model")
    endpoints = [ChatEndpoint(u, "sim-model", api_key="x") for u in urls]
    native = ScaledChatModel(endpoints, strategy="round_robin")
    router = native._native
    assert router is not None
    out: dict[str, Call] = {
        "direct": lambda: direct.achat(body),
        "native router": lambda: router.achat(body, 10, 0, 1),
        "native": lambda: native.ainvoke(messages),
    }
    if not python_paths:
        return out
    try:
        from langchain_openai import ChatOpenAI

        inner = [
            ChatOpenAI(base_url=u, model="sim-model", api_key="x", max_retries=0) for u in urls
        ]
        name = "ChatOpenAI"
    except ImportError:
        inner = [ChatEndpoint(u, "sim-model", api_key="x") for u in urls]
        name = "ChatEndpoint, native=False"
    python = ScaledChatModel(inner, strategy="round_robin", native=False)
    out[f"python ({name})"] = lambda: python.ainvoke(messages)
    out[f"langchain ({name.split(',')[0]} alone)"] = lambda: inner[0].ainvoke(messages)
    return out


def configs(args: argparse.Namespace) -> list[tuple[float, int]]:
    if args.rates or args.concurrency:
        rates = args.rates or [5000.0]
        levels = args.concurrency or [256]
        return [(r, c) for r in rates for c in levels]
    # 200 req/s: below every path's capacity, where added latency is overhead, not queueing.
    if args.quick:
        return [(200.0, 64), (2000.0, 256)]
    return [
        (200.0, 64),
        (1000.0, 256),
        (2000.0, 256),
        (5000.0, 64),
        (5000.0, 256),
        (5000.0, 1024),
    ]


async def measure(args: argparse.Namespace, urls: list[str]) -> list[Run]:
    wanted = args.paths or ["python", "langchain"]
    calls = paths(urls, any(p.startswith(("python", "langchain")) for p in wanted))
    if args.paths:
        calls = {k: v for k, v in calls.items() if any(k.startswith(p) for p in args.paths)}
    # Warm every path (connections, imports, first-call caches).
    for call in calls.values():
        await asyncio.gather(*(call() for _ in range(32)))
    runs: list[Run] = []
    todo = configs(args)
    with Progress("bench load", len(todo) * len(calls)) as bar:
        for rate, concurrency in todo:
            baseline: Run | None = None
            for name, call in calls.items():
                gc.collect()
                result = await drive(call, rate, concurrency, args.seconds)
                run = Run(path=name, rate=rate, concurrency=concurrency, **result)
                if name == "direct":
                    baseline = run
                elif baseline is not None:
                    run.added_p50_ms = run.p50_ms - baseline.p50_ms
                    run.added_p99_ms = run.p99_ms - baseline.p99_ms
                runs.append(run)
                bar.advance()
    return runs


def render(runs: list[Run], latency: float, cores: int) -> str:
    lines = [
        f"open-loop load, simulator latency {latency * 1e3:g} ms, {cores} CPU cores shared by "
        "client and simulator",
        "",
        "| offered req/s | in flight | path | achieved req/s | p50 ms | p99 ms "
        "| added p50 ms | added p99 ms | errors | dropped |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in runs:
        added50 = "—" if r.added_p50_ms is None else f"{r.added_p50_ms:+.3f}"
        added99 = "—" if r.added_p99_ms is None else f"{r.added_p99_ms:+.3f}"
        lines.append(
            f"| {r.rate:,.0f} | {r.concurrency:,} | {r.path} | {r.achieved:,.0f} "
            f"| {r.p50_ms:.3f} | {r.p99_ms:.3f} | {added50} | {added99} "
            f"| {r.errors} | {r.dropped} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short runs, a smoke test")
    parser.add_argument("--seconds", type=float, default=None, help="offered load per run")
    parser.add_argument("--rates", type=float, nargs="*", help="offered req/s values")
    parser.add_argument("--concurrency", type=int, nargs="*", help="in-flight caps")
    parser.add_argument("--latency", type=float, default=0.0, help="simulator TTFT, seconds")
    parser.add_argument("--sim-threads", type=int, default=1, help="simulator tokio threads")
    parser.add_argument("--paths", nargs="*", help="only paths whose name starts so")
    parser.add_argument("--json", type=Path, default=None, help=f"write runs (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 3.0
    return args


def main(argv: list[str] | None = None) -> list[Run]:
    args = parse(argv)
    providers = [sim.Provider(n, time_to_first_token=args.latency) for n in ("a", "b")]
    with sim.serve(*providers, threads=args.sim_threads) as s:
        urls = [s.url("a"), s.url("b")]
        runs = asyncio.run(measure(args, urls))
    cores = os.cpu_count() or 1
    print(render(runs, args.latency, cores))
    out = args.json or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "latency": args.latency,
        "cores": cores,
        "seconds": args.seconds,
        "runs": [asdict(r) for r in runs],
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return runs


if __name__ == "__main__":
    main()
