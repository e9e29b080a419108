"""Writes the labelled sets of the hybrid embedder and the near-topic guard (deterministic).

    python tests/data/make_hybrid_sets.py

Same format as ``shared/data/pairs-generated.jsonl`` (see make_guard_sets.py):

- ``hybrid-intents.jsonl``: intents that ``shared/data`` does not hold (accounts, orders,
  software, cooking, health, money), each with several wordings: ``surface`` (retyped: case,
  punctuation, courtesy, one typo), ``paraphrase`` (other words), and ``different-slot`` (the
  same wording about another thing) and ``different-intent`` (another question about the same
  thing) as the wrong answers.
- ``guard-near-topic.jsonl``: one attribute of the same thing against another ("capital" /
  "population of France", "shipping time" / "shipping cost", "opening hours" / "holiday opening
  hours") and one action against its opposite ("enable" / "turn off dark mode"), ``near-*``
  kinds, with harmless rewordings of each (``near-same``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# intent -> (slot values, wordings); every wording of an intent asks the same question.
INTENTS: dict[str, tuple[list[str], list[str]]] = {
    "reset-password": (
        ["Gmail", "Slack", "Netflix", "Spotify", "Dropbox", "Zoom"],
        [
            "How do I reset my {x} password?",
            "I forgot my {x} password, how can I reset it?",
            "Steps to reset a forgotten {x} password",
            "How can I change my {x} password if I forgot it?",
        ],
    ),
    "delete-account": (
        ["Facebook", "Instagram", "Twitter", "LinkedIn", "Reddit", "TikTok"],
        [
            "How do I delete my {x} account?",
            "How can I permanently remove my {x} account?",
            "Steps to close my {x} account for good",
            "What is the way to delete a {x} account?",
        ],
    ),
    "track-order": (
        ["Amazon", "eBay", "Etsy", "Walmart", "Zalando", "IKEA"],
        [
            "How do I track my {x} order?",
            "Where can I see the status of my {x} order?",
            "How can I check where my {x} package is?",
            "Tracking a {x} order: how?",
        ],
    ),
    "install-package": (
        ["numpy", "pandas", "requests", "flask", "pytest", "scipy"],
        [
            "How do I install {x} with pip?",
            "What is the pip command to install {x}?",
            "How can I add {x} to my Python environment with pip?",
            "Install {x} using pip",
        ],
    ),
    "boil-food": (
        ["eggs", "potatoes", "rice", "pasta", "broccoli", "lentils"],
        [
            "How long should I boil {x}?",
            "What is the boiling time for {x}?",
            "For how many minutes do you boil {x}?",
            "How many minutes does it take to boil {x}?",
        ],
    ),
    "side-effects": (
        ["ibuprofen", "aspirin", "paracetamol", "amoxicillin", "melatonin", "loratadine"],
        [
            "What are the side effects of {x}?",
            "What side effects can {x} cause?",
            "Does {x} have side effects?",
            "Common side effects of taking {x}",
        ],
    ),
    "open-account": (
        ["Revolut", "Monzo", "Chase", "HSBC", "Wise", "Barclays"],
        [
            "How do I open a {x} bank account?",
            "What do I need to open an account with {x}?",
            "How can I sign up for a {x} bank account?",
            "Opening a bank account at {x}: how does it work?",
        ],
    ),
}

# Another question about the same thing, per intent: a wrong answer however close.
OTHER = {
    "reset-password": "How do I enable two-factor authentication on {x}?",
    "delete-account": "How do I download my data from {x}?",
    "track-order": "How do I return a {x} order?",
    "install-package": "How do I uninstall {x} with pip?",
    "boil-food": "How do I store cooked {x}?",
    "side-effects": "What is the usual dose of {x}?",
    "open-account": "How do I close my {x} bank account?",
}

FILLERS = ["please", "hey, ", "quick question: ", "thanks", "hi, "]


def typo(text: str, rng: random.Random) -> str:
    words = text.split()
    long = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha() and w.islower()]
    if not long:
        return text.lower()
    i = rng.choice(long)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def retyped(text: str, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return text.lower().rstrip("?.!")
    if kind == 1:
        filler = rng.choice(FILLERS)
        return filler + text[0].lower() + text[1:] if filler.endswith(" ") else f"{text} {filler}"
    if kind == 2:
        return typo(text, rng)
    return text.rstrip("?.!") + "??"


def pair(a: str, b: str, kind: str, a_key: str, b_key: str) -> dict:
    return {"a": a, "b": b, "same": a_key == b_key, "kind": kind, "a_key": a_key, "b_key": b_key}


def hybrid_intents() -> list[dict]:
    rng = random.Random(17)
    out = []
    for intent, (values, wordings) in INTENTS.items():
        for x in values:
            key = f"{intent}:{x}"
            first = wordings[0].format(x=x)
            # Surface: each wording retyped.
            for w in wordings:
                text = w.format(x=x)
                out.append(pair(text, retyped(text, rng), "surface", key, key))
            # Paraphrase: the first wording against each other one.
            for w in wordings[1:]:
                out.append(pair(first, w.format(x=x), "paraphrase", key, key))
            # Wrong answers: the same wording about another thing, another intent.
            y = rng.choice([v for v in values if v != x])
            w = rng.choice(wordings)
            out.append(pair(w.format(x=x), w.format(x=y), "different-slot", key, f"{intent}:{y}"))
            out.append(
                pair(first, OTHER[intent].format(x=x), "different-intent", key, f"other-{key}")
            )
    return out


# (thing, attribute wordings): each attribute's question against another attribute's.
NEAR_ATTRIBUTE = [
    ("France", ["What is the capital of {x}?", "What is the population of {x}?"]),
    ("Japan", ["What is the capital of {x}?", "What is the population of {x}?"]),
    ("Brazil", ["What is the capital of {x}?", "What is the currency of {x}?"]),
    ("Canada", ["What is the population of {x}?", "What is the area of {x}?"]),
    ("Kenya", ["What is the official language of {x}?", "What is the capital of {x}?"]),
    ("Peru", ["What is the currency of {x}?", "What is the population of {x}?"]),
    ("Norway", ["What is the capital of {x}?", "What is the national dish of {x}?"]),
    ("Egypt", ["What is the population of {x}?", "What is the official language of {x}?"]),
]
NEAR_SHIPPING = [
    ("How long does shipping to {x} take?", "How much does shipping to {x} cost?"),
    ("What is the delivery time to {x}?", "What is the delivery cost to {x}?"),
    ("How long does express shipping to {x} take?", "How much is express shipping to {x}?"),
    ("Shipping time to {x}?", "Shipping cost to {x}?"),
]
PLACES = ["Germany", "Canada", "Australia", "Spain", "Mexico", "Italy"]
NEAR_HOURS = [
    ("What are your opening hours?", "What are your holiday opening hours?"),
    ("When does the store open?", "When does the store open on public holidays?"),
    ("What are the library's opening hours?", "What are the library's holiday opening hours?"),
    ("What time does the pharmacy close?", "What time does the pharmacy close on holidays?"),
    ("What are the gym's opening hours?", "What are the gym's opening hours at Christmas?"),
    ("When is the museum open?", "When is the museum open during the holidays?"),
]
DIRECTION_VERBS = [
    ("enable", "turn off"),
    ("turn on", "disable"),
    ("enable", "disable"),
    ("turn on", "turn off"),
    ("start", "stop"),
    ("activate", "cancel"),
    ("switch on", "switch off"),
    ("subscribe to", "unsubscribe from"),
]
FEATURES = [
    "dark mode",
    "notifications",
    "auto-updates",
    "location sharing",
    "two-factor authentication",
    "the newsletter",
]
# Harmless rewordings that must still match.
NEAR_SAME = [
    ("What is the capital of France?", "what's the capital of france"),
    ("What is the population of Japan?", "population of Japan?"),
    ("How long does shipping to Spain take?", "how long does shipping to spain take please"),
    ("What are your opening hours?", "what are your opening hours??"),
    ("What are your holiday opening hours?", "holiday opening hours?"),
    ("How do I turn off dark mode?", "how do i turn off dark mode"),
    ("How do I enable dark mode?", "how to enable dark mode?"),
    ("How do I disable notifications?", "How can I disable notifications?"),
    ("How do I stop auto-updates?", "how do I stop auto-updates please"),
    ("How much does shipping to Italy cost?", "shipping cost to Italy?"),
]


def near_topic() -> list[dict]:
    out = []
    for x, (w1, w2) in NEAR_ATTRIBUTE:
        out.append(pair(w1.format(x=x), w2.format(x=x), "near-attribute", w1 + x, w2 + x))
        out.append(pair(w2.format(x=x), w1.format(x=x), "near-attribute", w2 + x, w1 + x))
        lower1, lower2 = w1.format(x=x).lower(), w2.format(x=x).lower()
        out.append(pair(lower1, lower2, "near-attribute", w1 + x, w2 + x))
    for x in PLACES:
        for w1, w2 in NEAR_SHIPPING:
            out.append(pair(w1.format(x=x), w2.format(x=x), "near-shipping", w1 + x, w2 + x))
    for w1, w2 in NEAR_HOURS:
        out.append(pair(w1, w2, "near-hours", w1, w2))
        out.append(pair(w2, w1, "near-hours", w2, w1))
        out.append(pair(w1.lower().rstrip("?"), w2, "near-hours", w1, w2))
    for feature in FEATURES:
        for on, off in DIRECTION_VERBS:
            a, b = f"How do I {on} {feature}?", f"How do I {off} {feature}?"
            out.append(pair(a, b, "near-direction", f"on:{feature}", f"off:{feature}"))
    for a, b in NEAR_SAME:
        out.append(pair(a, b, "near-same", a, a))
    return out


def write(name: str, pairs: list[dict]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")


def main() -> None:
    write("hybrid-intents.jsonl", hybrid_intents())
    write("guard-near-topic.jsonl", near_topic())


if __name__ == "__main__":
    main()
