"""What every benchmark shares: the result row, the case a runner schedules, and timing.

Timings use ``time.perf_counter_ns``. ``compare`` takes one sample of each side in turn,
round after round, after a discarded warm-up round, and keeps each side's median: a burst of
load elsewhere on a small machine then hits both sides alike instead of one.

The tests' throwaway redis-server (``tests/redis_server.py``), their worker processes
(``tests/multiprocess.py``) and limiter loads (``tests/limiter_load.py``) serve the benches too.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The benches import from tests/ too, after this module (`_common` sorts first).
sys.path.insert(0, str(ROOT))

from tests import redis_server  # noqa: E402

Sampler = Callable[[], float]


@dataclass(frozen=True)
class Settings:
    """How long to measure: the full run, or ``--quick`` for a smoke run."""

    quick: bool = False

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclass
class Row:
    """One line of the results table: langscale beside the LangChain component it replaces.

    ``ratio`` is langscale / LangChain: below 1 means less time or memory for time and memory
    rows, less throughput for rate rows. ``met`` is None where the row has no target.
    """

    group: str
    name: str
    unit: str
    langscale: float
    langchain: float | None
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.langchain is None or self.langchain == 0:
            return None
        return self.langscale / self.langchain


@dataclass(frozen=True)
class Case:
    """A unit of work the runner shows progress for; ``run`` returns its rows."""

    label: str
    run: Callable[[], list[Row]]


def compare(samplers: dict[str, Sampler], rounds: int) -> dict[str, float]:
    """Each side's median sample over ``rounds`` interleaved rounds, after one warm-up round."""
    samples: dict[str, list[float]] = {side: [] for side in samplers}
    for round_ in range(rounds + 1):
        for side, sample in samplers.items():
            value = sample()
            if round_:
                samples[side].append(value)
    return {side: statistics.median(values) for side, values in samples.items()}


def time_calls(call: Callable[[], object], calls: int, *, gc_off: bool = True) -> float:
    """Mean ns per ``call()`` over a loop of ``calls`` (the loop's own ~30 ns included)."""
    return _timed(lambda: _loop(call, calls), gc_off) / calls


def time_items(call: Callable[[Any], object], items: list[Any]) -> float:
    """Mean ns per ``call(item)`` over ``items``, for calls that must each see something new:
    a miss, an insert, or a fresh copy of a prompt (LangChain builds one per call, so Python
    has not cached its hash)."""
    return _timed(lambda: _each(call, items), gc_off=True) / len(items)


def _loop(call: Callable[[], object], calls: int) -> None:
    for _ in range(calls):
        call()


def _each(call: Callable[[Any], object], items: Iterable[Any]) -> None:
    for item in items:
        call(item)


def _timed(work: Callable[[], None], gc_off: bool) -> int:
    gc.collect()
    gc_was_enabled = gc.isenabled()
    if gc_off:
        gc.disable()
    try:
        start = time.perf_counter_ns()
        work()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def with_redis_server(
    run: Callable[[str, Settings], list[Row]], settings: Settings, group: str
) -> list[Row]:
    """``run(url, settings)`` against a fresh redis-server on loopback (the same servers as
    the tests' fixtures, tests/redis_server.py); one "skipped" row of ``group`` without one."""
    try:
        with redis_server.running() as server:
            return run(server.url, settings)
    except RuntimeError as err:
        return [Row(group, f"skipped: {err}", "ns/call", 0.0, None)]


def rust_example(
    name: str, settings: Settings, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run the core's example ``name`` (release build; ``--quick`` in a quick run) and return
    the JSON object it prints on each line; ``env`` adds environment variables."""
    cmd = ["cargo", "run", "--quiet", "--release", "-p", "langscale-core", "--example", name]
    if settings.quick:
        cmd += ["--", "--quick"]
    run_env = {**os.environ, **env} if env else None
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, check=True, env=run_env
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
