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
    demo = sub.add_parser(
        "demo", help="run an agent workload twice: plain LangChain vs langscale (simulated)"
    )
    demo.add_argument("--requests", type=_positive_int, default=240, help="user requests")
    demo.add_argument("--concurrency", type=_positive_int, default=16, help="sessions at once")
    demo.add_argument(
        "--seconds", type=_positive_float, default=8.0, help="spread arrivals over this long"
    )
    demo.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    demo.add_argument("--html", metavar="PATH", help="also write a report page with charts")
    simulate = sub.add_parser(
        "sim", help="serve simulated OpenAI-compatible providers until interrupted"
    )
    simulate.add_argument("--config", metavar="FILE", help="TOML file of [[provider]] tables")
    simulate.add_argument("--threads", type=_positive_int, default=2)
    simulate.add_argument(
        "--seconds", type=_positive_float, default=None, help="stop after this long"
    )
    return parser


def _serve_sim(args: argparse.Namespace) -> int:
    import json
    import time

    from langscale import _core, sim

    try:
        server = sim.serve_toml(args.config, args.threads) if args.config else sim.serve()
    except _core.ConfigError as exc:
        print(f"langscale sim: {exc}", file=sys.stderr)
        return 2
    with server:
        for name, url in server.urls.items():
            print(f"{name}: {url}", flush=True)
        try:
            if args.seconds is not None:
                time.sleep(args.seconds)
            else:
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
        print(json.dumps(server.stats(), indent=2), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from langscale import demo

        return demo.main(args)
    if args.command == "sim":
        return _serve_sim(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
