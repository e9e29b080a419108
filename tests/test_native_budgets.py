"""Tenant budgets on the native loop (every deployment a ``ChatEndpoint``), against the
simulated provider: the same scenarios as the Python driver's (``tests/test_tenants.py``),
each run on both paths — real usage charged, ``BudgetExceeded`` naming the budget, no
overshoot under 200 concurrent requests, streams settled from their final chunk, wait and
degrade — and through budgets held in Redis."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

import langscale
from langscale import BudgetExceeded, Budgets, ChatEndpoint, Deployment, ScaledChatModel, sim

# "hi" is 8 prompt tokens for gpt-4o (o200k_base, as the simulator counts it); with 92 out a
# call uses 100 tokens: $1 at $10 per 1k in and out.
OUT = 92
PROMPT = [HumanMessage("hi")]
PATHS = ["native", "python"]


def provider(name: str, **kw: Any) -> sim.Provider:
    return sim.Provider(
        name,
        models=("gpt-4o",),
        tokenizer="o200k_base",
        min_completion_tokens=OUT,
        max_completion_tokens=OUT,
        **kw,
    )


@pytest.fixture
def served() -> Iterator[Any]:
    with sim.serve(provider("p"), provider("cheap")) as s:
        yield s


def daily(usd: float, on_over: str = "raise", **extra: Any) -> dict[str, Any]:
    level = {"budgets": [{"usd": usd, "window": "day", "calendar": True}], "on_over": on_over}
    return {"tenant_default": {**level, **extra}}


def deployment(s: Any, name: str = "p", price: float = 10.0, **kw: Any) -> Deployment:
    endpoint = ChatEndpoint(s.url(name), "gpt-4o", api_key="x")
    return Deployment(endpoint, name=name, price_in=price, price_out=price, **kw)


def model(path: str, budgets: Budgets, *deps: Deployment) -> ScaledChatModel:
    llm = ScaledChatModel(list(deps), budgets=budgets, native=path == "native", seed=1)
    # The path under test is the one taken.
    assert (llm._native is not None) == (path == "native")
    return llm


def tenant_usd(budgets: Budgets, name: str = "acme") -> float:
    return budgets.report()["levels"][f"tenant:{name}"]["usd"]


@pytest.mark.parametrize("path", PATHS)
def test_charges_real_usage_and_raises_naming_the_budget(served, path):
    budgets = Budgets(daily(2.5))
    llm = model(path, budgets, deployment(served))
    with langscale.tenant("acme", user="u1"):
        llm.invoke(PROMPT, max_tokens=OUT)
        llm.invoke(PROMPT, max_tokens=OUT)
        with pytest.raises(BudgetExceeded) as info:
            llm.invoke(PROMPT, max_tokens=OUT)
    err = info.value
    assert isinstance(err, langscale.LangscaleError)
    assert (err.tenant, err.level, err.limit) == ("acme", "tenant", 2.5)
    assert err.spent == pytest.approx(2.0)
    assert err.budget == "usd per day (calendar)"
    assert err.resets_in is not None and 0 < err.resets_in <= 86_400
    assert tenant_usd(budgets) == pytest.approx(2.0)
    assert served.stats("p")["chat_requests"] == 2  # the refused call never went out
    # Another tenant (from the config) has its own budget; the user is counted too.
    llm.invoke(PROMPT, max_tokens=OUT, config={"configurable": {"tenant": "beta"}})
    assert tenant_usd(budgets, "beta") == pytest.approx(1.0)
    assert budgets.report()["levels"]["user:acme/u1"]["usd"] == pytest.approx(2.0)


@pytest.mark.parametrize("path", PATHS)
async def test_async_calls_reserve_and_settle_alike(served, path):
    budgets = Budgets(daily(1.5))
    llm = model(path, budgets, deployment(served))
    with langscale.tenant("acme"):
        await llm.ainvoke(PROMPT, max_tokens=OUT)
        with pytest.raises(BudgetExceeded):
            await llm.ainvoke(PROMPT, max_tokens=OUT)
    assert tenant_usd(budgets) == pytest.approx(1.0)


@pytest.mark.parametrize("path", PATHS)
def test_two_hundred_threads_against_room_for_ten_admit_ten(path):
    budgets = Budgets(daily(10.0))
    # Each admitted call holds its reservation a while: no settlement frees room early.
    with sim.serve(provider("p", time_to_first_token=0.5)) as s:
        llm = model(path, budgets, deployment(s))

        def one(_: int) -> str:
            with langscale.tenant("acme"):
                try:
                    llm.invoke(PROMPT, max_tokens=OUT)
                    return "ok"
                except BudgetExceeded:
                    return "refused"

        with ThreadPoolExecutor(200) as pool:
            done = list(pool.map(one, range(200)))
        assert done.count("ok") == 10
        assert s.stats("p")["chat_requests"] == 10
    assert tenant_usd(budgets) == pytest.approx(10.0)
    assert budgets.report()["levels"]["tenant:acme"]["refused"] == 190


def test_two_hundred_coroutines_against_room_for_ten_admit_ten():
    budgets = Budgets(daily(10.0))
    with sim.serve(provider("p", time_to_first_token=0.5)) as s:
        llm = model("native", budgets, deployment(s))

        async def one() -> str:
            try:
                await llm.ainvoke(PROMPT, max_tokens=OUT)
                return "ok"
            except BudgetExceeded:
                return "refused"

        async def main() -> list[str]:
            with langscale.tenant("acme"):
                return await asyncio.gather(*(one() for _ in range(200)))

        done = asyncio.run(main())
        assert done.count("ok") == 10
        assert s.stats("p")["chat_requests"] == 10
    assert tenant_usd(budgets) == pytest.approx(10.0)


@pytest.mark.parametrize("path", PATHS)
def test_streamed_spend_comes_from_the_final_chunk_and_a_cut_stream_pays_what_it_got(served, path):
    budgets = Budgets(daily(100.0))
    llm = model(path, budgets, deployment(served))
    with langscale.tenant("acme"):
        chunks = list(llm.stream(PROMPT))
    assert "".join(c.text for c in chunks)
    # 8 in + 92 out at $10/1k, not the reserved estimate.
    assert tenant_usd(budgets) == pytest.approx(1.0)
    with langscale.tenant("cut"):
        stream = llm.stream(PROMPT)
        next(stream)
        stream.close()
    del stream
    spent = tenant_usd(budgets, "cut")
    # The prompt's 8 tokens plus what one chunk held, not the whole answer.
    assert 0.08 <= spent < 0.5


@pytest.mark.parametrize("path", PATHS)
async def test_async_stream_settles_from_the_final_chunk(served, path):
    budgets = Budgets(daily(100.0))
    llm = model(path, budgets, deployment(served))
    with langscale.tenant("acme"):
        text = "".join([c.text async for c in llm.astream(PROMPT)])
    assert text
    assert tenant_usd(budgets) == pytest.approx(1.0)


@pytest.mark.parametrize("path", PATHS)
def test_degrade_routes_to_the_cheap_deployment(served, path):
    budgets = Budgets(daily(1.5, "degrade"))
    big = deployment(served, "p", 10.0)
    small = deployment(served, "cheap", 1.0, tags=["cheap"])
    llm = model(path, budgets, big, small)
    with langscale.tenant("acme"):
        llm.invoke(PROMPT, max_tokens=OUT)
        llm.invoke(PROMPT, max_tokens=OUT)
    assert served.stats("p")["chat_requests"] == 1
    assert served.stats("cheap")["chat_requests"] == 1
    assert tenant_usd(budgets) == pytest.approx(1.1)


@pytest.mark.parametrize("path", PATHS)
def test_wait_admits_a_call_once_another_settles_below_its_reservation(path):
    # Each call reserves 8 + 192 tokens ($2) and uses 8 + 92 ($1): with $3, a second call
    # waits for the first to settle, then goes; a third is refused.
    budgets = Budgets(daily(3.0, "wait", wait_timeout=5.0))
    with sim.serve(provider("p", time_to_first_token=0.4)) as s:
        llm = model(path, budgets, deployment(s))

        def one(_: int) -> str:
            with langscale.tenant("acme"):
                try:
                    llm.invoke(PROMPT, max_tokens=192)
                    return "ok"
                except BudgetExceeded:
                    return "refused"

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(one, range(2))) == ["ok", "ok"]
        assert tenant_usd(budgets) == pytest.approx(2.0)
        # Nothing in flight will settle: no room can come before the window ends.
        assert one(0) == "refused"
        assert s.stats("p")["chat_requests"] == 2


def test_native_budgets_in_redis(redis_server, redis_prefix, served):
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    budgets = Budgets(daily(2.5), store=store)
    llm = model("native", budgets, deployment(served))
    with langscale.tenant("acme"):
        llm.invoke(PROMPT, max_tokens=OUT)
        assert "".join(c.text for c in llm.stream(PROMPT, max_tokens=OUT))
        with pytest.raises(BudgetExceeded) as info:
            llm.invoke(PROMPT, max_tokens=OUT)
    assert (info.value.tenant, info.value.limit) == ("acme", 2.5)
    assert tenant_usd(budgets) == pytest.approx(2.0)
    # A stream dropped unread settles in Redis too (without the GIL: other threads run).
    with langscale.tenant("cut"):
        stream = llm.stream(PROMPT, max_tokens=OUT)
        next(stream)
        stream.close()
    del stream
    assert 0.08 <= tenant_usd(budgets, "cut") < 0.5
    assert budgets.report()["in_flight"] == 0


def test_bad_user_or_output_tokens_for_the_native_router_are_refused(served):
    llm = model("native", Budgets(daily(1.0)), deployment(served))
    request = '{"messages": [{"role": "user", "content": "hi"}]}'
    with pytest.raises(langscale.ConfigError, match="user"):
        llm._native.chat(request, 0, 0, 1, None, "acme", 42, None)
    with pytest.raises(langscale.ConfigError, match=r"output_tokens must be .* got -1"):
        llm._native.chat(request, 0, 0, 1, None, "acme", None, -1)
    assert served.stats("p")["chat_requests"] == 0


#: What `output_tokens` may be handed: ints from huge negative to huge, and what is no int.
OUTPUT_TOKENS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)


def _a_count(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=OUTPUT_TOKENS)
def test_output_tokens_on_every_path_is_a_count_or_a_config_error_naming_it(served, value):
    """The Python driver's ``Router.start`` and the native loop's chat, achat, stream and
    astream take ``output_tokens`` through one check: a count works (the budget then admits
    or refuses the call), anything else is a ConfigError naming the argument and the value,
    never an OverflowError or a TypeError."""
    budgets = Budgets(daily(1.0))
    native = model("native", budgets, deployment(served))
    router = model("python", budgets, deployment(served))._private()["_router"]
    request = '{"messages": [{"role": "user", "content": "hi"}]}'
    head = (request, 0, 0, 1, None, "acme", None)

    async def awaited(method: str) -> Any:
        return await getattr(native._native, method)(*head, value)

    paths = {
        "start": lambda: router.start(0, 0, 1, None, "acme", None, value),
        "chat": lambda: native._native.chat(*head, value),
        "achat": lambda: asyncio.run(awaited("achat")),
        "stream": lambda: native._native.stream(*head, value),
        "astream": lambda: asyncio.run(awaited("astream")),
    }
    for path, call in paths.items():
        if _a_count(value):
            try:
                assert call() is not None, path
            except BudgetExceeded:
                pass  # a reservation of that many tokens: refused, as it should be
        else:
            with pytest.raises(langscale.ConfigError, match="output_tokens") as info:
                call()
            assert repr(value)[:60] in str(info.value), (path, str(info.value))


@pytest.mark.parametrize("path", PATHS)
def test_a_max_tokens_past_any_count_is_a_config_error(served, path):
    """``max_tokens`` is what a budget reserves for output: past any count it is a
    ConfigError on both paths (the Python driver's router names ``output_tokens``, the
    native loop's request cannot be sent as JSON), never an OverflowError."""
    llm = model(path, Budgets(daily(1.0)), deployment(served))
    with pytest.raises(langscale.ConfigError, match=r"output_tokens|64-bit"):
        llm.invoke(PROMPT, max_tokens=2**64)
    assert served.stats("p")["chat_requests"] == 0


def test_redis_budgets_from_many_threads_keep_the_runtime_going(redis_server, redis_prefix, served):
    """Reserving in Redis blocks for a round trip; the native loop does that off the
    runtime's workers, so 40 threads' calls all finish and each is charged once."""
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    budgets = Budgets(daily(1000.0), store=store)
    llm = model("native", budgets, deployment(served))
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with langscale.tenant("acme"):
                llm.invoke(PROMPT, max_tokens=OUT)
        except BaseException as exc:  # collected, asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert tenant_usd(budgets) == pytest.approx(40.0)


@pytest.mark.parametrize("path", PATHS)
def test_wait_on_budgets_in_redis_from_coroutines(redis_server, redis_prefix, path):
    """The wait policy's naps and Redis round trips on the runtime (async calls): the second
    call waits for the first to settle below its reservation, then goes."""
    store = langscale.RedisStore(redis_server.url, prefix=redis_prefix)
    budgets = Budgets(daily(3.0, "wait", wait_timeout=5.0), store=store)
    with sim.serve(provider("p", time_to_first_token=0.4)) as s:
        llm = model(path, budgets, deployment(s))

        async def main() -> list[Any]:
            with langscale.tenant("acme"):
                calls = (llm.ainvoke(PROMPT, max_tokens=192) for _ in range(2))
                return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(main())
        assert [type(r).__name__ for r in results] == ["AIMessage", "AIMessage"]
        assert s.stats("p")["chat_requests"] == 2
    assert tenant_usd(budgets) == pytest.approx(2.0)


async def _one(llm: ScaledChatModel, how: str) -> None:
    """One request for acme, the way `how` names."""
    if how == "invoke":
        llm.invoke(PROMPT, max_tokens=OUT)
    elif how == "ainvoke":
        await llm.ainvoke(PROMPT, max_tokens=OUT)
    elif how == "stream":
        assert "".join(c.text for c in llm.stream(PROMPT, max_tokens=OUT))
    else:
        assert "".join([c.text async for c in llm.astream(PROMPT, max_tokens=OUT)])


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("path", PATHS)
def test_a_budget_running_low_shifts_to_the_cheaper_deployment(served, path, how):
    # $1 a call on p (first by priority), $0.20 on cheap; $10 a day, near at 0.8: after
    # eight calls ($8) the rest go to cheap, and the budget lasts.
    budgets = Budgets(daily(10.0))
    llm = model(path, budgets, deployment(served), deployment(served, "cheap", price=2.0))

    async def run() -> None:
        with langscale.tenant("acme"):
            for _ in range(12):
                await _one(llm, how)

    asyncio.run(run())
    by_name = {d["name"]: d["requests"] for d in llm.stats()["deployments"]}
    assert by_name == {"p": 8, "cheap": 4}
    assert llm.stats()["cheaper_first"] == 4
    assert tenant_usd(budgets) == pytest.approx(8.8)
    # Turned off, the same spend keeps the priority order (and then runs out).
    budgets.update({**daily(10.0), "prefer_cheaper_near": False})
    with langscale.tenant("acme"):
        llm.invoke(PROMPT, max_tokens=OUT)
        with pytest.raises(BudgetExceeded):
            llm.invoke(PROMPT, max_tokens=OUT)
    assert tenant_usd(budgets) == pytest.approx(9.8)  # the first on p, at $1
    assert llm.stats()["cheaper_first"] == 4


def test_prefer_cheaper_near_must_be_a_flag():
    with pytest.raises(langscale.ConfigError, match="prefer_cheaper_near"):
        Budgets({"prefer_cheaper_near": "yes"})


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("path", PATHS)
def test_a_request_takes_the_callers_deadline_else_its_tenants(path, how):
    # Every answer takes 0.6 s to start; the model itself allows 30 s.
    with sim.serve(provider("slow", time_to_first_token=0.6)) as s:
        budgets = Budgets({"tenants": {"hurried": {"deadline": 0.1}}})
        llm = ScaledChatModel(
            [deployment(s, "slow")], budgets=budgets, native=path == "native", deadline=30.0
        )
        assert (llm._native is not None) == (path == "native")

        async def one(tenant: str, deadline: float | None = None) -> str:
            with langscale.tenant(tenant):
                if deadline is None:
                    await _one(llm, how)
                    return "answered"
                with langscale.deadline(deadline):
                    await _one(llm, how)
                    return "answered"

        def outcome(tenant: str, deadline: float | None = None) -> str:
            try:
                return asyncio.run(one(tenant, deadline))
            except Exception as err:  # the deadline's failure, whichever class the path raises
                return f"failed: {err}"

        assert outcome("calm") == "answered"
        # The failure names the time budget (0.1 s), not the model's 30 s.
        for failed in (outcome("calm", 0.1), outcome("hurried")):
            assert re.search(r"(0\.100|0\.09\d+) s", failed), failed
        # The caller's own time budget wins over the tenant's.
        assert outcome("hurried", 5.0) == "answered"
        assert llm.stats()["failures"]["deadline"] == 2


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 1e300, "2", True])
def test_a_bad_deadline_is_named(bad):
    with pytest.raises(langscale.ConfigError, match="deadline"):
        with langscale.deadline(bad):
            pass
    with pytest.raises(langscale.ConfigError, match="deadline"):
        with langscale.deadline(None):  # type: ignore[arg-type]
            pass
    with pytest.raises(langscale.ConfigError, match="deadline"):
        Budgets({"tenant_default": {"deadline": bad}})
