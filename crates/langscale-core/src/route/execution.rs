//! One request's state machine. `next()` says what to do now (call a deployment, wait for calls
//! in flight, sleep, or stop); `report()` takes an attempt's outcome and decides: retry with
//! backoff, fail over, cool a rate-limited deployment down, or fail fast. Every call it starts
//! counts as in flight on its deployment until reported, cancelled or the execution is dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Admission, BreakerState};
use super::deployment::{RequestInfo, Usage};
use super::nanos;
use super::router::Router;
use super::tenants::TenantOutcome;

/// How often a request waiting on a half-open deployment's probe looks again: its usual
/// latency, within these bounds (50 ms when it has none yet).
const PROBE_POLL_DEFAULT: Duration = Duration::from_millis(50);
const PROBE_POLL_MIN: Duration = Duration::from_millis(5);
const PROBE_POLL_MAX: Duration = Duration::from_millis(500);
/// Which call of an execution an outcome belongs to (0 for the first, then counting up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u32);

/// Why a call was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// The request's first call.
    First,
    /// Another call to a deployment this request already called.
    Retry,
    /// The first call to this deployment after a failure elsewhere.
    Fallback,
    /// A second call racing one still in flight.
    Hedge,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Retry => "retry",
            Self::Fallback => "fallback",
            Self::Hedge => "hedge",
        }
    }
}

/// What went wrong with a call, as the caller classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 429: this deployment is cooled down and another is tried at once.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// 5xx: retried with backoff, then failed over.
    Server,
    Timeout,
    Connection,
    /// The prompt does not fit: only deployments with a larger known window are tried (any
    /// other, if the window that overflowed is unknown).
    ContextOverflow,
    /// Fails the request at once; also counts against this deployment's breaker, so a revoked
    /// key stops taking traffic once the failure rate opens it.
    Auth,
    /// Fails the request at once: no deployment will accept it.
    InvalidRequest,
    /// Anything else: retried like a server error if `retryable`, else failed over at once.
    Other {
        retryable: bool,
    },
    /// One of our own limiters refused the call (its wait would pass the deadline, or the
    /// request holds more tokens than the bucket): not the deployment's fault, so its breaker
    /// does not count it; this request goes elsewhere, or fails at once when the refusing
    /// limiter is the one every deployment shares.
    Limited {
        every_deployment: bool,
    },
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Server => "server",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::ContextOverflow => "context_overflow",
            Self::Auth => "auth",
            Self::InvalidRequest => "invalid_request",
            Self::Other { .. } => "other",
            Self::Limited { .. } => "limited",
        }
    }

    /// Classify an HTTP status (the table in `classify`).
    pub fn from_http_status(status: u16, retry_after: Option<Duration>) -> Self {
        super::classify::from_status(status, None, "", retry_after)
    }

    /// Whether this outcome says the deployment is unhealthy (counts against its breaker).
    fn counts_against_breaker(self) -> bool {
        matches!(
            self,
            Self::Server | Self::Timeout | Self::Connection | Self::Auth | Self::Other { .. }
        )
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        /// Measured by the caller around the call itself.
        latency: Duration,
        usage: Usage,
    },
    Failure(ErrorKind),
}

/// A failed call, for the caller to re-raise its original exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptError {
    pub attempt: AttemptId,
    pub deployment: usize,
    pub error: ErrorKind,
}

/// Why a request failed. Where `last_error()` is set, the caller should re-raise that attempt's
/// original exception (so LangChain's own handling still sees it); otherwise raise this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    #[error(
        "deployment {} failed with a {} error, which retrying cannot fix",
        .0.deployment,
        .0.error.as_str()
    )]
    Fatal(AttemptError),
    #[error("every deployment that could serve the request failed{}", describe(.last))]
    Exhausted { last: Option<AttemptError> },
    #[error(
        "no deployment is available: {open} with an open circuit breaker, {cooling} cooling down after a rate limit{}",
        retry_hint(.retry_in)
    )]
    Unavailable {
        open: usize,
        cooling: usize,
        /// When the first of them may take calls again.
        retry_in: Option<Duration>,
        last: Option<AttemptError>,
    },
    #[error("the request deadline of {:.3} s passed{}", .deadline.as_secs_f64(), describe(.last))]
    DeadlineExceeded {
        deadline: Duration,
        last: Option<AttemptError>,
    },
}

fn describe(last: &Option<AttemptError>) -> String {
    last.map_or_else(String::new, |e| {
        format!(
            " (last: {} error from deployment {})",
            e.error.as_str(),
            e.deployment
        )
    })
}

fn retry_hint(retry_in: &Option<Duration>) -> String {
    retry_in.map_or_else(String::new, |d| {
        format!(
            "; the first may take calls again in {:.3} s",
            d.as_secs_f64()
        )
    })
}

impl FailReason {
    /// The failed call whose exception the caller should re-raise, if any.
    pub fn last_error(&self) -> Option<AttemptError> {
        match self {
            Self::Fatal(e) => Some(*e),
            Self::Exhausted { last }
            | Self::Unavailable { last, .. }
            | Self::DeadlineExceeded { last, .. } => *last,
        }
    }
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Call `deployment`, giving up after `timeout` (then report `ErrorKind::Timeout`).
    /// Report the outcome under `attempt`.
    Call {
        attempt: AttemptId,
        deployment: usize,
        kind: AttemptKind,
        timeout: Option<Duration>,
    },
    /// Calls are in flight: wait for one to finish and report it, or for at most this long
    /// (a hedge or the deadline is due), then ask again.
    Wait(Option<Duration>),
    /// Sleep this long (backoff, or a rate-limit cool-down), then ask again.
    Sleep(Duration),
    /// `attempt` succeeded: use its result; cancel any other call still running.
    Done {
        attempt: AttemptId,
        deployment: usize,
    },
    /// The request failed; cancel any call still running.
    Fail(FailReason),
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    deployment: usize,
    started: u64,
    admission: Admission,
    live: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tried {
    calls: u32,
    /// Not to be called again by this request.
    excluded: bool,
}

/// The next call to make when nothing is in flight.
#[derive(Debug, Clone, Copy)]
struct Pending {
    not_before: u64,
    /// Retry this deployment first (when it is still usable).
    prefer: Option<usize>,
    /// The retry budget has already been charged for it.
    paid: bool,
}

impl Pending {
    fn at(now: u64) -> Self {
        Self {
            not_before: now,
            prefer: None,
            paid: false,
        }
    }
}

/// One request's routing. Not shared: each request owns its own. Dropping it releases any
/// call still counted in flight.
#[derive(Debug)]
pub struct Execution {
    router: Arc<Router>,
    info: RequestInfo,
    complexity: f64,
    /// Clock ns when the request runs out of time, and the limit for messages.
    deadline: Option<(u64, Duration)>,
    attempts: Vec<Attempt>,
    tried: Vec<Tried>,
    /// After a context overflow on a known window, only larger windows are tried.
    window_above: Option<u64>,
    pending: Pending,
    hedged: bool,
    last: Option<AttemptError>,
    finished: Option<Step>,
    /// For the tenant's row: clock ns at start, provider 429s, waits for permits and local
    /// refusals seen, and the answering deployment while its usage is still unknown (a stream).
    started: u64,
    throttled: u64,
    queued: u64,
    rejected: u64,
    usage_due: Option<usize>,
    /// A budget of the tenant runs low: the cheapest deployments go first.
    cheaper_first: bool,
}

impl Execution {
    pub(crate) fn new(router: Arc<Router>, info: RequestInfo) -> Self {
        let now = router.clock.now_nanos();
        router.budget().record_request(now);
        router.counters.requests.fetch_add(1, Ordering::Relaxed);
        router.counters.active.fetch_add(1, Ordering::Relaxed);
        let mut tried = vec![Tried::default(); router.deployments.len()];
        // Skip windows the prompt cannot fit, unless none is large enough (the estimate may be
        // wrong, and the provider's answer is then the best error to give).
        let tokens = info.estimated_input_tokens;
        let fits = |w: Option<u64>| match w {
            Some(w) => w >= tokens,
            None => true,
        };
        if tokens > 0 && router.deployments.iter().any(|d| fits(d.context_window)) {
            for (t, d) in tried.iter_mut().zip(&router.deployments) {
                t.excluded = !fits(d.context_window);
            }
        }
        let deadline = info
            .deadline
            .or(router.config.deadline)
            .map(|d| (now.saturating_add(nanos(d)), d));
        Self {
            complexity: info.complexity(),
            info,
            deadline,
            attempts: Vec::new(),
            tried,
            window_above: None,
            pending: Pending::at(now),
            hedged: false,
            last: None,
            finished: None,
            started: now,
            throttled: 0,
            queued: 0,
            rejected: 0,
            usage_due: None,
            cheaper_first: false,
            router,
        }
    }

    /// What to do now. Once the request is done or failed, the same final step again.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Step {
        if let Some(step) = &self.finished {
            return step.clone();
        }
        let now = self.router.clock.now_nanos();
        if let Some((end, limit)) = self.deadline {
            if now >= end {
                return self.fail(FailReason::DeadlineExceeded {
                    deadline: limit,
                    last: self.last,
                });
            }
        }
        if self.live() > 0 {
            return self.while_in_flight(now);
        }
        if now < self.pending.not_before {
            return Step::Sleep(Duration::from_nanos(self.pending.not_before - now));
        }
        self.launch(now)
    }

    /// Take the outcome of a call. Outcomes of unknown, already reported or cancelled attempts,
    /// and any outcome after the request finished, are ignored.
    pub fn report(&mut self, attempt: AttemptId, outcome: Outcome) {
        if self.finished.is_some() {
            return;
        }
        let Some(a) = self.attempts.get_mut(attempt.0 as usize) else {
            return;
        };
        if !a.live {
            return;
        }
        a.live = false;
        let (deployment, admission) = (a.deployment, a.admission);
        let router = Arc::clone(&self.router);
        let Some(state) = router.state(deployment) else {
            return;
        };
        state.call_ended();
        let now = router.clock.now_nanos();
        match outcome {
            Outcome::Success { latency, usage } => {
                state.stats.record_success(latency, &usage);
                state.record_latency(latency, router.config.ewma_alpha);
                state.breaker().record_success(now, admission);
                router.counters.successes.fetch_add(1, Ordering::Relaxed);
                self.record_tenant_success(now, deployment, &usage);
                self.finish(Step::Done {
                    attempt,
                    deployment,
                });
            }
            Outcome::Failure(error) => self.on_failure(
                now,
                AttemptError {
                    attempt,
                    deployment,
                    error,
                },
                admission,
            ),
        }
    }

    /// Calls started so far.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }

    /// The deployment an attempt was sent to.
    pub fn deployment_of(&self, attempt: AttemptId) -> Option<usize> {
        self.attempts.get(attempt.0 as usize).map(|a| a.deployment)
    }

    /// Calls started and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.live()
    }

    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    pub fn info(&self) -> &RequestInfo {
        &self.info
    }

    /// Time left before the request's deadline, if it has one.
    pub fn time_left(&self) -> Option<Duration> {
        let now = self.router.clock.now_nanos();
        self.deadline
            .map(|(end, _)| Duration::from_nanos(end.saturating_sub(now)))
    }

    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn live(&self) -> usize {
        self.attempts.iter().filter(|a| a.live).count()
    }

    fn on_failure(&mut self, now: u64, err: AttemptError, admission: Admission) {
        let router = Arc::clone(&self.router);
        let d = err.deployment;
        let Some(state) = router.state(d) else {
            return;
        };
        state.stats.record_error(err.error);
        match err.error {
            ErrorKind::RateLimited { .. } => self.throttled += 1,
            ErrorKind::Limited { .. } => self.rejected += 1,
            _ => {}
        }
        {
            let mut breaker = state.breaker();
            if err.error.counts_against_breaker() {
                breaker.record_failure(now, admission);
            } else {
                breaker.release(admission);
            }
        }
        self.last = Some(err);
        self.pending = Pending::at(now);
        match err.error {
            ErrorKind::Auth
            | ErrorKind::InvalidRequest
            | ErrorKind::Limited {
                every_deployment: true,
            } => {
                self.fail(FailReason::Fatal(err));
            }
            ErrorKind::RateLimited { retry_after } => {
                let config = &router.config;
                let cool = retry_after
                    .unwrap_or(config.default_cooldown)
                    .min(config.max_cooldown);
                state.cool_until(now.saturating_add(nanos(cool)));
            }
            ErrorKind::ContextOverflow => {
                self.exclude(d);
                if let Some(w) = router.deployments.get(d).and_then(|x| x.context_window) {
                    self.window_above = Some(self.window_above.map_or(w, |x| x.max(w)));
                }
            }
            ErrorKind::Other { retryable: false }
            | ErrorKind::Limited {
                every_deployment: false,
            } => self.exclude(d),
            ErrorKind::Server
            | ErrorKind::Timeout
            | ErrorKind::Connection
            | ErrorKind::Other { retryable: true } => {
                // With a hedge still running, its outcome decides what comes next.
                if self.live() == 0 {
                    self.plan_retry(now, d);
                }
            }
        }
    }

    /// After a retryable failure on `d`: retry it after a backoff, or leave it and fail over.
    fn plan_retry(&mut self, now: u64, d: usize) {
        let router = Arc::clone(&self.router);
        let policy = &router.config.retry;
        let calls = self.tried.get(d).map_or(u32::MAX, |t| t.calls);
        if calls >= policy.max_attempts_per_deployment {
            return;
        }
        let wait = policy.backoff(calls, &router.jitter);
        let at = now.saturating_add(nanos(wait));
        if self.deadline.is_some_and(|(end, _)| at >= end) {
            self.exclude(d);
            return;
        }
        let open = router
            .state(d)
            .is_some_and(|s| s.breaker().state(now) == BreakerState::Open);
        if open {
            return;
        }
        if !router.budget().try_withdraw(now) {
            router
                .counters
                .retries_denied
                .fetch_add(1, Ordering::Relaxed);
            self.exclude(d);
            return;
        }
        self.pending = Pending {
            not_before: at,
            prefer: Some(d),
            paid: true,
        };
    }

    /// Nothing in flight and nothing to wait for: start the next call.
    fn launch(&mut self, now: u64) -> Step {
        let pending = std::mem::replace(&mut self.pending, Pending::at(now));
        if let Some(d) = pending.prefer {
            if self.usable(d) {
                if let Some(step) = self.claim(d, now, false, pending.paid) {
                    return step;
                }
            }
        }
        let candidates = self.candidates();
        // Those that cannot take a call now, and when they can.
        let later: Vec<(usize, u64)> = candidates
            .iter()
            .filter_map(|&d| self.available_at(d, now).map(|at| (d, at)))
            .collect();
        for d in candidates {
            if later.iter().any(|&(w, _)| w == d) {
                continue;
            }
            let cheaper = later
                .iter()
                .filter(|&&(w, at)| self.worth_waiting(w, d, at))
                .min_by_key(|&&(_, at)| at);
            if let Some(&(cheap, at)) = cheaper {
                self.pending = Pending {
                    not_before: at,
                    prefer: Some(cheap),
                    paid: false,
                };
                return Step::Sleep(Duration::from_nanos(at.saturating_sub(now)));
            }
            if let Some(step) = self.claim(d, now, false, false) {
                return step;
            }
        }
        self.wait_or_fail(now)
    }

    /// When `d` can take a call, if not now: the end of its cool-down, or when its open
    /// breaker lets a probe through. Half open with its probes taken, it is back when a
    /// probe answers: expected after the deployment's usual latency, then asked again (its
    /// breaker then closed, or open until a known time).
    fn available_at(&self, d: usize, now: u64) -> Option<u64> {
        let state = self.router.state(d)?;
        if let Some(until) = state.cooling_until(now) {
            return Some(until);
        }
        let mut breaker = state.breaker();
        if breaker.would_admit(now) {
            return None;
        }
        Some(breaker.open_until().unwrap_or_else(|| {
            let latency = state
                .ewma_secs()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .unwrap_or(PROBE_POLL_DEFAULT)
                .clamp(PROBE_POLL_MIN, PROBE_POLL_MAX);
            now.saturating_add(nanos(latency))
        }))
    }

    /// Cost-aware fail-over: wait for `cheap` (back at `at`) rather than call `pricey` now,
    /// when it is back before the deadline and `pricey` would cost more than the configured
    /// ratio times as much for this request.
    fn worth_waiting(&self, cheap: usize, pricey: usize, at: u64) -> bool {
        let Some(ratio) = self.router.config.failover_price_ratio else {
            return false;
        };
        let Some((end, _)) = self.deadline else {
            return false;
        };
        // Room for the call itself after the wait: its moving-average latency, if known.
        let latency = self
            .router
            .state(cheap)
            .and_then(|s| s.ewma_secs())
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map_or(0, nanos);
        if at.saturating_add(latency) >= end {
            return false;
        }
        let tokens = (
            self.info.estimated_input_tokens,
            self.router.config.default_output_tokens,
        );
        let cost = |d: usize| {
            self.router
                .deployments
                .get(d)
                .map_or(0.0, |x| x.cost(tokens.0, tokens.1))
        };
        cost(pricey) > ratio * cost(cheap)
    }

    fn while_in_flight(&mut self, now: u64) -> Step {
        let left = self.deadline.map(|(end, _)| end.saturating_sub(now));
        if let Some(delay) = self.router.config.hedge_delay {
            if !self.hedged && self.live() == 1 {
                let started = self
                    .attempts
                    .iter()
                    .find(|a| a.live)
                    .map_or(now, |a| a.started);
                let due = started.saturating_add(nanos(delay));
                if now < due {
                    let wait = left.map_or(due - now, |l| l.min(due - now));
                    return Step::Wait(Some(Duration::from_nanos(wait)));
                }
                // One hedge per request, whether or not a deployment can take it now.
                self.hedged = true;
                for d in self.candidates() {
                    if let Some(step) = self.claim(d, now, true, false) {
                        return step;
                    }
                }
            }
        }
        Step::Wait(left.map(Duration::from_nanos))
    }

    /// The request's time budget when its caller gave none (a tenant's default): replaces
    /// the model's, counted from the request's start.
    pub(crate) fn default_deadline(&mut self, limit: Duration) {
        if self.info.deadline.is_none() {
            self.deadline = Some((self.started.saturating_add(nanos(limit)), limit));
        }
    }

    /// Try the cheapest deployments first from now on (a budget of the tenant runs low);
    /// counted once per request.
    pub(crate) fn prefer_cheaper(&mut self) {
        if !self.cheaper_first {
            self.cheaper_first = true;
            self.router
                .counters
                .cheaper_first
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deployments this request may still call, in the strategy's order of preference, those
    /// it has not called yet first (a fresh deployment is likelier to answer than one that
    /// just failed; planned retries of the same one go through `Pending::prefer` instead).
    fn candidates(&self) -> Vec<usize> {
        let mut candidates: Vec<usize> = self
            .router
            .by_priority
            .iter()
            .copied()
            .filter(|&d| self.usable(d))
            .collect();
        self.router
            .order(&self.info, self.complexity, &mut candidates);
        if self.cheaper_first {
            self.router.cheapest_first(&self.info, &mut candidates);
        }
        candidates.sort_by_key(|&d| self.tried.get(d).is_some_and(|t| t.calls > 0));
        candidates
    }

    /// Not excluded, calls left, not already in flight here, and a large enough window.
    fn usable(&self, d: usize) -> bool {
        let Some(t) = self.tried.get(d) else {
            return false;
        };
        if t.excluded || t.calls >= self.router.config.retry.max_attempts_per_deployment {
            return false;
        }
        if self.attempts.iter().any(|a| a.live && a.deployment == d) {
            return false;
        }
        match self.window_above {
            Some(above) => self
                .router
                .deployments
                .get(d)
                .and_then(|x| x.context_window)
                .is_some_and(|w| w > above),
            None => true,
        }
    }

    fn exclude(&mut self, d: usize) {
        if let Some(t) = self.tried.get_mut(d) {
            t.excluded = true;
        }
    }

    /// Start a call on `d` if it takes one now: not cooling down, admitted by its breaker, and
    /// (for a retry or a hedge) allowed by the retry budget.
    fn claim(&mut self, d: usize, now: u64, hedge: bool, paid: bool) -> Option<Step> {
        let router = Arc::clone(&self.router);
        let state = router.state(d)?;
        if state.cooling_until(now).is_some() {
            return None;
        }
        let id = AttemptId(u32::try_from(self.attempts.len()).ok()?);
        let tried_before = self.tried.get(d)?.calls > 0;
        let admission = state.breaker().try_acquire(now);
        if let Admission::Refused(_) = admission {
            return None;
        }
        if (tried_before || hedge) && !paid && !router.budget().try_withdraw(now) {
            state.breaker().release(admission);
            router
                .counters
                .retries_denied
                .fetch_add(1, Ordering::Relaxed);
            if !hedge {
                self.exclude(d);
            }
            return None;
        }
        let kind = if hedge {
            AttemptKind::Hedge
        } else if tried_before {
            AttemptKind::Retry
        } else if self.attempts.is_empty() {
            AttemptKind::First
        } else {
            AttemptKind::Fallback
        };
        state.call_started();
        state.stats.record_call(kind);
        if let Some(t) = self.tried.get_mut(d) {
            t.calls = t.calls.saturating_add(1);
        }
        self.attempts.push(Attempt {
            deployment: d,
            started: now,
            admission,
            live: true,
        });
        let left = self
            .deadline
            .map(|(end, _)| Duration::from_nanos(end.saturating_sub(now)));
        let timeout = match (router.config.attempt_timeout, left) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        };
        Some(Step::Call {
            attempt: id,
            deployment: d,
            kind,
            timeout,
        })
    }

    /// Nothing can take a call now: sleep until the first rate-limit cool-down ends (if that is
    /// before the deadline), else fail, saying why.
    fn wait_or_fail(&mut self, now: u64) -> Step {
        let router = Arc::clone(&self.router);
        let (mut open, mut cooling) = (0usize, 0usize);
        let mut retry_at: Option<u64> = None;
        let mut cooled: Vec<(u64, usize)> = Vec::new();
        for &d in &router.by_priority {
            if !self.usable(d) {
                continue;
            }
            let Some(state) = router.state(d) else {
                continue;
            };
            let available_at = if let Some(until) = state.cooling_until(now) {
                cooling += 1;
                cooled.push((until, d));
                Some(until)
            } else {
                let mut breaker = state.breaker();
                if breaker.would_admit(now) {
                    None
                } else {
                    open += 1;
                    breaker.open_until()
                }
            };
            if let Some(at) = available_at {
                retry_at = Some(retry_at.map_or(at, |r| r.min(at)));
            }
        }
        cooled.sort_unstable();
        for (until, d) in cooled {
            if self.deadline.is_some_and(|(end, _)| until >= end) {
                break;
            }
            let tried_before = self.tried.get(d).is_some_and(|t| t.calls > 0);
            if tried_before && !router.budget().try_withdraw(now) {
                router
                    .counters
                    .retries_denied
                    .fetch_add(1, Ordering::Relaxed);
                self.exclude(d);
                continue;
            }
            self.pending = Pending {
                not_before: until,
                prefer: Some(d),
                paid: tried_before,
            };
            return Step::Sleep(Duration::from_nanos(until - now));
        }
        let last = self.last;
        if open + cooling == 0 {
            self.fail(FailReason::Exhausted { last })
        } else {
            self.fail(FailReason::Unavailable {
                open,
                cooling,
                retry_in: retry_at.map(|at| Duration::from_nanos(at.saturating_sub(now))),
                last,
            })
        }
    }

    fn fail(&mut self, reason: FailReason) -> Step {
        let c = &self.router.counters;
        let counter = match reason {
            FailReason::Fatal(_) => &c.fatal,
            FailReason::Exhausted { .. } => &c.exhausted,
            FailReason::Unavailable { .. } => &c.unavailable,
            FailReason::DeadlineExceeded { .. } => &c.deadline,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.record_tenant_failure();
        self.finish(Step::Fail(reason))
    }

    fn finish(&mut self, step: Step) -> Step {
        self.cancel_live();
        self.router.counters.active.fetch_sub(1, Ordering::Relaxed);
        self.finished = Some(step.clone());
        step
    }

    /// The next call waits for a limiter permit or a budget reservation (its tenant's row
    /// counts it as queued).
    pub fn note_queued(&mut self) {
        self.queued = self.queued.saturating_add(1);
    }

    /// The real usage of an answer that reported none when it succeeded (a stream, once
    /// read): added to the tenant's row, once.
    pub fn note_usage(&mut self, usage: &Usage) {
        let (Some(d), Some(tenant)) = (self.usage_due.take(), &self.info.tenant) else {
            return;
        };
        let spend = self
            .router
            .deployments
            .get(d)
            .map_or(0.0, |x| x.charge(usage));
        self.router
            .tenants
            .add_usage(tenant, usage.input, usage.output, spend);
    }

    /// A request answered, in its tenant's row.
    fn record_tenant_success(&mut self, now: u64, d: usize, usage: &Usage) {
        let Some(tenant) = &self.info.tenant else {
            return;
        };
        let (input, output) = (usage.input, usage.output);
        let spend = self
            .router
            .deployments
            .get(d)
            .map_or(0.0, |x| x.charge(usage));
        self.router.tenants.record(
            tenant,
            &TenantOutcome {
                success: true,
                latency: Duration::from_nanos(now.saturating_sub(self.started)),
                input_tokens: input,
                output_tokens: output,
                spend,
                throttled: self.throttled,
                queued: self.queued,
                rejected: self.rejected,
            },
        );
        if input == 0 && output == 0 {
            self.usage_due = Some(d);
        }
    }

    /// A request that failed or was abandoned, in its tenant's row.
    fn record_tenant_failure(&self) {
        if let Some(tenant) = &self.info.tenant {
            self.router.tenants.record(
                tenant,
                &TenantOutcome {
                    throttled: self.throttled,
                    queued: self.queued,
                    rejected: self.rejected,
                    ..Default::default()
                },
            );
        }
    }

    /// Calls still running are abandoned: free their in-flight count and probe slots.
    fn cancel_live(&mut self) {
        for a in self.attempts.iter_mut().filter(|a| a.live) {
            a.live = false;
            if let Some(state) = self.router.state(a.deployment) {
                state.call_ended();
                state.breaker().release(a.admission);
                state.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.cancel_live();
        if self.finished.is_none() {
            let c = &self.router.counters;
            c.abandoned.fetch_add(1, Ordering::Relaxed);
            c.active.fetch_sub(1, Ordering::Relaxed);
            self.record_tenant_failure();
        }
    }
}
