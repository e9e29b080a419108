"""langscale: make existing LangChain agents scale.

Rust-backed drop-ins for LangChain's interfaces: ``RateLimiter`` (a ``BaseRateLimiter``) and
``ExactCache`` and ``SemanticCache`` (``BaseCache``s), ``ScaledChatModel`` (a
``BaseChatModel`` routing, retrying and failing over across chat models).
"""

from langscale import metrics as metrics  # langscale.metrics.prometheus(), serve()
from langscale import sim as sim  # simulated providers: langscale.sim.serve

# Tenants: identity, budgets (issue 16)
from langscale._core import (
    BudgetExceeded,
    ConfigError,
    LangscaleError,
    Permit,
    RateLimitTimeout,
    RedisStore,
    SharedPermit,
    StoreError,
    __version__,
)
from langscale.budgets import Budgets
from langscale.cache import ExactCache

# Embedding and LangGraph node caches (issue 17)
from langscale.embed_cache import CachedEmbeddings
from langscale.embeddings import LocalEmbeddings
from langscale.endpoint import ChatEndpoint, ProviderError
from langscale.identity import deadline, tenant
from langscale.limiter import RateLimiter
from langscale.prices import Prices
from langscale.scaled import Deployment, ScaledChatModel, ScaledModelError
from langscale.semantic import SemanticCache


def __getattr__(name: str) -> object:
    # GraphCache needs LangGraph (the `graph` extra): imported on first use, not with langscale.
    if name == "GraphCache":
        from langscale.graph_cache import GraphCache

        return GraphCache
    msg = f"module 'langscale' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "BudgetExceeded",
    "Budgets",
    "tenant",
    "deadline",
    "ChatEndpoint",
    "ConfigError",
    "Deployment",
    "ExactCache",
    "LangscaleError",
    "LocalEmbeddings",
    "Permit",
    "Prices",
    "ProviderError",
    "RateLimitTimeout",
    "RateLimiter",
    "RedisStore",
    "ScaledChatModel",
    "ScaledModelError",
    "SemanticCache",
    "SharedPermit",
    "StoreError",
    "__version__",
    # issue 17
    "CachedEmbeddings",
    "GraphCache",
]
