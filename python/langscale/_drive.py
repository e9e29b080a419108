"""Python's two drivers of a ``_core.Run``: one for threads, one for asyncio, each for plain and
streamed answers. They decide nothing: the run says call, acquire, wait, sleep, done or fail,
and they do exactly that I/O. Which deployment, permits and what a refusal means, latency,
retries, fallbacks, hedges, backoff, breakers and what an error means are the core's
(``route/run.rs``); the native driver (``provider/routed.rs``) does the same over tokio.

``call(index, attempt)`` makes attempt number ``attempt`` on deployment ``index`` and returns
``(value, input_tokens, output_tokens)`` or raises; the drivers enforce the attempt's timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langscale._classify import facts
from langscale._tokens import Usage

T = TypeVar("T")
Attempt = tuple[T, Usage]
Errors = dict[int, tuple[int, BaseException]]
Fail = Callable[[str | None, int | None, Errors], BaseException]

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Worker threads for sync attempts that race a timeout or a hedge, made on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="langscale-attempt")
        return _POOL


class AttemptTimeout(TimeoutError):
    """An attempt ran past the timeout its run gave it."""


def _timed_out(index: int, seconds: float) -> AttemptTimeout:
    return AttemptTimeout(f"attempt on deployment {index} timed out after {seconds:g} s")


def _failed(run: Any, errors: Errors, attempt: int, index: int, exc: BaseException) -> None:
    errors[attempt] = (index, exc)
    run.failed(attempt, *facts(exc))


def _give_up(
    run: Any, detail: Any, attempt: int | None, errors: Errors, fail: Fail
) -> BaseException:
    for refused, index, exc in run.refusals():
        errors.setdefault(refused, (index, exc))
    return fail(detail, attempt, errors)


Running = dict[concurrent.futures.Future, tuple[int, int, float | None, float | None]]


def _collect(
    run: Any, running: Running, errors: Errors, results: dict[int, Any], future: Any
) -> None:
    """A worker-thread attempt ended: report it."""
    attempt, index, _, _ = running.pop(future)
    try:
        value, usage = future.result()
    except Exception as exc:
        _failed(run, errors, attempt, index, exc)
        return
    results[attempt] = value
    run.succeeded(attempt, *usage)


def _expire(run: Any, running: Running, errors: Errors, now: float) -> None:
    """Attempts past their timeout: reported as timed out (their threads finish alone)."""
    for future, (attempt, index, ends, limit) in list(running.items()):
        if ends is not None and now >= ends and not future.done():
            del running[future]
            _failed(run, errors, attempt, index, _timed_out(index, limit or 0.0))


def drive(run: Any, call: Callable[[int, int], Attempt[T]], fail: Fail, *, hedged: bool) -> T:
    """Run on this thread. An attempt with no timeout and no hedge to race is called inline;
    otherwise it runs on a worker thread while this one waits (a sync call cannot be
    interrupted: past its timeout it is abandoned and finishes on its own)."""
    errors: Errors = {}
    results: dict[int, T] = {}
    running: Running = {}

    while True:
        kind, attempt, index, value = run.next()
        if kind == "call":
            if value is None and not hedged:
                try:
                    out, usage = call(index, attempt)
                except Exception as exc:
                    _failed(run, errors, attempt, index, exc)
                    continue
                results[attempt] = out
                run.succeeded(attempt, *usage)
            else:
                context = contextvars.copy_context()
                future = _pool().submit(context.run, call, index, attempt)
                ends = time.monotonic() + value if value is not None else None
                running[future] = (attempt, index, ends, value)
        elif kind == "wait":
            now = time.monotonic()
            waits = [e - now for _, _, e, _ in running.values() if e is not None]
            if value is not None:
                waits.append(value)
            # (A wait past threading.TIMEOUT_MAX, ~292 years, would overflow: it is forever.)
            limit = min(max(min(waits), 0.0), threading.TIMEOUT_MAX) if waits else None
            done, _ = concurrent.futures.wait(
                running, timeout=limit, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                _collect(run, running, errors, results, future)
            _expire(run, running, errors, time.monotonic())
        elif kind == "sleep":
            time.sleep(min(value or 0.0, threading.TIMEOUT_MAX))
        elif kind == "acquire":
            run.acquire()
        elif kind == "done":
            return results[attempt]
        else:
            raise _give_up(run, value, attempt, errors, fail)


async def adrive(
    run: Any, call: Callable[[int, int], Awaitable[Attempt[T]]], fail: Fail, *, hedged: bool
) -> T:
    """Run on the event loop. Without a hedge to race, the attempt is awaited here (no Task,
    ~30 us less per call); with one, attempts are tasks and the loser is cancelled."""
    errors: Errors = {}
    results: dict[int, T] = {}
    running: dict[asyncio.Task, tuple[int, int]] = {}

    async def attempt_within(index: int, attempt: int, timeout: float | None) -> Attempt[T]:
        if timeout is None:
            return await call(index, attempt)
        try:
            return await asyncio.wait_for(call(index, attempt), timeout)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
            raise _timed_out(index, timeout) from None

    def collect(task: asyncio.Task) -> None:
        attempt, index = running.pop(task)
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is not None:
            _failed(run, errors, attempt, index, exc)
            return
        value, usage = task.result()
        results[attempt] = value
        run.succeeded(attempt, *usage)

    try:
        while True:
            kind, attempt, index, value = run.next()
            if kind == "call" and not hedged:
                try:
                    out, usage = await attempt_within(index, attempt, value)
                except Exception as exc:
                    _failed(run, errors, attempt, index, exc)
                    continue
                results[attempt] = out
                run.succeeded(attempt, *usage)
            elif kind == "call":
                task = asyncio.ensure_future(attempt_within(index, attempt, value))
                running[task] = (attempt, index)
            elif kind == "wait":
                done, _ = await asyncio.wait(
                    running, timeout=value, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    collect(task)
            elif kind == "sleep":
                await asyncio.sleep(value or 0.0)
            elif kind == "acquire":
                await run.aacquire()
            elif kind == "done":
                return results[attempt]
            else:
                raise _give_up(run, value, attempt, errors, fail)
    finally:
        for task in running:
            task.cancel()
