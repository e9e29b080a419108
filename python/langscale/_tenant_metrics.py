"""Per-tenant figures of a ScaledChatModel: the router's rows (requests, outcomes, latency,
tokens, throttled/queued/rejected; the top N tenants plus "other") joined with its Budgets'
report (spend, cache hits and savings, budget remaining), which counts those itself: nothing
here counts twice. Also the one place a cache hit is told to the budgets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langscale._tokens import usage_of

OTHER = "other"


def cache_hit(model: Any, who: Any, generations: Iterable[Any]) -> None:
    """A call of ``model`` answered from a cache for ``who``: with budgets, counted there as
    a hit that saved the answer's usage at the first-choice deployment's prices."""
    if model.budgets is None:
        return
    private = model.__pydantic_private__
    used_in, used_out, _, _ = usage_of(generations)
    private["_router"].cache_hit(who.tenant, who.user, used_in, used_out)


def _empty_budget_fields(row: dict[str, Any]) -> None:
    row.update(
        cache_hits=None, saved_usd=None, saved_tokens=None, budget_remaining=None, budget_near=None
    )


def joined(rows: Mapping[str, dict[str, Any]], report: Mapping[str, Any] | None) -> dict:
    """The router's rows (tenant -> figures, "other" last), each with ``cache_hits``,
    ``saved_usd``, ``saved_tokens``, ``budget_remaining`` (budget -> what is left) and
    ``budget_near`` (budget -> whether it has used the budgets' ``near`` fraction) from the
    budgets' ``report()``, whose ``usd`` becomes the row's ``spend``. Without budgets those
    are None and ``spend`` is the router's (the deployments' prices). Tenants the budgets know
    but the rows do not (cache hits only, or outside the top N) count in "other"."""
    out = {tenant: dict(row) for tenant, row in rows.items()}
    if report is None:
        for row in out.values():
            _empty_budget_fields(row)
        return out
    levels = report.get("levels") or {}
    other = out.setdefault(OTHER, {})
    for row in out.values():
        row.update(
            spend=0.0,
            cache_hits=0,
            saved_usd=0.0,
            saved_tokens=0,
            budget_remaining={},
            budget_near={},
        )
    other["budget_remaining"] = other["budget_near"] = None  # many tenants': no one figure
    for key, level in levels.items():
        if not key.startswith("tenant:"):
            continue
        tenant = key[len("tenant:") :]
        row = out.get(tenant, other)
        row["spend"] += level.get("usd", 0.0)
        row["cache_hits"] += level.get("cache_hits", 0)
        row["saved_usd"] += level.get("saved_usd", 0.0)
        row["saved_tokens"] += level.get("saved_tokens", 0)
        if row is not other:
            limits = level.get("limits", ())
            row["budget_remaining"] = {m["budget"]: m["remaining"] for m in limits}
            row["budget_near"] = {m["budget"]: bool(m["near"]) for m in limits}
    for row in out.values():
        successes = row.get("successes") or 0
        row["cost_per_success"] = row["spend"] / successes if successes else 0.0
    return out
