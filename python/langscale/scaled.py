"""``ScaledChatModel``: many chat models behind one, routed, retried and failed over by the
Rust router. Python only makes the model calls and sleeps; the router decides which
deployment, whether to retry or fail over, how long to back off, and keeps the breakers.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core import exceptions as lc
from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import ConfigDict, PrivateAttr, ValidationError

from langscale import _core
from langscale import identity as _identity
from langscale import metrics as _metrics
from langscale import store as _store
from langscale._drive import adrive, drive
from langscale._tenant_metrics import cache_hit as _cache_hit
from langscale._tokens import (
    NO_USAGE,
    Usage,
    estimate_input_tokens,
    model_name_of,
    tokens_of,
    usage_of,
)
from langscale.budgets import Budgets
from langscale.endpoint import (
    ChatEndpoint,
    ProviderError,
    chat_chunk,
    chat_result,
    provider_error,
    request_json,
    stream_chunks,
)
from langscale.limiter import RateLimiter
from langscale.prices import Prices
from langscale.semantic import SemanticCache


class ScaledModelError(_core.LangscaleError, lc.ModelError):
    """The router gave up and no deployment's own exception explains why (e.g. all breakers
    open). Where a deployment raised, that exception is re-raised instead. Either way the
    exception carries one note per failed attempt (``__notes__``), naming the deployment."""


class Deployment:
    """A chat model plus what the router needs to know about it. Every setting is checked
    here: a bad one raises ``ConfigError`` naming it.

    Prices are per 1,000 tokens: ``price_in``, ``price_out``, and for input tokens the
    provider reports as read from or written to its prompt cache (LangChain's
    ``usage_metadata["input_token_details"]``: ``cache_read``, ``cache_creation``; OpenAI's
    ``prompt_tokens_details.cached_tokens`` on the native path) ``price_cache_read`` and
    ``price_cache_write`` (unset: ``price_in``). Budgets and cost figures charge each
    call's usage at these prices."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        name: str | None = None,
        weight: float = 1.0,
        priority: int | None = None,
        limiter: RateLimiter | None = None,
        price_in: float = 0.0,
        price_out: float = 0.0,
        context_window: int | None = None,
        tags: Sequence[str] = (),
        own_retries: bool = False,
        price_cache_read: float | None = None,
        price_cache_write: float | None = None,
    ) -> None:
        if not isinstance(model, BaseChatModel):
            msg = f"a deployment needs a LangChain chat model, got {model!r}"
            raise _core.ConfigError(msg)
        if not isinstance(own_retries, bool):
            msg = f"own_retries must be True or False, got {own_retries!r}"
            raise _core.ConfigError(msg)
        if limiter is not None and not isinstance(limiter, RateLimiter):
            msg = f"limiter must be a langscale.RateLimiter, got {limiter!r}"
            raise _core.ConfigError(msg)
        if name is None:
            found = getattr(model, "model_name", None) or getattr(model, "model", None)
            name = str(found or type(model).__name__)
        self.model = model if own_retries else _without_retries(model)
        self.own_retries = own_retries
        self.limiter = limiter
        (
            self.name,
            self.weight,
            self.priority,
            self.price_in,
            self.price_out,
            self.context_window,
            self.tags,
            self.price_cache_read,
            self.price_cache_write,
        ) = _core.check_deployment(
            name,
            weight,
            priority,
            price_in,
            price_out,
            context_window,
            tags,
            price_cache_read,
            price_cache_write,
        )
        if priority is None:
            self.priority = None  # its place in the list

    def spec(self, index: int, names: set[str]) -> tuple:
        name = self.name if self.name not in names else f"{self.name}#{index}"
        names.add(name)
        return (
            name,
            self.weight,
            self.priority if self.priority is not None else index,
            self.price_in,
            self.price_out,
            self.context_window,
            self.tags,
            self.price_cache_read,
            self.price_cache_write,
        )

    def __repr__(self) -> str:
        return f"Deployment({self.name!r}, weight={self.weight}, priority={self.priority})"


# -- the router owns retries ---------------------------------------------------------------

_LOG = logging.getLogger("langscale.scaled")
_TOLD: set[str] = set()
_TOLD_LOCK = threading.Lock()


def _without_retries(model: BaseChatModel) -> BaseChatModel:
    """The model with its own retries off (``max_retries=0``), so that every attempt the
    router makes is one provider call and the router sees each 429 it routes around. The
    model is built again from the settings it was given (its SDK client takes max_retries
    when it is made); a model without ``max_retries``, or with it at 0, is used as it is.
    ``Deployment(model, own_retries=True)`` keeps the model's own retries."""
    fields = type(model).model_fields
    if "max_retries" not in fields or getattr(model, "max_retries", None) == 0:
        return model
    given = {
        name: getattr(model, name)
        for name in model.model_fields_set
        if name in fields and not fields[name].exclude and name != "max_retries"
    }
    try:
        copy = type(model)(**given, max_retries=0)
    except Exception:  # a model that cannot be rebuilt from its own settings
        copy = model.model_copy(update={"max_retries": 0})
    name = type(model).__name__
    with _TOLD_LOCK:
        first = name not in _TOLD
        _TOLD.add(name)
    if first:
        _LOG.info(
            "%s: its own retries are off (max_retries=0); the router retries and fails over. "
            "Deployment(model, own_retries=True) keeps them.",
            name,
        )
    return copy


# -- when every attempt failed: one note per attempt on the exception raised -----------------

_NOTE_PREFIX = "langscale: "


def _with_attempts(
    err: BaseException, attempts: list[tuple[int, BaseException]], deps: list[Deployment]
) -> BaseException:
    """``err`` with a note per failed attempt (``__notes__``, shown under the traceback), so
    the one exception raised tells what every deployment answered. Notes a previous request
    left on the same exception object are replaced, not stacked."""
    notes = [n for n in getattr(err, "__notes__", ()) if not str(n).startswith(_NOTE_PREFIX)]
    if attempts:
        notes.append(f"{_NOTE_PREFIX}{len(attempts)} failed attempt(s):")
        for i, (index, exc) in enumerate(attempts, 1):
            where = f"deployment {index} ({deps[index].name})"
            notes.append(f"{_NOTE_PREFIX}  {i}. {where}: {type(exc).__name__}: {exc}")
    try:
        err.__notes__ = notes  # what add_note() keeps (Python 3.11+), set as one list
    except AttributeError:  # pragma: no cover - an exception type refusing attributes
        pass
    return err


def _failure(
    detail: str | None,
    attempt: int | None,
    errors: dict[int, tuple[int, BaseException]],
    deps: list[Deployment],
) -> BaseException:
    """What to raise when the router gives up: the deciding attempt's own exception (the
    type LangChain code catches), else a ScaledModelError caused by the last one; with a
    note per failed attempt either way. ``errors``: attempt -> (deployment index, error)."""
    attempts = [errors[a] for a in sorted(errors)]
    if attempt is not None and attempt in errors:
        err = errors[attempt][1]
    else:
        err = ScaledModelError(detail or "no deployment could serve the request")
        if attempts:
            err.__cause__ = attempts[-1][1]
    return _with_attempts(err, attempts, deps)


def _native_failure(exc: BaseException, deps: list[Deployment]) -> BaseException:
    """The same for the native loop: its ProviderError or RouteFailed, with the attempts the
    core lists as ``(attempt, deployment index, ProviderError)``."""
    errors = {a: (i, provider_error(e)) for a, i, e in getattr(exc, "attempts", None) or ()}
    if isinstance(exc, _core.RouteFailed):
        return _failure(str(exc), None, errors, deps)
    return _with_attempts(provider_error(exc), [errors[a] for a in sorted(errors)], deps)


def _child(
    run_manager: Any, cls: type, attempt: int | None = None, dep: Any = None, run: Any = None
) -> Any:
    """Callbacks for an inner model call, nested under this run so tracing sees each attempt
    as a child run, named by its deployment and attempt number, with the seconds it waited
    before it went out (its outcome is the child run's own end or error)."""
    if run_manager is None:
        return None
    metadata = dict(run_manager.inheritable_metadata or {})
    if attempt is not None:
        metadata["langscale_attempt"] = attempt
        metadata["langscale_deployment"] = dep.name if dep is not None else None
        metadata["langscale_waited_s"] = run.waited(attempt) if run is not None else None
    return cls(
        handlers=run_manager.inheritable_handlers,
        inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.run_id,
        tags=run_manager.inheritable_tags,
        inheritable_tags=run_manager.inheritable_tags,
        metadata=metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def _traced(run_manager: Any) -> bool:
    """Someone listens to this run: each attempt then goes through the Python driver as a
    child run of its own (the native loop makes no callbacks). Same decisions either way."""
    return run_manager is not None and bool(run_manager.handlers)


# Kwargs that BaseChatModel.generate turns into tracing metadata; never a model parameter.
_TRACING_KWARGS = ("ls_structured_output_format", "structured_output_format")


def _direct(
    model: BaseChatModel, run_manager: Any, kwargs: dict[str, Any], *, async_api: bool
) -> bool:
    """Whether the deployment's own ``_generate``/``_agenerate`` is the whole of the call:
    no one would see a nested run (no handlers on this run, no callbacks or verbose on the
    model) and nothing in BaseChatModel's wrapper would act (cache, rate limiter, streaming,
    v1 output). The wrapper costs ~80 us per call; this run's own wrapper still does the
    tracing, ids and response metadata around the result."""
    if run_manager is not None and run_manager.handlers:
        return False
    if model.callbacks or model.verbose or model.rate_limiter is not None:
        return False
    if _cache_applies(model):
        return False
    if model.output_version == "v1":
        return False
    return not model._should_stream(async_api=async_api, **kwargs)


def _priced(dep: Deployment, prices: Prices) -> Deployment:
    """``dep`` with the price file's prices for its model (and context window, where it has
    none) when it was given no prices of its own; unchanged otherwise (a copy when changed:
    a Deployment may be shared by several models)."""
    if dep.price_in or dep.price_out:
        return dep
    price = prices.get(model_name_of(dep.model) or dep.name)
    if price is None:
        return dep
    priced = copy.copy(dep)
    priced.price_in, priced.price_out = price.price_in, price.price_out
    if priced.price_cache_read is None:
        priced.price_cache_read = price.cache_read
    if priced.price_cache_write is None:
        priced.price_cache_write = price.cache_write
    if priced.context_window is None:
        priced.context_window = price.context_window
    return priced


def _cache_applies(model: BaseChatModel) -> bool:
    """Whether LangChain consults a cache for ``model``: its own, or the global one unless
    it has ``cache=False``."""
    cache = model.cache
    return cache is not False and (cache is not None or get_llm_cache() is not None)


def _native_capable(model: BaseChatModel) -> bool:
    """A ChatEndpoint whose calls nothing in Python needs to see: no callbacks, rate
    limiter or cache of its own (this model's cache and limits still apply)."""
    return (
        isinstance(model, ChatEndpoint)
        and not model.callbacks
        and model.rate_limiter is None
        and not isinstance(model.cache, BaseCache)
    )


def _estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    chars = sum(
        len(m.content) if isinstance(m.content, str) else len(str(m.content)) for m in messages
    )
    return chars // 4 + 4 * len(messages)


def _landed(kind: str, value: Any) -> ChatResult | None:
    """What a coalesced request got from the call it waited for: a copy of the answer (no two
    callers share one mutable result), the call's exception raised, or None when the leader
    gave up or took too long (then the request makes its own call)."""
    if kind == "value":
        return value.model_copy(deep=True)
    if kind == "failed":
        raise value
    return None


def _semantic_cache(model: BaseChatModel) -> SemanticCache | None:
    """The langscale SemanticCache LangChain consults for ``model``, if that is the one."""
    cache = model.cache if isinstance(model.cache, BaseCache) else get_llm_cache()
    return cache if isinstance(cache, SemanticCache) else None


# Whether the cache answered the request now leading a flight (LangChain tells us through
# _convert_cached_generations, in the leader's own context).
_ANSWERED_BY_CACHE: ContextVar[bool] = ContextVar("langscale_answered_by_cache", default=False)


class _Lead:
    """A leader's handle on its flight: exact (by key) or near-duplicate (by ticket)."""

    __slots__ = ("flights", "key", "ticket")

    def __init__(self, flights: Any, key: str | None, ticket: int) -> None:
        self.flights, self.key, self.ticket = flights, key, ticket

    def land(self, result: ChatResult, from_cache: bool) -> None:
        """The leader's answer for its followers. With a SemanticCache, one the cache gave it
        is not passed on: the followers look the cache up themselves (microseconds), so a
        stored entry answers a near-duplicate only by the cache's own rule, never because it
        answered a similar question."""
        if self.key is not None:
            self.flights.land_value(self.key, result)
        elif from_cache:
            self.flights.abandon_similar(self.ticket)
        else:
            self.flights.land_similar(self.ticket, result)

    def fail(self, exc: BaseException) -> None:
        if self.key is None:
            self.flights.fail_similar(self.ticket, exc)
        else:
            self.flights.land_failure(self.key, self.ticket, exc)

    def abandon(self) -> None:
        if self.key is None:
            self.flights.abandon_similar(self.ticket)
        else:
            self.flights.abandon(self.key, self.ticket)


class ScaledChatModel(BaseChatModel):
    """``ScaledChatModel([primary, fallback, ...], limits=RateLimiter(...))``.

    Deployments are chat models or ``Deployment(model, ...)``. ``strategy``: priority
    (ordered fallbacks, the default), round_robin, weighted, least_in_flight,
    lowest_latency, lowest_cost or complexity. Rate-limited deployments cool down for
    Retry-After while another answers; server errors and timeouts retry with jittered
    backoff, then fail over; context overflow moves to a larger window; authentication and
    invalid requests fail at once with the original exception.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    deployments: list[Any]
    strategy: str = "priority"
    limits: Any = None
    max_attempts: int | None = None
    backoff_base: float | None = None
    backoff_cap: float | None = None
    retry_budget: float | None = None
    breaker_failure_rate: float | None = None
    breaker_min_requests: int | None = None
    breaker_open_for: float | None = None
    attempt_timeout: float | None = None
    deadline: float | None = None
    hedge_delay: float | None = None
    seed: int | None = None
    failover_price_ratio: float | None = None
    """Cost-aware fail-over: a request with a ``deadline`` waits for a cooling-down or
    breaker-held deployment rather than fail over to one whose expected cost is more than this
    many times higher, when it is back before the deadline. None: fail over at once."""
    complexity: Any = None
    """With strategy="complexity": a callable(messages) -> float in [0, 1] replacing the
    built-in score (length, tools requested, conversation depth); returning None keeps the
    built-in score for that request, anything else not a finite number is a ConfigError."""
    complexity_small: list[int] | None = None
    """Deployment indexes for simple requests (default: the first deployment)."""
    complexity_large: list[int] | None = None
    """Deployment indexes for hard requests (default: the others)."""
    complexity_threshold: float = 0.5
    native: bool = True
    """When every deployment is a ``ChatEndpoint`` (with no callbacks, rate limiter or cache
    of its own), run the whole loop in Rust: limits, calls, retries, fallbacks, breakers,
    backoff and timeouts, without returning to Python between attempts."""

    budgets: Any = None
    """A ``langscale.Budgets``: every call reserves its estimated cost for the tenant (from
    the RunnableConfig or ``langscale.tenant(...)``) first and settles its real cost after,
    on the native loop and the Python driver alike."""

    prices: Any = None
    """A ``langscale.Prices`` (LiteLLM's price file): prices and context windows, by model
    name, for deployments given no ``price_in``/``price_out`` of their own."""

    coalesce: bool = True
    """With a cache (``cache=`` or ``set_llm_cache``): identical requests in flight at once
    (same prompt, parameters and tenant) make one call; the others wait for its answer (a copy
    each) or its exception. With a ``langscale.SemanticCache`` a near-duplicate the cache
    would answer with the call's answer (same scope, similar last turn, the guard agreeing)
    waits for it too. ``invoke``/``ainvoke``/``generate`` only: streams are not shared."""
    coalesce_wait: float = 60.0
    """The longest a request waits for another's identical call before making its own."""

    top_tenants: Any = 20
    """Tenants with their own row in ``stats()["tenants"]`` and the metrics (by requests);
    the rest are counted as "other". 0 to 1000; 0 with no budgets or limits: no tenant read."""

    store: Any = None
    """A ``langscale.RedisStore`` (or ``redis_url=``): breakers shared with every process that
    uses the same ``shared_name`` and deployment names."""
    redis_url: str | None = None
    shared_name: str = "default"

    _deps: list[Deployment] = PrivateAttr(default_factory=list)
    _router: Any = PrivateAttr(default=None)
    _native: Any = PrivateAttr(default=None)
    _shared_breakers: Any = PrivateAttr(default=None)
    # Whether anything of the router uses the tenant (budgets, limiters' fair queues): the
    # identity of a call is read only then (~1 us per call otherwise spent for nothing).
    _tenanted: bool = PrivateAttr(default=False)
    # The model whose tokenizer counts prompts exactly (budgets reserve money on the count),
    # or None: the chars/4 estimate (~30x cheaper) is enough to route and charge limiters.
    _count_model: str | None = PrivateAttr(default=None)
    _ls_model_name: str = PrivateAttr(default="")
    _flights: Any = PrivateAttr(default=None)

    def __init__(self, deployments: Sequence[Any] | None = None, /, **kwargs: Any) -> None:
        if deployments is None:
            deployments = kwargs.pop("deployments", None)
        if deployments is not None and (
            not isinstance(deployments, Sequence) or isinstance(deployments, str)
        ):
            msg = f"deployments must be a list of chat models, got {deployments!r}"
            raise _core.ConfigError(msg)
        if not deployments:
            msg = "ScaledChatModel needs at least one deployment (a chat model)"
            raise _core.ConfigError(msg)
        try:
            super().__init__(deployments=list(deployments), **kwargs)
        except ValidationError as exc:
            raise _core.ConfigError(f"ScaledChatModel: {exc}") from None
        deps = [d if isinstance(d, Deployment) else Deployment(d) for d in self.deployments]
        if self.limits is not None and not isinstance(self.limits, RateLimiter):
            msg = f"limits must be a langscale.RateLimiter, got {self.limits!r}"
            raise _core.ConfigError(msg)
        if self.prices is not None:
            if not isinstance(self.prices, Prices):
                msg = f"prices must be a langscale.Prices, got {self.prices!r}"
                raise _core.ConfigError(msg)
            deps = [_priced(d, self.prices) for d in deps]
        if self.budgets is not None and not isinstance(self.budgets, Budgets):
            msg = f"budgets must be a langscale.Budgets, got {self.budgets!r}"
            raise _core.ConfigError(msg)
        names: set[str] = set()
        self._deps = deps
        self._ls_model_name = ",".join(d.name for d in deps)
        self._flights = _core.Coalescer(self.coalesce_wait)
        self._tenanted = (
            self.budgets is not None
            or self.limits is not None
            or any(d.limiter is not None for d in deps)
            or self.top_tenants != 0
        )
        self._count_model = model_name_of(deps[0].model) if self.budgets is not None else None
        self._router = _core.Router(
            [d.spec(i, names) for i, d in enumerate(deps)],
            self.strategy,
            limits=self.limits,
            limiters=[d.limiter for d in deps],
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            retry_budget=self.retry_budget,
            breaker_failure_rate=self.breaker_failure_rate,
            breaker_min_requests=self.breaker_min_requests,
            breaker_open_for=self.breaker_open_for,
            attempt_timeout=self.attempt_timeout,
            deadline=self.deadline,
            hedge_delay=self.hedge_delay,
            seed=self.seed,
            failover_price_ratio=self.failover_price_ratio,
            budgets=self.budgets._core if self.budgets is not None else None,
            top_tenants=self.top_tenants,
            complexity_small=self.complexity_small if self.complexity_small is not None else [0],
            complexity_large=self.complexity_large
            if self.complexity_large is not None
            else list(range(1, len(deps))),
            complexity_threshold=self.complexity_threshold,
        )
        shared = _store.resolve(self.store, self.redis_url)
        if shared is not None:
            self._shared_breakers = _core.SharedBreakers(shared, self._router, self.shared_name)
        if self.complexity is not None and not callable(self.complexity):
            msg = f"complexity must be a callable(messages) -> float, got {self.complexity!r}"
            raise _core.ConfigError(msg)
        if self.native and all(_native_capable(d.model) for d in deps):
            self._native = _core.NativeRouter(self._router, [d.model._endpoint for d in deps])
        _metrics.track(self)

    @property
    def _llm_type(self) -> str:
        return "langscale-scaled"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        deps = self._private()["_deps"]
        return {"deployments": [d.name for d in deps], "strategy": self.strategy}

    def stats(self) -> dict[str, Any]:
        """Router snapshot: requests, successes, failures, and per deployment counters,
        errors by kind, retries, fallbacks, breaker state and transitions, tokens, cost,
        latency percentiles."""
        return self._router.snapshot()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing names the provider langscale and the model by its deployments' names (each
        inner call is traced under its own model when anyone is listening); a call's own
        ``model``, ``temperature`` and ``max_tokens`` as BaseChatModel's would. Built here,
        not by BaseChatModel's: it looks for attributes this model does not have, and each
        miss on a pydantic model costs microseconds, on every call."""
        params = LangSmithParams(ls_provider="langscale", ls_model_type="chat")
        if stop:
            params["ls_stop"] = stop
        model = kwargs.get("model")
        params["ls_model_name"] = (
            model if isinstance(model, str) else self._private()["_ls_model_name"]
        )
        temperature = kwargs.get("temperature")
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens")
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        return params

    # -- tools: each deployment converts them its own way -------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=list(tools), **kwargs)

    def _target(
        self, model: BaseChatModel, kwargs: dict[str, Any]
    ) -> tuple[BaseChatModel, dict[str, Any]]:
        """The deployment's model and the kwargs to call it with, tools converted by it."""
        if "tools" not in kwargs:
            return model, kwargs
        rest = dict(kwargs)
        tools = rest.pop("tools")
        tool_kwargs = {
            k: rest.pop(k) for k in ("tool_choice", "parallel_tool_calls", "strict") if k in rest
        }
        bound = model.bind_tools(tools, **tool_kwargs)
        while isinstance(bound, RunnableBinding):
            rest = {**bound.kwargs, **rest}
            bound = bound.bound
        if not isinstance(bound, BaseChatModel):  # pragma: no cover - exotic bind_tools
            msg = f"{type(model).__name__}.bind_tools returned {type(bound).__name__}"
            raise _core.ConfigError(msg)
        for key in _TRACING_KWARGS:
            rest.pop(key, None)
        return bound, rest

    def _call(
        self,
        dep: Deployment,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        attempt: int | None = None,
        run: Any = None,
    ) -> ChatResult:
        model, call_kwargs = self._target(dep.model, kwargs)
        if _direct(model, run_manager, call_kwargs, async_api=False):
            return model._generate(messages, stop=stop, **call_kwargs)
        callbacks = _child(run_manager, CallbackManager, attempt, dep, run)
        out = model.generate([messages], stop=stop, callbacks=callbacks, **call_kwargs)
        return ChatResult(generations=out.generations[0], llm_output=out.llm_output)  # type: ignore[arg-type]

    async def _acall(
        self,
        dep: Deployment,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        attempt: int | None = None,
        run: Any = None,
    ) -> ChatResult:
        model, call_kwargs = self._target(dep.model, kwargs)
        if _direct(model, run_manager, call_kwargs, async_api=True):
            return await model._agenerate(messages, stop=stop, **call_kwargs)
        callbacks = _child(run_manager, AsyncCallbackManager, attempt, dep, run)
        out = await model.agenerate([messages], stop=stop, callbacks=callbacks, **call_kwargs)
        return ChatResult(generations=out.generations[0], llm_output=out.llm_output)  # type: ignore[arg-type]

    # -- the loop ---------------------------------------------------------------------------

    def _private(self) -> dict[str, Any]:
        """The private attributes. ``self._deps`` costs ~1 us per read (a failed lookup,
        then BaseModel.__getattr__); on the per-call path read them from this dict."""
        return self.__pydantic_private__  # type: ignore[return-value]

    def _input_tokens(self, messages: list[BaseMessage]) -> int:
        """The prompt's input tokens, as the limiters and budgets are charged before a call:
        counted exactly with the primary deployment's tokenizer (OpenAI's, where its model
        name says which) when budgets reserve money on it, else estimated from its length."""
        model = self._private()["_count_model"]
        if model is None:
            return _estimate_tokens(messages)
        return estimate_input_tokens(messages, model)

    def _complexity_hint(self, messages: list[BaseMessage]) -> Any:
        """The user's score for this request, as returned: the core checks it is a number."""
        if self.complexity is not None and self.strategy == "complexity":
            return self.complexity(messages)
        return None

    def _start(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], run_manager: Any = None
    ) -> Any:
        """A new run on the router (its limiters charged the token estimate first), for the
        tenant the run's config or ``langscale.tenant(...)`` names."""
        private = self._private()
        who = _identity.of_run(run_manager) if private["_tenanted"] else _identity.NOBODY
        # Positional: keyword arguments cost ~0.1 us each to parse on this per-call path.
        # (estimated_input_tokens, tools, turns, complexity_hint, tenant, user, output_tokens,
        # deadline)
        return private["_router"].start(
            self._input_tokens(messages),
            len(kwargs.get("tools") or ()) if kwargs else 0,
            len(messages),
            self._complexity_hint(messages),
            who.tenant,
            who.user,
            _max_tokens(kwargs) if kwargs else None,
            _identity.current_deadline(),
        )

    # LangChain passes a call's ``metadata`` to its run but not ``configurable``: a tenant
    # named there is copied into the metadata, where the run (and we) see it.
    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return super().invoke(
            input, config if config is None else _identity.into_metadata(config), **kwargs
        )

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await super().ainvoke(
            input, config if config is None else _identity.into_metadata(config), **kwargs
        )

    # stream()/astream() call _stream without a run manager: the config's tenant is made
    # current while each chunk is produced.
    def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
        return _identity.streamed(
            config,
            super().stream(
                input, config if config is None else _identity.into_metadata(config), **kwargs
            ),
        )

    def astream(self, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        return _identity.astreamed(
            config,
            super().astream(
                input, config if config is None else _identity.into_metadata(config), **kwargs
            ),
        )

    # The cache LangChain consults before _generate gets no config: the run's tenant is
    # made current around it, so a lookup never answers one tenant with another's entry.
    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if not _cache_applies(self):
            return BaseChatModel._generate_with_cache(self, messages, stop, run_manager, **kwargs)
        with _identity.bound(_identity.of_run(run_manager)):
            if not self.coalesce:
                return super()._generate_with_cache(messages, stop, run_manager, **kwargs)
            lead, flight = self._begin_flight(messages, stop, kwargs)
            if flight is not None:
                landed = _landed(*flight.wait())
                if landed is not None:
                    return landed
                return super()._generate_with_cache(messages, stop, run_manager, **kwargs)
            answered = _ANSWERED_BY_CACHE.set(False)
            try:
                result = super()._generate_with_cache(messages, stop, run_manager, **kwargs)
            except BaseException as exc:
                lead.fail(exc)
                raise
            else:
                lead.land(result, _ANSWERED_BY_CACHE.get())
            finally:
                _ANSWERED_BY_CACHE.reset(answered)
            return result

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if not _cache_applies(self):
            return await BaseChatModel._agenerate_with_cache(
                self, messages, stop, run_manager, **kwargs
            )
        with _identity.bound(_identity.of_run(run_manager)):
            if not self.coalesce:
                return await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
            lead, flight = await self._abegin_flight(messages, stop, kwargs)
            if flight is not None:
                landed = _landed(*await flight.wait_async())
                if landed is not None:
                    return landed
                return await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
            answered = _ANSWERED_BY_CACHE.set(False)
            try:
                result = await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
            except asyncio.CancelledError:
                lead.abandon()  # followers make their own call
                raise
            except BaseException as exc:
                lead.fail(exc)
                raise
            else:
                lead.land(result, _ANSWERED_BY_CACHE.get())
            finally:
                _ANSWERED_BY_CACHE.reset(answered)
            return result

    def _convert_cached_generations(self, cache_val: list[Any]) -> list[ChatGeneration]:
        """LangChain's cache hit (invoke/generate, sync or async): told to the budgets."""
        generations = super()._convert_cached_generations(cache_val)
        _cache_hit(self, _identity.current(), generations)
        _ANSWERED_BY_CACHE.set(True)
        return generations

    def _flight_key(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> str:
        """Which in-flight call this request may share: the cache's own key (the prompt
        without its random message ids, the parameters, the tenant's scope)."""
        llm_string = _identity.scoped(self._get_llm_string(stop=stop, **kwargs))
        return str(_core.cache_key("", llm_string, dumps(messages)))

    def _split(
        self,
        cache: SemanticCache,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> Any:
        """The prompt as ``cache`` splits it for a lookup, always within the tenant's scope
        (a cache shared by tenants still never makes one wait for another's call)."""
        llm_string = _identity.scoped(self._get_llm_string(stop=stop, **kwargs))
        return cache._core.split_prompt(dumps(messages), llm_string)

    def _begin_flight(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        """(lead, None): make the call, then land it with ``lead``; (None, flight): wait for
        the flight. With a SemanticCache a near-duplicate the cache would answer with the
        leader's answer follows too (the core decides, by the cache's own rule)."""
        flights = self._private()["_flights"]
        cache = _semantic_cache(self)
        if cache is None:
            key = self._flight_key(messages, stop, kwargs)
            ticket, flight = flights.begin(key)
            return (None if ticket is None else _Lead(flights, key, ticket)), flight
        split = self._split(cache, messages, stop, kwargs)
        vector = None if cache._embeddings is None else cache._embed(split.text)
        ticket, flight = flights.begin_similar(cache._core, split, vector)
        return (None if ticket is None else _Lead(flights, None, ticket)), flight

    async def _abegin_flight(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        """``_begin_flight`` for the async path (embeddings off the event loop)."""
        cache = _semantic_cache(self)
        if cache is None or (cache._embeddings is None and cache._native is None):
            return self._begin_flight(messages, stop, kwargs)
        flights = self._private()["_flights"]
        split = self._split(cache, messages, stop, kwargs)
        if cache._embeddings is not None:
            vector = await cache._aembed(split.text)
            ticket, flight = flights.begin_similar(cache._core, split, vector)
        else:
            # The model takes milliseconds per text: when the comparison needs it (another
            # question in flight in the scope), embed on a worker thread. The cache remembers
            # the vector, so its lookup does not embed the text again.
            ticket, flight = flights.begin_similar(cache._core, split, None, True)
            if ticket is None and flight is None:
                ticket, flight = await asyncio.to_thread(flights.begin_similar, cache._core, split)
        return (None if ticket is None else _Lead(flights, None, ticket)), flight

    def _failure(
        self, detail: str | None, attempt: int | None, errors: dict[int, tuple[int, BaseException]]
    ) -> BaseException:
        return _failure(detail, attempt, errors, self._private()["_deps"])

    def _native_args(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        run_manager: Any,
    ) -> tuple[str, int, int, int, float | None, str | None, str | None, int | None, float | None]:
        """The request JSON and routing info for the native loop: as ``_start`` gives the
        Python driver's run, the tenant and user (the limiters' fair queues, the budgets) and
        the output tokens each call reserves (its ``max_tokens``, else the budgets' estimate)."""
        hint = self._complexity_hint(messages)
        body = request_json(messages, stop, kwargs)
        tools = len(kwargs.get("tools") or ())
        who = _identity.of_run(run_manager) if self._private()["_tenanted"] else _identity.NOBODY
        # (request_json, estimated_input_tokens, tools, turns, complexity_hint, tenant, user,
        # output_tokens, deadline)
        return (
            body,
            self._input_tokens(messages),
            tools,
            len(messages),
            hint,
            who.tenant,
            who.user,
            _max_tokens(kwargs) if kwargs else None,
            _identity.current_deadline(),
        )

    def _native_generate(
        self,
        native: Any,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: Any,
        run_manager: Any,
    ) -> ChatResult:
        try:
            _, raw = native.chat(*self._native_args(messages, stop, kwargs, run_manager))
        except (ProviderError, _core.RouteFailed) as exc:
            err = _native_failure(exc, self._private()["_deps"])
            raise err from err.__cause__
        return chat_result(raw)

    async def _native_agenerate(
        self,
        native: Any,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: Any,
        run_manager: Any,
    ) -> ChatResult:
        try:
            _, raw = await native.achat(*self._native_args(messages, stop, kwargs, run_manager))
        except (ProviderError, _core.RouteFailed) as exc:
            err = _native_failure(exc, self._private()["_deps"])
            raise err from err.__cause__
        return chat_result(raw)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        native = self._private()["_native"]
        if native is not None and not _traced(run_manager):
            return self._native_generate(native, messages, stop, kwargs, run_manager)
        deps = self._private()["_deps"]

        def call(index: int, attempt: int) -> tuple[ChatResult, Usage]:
            result = self._call(deps[index], messages, stop, run_manager, kwargs, attempt, run)
            return result, usage_of(result.generations)

        run = self._start(messages, kwargs, run_manager)
        return drive(run, call, self._failure, hedged=self.hedge_delay is not None)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        native = self._private()["_native"]
        if native is not None and not _traced(run_manager):
            return await self._native_agenerate(native, messages, stop, kwargs, run_manager)
        deps = self._private()["_deps"]

        async def call(index: int, attempt: int) -> tuple[ChatResult, Usage]:
            result = await self._acall(
                deps[index], messages, stop, run_manager, kwargs, attempt, run
            )
            return result, usage_of(result.generations)

        run = self._start(messages, kwargs, run_manager)
        return await adrive(run, call, self._failure, hedged=self.hedge_delay is not None)

    # -- streaming: fail over until the first chunk, then it is this deployment's stream --------

    # -- the cache for streams (LangChain consults it only for invoke/generate) -----------------

    def _stream_cache(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[BaseCache | None, tuple[str, str]]:
        """The cache LangChain would use for this call, and its (prompt, llm_string) key."""
        cache = self.cache if isinstance(self.cache, BaseCache) else None
        if cache is None and self.cache is None:
            cache = get_llm_cache()
        if cache is None or self.cache is False:
            return None, ("", "")
        normalized = [
            m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m
            for m in messages
        ]
        return cache, (dumps(normalized), self._get_llm_string(stop=stop, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        who = _identity.of_run(run_manager)
        cache, key = self._stream_cache(messages, stop, kwargs)
        with _identity.bound(who):
            cached = cache.lookup(*key) if cache is not None else None
        if isinstance(cached, list) and cached:
            _cache_hit(self, who, cached)
            for message in _replay(cached):
                yield _chunk(message, run_manager)
            return
        total: ChatGenerationChunk | None = None
        for chunk in self._stream_routed(messages, stop, run_manager, **kwargs):
            total = chunk if total is None else total + chunk
            yield chunk
        if cache is not None and total is not None:
            with _identity.bound(who):
                cache.update(*key, [_completed(total)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        who = _identity.of_run(run_manager)
        cache, key = self._stream_cache(messages, stop, kwargs)
        with _identity.bound(who):
            cached = await cache.alookup(*key) if cache is not None else None
        if isinstance(cached, list) and cached:
            _cache_hit(self, who, cached)
            for message in _replay(cached):
                yield await _achunk(message, run_manager)
            return
        total: ChatGenerationChunk | None = None
        async for chunk in self._astream_routed(messages, stop, run_manager, **kwargs):
            total = chunk if total is None else total + chunk
            yield chunk
        if cache is not None and total is not None:
            with _identity.bound(who):
                await cache.aupdate(*key, [_completed(total)])

    def _stream_routed(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        native = self._private()["_native"]
        if native is not None and not _traced(run_manager):
            try:
                _, stream = native.stream(*self._native_args(messages, stop, kwargs, run_manager))
                on_token = run_manager.on_llm_new_token if run_manager else None
                yield from stream_chunks(stream, on_token)
            except (ProviderError, _core.RouteFailed) as exc:
                err = _native_failure(exc, self._private()["_deps"])
                raise err from err.__cause__
            return
        deps = self._private()["_deps"]

        def call(index: int, attempt: int) -> tuple[tuple[Any, Iterator[Any]], Usage]:
            callbacks = _child(run_manager, CallbackManager, attempt, deps[index], run)
            model, call_kwargs = self._target(deps[index].model, kwargs)
            stream = iter(
                model.stream(messages, stop=stop, config={"callbacks": callbacks}, **call_kwargs)
            )
            return (next(stream, None), stream), NO_USAGE

        run = self._start(messages, kwargs, run_manager)
        first, rest = drive(run, call, self._failure, hedged=self.hedge_delay is not None)
        if first is None:
            return
        total = first
        try:
            yield _chunk(first, run_manager)
            for piece in rest:
                total += piece
                yield _chunk(piece, run_manager)
        finally:
            # The final chunk's usage; a stream cut short is charged for what it received.
            run.settle_usage(*_stream_usage(total, lambda: self._input_tokens(messages)))

    async def _astream_routed(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        native = self._private()["_native"]
        if native is not None and not _traced(run_manager):
            try:
                _, stream = await native.astream(
                    *self._native_args(messages, stop, kwargs, run_manager)
                )
                async for delta in stream:
                    chunk = chat_chunk(delta)
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            except (ProviderError, _core.RouteFailed) as exc:
                err = _native_failure(exc, self._private()["_deps"])
                raise err from err.__cause__
            return
        deps = self._private()["_deps"]

        async def call(index: int, attempt: int) -> tuple[tuple[Any, AsyncIterator[Any]], Usage]:
            callbacks = _child(run_manager, AsyncCallbackManager, attempt, deps[index], run)
            model, call_kwargs = self._target(deps[index].model, kwargs)
            stream = model.astream(
                messages, stop=stop, config={"callbacks": callbacks}, **call_kwargs
            ).__aiter__()
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                first = None
            return (first, stream), NO_USAGE

        run = self._start(messages, kwargs, run_manager)
        first, rest = await adrive(run, call, self._failure, hedged=self.hedge_delay is not None)
        if first is None:
            return
        total = first
        try:
            yield await _achunk(first, run_manager)
            async for piece in rest:
                total += piece
                yield await _achunk(piece, run_manager)
        finally:
            run.settle_usage(*_stream_usage(total, lambda: self._input_tokens(messages)))


def _stream_usage(total: Any, input_tokens: Callable[[], int]) -> Usage:
    """The tokens a stream used: its usage metadata (the final chunk's), else (cut short, or
    a provider that sends none) the prompt's estimate and what was received."""
    usage = getattr(total, "usage_metadata", None) or {}
    used = tokens_of(usage)
    if used[0] or used[1]:
        return used
    text = getattr(total, "text", "") or ""
    return input_tokens(), (len(text) + 3) // 4, 0, 0


def _max_tokens(kwargs: dict[str, Any]) -> int | None:
    """The call's ``max_tokens`` (what a budget reserves for output), if set."""
    for key in ("max_tokens", "max_completion_tokens"):
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _replay(generations: list[Any]) -> Iterator[AIMessageChunk]:
    """A cached answer as stream chunks: its text, then tool calls, usage and metadata."""
    for gen in generations:
        message = getattr(gen, "message", None)
        if not isinstance(message, AIMessage):
            yield AIMessageChunk(content=getattr(gen, "text", ""))
            continue
        calls = [
            {
                "name": call["name"],
                "args": json.dumps(call["args"]),
                "id": call.get("id"),
                "index": i,
                "type": "tool_call_chunk",
            }
            for i, call in enumerate(message.tool_calls)
        ]
        yield AIMessageChunk(
            content=message.content,
            additional_kwargs=message.additional_kwargs,
            response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata,
            tool_call_chunks=calls,
            id=message.id,
        )


def _completed(total: ChatGenerationChunk) -> ChatGeneration:
    """A finished stream as the generation the cache stores."""
    return ChatGeneration(
        message=message_chunk_to_message(total.message), generation_info=total.generation_info
    )


def _as_chunk(message: Any) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=message)


def _chunk(message: Any, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
    chunk = _as_chunk(message)
    if run_manager:
        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
    return chunk


async def _achunk(
    message: Any, run_manager: AsyncCallbackManagerForLLMRun | None
) -> ChatGenerationChunk:
    chunk = _as_chunk(message)
    if run_manager:
        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
    return chunk


__all__ = ["Deployment", "ScaledChatModel", "ScaledModelError"]
