"""Near-duplicate coalescing through ScaledChatModel with a langscale SemanticCache: a request
that misses while one the cache would answer it with (same scope, similar last turn, the guard
agreeing) is in flight waits for that call. Questions come from the labelled set in
``shared/data`` (its README). The core's in-flight index is unit-tested in Rust
(cache/near_flights.rs)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps
from langchain_core.messages import HumanMessage

import langscale
from tests.counting import CountingModel

N = 50
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pairs-generated.jsonl"

# Near-topic probes: similar above the threshold, refused by the guard (each asserted below),
# with the built-in embedder (None) or MiniLM (a hybrid cache: it catches rewordings too).
REFUSED = [
    (None, "What is the capital of France?", "What is the population of France?"),
    (None, "turn on dark mode", "turn off dark mode"),
    ("minilm", "What is the capital of France?", "What is the population of France?"),
    ("minilm", "enable dark mode", "turn off dark mode"),
    ("minilm", "Convert 10 km to miles", "Convert 12 km to miles"),
]


def labelled() -> list[dict[str, Any]]:
    if not SHARED.exists():
        pytest.skip(f"labelled set not found at {SHARED}")
    with SHARED.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def scaled(
    inner: CountingModel, embeddings: str | None = None, **kw: Any
) -> langscale.ScaledChatModel:
    cache = langscale.SemanticCache(embeddings)
    return langscale.ScaledChatModel([inner], cache=cache, **kw)


def begun(model: langscale.ScaledChatModel) -> int:
    s = model._private()["_flights"].stats()
    return int(s["led"] + s["followed"])


def wait_until(cond: Any) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < deadline, "callers never got in flight"
        time.sleep(0.002)


async def await_until(cond: Any) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < deadline, "callers never got in flight"
        await asyncio.sleep(0)


def hits(stored: str, asked: str, embeddings: str | None) -> bool:
    """Whether the cache itself answers ``asked`` with an entry stored for ``stored``."""
    inner = CountingModel()
    inner.gate.set()
    model = scaled(inner, embeddings)
    model.invoke(stored)
    model.invoke(asked)
    return inner.calls == 1


def retypes(embeddings: str | None = None) -> tuple[str, list[str]]:
    """A labelled question and the retypes/paraphrases of it the cache answers with it (at
    least three, so a burst mixes several texts)."""
    rows = labelled()
    leader, key = "What is the capital of France?", "3:France"
    texts = {
        t
        for r in rows
        if r["same"] and r["a_key"] == key and r["kind"] in ("surface", "paraphrase")
        for t in (r["a"], r["b"])
    } - {leader}
    near = sorted(t for t in texts if hits(leader, t, embeddings))
    assert len(near) >= 3, near
    return leader, near


def test_50_threads_asking_retypes_of_one_question_make_one_call() -> None:
    leader, near = retypes()
    inner = CountingModel()
    model = scaled(inner)
    with ThreadPoolExecutor(N) as pool:
        first = pool.submit(model.invoke, leader)
        wait_until(lambda: begun(model) == 1)
        rest = [pool.submit(model.invoke, near[i % len(near)]) for i in range(N - 1)]
        wait_until(lambda: begun(model) == N)
        inner.gate.set()
        replies = [first.result(30)] + [r.result(30) for r in rest]
    assert inner.calls == 1
    assert {r.content for r in replies} == {f"answer to {leader}"}
    assert len({id(r) for r in replies}) == N, "each caller gets its own copy"
    stats = model._private()["_flights"].stats()
    assert (stats["led"], stats["followed"], stats["in_flight"]) == (1, N - 1, 0)
    assert stats["similar"] == N - 1


@pytest.mark.parametrize("embeddings", [None, "minilm"])
def test_50_coroutines_asking_retypes_of_one_question_make_one_call(
    embeddings: str | None,
) -> None:
    leader, near = retypes(embeddings)
    if embeddings == "minilm":
        # The sentence model answers rewordings, not only retypes.
        assert "Which city is the capital of France?" in near
    inner = CountingModel()
    model = scaled(inner, embeddings)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(model.ainvoke(leader))
        await await_until(lambda: begun(model) == 1)
        rest = [asyncio.ensure_future(model.ainvoke(near[i % len(near)])) for i in range(N - 1)]
        await await_until(lambda: begun(model) == N)
        inner.gate.set()
        return await asyncio.gather(first, *rest)

    replies = asyncio.run(main())
    assert inner.calls == 1
    assert {r.content for r in replies} == {f"answer to {leader}"}
    assert model._private()["_flights"].stats()["in_flight"] == 0


@pytest.mark.parametrize(("embeddings", "first", "second"), REFUSED)
def test_probes_the_guard_refuses_make_their_own_calls(
    embeddings: str | None, first: str, second: str
) -> None:
    cache = langscale.SemanticCache(embeddings)
    inner = CountingModel()
    inner.gate.set()
    langscale.ScaledChatModel([inner], cache=cache).invoke(first)
    # The pair is a near miss: similar enough, refused by the guard (not merely unrelated).
    llm_string = langscale.ScaledChatModel([inner])._get_llm_string()
    _, info = cache.lookup_with_info(dumps([HumanMessage(second)]), llm_string)
    assert info["kind"] == "miss" and info["rejected_by"] is not None, info

    inner = CountingModel()
    model = scaled(inner, embeddings)
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(model.invoke, (first, second)[i % 2]) for i in range(20)]
        wait_until(lambda: begun(model) == 20)
        inner.gate.set()
        replies = [f.result(30) for f in futures]
    assert inner.calls == 2
    for i, reply in enumerate(replies):
        assert reply.content == f"answer to {(first, second)[i % 2]}"


def test_a_failing_leader_fails_its_near_duplicates_and_nothing_is_cached() -> None:
    leader, near = retypes()
    inner = CountingModel(fail=True)
    model = scaled(inner, max_attempts=1)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(model.ainvoke(leader))
        await await_until(lambda: begun(model) == 1)
        rest = [asyncio.ensure_future(model.ainvoke(near[i % len(near)])) for i in range(19)]
        await await_until(lambda: begun(model) == 20)
        inner.gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert inner.calls == 1
    assert all(isinstance(r, Exception) and "call 1" in str(r) for r in results), results
    assert model._private()["_flights"].stats()["in_flight"] == 0
    # Not cached: a near-duplicate now looks the cache up, misses and calls again.
    inner.fail = False
    assert model.invoke(near[0]).content == f"answer to {near[0]}"
    assert inner.calls == 2


def test_a_landed_leader_leaves_later_near_duplicates_to_the_cache() -> None:
    leader, near = retypes()
    inner = CountingModel()
    inner.gate.set()
    model = scaled(inner)
    model.invoke(leader)
    assert model._private()["_flights"].stats()["in_flight"] == 0
    assert model.invoke(near[0]).content == f"answer to {leader}"
    assert inner.calls == 1
    assert model.cache.stats()["semantic_hits"] == 1


def test_different_tenants_never_share_a_call() -> None:
    leader, near = retypes()
    inner = CountingModel()
    model = scaled(inner)

    def ask(i: int) -> str:
        config = {"configurable": {"tenant": ("acme", "globex")[i % 2]}}
        return str(model.invoke((leader, near[0])[i // 2 % 2], config=config).content)

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(ask, i) for i in range(20)]
        wait_until(lambda: begun(model) == 20)
        inner.gate.set()
        answers = [f.result(30) for f in futures]
    assert inner.calls == 2
    assert len(set(answers[0::2])) == 1 and len(set(answers[1::2])) == 1


def test_a_cache_shared_by_tenants_still_coalesces_within_one() -> None:
    inner = CountingModel()
    model = langscale.ScaledChatModel([inner], cache=langscale.SemanticCache(share_tenants=True))
    leader, near = retypes()

    def ask(i: int) -> str:
        config = {"configurable": {"tenant": ("acme", "globex")[i % 2]}}
        return str(model.invoke((leader, near[0])[i // 2 % 2], config=config).content)

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(ask, i) for i in range(10)]
        wait_until(lambda: begun(model) == 10)
        inner.gate.set()
        [f.result(30) for f in futures]
    assert inner.calls == 2


def pool_of_questions() -> list[str]:
    """Retypes of two questions and near-topic probes the guard refuses."""
    rows = labelled()
    pool: set[str] = set()
    for key in ("3:France", "0:Mumbai"):
        pool.update(
            t
            for r in rows
            if r["a_key"] == key and r["same"] and r["kind"] == "surface"
            for t in (r["a"], r["b"])
        )
    for embeddings, a, b in REFUSED:
        if embeddings is None:
            pool.update((a, b))
    return sorted(pool)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_calls_equal_the_misses_the_cache_itself_would_have(data: st.DataObject) -> None:
    """In flight at once, in any order: as many calls as the same requests make one after
    another through the cache (each miss a call, each hit none), and each caller the answer
    the cache would have given it."""
    questions = data.draw(st.lists(st.sampled_from(pool_of_questions()), min_size=1, max_size=16))
    sequential = CountingModel()
    sequential.gate.set()
    seq_model = scaled(sequential)
    expected = [seq_model.invoke(q).content for q in questions]

    inner = CountingModel()
    model = scaled(inner)

    async def main() -> list[Any]:
        tasks = []
        for i, q in enumerate(questions):
            tasks.append(asyncio.ensure_future(model.ainvoke(q)))
            await await_until(lambda i=i: begun(model) == i + 1)
        inner.gate.set()
        return await asyncio.gather(*tasks)

    replies = asyncio.run(main())
    assert inner.calls == sequential.calls
    assert [r.content for r in replies] == expected


class LetterCounts(Embeddings):
    """A LangChain Embeddings (called from Python): letter counts, blind to case and
    punctuation, so retypes embed alike. Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def embed_query(self, text: str) -> list[float]:
        with self.lock:
            self.calls += 1
        letters = [c for c in text.lower() if c.isalpha()]
        return [float(letters.count(chr(ord("a") + i))) + 0.01 for i in range(26)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


@pytest.mark.parametrize("use_async", [False, True])
def test_a_langchain_embeddings_cache_coalesces_retypes(use_async: bool) -> None:
    near = [
        "what is the capital of france",
        "What is the capital of France",
        "WHAT IS THE CAPITAL OF FRANCE?",
    ]
    embeddings = LetterCounts()
    inner = CountingModel()
    cache = langscale.SemanticCache(embeddings, threshold=0.99)
    model = langscale.ScaledChatModel([inner], cache=cache)
    leader = "What is the capital of France?"

    async def main() -> list[Any]:
        first = asyncio.ensure_future(model.ainvoke(leader))
        await await_until(lambda: begun(model) == 1)
        rest = [asyncio.ensure_future(model.ainvoke(near[i % 3])) for i in range(11)]
        await await_until(lambda: begun(model) == 12)
        inner.gate.set()
        return await asyncio.gather(first, *rest)

    if use_async:
        replies = asyncio.run(main())
    else:
        with ThreadPoolExecutor(12) as pool:
            first = pool.submit(model.invoke, leader)
            wait_until(lambda: begun(model) == 1)
            rest = [pool.submit(model.invoke, near[i % 3]) for i in range(11)]
            wait_until(lambda: begun(model) == 12)
            inner.gate.set()
            replies = [first.result(30)] + [r.result(30) for r in rest]
    assert inner.calls == 1
    assert {r.content for r in replies} == {f"answer to {leader}"}
    assert model._private()["_flights"].stats()["similar"] == 11
    # At most one embedding per request: the leader's lookup and update reuse the one the
    # coalescing asked for (followers never look up).
    assert 4 <= embeddings.calls <= 12


def test_a_cancelled_leader_lets_its_near_duplicates_call() -> None:
    leader, near = retypes()
    inner = CountingModel()
    model = scaled(inner)

    async def main() -> Any:
        first = asyncio.ensure_future(model.ainvoke(leader))
        await await_until(lambda: begun(model) == 1)
        follower = asyncio.ensure_future(model.ainvoke(near[0]))
        await await_until(lambda: begun(model) == 2)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await await_until(lambda: model._private()["_flights"].stats()["led"] == 1)
        inner.gate.set()
        return await follower

    reply = asyncio.run(main())
    assert reply.content == f"answer to {near[0]}"
    assert inner.calls == 1


class SlowLookup(langscale.SemanticCache):
    """A SemanticCache whose lookups of one text wait for a gate."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow, self.gate = slow, threading.Event()

    def lookup(self, prompt: str, llm_string: str) -> Any:
        if self.slow in prompt:
            assert self.gate.wait(30), "the gate never opened"
        return super().lookup(prompt, llm_string)

    async def alookup(self, prompt: str, llm_string: str) -> Any:
        while self.slow in prompt and not self.gate.is_set():
            await asyncio.sleep(0.002)
        return await super().alookup(prompt, llm_string)


def test_near_duplicates_of_a_leader_the_cache_answered_look_it_up_themselves() -> None:
    """A leader answered from the cache does not pass that answer on: its followers look the
    cache up themselves (microseconds), so a near-duplicate gets what the cache itself
    answers it, not what it answered a similar question."""
    leader, near = retypes()
    cache = SlowLookup(near[0])
    inner = CountingModel()
    inner.gate.set()
    model = langscale.ScaledChatModel([inner], cache=cache)
    model.invoke(leader)  # stored
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(model.invoke, near[0])
        wait_until(lambda: begun(model) == 2)
        rest = [pool.submit(model.invoke, q) for q in (near[0], near[1])]
        wait_until(lambda: begun(model) == 4)
        cache.gate.set()
        replies = [first.result(30)] + [r.result(30) for r in rest]
    assert inner.calls == 1
    assert {r.content for r in replies} == {f"answer to {leader}"}
    stats = model._private()["_flights"].stats()
    assert (stats["led"], stats["followed"], stats["similar"]) == (2, 2, 1)
    # The leader's lookup, then each follower's own.
    assert cache.stats()["hits"] == 3

    async def burst() -> list[Any]:
        cache.gate.clear()
        first = asyncio.ensure_future(model.ainvoke(near[0]))
        await await_until(lambda: begun(model) == 5)
        rest = [asyncio.ensure_future(model.ainvoke(q)) for q in (near[0], near[1])]
        await await_until(lambda: begun(model) == 7)
        cache.gate.set()
        return await asyncio.gather(first, *rest)

    assert {r.content for r in asyncio.run(burst())} == {f"answer to {leader}"}
    assert inner.calls == 1
    assert cache.stats()["hits"] == 6, "coroutines look it up themselves too"
