"""Writes the labelled near-miss sets of the semantic cache's guard (deterministic).

    python tests/data/make_guard_sets.py

Each file has one JSON object a line in the format of ``shared/data/pairs-generated.jsonl``:
``{"a", "b", "same", "kind", "a_key", "b_key"}`` (store ``a``, look up ``b``; ``same`` says a
cached answer to ``a`` is right for ``b``; the keys name what the answer depends on).

- ``guard-order.jsonl``: the same things in another order. ``order-*`` kinds change the meaning
  (comparisons, direction, who does what to whom, arithmetic, relations); ``reorder-*`` kinds do
  not (coordinated lists, a phrase moved to the front).
- ``guard-long.jsonl``: long user turns (documents, code, logs pasted into the question) with one
  meaning-changing edit (``long-*``) or a harmless one (``long-harmless``).
- ``guard-person.jsonl``: perspective (``my`` / ``your``, ``I`` / ``you``) and modality
  (``can`` / ``must``) in short questions, and harmless variants of them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

CITIES = [
    "Paris",
    "Berlin",
    "Madrid",
    "Lisbon",
    "Rome",
    "Athens",
    "Vienna",
    "Prague",
    "Oslo",
    "Dublin",
    "Warsaw",
    "Cairo",
    "Tokyo",
    "Seoul",
    "Lima",
    "Quito",
]
PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
TEAMS = ["Arsenal", "Chelsea", "Liverpool", "Everton", "Celtic", "Rangers", "Ajax", "Benfica"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"]
LANGS = ["English", "French", "German", "Spanish", "Italian", "Japanese", "Korean", "Dutch"]
TECH = ["Python", "Java", "Rust", "Go", "Kotlin", "Swift", "Ruby", "Scala"]
VERSIONS = ["MySQL", "PostgreSQL", "SQLite", "MongoDB", "Redis", "Cassandra"]
ANIMALS = ["cat", "dog", "horse", "rabbit", "goat", "sheep", "tiger", "wolf"]
FOODS = ["rice", "pasta", "quinoa", "bread", "potatoes", "oats", "lentils", "beans"]
UNITS = [
    "celsius",
    "fahrenheit",
    "kelvin",
    "inches",
    "centimeters",
    "miles",
    "kilometers",
    "pounds",
    "kilograms",
    "ounces",
    "grams",
    "liters",
    "gallons",
]
FORMATS = ["PDF", "DOCX", "CSV", "JSON", "XML", "YAML", "PNG", "JPEG"]
CLASSES = ["Animal", "Dog", "Vehicle", "Car", "Shape", "Circle", "Account", "Invoice"]


def pairs_of(rng: random.Random, items: list[str], n: int) -> list[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        x, y = rng.sample(items, 2)
        out.add((x, y))
    return sorted(out)


def numbers(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        x, y = rng.sample(range(2, 99), 2)
        out.add((str(x), str(y)))
    return sorted(out)


# (kind, template, items): the template with {x} and {y}; the pair is (x, y) against (y, x).
SWAPS = [
    ("order-comparison", "Is {x} bigger than {y}?", CITIES),
    ("order-comparison", "Is {x} greater than {y}?", None),
    ("order-comparison", "Is {x} older than {y}?", PEOPLE),
    ("order-comparison", "Is {x} faster than {y} for web servers?", TECH),
    ("order-comparison", "Is {x} north of {y}?", CITIES),
    ("order-comparison", "Is a {x} heavier than a {y}?", ANIMALS),
    ("order-comparison", "Is {x} healthier than {y}?", FOODS),
    ("order-comparison", "Why is {x} more popular than {y}?", TECH),
    ("order-comparison", "Is {x} less than {y}?", None),
    ("order-comparison", "Does {x} come before {y} alphabetically?", PEOPLE),
    ("order-direction", "Convert 10 {x} to {y}", UNITS),
    ("order-direction", "Translate this from {x} to {y}: good morning", LANGS),
    ("order-direction", "How do I translate {x} into {y}?", LANGS),
    ("order-direction", "Replace {x} with {y} in my recipe", FOODS),
    ("order-direction", "How do I migrate from {x} to {y}?", VERSIONS),
    ("order-direction", "Upgrade from {x} to {y}: what breaks?", VERSIONS),
    ("order-direction", "How do I convert {x} into {y}?", FORMATS),
    ("order-direction", "Best way to port code from {x} to {y}", TECH),
    ("order-direction", "Train times from {x} to {y}", CITIES),
    ("order-direction", "Should I switch from {x} to {y}?", TECH),
    ("order-agent", "Did {x} beat {y} last season?", TEAMS),
    ("order-agent", "How much does {x} owe {y}?", PEOPLE),
    ("order-agent", "Pay {x} from {y}'s account", PEOPLE),
    ("order-agent", "Does {x} inherit from {y}?", CLASSES),
    ("order-agent", "Why did {x} acquire {y}?", COMPANIES),
    ("order-agent", "Did {x} sue {y}?", COMPANIES),
    ("order-agent", "Does {x} report to {y}?", PEOPLE),
    ("order-agent", "Send 20 dollars to {x} from {y}", PEOPLE),
    ("order-agent", "Can {x} see {y}'s calendar?", PEOPLE),
    ("order-agent", "Does {x} depend on {y}?", TECH),
    ("order-arithmetic", "What is {x} divided by {y}?", None),
    ("order-arithmetic", "Subtract {x} from {y}", None),
    ("order-arithmetic", "What is {x} minus {y}?", None),
    ("order-arithmetic", "What is {x} to the power of {y}?", None),
    ("order-arithmetic", "What percentage of {y} is {x}?", None),
    ("order-arithmetic", "What is {x} modulo {y}?", None),
    ("order-relation", "Is {x} a subclass of {y}?", CLASSES),
    ("order-relation", "Is {x} the capital of {y}?", CITIES),
    ("order-relation", "Is {x} {y}'s manager?", PEOPLE),
    ("order-relation", "Is {x} a dependency of {y}?", TECH),
]

# Reorderings that keep the meaning: (kind, a template, b template) over (x, y).
HARMLESS = [
    ("reorder-coordinated", "Which is older, {x} or {y}?", "Which is older, {y} or {x}?", CITIES),
    (
        "reorder-coordinated",
        "What is the difference between {x} and {y}?",
        "What is the difference between {y} and {x}?",
        TECH,
    ),
    ("reorder-coordinated", "{x} vs {y}: which is faster?", "{y} vs {x}: which is faster?", TECH),
    (
        "reorder-coordinated",
        "Compare {x} and {y} for beginners",
        "Compare {y} and {x} for beginners",
        LANGS,
    ),
    ("reorder-coordinated", "Which is bigger, {x} or {y}?", "Which is bigger, {y} or {x}?", None),
    ("reorder-coordinated", "Is {x} or {y} healthier?", "Is {y} or {x} healthier?", FOODS),
    (
        "reorder-coordinated",
        "What do {x} and {y} have in common?",
        "What do {y} and {x} have in common?",
        ANIMALS,
    ),
    ("reorder-moved", "In {x}, what's the weather?", "What's the weather in {x}?", CITIES),
    (
        "reorder-moved",
        "For {x}, what are the opening hours of the museum?",
        "What are the opening hours of the museum in {x}?",
        CITIES,
    ),
    ("reorder-moved", "Tomorrow, will it rain in {x}?", "Will it rain in {x} tomorrow?", CITIES),
    ("reorder-moved", "In {x}, how do I read a file?", "How do I read a file in {x}?", TECH),
    (
        "reorder-moved",
        "When learning {x}, which book should I read first?",
        "Which book should I read first when learning {x}?",
        LANGS,
    ),
]


def order_set(rng: random.Random) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for kind, template, items in SWAPS:
        for x, y in numbers(rng, 4) if items is None else pairs_of(rng, items, 4):
            a, b = template.format(x=x, y=y), template.format(x=y, y=x)
            key = template
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "same": False,
                    "kind": kind,
                    "a_key": f"{key}:{x}>{y}",
                    "b_key": f"{key}:{y}>{x}",
                }
            )
    for kind, ta, tb, items in HARMLESS:
        if "{y}" not in ta:
            chosen = [(x, "") for x in rng.sample(items or [], 6)]
        else:
            chosen = numbers(rng, 6) if items is None else pairs_of(rng, items, 6)
        for x, y in chosen:
            key = f"{ta}:{'+'.join(sorted([x, y]))}"
            rows.append(
                {
                    "a": ta.format(x=x, y=y),
                    "b": tb.format(x=x, y=y),
                    "same": True,
                    "kind": kind,
                    "a_key": key,
                    "b_key": key,
                }
            )
    return rows


LEASE = [
    "The tenant shall pay the rent on the first day of each month.",
    "Pets are not allowed in the apartment without written consent.",
    "The landlord shall repair the heating within seven days of notice.",
    "Smoking is prohibited inside the building and on the balconies.",
    "The deposit is returned within thirty days after the lease ends.",
    "The tenant may sublet the apartment with the landlord's approval.",
    "Either party may terminate this lease with two months of notice.",
    "The landlord is responsible for water and the tenant for electricity.",
    "Guests may stay for at most fourteen nights in a row.",
    "The tenant must keep the garden tidy and mow the lawn in summer.",
    "Late payment incurs a fee of five percent of the monthly rent.",
    "The apartment is rented furnished, including the kitchen appliances.",
]
POLICY = [
    "Employees must submit expense reports within ten working days.",
    "Managers approve travel before any booking is made.",
    "Remote work is allowed on Mondays and Fridays.",
    "Overtime is paid at one and a half times the hourly rate.",
    "Laptops must be encrypted and locked when unattended.",
    "Contractors are not eligible for the annual bonus.",
    "Vacation requests are approved by the team lead.",
    "Customer data may not be stored on personal devices.",
    "The security team reviews access rights every quarter.",
    "New hires receive their equipment on the first day.",
]
CODE = [
    "def total(items):",
    "    result = 0",
    "    for item in items:",
    "        if item.price > 0:",
    "            result += item.price * item.quantity",
    "    return result",
    "",
    "def apply_discount(order, rate):",
    "    if order.customer.is_member:",
    "        order.total = order.total * (1 - rate)",
    "    return order",
    "",
    "def is_valid(user):",
    "    return user.age >= 18 and not user.banned",
]
LOGS = [
    "2024-05-01 10:00:01 INFO server started on port 8080",
    "2024-05-01 10:00:05 INFO connected to database primary",
    "2024-05-01 10:01:12 WARN slow query on table orders",
    "2024-05-01 10:02:40 INFO request served in 120 ms",
    "2024-05-01 10:03:02 ERROR payment service refused the connection",
    "2024-05-01 10:03:05 INFO retrying payment request",
    "2024-05-01 10:03:09 INFO payment request succeeded",
    "2024-05-01 10:04:30 WARN cache miss ratio above threshold",
]

# One meaning-changing edit: (kind, old, new) applied to the first sentence holding `old`.
LEASE_EDITS = [
    ("long-negation", "Pets are not allowed", "Pets are allowed"),
    ("long-role", "The tenant shall pay the rent", "The landlord shall pay the rent"),
    ("long-role", "The landlord shall repair", "The tenant shall repair"),
    ("long-word", "Smoking is prohibited", "Smoking is permitted"),
    ("long-modality", "The tenant may sublet", "The tenant must sublet"),
    ("long-negation", "The tenant may sublet", "The tenant may not sublet"),
    ("long-word", "The deposit is returned", "The deposit is kept"),
    (
        "long-role",
        "The landlord is responsible for water and the tenant for electricity",
        "The tenant is responsible for water and the landlord for electricity",
    ),
    ("long-word", "rented furnished", "rented unfurnished"),
    ("long-word", "in summer", "in winter"),
    ("long-number", "at most fourteen nights", "at most four nights"),
    ("long-word", "first day of each month", "last day of each month"),
]
POLICY_EDITS = [
    ("long-modality", "Employees must submit", "Employees may submit"),
    ("long-role", "Managers approve travel", "Employees approve travel"),
    ("long-word", "on Mondays and Fridays", "on Mondays and Tuesdays"),
    ("long-negation", "Contractors are not eligible", "Contractors are eligible"),
    ("long-word", "approved by the team lead", "approved by the director"),
    ("long-negation", "may not be stored", "may be stored"),
    ("long-word", "every quarter", "every year"),
    ("long-word", "Laptops must be encrypted", "Laptops need not be encrypted"),
]
CODE_EDITS = [
    ("long-code", "item.price > 0", "item.price < 0"),
    ("long-code", "result += item.price", "result -= item.price"),
    ("long-code", "(1 - rate)", "(1 + rate)"),
    ("long-code", "user.age >= 18", "user.age >= 21"),
    ("long-negation", "and not user.banned", "and user.banned"),
    ("long-code", "if order.customer.is_member:", "if not order.customer.is_member:"),
    ("long-code", "return result", "return 0"),
]
LOG_EDITS = [
    ("long-word", "ERROR payment service", "INFO payment service"),
    ("long-word", "payment request succeeded", "payment request failed"),
    ("long-word", "connected to database primary", "connected to database replica"),
    ("long-number", "port 8080", "port 8081"),
    ("long-word", "WARN slow query on table orders", "WARN slow query on table customers"),
]


def harmless_edits(text: str, rng: random.Random) -> list[tuple[str, str]]:
    """(what, edited text) variants that cannot change the answer."""
    lines = text.split("\n")
    return [
        ("whitespace", text.replace(". ", ".  ").replace("\n", "\n\n")),
        ("trailing-space", "\n".join(line + "  " for line in lines)),
        ("greeting", "Hi! " + text),
        ("thanks", text + "\nThanks!"),
        ("bullets", "\n".join(("- " + line) if line.strip() else line for line in lines)),
        ("bold", text.replace(text.split()[0], "**" + text.split()[0] + "**", 1)),
        ("case", text[0].lower() + text[1:]),
    ]


def long_set(rng: random.Random) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    docs = [
        ("Summarize this lease:", LEASE, LEASE_EDITS, " "),
        ("Explain our travel and work policy:", POLICY, POLICY_EDITS, " "),
        ("Review this Python code:", CODE, CODE_EDITS, "\n"),
        ("What went wrong in these logs?", LOGS, LOG_EDITS, "\n"),
    ]
    for d, (ask, sentences, edits, sep) in enumerate(docs):
        # Lengths from a few sentences to the whole document, so the threshold shows.
        for size in range(1, len(sentences) + 1):
            body = sep.join(sentences[:size])
            text = f"{ask}\n{body}" if sep == "\n" else f"{ask} {body}"
            key = f"doc{d}:{size}"
            for n, (kind, old, new) in enumerate(edits):
                if old not in text:
                    continue
                edited = text.replace(old, new, 1)
                rows.append(
                    {
                        "a": text,
                        "b": edited,
                        "same": False,
                        "kind": kind,
                        "a_key": key,
                        "b_key": f"{key}:edit{n}",
                    }
                )
            for what, variant in harmless_edits(text, rng):
                if variant == text:
                    continue
                rows.append(
                    {
                        "a": text,
                        "b": variant,
                        "same": True,
                        "kind": "long-harmless",
                        "a_key": key,
                        "b_key": key,
                        "edit": what,
                    }
                )
    return rows


PERSON = [
    ("show me my orders", "show me your orders"),
    ("What is my account balance?", "What is your account balance?"),
    ("Can I cancel my subscription?", "Can you cancel my subscription?"),
    ("Where is my package?", "Where is your package?"),
    ("What time is my flight?", "What time is his flight?"),
    ("Read me my messages", "Read me her messages"),
    ("Did I pass the exam?", "Did you pass the exam?"),
    ("Send me my invoice", "Send me their invoice"),
    ("What is our refund policy?", "What is their refund policy?"),
    ("Can we see his report?", "Can we see her report?"),
    ("Delete my comments", "Delete his comments"),
    ("Should I tell her?", "Should she tell me?"),
]
MODALITY = [
    ("Can I cancel my order?", "Must I cancel my order?"),
    ("Can I cancel my order?", "Should I cancel my order?"),
    ("May I bring a dog into the office?", "Must I bring a dog into the office?"),
    ("Can employees work from home?", "Must employees work from home?"),
    ("Do I have to pay the deposit?", "Can I pay the deposit?"),
    ("Am I allowed to park here?", "Am I required to park here?"),
    ("Can I share my screen?", "Do I need to share my screen?"),
    ("Could I skip the meeting?", "Should I skip the meeting?"),
    ("Can guests use the pool?", "Must guests use the pool?"),
    ("Is it possible to return opened items?", "Is it mandatory to return opened items?"),
]
PERSON_SAME = [
    ("Can I cancel my order?", "can i cancel my order please"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("Where is my package?", "where's my package?"),
    ("Show me my orders", "Please show me my orders"),
    ("Can I bring a dog?", "Could I bring a dog?"),
    ("Must I pay the deposit?", "Do I have to pay the deposit?"),
    ("What is your refund policy?", "What's your refund policy?"),
    ("Can you cancel my subscription?", "Could you cancel my subscription?"),
]


def person_set() -> list[dict[str, object]]:
    # A question's key is its own wording, so that the same question in two sets has one key.
    def key(text: str) -> str:
        return text.lower().rstrip("?")

    rows: list[dict[str, object]] = []
    for kind, pairs in (("perspective", PERSON), ("modality", MODALITY)):
        for a, b in pairs:
            rows.append(
                {"a": a, "b": b, "same": False, "kind": kind, "a_key": key(a), "b_key": key(b)}
            )
            rows.append(
                {"a": b, "b": a, "same": False, "kind": kind, "a_key": key(b), "b_key": key(a)}
            )
    for a, b in PERSON_SAME:
        rows.append(
            {"a": a, "b": b, "same": True, "kind": "person-same", "a_key": key(a), "b_key": key(a)}
        )
    return rows


def write(name: str, rows: list[dict[str, object]]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(14)
    write("guard-order.jsonl", order_set(rng))
    write("guard-long.jsonl", long_set(rng))
    write("guard-person.jsonl", person_set())


if __name__ == "__main__":
    main()
