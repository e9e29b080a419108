"""Typed stub of the Rust extension module ``langscale._core``."""

from collections.abc import Awaitable, Generator
from typing import Any, final

from typing_extensions import Self

__all__ = [
    "ChatStream",
    "ConfigError",
    "Endpoint",
    "ExactCache",
    "Execution",
    "LangscaleError",
    "NativeRouter",
    "Permit",
    "ProviderError",
    "RateLimitTimeout",
    "RateLimiter",
    "Ready",
    "RouteFailed",
    "Router",
    "SemanticCache",
    "Simulator",
    "__version__",
    "cache_key",
    "canonical_prompt",
]

__version__: str

class LangscaleError(Exception): ...
class ConfigError(LangscaleError): ...
class RateLimitTimeout(LangscaleError): ...
class ProviderError(LangscaleError): ...
class RouteFailed(LangscaleError): ...

@final
class RateLimiter:
    def __new__(
        cls,
        requests_per_second: float | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrency: int | None = None,
        burst: int | None = None,
        token_burst: int | None = None,
        priority_aging: float | None = None,
    ) -> Self: ...
    def try_acquire(
        self, tokens: int | None = None, priority: str = "standard"
    ) -> Permit | None: ...
    def acquire(
        self, tokens: int | None = None, priority: str = "standard", timeout: float | None = None
    ) -> Permit: ...
    def acquire_async(
        self, tokens: int | None = None, priority: str = "standard", timeout: float | None = None
    ) -> Awaitable[Permit]: ...
    @property
    def max_tokens(self) -> int | None: ...
    def stats(self) -> dict[str, Any]: ...

@final
class Permit:
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
    def lookup(self, prompt: str, llm_string: str) -> bytes | None: ...
    def update(self, prompt: str, llm_string: str, value: bytes) -> None: ...
    def remove(self, prompt: str, llm_string: str) -> None: ...
    def clear(self) -> None: ...
    def key_of(self, prompt: str, llm_string: str) -> int: ...
    @property
    def namespace(self) -> str: ...
    @namespace.setter
    def namespace(self, namespace: str) -> None: ...
    def stats(self) -> dict[str, int]: ...

def cache_key(namespace: str, llm_string: str, prompt: str) -> int: ...
def canonical_prompt(prompt: str) -> str: ...

_Found = tuple[str, bytes | None, float | None, str | None, str | None]

@final
class SemanticCache:
    def __new__(
        cls,
        threshold: float | None = None,
        maxsize: int | None = None,
        ttl: float | None = None,
        guard: bool = True,
        namespace: str | None = None,
        builtin: bool = True,
        flat_max: int | None = None,
        candidates: int | None = None,
    ) -> Self: ...
    @staticmethod
    def default_threshold() -> float: ...
    @property
    def threshold(self) -> float: ...
    def text_of(self, prompt: str) -> str: ...
    def lookup_exact(self, prompt: str, llm_string: str) -> bytes | None: ...
    def lookup(self, prompt: str, llm_string: str, vector: list[float] | None = None) -> _Found: ...
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

_Step = tuple[str, int | None, int | None, str | None, float | None]

@final
class Router:
    def __new__(
        cls,
        deployments: list[tuple[str, float, int, float, float, int | None, list[str]]],
        strategy: str = "priority",
        *,
        complexity_small: list[int] | None = None,
        complexity_large: list[int] | None = None,
        complexity_threshold: float = 0.5,
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
    ) -> Self: ...
    def start(
        self,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
    ) -> Execution: ...
    def snapshot(self) -> dict[str, Any]: ...

@final
class Execution:
    def next(self) -> _Step: ...
    def report_success(
        self, attempt: int, latency: float, input_tokens: int = 0, output_tokens: int = 0
    ) -> None: ...
    def report_failure(self, attempt: int, kind: str, retry_after: float | None = None) -> None: ...

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
        limiters: list[RateLimiter | None],
        shared: RateLimiter | None = None,
    ) -> Self: ...
    def chat(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
    ) -> tuple[int, _Response]: ...
    def achat(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
    ) -> Awaitable[tuple[int, _Response]]: ...
    def stream(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
    ) -> tuple[int, ChatStream]: ...
    def astream(
        self,
        request_json: str,
        estimated_input_tokens: int = 0,
        tools: int = 0,
        turns: int = 0,
        complexity_hint: float | None = None,
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
