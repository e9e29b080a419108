"""Answer safety on labelled near misses (tests/data, see make_guard_sets.py) and on
``shared/data``: false hits per family with the built-in embedder and with MiniLM, through the
public ``SemanticCache`` API (store ``a``, look up ``b``, each pair in its own scope and all in
one shared scope). Figures beside these targets are in ``make bench`` (bench_semantic.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from langscale import LocalEmbeddings, SemanticCache
from langscale.semantic import DEFAULT_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared" / "data" / "pairs-generated.jsonl"
SETS = [
    "guard-order.jsonl",
    "guard-long.jsonl",
    "guard-person.jsonl",
    "guard-near-topic.jsonl",
    "guard-actions.jsonl",
]

sys.path.insert(0, str(ROOT / "benches"))
import bench_embeddings  # noqa: E402
import bench_semantic  # noqa: E402  (the one evaluation harness, shared with make bench)

pytestmark = pytest.mark.slow  # labelled sets through both embedders, MiniLM included


def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def builtin(threshold: float) -> SemanticCache:
    return SemanticCache(threshold=threshold, maxsize=10_000)


# The factories of make bench: built-in, and MiniLM's vectors computed once per set (a debug
# build embeds a short text in ~50 ms one by one, far less in a batch) and replayed.
EMBEDDERS: dict[str, tuple[Callable[..., Any], Callable[[], float]]] = {
    "built-in": (bench_semantic.builtin_with, lambda: DEFAULT_THRESHOLD),
    "minilm": (bench_embeddings._minilm_with, LocalEmbeddings.default_threshold),
}


def test_sets_are_large_enough_and_labelled_both_ways():
    order = load(DATA / "guard-order.jsonl")
    assert len(order) >= 200
    assert {p["same"] for p in order} == {True, False}
    for name in SETS:
        for p in load(DATA / name):
            assert p["a"] != p["b"]
            assert (p["a_key"] == p["b_key"]) == p["same"], p


@pytest.mark.parametrize("embedder", sorted(EMBEDDERS))
@pytest.mark.parametrize("name", SETS)
def test_near_misses_get_no_false_hits(name: str, embedder: str):
    pairs = load(DATA / name)
    if embedder == "minilm" and name == "guard-long.jsonl":
        # Long texts are slow to embed (0.1-0.6 s each on two shared cores): every third
        # meaning-changing pair and every tenth harmless one here, all of them in make bench.
        # The long-text check itself does not depend on the embedder.
        pairs = [
            p for i, p in enumerate(pairs) if i % (10 if p["kind"] == "long-harmless" else 3) == 0
        ]
    factory, threshold = EMBEDDERS[embedder]
    r = bench_semantic.evaluate(pairs, factory(pairs, True), threshold())
    kinds = {p["kind"]: p["same"] for p in pairs}
    for kind, same in kinds.items():
        if not same:
            # Each pair in its own scope: at most 1% false hits per family.
            assert r["own"][kind] <= 0.01, (kind, r["own"][kind])
    # Harmless variants still hit (a long text: whitespace, formatting, courtesy; a
    # reordering that keeps the meaning).
    for kind, same in kinds.items():
        if same and kind != "person-same":
            assert r["own"][kind] >= 0.9, (kind, r["own"][kind])


@pytest.mark.skipif(not SHARED.exists(), reason="shared/data is not beside the checkout")
def test_the_guard_refuses_no_same_intent_pair_of_the_shared_set():
    """The new checks cost shared/data nothing, whatever the embedder: with a threshold low
    enough that similarity decides nothing, no same-intent pair is refused by the guard."""
    cache = SemanticCache(threshold=0.05, maxsize=10_000)
    value = bench_semantic.Generation(text="cached")
    refused = []
    for i, p in enumerate(load(SHARED)):
        if not p["same"]:
            continue
        cache.update(p["a"], f"p{i}", [value])
        _, info = cache.lookup_with_info(p["b"], f"p{i}")
        if info["rejected_by"] is not None:
            refused.append((p["a"], p["b"], info["rejected_by"]))
    assert refused == []


@pytest.mark.skipif(not SHARED.exists(), reason="shared/data is not beside the checkout")
def test_shared_set_hit_rates_hold_with_the_builtin_embedder():
    r = bench_semantic.evaluate(load(SHARED), builtin, DEFAULT_THRESHOLD)
    # Before the order/person/long checks: surface 99.75%, paraphrase 76.0%, 0 false hits.
    assert r["own"]["surface"] >= 0.9875
    assert r["own"]["paraphrase"] >= 0.75
    assert r["own_false_overall"] == 0
    assert r["shared_false_overall"] == 0
