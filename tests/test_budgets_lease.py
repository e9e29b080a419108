"""Leasing of budgets held in Redis (``lease``, on by default), against a real redis-server:
far fewer round trips than one script per reserve and settle, every cent still booked, no
overshoot with 4 processes x 50 threads draining a shared budget, a crashed process's lease
expiring, usage above the reservation charged, and the ``lease`` settings validated.
(``tests/test_budgets_redis.py`` runs its race, 4-process, expiry and Redis-down tests with
leasing on too.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

import langscale
from langscale import Budgets, ConfigError
from tests.multiprocess import Start, run_together, started
from tests.test_budgets_redis import daily, model, store, tenant, used
from tests.test_tenants import Priced, call


@pytest.mark.parametrize(("lease", "most"), [(True, 0.5), (False, 2.0)])
def test_round_trips_per_call_and_every_cent_booked(redis_server, redis_prefix, lease, most):
    s = store(redis_server.url, redis_prefix, timeout=1.0)
    budgets = Budgets(daily(1e6, lease=lease), store=s)
    llm = model(budgets)
    before = s.stats()["calls"]
    assert [call(llm) for _ in range(200)] == ["ok"] * 200
    trips = (s.stats()["calls"] - before) / 200
    assert trips <= most
    if lease:
        assert budgets.stats()["leased"] >= 150
    else:
        assert trips == pytest.approx(2.0)
        assert budgets.stats()["leased"] == 0
    budgets.flush()
    other = Budgets(daily(1e6), store=store(redis_server.url, redis_prefix))
    assert used(other) == pytest.approx(200.0)
    assert tenant(other)["requests"] == 200
    assert tenant(other)["usd"] == pytest.approx(200.0)
    assert other.report()["in_flight"] == 0


def _drain_worker(start: Start, url: str, prefix: str) -> tuple[int, int]:
    budgets = Budgets(daily(100.0), store=store(url, prefix, timeout=1.0))
    llm = model(budgets)
    admitted = [0] * 50

    def run(i: int) -> None:
        while call(llm) == "ok":
            admitted[i] += 1

    start.wait()
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(run, range(50)))
    budgets.flush()  # multiprocessing workers skip atexit
    return sum(admitted), budgets.stats()["leased"]


def test_four_processes_of_fifty_threads_drain_a_leased_budget_without_overshoot(
    redis_server, redis_prefix
):
    results = run_together(_drain_worker, [(redis_server.url, redis_prefix)] * 4, timeout=300)
    admitted = sum(n for n, _ in results)
    assert sum(leased for _, leased in results) > 0, results  # leases were used
    here = Budgets(daily(100.0), store=store(redis_server.url, redis_prefix))
    # Never beyond the budget; whole-call leases leave nothing stranded: all of it is used.
    assert admitted == 100, results
    assert used(here) == pytest.approx(100.0)
    assert tenant(here)["requests"] == 100
    assert tenant(here)["usd"] == pytest.approx(100.0)


def _lease_then_hang(entered: Any, url: str, prefix: str) -> None:
    budgets = Budgets(daily(100.0, reservation_ttl=2.0), store=store(url, prefix))
    gate = threading.Event()
    llm = model(budgets, Priced(gate=gate, entered=entered))
    fast = model(budgets)
    assert call(fast) == "ok" and call(fast) == "ok"
    with langscale.tenant("acme"):
        llm.invoke([HumanMessage("hi")], max_tokens=196)  # held at the gate until killed


def test_a_crashed_process_lease_expires_and_its_budget_comes_back(redis_server, redis_prefix):
    with started(_lease_then_hang, (redis_server.url, redis_prefix)) as proc:
        here = Budgets(
            daily(100.0, reservation_ttl=2.0), store=store(redis_server.url, redis_prefix)
        )
        # The tick books the two settled calls; the lease holds at least the call in flight.
        deadline = time.monotonic() + 10
        while tenant(here)["requests"] < 2:
            assert time.monotonic() < deadline, "the worker's spend was never booked"
            time.sleep(0.1)
        assert used(here) >= 3.0
        proc.kill()
        proc.join()
    deadline = time.monotonic() + 10
    while used(here) > 2.0 + 1e-9:
        assert time.monotonic() < deadline, "the crashed worker's lease never expired"
        time.sleep(0.2)
    assert used(here) == pytest.approx(2.0)
    assert here.report()["in_flight"] == 0


def test_usage_above_the_reservation_is_charged(redis_server, redis_prefix):
    budgets = Budgets(daily(30.0), store=store(redis_server.url, redis_prefix))
    llm = model(budgets)
    # Reserves the prompt's estimate plus 1 output token; each call really uses $1.
    assert [call(llm, max_tokens=1) for _ in range(20)] == ["ok"] * 20
    budgets.flush()
    assert used(budgets) == pytest.approx(20.0)
    assert tenant(budgets)["usd"] == pytest.approx(20.0)
    # What was used counts against what is left: 10 more at most.
    results = [call(llm) for _ in range(15)]
    assert results.count("ok") == 10
    budgets.flush()
    assert used(budgets) == pytest.approx(30.0)


def test_lease_settings_are_checked_naming_the_value(redis_server, redis_prefix):
    s = store(redis_server.url, redis_prefix)
    with pytest.raises(ConfigError, match=r"lease must be true or false, got \"yes\""):
        Budgets(daily(1.0, lease="yes"), store=s)
    with pytest.raises(ConfigError, match="lease must be true or false, got 1"):
        Budgets(daily(1.0, lease=1))
    for bad in (0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="lease_share"):
            Budgets(daily(1.0, lease_share=bad), store=s)
    with pytest.raises(ConfigError, match="lease_share"):
        Budgets(daily(1.0)).update(daily(1.0, lease_share=2))
    assert Budgets(daily(1.0, lease=False, lease_share=1.0), store=s).shared


_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["day", "raise", "yes", ""]),
)
_JUNK_LEASE = st.fixed_dictionaries(
    {"tenant_default": st.just({"budgets": [{"usd": 3.0, "window": "day"}]})},
    optional={"lease": _LEAF, "lease_share": _LEAF},
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config=_JUNK_LEASE)
def test_junk_lease_settings_are_a_config_error_or_budgets_that_work(redis_server, config):
    s = store(redis_server.url, f"j{time.monotonic_ns()}")
    try:
        budgets = Budgets(config, store=s)
    except ConfigError as err:
        assert "lease" in str(err), err
        return
    assert isinstance(config.get("lease", True), bool)
    llm = model(budgets)
    results = [call(llm) for _ in range(4)]
    assert results == ["ok"] * 3 + ["refused"]
    budgets.flush()
    assert used(budgets) == pytest.approx(3.0)
    assert budgets.report()["in_flight"] == 0


def test_a_lease_booking_retried_after_a_lost_reply_counts_once(killable_redis, redis_prefix):
    import os
    import signal

    s = store(killable_redis.url, redis_prefix, timeout=0.1)
    budgets = Budgets(daily(1e6), store=s)
    llm = model(budgets)
    assert [call(llm) for _ in range(10)] == ["ok"] * 10
    assert budgets.stats()["leased"] >= 5  # spend settled here, not yet booked
    assert killable_redis.process is not None

    def done() -> int:
        return len(killable_redis.cli("--scan", "--pattern", f"*{redis_prefix}*done*").split())

    ran = done()
    pid = killable_redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # Its booking reaches the paused server, but no reply comes back in time: kept.
        budgets.report()
        assert budgets.stats()["pending"] >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 15
    while done() <= ran:  # the server ran the booking once resumed ...
        assert time.monotonic() < deadline
        time.sleep(0.05)
    while not s.stats()["up"]:
        assert time.monotonic() < deadline, "the store never reconnected"
        time.sleep(0.05)
    # ... and the write-back retries it under the same id: not counted again.
    budgets.flush()
    assert budgets.stats()["pending"] == 0
    other = Budgets(daily(1e6), store=store(killable_redis.url, redis_prefix))
    assert used(other) == pytest.approx(10.0)
    assert tenant(other)["requests"] == 10
    assert tenant(other)["usd"] == pytest.approx(10.0)
