"""The ``langscale demo --html`` page: the scorecard and two charts as inline SVG, one file,
no script and nothing fetched."""

from __future__ import annotations

import html
from typing import Any

COLOURS = {"plain LangChain": "#d9822b", "langscale": "#2b7bd9"}
PROVIDER_COLOURS = {"primary": "#2b9d5b", "fallback": "#9b59b6", "rate_limited": "#d93b2b"}


def _axis(x0: float, y0: float, width: float, height: float) -> str:
    return (
        f'<line x1="{x0}" y1="{y0}" x2="{x0 + width}" y2="{y0}" stroke="#444"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - height}" stroke="#444"/>'
    )


def _text(x: float, y: float, label: str, anchor: str = "middle", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">'
        f"{html.escape(label)}</text>"
    )


def latency_chart(report: dict[str, Any], width: int = 640, height: int = 260) -> str:
    """Share of requests answered within each latency (a CDF, log-spaced bins), both runs."""
    runs = {"plain LangChain": report["plain"], "langscale": report["langscale"]}
    values = [v for r in runs.values() for v in r["latencies_ms"]]
    if not values:
        return "<p>no latencies</p>"
    low = max(min(values), 0.1)
    high = max(max(values), low * 10)
    import math

    lo, hi = math.log10(low), math.log10(high)
    x0, y0, w, h = 50.0, height - 35.0, width - 90.0, height - 60.0
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    parts.append(_axis(x0, y0, w, h))
    for decade in range(math.floor(lo), math.ceil(hi) + 1):
        x = x0 + (decade - lo) / (hi - lo) * w
        if x0 <= x <= x0 + w:
            parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 - h}" stroke="#eee"/>')
            parts.append(_text(x, y0 + 14, f"{10**decade:g} ms"))
    for share in (0.5, 0.9, 0.99):
        y = y0 - share * h
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(_text(x0 - 4, y + 4, f"{share:.0%}", anchor="end"))
    for name, run in runs.items():
        ordered = sorted(run["latencies_ms"])
        n = len(ordered)
        if not n:
            continue
        points = []
        for i, v in enumerate(ordered):
            x = x0 + (math.log10(max(v, low)) - lo) / (hi - lo) * w
            points.append(f"{x:.1f},{y0 - (i + 1) / n * h:.1f}")
        parts.append(
            f'<polyline fill="none" stroke="{COLOURS[name]}" stroke-width="2" '
            f'points="{" ".join(points)}"/>'
        )
    for i, name in enumerate(runs):
        parts.append(
            f'<rect x="{x0 + 10}" y="{y0 - h + 8 + i * 16}" width="12" height="4" '
            f'fill="{COLOURS[name]}"/>'
        )
        parts.append(_text(x0 + 28, y0 - h + 14 + i * 16, name, anchor="start"))
    parts.append(_text(x0 + w / 2, height - 4, "latency per request (log scale)"))
    parts.append("</svg>")
    return "".join(parts)


def calls_chart(
    run: dict[str, Any],
    title: str,
    seconds: int,
    peak: int,
    outage: tuple[float, float] | None = None,
    width: int = 640,
    height: int = 220,
) -> str:
    """Provider calls per second, one line per provider, 429s dashed, the outage shaded; both
    runs share ``seconds`` and ``peak`` so they compare at a glance."""
    timeline: dict[str, list[list[int]]] = run["timeline"]
    if seconds == 0:
        return "<p>no calls</p>"
    rate_limited = [
        sum(t[i][2] for t in timeline.values() if i < len(t))
        for i in range(max(len(t) for t in timeline.values()))
    ]
    peak = max(peak, 1)
    x0, y0, w, h = 50.0, height - 35.0, width - 80.0, height - 60.0
    step = w / seconds
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    if outage is not None:
        start, end = outage
        parts.append(
            f'<rect x="{x0 + start * step:.1f}" y="{y0 - h:.1f}" '
            f'width="{(end - start) * step:.1f}" height="{h:.1f}" fill="#f3e0e0"/>'
        )
        parts.append(_text(x0 + (start + end) / 2 * step, y0 - h - 4, "primary down", size=10))
    parts.append(_axis(x0, y0, w, h))
    parts.append(_text(x0 - 4, y0 - h + 4, f"{peak}/s", anchor="end"))
    parts.append(_text(x0 - 4, y0 + 4, "0", anchor="end"))
    for s in range(0, seconds + 1, max(seconds // 10, 1)):
        parts.append(_text(x0 + s * step, y0 + 14, f"{s}s"))
    series = {name: [row[0] for row in t] for name, t in timeline.items()}
    series["rate_limited"] = rate_limited
    for name, counts in series.items():
        points = " ".join(
            f"{x0 + (i + 0.5) * step:.1f},{y0 - c / peak * h:.1f}" for i, c in enumerate(counts)
        )
        colour = PROVIDER_COLOURS.get(name, "#555")
        dash = ' stroke-dasharray="4 3"' if name == "rate_limited" else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}"/>'
        )
    for i, name in enumerate(series):
        label = "429s" if name == "rate_limited" else f"calls to {name}"
        colour = PROVIDER_COLOURS.get(name, "#555")
        parts.append(
            f'<rect x="{x0 + w - 130}" y="{y0 - h + 8 + i * 16}" width="12" height="4" '
            f'fill="{colour}"/>'
        )
        parts.append(_text(x0 + w - 112, y0 - h + 14 + i * 16, label, anchor="start"))
    parts.append(_text(x0 + w / 2, 12, title))
    parts.append("</svg>")
    return "".join(parts)


def _calls_charts(report: dict[str, Any]) -> str:
    runs = {"plain LangChain": report["plain"], "langscale": report["langscale"]}
    timelines = [t for r in runs.values() for t in r["timeline"].values()]
    seconds = max((len(t) for t in timelines), default=0)
    peak = max((row[0] for t in timelines for row in t), default=1)
    window = report["settings"]["primary"].get("outage_seconds")
    outage = (float(window[0]), float(window[1])) if window else None
    return "\n".join(calls_chart(r, name, seconds, peak, outage) for name, r in runs.items())


def html_report(report: dict[str, Any]) -> str:
    from langscale.demo import scorecard

    card = html.escape(scorecard(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>langscale demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:720px;margin:2em auto;color:#222}}
pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head>
<body><h1>langscale demo</h1>
<p>The same agent workload against two simulated providers, through plain LangChain and
through langscale.</p>
<pre>{card}</pre>
<h2>Latency distribution</h2>
{latency_chart(report)}
<h2>Provider calls over time</h2>
{_calls_charts(report)}
</body></html>
"""
