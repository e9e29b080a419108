"""SemanticCache: answer quality on labelled query pairs, and lookup speed.

Quality (``../shared/data/pairs-generated.jsonl``, see its README): for each threshold, the
hit rate on same-intent pairs and the false-hit rate on different-intent pairs, per kind, in
two settings — each pair in a scope of its own (store ``a``, look up ``b``), and one shared
scope holding every ``a`` (a hit is right only when the entry returned answers ``b``:
``a_key == b_key``). Run for the built-in embedder and for LangChain's offline
``DeterministicFakeEmbedding`` (a hash of the text: the floor any real embedder must beat).

Speed (embedding excluded): the Rust example ``semantic_speed`` times lookups in one scope of
1k, 10k and 100k entries of 384 dimensions, inserts, index recall against an exact scan and
memory per entry. Embedding time and the whole Python ``lookup`` are timed here. The graph
settings before issue 17 (8-bit construction walk 400 wide, tombstones and full rebuilds) run
beside the current ones in the same run ("previous settings" rows), and two full turnovers of
each index (every entry evicted as a new one comes in; the old rebuild starts once tombstones
outnumber live entries, so in the second) time each removal. A last run builds one index of
each settings at 100k and times their lookups interleaved, query by query, so that a busy
machine slows both alike: the fair "lookup p50 no worse" comparison.

Run alone for the full threshold sweep: ``python benches/bench_semantic.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Case, Row, Settings, rust_example
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.outputs import Generation

from langscale import SemanticCache
from langscale.semantic import DEFAULT_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "pairs-generated.jsonl"
THRESHOLDS = [round(0.50 + 0.05 * i, 2) for i in range(10)]
# RedisSemanticCache needs Redis Stack (the search module), which Debian's redis-server lacks;
# its per-lookup cost as published in langscale's ARCHITECTURE.md comparison:
REDIS_SEMANTIC_LOOKUP_US = 700.0

Factory = Callable[[float], SemanticCache]


def load_pairs() -> list[dict[str, Any]]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _rates(counts: dict[str, list[int]]) -> dict[str, float]:
    return {kind: hit / total for kind, (hit, total) in counts.items() if total}


def evaluate(pairs: list[dict[str, Any]], make: Factory, threshold: float) -> dict[str, Any]:
    """Hit rates per kind at one threshold, per-pair scopes and one shared scope."""
    value = [Generation(text="cached")]
    own: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cache = make(threshold)
    for i, p in enumerate(pairs):
        llm = f"pair-{i}"
        cache.update(p["a"], llm, value)
        hit = cache.lookup(p["b"], llm) is not None
        own[p["kind"]][0] += hit
        own[p["kind"]][1] += 1

    shared: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong_total = [0, 0]
    cache = make(threshold)
    key_of = {}
    for p in pairs:
        if p["a"] not in key_of:
            key_of[p["a"]] = p["a_key"]
            cache.update(p["a"], "shared", value)
    for p in pairs:
        _, info = cache.lookup_with_info(p["b"], "shared")
        if info["kind"] == "miss":
            answered_by = None
        elif info["kind"] == "exact":
            answered_by = key_of.get(p["b"])
        else:
            answered_by = key_of.get(info["matched"])
        right = answered_by is not None and answered_by == p["b_key"]
        wrong = answered_by is not None and not right
        if p["same"]:
            shared[p["kind"]][0] += right
        else:
            shared[p["kind"]][0] += wrong
        shared[p["kind"]][1] += 1
        wrong_total[0] += wrong
        wrong_total[1] += 1

    negatives = [p for p in pairs if not p["same"]]
    own_false = sum(own[k][0] for k in {p["kind"] for p in negatives})
    return {
        "threshold": threshold,
        "own": _rates(own),
        "shared": _rates(shared),
        "own_false_overall": own_false / len(negatives),
        "shared_false_overall": wrong_total[0] / wrong_total[1],
    }


def builtin(threshold: float) -> SemanticCache:
    return SemanticCache(threshold=threshold, maxsize=10_000)


def fake_embeddings(threshold: float) -> SemanticCache:
    return SemanticCache(
        embeddings=DeterministicFakeEmbedding(size=384), threshold=threshold, maxsize=10_000
    )


def sweep_table(results: list[dict[str, Any]]) -> str:
    kinds = sorted(results[0]["own"], key=lambda k: (k not in ("surface", "paraphrase"), k))
    head = "| t | setting | " + " | ".join(kinds) + " | false overall |"
    lines = [head, "|" + "---|" * (len(kinds) + 3)]
    for r in results:
        for setting in ("own", "shared"):
            cells = [f"{100 * r[setting].get(k, 0):.1f}" for k in kinds]
            overall = 100 * r[f"{setting}_false_overall"]
            lines.append(
                f"| {r['threshold']:.2f} | {setting} | " + " | ".join(cells) + f" | {overall:.2f} |"
            )
    return "\n".join(lines)


def _quality_rows(settings: Settings) -> list[Row]:
    if not DATA.exists():
        return []
    pairs = load_pairs()
    if settings.quick:
        pairs = pairs[::4]
    r = evaluate(pairs, builtin, DEFAULT_THRESHOLD)
    fake = evaluate(pairs, fake_embeddings, 0.99)
    rows = []
    for setting in ("own", "shared"):
        rows += [
            Row(
                "semantic quality",
                f"surface hits ({setting} scope)",
                "%",
                100 * r[setting]["surface"],
                100 * fake[setting]["surface"],
                ">= 95",
                r[setting]["surface"] >= 0.95,
            ),
            Row(
                "semantic quality",
                f"paraphrase hits ({setting} scope)",
                "%",
                100 * r[setting]["paraphrase"],
                100 * fake[setting]["paraphrase"],
            ),
            Row(
                "semantic quality",
                f"false hits overall ({setting} scope)",
                "%",
                100 * r[f"{setting}_false_overall"],
                100 * fake[f"{setting}_false_overall"],
                "<= 1",
                r[f"{setting}_false_overall"] <= 0.01,
            ),
        ]
    for row in rows:
        row.extra["threshold"] = DEFAULT_THRESHOLD
        row.extra["langchain_side"] = "DeterministicFakeEmbedding at 0.99"
    return rows


def _speed_rows(settings: Settings) -> list[Row]:
    rows = []
    results = rust_example(
        "semantic_speed", settings, {"LS_PARAMS": "current,previous", "LS_CHURN": "2"}
    )
    # Lookups of both settings interleaved query by query: the fair "no worse" comparison
    # (the rows above time each settings in its own stretch of a shared machine).
    for r in rust_example(
        "semantic_speed",
        settings,
        {"LS_SIDE_BY_SIDE": "1", "LS_ONLY": str(settings.pick(100_000, 10_000))},
    ):
        n = r["entries"]
        rows.append(
            Row(
                "semantic speed",
                f"lookup p50, {n:,} entries, current vs previous settings interleaved",
                "us",
                r["lookup_p50_us_current"],
                None,
                "<= previous",
                r["lookup_p50_us_current"] <= r["lookup_p50_us_previous"],
                extra=r,
            )
        )
    for r in results:
        if r.get("params") == "previous":
            rows += _previous_rows(r)
            continue
        rows += _insert_rows(r)
        n = r["entries"]
        rows.append(
            Row(
                "semantic speed",
                f"lookup p50, {n:,} entries ({r['index']})",
                "us",
                r["lookup_p50_us"],
                REDIS_SEMANTIC_LOOKUP_US,
                "< 50 and >= 20x faster at 100k" if n == 100_000 else "",
                (r["lookup_p50_us"] < 50 and REDIS_SEMANTIC_LOOKUP_US / r["lookup_p50_us"] >= 20)
                if n == 100_000
                else None,
                extra=r,
            )
        )
        rows.append(
            Row("semantic speed", f"lookup p99, {n:,} entries", "us", r["lookup_p99_us"], None)
        )
        rows.append(
            Row(
                "semantic speed",
                f"index recall@1 vs exact scan, {n:,}",
                "",
                r["recall_at_1"],
                None,
                ">= 0.99",
                r["recall_at_1"] >= 0.99,
            )
        )
        rows.append(
            Row(
                "semantic speed",
                f"index recall@1 within the 0.9 threshold, {n:,}",
                "",
                r["recall_at_1_within_threshold"],
                None,
                ">= 0.99",
                r["recall_at_1_within_threshold"] >= 0.99,
            )
        )
        rows.append(Row("semantic speed", f"insert, {n:,} entries", "us", r["insert_us"], None))
        rows.append(
            Row(
                "semantic speed",
                f"memory per entry, {n:,}",
                "bytes",
                r["memory_per_entry_bytes"],
                None,
            )
        )
    return rows


def _insert_rows(r: dict[str, Any], label: str = "") -> list[Row]:
    """Insert p50/p99 into a full-size index (its last tenth of inserts) and, after the
    turnovers, the removal cost and recall; the p50 target applies at 100k entries."""
    n = r["entries"]
    big = n == 100_000 and not label
    rows = [
        Row(
            "semantic speed",
            f"insert p50, {n:,} entries{label}",
            "us",
            r["insert_p50_us"],
            None,
            "<= 200" if big else "",
            r["insert_p50_us"] <= 200 if big else None,
            extra=r,
        ),
        Row("semantic speed", f"insert p99, {n:,} entries{label}", "us", r["insert_p99_us"], None),
    ]
    if "remove_max_us" in r:
        rows += [
            Row(
                "semantic speed",
                f"remove p50, {n:,} entries{label}",
                "us",
                r["remove_p50_us"],
                None,
            ),
            Row(
                "semantic speed",
                f"remove p99, {n:,} entries{label}",
                "us",
                r["remove_p99_us"],
                None,
            ),
            Row(
                "semantic speed",
                f"worst remove, {n:,} entries{label}",
                "us",
                r["remove_max_us"],
                None,
            ),
            Row(
                "semantic speed",
                f"insert p99 while turning over, {n:,} entries{label}",
                "us",
                r["churn_insert_p99_us"],
                None,
            ),
            Row(
                "semantic speed",
                f"stranded nodes linked back by sweeps, {n:,}{label}",
                "",
                r["reconnected"],
                None,
            ),
            Row(
                "semantic speed",
                f"index recall@1 within 0.9 after turnovers, {n:,}{label}",
                "",
                r["recall_at_1_within_threshold_after_churn"],
                None,
                ">= 0.99",
                r["recall_at_1_within_threshold_after_churn"] >= 0.99,
            ),
        ]
    return rows


def _previous_rows(r: dict[str, Any]) -> list[Row]:
    """The settings before issue 17, for comparison in the same run (no targets)."""
    n = r["entries"]
    label = " (previous settings)"
    return [
        *_insert_rows(r, label),
        Row("semantic speed", f"lookup p50, {n:,} entries{label}", "us", r["lookup_p50_us"], None),
        Row(
            "semantic speed",
            f"index recall@1 within the 0.9 threshold, {n:,}{label}",
            "",
            r["recall_at_1_within_threshold"],
            None,
        ),
        Row(
            "semantic speed",
            f"index recall@1 vs exact scan, {n:,}{label}",
            "",
            r["recall_at_1"],
            None,
        ),
    ]


def _median_us(fn: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(samples)


def _python_rows(settings: Settings) -> list[Row]:
    cache = SemanticCache(maxsize=10_000)
    value = [Generation(text="cached answer")]
    for i in range(1000):
        cache.update(f"What is the status of order number {i}?", "m", value)
    n = settings.pick(5000, 1000)
    embed = _median_us(lambda: cache._core.embed("How do I reset the password of my account?"), n)
    miss = _median_us(lambda: cache.lookup("How do I reset the password of my account?", "m"), n)
    hit = _median_us(lambda: cache.lookup("what is the status of order number 7", "m"), n)
    return [
        Row("semantic speed", "built-in embedding of one question", "us", embed, None),
        Row(
            "semantic speed",
            "Python lookup, semantic hit, 1k entries (embedding included)",
            "us",
            hit,
            None,
        ),
        Row(
            "semantic speed",
            "Python lookup, miss, 1k entries (embedding included)",
            "us",
            miss,
            None,
        ),
    ]


NEAR_MISS_SETS = ["guard-order.jsonl", "guard-long.jsonl", "guard-person.jsonl"]
NEAR_MISS_DIR = ROOT / "tests" / "data"


def load_set(name: str) -> list[dict[str, Any]]:
    with (NEAR_MISS_DIR / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def near_miss_rows(group: str, make: Callable[..., Factory], threshold: float) -> list[Row]:
    """Per family of the labelled near-miss sets (tests/data, see make_guard_sets.py): false
    hits (or, for harmless variants, hits), each pair in its own scope and all in one shared
    scope; beside it the same cache with the guard off (similarity alone, what a plain
    semantic cache does at the same threshold). ``make(pairs, guard)`` gives the factory."""
    rows = []
    for name in NEAR_MISS_SETS:
        pairs = load_set(name)
        ours = evaluate(pairs, make(pairs, True), threshold)
        plain = evaluate(pairs, make(pairs, False), threshold)
        same = {p["kind"]: p["same"] for p in pairs}
        for kind in sorted(same):
            for setting in ("own", "shared"):
                value = 100 * ours[setting][kind]
                met = None
                target = ""
                if setting == "own":
                    target = ">= 90" if same[kind] else "<= 1"
                    met = value >= 90 if same[kind] else value <= 1
                rows.append(
                    Row(
                        group,
                        f"{kind} {'hits' if same[kind] else 'false hits'} ({setting} scope)",
                        "%",
                        value,
                        100 * plain[setting][kind],
                        target,
                        met,
                        extra={"threshold": threshold, "langchain_side": "same cache, guard off"},
                    )
                )
    return rows


def builtin_with(_pairs: list[dict[str, Any]], guard: bool) -> Factory:
    return lambda t: SemanticCache(threshold=t, maxsize=10_000, guard=guard)


def cases(settings: Settings) -> list[Case]:
    return [
        Case("semantic quality", lambda: _quality_rows(settings)),
        Case(
            "guard near misses",
            lambda: near_miss_rows(
                "guard near misses (built-in | guard off)", builtin_with, DEFAULT_THRESHOLD
            ),
        ),
        Case("semantic speed (rust)", lambda: _speed_rows(settings)),
        Case("semantic speed (python)", lambda: _python_rows(settings)),
    ]


def main() -> int:
    if not DATA.exists():
        print(f"no data set at {DATA}")
        return 1
    pairs = load_pairs()
    for name, make in (
        ("built-in embedder", builtin),
        ("DeterministicFakeEmbedding", fake_embeddings),
    ):
        results = [evaluate(pairs, make, t) for t in THRESHOLDS]
        print(f"\n## {name}: hit % per same-intent kind, false-hit % per different kind\n")
        print(sweep_table(results))
    print(f"\ndefault threshold of the built-in embedder: {DEFAULT_THRESHOLD:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
