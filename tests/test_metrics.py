"""langscale.metrics: a registry of live objects, snapshot(), Prometheus text, HTTP endpoint."""

from __future__ import annotations

import gc
import json
import re
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage
from prometheus_client.parser import text_string_to_metric_families

import langscale
from langscale import metrics


class Failing(GenericFakeChatModel):
    def _generate(self, *args, **kwargs):
        err = RuntimeError("upstream 503")
        err.status_code = 503  # type: ignore[attr-defined]
        raise err


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(list(answers) * 50))


SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})?'
    r" (?P<value>[-+]?(\d+(\.\d*)?([eE][-+]?\d+)?|Inf|NaN))$"
)


def check_exposition(text: str) -> dict[str, str]:
    """Strict checks of the text format: every sample's family has HELP then TYPE before it,
    names and labels are well-formed, each family appears in one block. Returns name -> type."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    current = None
    seen_blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in seen_blocks, f"{name} split over two blocks"
            seen_blocks.append(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current, line
            assert kind in {"counter", "gauge", "summary", "histogram", "untyped"}
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"malformed sample line: {line!r}"
            assert match["name"] == current and current in types, line
            if types[current] == "counter":
                assert match["name"].endswith("_total")
                assert float(match["value"]) >= 0
    return types


@pytest.fixture
def objects():
    cache = langscale.SemanticCache()
    exact = langscale.ExactCache()
    limiter = langscale.RateLimiter(requests_per_second=1000)
    model = langscale.ScaledChatModel(
        [Failing(messages=iter([])), fake("hello")],
        cache=cache,
        breaker_min_requests=1,
        breaker_failure_rate=0.5,
        backoff_base=0.001,
        max_attempts=1,
    )
    names = {
        "cache": metrics.register(cache, name="answers"),
        "exact": metrics.register(exact, name='odd "name"\\with\nnewline'),
        "limiter": metrics.register(limiter, name="api"),
        "model": metrics.register(model, name="chat"),
    }
    yield SimpleNamespace(names=names, cache=cache, exact=exact, limiter=limiter, model=model)
    for obj in (cache, exact, limiter, model):
        metrics.unregister(obj)


def test_snapshot_covers_caches_limiters_and_deployments(objects):
    names, limiter, model = objects.names, objects.limiter, objects.model
    model.invoke([HumanMessage("What is the weather in Paris?")])
    model.invoke([HumanMessage("What is the weather in Paris?")])  # exact hit
    model.invoke([HumanMessage("what is the weather in paris please")])  # semantic hit
    limiter.acquire()
    snap = metrics.snapshot()
    answers = snap["caches"]["answers"]
    assert answers["type"] == "SemanticCache"
    assert answers["exact_hits"] == 1 and answers["semantic_hits"] == 1
    assert snap["caches"][names["exact"]]["type"] == "ExactCache"
    assert snap["limiters"]["api"]["acquired"] >= 1
    chat = snap["models"]["chat"]
    assert chat["requests"] == 1 and chat["successes"] == 1
    first, second = chat["deployments"]
    assert first["errors"]["server"] == 1
    assert second["fallbacks"] == 1


def test_prometheus_text_is_valid_and_escaped(objects):
    names, limiter, model = objects.names, objects.limiter, objects.model
    model.invoke([HumanMessage("hi there")])
    limiter.acquire()
    text = metrics.prometheus()
    types = check_exposition(text)
    assert types["langscale_cache_hits_total"] == "counter"
    assert types["langscale_limiter_in_flight"] == "gauge"
    assert types["langscale_deployment_breaker_state"] == "gauge"
    # the awkward name is escaped on the wire and round-trips through the official parser
    assert 'cache="odd \\"name\\"\\\\with\\nnewline"' in text
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client strips _total from counter family names
    hits = parsed["langscale_cache_hits"]
    labels = {(s.labels["cache"], s.labels["kind"]) for s in hits.samples}
    assert (names["exact"], "exact") in labels and ("answers", "semantic") in labels
    errors = [
        s
        for s in parsed["langscale_deployment_errors"].samples
        if s.labels["model"] == "chat" and s.labels["kind"] == "server"
    ]
    assert sum(s.value for s in errors) == 1
    state = {
        (s.labels["deployment"], s.labels["state"]): s.value
        for s in parsed["langscale_deployment_breaker_state"].samples
        if s.labels["model"] == "chat"
    }
    assert sum(state.values()) == 2, "one state per deployment"
    assert state[(model.stats()["deployments"][0]["name"], "open")] == 1
    requests = [
        s for s in parsed["langscale_router_requests"].samples if s.labels["model"] == "chat"
    ]
    assert requests[0].value == 1


def test_weak_references_let_objects_go():
    cache = langscale.ExactCache()
    name = metrics.register(cache, name="temporary")
    assert name in metrics.snapshot()["caches"]
    del cache
    gc.collect()
    assert "temporary" not in metrics.snapshot()["caches"]


def test_names_unique_renames_and_errors():
    a, b = langscale.ExactCache(), langscale.ExactCache()
    assert metrics.register(a, name="same") == "same"
    assert metrics.register(b, name="same") == "same#2"
    assert metrics.register(a, name="renamed") == "renamed"
    caches = metrics.snapshot()["caches"]
    assert "renamed" in caches and "same" not in caches and "same#2" in caches
    auto = metrics.register(langscale.RateLimiter(requests_per_second=5))
    assert auto.startswith("ratelimiter-")
    with pytest.raises(langscale.ConfigError, match="got 42"):
        metrics.register(42)
    with pytest.raises(langscale.ConfigError, match="name"):
        metrics.register(a, name="")
    for obj in (a, b):
        metrics.unregister(obj)


def test_registration_and_snapshots_from_many_threads():
    made: list[object] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                obj = langscale.ExactCache()
                made.append(obj)
                metrics.register(obj, name=f"t{i}-{j}")
                metrics.prometheus()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    caches = metrics.snapshot()["caches"]
    assert all(f"t{i}-{j}" in caches for i in range(8) for j in range(20))
    for obj in made:
        metrics.unregister(obj)


def test_http_endpoint_serves_text_and_json(objects):
    objects.limiter.acquire()
    with metrics.serve(port=0) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        check_exposition(text)
        assert "langscale_limiter_acquired_total" in text
        with urllib.request.urlopen(url + ".json", timeout=10) as response:
            data = json.loads(response.read())
        assert "api" in data["limiters"] and "chat" in data["models"]
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url.replace("/metrics", "/nope"), timeout=10)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
    with pytest.raises(langscale.ConfigError, match="port"):
        metrics.serve(port=-1)


def test_an_object_collected_while_metrics_hold_their_lock_does_not_deadlock():
    """A weakref callback runs wherever the collector runs, here inside a ``with _LOCK``
    block of the same thread (it hung CI once, in ExactCache's constructor)."""
    import threading

    cache = langscale.ExactCache()
    name = metrics.register(cache, name="collected-under-lock")
    ring: list[object] = [cache]
    ring.append(ring)  # only the cycle collector frees it
    del cache

    def collect_under_lock() -> None:
        with metrics._LOCK:
            gc.collect()  # the cache's callback runs here, with the lock held

    worker = threading.Thread(target=collect_under_lock, daemon=True)
    del ring
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the collector's callback waited for the lock it holds"
    assert name not in metrics.snapshot()["caches"]
