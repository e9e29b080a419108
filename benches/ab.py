"""Before and after a change, in one run: one bench module run alternately by two installs
of langscale (two virtualenvs' Python), rounds interleaved so load elsewhere hits both alike.

    python benches/ab.py --before /tmp/venv-old/bin/python --after .venv/bin/python scaled

Prints, per row, the median langscale figure of each side and after / before. Both installs
need the bench's own dependencies; the bench code is this checkout's for both sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCHES = Path(__file__).resolve().parent

_ONE_RUN = """
import json, sys
from dataclasses import asdict
sys.path.insert(0, {benches!r})
import importlib, _common
module = importlib.import_module("bench_" + {module!r})
rows = [row for case in module.cases(_common.Settings(quick={quick!r})) for row in case.run()]
print(json.dumps([asdict(r) for r in rows]))
"""


def run_once(python: str, module: str, quick: bool) -> dict[tuple[str, str], tuple[float, str]]:
    code = _ONE_RUN.format(benches=str(BENCHES), module=module, quick=quick)
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    return {(r["group"], r["name"]): (r["langscale"], r["unit"]) for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a bench module without its prefix: scaled, limiter, ...")
    parser.add_argument("--before", required=True, help="the Python of the install before")
    parser.add_argument("--after", default=sys.executable, help="the Python of the install after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sides = {"before": args.before, "after": args.after}
    seen: dict[str, dict[tuple[str, str], list[float]]] = {s: {} for s in sides}
    units: dict[tuple[str, str], str] = {}
    for _ in range(args.rounds):
        for side, python in sides.items():
            for key, (value, unit) in run_once(python, args.module, args.quick).items():
                seen[side].setdefault(key, []).append(value)
                units[key] = unit
    print("| group | row | before | after | after / before |")
    print("| --- | --- | --- | --- | --- |")
    for key in seen["after"]:
        if key not in seen["before"]:
            continue
        before = statistics.median(seen["before"][key])
        after = statistics.median(seen["after"][key])
        ratio = f"{after / before:.2f}x" if before else "—"
        unit = units[key]
        print(f"| {key[0]} | {key[1]} | {before:.4g} {unit} | {after:.4g} {unit} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
