"""Classify an exception raised by a chat model into the router's error kinds.

langchain-core's ``ModelError`` family first (where the installed version has it), then the
HTTP status and ``Retry-After`` header that provider SDKs (openai, anthropic, httpx) put on
their exceptions, then Python's own timeout and connection errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

from langchain_core import exceptions as lc_exceptions

_CONTEXT_WORDS = ("context length", "context window", "maximum context", "too many tokens")


def _family(name: str) -> type[BaseException] | None:
    cls = getattr(lc_exceptions, name, None)
    return cls if isinstance(cls, type) else None


_BY_CLASS: list[tuple[type[BaseException] | None, str]] = [
    (_family("ContextOverflowError"), "context_overflow"),
    (_family("ModelRateLimitError"), "rate_limited"),
    (_family("ModelAuthenticationError"), "auth"),
    (_family("ModelPermissionDeniedError"), "auth"),
    (_family("ModelInvalidRequestError"), "invalid_request"),
    (_family("ModelNotFoundError"), "invalid_request"),
    (_family("ModelTimeoutError"), "timeout"),
    (_family("ModelConnectionError"), "connection"),
    (_family("ModelAPIError"), "server"),
]


def _headers(exc: BaseException) -> Any:
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) or getattr(exc, "headers", None)


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a ``retry_after`` attribute or a ``Retry-After`` header, if any."""
    value = getattr(exc, "retry_after", None)
    if value is None:
        headers = _headers(exc)
        if headers is not None:
            try:
                value = headers.get("retry-after") or headers.get("Retry-After")
            except Exception:  # headers of an unknown type
                value = None
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(str(value)).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - time.time()
    return max(seconds, 0.0)


def status_of(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int):
                return value
    return None


def classify(exc: BaseException) -> tuple[str, float | None]:
    """(kind, retry_after seconds) for the router."""
    after = retry_after(exc)
    for cls, kind in _BY_CLASS:
        if cls is not None and isinstance(exc, cls):
            return kind, after
    status = status_of(exc)
    message = str(exc).lower()
    if status == 429:
        return "rate_limited", after
    if status in (401, 403):
        return "auth", after
    if status in (408, 504):
        return "timeout", after
    if status is not None and 500 <= status < 600:
        return "server", after
    if status is not None and 400 <= status < 500:
        if any(w in message for w in _CONTEXT_WORDS):
            return "context_overflow", after
        return "invalid_request", after
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout", after
    if isinstance(exc, ConnectionError):
        return "connection", after
    if getattr(exc, "is_retryable", False):
        return "other_retryable", after
    return "other", after
