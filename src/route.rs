//! Python face of the core router: `_core.Router` decides, `_core.Run` is one request. Python's
//! two drivers (sync and asyncio, for plain and streamed answers) make the model calls and
//! sleeps a run says; every decision (which deployment, permits and what a refusal means,
//! latency, retry or fail over, backoff, breaker, budget, what an error means) is the core's.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use langscale_core::clock::SystemClock;
use langscale_core::limit::AnyLimiter;
use langscale_core::route::classify::{self, ErrorFacts};
use langscale_core::route::{
    self, Action, AttemptId, BreakerConfig, Deployment, ErrorKind, Limits, RequestInfo,
    RetryBudgetConfig, RetryPolicy, RouterConfig, Strategy, Usage,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::args::{self, OutputTokens};
use crate::errors::{config_error, CoreError};
use crate::limit::any_limiter;

/// (name, weight, priority, price_in_per_1k, price_out_per_1k, context_window, tags,
/// price_cache_read_per_1k, price_cache_write_per_1k)
type DeploymentSpec = (
    String,
    f64,
    i32,
    f64,
    f64,
    Option<u64>,
    Vec<String>,
    Option<f64>,
    Option<f64>,
);

/// A deployment's settings as Python passes them (any may be missing but the name).
struct Settings<'a, 'py> {
    name: &'a Bound<'py, PyAny>,
    weight: Option<&'a Bound<'py, PyAny>>,
    priority: Option<&'a Bound<'py, PyAny>>,
    price_in: Option<&'a Bound<'py, PyAny>>,
    price_out: Option<&'a Bound<'py, PyAny>>,
    context_window: Option<&'a Bound<'py, PyAny>>,
    tags: Option<&'a Bound<'py, PyAny>>,
    price_cache_read: Option<&'a Bound<'py, PyAny>>,
    price_cache_write: Option<&'a Bound<'py, PyAny>>,
}

/// A deployment's settings, each converted by `args` and the whole checked by the core.
fn deployment(s: &Settings<'_, '_>) -> PyResult<Deployment> {
    let d = Deployment {
        name: args::text("name", s.name)?.to_owned(),
        weight: args::number("weight", s.weight)?.unwrap_or(1.0),
        priority: args::int32("priority", s.priority)?.unwrap_or(0),
        price_in: args::number("price_in", s.price_in)?.unwrap_or(0.0),
        price_out: args::number("price_out", s.price_out)?.unwrap_or(0.0),
        price_cache_read: args::number("price_cache_read", s.price_cache_read)?,
        price_cache_write: args::number("price_cache_write", s.price_cache_write)?,
        context_window: args::count("context_window", s.context_window)?,
        tags: s.tags.map_or(Ok(Vec::new()), |t| args::texts("tags", t))?,
    };
    d.validate().map_err(|e| config_error(e.to_string()))?;
    Ok(d)
}

fn spec(d: Deployment) -> DeploymentSpec {
    (
        d.name,
        d.weight,
        d.priority,
        d.price_in,
        d.price_out,
        d.context_window,
        d.tags,
        d.price_cache_read,
        d.price_cache_write,
    )
}

/// Check a deployment's settings: the same tuple back, or a ConfigError naming the bad one.
#[pyfunction]
#[pyo3(signature = (name, weight=None, priority=None, price_in=None, price_out=None, context_window=None, tags=None, price_cache_read=None, price_cache_write=None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per setting
fn check_deployment(
    name: &Bound<'_, PyAny>,
    weight: Option<&Bound<'_, PyAny>>,
    priority: Option<&Bound<'_, PyAny>>,
    price_in: Option<&Bound<'_, PyAny>>,
    price_out: Option<&Bound<'_, PyAny>>,
    context_window: Option<&Bound<'_, PyAny>>,
    tags: Option<&Bound<'_, PyAny>>,
    price_cache_read: Option<&Bound<'_, PyAny>>,
    price_cache_write: Option<&Bound<'_, PyAny>>,
) -> PyResult<DeploymentSpec> {
    deployment(&Settings {
        name,
        weight,
        priority,
        price_in,
        price_out,
        context_window,
        tags,
        price_cache_read,
        price_cache_write,
    })
    .map(spec)
}

/// One spec tuple as `Router` takes it.
fn from_spec(value: &Bound<'_, PyAny>) -> PyResult<Deployment> {
    let fields = args::items("deployment", value)?;
    let [name, weight, priority, price_in, price_out, context_window, tags, cache_read, cache_write] =
        fields.as_slice()
    else {
        return Err(config_error(format!(
            "a deployment is (name, weight, priority, price_in, price_out, context_window, tags, \
             price_cache_read, price_cache_write), got {}",
            args::describe(value)
        )));
    };
    deployment(&Settings {
        name,
        weight: Some(weight),
        priority: Some(priority),
        price_in: Some(price_in),
        price_out: Some(price_out),
        context_window: Some(context_window),
        tags: Some(tags),
        price_cache_read: Some(cache_read),
        price_cache_write: Some(cache_write),
    })
}

/// A call's usage as Python reports it (input counts the prompt-cache tokens too).
fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
    Usage {
        input,
        output,
        cache_read,
        cache_write,
    }
}

/// The score a `complexity` callable returned: a finite number, else a ConfigError naming it.
pub(crate) fn complexity_hint(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    args::number("the complexity callable's result", value)
}

fn strategy(
    name: &str,
    small: Option<Vec<usize>>,
    large: Option<Vec<usize>>,
    threshold: f64,
) -> PyResult<Strategy> {
    Ok(match name {
        "priority" => Strategy::Priority,
        "round_robin" => Strategy::RoundRobin,
        "weighted" => Strategy::Weighted,
        "least_in_flight" => Strategy::LeastInFlight,
        "lowest_latency" => Strategy::LowestLatency,
        "lowest_cost" => Strategy::LowestCost,
        "complexity" => Strategy::Complexity {
            small: small.unwrap_or_default(),
            large: large.unwrap_or_default(),
            threshold,
        },
        other => {
            return Err(config_error(format!(
                "strategy must be one of priority, round_robin, weighted, least_in_flight, lowest_latency, lowest_cost, complexity; got {other:?}"
            )))
        }
    })
}

/// A list of deployment indexes, or None.
fn indexes(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<usize>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    args::items(name, value)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let n = args::required_count(&format!("{name}[{i}]"), item)?;
            usize::try_from(n).map_err(|_| config_error(format!("{name}[{i}] is too large: {n}")))
        })
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

/// The router's kind for a failure, from what Python found on the exception (class names
/// most derived first, HTTP status, headers, a parsed Retry-After, provider code, message,
/// `is_retryable`). The one classifier: the native path uses the same function.
#[allow(clippy::too_many_arguments)]
fn classify_facts(
    classes: &[String],
    status: Option<i64>,
    headers: &[(String, String)],
    retry_after: Option<f64>,
    code: Option<&str>,
    message: &str,
    retryable: bool,
) -> ErrorKind {
    let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    classify::classify(&ErrorFacts {
        classes: &classes,
        status: status.and_then(|s| u16::try_from(s).ok()),
        headers: &headers,
        retry_after: retry_after
            .filter(|s| s.is_finite() && *s >= 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        code,
        message,
        retryable,
    })
}

/// `(kind, retry_after seconds)` for an exception's facts: see `Run.failed`.
#[pyfunction]
#[pyo3(signature = (classes, status=None, headers=Vec::new(), retry_after=None, code=None, message=String::new(), retryable=false))]
fn classify_error(
    classes: Vec<String>,
    status: Option<i64>,
    headers: Vec<(String, String)>,
    retry_after: Option<f64>,
    code: Option<String>,
    message: String,
    retryable: bool,
) -> (&'static str, Option<f64>) {
    let kind = classify_facts(
        &classes,
        status,
        &headers,
        retry_after,
        code.as_deref(),
        &message,
        retryable,
    );
    let after = match kind {
        ErrorKind::RateLimited { retry_after } => retry_after.map(|d| d.as_secs_f64()),
        _ => None,
    };
    (kind_name(kind), after)
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Other { retryable: true } => "other_retryable",
        other => other.as_str(),
    }
}

/// Routes requests across deployments; shared by every request of a ScaledChatModel.
#[pyclass(frozen, module = "langscale._core")]
pub struct Router {
    pub(crate) router: Arc<route::Router>,
    /// Permits every request takes: `limits` for the whole model, then the deployment's own.
    pub(crate) limits: Limits,
    /// Tenant budgets every request reserves from, if any (the native loop's too).
    pub(crate) budgets: Option<langscale_core::spend::Budgets>,
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (deployments, strategy=None, *, limits=None, limiters=None, complexity_small=None, complexity_large=None, complexity_threshold=None, max_attempts=None, backoff_base=None, backoff_cap=None, retry_budget=None, breaker_failure_rate=None, breaker_min_requests=None, breaker_open_for=None, attempt_timeout=None, deadline=None, hedge_delay=None, seed=None, failover_price_ratio=None, budgets=None, top_tenants=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        deployments: &Bound<'_, PyAny>,
        strategy: Option<&Bound<'_, PyAny>>,
        limits: Option<&Bound<'_, PyAny>>,
        limiters: Option<&Bound<'_, PyAny>>,
        complexity_small: Option<&Bound<'_, PyAny>>,
        complexity_large: Option<&Bound<'_, PyAny>>,
        complexity_threshold: Option<&Bound<'_, PyAny>>,
        max_attempts: Option<&Bound<'_, PyAny>>,
        backoff_base: Option<&Bound<'_, PyAny>>,
        backoff_cap: Option<&Bound<'_, PyAny>>,
        retry_budget: Option<&Bound<'_, PyAny>>,
        breaker_failure_rate: Option<&Bound<'_, PyAny>>,
        breaker_min_requests: Option<&Bound<'_, PyAny>>,
        breaker_open_for: Option<&Bound<'_, PyAny>>,
        attempt_timeout: Option<&Bound<'_, PyAny>>,
        deadline: Option<&Bound<'_, PyAny>>,
        hedge_delay: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        failover_price_ratio: Option<&Bound<'_, PyAny>>,
        budgets: Option<&Bound<'_, PyAny>>,
        top_tenants: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let top_tenants = self::top_tenants(top_tenants)?;
        let budgets = match budgets {
            Some(b) if !b.is_none() => Some(
                b.cast::<crate::spend::Budgets>()
                    .map_err(|_| {
                        config_error(format!(
                            "budgets must be a langscale.Budgets, got {}",
                            args::describe(b)
                        ))
                    })?
                    .get()
                    .budgets
                    .clone(),
            ),
            _ => None,
        };
        let deployments = args::items("deployments", deployments)?
            .iter()
            .map(from_spec)
            .collect::<PyResult<Vec<_>>>()?;
        let defaults = RouterConfig::default();
        let retry = RetryPolicy {
            max_attempts_per_deployment: args::positive_count("max_attempts", max_attempts)?
                .map_or(defaults.retry.max_attempts_per_deployment, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                }),
            backoff_base: args::seconds("backoff_base", backoff_base)?
                .unwrap_or(defaults.retry.backoff_base),
            backoff_cap: args::seconds("backoff_cap", backoff_cap)?
                .unwrap_or(defaults.retry.backoff_cap),
        };
        let budget = RetryBudgetConfig {
            ratio: args::positive_number("retry_budget", retry_budget)?
                .unwrap_or(defaults.budget.ratio),
            ..defaults.budget
        };
        let breaker = BreakerConfig {
            failure_rate: args::positive_number("breaker_failure_rate", breaker_failure_rate)?
                .unwrap_or(defaults.breaker.failure_rate),
            minimum_requests: args::positive_count("breaker_min_requests", breaker_min_requests)?
                .map_or(defaults.breaker.minimum_requests, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                }),
            open_for: args::seconds("breaker_open_for", breaker_open_for)?
                .unwrap_or(defaults.breaker.open_for),
            ..defaults.breaker
        };
        let config = RouterConfig {
            strategy: self::strategy(
                args::optional_text("strategy", strategy)?.unwrap_or("priority"),
                indexes("complexity_small", complexity_small)?,
                indexes("complexity_large", complexity_large)?,
                args::number("complexity_threshold", complexity_threshold)?.unwrap_or(0.5),
            )?,
            retry,
            budget,
            breaker,
            attempt_timeout: args::seconds("attempt_timeout", attempt_timeout)?,
            deadline: args::seconds("deadline", deadline)?,
            hedge_delay: args::seconds("hedge_delay", hedge_delay)?,
            seed: args::count("seed", seed)?,
            failover_price_ratio: args::number("failover_price_ratio", failover_price_ratio)?,
            ..defaults
        };
        let shared = match limits {
            Some(l) if !l.is_none() => Some(any_limiter("limits", l)?),
            _ => None,
        };
        let own = match limiters {
            Some(l) if !l.is_none() => args::items("limiters", l)?
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if l.is_none() {
                        Ok(None)
                    } else {
                        any_limiter(&format!("limiters[{i}]"), l).map(Some)
                    }
                })
                .collect::<PyResult<Vec<Option<AnyLimiter>>>>()?,
            _ => Vec::new(),
        };
        if own.len() > deployments.len() {
            return Err(config_error(format!(
                "{} limiters for {} deployments",
                own.len(),
                deployments.len()
            )));
        }
        let router = route::Router::new(deployments, config, Arc::new(SystemClock))
            .map_err(|e| config_error(e.to_string()))?;
        if let Some(top) = top_tenants {
            router.set_top_tenants(top);
        }
        Ok(Self {
            router: Arc::new(router),
            limits: Limits { shared, own },
            budgets,
        })
    }

    /// Start one request; `estimated_input_tokens` is what the limiters are charged first.
    /// With budgets, every call reserves for `tenant`/`user` (its input estimate plus
    /// `output_tokens`, else the budgets' output estimate) and settles with the real usage.
    #[pyo3(signature = (estimated_input_tokens=0, tools=0, turns=0, complexity_hint=None, tenant=None, user=None, output_tokens=None, deadline=None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        estimated_input_tokens: u64,
        tools: usize,
        turns: usize,
        complexity_hint: Option<&Bound<'_, PyAny>>,
        tenant: Option<&str>,
        user: Option<&str>,
        output_tokens: Option<OutputTokens>,
        deadline: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Run> {
        let spend = self.budgets.as_ref().map(|b| route::Spend {
            budgets: b.clone(),
            who: langscale_core::spend::Who::new(tenant, user),
            output_tokens: output_tokens.map(|t| t.0),
        });
        let info = RequestInfo {
            estimated_input_tokens,
            tools,
            turns,
            complexity_hint: self::complexity_hint(complexity_hint)?,
            tenant: tenant.map(Arc::from),
            deadline: args::seconds("deadline", deadline)?,
            ..RequestInfo::default()
        };
        let exec = self.router.start(info);
        let remote = self.budgets.as_ref().is_some_and(is_remote);
        Ok(Run {
            remote,
            run: Arc::new(Mutex::new(
                route::Run::new(exec, self.limits.clone(), estimated_input_tokens)
                    .with_spend(spend),
            )),
        })
    }

    /// Counters and latency per deployment, breaker states, request outcomes.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.router.snapshot();
        let d = PyDict::new(py);
        d.set_item("strategy", s.strategy)?;
        d.set_item("requests", s.requests)?;
        d.set_item("active", s.active)?;
        d.set_item("successes", s.successes)?;
        let failures = PyDict::new(py);
        failures.set_item("fatal", s.failures.fatal)?;
        failures.set_item("exhausted", s.failures.exhausted)?;
        failures.set_item("unavailable", s.failures.unavailable)?;
        failures.set_item("deadline", s.failures.deadline)?;
        failures.set_item("abandoned", s.failures.abandoned)?;
        d.set_item("failures", failures)?;
        d.set_item("retries_denied", s.retries_denied)?;
        d.set_item("cheaper_first", s.cheaper_first)?;
        let list = PyList::empty(py);
        for dep in &s.deployments {
            let x = PyDict::new(py);
            x.set_item("name", &dep.name)?;
            x.set_item("requests", dep.requests)?;
            x.set_item("successes", dep.successes)?;
            let e = PyDict::new(py);
            e.set_item("rate_limited", dep.errors.rate_limited)?;
            e.set_item("server", dep.errors.server)?;
            e.set_item("timeout", dep.errors.timeout)?;
            e.set_item("connection", dep.errors.connection)?;
            e.set_item("context_overflow", dep.errors.context_overflow)?;
            e.set_item("auth", dep.errors.auth)?;
            e.set_item("invalid_request", dep.errors.invalid_request)?;
            e.set_item("other", dep.errors.other)?;
            e.set_item("limited", dep.errors.limited)?;
            x.set_item("errors", e)?;
            x.set_item("retries", dep.retries)?;
            x.set_item("fallbacks", dep.fallbacks)?;
            x.set_item("hedges", dep.hedges)?;
            x.set_item("cancelled", dep.cancelled)?;
            x.set_item("in_flight", dep.in_flight)?;
            x.set_item("input_tokens", dep.input_tokens)?;
            x.set_item("output_tokens", dep.output_tokens)?;
            x.set_item("cost", dep.cost)?;
            x.set_item("breaker", dep.breaker.as_str())?;
            x.set_item("breaker_opened", dep.breaker_transitions.opened)?;
            x.set_item("breaker_half_opened", dep.breaker_transitions.half_opened)?;
            x.set_item("breaker_closed", dep.breaker_transitions.closed)?;
            x.set_item(
                "cooldown_remaining",
                dep.cooldown_remaining.map(|c| c.as_secs_f64()),
            )?;
            x.set_item("latency_p50", dep.latency.p50.as_secs_f64())?;
            x.set_item("latency_p95", dep.latency.p95.as_secs_f64())?;
            x.set_item("latency_p99", dep.latency.p99.as_secs_f64())?;
            x.set_item("latency_count", dep.latency.count)?;
            list.append(x)?;
        }
        d.set_item("deployments", list)?;
        d.set_item("tenants", tenant_rows(py, &self.router.tenant_snapshot())?)?;
        Ok(d)
    }

    /// A call answered from a cache for `tenant`/`user`, with this usage: with budgets, it
    /// is counted there as a cache hit that saved its price at the first-choice deployment.
    #[pyo3(signature = (tenant=None, user=None, input_tokens=0, output_tokens=0))]
    fn cache_hit(
        &self,
        py: Python<'_>,
        tenant: Option<&str>,
        user: Option<&str>,
        input_tokens: u64,
        output_tokens: u64,
    ) {
        let Some(budgets) = &self.budgets else {
            return;
        };
        let cost = langscale_core::spend::Cost {
            requests: 1,
            tokens: input_tokens.saturating_add(output_tokens),
            usd: self.router.first_choice_cost(input_tokens, output_tokens),
        };
        let who = langscale_core::spend::Who::new(tenant, user);
        off_gil_if(py, is_remote(budgets), || budgets.saved(&who, cost));
    }

    /// Tenants with their own row in the snapshot from now on; the rest are "other".
    fn set_top_tenants(&self, top: &Bound<'_, PyAny>) -> PyResult<()> {
        self.router.set_top_tenants(required_top_tenants(top)?);
        Ok(())
    }

    /// How many tenants get their own row.
    fn top_tenants(&self) -> usize {
        self.router.top_tenants()
    }
}

/// `top_tenants`: an integer from 0 to `MAX_TOP_TENANTS`, else a ConfigError naming it.
fn required_top_tenants(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    let max = route::MAX_TOP_TENANTS;
    args::required_count("top_tenants", value)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            config_error(format!(
                "top_tenants must be an integer from 0 to {max}, got {}",
                args::describe(value)
            ))
        })
}

fn top_tenants(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    value
        .filter(|v| !v.is_none())
        .map(required_top_tenants)
        .transpose()
}

/// Per-tenant rows by tenant, most requests first, "other" last.
fn tenant_rows<'py>(
    py: Python<'py>,
    rows: &[route::TenantSnapshot],
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for r in rows {
        let x = PyDict::new(py);
        x.set_item("requests", r.requests)?;
        x.set_item("successes", r.successes)?;
        x.set_item("errors", r.errors)?;
        x.set_item("input_tokens", r.input_tokens)?;
        x.set_item("output_tokens", r.output_tokens)?;
        x.set_item("spend", r.spend)?;
        x.set_item("cost_per_success", r.cost_per_success)?;
        x.set_item("throttled", r.throttled)?;
        x.set_item("queued", r.queued)?;
        x.set_item("rejected", r.rejected)?;
        x.set_item("latency_p50", r.latency.p50.as_secs_f64())?;
        x.set_item("latency_p95", r.latency.p95.as_secs_f64())?;
        x.set_item("latency_p99", r.latency.p99.as_secs_f64())?;
        x.set_item("latency_count", r.latency.count)?;
        out.set_item(&r.tenant, x)?;
    }
    Ok(out)
}

/// A step for Python's drivers: (kind, attempt, deployment, value). `kind` is "call" (value:
/// the attempt's timeout), "acquire" (call `acquire`/`aacquire`), "wait" or "sleep" (value:
/// seconds, None for as long as it takes), "done", or "fail" (value: the reason; raise the
/// attempt's own error where there is one).
type PyAction = (&'static str, Option<u32>, Option<usize>, Option<Py<PyAny>>);

/// One request: ask `next()`, do what it says, report each call with `succeeded`/`failed`.
#[pyclass(frozen, module = "langscale._core")]
pub struct Run {
    run: Arc<Mutex<route::Run>>,
    /// Its budgets are in Redis: a step may make a round trip.
    remote: bool,
}

impl Run {
    fn lock(&self) -> std::sync::MutexGuard<'_, route::Run> {
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One step of the run, without the GIL only when its budgets are in Redis.
    fn step<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut route::Run) -> R + Send) -> R {
        off_gil_if(py, self.remote, || f(&mut self.lock()))
    }
}

/// Budgets held in Redis: their operations make a round trip.
fn is_remote(budgets: &langscale_core::spend::Budgets) -> bool {
    matches!(budgets, langscale_core::spend::Budgets::Shared(_))
}

/// Runs `f` without the GIL when it may make a Redis round trip (`remote`), else with it:
/// a local step takes less than giving the GIL up and taking it back, which with other
/// threads waiting can cost a switch interval.
fn off_gil_if<R: Send>(py: Python<'_>, remote: bool, f: impl FnOnce() -> R + Send) -> R {
    if remote {
        py.detach(f)
    } else {
        f()
    }
}

fn seconds(py: Python<'_>, d: Option<Duration>) -> PyResult<Option<Py<PyAny>>> {
    d.map(|d| Ok(d.as_secs_f64().into_pyobject(py)?.into_any().unbind()))
        .transpose()
}

#[pymethods]
impl Run {
    fn next(&self, py: Python<'_>) -> PyResult<PyAction> {
        let action = self.step(py, route::Run::next);
        Ok(match action {
            Action::Call {
                attempt,
                deployment,
                timeout,
                ..
            } => (
                "call",
                Some(attempt.0),
                Some(deployment),
                seconds(py, timeout)?,
            ),
            // acquire()/aacquire() take the same request from the run.
            Action::Acquire(_) => ("acquire", None, None, None),
            Action::Wait(d) => ("wait", None, None, seconds(py, d)?),
            Action::Sleep(d) => ("sleep", None, None, seconds(py, Some(d))?),
            Action::Done {
                attempt,
                deployment,
            } => ("done", Some(attempt.0), Some(deployment), None),
            Action::Fail(reason) => {
                let last = reason.last_error();
                let run = self.lock();
                if let Some(refusal) = last.and_then(|e| run.refusal(e.attempt)) {
                    return Err(CoreError::from(refusal.clone()).into());
                }
                let detail = reason.to_string().into_pyobject(py)?.into_any().unbind();
                (
                    "fail",
                    last.map(|e| e.attempt.0),
                    last.map(|e| e.deployment),
                    Some(detail),
                )
            }
        })
    }

    /// Wait for the permits of the next call (GIL released), then ask `next()` again.
    fn acquire(&self, py: Python<'_>) -> PyResult<()> {
        let request = self.permit_request()?;
        let granted = py.detach(move || request.acquire_blocking());
        self.lock().permitted(granted);
        Ok(())
    }

    /// The same, awaitable; cancelling it gives the place back.
    fn aacquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let request = self.permit_request()?;
        let run = Arc::clone(&self.run);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let granted = request.acquire().await;
            run.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .permitted(granted);
            Ok(())
        })
    }

    /// The call succeeded (a stream: its first chunk came) with this usage.
    #[pyo3(signature = (attempt, input_tokens=0, output_tokens=0, cache_read=0, cache_write=0))]
    fn succeeded(
        &self,
        py: Python<'_>,
        attempt: u32,
        input_tokens: u64,
        output_tokens: u64,
        cache_read: u64,
        cache_write: u64,
    ) {
        let usage = usage(input_tokens, output_tokens, cache_read, cache_write);
        self.step(py, |r| r.succeeded(AttemptId(attempt), usage));
    }

    /// The call failed; what Python found on the exception (see `classify_error`). Returns the
    /// kind it was given.
    #[pyo3(signature = (attempt, classes, status=None, headers=Vec::new(), retry_after=None, code=None, message=String::new(), retryable=false))]
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        py: Python<'_>,
        attempt: u32,
        classes: Vec<String>,
        status: Option<i64>,
        headers: Vec<(String, String)>,
        retry_after: Option<f64>,
        code: Option<String>,
        message: String,
        retryable: bool,
    ) -> &'static str {
        let kind = classify_facts(
            &classes,
            status,
            &headers,
            retry_after,
            code.as_deref(),
            &message,
            retryable,
        );
        // Its budget reservation is released (a round trip for budgets in Redis).
        self.step(py, |r| r.failed(AttemptId(attempt), kind));
        kind_name(kind)
    }

    /// The real usage of a streamed answer, once read: settles the permits still held.
    fn settle(&self, py: Python<'_>, used_tokens: u64) {
        self.step(py, |r| r.settle(used_tokens));
    }

    /// Seconds `attempt` waited before it went out (backoff, cool-downs, a hedge's delay,
    /// permits); None for an attempt that never went out.
    fn waited(&self, attempt: u32) -> Option<f64> {
        self.lock()
            .waited(AttemptId(attempt))
            .map(|d| d.as_secs_f64())
    }

    /// The same with input and output apart (a stream's final usage, or what a stream cut
    /// short received): the budgets are charged at the deployment's prices.
    #[pyo3(signature = (input_tokens, output_tokens, cache_read=0, cache_write=0))]
    fn settle_usage(
        &self,
        py: Python<'_>,
        input_tokens: u64,
        output_tokens: u64,
        cache_read: u64,
        cache_write: u64,
    ) {
        let usage = usage(input_tokens, output_tokens, cache_read, cache_write);
        self.step(py, |r| r.settle_usage(usage));
    }

    /// Every limiter refusal of this request: (attempt, deployment, exception).
    fn refusals(&self) -> Vec<(u32, usize, PyErr)> {
        self.lock()
            .refusals()
            .iter()
            .map(|(a, d, e)| (a.0, *d, CoreError::from(e.clone()).into()))
            .collect()
    }
}

impl Run {
    fn permit_request(&self) -> PyResult<route::PermitRequest> {
        self.lock().pending_permits().ok_or_else(|| {
            config_error("acquire() is only for a run whose next step is \"acquire\"")
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Router>()?;
    m.add_function(wrap_pyfunction!(check_deployment, m)?)?;
    m.add_class::<Run>()?;
    m.add_function(wrap_pyfunction!(classify_error, m)?)?;
    Ok(())
}
