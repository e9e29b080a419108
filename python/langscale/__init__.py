"""langscale: make existing LangChain agents scale.

Rust-backed drop-ins for LangChain's interfaces: ``RateLimiter`` (a ``BaseRateLimiter``) and
``ExactCache`` and ``SemanticCache`` (``BaseCache``s).
"""

from langscale._core import (
    ConfigError,
    LangscaleError,
    Permit,
    RateLimitTimeout,
    __version__,
)
from langscale.cache import ExactCache
from langscale.limiter import RateLimiter
from langscale.semantic import SemanticCache

__all__ = [
    "ConfigError",
    "ExactCache",
    "LangscaleError",
    "Permit",
    "RateLimitTimeout",
    "RateLimiter",
    "SemanticCache",
    "__version__",
]
