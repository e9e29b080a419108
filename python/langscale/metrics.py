"""Metrics of every live langscale object: ``snapshot()`` (a dict), ``prometheus()`` (the text
exposition format) and ``serve(port=0)`` (an HTTP endpoint for both).

``ExactCache``, ``SemanticCache``, ``RateLimiter`` and ``ScaledChatModel`` register
themselves when created, by weak reference (a registered object is still collected when the
program drops it). ``register(obj, name="...")`` names one for the labels; unnamed ones are
``exactcache-1``, ``ratelimiter-2``, ... The figures are the objects' own ``stats()``, read
from Rust when asked: there is no background thread and nothing to call on the hot path.

```python
import langscale.metrics as metrics

metrics.register(cache, name="answers")
print(metrics.prometheus())            # for a scraper, or:
endpoint = metrics.serve(port=9464)    # "http://127.0.0.1:9464/metrics", also /metrics.json
endpoint.close()
```
"""

from __future__ import annotations

import http.server
import itertools
import json
import math
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from langscale import _core, _tenant_metrics

_LOCK = threading.Lock()
_LIVE: dict[str, tuple[str, weakref.ref]] = {}  # name -> (kind, object)
# id(object) -> name; by id because chat models (pydantic) are not hashable. An entry goes
# when its object is collected, before the id can be reused.
_NAMES: dict[int, str] = {}
_COUNTER = itertools.count(1)

_KINDS = {
    "ExactCache": "cache",
    "SemanticCache": "cache",
    "RateLimiter": "limiter",
    "ScaledChatModel": "model",
}


def _kind_of(obj: Any) -> str:
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("langscale") and cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    msg = (
        "metrics track langscale ExactCache, SemanticCache, RateLimiter and ScaledChatModel "
        f"objects, got {obj!r}"
    )
    raise _core.ConfigError(msg)


# Objects collected, waiting to be forgotten. A weakref callback runs wherever the collector
# happens to run, possibly inside a `with _LOCK` block of this very thread (an allocation there
# starts a collection): taking the lock in it deadlocked, so it only appends here (atomic) and
# whoever takes the lock next forgets them first, before an id can be looked up again.
_DEAD: list[tuple[str, weakref.ref, int]] = []


def _forget(name: str, ref: weakref.ref, oid: int) -> None:
    _DEAD.append((name, ref, oid))


def _drain() -> None:
    """Forget the collected objects; called with ``_LOCK`` held."""
    while _DEAD:
        name, ref, oid = _DEAD.pop()
        if name in _LIVE and _LIVE[name][1] is ref:
            del _LIVE[name]
        if _NAMES.get(oid) == name:
            del _NAMES[oid]


def register(obj: Any, name: str | None = None) -> str:
    """Track ``obj`` under ``name`` (or an automatic one) and return the name.

    Registering an object again renames it. A name in use by another live object gets a
    ``#2``, ``#3``... suffix.
    """
    kind = _kind_of(obj)
    if name is not None and (not isinstance(name, str) or not name):
        raise _core.ConfigError(f"a metrics name must be a non-empty string, got {name!r}")
    with _LOCK:
        _drain()
        oid = id(obj)
        old = _NAMES.get(oid)
        if old is not None:
            if name is None or name == old:
                return old
            _LIVE.pop(old, None)
        base = name or f"{type(obj).__name__.lower()}-{next(_COUNTER)}"
        chosen = base
        for n in itertools.count(2):
            held = _LIVE.get(chosen)
            if held is None or held[1]() is None:
                break
            chosen = f"{base}#{n}"
        ref = weakref.ref(obj, lambda r, chosen=chosen, oid=oid: _forget(chosen, r, oid))
        _LIVE[chosen] = (kind, ref)
        _NAMES[oid] = chosen
        return chosen


def track(obj: Any) -> None:
    """Called by langscale objects when created; never raises."""
    try:
        register(obj)
    except Exception:  # pragma: no cover - tracking must never break construction
        pass


def unregister(obj: Any) -> None:
    """Stop tracking ``obj``."""
    with _LOCK:
        _drain()
        name = _NAMES.pop(id(obj), None)
        if name is not None:
            _LIVE.pop(name, None)


def _live() -> list[tuple[str, str, Any]]:
    with _LOCK:
        _drain()
        entries = [(name, kind, ref()) for name, (kind, ref) in _LIVE.items()]
    return sorted((e for e in entries if e[2] is not None), key=lambda e: (e[1], e[0]))


def snapshot() -> dict[str, dict[str, Any]]:
    """``{"caches": {name: stats}, "limiters": {name: stats}, "models": {name: stats}}``.

    Cache stats carry their ``type``; model stats are ``ScaledChatModel.stats()``
    (per-deployment requests, errors by kind, retries, fallbacks, breaker, tokens, cost,
    latency percentiles) with ``tenants``: the top N tenants plus "other", each joined with
    the model's budgets (spend, cache hits and savings, budget remaining) where it has them.
    """
    out: dict[str, dict[str, Any]] = {"caches": {}, "limiters": {}, "models": {}}
    for name, kind, obj in _live():
        stats = dict(obj.stats())
        if kind == "cache":
            stats["type"] = type(obj).__name__
        elif kind == "model":
            budgets = getattr(obj, "budgets", None)
            stats["tenants"] = _tenant_metrics.joined(
                stats.get("tenants") or {}, budgets.report() if budgets is not None else None
            )
        out[kind + "s"][name] = stats
    return out


# -- Prometheus text exposition format ---------------------------------------------------------


def _escape_label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, Any], Any]] = []

    def add(self, value: Any, **labels: Any) -> None:
        if value is not None:
            self.samples.append((labels, value))

    def render(self) -> Iterable[str]:
        if not self.samples:
            return
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        yield f"# HELP {self.name} {help_text}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                yield f"{self.name}{{{inner}}} {_number(value)}"
            else:
                yield f"{self.name} {_number(value)}"


class _Families:
    def __init__(self) -> None:
        self.by_name: dict[str, _Family] = {}

    def __call__(self, name: str, kind: str, help_text: str) -> _Family:
        full = f"langscale_{name}"
        if full not in self.by_name:
            self.by_name[full] = _Family(full, kind, help_text)
        return self.by_name[full]


def _caches(f: _Families, caches: dict[str, dict[str, Any]]) -> None:
    for name, s in caches.items():
        hits = f("cache_hits_total", "counter", "Cache hits, by kind (exact or semantic).")
        if s["type"] == "SemanticCache":
            hits.add(s.get("exact_hits"), cache=name, kind="exact")
            hits.add(s.get("semantic_hits"), cache=name, kind="semantic")
            f(
                "cache_guard_rejections_total",
                "counter",
                "Near matches the semantic guard refused (another city, number, date, ...).",
            ).add(s.get("guard_rejections"), cache=name)
            f("cache_scopes", "gauge", "Exact scopes holding semantic entries.").add(
                s.get("scopes"), cache=name
            )
        else:
            hits.add(s.get("hits"), cache=name, kind="exact")
        f("cache_misses_total", "counter", "Cache misses.").add(s.get("misses"), cache=name)
        f("cache_entries", "gauge", "Entries held.").add(s.get("entries"), cache=name)
        f("cache_evictions_total", "counter", "Entries evicted (size, bytes, TTL).").add(
            s.get("evictions"), cache=name
        )
        f("cache_bytes", "gauge", "Bytes held by cached values.").add(s.get("bytes"), cache=name)


def _limiters(f: _Families, limiters: dict[str, dict[str, Any]]) -> None:
    for name, s in limiters.items():
        f("limiter_acquired_total", "counter", "Admissions granted.").add(
            s.get("acquired"), limiter=name
        )
        f("limiter_waited_total", "counter", "Admissions that had to wait.").add(
            s.get("waited"), limiter=name
        )
        f("limiter_wait_seconds_total", "counter", "Seconds spent waiting for admission.").add(
            s.get("wait_seconds"), limiter=name
        )
        f("limiter_timeouts_total", "counter", "Waits that timed out.").add(
            s.get("timeouts"), limiter=name
        )
        f("limiter_waiting", "gauge", "Callers waiting now.").add(s.get("waiting"), limiter=name)
        f("limiter_in_flight", "gauge", "Permits held now (concurrency).").add(
            s.get("in_flight"), limiter=name
        )


_DEPLOYMENT_COUNTERS = [
    ("requests", "deployment_requests_total", "Attempts sent to the deployment."),
    ("successes", "deployment_successes_total", "Attempts that succeeded."),
    ("retries", "deployment_retries_total", "Retries on the deployment."),
    ("fallbacks", "deployment_fallbacks_total", "Requests failed over to the deployment."),
    ("hedges", "deployment_hedges_total", "Hedged attempts on the deployment."),
    ("cancelled", "deployment_cancelled_total", "Attempts abandoned (timeout, hedge lost)."),
    ("input_tokens", "deployment_input_tokens_total", "Input tokens reported by the model."),
    ("output_tokens", "deployment_output_tokens_total", "Output tokens reported by the model."),
    ("cost", "deployment_cost_total", "Cost from the deployment's prices."),
]


def _models(f: _Families, models: dict[str, dict[str, Any]]) -> None:
    for name, s in models.items():
        f("router_requests_total", "counter", "Requests routed.").add(s.get("requests"), model=name)
        f("router_successes_total", "counter", "Requests answered.").add(
            s.get("successes"), model=name
        )
        failures = f("router_failures_total", "counter", "Requests that failed, by reason.")
        for reason, count in (s.get("failures") or {}).items():
            failures.add(count, model=name, reason=reason)
        f("router_retries_denied_total", "counter", "Retries the retry budget refused.").add(
            s.get("retries_denied"), model=name
        )
        f(
            "router_cheaper_first_total",
            "counter",
            "Requests routed cheapest first: a USD budget of their tenant ran low.",
        ).add(s.get("cheaper_first"), model=name)
        f("router_active", "gauge", "Requests in progress.").add(s.get("active"), model=name)
        for d in s.get("deployments") or []:
            labels = {"model": name, "deployment": d.get("name")}
            for key, metric, help_text in _DEPLOYMENT_COUNTERS:
                f(metric, "counter", help_text).add(d.get(key), **labels)
            errors = f("deployment_errors_total", "counter", "Failed attempts, by error kind.")
            for kind, count in (d.get("errors") or {}).items():
                errors.add(count, **labels, kind=kind)
            f("deployment_in_flight", "gauge", "Attempts in flight.").add(
                d.get("in_flight"), **labels
            )
            state = f(
                "deployment_breaker_state",
                "gauge",
                "Circuit breaker state: 1 for the current state, 0 for the others.",
            )
            for candidate in ("closed", "open", "half_open"):
                state.add(int(d.get("breaker") == candidate), **labels, state=candidate)
            transitions = f(
                "deployment_breaker_transitions_total",
                "counter",
                "Circuit breaker transitions, by the state entered.",
            )
            for to in ("opened", "half_opened", "closed"):
                transitions.add(d.get(f"breaker_{to}"), **labels, to=to)
            latency = f(
                "deployment_latency_seconds",
                "gauge",
                "Attempt latency percentiles over the router's recent window.",
            )
            _quantiles(latency, d, labels)


def _quantiles(family: Any, row: dict[str, Any], labels: dict[str, str]) -> None:
    """A row's latency percentiles (p50, p95, p99), when it has any latency samples."""
    if row.get("latency_count"):
        for q in ("50", "95", "99"):
            family.add(row.get(f"latency_p{q}"), **labels, quantile=f"0.{q}")


_TENANT_COUNTERS = [
    ("requests", "tenant_requests_total", "Requests routed for the tenant."),
    ("successes", "tenant_successes_total", "Requests answered."),
    ("errors", "tenant_errors_total", "Requests that failed or were abandoned."),
    ("input_tokens", "tenant_input_tokens_total", "Input tokens of answered requests."),
    ("output_tokens", "tenant_output_tokens_total", "Output tokens of answered requests."),
    ("spend", "tenant_spend_total", "Spend (the budgets' figure, else the deployments' prices)."),
    ("cache_hits", "tenant_cache_hits_total", "Calls answered from a cache (with budgets)."),
    ("saved_usd", "tenant_cache_saved_total", "Spend saved by cache hits (with budgets)."),
    ("throttled", "tenant_throttled_total", "Provider rate-limit answers (429) received."),
    ("queued", "tenant_queued_total", "Attempts that waited for a permit or budget."),
    ("rejected", "tenant_rejected_total", "Attempts a local limiter or budget refused."),
]


def _tenants(f: _Families, model: str, tenants: dict[str, dict[str, Any]]) -> None:
    """One label set per row: the model's top N tenants plus "other", never more."""
    for tenant, t in tenants.items():
        labels = {"model": model, "tenant": tenant}
        for key, metric, help_text in _TENANT_COUNTERS:
            f(metric, "counter", help_text).add(t.get(key), **labels)
        f("tenant_cost_per_success", "gauge", "Spend per answered request.").add(
            t.get("cost_per_success"), **labels
        )
        latency = f(
            "tenant_latency_seconds",
            "gauge",
            "Request latency percentiles (start to answer, answered requests).",
        )
        _quantiles(latency, t, labels)
        remaining = f(
            "tenant_budget_remaining",
            "gauge",
            "What is left of each of the tenant's budgets and limits.",
        )
        for budget, left in (t.get("budget_remaining") or {}).items():
            remaining.add(left, **labels, budget=budget)
        near = f(
            "tenant_budget_near",
            "gauge",
            "1 once a budget or limit of the tenant has used its near fraction, else 0.",
        )
        for budget, flag in (t.get("budget_near") or {}).items():
            near.add(int(flag), **labels, budget=budget)


def prometheus(snap: dict[str, dict[str, Any]] | None = None) -> str:
    """Every live object's figures in the Prometheus text exposition format (version 0.0.4)."""
    snap = snapshot() if snap is None else snap
    families = _Families()
    _caches(families, snap["caches"])
    _limiters(families, snap["limiters"])
    _models(families, snap["models"])
    for name, s in snap["models"].items():
        _tenants(families, name, s.get("tenants") or {})
    lines = [line for family in families.by_name.values() for line in family.render()]
    return "\n".join(lines) + "\n" if lines else ""


# -- HTTP endpoint ---------------------------------------------------------------------------


class MetricsEndpoint(str):
    """The URL of a running metrics endpoint (``.../metrics``); ``close()`` stops it. Also a
    context manager."""

    _server: http.server.ThreadingHTTPServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(render: Callable[[], str], render_json: Callable[[], str]) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/metrics", "/"):
                body, ctype = render(), "text/plain; version=0.0.4; charset=utf-8"
            elif path == "/metrics.json":
                body, ctype = render_json(), "application/json"
            else:
                self.send_error(404, "try /metrics or /metrics.json")
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scraper every few seconds is not news

    return Handler


def serve(port: int = 0, host: str = "127.0.0.1") -> MetricsEndpoint:
    """Serve ``/metrics`` (Prometheus text) and ``/metrics.json`` (``snapshot()``) from a
    daemon thread; returns the ``/metrics`` URL. Loopback by default; ``port=0`` picks a free
    port."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise _core.ConfigError(f"port must be an integer from 0 to 65535, got {port!r}")
    handler = _handler(prometheus, lambda: json.dumps(snapshot(), default=str))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise _core.ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="langscale-metrics", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    endpoint = MetricsEndpoint(f"http://{shown}:{bound_port}/metrics")
    endpoint._server = server
    endpoint._thread = thread
    return endpoint


__all__ = [
    "MetricsEndpoint",
    "prometheus",
    "register",
    "serve",
    "snapshot",
    "unregister",
]
