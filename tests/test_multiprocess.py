"""``run_together`` and ``started`` (tests/multiprocess.py), which every multi-process test
and bench runs its workers through: results in order, one start instant, and a worker that
raises, dies or hangs reported by name, quickly, with the others killed, never a hang."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.multiprocess import Start, WorkerFailed, run_together, started


def _square(start: Start, n: int) -> tuple[int, float, int]:
    begin = start.wait()
    return n * n, begin, os.getpid()


def _raises(start: Start, n: int) -> int:
    start.wait()
    if n == 1:
        raise ValueError(f"bad worker {n}")
    return n


def _dies_before_ready(start: Start, n: int) -> int:
    if n == 2:
        os._exit(3)
    start.wait()
    return n


def _hangs(start: Start, n: int) -> int:
    start.wait()
    if n == 0:
        time.sleep(600)
    return n


def test_results_come_back_in_order_from_separate_processes_with_one_start_time():
    results = run_together(_square, [(n,) for n in range(4)], timeout=60)
    assert [r[0] for r in results] == [0, 1, 4, 9]
    assert len({r[1] for r in results}) == 1  # one agreed start time
    assert len({r[2] for r in results}) == 4 and os.getpid() not in {r[2] for r in results}


def test_a_worker_that_raises_is_named_with_its_traceback():
    with pytest.raises(WorkerFailed, match=r"(?s)worker 1: _raises\(1,\).*bad worker 1"):
        run_together(_raises, [(n,) for n in range(3)], timeout=60)


def test_a_worker_that_dies_fails_the_run_at_once():
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"worker 2: .*exited with code 3 before ready"):
        run_together(_dies_before_ready, [(n,) for n in range(3)], ready_timeout=120)
    assert time.monotonic() - started < 60  # not the ready timeout


def test_a_worker_that_hangs_is_reported_and_killed_at_the_timeout():
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"worker 0: _hangs\(0,\) \(of 2\) not done in time"):
        run_together(_hangs, [(0,), (1,)], timeout=1.0)
    assert time.monotonic() - started < 60  # not the hung worker's 600 s


def _holds(ready: Any, n: int) -> None:
    ready.set()
    time.sleep(600)


def _exits(ready: Any, n: int) -> None:
    os._exit(n)


def test_started_gives_the_worker_once_ready_and_kills_it_after():
    with started(_holds, (1,)) as proc:
        assert proc.is_alive()
    assert not proc.is_alive() and proc.exitcode is not None


def test_started_reports_a_worker_that_exits_before_it_is_ready():
    begun = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"_exits\(4,\) exited with code 4"):
        with started(_exits, (4,)):
            pass
    assert time.monotonic() - begun < 60
