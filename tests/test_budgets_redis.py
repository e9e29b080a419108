"""Budgets shared through Redis (``Budgets(config, store=...)``), against a real
redis-server: the 200-threads race, 4 processes sharing one budget, an unsettled reservation
expiring, a retried settlement counted once, streamed spend, the error message, and Redis
killed mid-run and restarted under both down policies. Skipped without redis-server locally;
required in CI (``tests/redis_fixtures.py``)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

import langscale
from langscale import BudgetExceeded, Budgets, ConfigError, Deployment, ScaledChatModel
from tests.multiprocess import Start, run_together, started
from tests.redis_fixtures import Server, require_redis
from tests.test_tenants import _JUNK, Priced, call


def daily(usd: float, **extra: Any) -> dict[str, Any]:
    return {"tenant_default": {"budgets": [{"usd": usd, "window": "day"}]}, **extra}


def model(budgets: Budgets, priced: Priced | None = None) -> ScaledChatModel:
    return ScaledChatModel(
        [Deployment(priced or Priced(), price_in=5.0, price_out=5.0)], budgets=budgets
    )


def store(url: str, prefix: str, timeout: float = 0.2) -> langscale.RedisStore:
    return langscale.RedisStore(url, prefix=prefix, timeout=timeout)


def tenant(budgets: Budgets, name: str = "acme") -> dict[str, Any]:
    return budgets.report()["levels"][f"tenant:{name}"]


def used(budgets: Budgets, name: str = "acme") -> float:
    return tenant(budgets, name)["limits"][0]["used"]


def test_bad_input_is_a_config_error_naming_it(redis_server, redis_prefix):
    with pytest.raises(ConfigError, match="'redis://nowhere'"):
        Budgets(daily(1.0), store="redis://nowhere")  # type: ignore[arg-type]
    s = store(redis_server.url, redis_prefix)
    with pytest.raises(ConfigError, match="sometimes"):
        Budgets(daily(1.0, on_redis_down="sometimes"), store=s)
    with pytest.raises(ConfigError, match="local_share"):
        Budgets(daily(1.0, local_share=0.0), store=s)
    assert Budgets(daily(1.0), store=s).shared
    assert not Budgets(daily(1.0), store=None).shared


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config=_JUNK, usd=st.floats(allow_nan=True, allow_infinity=True))
def test_junk_config_on_redis_is_a_config_error_or_budgets_that_work(
    redis_server, config: Any, usd: float
):
    s = store(redis_server.url, f"j{uuid.uuid4().hex[:10]}")
    try:
        budgets = Budgets(config, store=s)
    except ConfigError:
        return
    llm = model(budgets)
    with langscale.tenant("acme", user="u1"):
        try:
            llm.invoke([HumanMessage("hi")])
        except BudgetExceeded as err:
            assert err.level in ("global", "tenant", "user")
    budgets.saved("acme", "u1", usd, 10)
    assert budgets.report()["in_flight"] == 0


def test_two_hundred_threads_against_room_for_ten_admit_ten(redis_server, redis_prefix):
    budgets = Budgets(daily(10.0), store=store(redis_server.url, redis_prefix))
    gate = threading.Event()
    priced = Priced(gate=gate)
    llm = model(budgets, priced)
    with ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(call, llm) for _ in range(200)]
        # Refusals come at once; the admitted calls hold their reservations at the gate.
        deadline = time.monotonic() + 60
        while sum(f.done() for f in futures) < 190 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        done = [f.result() for f in futures]
    assert done.count("ok") == 10
    assert priced.calls == 10
    assert used(budgets) == pytest.approx(10.0)
    assert tenant(budgets)["refused"] == 190


def _process_worker(start: Start, url: str, prefix: str, threads: int) -> tuple[int, int]:
    budgets = Budgets(daily(10.0), store=store(url, prefix, timeout=1.0))
    gate = threading.Event()
    llm = model(budgets, Priced(gate=gate))
    start.wait()
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(call, llm) for _ in range(threads)]
        time.sleep(1.0)  # every call has reserved or been refused
        gate.set()
        results = [f.result() for f in futures]
    return results.count("ok"), budgets.stats()["local_admitted"]


def test_four_processes_share_one_budget(redis_server, redis_prefix):
    results = run_together(_process_worker, [(redis_server.url, redis_prefix, 50)] * 4, timeout=120)
    assert all(local == 0 for _, local in results), results
    assert sum(ok for ok, _ in results) == 10, results
    here = Budgets(daily(10.0), store=store(redis_server.url, redis_prefix))
    assert used(here) == pytest.approx(10.0)
    assert tenant(here)["requests"] == 10


def _hold_forever(entered: Any, url: str, prefix: str) -> None:
    budgets = Budgets(daily(1.0, reservation_ttl=2.0), store=store(url, prefix))
    model(budgets, Priced(gate=threading.Event(), entered=entered)).invoke(
        [HumanMessage("hi")], max_tokens=196, config={"configurable": {"tenant": "acme"}}
    )


def test_an_unsettled_reservation_of_a_crashed_worker_expires(redis_server, redis_prefix):
    with started(_hold_forever, (redis_server.url, redis_prefix)) as proc:
        proc.kill()
        proc.join()
    budgets = Budgets(daily(1.0, reservation_ttl=2.0), store=store(redis_server.url, redis_prefix))
    llm = model(budgets)
    assert call(llm) == "refused"  # the crashed worker's reservation still holds the budget
    deadline = time.monotonic() + 10
    while call(llm) == "refused":
        assert time.monotonic() < deadline, "the reservation never expired"
        time.sleep(0.2)
    assert used(budgets) == pytest.approx(1.0)
    assert tenant(budgets)["requests"] == 1


def _pause_on_second_call(server: Server) -> Any:
    assert server.process is not None
    pid, calls = server.process.pid, []

    def pause() -> None:
        calls.append(1)
        if len(calls) == 2:
            os.kill(pid, signal.SIGSTOP)

    return pause


def test_a_settlement_retried_after_a_lost_reply_counts_once(killable_redis, redis_prefix):
    s = store(killable_redis.url, redis_prefix, timeout=0.1)
    budgets = Budgets(daily(10.0), store=s)
    # The second call pauses Redis: its settlement reaches the server but no reply comes back
    # in time. (The first loads the scripts: an EVALSHA unknown to a paused server would never
    # reach the EVAL that runs it.)
    llm = model(budgets, Priced(on_call=_pause_on_second_call(killable_redis)))
    assert killable_redis.process is not None
    try:
        assert call(llm) == "ok"
        assert budgets.stats()["pending"] == 0
        assert call(llm) == "ok"
        assert budgets.stats()["pending"] == 1
    finally:
        os.kill(killable_redis.process.pid, signal.SIGCONT)
    # The server applied it once it resumed ...
    deadline = time.monotonic() + 10
    while len(killable_redis.cli("--scan", "--pattern", f"*{redis_prefix}*done*").split()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    while not s.stats()["up"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # ... and the write-back retries it under the same id: not counted again.
    budgets.flush()
    assert budgets.stats()["pending"] == 0
    assert used(budgets) == pytest.approx(2.0)
    assert tenant(budgets)["requests"] == 2
    # A reservation whose answer is lost: admitted from the local share, and its hold in
    # Redis released on recovery instead of holding budget for reservation_ttl.
    os.kill(killable_redis.process.pid, signal.SIGSTOP)
    try:
        assert call(llm) == "ok"
    finally:
        os.kill(killable_redis.process.pid, signal.SIGCONT)
    assert budgets.stats()["local_admitted"] == 1
    holds = f"{{{redis_prefix}:spend}}:holds"
    deadline = time.monotonic() + 10
    while killable_redis.cli("HLEN", holds) != "1":  # the lost reservation ran once resumed
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_up(s)
    budgets.flush()
    assert killable_redis.cli("HLEN", holds) == "0"
    report = budgets.report()
    assert report["in_flight"] == 0
    assert report["levels"]["tenant:acme"]["limits"][0]["used"] == pytest.approx(3.0)


def test_streamed_spend_is_charged_from_the_final_chunk(redis_server, redis_prefix):
    budgets = Budgets(daily(100.0), store=store(redis_server.url, redis_prefix))
    llm = model(budgets)
    with langscale.tenant("acme"):
        assert "".join(c.text for c in llm.stream([HumanMessage("hi")])) == "abcd" * 5
    # Spend under a lease reaches Redis within a second, or now with flush().
    budgets.flush()
    # 100 in + 50 out at $5/1k, seen by another process's budgets on the same Redis.
    other = Budgets(daily(100.0), store=store(redis_server.url, redis_prefix))
    assert used(other) == pytest.approx(0.75)
    assert tenant(other)["tokens"] == 150


def test_the_refusal_names_tenant_level_budget_spent_limit_and_reset(redis_server, redis_prefix):
    budgets = Budgets(daily(2.5), store=store(redis_server.url, redis_prefix))
    llm = model(budgets)
    with langscale.tenant("acme"):
        llm.invoke([HumanMessage("hi")])
        llm.invoke([HumanMessage("hi")])
        with pytest.raises(BudgetExceeded) as info:
            llm.invoke([HumanMessage("hi")])
    err = info.value
    assert (err.tenant, err.level, err.budget, err.limit) == (
        "acme",
        "tenant",
        "usd per day (rolling)",
        2.5,
    )
    assert err.spent == pytest.approx(2.0)
    # A rolling day is 60 slots of 24 min: the oldest spend leaves with its slot.
    assert err.resets_in is not None and 86_400 - 1_440 < err.resets_in <= 86_400
    text = str(err)
    assert "acme" in text and "tenant level" in text and "usd per day" in text
    assert "spent 2 of 2.5" in text


def test_budgets_work_on_redis_cluster(redis_cluster, redis_prefix):
    def on_cluster() -> Budgets:
        s = langscale.RedisStore(redis_cluster.urls, prefix=redis_prefix, cluster=True)
        return Budgets(daily(3.0, users={"acme/u1": {"concurrency": 5}}), store=s)

    a, b = on_cluster(), on_cluster()
    llm_a, llm_b = model(a), model(b)
    # One script across the global, tenant and user levels: every key on one slot.
    with langscale.tenant("acme", user="u1"):
        llm_a.invoke([HumanMessage("hi")], max_tokens=196)
        llm_b.invoke([HumanMessage("hi")], max_tokens=196)
        llm_a.invoke([HumanMessage("hi")], max_tokens=196)
        with pytest.raises(BudgetExceeded):
            llm_b.invoke([HumanMessage("hi")], max_tokens=196)
    assert used(a) == pytest.approx(3.0)
    assert b.report()["levels"]["user:acme/u1"]["requests"] == 3


def durable_server(tmp_path: Path) -> Server:
    require_redis()
    server = Server(tmp_path, args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    return server


def wait_up(s: langscale.RedisStore) -> None:
    deadline = time.monotonic() + 15
    while not s.stats()["up"]:
        assert time.monotonic() < deadline, "the store never reconnected"
        time.sleep(0.05)


@pytest.mark.parametrize("lease", [True, False])
def test_redis_killed_mid_run_and_restarted_keeps_every_cent(tmp_path, redis_prefix, lease):
    server = durable_server(tmp_path)
    try:
        s = store(server.url, redis_prefix)
        budgets = Budgets(daily(20.0, local_share=0.5, lease=lease), store=s)
        llm = model(budgets)
        results = [call(llm) for _ in range(5)]
        server.kill()
        # Down: half of what was left ($15) is this process's: 7 calls of $1 reserved. With
        # leases, calls first use what the lease still holds in Redis, and the share is half
        # of what was left beside it.
        results += [call(llm) for _ in range(10)]
        local = budgets.stats()["local_admitted"]
        if lease:
            assert 5 <= local <= 7
            assert budgets.stats()["pending"] >= local
        else:
            assert local == 7
            assert budgets.stats()["pending"] == 7
        server.start()
        wait_up(s)
        results += [call(llm) for _ in range(3)]
        spent = float(results.count("ok"))
        if lease:
            assert 13.0 <= spent <= 20.0
        else:
            assert spent == 15.0
        assert budgets.stats()["pending"] == 0
        budgets.flush()
        assert used(budgets) == pytest.approx(spent)
        assert tenant(budgets)["requests"] == spent
    finally:
        server.kill()


def test_fail_closed_raises_budget_exceeded_while_redis_is_down(tmp_path, redis_prefix):
    server = durable_server(tmp_path)
    try:
        s = store(server.url, redis_prefix)
        budgets = Budgets(daily(20.0, on_redis_down="fail_closed"), store=s)
        llm = model(budgets)
        assert call(llm) == "ok"
        server.kill()
        with langscale.tenant("acme"), pytest.raises(BudgetExceeded) as info:
            llm.invoke([HumanMessage("hi")])
        assert not isinstance(info.value, ConfigError)
        assert "redis is unreachable" in str(info.value)
        assert info.value.tenant == "acme" and info.value.level == "tenant"
        server.start()
        wait_up(s)
        assert call(llm) == "ok"
        assert used(budgets) == pytest.approx(2.0)
    finally:
        server.kill()
