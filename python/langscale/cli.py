"""The ``langscale`` command."""

from __future__ import annotations

import argparse
import sys

from langscale import __version__


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        msg = f"must be a positive integer, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = f"must be a positive number, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langscale", description=__doc__)
    parser.add_argument("--version", action="version", version=f"langscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the built-in workload: plain LangChain vs langscale")
    demo.add_argument("--requests", type=_positive_int, default=200)
    demo.add_argument("--concurrency", type=_positive_int, default=16)
    demo.add_argument("--rate", type=_positive_float, default=40.0, help="provider req/s")
    demo.add_argument("--latency-ms", type=_positive_float, default=20.0)
    demo.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from langscale import demo

        return demo.main(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
