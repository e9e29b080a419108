"""What an exception raised by a chat model says, for the core's one classifier.

Python only reads the facts off the exception — its class names (most derived first), the
HTTP status, the response headers, a ``retry_after`` attribute, the provider's error code,
the message, ``is_retryable`` — and the core decides what they mean (``route/classify.rs``),
the same function the native path uses.
"""

from __future__ import annotations

from typing import Any

from langscale import _core

Facts = tuple[list[str], int | None, list[tuple[str, str]], float | None, str | None, str, bool]


def _headers(exc: BaseException) -> list[tuple[str, str]]:
    response = getattr(exc, "response", None)
    headers: Any = getattr(response, "headers", None) or getattr(exc, "headers", None)
    if headers is None:
        return []
    try:
        return [(str(k).lower(), str(v)) for k, v in headers.items()]
    except Exception:  # headers of an unknown type: read nothing from them
        return []


def _status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def facts(exc: BaseException) -> Facts:
    """The facts the classifier reads, in ``_core.classify_error``'s order."""
    code = getattr(exc, "code", None)
    return (
        [cls.__name__ for cls in type(exc).__mro__],
        _status(exc),
        _headers(exc),
        _number(getattr(exc, "retry_after", None)),
        code if isinstance(code, str) else None,
        str(exc),
        getattr(exc, "is_retryable", False) is True,
    )


def classify(exc: BaseException) -> tuple[str, float | None]:
    """(kind, retry_after seconds), as the router sees this exception."""
    return _core.classify_error(*facts(exc))
