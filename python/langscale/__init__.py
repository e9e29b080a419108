"""langscale: make existing LangChain agents scale.

Rust-backed drop-ins for LangChain's interfaces: ``RateLimiter`` (a ``BaseRateLimiter``) and
``ExactCache`` and ``SemanticCache`` (``BaseCache``s), ``ScaledChatModel`` (a
``BaseChatModel`` routing, retrying and failing over across chat models).
"""

from langscale._core import (
    ConfigError,
    LangscaleError,
    Permit,
    RateLimitTimeout,
    __version__,
)
from langscale.cache import ExactCache
from langscale.embeddings import LocalEmbeddings
from langscale.limiter import RateLimiter
from langscale.scaled import Deployment, ScaledChatModel, ScaledModelError
from langscale.semantic import SemanticCache

__all__ = [
    "ConfigError",
    "Deployment",
    "ExactCache",
    "LangscaleError",
    "LocalEmbeddings",
    "Permit",
    "RateLimitTimeout",
    "RateLimiter",
    "ScaledChatModel",
    "ScaledModelError",
    "SemanticCache",
    "__version__",
]
