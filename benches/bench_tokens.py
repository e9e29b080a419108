"""Input token counting: speed beside OpenAI's ``tiktoken`` package (what LangChain's
``ChatOpenAI.get_num_tokens_from_messages`` calls) and beside the chars/4 estimate, and the
estimate's error against the exact count.

Prompts come from ``../shared/data/pairs-generated.jsonl`` (its README): every question is
a one-message chat, and "typical" chats of about 500 tokens are a fixed system prompt and
consecutive questions as alternating user and assistant turns. Counts follow OpenAI's cookbook
(3 per message, role and content encoded, 3 priming the reply) on both sides.

tiktoken is not a dependency; its rows are skipped where it cannot be imported or cannot load
an encoding (it downloads its vocabularies on first use, and caches them under
``TIKTOKEN_CACHE_DIR``). Run alone: ``python benches/bench_tokens.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Case, Row, Settings, compare, time_items
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langscale import _core
from langscale._tokens import estimate_input_tokens

GROUP = "input token counting"
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "pairs-generated.jsonl"
MODELS = {"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}
SYSTEM = (
    "You are a helpful assistant for a travel and shopping service. Answer in one or two short "
    "sentences, give numbers with their units, say so when you do not know, and never invent "
    "prices, opening hours or availability. Use the tools when a question needs live data."
)
TYPICAL_TOKENS = 500

Pairs = list[tuple[str, str]]


def cases(settings: Settings) -> list[Case]:
    if not DATA.exists():
        return [Case("data", lambda: [Row(GROUP, f"skipped: no data at {DATA}", "%", 0.0, None)])]
    return [
        Case("count speed", lambda: _speed(settings)),
        Case("estimate error", _error),
        Case("error against the simulator's usage", _error_vs_sim),
    ]


# --- prompts ---------------------------------------------------------------------------


def questions() -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row["a"], None)
        seen.setdefault(row["b"], None)
    return list(seen)


def typical_chats(qs: list[str], limit: int = 200) -> list[Pairs]:
    """Up to ``limit`` chats of about TYPICAL_TOKENS tokens (exact, o200k_base): the system
    prompt, then questions as alternating user / assistant turns, each chat starting where the
    last one stopped."""
    chats: list[Pairs] = []
    chat: Pairs = [("system", SYSTEM)]
    for q in qs:
        chat.append(("user" if len(chat) % 2 else "assistant", q))
        if _core.count_tokens("gpt-4o", chat) >= TYPICAL_TOKENS:
            chats.append(chat)
            chat = [("system", SYSTEM)]
            if len(chats) >= limit:
                break
    return chats


def as_messages(chat: Pairs) -> list[BaseMessage]:
    kinds: dict[str, Callable[[str], BaseMessage]] = {
        "system": SystemMessage,
        "user": HumanMessage,
        "assistant": AIMessage,
    }
    return [kinds[role](content) for role, content in chat]


def chars_over_4(messages: list[BaseMessage]) -> int:
    """langscale's estimate before exact counts (scaled._estimate_tokens), in Python."""
    chars = sum(
        len(m.content) if isinstance(m.content, str) else len(str(m.content)) for m in messages
    )
    return chars // 4 + 4 * len(messages)


def tiktoken_encodings() -> dict[str, Any]:
    """The encodings tiktoken can load here; empty without it or its vocabulary files."""
    try:
        import tiktoken
    except ImportError:
        return {}
    out: dict[str, Any] = {}
    for name in MODELS:
        try:
            out[name] = tiktoken.get_encoding(name)
        except Exception:  # no network and no cached file: the row is skipped
            continue
    return out


def tiktoken_count(encoding: Any, chat: Pairs) -> int:
    """The cookbook's ``num_tokens_from_messages`` (encode_ordinary: special tokens as text)."""
    return 3 + sum(
        3 + len(encoding.encode_ordinary(role)) + len(encoding.encode_ordinary(content))
        for role, content in chat
    )


# --- speed -----------------------------------------------------------------------------


def _speed(settings: Settings) -> list[Row]:
    qs = questions()
    chats = typical_chats(qs, settings.pick(200, 40))
    messages = [as_messages(c) for c in chats]
    rounds = settings.pick(7, 3)
    encodings = tiktoken_encodings()
    mean_tokens = statistics.mean(_core.count_tokens("gpt-4o", c) for c in chats)
    rows: list[Row] = []
    note = f"{len(chats)} chats of {mean_tokens:.0f} tokens (o200k_base) on average"

    for name, model in MODELS.items():
        samplers = {"langscale": _ours(model, chats)}
        if name in encodings:
            samplers["tiktoken"] = _theirs(encodings[name], chats)
        ns = compare(samplers, rounds)
        rows.append(
            Row(
                GROUP,
                f"count a typical chat, {name}: _core.count_tokens vs tiktoken",
                "µs/chat",
                ns["langscale"] / 1e3,
                ns["tiktoken"] / 1e3 if "tiktoken" in ns else None,
                extra={"prompts": note, "tiktoken": "not importable" if not encodings else ""},
            )
        )

    # From LangChain messages, as a chat model sees them: the exact count against the estimate
    # it replaces (both pay for reading the messages in Python).
    ns = compare(
        {
            "exact": lambda: time_items(lambda m: estimate_input_tokens(m, "gpt-4o"), messages),
            "estimate": lambda: time_items(chars_over_4, messages),
            "unknown": lambda: time_items(lambda m: estimate_input_tokens(m, "llama3"), messages),
        },
        rounds,
    )
    rows.append(
        Row(
            GROUP,
            "typical chat as LangChain messages: estimate_input_tokens (gpt-4o) vs chars/4",
            "µs/chat",
            ns["exact"] / 1e3,
            ns["estimate"] / 1e3,
            extra={"prompts": note, "unknown_model_us": ns["unknown"] / 1e3},
        )
    )

    # Throughput on one long document (every question, one a line).
    text = "\n".join(qs)
    doc = [("user", text)]
    tokens = _core.count_tokens("gpt-4o", doc)
    samplers = {"langscale": _ours("gpt-4o", [doc])}
    if "o200k_base" in encodings:
        samplers["tiktoken"] = _theirs(encodings["o200k_base"], [doc])
    ns = compare(samplers, rounds)
    rows.append(
        Row(
            GROUP,
            f"throughput on one {len(text) // 1024} KiB document, o200k_base "
            "(_core.count_tokens vs tiktoken)",
            "Mtok/s",
            tokens / ns["langscale"] * 1e3,
            tokens / ns["tiktoken"] * 1e3 if "tiktoken" in ns else None,
            extra={"tokens": tokens},
        )
    )
    return rows


def _ours(model: str, chats: list[Pairs]) -> Callable[[], float]:
    return lambda: time_items(lambda c: _core.count_tokens(model, c), chats)


def _theirs(encoding: Any, chats: list[Pairs]) -> Callable[[], float]:
    return lambda: time_items(lambda c: tiktoken_count(encoding, c), chats)


# --- error of the estimate -------------------------------------------------------------


def _error() -> list[Row]:
    qs = questions()
    sets = {
        "one-question chats": [[("user", q)] for q in qs],
        "typical chats": typical_chats(qs),
    }
    rows = []
    for set_name, chats in sets.items():
        for name, model in MODELS.items():
            errors = []
            for chat in chats:
                exact = _core.count_tokens(model, chat)
                estimate = _core.count_tokens(None, chat)
                errors.append(abs(estimate - exact) / exact * 100)
            errors.sort()
            p95 = errors[min(len(errors) - 1, int(0.95 * len(errors)))]
            rows.append(
                Row(
                    GROUP,
                    f"chars/4 estimate vs exact {name}, {len(chats)} {set_name}: "
                    f"mean absolute error (p95 {p95:.1f}%)",
                    "%",
                    statistics.mean(errors),
                    None,
                    extra={"p95": p95, "chats": len(chats)},
                )
            )
    return rows


def _error_vs_sim() -> list[Row]:
    """What a budget reserves for a call's input (``langscale._tokens``, as
    ``ScaledChatModel`` counts: exact for an OpenAI model name, else chars/4) against the
    usage the provider then reports: the simulator counting with o200k_base as OpenAI does,
    called through ``ChatEndpoint``."""
    from langscale import ChatEndpoint, sim

    qs = questions()
    sets = {
        "one-question chats": [[("user", q)] for q in qs[:300]],
        "typical chats": typical_chats(qs, limit=100),
    }
    rows = []
    with sim.serve(sim.Provider("openai-like", models=("gpt-4o",), tokenizer="o200k_base")) as s:
        endpoint = ChatEndpoint(s.url(), "gpt-4o")
        for set_name, chats in sets.items():
            errors: dict[str, list[float]] = {"exact (gpt-4o)": [], "chars/4": []}
            for chat in chats:
                messages = as_messages(chat)
                usage = endpoint.invoke(messages).usage_metadata
                assert usage is not None
                real = usage["input_tokens"]
                exact = estimate_input_tokens(messages, "gpt-4o")
                estimate = estimate_input_tokens(messages)
                errors["exact (gpt-4o)"].append(abs(exact - real) / real * 100)
                errors["chars/4"].append(abs(estimate - real) / real * 100)
            for how, errs in errors.items():
                errs.sort()
                p95 = errs[min(len(errs) - 1, int(0.95 * len(errs)))]
                rows.append(
                    Row(
                        GROUP,
                        f"input tokens reserved, {how}, vs the provider's usage (simulator "
                        f"counting o200k_base), {len(chats)} {set_name}: mean absolute error "
                        f"(p95 {p95:.1f}%)",
                        "%",
                        statistics.mean(errs),
                        None,
                        extra={"p95": p95, "chats": len(chats)},
                    )
                )
    return rows


def main() -> int:
    for case in cases(Settings()):
        for row in case.run():
            other = "—" if row.langchain is None else f"{row.langchain:,.4g}"
            print(f"{row.name}: {row.langscale:,.4g} | {other} {row.unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
