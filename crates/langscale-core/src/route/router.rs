//! The router: the deployments, the live state every request shares (calls in flight, latency
//! average, breaker, rate-limit cool-down, counters), and the snapshot that reads it out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::backoff::{Jitter, RetryPolicy};
use super::breaker::{Breaker, BreakerConfig, BreakerState, BreakerTransitions};
use super::budget::{RetryBudget, RetryBudgetConfig};
use super::deployment::{Deployment, RequestInfo};
use super::execution::Execution;
use super::stats::{DeploymentStats, ErrorCounts, LatencySummary};
use super::strategy::Strategy;
use super::RouteError;
use crate::clock::Clock;

#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    pub strategy: Strategy,
    pub retry: RetryPolicy,
    pub budget: RetryBudgetConfig,
    pub breaker: BreakerConfig,
    /// How long a deployment that answered 429 without Retry-After is left alone.
    pub default_cooldown: Duration,
    /// The longest cool-down a Retry-After can ask for.
    pub max_cooldown: Duration,
    /// Limit for each call, carried in `Step::Call` (shortened to the time left before the
    /// deadline).
    pub attempt_timeout: Option<Duration>,
    /// Limit for the whole request, retries and waits included (`RequestInfo::deadline` overrides).
    pub deadline: Option<Duration>,
    /// Start a second call on another deployment when the first has not answered after this.
    pub hedge_delay: Option<Duration>,
    /// Weight of the newest latency in the moving average (0 < alpha <= 1).
    pub ewma_alpha: f64,
    /// Output tokens the cost strategy assumes when a request does not say.
    pub default_output_tokens: u64,
    /// Seed for backoff jitter; `None` seeds from the clock and process id.
    pub seed: Option<u64>,
    /// Cost-aware fail-over: when the preferred deployment is cooling down or its breaker is
    /// open, a request with a deadline waits for it instead of failing over to one whose
    /// expected cost for this request is more than this many times higher, as long as it is
    /// back before the deadline. `None`: fail over at once, whatever the price.
    pub failover_price_ratio: Option<f64>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Priority,
            retry: RetryPolicy::default(),
            budget: RetryBudgetConfig::default(),
            breaker: BreakerConfig::default(),
            default_cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(600),
            attempt_timeout: None,
            deadline: None,
            hedge_delay: None,
            ewma_alpha: 0.3,
            default_output_tokens: 256,
            failover_price_ratio: None,
            seed: None,
        }
    }
}

impl RouterConfig {
    fn validate(&self, deployments: usize) -> Result<(), RouteError> {
        self.strategy.validate(deployments)?;
        self.retry.validate()?;
        self.budget.validate()?;
        self.breaker.validate()?;
        if self.max_cooldown < self.default_cooldown {
            return Err(RouteError::Config(format!(
                "max_cooldown ({:.3} s) must not be below default_cooldown ({:.3} s)",
                self.max_cooldown.as_secs_f64(),
                self.default_cooldown.as_secs_f64()
            )));
        }
        for (name, limit) in [
            ("attempt_timeout", self.attempt_timeout),
            ("deadline", self.deadline),
        ] {
            if limit.is_some_and(|d| d.is_zero()) {
                return Err(RouteError::Config(format!(
                    "{name} must be longer than 0 s, or unset for no limit"
                )));
            }
        }
        if let Some(r) = self.failover_price_ratio {
            if !(r.is_finite() && r >= 1.0) {
                return Err(RouteError::Config(format!(
                    "failover_price_ratio must be a finite number >= 1, got {r}"
                )));
            }
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(RouteError::Config(format!(
                "ewma_alpha must be above 0 and at most 1, got {}",
                self.ewma_alpha
            )));
        }
        Ok(())
    }
}

/// The live state of one deployment, shared by all requests.
#[derive(Debug)]
pub(crate) struct DeploymentState {
    in_flight: AtomicU64,
    /// f64 seconds as bits; NaN until the first success.
    ewma_bits: AtomicU64,
    /// Clock ns before which the deployment is left alone after a 429.
    cooldown_until: AtomicU64,
    breaker: Mutex<Breaker>,
    pub(crate) stats: DeploymentStats,
}

impl DeploymentState {
    fn new(breaker: &BreakerConfig) -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            ewma_bits: AtomicU64::new(f64::NAN.to_bits()),
            cooldown_until: AtomicU64::new(0),
            breaker: Mutex::new(Breaker::new(breaker)),
            stats: DeploymentStats::new(),
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn call_ended(&self) {
        // Never below zero, even if a caller's bug reported twice.
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    pub(crate) fn ewma_secs(&self) -> Option<f64> {
        let v = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }

    pub(crate) fn record_latency(&self, latency: Duration, alpha: f64) {
        let sample = latency.as_secs_f64();
        let _ = self
            .ewma_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let old = f64::from_bits(bits);
                let new = if old.is_nan() {
                    sample
                } else {
                    alpha * sample + (1.0 - alpha) * old
                };
                Some(new.to_bits())
            });
    }

    pub(crate) fn cool_until(&self, at: u64) {
        self.cooldown_until.fetch_max(at, Ordering::SeqCst);
    }

    /// The end of the current cool-down, if one is running at `now`.
    pub(crate) fn cooling_until(&self, now: u64) -> Option<u64> {
        let until = self.cooldown_until.load(Ordering::SeqCst);
        (until > now).then_some(until)
    }

    pub(crate) fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // Every breaker mutation leaves it consistent, so a poisoned lock is still usable.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Request-level counters.
#[derive(Debug, Default)]
pub(crate) struct RouterCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) fatal: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) deadline: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) retries_denied: AtomicU64,
    pub(crate) cheaper_first: AtomicU64,
}

/// One logical model over several deployments. Share it (`Arc`) between all requests and
/// threads; each request runs its own [`Execution`].
#[derive(Debug)]
pub struct Router {
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) config: RouterConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) states: Vec<DeploymentState>,
    /// Deployment indices by (priority, index).
    pub(crate) by_priority: Vec<usize>,
    pub(crate) round_robin: AtomicUsize,
    /// Smooth weighted round robin's running weights.
    pub(crate) weighted: Mutex<Vec<f64>>,
    pub(crate) budget: Mutex<RetryBudget>,
    pub(crate) jitter: Jitter,
    pub(crate) counters: RouterCounters,
    /// Per-tenant figures, top N tenants plus "other".
    pub(crate) tenants: super::tenants::TenantTable,
}

impl Router {
    pub fn new(
        deployments: Vec<Deployment>,
        config: RouterConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RouteError> {
        if deployments.is_empty() {
            return Err(RouteError::Config(
                "a router needs at least one deployment".into(),
            ));
        }
        for (i, d) in deployments.iter().enumerate() {
            d.validate()?;
            if deployments[..i].iter().any(|e| e.name == d.name) {
                return Err(RouteError::Config(format!(
                    "deployment name {:?} is used twice; names must be unique",
                    d.name
                )));
            }
        }
        config.validate(deployments.len())?;
        let mut by_priority: Vec<usize> = (0..deployments.len()).collect();
        by_priority.sort_by_key(|&i| deployments.get(i).map_or(i32::MAX, |d| d.priority));
        let seed = config
            .seed
            .unwrap_or_else(|| clock.now_nanos() ^ (u64::from(std::process::id()) << 32));
        Ok(Self {
            states: deployments
                .iter()
                .map(|_| DeploymentState::new(&config.breaker))
                .collect(),
            weighted: Mutex::new(vec![0.0; deployments.len()]),
            budget: Mutex::new(RetryBudget::new(&config.budget)),
            jitter: Jitter::new(seed),
            deployments,
            config,
            clock,
            by_priority,
            round_robin: AtomicUsize::new(0),
            counters: RouterCounters::default(),
            tenants: super::tenants::TenantTable::new(super::tenants::DEFAULT_TOP_TENANTS),
        })
    }

    /// Per-tenant figures: the top tenants by requests, most first, then "other".
    pub fn tenant_snapshot(&self) -> Vec<super::TenantSnapshot> {
        self.tenants.snapshot()
    }

    /// How many tenants get their own row (default 20, at most
    /// [`MAX_TOP_TENANTS`](super::MAX_TOP_TENANTS)); the rest are counted as "other".
    pub fn set_top_tenants(&self, top: usize) {
        self.tenants.set_top(top);
    }

    /// How many tenants get their own row.
    pub fn top_tenants(&self) -> usize {
        self.tenants.top()
    }

    /// What a call with this usage costs at the deployment tried first (the lowest
    /// priority): what an answer from a cache saved.
    pub fn first_choice_cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.by_priority
            .first()
            .and_then(|&d| self.deployments.get(d))
            .map_or(0.0, |d| d.cost(input_tokens, output_tokens))
    }

    /// Begin routing one request.
    pub fn start(self: &Arc<Self>, info: RequestInfo) -> Execution {
        Execution::new(Arc::clone(self), info)
    }

    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub(crate) fn state(&self, deployment: usize) -> Option<&DeploymentState> {
        self.states.get(deployment)
    }

    pub(crate) fn budget(&self) -> MutexGuard<'_, RetryBudget> {
        // Every budget mutation leaves it consistent, so a poisoned lock is still usable.
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every counter, read now.
    pub fn snapshot(&self) -> RouterSnapshot {
        let now = self.clock.now_nanos();
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouterSnapshot {
            strategy: self.config.strategy.as_str(),
            requests: load(&c.requests),
            active: load(&c.active),
            successes: load(&c.successes),
            failures: FailureCounts {
                fatal: load(&c.fatal),
                exhausted: load(&c.exhausted),
                unavailable: load(&c.unavailable),
                deadline: load(&c.deadline),
                abandoned: load(&c.abandoned),
            },
            retries_denied: load(&c.retries_denied),
            cheaper_first: load(&c.cheaper_first),
            deployments: self
                .deployments
                .iter()
                .zip(&self.states)
                .map(|(d, s)| {
                    let (breaker, breaker_transitions) = {
                        let mut b = s.breaker();
                        (b.state(now), b.transitions())
                    };
                    let usage = s.stats.usage();
                    let (input_tokens, output_tokens) = (usage.input, usage.output);
                    DeploymentSnapshot {
                        name: d.name.clone(),
                        requests: load(&s.stats.requests),
                        successes: load(&s.stats.successes),
                        errors: s.stats.errors(),
                        retries: load(&s.stats.retries),
                        fallbacks: load(&s.stats.fallbacks),
                        hedges: load(&s.stats.hedges),
                        cancelled: load(&s.stats.cancelled),
                        in_flight: s.in_flight(),
                        input_tokens,
                        output_tokens,
                        cost: d.charge(&usage),
                        breaker,
                        breaker_transitions,
                        cooldown_remaining: s
                            .cooling_until(now)
                            .map(|until| Duration::from_nanos(until - now)),
                        ewma_latency: s
                            .ewma_secs()
                            .and_then(|secs| Duration::try_from_secs_f64(secs).ok()),
                        latency: s.stats.latency.summary(),
                    }
                })
                .collect(),
        }
    }
}

/// Requests that ended without an answer, by why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCounts {
    /// An error retrying cannot fix (authentication, invalid request).
    pub fatal: u64,
    /// Every usable deployment was tried and failed.
    pub exhausted: u64,
    /// No deployment could take a call (circuits open, cool-downs beyond the deadline).
    pub unavailable: u64,
    pub deadline: u64,
    /// The caller dropped the execution before it finished.
    pub abandoned: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouterSnapshot {
    pub strategy: &'static str,
    /// Requests started.
    pub requests: u64,
    /// Requests running now.
    pub active: u64,
    pub successes: u64,
    pub failures: FailureCounts,
    /// Retries and hedges the retry budget refused.
    pub retries_denied: u64,
    /// Requests routed cheapest first because a USD budget of their tenant ran low.
    pub cheaper_first: u64,
    pub deployments: Vec<DeploymentSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSnapshot {
    pub name: String,
    /// Calls sent to this deployment, of every kind.
    pub requests: u64,
    pub successes: u64,
    pub errors: ErrorCounts,
    /// Calls that repeated an earlier call of the same request here.
    pub retries: u64,
    /// Calls that came here after the request failed elsewhere.
    pub fallbacks: u64,
    /// Calls started here as a hedge.
    pub hedges: u64,
    /// Calls abandoned: lost a hedge race, or the request failed or was dropped meanwhile.
    pub cancelled: u64,
    pub in_flight: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Price of the tokens used, from the deployment's prices.
    pub cost: f64,
    pub breaker: BreakerState,
    pub breaker_transitions: BreakerTransitions,
    /// Time left of a rate-limit cool-down.
    pub cooldown_remaining: Option<Duration>,
    /// Moving average of successful latencies; `None` before the first success.
    pub ewma_latency: Option<Duration>,
    pub latency: LatencySummary,
}

/// Hooks for breaker state shared between processes (`store::SharedBreakers`).
impl Router {
    /// Deployments whose breaker is open now, with how long it stays open.
    pub fn open_breakers(&self) -> Vec<(usize, Duration)> {
        let now = self.clock.now_nanos();
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let until = s.breaker().open_until()?;
                (until > now).then(|| (i, Duration::from_nanos(until - now)))
            })
            .collect()
    }

    /// Keep a deployment out of rotation for `duration` (another process's breaker for it
    /// opened), as a cool-down does.
    pub fn hold_off(&self, deployment: usize, duration: Duration) {
        if let Some(state) = self.states.get(deployment) {
            let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
            state.cool_until(self.clock.now_nanos().saturating_add(nanos));
        }
    }
}
