"""Other OS processes, for the tests and benches that share state through Redis:
``processes()`` (how a worker process starts), ``run_together`` (start N workers, wait until
each is set up, let them go at one instant, collect what each returns) and ``started`` (one
worker that holds something until it is killed, as a crashed process would). No pytest here,
so a bench can import it.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ["Start", "WorkerFailed", "processes", "run_together", "started"]


def processes() -> multiprocessing.context.BaseContext:
    """How the multi-process tests start their workers: from a fork server that imported
    langscale (and LangChain) once for the whole session, so a worker starts in milliseconds
    instead of importing everything again as ``spawn`` does (seconds each on two cores). The
    server forks before any test made a runtime thread, so no worker inherits a lock held by
    one, as a plain ``fork`` of the test process could."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["langscale"])
    return ctx


class WorkerFailed(RuntimeError):
    """A worker of ``run_together`` raised, died, or did not answer in time."""


class Start:
    """What a worker of ``run_together`` gets first: ``wait()`` says it is set up, blocks until
    every worker is, and returns the agreed start time (``time.time()`` seconds, the same in
    every worker, a short lead after the last one was ready)."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, index: int, messages: Any):
        self._index = index
        self._messages = messages
        self._go = ctx.Event()
        self._at = ctx.Value("d", 0.0)

    def wait(self, timeout: float = 300.0) -> float:
        self._messages.put((self._index, "ready", None))
        if not self._go.wait(timeout):
            raise WorkerFailed("the other workers were never all ready")
        return self._at.value

    def _release(self, at: float) -> None:
        self._at.value = at
        self._go.set()


def _worker(target: Callable[..., Any], start: Start, args: Sequence[Any]) -> None:
    # Every ending reaches the parent as a message: a result, or the traceback that ended it.
    try:
        result = target(start, *args)
    except BaseException:
        start._messages.put((start._index, "error", traceback.format_exc()))
    else:
        start._messages.put((start._index, "done", result))


def run_together(
    target: Callable[..., Any],
    args_list: Sequence[Sequence[Any]],
    *,
    timeout: float = 300.0,
    ready_timeout: float = 120.0,
    lead: float = 0.5,
) -> list[Any]:
    """Run ``target(start, *args)`` in one process for each ``args`` of ``args_list`` (started by
    ``processes()``, so ``target`` is a module-level function) and return what each returned,
    in the order of ``args_list``. A worker sets itself up, calls ``start.wait()`` and then does
    the measured work; ``start.wait()`` returns ``lead`` s after the last one was ready.

    Raises ``WorkerFailed`` naming the worker (its arguments and its traceback or exit code)
    as soon as one raises or dies, or when they are not all ready within ``ready_timeout`` s
    or not all done ``timeout`` s after the start; the other workers are killed then, so a
    failure never leaves the caller waiting."""
    ctx = processes()
    messages = ctx.Queue()
    starts = [Start(ctx, i, messages) for i in range(len(args_list))]
    procs = [
        ctx.Process(target=_worker, args=(target, start, tuple(args)), daemon=True)
        for start, args in zip(starts, args_list, strict=True)
    ]
    results: dict[int, Any] = {}

    def failed(which: set[int], why: str) -> WorkerFailed:
        name = getattr(target, "__qualname__", repr(target))
        named = "; ".join(f"{i}: {name}{tuple(args_list[i])!r}" for i in sorted(which))
        return WorkerFailed(f"worker {named} (of {len(procs)}) {why}")

    def collect(kind: str, deadline: float, waiting: set[int]) -> None:
        # Ends when every worker in `waiting` has sent a message of `kind`; a worker that
        # raised or exited first fails the run. Exits are read before the queue: a worker's
        # messages are in the pipe before it exits, so one that exited and left nothing
        # there has nothing more to say.
        while waiting:
            exited = {i for i in waiting if procs[i].exitcode is not None}
            try:
                i, got, value = messages.get(timeout=0.05)
            except queue.Empty:
                i = None
            if i is None:
                for gone in sorted(exited):
                    code = procs[gone].exitcode
                    raise failed({gone}, f"exited with code {code} before {kind}")
                if time.monotonic() > deadline:
                    raise failed(waiting, f"not {kind} in time")
                continue
            if got == "error":
                raise failed({i}, f"raised\n{value}")
            if got == "done":
                results[i] = value
            if got == kind or got == "done":
                waiting.discard(i)

    try:
        for p in procs:
            p.start()
        collect("ready", time.monotonic() + ready_timeout, set(range(len(procs))))
        at = time.time() + lead
        for start in starts:
            start._release(at)
        collect("done", time.monotonic() + lead + timeout, set(range(len(procs))) - set(results))
        return [results[i] for i in range(len(procs))]
    finally:
        for p in procs:
            if p.is_alive() and len(results) < len(procs):
                p.kill()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)


@contextmanager
def started(
    target: Callable[..., Any], args: Sequence[Any], *, timeout: float = 60.0
) -> Iterator[BaseProcess]:
    """Run ``target(ready, *args)`` in a process of its own (``ready``: an Event it sets once
    it holds what the test is about) and give the process once it did; killed on the way out.
    Raises ``WorkerFailed`` when it exits first or is not ready within ``timeout`` s."""
    ctx = processes()
    ready = ctx.Event()
    proc = ctx.Process(target=target, args=(ready, *args), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            name = f"{getattr(target, '__qualname__', repr(target))}{tuple(args)!r}"
            if proc.exitcode is not None:
                raise WorkerFailed(f"{name} exited with code {proc.exitcode} before it was ready")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"{name} was not ready in time")
        yield proc
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=30)
