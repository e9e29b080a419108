"""The load benchmark's machinery, run tiny: open-loop driving, percentiles, the report."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench_load.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)
    return module


def test_percentiles_by_nearest_rank():
    bench = load()
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 0.5) in (50.0, 51.0)
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile([3.0], 0.99) == 3.0


async def test_drive_offers_the_load_and_caps_concurrency():
    bench = load()
    in_flight = 0
    peak = 0

    async def call() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    result = await bench.drive(call, rate=400, concurrency=3, seconds=0.1)
    assert result["requests"] == 40
    assert result["ok"] == 40 and result["errors"] == 0 and result["dropped"] == 0
    assert peak <= 3
    assert 0 < result["p50_ms"] <= result["p99_ms"]


async def test_drive_drops_what_never_answers():
    bench = load()

    async def hang() -> None:
        await asyncio.sleep(30)

    result = await bench.drive(hang, rate=100, concurrency=8, seconds=0.05, drain=0.2)
    assert result["ok"] == 0 and result["dropped"] == result["requests"] == 5


def test_main_runs_tiny_against_the_simulator(tmp_path, capsys):
    bench = load()
    out = tmp_path / "load.json"
    argv = ["--rates", "200", "--concurrency", "8", "--seconds", "0.2", "--json", str(out)]
    runs = bench.main([*argv, "--paths", "direct", "native"])
    assert [r.path for r in runs] == ["direct", "native router", "native"]
    for r in runs:
        assert r.ok == r.requests == 40, r
        assert r.achieved > 0 and r.p50_ms <= r.p99_ms
    assert runs[0].added_p99_ms is None
    assert all(r.added_p99_ms is not None for r in runs[1:])
    saved = json.loads(out.read_text())
    assert len(saved["runs"]) == 3 and saved["cores"] >= 1
    assert "| 200 | 8 | native |" in capsys.readouterr().out
