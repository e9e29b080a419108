"""``langscale.ExactCache`` beside LangChain's ``InMemoryCache``.

On ~2 KB tool-calling chat prompts, as LangChain serialises them: ns per lookup hit, lookup
miss and update; µs per ``model.invoke`` answered from the cache; ns to normalise one prompt
into a key; and memory per entry for 100k entries, each cache measured in a fresh process.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import Case, Row, Settings, compare, time_calls, time_items
from langchain_core.caches import BaseCache, InMemoryCache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult

import langscale
from langscale import _core

PROMPT_BYTES = 2_048
# Prompts differ from one another only here, inside the human turn's text.
VARIANT_MARK = "#VARIANT#"
INVOKE_TARGET = 1.05
KEY_TARGET_NS = 5_000


def cases(settings: Settings) -> list[Case]:
    return [
        Case("lookup hit", lambda: _lookup_hit(settings)),
        Case("lookup miss", lambda: _lookup_miss(settings)),
        Case("update", lambda: _update(settings)),
        Case("invoke on a hit", lambda: _invoke_hit(settings)),
        Case("key normalisation", lambda: _key_normalisation(settings)),
        Case("memory per entry", lambda: _memory(settings)),
        Case("100 identical requests at once", lambda: _coalescing(settings)),
        Case("100 near-duplicate requests at once", lambda: _near_coalescing(settings)),
    ]


# --- realistic data --------------------------------------------------------------------


class ToolCallingChatModel(BaseChatModel):
    """A chat model that answers every prompt with the same tool-calling message.

    Its parameters make ``_get_llm_string`` look like a hosted model's.
    """

    model_name: str = "gpt-4o-mini-2024-07-18"
    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float = 1.0

    @property
    def _llm_type(self) -> str:
        return "openai-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
        }

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(generations=[answer()])


def conversation(variant: str = VARIANT_MARK) -> list[BaseMessage]:
    """System prompt, a user turn, a tool call and its result, a follow-up: ~2 KB serialised."""
    system = (
        "You are the order-support assistant for an online hardware shop. Answer briefly, "
        "cite order numbers exactly, never invent tracking data, and call a tool whenever "
        "the answer depends on live data. Tools: lookup_order(order_id), "
        "track_shipment(carrier, tracking_number), open_ticket(order_id, reason). "
    )
    messages: list[BaseMessage] = [
        SystemMessage(content=system),
        HumanMessage(content=f"Where is my order A-1042? Ref {variant}.", id="msg-human-1"),
        AIMessage(
            content="",
            tool_calls=[
                {
                    "name": "lookup_order",
                    "args": {"order_id": "A-1042"},
                    "id": "call_Xb3kQ9mZpL2vR7tY",
                    "type": "tool_call",
                }
            ],
            response_metadata={
                "model_name": "gpt-4o-mini-2024-07-18",
                "finish_reason": "tool_calls",
                "system_fingerprint": "fp_0ba0d124f1",
            },
            usage_metadata={"input_tokens": 412, "output_tokens": 18, "total_tokens": 430},
            id="run-6f1c2a9e-8d0b-4b7e-9a51-3c2f7d8e1a04-0",
        ),
        ToolMessage(
            content=json.dumps(
                {
                    "order_id": "A-1042",
                    "status": "shipped",
                    "carrier": "DHL",
                    "tracking_number": "JD014600003828410",
                    "items": [{"sku": "KB-87-TKL", "qty": 1}, {"sku": "MS-PRO-2", "qty": 2}],
                }
            ),
            tool_call_id="call_Xb3kQ9mZpL2vR7tY",
            name="lookup_order",
        ),
        HumanMessage(content="And when will it arrive? "),
    ]
    return _pad(messages)


def _pad(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Lengthen the system prompt until the serialised conversation is ~PROMPT_BYTES."""
    filler = "Keep the tone friendly and concise. "
    short = len(dumps(_without_ids(messages)))
    system = messages[0]
    repeats = max(0, (PROMPT_BYTES - short) // len(filler))
    messages[0] = SystemMessage(content=str(system.content) + filler * repeats)
    return messages


def _without_ids(messages: list[BaseMessage]) -> list[BaseMessage]:
    """What LangChain serialises as the cache prompt: the messages with their ids dropped."""
    return [m.model_copy(update={"id": None}) for m in messages]


def answer() -> ChatGeneration:
    """The cached value: one generation whose message calls two tools and reports usage."""
    message = AIMessage(
        content="",
        tool_calls=[
            {
                "name": "track_shipment",
                "args": {"carrier": "DHL", "tracking_number": "JD014600003828410"},
                "id": "call_R2d7Wq0nHs5cVb1e",
                "type": "tool_call",
            },
            {
                "name": "open_ticket",
                "args": {"order_id": "A-1042", "reason": "delivery estimate requested"},
                "id": "call_M9aTz4Ky8pLf3xQu",
                "type": "tool_call",
            },
        ],
        response_metadata={
            "model_name": "gpt-4o-mini-2024-07-18",
            "finish_reason": "tool_calls",
            "system_fingerprint": "fp_0ba0d124f1",
        },
        usage_metadata={
            "input_tokens": 486,
            "output_tokens": 61,
            "total_tokens": 547,
            "input_token_details": {"cache_read": 384},
            "output_token_details": {"reasoning": 0},
        },
        id="run-0a7d3f52-1c9e-4e38-b6f0-92d4c1e7b3a8-0",
    )
    return ChatGeneration(message=message, generation_info={"finish_reason": "tool_calls"})


def llm_string() -> str:
    return ToolCallingChatModel()._get_llm_string()


def prompt_template() -> str:
    """The serialised conversation, VARIANT_MARK still in it, ids dropped as LangChain does."""
    return dumps(_without_ids(conversation()))


def prompts(template: str, start: int, count: int) -> list[str]:
    """``count`` distinct prompts, each a new string object (no cached hash)."""
    return [template.replace(VARIANT_MARK, str(i)) for i in range(start, start + count)]


def fresh_copies(prompt: str, count: int) -> list[str]:
    """``count`` new string objects equal to ``prompt``, as LangChain builds one per call."""
    return [(prompt + " ")[:-1] for _ in range(count)]


def cache_pair() -> dict[str, BaseCache]:
    return {"langscale": langscale.ExactCache(maxsize=1_000_000), "langchain": InMemoryCache()}


# --- lookup and update -----------------------------------------------------------------


def _op_row(name: str, ns: dict[str, float]) -> Row:
    return Row(
        group="cache: ~2 KB tool-calling prompt",
        name=name,
        unit="ns/op",
        langscale=ns["langscale"],
        langchain=ns["langchain"],
    )


def _sizes(settings: Settings) -> tuple[int, int]:
    """Calls per sample, and rounds."""
    return settings.pick((2_000, 7), (500, 3))


def _lookup_hit(settings: Settings) -> list[Row]:
    calls, rounds = _sizes(settings)
    llm, value = llm_string(), [answer()]
    prompt = prompts(prompt_template(), 0, 1)[0]
    caches = cache_pair()
    for cache in caches.values():
        cache.update(prompt, llm, value)
    ns = compare(
        {
            side: lambda c=cache: time_items(
                lambda p: c.lookup(p, llm), fresh_copies(prompt, calls)
            )
            for side, cache in caches.items()
        },
        rounds,
    )
    return [_op_row("lookup, hit", ns)]


def _lookup_miss(settings: Settings) -> list[Row]:
    calls, rounds = _sizes(settings)
    llm, value, template = llm_string(), [answer()], prompt_template()
    caches = cache_pair()
    for cache in caches.values():
        for prompt in prompts(template, 0, 1_000):
            cache.update(prompt, llm, value)
    unseen = _unseen_prompts(template, calls)
    ns = compare(
        {
            side: lambda c=cache: time_items(lambda p: c.lookup(p, llm), next(unseen))
            for side, cache in caches.items()
        },
        rounds,
    )
    return [_op_row("lookup, miss", ns)]


def _update(settings: Settings) -> list[Row]:
    calls, rounds = _sizes(settings)
    llm, value, template = llm_string(), [answer()], prompt_template()
    unseen = _unseen_prompts(template, calls)
    ns = compare(
        {
            side: lambda c=cache: time_items(lambda p: c.update(p, llm, value), next(unseen))
            for side, cache in cache_pair().items()
        },
        rounds,
    )
    return [_op_row("update, new key", ns)]


def _unseen_prompts(template: str, batch: int) -> Iterator[list[str]]:
    """Batches of prompts no cache has seen (variants from 1,000,000 up)."""
    for start in itertools.count(1_000_000, batch):
        yield prompts(template, start, batch)


# --- a whole model.invoke answered from the cache --------------------------------------


def _invoke_hit(settings: Settings) -> list[Row]:
    calls, rounds = settings.pick((1_000, 7), (200, 3))
    messages = conversation("42")
    models = {side: ToolCallingChatModel(cache=cache) for side, cache in cache_pair().items()}
    for model in models.values():
        model.invoke(messages)  # the miss that fills the cache
    # The garbage collector stays on: a hit's allocations and their collection are its cost.
    ns = compare(
        {
            side: lambda m=model: time_calls(lambda: m.invoke(messages), calls, gc_off=False)
            for side, model in models.items()
        },
        rounds,
    )
    ours, theirs = ns["langscale"] / 1_000, ns["langchain"] / 1_000
    return [
        Row(
            group="cache: model.invoke(messages) on a hit",
            name="tool-calling model, ~2 KB prompt",
            unit="µs/invoke",
            langscale=ours,
            langchain=theirs,
            target=f"within {INVOKE_TARGET - 1:.0%} of InMemoryCache",
            met=ours <= INVOKE_TARGET * theirs,
        )
    ]


# --- key normalisation -----------------------------------------------------------------


def _key_normalisation(settings: Settings) -> list[Row]:
    calls, rounds = _sizes(settings)
    llm, prompt = llm_string(), prompts(prompt_template(), 0, 1)[0]

    def sample() -> float:
        return time_items(lambda p: _core.cache_key("", llm, p), fresh_copies(prompt, calls))

    ns = compare({"langscale": sample}, rounds)["langscale"]
    return [
        Row(
            group="cache: key normalisation",
            name=f"_core.cache_key, {len(prompt):,} B prompt",
            unit="ns/call",
            langscale=ns,
            langchain=None,
            target=f"under {KEY_TARGET_NS / 1000:g} µs",
            met=ns < KEY_TARGET_NS,
        )
    ]


# --- memory per entry, each cache in a fresh process -----------------------------------

MEMORY_KINDS = {
    "exact": "ExactCache",
    "inmemory-shared": "InMemoryCache, one value object shared by all entries",
    "inmemory-distinct": "InMemoryCache, a value object per entry (as a model returns)",
}


def _memory(settings: Settings) -> list[Row]:
    entries = settings.pick(100_000, 20_000)
    found = {kind: _memory_in_child(kind, entries) for kind in MEMORY_KINDS}
    exact = found["exact"]
    group = f"cache: memory per entry, {entries:,} entries of a {exact['prompt_bytes']:,} B prompt"
    rows = [
        Row(
            group=group,
            name=f"RSS growth: ExactCache vs {MEMORY_KINDS[kind]}",
            unit="B/entry",
            langscale=exact["rss_per_entry"],
            langchain=found[kind]["rss_per_entry"],
            extra={"exact_entries": exact["entries"], "prompt_bytes": exact["prompt_bytes"]},
        )
        for kind in ("inmemory-shared", "inmemory-distinct")
    ]
    rows.append(
        Row(
            group=group,
            name='ExactCache.stats()["bytes"] / entries',
            unit="B/entry",
            langscale=exact["stats_bytes_per_entry"],
            langchain=None,
        )
    )
    return rows


def _memory_in_child(kind: str, entries: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "memory", kind, str(entries)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * resource.getpagesize()


def _values(kind: str, entries: int) -> Iterator[list[ChatGeneration]]:
    shared = [answer()]
    for _ in range(entries):
        yield [answer()] if kind == "inmemory-distinct" else shared


def memory_child(kind: str, entries: int) -> dict[str, Any]:
    """Insert ``entries`` distinct prompts into one cache; report RSS growth per entry."""
    llm, template = llm_string(), prompt_template()
    cache: BaseCache = (
        langscale.ExactCache(maxsize=2 * entries)
        if kind == "exact"
        else InMemoryCache(maxsize=None)
    )
    values = _values(kind, entries)
    gc.collect()
    before = _rss_bytes()
    for i, value in enumerate(values):
        cache.update(template.replace(VARIANT_MARK, str(i)), llm, value)
    gc.collect()
    report: dict[str, Any] = {
        "rss_per_entry": (_rss_bytes() - before) / entries,
        "prompt_bytes": len(template),
        "stats_bytes_per_entry": None,
        "entries": entries,
    }
    if isinstance(cache, langscale.ExactCache):
        stats = cache.stats()
        report["entries"] = stats["entries"]
        report["stats_bytes_per_entry"] = stats["bytes"] / max(stats["entries"], 1)
    return report


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "memory":
        print(json.dumps(memory_child(sys.argv[2], int(sys.argv[3]))))
    else:
        sys.exit("usage: bench_cache.py memory KIND ENTRIES (run benches/run.py instead)")


# --- coalescing: a burst of identical requests --------------------------------------------

BURST = 100
PROVIDER_SECONDS = 0.05


class _SlowModel(BaseChatModel):
    """A provider call that takes 50 ms and is counted."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "slow-counted"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        raise NotImplementedError

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        await asyncio.sleep(PROVIDER_SECONDS)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("Paris."))])


def _burst(model: Any) -> float:
    async def main() -> None:
        await asyncio.gather(*(model.ainvoke("Capital of France?") for _ in range(BURST)))

    started = time.perf_counter()
    asyncio.run(main())
    return (time.perf_counter() - started) * 1e3


def _coalescing(settings: Settings) -> list[Row]:
    """100 concurrent identical ainvoke: langscale (ScaledChatModel + cache) against the same
    model with LangChain's InMemoryCache, where every caller misses at once."""
    ours = _SlowModel()
    theirs = _SlowModel(cache=InMemoryCache())
    ls_ms = _burst(langscale.ScaledChatModel([ours], cache=InMemoryCache()))
    lc_ms = _burst(theirs)
    group = f"coalescing: {BURST} concurrent identical ainvoke, {PROVIDER_SECONDS * 1e3:g} ms calls"
    calls = Row(group, "provider calls", "calls", ours.calls, theirs.calls)
    calls.target, calls.met = "1", ours.calls == 1
    return [calls, Row(group, "wall time of the burst", "ms", ls_ms, lc_ms)]


# --- coalescing: a burst of near-duplicates (retypes of one question) ----------------------

LABELLED = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pairs-generated.jsonl"
)


def _retypes() -> list[str]:
    """Retypes of one labelled question (``shared/data``, key 3:France) that the built-in
    SemanticCache answers with one another, every way round (so whichever caller leads, the
    cache itself would answer every other with its answer)."""
    with LABELLED.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    texts = sorted(
        {
            t
            for r in rows
            if r["same"] and r["kind"] == "surface" and r["a_key"] == "3:France"
            for t in (r["a"], r["b"])
        }
    )
    generation = [ChatGeneration(message=AIMessage("Paris."))]

    def answers(stored: str, asked: str) -> bool:
        cache = langscale.SemanticCache()
        cache.update(dumps([HumanMessage(stored)]), "m", generation)
        return cache.lookup(dumps([HumanMessage(asked)]), "m") is not None

    return [t for t in texts if all(answers(t, u) and answers(u, t) for u in texts)]


def _near_burst(model: Any, texts: list[str]) -> float:
    async def main() -> None:
        await asyncio.gather(*(model.ainvoke(texts[i % len(texts)]) for i in range(BURST)))

    started = time.perf_counter()
    asyncio.run(main())
    return (time.perf_counter() - started) * 1e3


def _near_coalescing(settings: Settings) -> list[Row]:
    """100 concurrent ainvoke of retypes of one question: langscale (ScaledChatModel with a
    SemanticCache) against the same model with LangChain's InMemoryCache (each distinct text
    misses, and all of them at once) and with a SemanticCache but no ScaledChatModel (no
    coalescing: every caller misses before the first answer is stored)."""
    if not LABELLED.exists():
        print(f"no data set at {LABELLED}")
        return []
    texts = _retypes()
    ours, theirs, plain = _SlowModel(), _SlowModel(cache=InMemoryCache()), _SlowModel()
    ls_ms = _near_burst(langscale.ScaledChatModel([ours], cache=langscale.SemanticCache()), texts)
    lc_ms = _near_burst(theirs, texts)
    plain.cache = langscale.SemanticCache()
    plain_ms = _near_burst(plain, texts)
    group = (
        f"coalescing: {BURST} concurrent near-duplicate ainvoke ({len(texts)} retypes of one"
        f" question), {PROVIDER_SECONDS * 1e3:g} ms calls"
    )
    calls = Row(group, "provider calls", "calls", ours.calls, theirs.calls)
    calls.target, calls.met = "1", ours.calls == 1
    calls.extra["semantic_cache_alone_calls"] = plain.calls
    wall = Row(group, "wall time of the burst", "ms", ls_ms, lc_ms)
    wall.extra["semantic_cache_alone_ms"] = round(plain_ms, 1)
    return [calls, wall]
