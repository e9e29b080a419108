"""Typed stub of the Rust extension module ``langscale._core``."""

from collections.abc import Awaitable, Generator, Sequence
from os import PathLike
from typing import Any, final

from typing_extensions import Self

__all__ = [
    "BudgetExceeded",
    "Budgets",
    "ChatStream",
    "Coalescer",
    "ConfigError",
    "Endpoint",
    "ExactCache",
    "Flight",
    "IndexStream",
    "LangscaleError",
    "LocalEmbeddings",
    "NativeRouter",
    "NodeCache",
    "PendingWrite",
    "Permit",
    "ProviderError",
    "RateLimitTimeout",
    "RateLimiter",
    "Ready",
    "RedisStore",
    "RouteFailed",
    "Router",
    "Run",
    "SemanticCache",
    "SplitPrompt",
    "SharedBreakers",
    "SharedPermit",
    "StoreError",
    "Simulator",
    "__version__",
    "cache_key",
    "canonical_prompt",
    "check_deployment",
    "classify_error",
    "count_tokens",
]

__version__: str

class LangscaleError(Exception):
    """Base of every exception langscale raises."""

class ConfigError(LangscaleError):
    """A bad setting or argument; the message names it."""

class RateLimitTimeout(LangscaleError):
    """A limiter wait ran past its ``timeout``."""

class BudgetExceeded(LangscaleError):
    """A tenant or user is over a limit or budget whose policy is to raise; names the tenant,
    level, budget, spent, limit and when it resets."""

    tenant: str | None
    user: str | None
    level: str
    budget: str
    spent: float
    limit: float
    resets_in: float | None

@final
class Budgets:
    def __new__(cls, config: str, store: RedisStore | None = None) -> Self: ...
    @property
    def shared(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    def flush(self) -> None: ...
    def update(self, config: str) -> None: ...
    def saved(
        self, tenant: str | None = None, user: str | None = None, usd: float = 0.0, tokens: int = 0
    ) -> None: ...
    def report(self) -> dict[str, Any]: ...

class ProviderError(LangscaleError):
    """A provider answered with an error (``ChatEndpoint``); raised as a langchain-core
    ``ModelError`` subclass too."""

class RouteFailed(LangscaleError): ...

class StoreError(LangscaleError):
    """Redis could not be reached or refused a call."""

@final
class RateLimiter:
    """Held in this process, or with ``store`` in Redis for every process naming ``name``;
    a shared limit hands out ``SharedPermit``s."""

    def __new__(
        cls,
        requests_per_second: float | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrency: int | None = None,
        burst: int | None = None,
        token_burst: int | None = None,
        priority_aging: float | None = None,
        tenant_weights: dict[str, float] | None = None,
        *,
        store: RedisStore | None = None,
        name: str | None = None,
        lease: int | None = None,
        local_share: float | None = None,
        slot_ttl: float | None = None,
    ) -> Self: ...
    def try_acquire(
        self, tokens: int = 0, priority: str = "standard", tenant: str | None = None
    ) -> Permit | SharedPermit | None: ...
    def acquire(
        self,
        tokens: int = 0,
        priority: str = "standard",
        timeout: float | None = None,
        tenant: str | None = None,
    ) -> Permit | SharedPermit: ...
    def acquire_async(
        self,
        tokens: int = 0,
        priority: str = "standard",
        timeout: float | None = None,
        tenant: str | None = None,
    ) -> Awaitable[Permit | SharedPermit]: ...
    def set_tenant_weight(self, tenant: str, weight: float) -> None: ...
    @property
    def max_tokens(self) -> int | None: ...
    def stats(self) -> dict[str, Any]: ...

@final
class Permit:
    """An admission by a ``RateLimiter``: ``settle(actual_tokens)`` corrects the token
    estimate, ``release()`` (or leaving the ``with`` block) frees its concurrency slot."""

    def settle(self, actual_tokens: int) -> None: ...
    def release(self) -> None: ...
    @property
    def tokens(self) -> int: ...
    @property
    def priority(self) -> str: ...
    @property
    def released(self) -> bool: ...
    def __bool__(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...
    def __aenter__(self) -> Ready: ...
    def __aexit__(self, *_exc: object) -> Ready: ...

@final
class SharedPermit:
    """An admission by a Redis-backed limiter; used like ``Permit``. ``local`` tells an
    admission by this process's local share (Redis down)."""

    def settle(self, actual_tokens: int) -> None: ...
    def release(self) -> None: ...
    @property
    def tokens(self) -> int: ...
    @property
    def priority(self) -> str: ...
    @property
    def released(self) -> bool: ...
    @property
    def local(self) -> bool: ...
    def __bool__(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...
    def __aenter__(self) -> Ready: ...
    def __aexit__(self, *_exc: object) -> Ready: ...

@final
class Ready:
    def __await__(self) -> Generator[Any, None, Any]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> None: ...

@final
class ExactCache:
    def __new__(
        cls,
        maxsize: int | None = None,
        max_bytes: int | None = None,
        ttl: float | None = None,
        namespace: str | None = None,
    ) -> Self: ...
    def share(self, store: RedisStore) -> None: ...
    def lookup(self, prompt: str, llm_string: str) -> tuple[bytes, bool] | None: ...
    def lookup_local(self, prompt: str, llm_string: str) -> bytes | None: ...
    def fetch(self, prompt: str, llm_string: str) -> bytes | None: ...
    def fetch_async(self, prompt: str, llm_string: str) -> Awaitable[bytes | None]: ...
    def fetch_many(self, prompts: Sequence[str], llm_string: str) -> list[bytes | None]: ...
    def fetch_many_async(
        self, prompts: Sequence[str], llm_string: str
    ) -> Awaitable[list[bytes | None]]: ...
    def insert_many(
        self, prompts: Sequence[str], llm_string: str, values: Sequence[bytes]
    ) -> PendingWrite | None: ...
    def update(self, prompt: str, llm_string: str, value: bytes) -> bool: ...
    def update_async(self, prompt: str, llm_string: str, value: bytes) -> Awaitable[bool]: ...
    def unreadable(self, prompt: str, llm_string: str, shared: bool = False) -> None: ...
    def l2_key(self, prompt: str, llm_string: str) -> str: ...
    def l2_entry(self, prompt: str, llm_string: str, value: bytes) -> tuple[str, bytes]: ...
    def remove(self, prompt: str, llm_string: str) -> None: ...
    def clear(self) -> None: ...
    def key_of(self, prompt: str, llm_string: str) -> int: ...
    @property
    def namespace(self) -> str: ...
    @namespace.setter
    def namespace(self, namespace: str) -> None: ...
    def stats(self) -> dict[str, int]: ...

_NodeKey = tuple[tuple[str, ...], str]

@final
class NodeCache:
    def __new__(cls, max_entries: int) -> Self: ...
    def share(self, store: RedisStore) -> None: ...
    def get(self, keys: Sequence[_NodeKey]) -> list[tuple[str, bytes] | None]: ...
    def get_async(self, keys: Sequence[_NodeKey]) -> Awaitable[list[tuple[str, bytes] | None]]: ...
    def set(
        self, entries: Sequence[tuple[tuple[str, ...], str, str, bytes, float | None]]
    ) -> bool: ...
    def set_async(
        self, entries: Sequence[tuple[tuple[str, ...], str, str, bytes, float | None]]
    ) -> Awaitable[bool]: ...
    def clear(self, namespaces: Sequence[tuple[str, ...]] | None = None) -> bool: ...
    def clear_async(
        self, namespaces: Sequence[tuple[str, ...]] | None = None
    ) -> Awaitable[bool]: ...
    def refuse(self, key: _NodeKey) -> None: ...
    def l2_key(self, key: _NodeKey) -> str: ...
    def stats(self) -> dict[str, int]: ...

@final
class PendingWrite:
    def send(self) -> bool: ...
    def send_async(self) -> Awaitable[bool]: ...

def cache_key(namespace: str, llm_string: str, prompt: str) -> int: ...

@final
class Coalescer:
    def __new__(cls, bound: float | None = None) -> Self: ...
    def begin(self, key: str) -> tuple[int | None, Flight | None]: ...
    def land_value(self, key: str, value: Any) -> None: ...
    def land_failure(self, key: str, ticket: int, error: BaseException) -> bool: ...
    def abandon(self, key: str, ticket: int) -> bool: ...
    def begin_similar(
        self,
        cache: SemanticCache,
        split: SplitPrompt,
        vector: list[float] | None = None,
        defer: bool = False,
    ) -> tuple[int | None, Flight | None]: ...
    def land_similar(self, ticket: int, value: Any) -> bool: ...
    def fail_similar(self, ticket: int, error: BaseException) -> bool: ...
    def abandon_similar(self, ticket: int) -> bool: ...
    def stats(self) -> dict[str, int]: ...

@final
class Flight:
    def wait(self) -> tuple[str, Any]: ...
    def wait_async(self) -> Awaitable[tuple[str, Any]]: ...

def canonical_prompt(prompt: str) -> str: ...

_Found = tuple[str, bytes | None, float | None, str | None, str | None, int | None]

@final
class SemanticCache:
    def __new__(
        cls,
        threshold: float | None = None,
        maxsize: int | None = None,
        ttl: float | None = None,
        guard: bool | None = None,
        namespace: str | None = None,
        builtin: bool = True,
        flat_max: int | None = None,
        candidates: int | None = None,
        embedder: LocalEmbeddings | None = None,
        surface_threshold: float | None = None,
    ) -> Self: ...
    @staticmethod
    def default_threshold() -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def surface_threshold(self) -> float | None: ...
    def share(self, stream: IndexStream) -> None: ...
    def apply_shared(self) -> list[str]: ...
    def unreadable(self, kind: str, key: int) -> None: ...
    def text_of(self, prompt: str) -> str: ...
    def lookup_exact(self, prompt: str, llm_string: str) -> _Found | None: ...
    def lookup(self, prompt: str, llm_string: str, vector: list[float] | None = None) -> _Found: ...
    def split_prompt(self, prompt: str, llm_string: str) -> SplitPrompt: ...
    def lookup_exact_split(self, split: SplitPrompt) -> _Found | None: ...
    def lookup_split(self, split: SplitPrompt, vector: list[float] | None = None) -> _Found: ...
    def update(
        self, prompt: str, llm_string: str, value: bytes, vector: list[float] | None = None
    ) -> None: ...
    def remembered_embedding(self, text: str) -> list[float] | None: ...
    def remember_embedding(self, text: str, vector: list[float]) -> list[float]: ...
    def embed(self, text: str) -> list[float]: ...
    def clear(self) -> None: ...
    @property
    def namespace(self) -> str: ...
    @namespace.setter
    def namespace(self, namespace: str) -> None: ...
    def stats(self) -> dict[str, int]: ...

@final
class SplitPrompt:
    @property
    def text(self) -> str: ...

@final
class LocalEmbeddings:
    def __new__(
        cls,
        path: str | PathLike[str],
        batch_size: int | None = None,
        max_seq_length: int | None = None,
    ) -> Self: ...
    @staticmethod
    def default_threshold() -> float: ...
    @property
    def dim(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def max_seq_length(self) -> int: ...
    def tokenize(self, text: str) -> list[int]: ...
    def embed_query(self, text: str) -> list[float]: ...
    def embed_documents(self, texts: list[str] | tuple[str, ...]) -> list[list[float]]: ...

# (name, weight, priority, price_in, price_out, context_window, tags), as checked
# a RateLimiter (local or shared), or a langscale.RateLimiter wrapping one
_AnyLimiter = Any
# (name, weight, priority, price_in, price_out, context_window, tags, price_cache_read,
#  price_cache_write)
_DeploymentSpec = tuple[
    str, float, int, float, float, int | None, list[str], float | None, float | None
]

@final
class Router:
    def __new__(
        cls,
        deployments: list[_DeploymentSpec],
        strategy: str | None = None,
        *,
        limits: _AnyLimiter | None = None,
        limiters: list[_AnyLimiter | None] | None = None,
        complexity_small: list[int] | None = None,
        complexity_large: list[int] | None = None,
        complexity_threshold: float | None = None,
        max_attempts: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        retry_budget: float | None = None,
        breaker_failure_rate: float | None = None,
        breaker_min_requests: int | None = None,
        breaker_open_for: float | None = None,
        attempt_timeout: float | None = None,
        deadline: float | None = None,
        hedge_delay: float | None = None,
        seed: int | None = None,
        failover_price_ratio: float | None = None,
        budgets: Budgets | None = None,
        top_tenants: int | None = None,
    ) -> Self: ...
    def start(
        self,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
        tenant: str | None = None,
        user: str | None = None,
        output_tokens: int | None = None,
        deadline: float | None = None,
    ) -> Run: ...
    def snapshot(self) -> dict[str, Any]: ...
    def cache_hit(
        self,
        tenant: str | None = None,
        user: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None: ...
    def set_top_tenants(self, top: int) -> None: ...
    def top_tenants(self) -> int: ...

def check_deployment(
    name: str,
    weight: float | None = None,
    priority: int | None = None,
    price_in: float | None = None,
    price_out: float | None = None,
    context_window: int | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    price_cache_read: float | None = None,
    price_cache_write: float | None = None,
) -> _DeploymentSpec: ...

# (kind, attempt, deployment, value): value is seconds for call/wait/sleep, the reason for fail
_Action = tuple[str, int | None, int | None, float | str | None]

@final
class Run:
    def next(self) -> _Action: ...
    def acquire(self) -> None: ...
    def aacquire(self) -> Awaitable[None]: ...
    def succeeded(
        self,
        attempt: int,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read: int = 0,
        cache_write: int = 0,
    ) -> None: ...
    def failed(
        self,
        attempt: int,
        classes: list[str],
        status: int | None = None,
        headers: list[tuple[str, str]] = ...,
        retry_after: float | None = None,
        code: str | None = None,
        message: str = ...,
        retryable: bool = False,
    ) -> str: ...
    def settle(self, used_tokens: int) -> None: ...
    def waited(self, attempt: int) -> float | None: ...
    def settle_usage(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> None: ...
    def refusals(self) -> list[tuple[int, int, BaseException]]: ...

def classify_error(
    classes: list[str],
    status: int | None = None,
    headers: list[tuple[str, str]] = ...,
    retry_after: float | None = None,
    code: str | None = None,
    message: str = ...,
    retryable: bool = False,
) -> tuple[str, float | None]: ...

# (id, model, content, [(id, name, arguments)], finish_reason, (input, output, total) | None)
_Response = tuple[
    str | None, str | None, str, list[tuple[str, str, str]], str | None, tuple[int, int, int] | None
]
# (content, [(index, id, name, arguments)], finish_reason, usage, model, id)
_Delta = tuple[
    str,
    list[tuple[int, str | None, str | None, str | None]],
    str | None,
    tuple[int, int, int] | None,
    str | None,
    str | None,
]

@final
class Endpoint:
    def __new__(
        cls,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        params_json: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Self: ...
    @property
    def url(self) -> str: ...
    @property
    def model(self) -> str: ...
    def chat(self, request_json: str, timeout: float | None = None) -> _Response: ...
    def achat(self, request_json: str, timeout: float | None = None) -> Awaitable[_Response]: ...
    def stream(self, request_json: str, timeout: float | None = None) -> ChatStream: ...
    def astream(self, request_json: str, timeout: float | None = None) -> Awaitable[ChatStream]: ...

@final
class ChatStream:
    def __iter__(self) -> Self: ...
    def __next__(self) -> _Delta: ...
    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Awaitable[_Delta]: ...

@final
class NativeRouter:
    def __new__(
        cls,
        router: Router,
        endpoints: list[Endpoint],
    ) -> Self: ...
    def chat(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
        tenant: str | None = None,
        user: str | None = None,
        output_tokens: int | None = None,
        deadline: float | None = None,
    ) -> tuple[int, _Response]: ...
    def achat(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
        tenant: str | None = None,
        user: str | None = None,
        output_tokens: int | None = None,
        deadline: float | None = None,
    ) -> Awaitable[tuple[int, _Response]]: ...
    def stream(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
        tenant: str | None = None,
        user: str | None = None,
        output_tokens: int | None = None,
        deadline: float | None = None,
    ) -> tuple[int, ChatStream]: ...
    def astream(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
        tenant: str | None = None,
        user: str | None = None,
        output_tokens: int | None = None,
        deadline: float | None = None,
    ) -> Awaitable[tuple[int, ChatStream]]: ...

# Simulated OpenAI-compatible providers (langscale.sim)

@final
class Simulator:
    def __new__(cls, config_json: str, threads: int = 2) -> Simulator: ...
    @staticmethod
    def from_toml(text: str, threads: int = 2) -> Simulator: ...
    def base_urls(self) -> list[tuple[str, str]]: ...
    def stats(self, name: str) -> dict[str, int]: ...
    def timeline(self, name: str) -> list[tuple[int, int, int, int]]: ...
    def elapsed(self, name: str) -> float: ...
    def reset(self) -> None: ...
    @property
    def running(self) -> bool: ...
    def stop(self) -> None: ...

# -- shared state in Redis (src/store.rs) -------------------------------------------------------

@final
class RedisStore:
    """One connection to Redis (or Redis Cluster) shared by caches, limiters and routers:
    ``RedisStore(url, prefix=, tenant=, timeout=, cluster=, tls_ca=)``."""

    def __new__(
        cls,
        url: str | list[str],
        prefix: str | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        cluster: bool | None = None,
        tls_ca: bytes | None = None,
    ) -> Self: ...
    @property
    def up(self) -> bool: ...
    @property
    def prefix(self) -> str: ...
    @property
    def tenant(self) -> str | None: ...
    def key(self, tag: str, name: str) -> str: ...
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl: float | None = None) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def get_async(self, key: str) -> Awaitable[bytes | None]: ...
    def set_async(self, key: str, value: bytes, ttl: float | None = None) -> Awaitable[bool]: ...
    def flush_events(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...

@final
class SharedBreakers:
    def __new__(cls, store: RedisStore, router: Router, group: str) -> Self: ...
    def counts(self) -> tuple[int, int]: ...

@final
class IndexStream:
    def __new__(cls, store: RedisStore, name: str, maxlen: int = 100_000) -> Self: ...
    def publish(self, fields: list[tuple[str, bytes]]) -> None: ...
    def drain(self) -> list[dict[str, bytes]]: ...
    def counts(self) -> tuple[int, int]: ...

# -- input token counts (src/tokens.rs) ---------------------------------------------------------

# messages: (role, content) pairs; exact for OpenAI models (o200k_base / cl100k_base), else
# content characters // 4 + 4 per message
def count_tokens(model: str | None, messages: list[tuple[str, str]]) -> int: ...
