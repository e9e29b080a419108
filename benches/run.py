"""Run the benchmarks (``make bench``): langscale beside LangChain, in the same process and run.

Prints a table (Markdown), writes ``bench-results/results.json`` and renders it into
``docs/benchmarks/results.md`` (``report.py``; generated, not edited by hand).
``--quick`` is a smoke run with short durations; ``--only limiter|cache|semantic`` runs one module.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import bench_budgets
import bench_cache
import bench_embed_cache
import bench_embeddings
import bench_graph_cache
import bench_limiter
import bench_redis
import bench_scaled
import bench_semantic
import bench_tokens
import report
from _common import Case, Row, Settings

from langscale import _core
from langscale._progress import Progress

MODULES: dict[str, ModuleType] = {
    "limiter": bench_limiter,
    "cache": bench_cache,
    "semantic": bench_semantic,
    "scaled": bench_scaled,
    "redis": bench_redis,
    "embeddings": bench_embeddings,
    "embed_cache": bench_embed_cache,
    "graph_cache": bench_graph_cache,
    "budgets": bench_budgets,
    "tokens": bench_tokens,
}
RESULTS = Path(__file__).resolve().parent.parent / "bench-results" / "results.json"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = Settings(quick=args.quick)
    load = os.getloadavg()  # recorded with the figures: other work on the machine skews them
    names = [args.only] if args.only else list(MODULES)
    rows: list[Row] = []
    for name in names:
        rows += _run_cases(name, MODULES[name].cases(settings))
    print(render(rows))
    _write(rows, settings, names, load)
    print(f"\nwrote {RESULTS}")
    report.main([str(RESULTS)])
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short durations, a smoke run")
    parser.add_argument("--only", choices=sorted(MODULES), help="run one benchmark module")
    return parser.parse_args(argv)


def _run_cases(name: str, cases: list[Case]) -> list[Row]:
    rows: list[Row] = []
    with Progress(f"bench {name}", len(cases)) as bar:
        for case in cases:
            bar.label = f"{name}: {case.label}"  # shown on the next redraw
            rows += case.run()
            bar.advance()
        bar.label = f"bench {name}"
    return rows


# --- the table -------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    """A Markdown table: one section line per group, then its rows."""
    lines = [
        "| Benchmark | langscale | LangChain | langscale ÷ LangChain | Target |",
        "|---|--:|--:|--:|---|",
    ]
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            lines.append(f"| **{group}** | | | | |")
        lines.append(
            f"| {row.name} | {_value(row, row.langscale, 'langscale')} "
            f"| {_value(row, row.langchain, 'langchain')} | {_ratio(row)} | {_target(row)} |"
        )
    return "\n".join(lines)


def _value(row: Row, value: float | None, side: str) -> str:
    if value is None:
        return "—"
    if row.unit == "req/s":
        return f"{value:,.1f} req/s ({row.extra[f'{side}_percent']:.1f}%)"
    if row.unit == "B/entry":
        return f"{value:,.0f} B"
    if row.unit == "µs/invoke":
        return f"{value:,.1f} µs"
    if row.unit.startswith("ns/"):
        return f"{value:,.0f} ns"
    return f"{value:,.4g} {row.unit}".rstrip()


def _ratio(row: Row) -> str:
    ratio = row.ratio
    return "—" if ratio is None else f"{ratio:.2f}x"


def _target(row: Row) -> str:
    if row.met is None:
        return row.target
    return f"{row.target}: {'met' if row.met else '**not met**'}"


# --- results.json ----------------------------------------------------------------------


def _write(
    rows: list[Row], settings: Settings, names: list[str], load: tuple[float, float, float]
) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": settings.quick,
        "modules": names,
        "machine": {**_machine(), "load_average": [round(x, 2) for x in load]},
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
    }
    RESULTS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "langscale": version("langscale"),
        "langchain_core": version("langchain-core"),
        # An editable debug build elsewhere in the tree would show here, and is ~5x slower.
        "langscale_extension": _core.__file__,
    }


if __name__ == "__main__":
    sys.exit(main())
