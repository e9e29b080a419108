"""Namespace and tenant isolation, for every way an entry travels: in one process, through the
exact cache's L2, through the semantic stream (live and for a late starter), after clear() and
a namespace change, between RedisStore tenants, and from another OS process. Property tests
draw the namespaces and tenants, odd but valid strings included (empty, unicode, colons,
braces, very long)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

import langscale
from langscale import ExactCache, SemanticCache

LLM = "fake-model{temperature:0}"
QUESTION = "What is the tallest mountain in the Alps?"
PARAPHRASE = "what is the tallest mountain in the alps"
MARK = "Which river flows through Vienna?"

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
ODD = ["", ":", "a:b", "{a}", "}{", "ü日本語", "x" * 5000, "\x00", " ", "default"]
namespaces = st.one_of(st.sampled_from(ODD), _text)
# A store's tenant is part of Redis key names: braces are refused there (hash tags).
tenants = st.one_of(
    st.none(),
    st.sampled_from(["", ":", "a:b", "ü日本語", "t" * 2000]),
    _text.filter(lambda t: "{" not in t and "}" not in t),
)
REDIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def prompt(text: str) -> str:
    return dumps([HumanMessage(content=text)])


def answer(text: str) -> list[ChatGeneration]:
    return [ChatGeneration(message=AIMessage(content=text))]


def content(found) -> str | None:
    return None if found is None else found[0].message.content


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def store(server, tenant: str | None = None, prefix: str | None = None) -> langscale.RedisStore:
    return langscale.RedisStore(
        server.url, prefix=prefix or f"t{uuid.uuid4().hex[:12]}", tenant=tenant
    )


# -- one process, no Redis -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(a=namespaces, b=namespaces)
def test_in_process_namespaces_never_cross(a, b):
    assume(a != b)
    for cls in (ExactCache, SemanticCache):
        first, second = cls(namespace=a), cls(namespace=b)
        first.update(prompt(QUESTION), LLM, answer("a"))
        assert second.lookup(prompt(QUESTION), LLM) is None
        assert content(first.lookup(prompt(QUESTION), LLM)) == "a"
        # a namespace change drops what was stored under the old name
        first.namespace = b
        assert first.lookup(prompt(QUESTION), LLM) is None
    semantic = SemanticCache(namespace=a)
    semantic.update(prompt(QUESTION), LLM, answer("a"))
    assert SemanticCache(namespace=b).lookup(prompt(PARAPHRASE), LLM) is None
    assert content(semantic.lookup(prompt(PARAPHRASE), LLM)) == "a"


# -- ExactCache through Redis ----------------------------------------------------------------


@REDIS
@given(a=namespaces, b=namespaces, ta=tenants, tb=tenants)
def test_exact_l2_never_crosses_namespaces_or_tenants(redis_server, a, b, ta, tb):
    assume((a, ta) != (b, tb))
    prefix = f"t{uuid.uuid4().hex[:12]}"
    sa, sb = store(redis_server, ta, prefix), store(redis_server, tb, prefix)
    ExactCache(store=sa, namespace=a).update(prompt(QUESTION), LLM, answer("a"))
    # a second cache (fresh L1) on the same Redis: only its own label hits
    other = ExactCache(store=sb, namespace=b)
    assert other.lookup(prompt(QUESTION), LLM) is None
    same = ExactCache(store=sa, namespace=a)
    assert content(same.lookup(prompt(QUESTION), LLM)) == "a"
    assert same.stats()["l2_hits"] == 1
    # clear() clears this label only, in every cache of it
    other.update(prompt(QUESTION), LLM, answer("b"))
    ExactCache(store=sa, namespace=a).clear()
    assert ExactCache(store=sa, namespace=a).lookup(prompt(QUESTION), LLM) is None
    wait_for(lambda: same.lookup(prompt(QUESTION), LLM) is None)  # its L1 too, within a poll
    assert content(ExactCache(store=sb, namespace=b).lookup(prompt(QUESTION), LLM)) == "b"


@REDIS
@given(a=namespaces, b=namespaces)
def test_exact_namespace_change_reads_only_the_new_label(redis_server, a, b):
    assume(a != b)
    s = store(redis_server)
    ExactCache(store=s, namespace=b).update(prompt(MARK), LLM, answer("b"))
    cache = ExactCache(store=s, namespace=a)
    cache.update(prompt(QUESTION), LLM, answer("a"))
    cache.namespace = b
    assert cache.lookup(prompt(QUESTION), LLM) is None
    assert content(cache.lookup(prompt(MARK), LLM)) == "b"
    cache.namespace = a
    assert content(cache.lookup(prompt(QUESTION), LLM)) == "a"  # L2 still has it


def test_prefix_and_tenant_that_spell_the_same_keys_do_not_cross(redis_server):
    # prefix "p:x" without a tenant and prefix "p" with tenant "x" name the same Redis keys;
    # the label inside each entry keeps them apart.
    base = f"t{uuid.uuid4().hex[:12]}"
    with_tenant = store(redis_server, "x", base)
    without = store(redis_server, None, f"{base}:x")
    assert ExactCache(store=with_tenant)._l2_key("p", LLM) == ExactCache(store=without)._l2_key(
        "p", LLM
    )
    ExactCache(store=with_tenant).update(prompt(QUESTION), LLM, answer("x"))
    cache = ExactCache(store=without)
    assert cache.lookup(prompt(QUESTION), LLM) is None
    assert cache.stats()["l2_misses"] == 1 and cache.stats()["l2_errors"] == 0
    writer = SemanticCache(store=with_tenant)
    reader, control = SemanticCache(store=without), SemanticCache(store=with_tenant)
    writer.update(prompt(QUESTION), LLM, answer("x"))
    SemanticCache(store=without).update(prompt(MARK), LLM, answer("mark"))
    wait_for(lambda: reader.lookup(prompt(MARK), LLM))
    assert wait_for(lambda: control.lookup(prompt(QUESTION), LLM))
    assert reader.lookup(prompt(QUESTION), LLM) is None


# -- SemanticCache through the stream ---------------------------------------------------------


@REDIS
@given(a=namespaces, b=namespaces)
def test_semantic_stream_never_crosses_namespaces(redis_server, a, b):
    assume(a != b)
    s = store(redis_server)
    writer_a, writer_b = SemanticCache(store=s, namespace=a), SemanticCache(store=s, namespace=b)
    live_b = SemanticCache(store=s, namespace=b)
    writer_a.update(prompt(QUESTION), LLM, answer("a"))
    writer_b.update(prompt(MARK), LLM, answer("mark"))  # appended after a's entry
    # once b's later entry arrived, a's was seen and skipped: neither exact nor semantic
    wait_for(lambda: live_b.lookup(prompt(MARK), LLM))
    assert live_b.lookup(prompt(QUESTION), LLM) is None
    assert live_b.lookup(prompt(PARAPHRASE), LLM) is None
    # a late starter reads the whole stream: same result
    late_b = SemanticCache(store=s, namespace=b)
    wait_for(lambda: late_b.lookup(prompt(MARK), LLM))
    assert late_b.lookup(prompt(PARAPHRASE), LLM) is None
    # and entries do travel to their own namespace
    late_a = SemanticCache(store=s, namespace=a)
    assert content(wait_for(lambda: late_a.lookup(prompt(PARAPHRASE), LLM))) == "a"
    assert late_a.lookup(prompt(MARK), LLM) is None


@REDIS
@given(ta=tenants, tb=tenants, a=namespaces)
def test_semantic_stream_never_crosses_tenants(redis_server, ta, tb, a):
    assume(ta != tb)
    prefix = f"t{uuid.uuid4().hex[:12]}"
    sa, sb = store(redis_server, ta, prefix), store(redis_server, tb, prefix)
    SemanticCache(store=sa, namespace=a).update(prompt(QUESTION), LLM, answer("a"))
    reader = SemanticCache(store=sb, namespace=a)
    SemanticCache(store=sb, namespace=a).update(prompt(MARK), LLM, answer("mark"))
    wait_for(lambda: reader.lookup(prompt(MARK), LLM))
    assert reader.lookup(prompt(PARAPHRASE), LLM) is None
    assert (
        content(
            wait_for(lambda: SemanticCache(store=sa, namespace=a).lookup(prompt(QUESTION), LLM))
        )
        == "a"
    )


@REDIS
@given(a=namespaces, b=namespaces)
def test_semantic_clear_reaches_only_its_namespace(redis_server, a, b):
    assume(a != b)
    s = store(redis_server)
    writer_a, writer_b = SemanticCache(store=s, namespace=a), SemanticCache(store=s, namespace=b)
    reader_a, reader_b = SemanticCache(store=s, namespace=a), SemanticCache(store=s, namespace=b)
    writer_a.update(prompt(QUESTION), LLM, answer("a"))
    writer_b.update(prompt(QUESTION), LLM, answer("b"))
    assert content(wait_for(lambda: reader_a.lookup(prompt(QUESTION), LLM))) == "a"
    assert content(wait_for(lambda: reader_b.lookup(prompt(QUESTION), LLM))) == "b"
    writer_a.clear()
    wait_for(lambda: reader_a.lookup(prompt(QUESTION), LLM) is None)
    writer_a.update(prompt(MARK), LLM, answer("after"))  # after the clear, in the same stream
    wait_for(
        lambda: reader_b.lookup(prompt(MARK), LLM) is None and reader_a.lookup(prompt(MARK), LLM)
    )
    assert content(reader_b.lookup(prompt(QUESTION), LLM)) == "b"
    # a late starter replays add, clear, add: only what came after the clear
    late_a = SemanticCache(store=s, namespace=a)
    wait_for(lambda: late_a.lookup(prompt(MARK), LLM))
    assert late_a.lookup(prompt(QUESTION), LLM) is None


@REDIS
@given(a=namespaces, b=namespaces)
def test_semantic_namespace_change_loads_the_new_label_only(redis_server, a, b):
    assume(a != b)
    s = store(redis_server)
    SemanticCache(store=s, namespace=b).update(prompt(MARK), LLM, answer("b"))
    cache = SemanticCache(store=s, namespace=a)
    cache.update(prompt(QUESTION), LLM, answer("a"))
    control = SemanticCache(store=s, namespace=a)
    assert content(wait_for(lambda: control.lookup(prompt(QUESTION), LLM))) == "a"
    cache.namespace = b
    assert cache.lookup(prompt(QUESTION), LLM) is None
    assert content(wait_for(lambda: cache.lookup(prompt(MARK), LLM))) == "b"  # caught up
    assert cache.lookup(prompt(PARAPHRASE), LLM) is None
    # the change is local: the other cache of namespace a keeps its entry
    assert content(control.lookup(prompt(QUESTION), LLM)) == "a"


# -- across OS processes -----------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from langchain_core.load import dumps
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration
    import langscale
    url, prefix, names, question = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    for tenant in (None, "t:1"):
        store = langscale.RedisStore(url, prefix=prefix, tenant=tenant)
        for i, name in enumerate(names):
            p = dumps([HumanMessage(content=question)])
            value = [ChatGeneration(message=AIMessage(content=f"{tenant}/{i}"))]
            langscale.ExactCache(store=store, namespace=name).update(p, "m", value)
            langscale.SemanticCache(store=store, namespace=name).update(p, "m", value)
    time.sleep(0.5)  # the stream appends are sent in the background
    """
)


def test_entries_stored_by_another_process_stay_in_their_namespace_and_tenant(redis_server):
    import json

    names = ["", "a", "a:b", "{a}", "ü日本語", "x" * 3000]
    prefix = f"t{uuid.uuid4().hex[:12]}"
    subprocess.run(
        [sys.executable, "-c", CHILD, redis_server.url, prefix, json.dumps(names), QUESTION],
        check=True,
        timeout=120,
    )
    for tenant in (None, "t:1", "t"):
        s = langscale.RedisStore(redis_server.url, prefix=prefix, tenant=tenant)
        for i, name in enumerate([*names, "unused"]):
            expected = None if tenant == "t" or name == "unused" else f"{tenant}/{i}"
            exact = ExactCache(store=s, namespace=name)
            assert content(exact.lookup(prompt(QUESTION), "m")) == expected, (tenant, name)
            semantic = SemanticCache(store=s, namespace=name)
            if expected is None:
                if tenant != "t":  # wait until every label's entry in the stream was seen
                    wait_for(lambda c=semantic: c._stream.counts()[0] >= len(names))
                assert semantic.lookup(prompt(PARAPHRASE), "m") is None, (tenant, name)
            else:
                found = wait_for(lambda c=semantic: c.lookup(prompt(PARAPHRASE), "m"))
                assert content(found) == expected, (tenant, name)
