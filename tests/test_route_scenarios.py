"""One table of failure scenarios, run on every path of ``ScaledChatModel``: ``invoke``,
``ainvoke``, ``stream`` and ``astream``, each over native ``ChatEndpoint``s (the loop in Rust)
and over the same endpoints called as LangChain chat models (``native=False``). Every path
must try the same deployments in the same order, end with the same answer or the same kind
of error, and leave the same counters: there is one executor, so there is one behaviour."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import langscale
import langscale._classify
from langscale import ChatEndpoint, Deployment, ScaledChatModel
from tests.test_endpoint import FakeProvider, Reply, answer

FAST = {"backoff_base": 0.001, "backoff_cap": 0.005, "seed": 1}
PATHS = ["invoke", "ainvoke", "stream", "astream"]
MODES = ["native", "python"]


def status(code: int, headers: dict[str, str] | None = None, message: str = "") -> Reply:
    return code, headers or {}, {"error": {"message": message or f"HTTP {code}"}}


def reset() -> Reply:
    raise ConnectionResetError("scripted connection reset")


def hang(seconds: float = 3.0) -> Callable[[dict[str, Any]], Reply]:
    def slow(body: dict[str, Any]) -> Reply:
        time.sleep(seconds)
        return answer(body)

    return slow


def cut_after_first_chunk(body: dict[str, Any]) -> Reply:
    """A stream that sends one delta, then something that is not an event."""
    code, headers, events = answer(body)
    if not isinstance(events, list):
        return code, headers, events
    return code, headers, [events[0], "not a chunk"]


@dataclass
class Scenario:
    """``scripts[name]``: what that deployment answers, one entry per call (the last repeats).
    ``tried``: the deployments called, in order; ``answer``: the text the caller gets, or
    ``error``: the router's kind for the exception raised."""

    name: str
    scripts: dict[str, list[Callable[[dict[str, Any]], Reply]]]
    tried: list[str]
    answer: str | None = None
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    limiters: dict[str, Callable[[], langscale.RateLimiter]] = field(default_factory=dict)
    prompt: str = "hi"
    warmup: int = 0
    paths: list[str] = field(default_factory=lambda: PATHS)


def ok(body: dict[str, Any]) -> Reply:
    return answer(body)


SCENARIOS = [
    Scenario(
        "429 with Retry-After, then success elsewhere",
        {"a": [lambda _: status(429, {"retry-after": "30"})], "b": [ok]},
        tried=["a", "b"],
        answer="echo: hi",
    ),
    Scenario(
        "500 then a retry of the same deployment",
        {"a": [lambda _: status(500), ok], "b": [ok]},
        tried=["a", "a"],
        answer="echo: hi",
    ),
    Scenario(
        "a timeout moves on",
        {"a": [hang()], "b": [ok]},
        tried=["a", "b"],
        answer="echo: hi",
        options={"attempt_timeout": 0.3, "max_attempts": 1},
    ),
    Scenario(
        "a connection reset is retried, then fails over",
        {"a": [lambda _: reset()], "b": [ok]},
        tried=["a", "a", "b"],
        answer="echo: hi",
        options={"max_attempts": 2},
    ),
    Scenario(
        "401 fails at once",
        {"a": [lambda _: status(401)], "b": [ok]},
        tried=["a"],
        error="auth",
    ),
    Scenario(
        "context overflow goes to a larger window",
        {
            "a": [lambda _: status(400, message="maximum context length is 10 tokens")],
            "b": [ok],
            "c": [ok],
        },
        tried=["a", "c"],
        answer="echo: hi",
        windows={"a": 100, "b": 50, "c": 1000},
    ),
    Scenario(
        "a request larger than a deployment's limiter goes elsewhere",
        {"a": [ok], "b": [ok]},
        tried=["b"],
        answer="echo: " + "long " * 40,
        limiters={"a": lambda: langscale.RateLimiter(tokens_per_minute=20, token_burst=20)},
        prompt="long " * 40,
    ),
    Scenario(
        "every deployment down",
        {"a": [lambda _: status(503)], "b": [lambda _: status(500)]},
        tried=["a", "a", "b", "b"],
        error="server",
        options={"max_attempts": 2},
    ),
    Scenario(
        "an open breaker is skipped",
        {"a": [lambda _: status(500)], "b": [ok]},
        tried=["b"],
        answer="echo: hi",
        options={
            "max_attempts": 1,
            "breaker_min_requests": 2,
            "breaker_failure_rate": 0.5,
            "breaker_open_for": 60.0,
        },
        warmup=2,
    ),
    Scenario(
        "a hedge wins",
        {"a": [hang(1.5)], "b": [ok]},
        tried=["a", "b"],
        answer="echo: hi",
        options={"hedge_delay": 0.1, "max_attempts": 1},
    ),
    Scenario(
        "with time to spare, the cheap deployment is waited for",
        {"a": [lambda _: status(429, {"retry-after": "0.2"}), ok], "b": [ok]},
        tried=["a", "a"],
        answer="echo: hi",
        options={"deadline": 10.0, "failover_price_ratio": 2.0},
        prices={"a": 1.0, "b": 16.0},
    ),
    Scenario(
        "without time to spare, the pricier deployment answers",
        {"a": [lambda _: status(429, {"retry-after": "30"}), ok], "b": [ok]},
        tried=["a", "b"],
        answer="echo: hi",
        options={"deadline": 10.0, "failover_price_ratio": 2.0},
        prices={"a": 1.0, "b": 16.0},
    ),
    Scenario(
        "a stream failing after its first chunk is not failed over",
        {"a": [cut_after_first_chunk], "b": [ok]},
        tried=["a"],
        error="server",
        paths=["stream", "astream"],
    ),
]


class Deployments:
    """One scripted provider per deployment, logging the order they are called in."""

    def __init__(self, scenario: Scenario) -> None:
        self.log: list[str] = []
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.providers = {
            name: FakeProvider(self._script(name, steps))
            for name, steps in scenario.scripts.items()
        }

    def _script(self, name: str, steps: list[Callable[[dict[str, Any]], Reply]]):
        def script(body: dict[str, Any]) -> Reply:
            with self.lock:
                self.log.append(name)
                n = self.calls.get(name, 0)
                self.calls[name] = n + 1
            return steps[min(n, len(steps) - 1)](body)

        return script

    def reset(self) -> None:
        """Each deployment starts its script again (for the next path)."""
        with self.lock:
            self.log.clear()
            self.calls.clear()

    def close(self) -> None:
        for p in self.providers.values():
            p.close()


def build(scenario: Scenario, deps: Deployments, mode: str) -> ScaledChatModel:
    models = []
    for name, p in deps.providers.items():
        limiter = scenario.limiters[name]() if name in scenario.limiters else None
        models.append(
            Deployment(
                ChatEndpoint(p.url, "fake-1"),
                name=name,
                context_window=scenario.windows.get(name),
                price_in=scenario.prices.get(name, 0.0),
                price_out=scenario.prices.get(name, 0.0),
                limiter=limiter,
            )
        )
    model = ScaledChatModel(models, native=mode == "native", **{**FAST, **scenario.options})
    assert (model._native is not None) == (mode == "native")
    return model


def run(model: ScaledChatModel, path: str, prompt: str) -> str:
    if path == "invoke":
        return str(model.invoke(prompt).content)
    if path == "ainvoke":
        return str(asyncio.run(model.ainvoke(prompt)).content)
    if path == "stream":
        return "".join(str(c.content) for c in model.stream(prompt))

    async def collect() -> str:
        return "".join([str(c.content) async for c in model.astream(prompt)])

    return asyncio.run(collect())


COUNTERS = ("requests", "successes", "errors", "retries", "fallbacks", "hedges")


def counters(model: ScaledChatModel) -> dict[str, Any]:
    stats = model.stats()
    return {
        "successes": stats["successes"],
        "failures": {k: v for k, v in stats["failures"].items() if k != "abandoned"},
        "deployments": [{k: d[k] for k in COUNTERS} for d in stats["deployments"]],
    }


def outcome(
    scenario: Scenario, deps: Deployments, mode: str, path: str
) -> tuple[list[str], str, dict[str, Any]]:
    deps.reset()
    model = build(scenario, deps, mode)
    for _ in range(scenario.warmup):
        run(model, "invoke", scenario.prompt)
    before = len(deps.log)
    try:
        result = "answer: " + run(model, path, scenario.prompt)
    except Exception as exc:  # the kind the router gives it is what must agree
        result = "error: " + langscale._classify.classify(exc)[0]
    return deps.log[before:], result, counters(model)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_path_behaves_the_same(scenario: Scenario) -> None:
    expected = (
        f"answer: {scenario.answer}" if scenario.answer is not None else f"error: {scenario.error}"
    )
    seen = {}
    failures = []
    deps = Deployments(scenario)
    try:
        runs = [(mode, path) for mode in MODES for path in scenario.paths]
        outcomes = [(mode, path, *outcome(scenario, deps, mode, path)) for mode, path in runs]
    finally:
        deps.close()
    for mode, path, tried, result, counted in outcomes:
        if (tried, result) != (scenario.tried, expected):
            failures.append((mode, path, tried, result))
        seen[f"{mode} {path}"] = counted
    assert not failures, failures
    first = next(iter(seen.values()))
    for where, counted in seen.items():
        assert counted == first, f"{where} counted differently"


# -- one decision each, on every path ----------------------------------------------------------


def test_priority_zero_wins_over_one() -> None:
    first, second = FakeProvider(), FakeProvider()
    try:
        for native in (True, False):
            model = ScaledChatModel(
                [
                    Deployment(ChatEndpoint(first.url, "fake-1"), name="a", priority=1),
                    Deployment(ChatEndpoint(second.url, "fake-1"), name="b", priority=0),
                ],
                native=native,
            )
            before = len(second.bodies)
            assert model.invoke("hi").content == "echo: hi"
            assert len(second.bodies) == before + 1, "priority 0 is tried first"
        assert not first.bodies
    finally:
        first.close()
        second.close()


class StatusError(Exception):
    """What provider SDKs raise: a status code and the response's headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.headers = headers or {}


@pytest.mark.parametrize("code", [408, 409, 413, 425, 429, 500, 503, 504])
def test_one_classifier_for_python_exceptions_and_native_answers(code: int) -> None:
    provider = FakeProvider(lambda _: status(code, {"retry-after": "0"}))
    try:
        model = ScaledChatModel([ChatEndpoint(provider.url, "fake-1")], max_attempts=1, **FAST)
        with pytest.raises(Exception):  # noqa: B017 - the kind is what is compared
            model.invoke("hi")
        errors = model.stats()["deployments"][0]["errors"]
        native = [kind for kind, n in errors.items() if n]
    finally:
        provider.close()
    kind, _ = langscale._classify.classify(StatusError(code, {"Retry-After": "0"}))
    assert native == [kind.removesuffix("_retryable")], code


def test_retry_after_comes_from_headers_the_same_way() -> None:
    kind, after = langscale._classify.classify(StatusError(429, {"retry-after-ms": "1500"}))
    assert (kind, after) == ("rate_limited", 1.5)
    kind, after = langscale._classify.classify(
        StatusError(429, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"})
    )
    assert (kind, after) == ("rate_limited", 360.0)


def test_chat_openai_retries_are_off_and_the_router_sees_its_429() -> None:
    lc_openai = pytest.importorskip("langchain_openai")
    limited = FakeProvider(lambda _: status(429, {"retry-after": "0"}))
    healthy = FakeProvider()
    try:
        openai_model = lc_openai.ChatOpenAI(
            model="fake-1", api_key="sk-test", base_url=limited.url, max_retries=2
        )
        model = ScaledChatModel(
            [openai_model, ChatEndpoint(healthy.url, "fake-1")], max_attempts=1, **FAST
        )
        assert model.invoke("hi").content == "echo: hi"
        assert len(limited.bodies) == 1, "one provider call per router attempt"
        assert model.stats()["deployments"][0]["errors"]["rate_limited"] == 1
        assert openai_model.max_retries == 2, "the user's model is not changed"
        kept = Deployment(openai_model, own_retries=True)
        assert kept.model is openai_model
    finally:
        limited.close()
        healthy.close()


def test_each_attempt_is_a_child_run_on_the_native_path_too() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Attempts(BaseCallbackHandler):
        def __init__(self) -> None:
            self.started: list[tuple[Any, Any]] = []
            self.waited: list[Any] = []
            self.ended: list[str] = []

        def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
            if parent_run_id is not None:
                meta = kw.get("metadata") or {}
                self.started.append(
                    (meta.get("langscale_deployment"), meta.get("langscale_attempt"))
                )
                self.waited.append(meta.get("langscale_waited_s"))

        def on_llm_end(self, response, *, run_id, parent_run_id=None, **kw):
            if parent_run_id is not None:
                self.ended.append("ok")

        def on_llm_error(self, error, *, run_id, parent_run_id=None, **kw):
            if parent_run_id is not None:
                self.ended.append(type(error).__name__)

    broken = FakeProvider(lambda _: status(503))
    healthy = FakeProvider()
    try:
        model = ScaledChatModel(
            [
                Deployment(ChatEndpoint(broken.url, "fake-1"), name="a"),
                Deployment(ChatEndpoint(healthy.url, "fake-1"), name="b"),
            ],
            max_attempts=1,
            **FAST,
        )
        assert model._native is not None
        seen = Attempts()
        assert model.invoke("hi", config={"callbacks": [seen]}).content == "echo: hi"
        assert seen.started == [("a", 0), ("b", 1)]
        assert all(isinstance(w, float) and 0 <= w < 5 for w in seen.waited), seen.waited
        assert seen.ended[-1] == "ok" and len(seen.ended) == 2 and seen.ended[0] != "ok"
    finally:
        broken.close()
        healthy.close()


@pytest.mark.parametrize("mode", MODES)
def test_permits_not_free_now_are_waited_for_on_threads_and_coroutines(mode: str) -> None:
    """One call at a time through a model-wide limit: later requests wait for the permit
    (``acquire`` on threads, ``aacquire`` on the event loop) and all get their answer."""
    import concurrent.futures

    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    def slow(body: dict[str, Any]) -> Reply:
        with lock:
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        time.sleep(0.05)
        with lock:
            busy["now"] -= 1
        return answer(body)

    provider = FakeProvider(slow)
    try:
        model = ScaledChatModel(
            [ChatEndpoint(provider.url, "fake-1")],
            limits=langscale.RateLimiter(max_concurrency=1),
            native=mode == "native",
        )
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(lambda i: model.invoke(f"t{i}").content, range(4)))
        assert texts == [f"echo: t{i}" for i in range(4)]

        async def many() -> list[str]:
            got = await asyncio.gather(*(model.ainvoke(f"a{i}") for i in range(4)))
            return [str(m.content) for m in got]

        assert asyncio.run(many()) == [f"echo: a{i}" for i in range(4)]
        assert busy["most"] == 1
        assert model.stats()["successes"] == 8
    finally:
        provider.close()
