//! One request from start to answer, for every driver: the [`Execution`]'s decisions plus
//! everything around a call that used to be decided by each caller — taking the limiters'
//! permits (and what a refusal means), when latency starts and stops, what a `Wait` with
//! nothing in flight means, settling permits with the real usage. A driver only does the
//! I/O an [`Action`] names: call, acquire, wait, sleep. The native loop (tokio), Python's
//! sync loop and Python's asyncio loop are such drivers, for plain and streamed answers.

use std::time::{Duration, Instant};

use super::deployment::Usage;
use super::execution::{AttemptId, AttemptKind, ErrorKind, Execution, FailReason, Outcome, Step};
use super::Router;
use crate::limit::{AnyLimiter, AnyPermit, Ask, LimitError, Priority};
use crate::spend::{Budgets, Cost, Refusal, Reservation, Who};

/// A request's tenant budgets: who it is for and how many output tokens each call reserves
/// (its `max_tokens`, else the budgets' configured estimate).
#[derive(Debug, Clone)]
pub struct Spend {
    pub budgets: Budgets,
    pub who: Who,
    pub output_tokens: Option<u64>,
}

impl Spend {
    fn output(&self) -> u64 {
        self.output_tokens
            .unwrap_or_else(|| self.budgets.config().output_estimate)
    }
}

/// What one call on deployment `d` reserves, and whether that deployment serves a degraded
/// level (tagged cheaper).
#[derive(Debug, Clone)]
struct BudgetAsk {
    spend: Spend,
    cost: Cost,
    cheap: bool,
}

impl BudgetAsk {
    fn new(router: &Router, spend: &Spend, d: usize, input: u64) -> Self {
        let output = spend.output();
        let (usd, cheap) = router.deployments().get(d).map_or((0.0, false), |dep| {
            let tag = &spend.budgets.config().degrade_tag;
            (dep.cost(input, output), dep.tags.iter().any(|t| t == tag))
        });
        Self {
            spend: spend.clone(),
            cost: Cost {
                requests: 1,
                tokens: input.saturating_add(output),
                usd,
            },
            cheap,
        }
    }

    fn try_reserve(&self) -> Result<Option<Reservation>, (LimitError, bool)> {
        match self
            .spend
            .budgets
            .reserve(&self.spend.who, self.cost, self.cheap)
        {
            Ok(r) => Ok(Some(r)),
            Err(Refusal::Wait { .. }) => Ok(None),
            // Another deployment (a cheaper one) may still serve.
            Err(r @ Refusal::Degrade(_)) => Err((r.into_error(), false)),
            Err(r) => Err((r.into_error(), true)),
        }
    }

    /// Wait for room while the level's policy allows (and the request's deadline).
    fn deadline(
        &self,
        started: Instant,
        wait: Duration,
        request_left: Option<Duration>,
    ) -> Instant {
        let limit = request_left.map_or(wait, |left| left.min(wait));
        started.checked_add(limit).unwrap_or(started)
    }

    async fn reserve(&self, request_left: Option<Duration>) -> Result<Reservation, LimitError> {
        let started = Instant::now();
        let remote = matches!(self.spend.budgets, Budgets::Shared(_));
        loop {
            match blocking_if(remote, || self.next_wait(started, request_left)) {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(nap)) => tokio::time::sleep(nap).await,
                Err(e) => return Err(e),
            }
        }
    }

    fn reserve_blocking(&self, request_left: Option<Duration>) -> Result<Reservation, LimitError> {
        let started = Instant::now();
        loop {
            match self.next_wait(started, request_left) {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(nap)) => std::thread::sleep(nap),
                Err(e) => return Err(e),
            }
        }
    }

    /// One try: the reservation, how long to nap before the next, or the refusal to raise.
    fn next_wait(
        &self,
        started: Instant,
        request_left: Option<Duration>,
    ) -> Result<Result<Reservation, Duration>, LimitError> {
        match self
            .spend
            .budgets
            .reserve(&self.spend.who, self.cost, self.cheap)
        {
            Ok(r) => Ok(Ok(r)),
            Err(Refusal::Wait {
                exceeded,
                retry_after,
                timeout,
            }) => {
                let until = self.deadline(started, timeout, request_left);
                let now = Instant::now();
                if now >= until || now + retry_after > until {
                    return Err(LimitError::Budget(exceeded));
                }
                // Room may come sooner (a call in flight settling below its estimate).
                Ok(Err(retry_after.min(Duration::from_millis(100))))
            }
            Err(r) => Err(r.into_error()),
        }
    }
}

/// Runs `f`, which may block for a Redis round trip when `remote`: inside a multi-threaded
/// tokio runtime it says so (`block_in_place`: the worker's other tasks move to another
/// thread); elsewhere (a plain thread, a single-threaded runtime, where that would panic)
/// it just runs.
pub(crate) fn blocking_if<R>(remote: bool, f: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if remote && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// The limiters a request takes permits from: one for the whole model (every deployment
/// shares it), then the deployment's own.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub shared: Option<AnyLimiter>,
    /// By deployment index; shorter than the deployments means no limiter for the rest.
    pub own: Vec<Option<AnyLimiter>>,
}

impl Limits {
    fn for_deployment(&self, d: usize) -> Vec<(AnyLimiter, bool)> {
        let own = self.own.get(d).and_then(Option::as_ref);
        let mut out = Vec::new();
        if let Some(l) = &self.shared {
            out.push((l.clone(), true));
        }
        if let Some(l) = own {
            out.push((l.clone(), false));
        }
        out
    }
}

/// What the driver does now.
#[derive(Debug)]
pub enum Action {
    /// Call `deployment` (its permits are held), giving up after `timeout` (then report a
    /// timeout). Report the outcome under `attempt`.
    Call {
        attempt: AttemptId,
        deployment: usize,
        kind: AttemptKind,
        timeout: Option<Duration>,
    },
    /// The permits for the next call are not free now: wait for them with
    /// [`PermitRequest::acquire`] (or `acquire_blocking`), hand the result to
    /// [`Run::permitted`], then ask again.
    Acquire(PermitRequest),
    /// Calls are in flight: wait for one to finish and report it, or at most this long.
    Wait(Option<Duration>),
    /// Sleep this long, then ask again.
    Sleep(Duration),
    /// `attempt` succeeded: use its result, drop any other call still running.
    Done {
        attempt: AttemptId,
        deployment: usize,
    },
    /// The request failed. Raise the deciding attempt's own error where there is one (a
    /// provider error the driver kept, or [`Run::refusal`]), else the reason.
    Fail(FailReason),
}

/// Permits to wait for, outside any lock on the run.
#[derive(Debug)]
pub struct PermitRequest {
    attempt: AttemptId,
    limiters: Vec<(AnyLimiter, bool)>,
    tokens: u64,
    /// Whose permits: waiters of different tenants share a limiter fairly.
    ask: Ask,
    timeout: Option<Duration>,
    /// A tenant budget to wait for first.
    budget: Option<BudgetAsk>,
}

/// The permits, or which limiter refused and why.
#[derive(Debug)]
pub struct Granted {
    attempt: AttemptId,
    result: Result<Vec<AnyPermit>, (LimitError, bool)>,
    reservation: Option<Reservation>,
}

impl PermitRequest {
    pub async fn acquire(self) -> Granted {
        let reservation = match &self.budget {
            Some(ask) => match ask.reserve(self.timeout).await {
                Ok(r) => Some(r),
                Err(e) => return self.refused(e, true),
            },
            None => None,
        };
        let mut granted = self.acquire_permits().await;
        granted.reservation = reservation;
        granted
    }

    async fn acquire_permits(&self) -> Granted {
        let mut permits = Vec::with_capacity(self.limiters.len());
        for (limiter, shared) in &self.limiters {
            match limiter
                .acquire(self.tokens, self.ask.clone(), self.timeout)
                .await
            {
                Ok(p) => permits.push(p),
                Err(e) => return self.refused(e, *shared),
            }
        }
        Granted {
            attempt: self.attempt,
            result: Ok(permits),
            reservation: None,
        }
    }

    /// The same on the calling thread (never from async code).
    pub fn acquire_blocking(self) -> Granted {
        let reservation = match &self.budget {
            Some(ask) => match ask.reserve_blocking(self.timeout) {
                Ok(r) => Some(r),
                Err(e) => return self.refused(e, true),
            },
            None => None,
        };
        let mut permits = Vec::with_capacity(self.limiters.len());
        for (limiter, shared) in &self.limiters {
            match limiter.acquire_blocking(self.tokens, self.ask.clone(), self.timeout) {
                Ok(p) => permits.push(p),
                Err(e) => return self.refused(e, *shared),
            }
        }
        Granted {
            attempt: self.attempt,
            result: Ok(permits),
            reservation,
        }
    }

    fn refused(&self, error: LimitError, shared: bool) -> Granted {
        Granted {
            attempt: self.attempt,
            result: Err((error, shared)),
            reservation: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ready {
    attempt: AttemptId,
    deployment: usize,
    kind: AttemptKind,
    timeout: Option<Duration>,
}

/// One request. Not shared: each request owns its own; dropping it releases its permits and
/// any call still counted in flight.
#[derive(Debug)]
pub struct Run {
    exec: Execution,
    limits: Limits,
    tokens: u64,
    /// A call decided on, waiting for its permits.
    waiting: Option<Ready>,
    /// Its permits (and budget reservation), once granted.
    granted: Option<Held>,
    /// Every attempt that went out, in order (a handful at most: a small Vec, not maps).
    attempts: Vec<Slot>,
    refusals: Vec<(AttemptId, usize, LimitError)>,
    /// When the run began or its last attempt went out or ended (clock nanos).
    mark: u64,
    spend: Option<Spend>,
}

/// One attempt that went out, and what it still holds.
#[derive(Debug)]
struct Slot {
    attempt: AttemptId,
    deployment: usize,
    /// When it went out (clock nanos), until it ended.
    started: Option<u64>,
    /// How long it waited before it went out (backoff, cool-downs, hedge delay, permits):
    /// from the run's `mark` to its call.
    waited: Duration,
    permits: Vec<AnyPermit>,
    /// Its budget reservation, until settled or released.
    reservation: Option<Reservation>,
    /// It answered: a reservation still held when the run ends was used.
    answered: bool,
}

impl Slot {
    /// It ended without being the answer: its permits and reservation are released.
    fn release(&mut self) {
        self.started = None;
        self.permits.clear();
        self.reservation = None;
    }
}

/// What a call holds while it runs.
#[derive(Debug, Default)]
struct Held {
    permits: Vec<AnyPermit>,
    reservation: Option<Reservation>,
}

impl Run {
    /// `tokens`: the estimate each limiter is charged before a call.
    pub fn new(exec: Execution, limits: Limits, tokens: u64) -> Self {
        let mark = exec.router().clock.now_nanos();
        Self {
            mark,
            exec,
            limits,
            tokens,
            waiting: None,
            granted: None,
            attempts: Vec::new(),
            refusals: Vec::new(),
            spend: None,
        }
    }

    /// Reserve from tenant budgets before every call (settled with the real usage). When a
    /// USD budget of the tenant runs low (`prefer_cheaper_near`), the cheapest deployments
    /// are tried first; a request whose caller set no deadline gets its level's.
    #[must_use]
    pub fn with_spend(mut self, spend: Option<Spend>) -> Self {
        if let Some(s) = &spend {
            if let Some(limit) = s.budgets.config().deadline_for(&s.who) {
                self.exec.default_deadline(limit);
            }
            // No round trip: shared budgets answer from what this process last saw in Redis.
            if s.budgets.running_low(&s.who) {
                self.exec.prefer_cheaper();
            }
        }
        self.spend = spend;
        self
    }

    pub fn execution(&self) -> &Execution {
        &self.exec
    }

    /// What to do now.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Action {
        loop {
            if let Some(ready) = self.waiting {
                if let Some(held) = self.granted.take() {
                    self.waiting = None;
                    return self.call(ready, held);
                }
                return Action::Acquire(self.permit_request(ready));
            }
            match self.exec.next() {
                Step::Call {
                    attempt,
                    deployment,
                    kind,
                    timeout,
                } => {
                    let ready = Ready {
                        attempt,
                        deployment,
                        kind,
                        timeout,
                    };
                    match self.try_permits(deployment) {
                        Ok(Some(held)) => return self.call(ready, held),
                        Ok(None) => {
                            self.exec.note_queued();
                            self.waiting = Some(ready);
                        }
                        Err((error, shared)) => self.refuse(attempt, deployment, error, shared),
                    }
                }
                // Nothing in flight to wait for: the wait is a sleep (a hedge or deadline due).
                Step::Wait(limit) if self.exec.in_flight() == 0 => {
                    return Action::Sleep(limit.unwrap_or(Duration::ZERO))
                }
                Step::Wait(limit) => return Action::Wait(limit),
                Step::Sleep(d) => return Action::Sleep(d),
                Step::Done {
                    attempt,
                    deployment,
                } => {
                    return Action::Done {
                        attempt,
                        deployment,
                    }
                }
                Step::Fail(reason) => {
                    self.release_all();
                    return Action::Fail(reason);
                }
            }
        }
    }

    /// The result of an [`Action::Acquire`].
    pub fn permitted(&mut self, granted: Granted) {
        let Some(ready) = self.waiting.filter(|r| r.attempt == granted.attempt) else {
            return; // stale: the permits drop here
        };
        match granted.result {
            Ok(permits) => {
                self.granted = Some(Held {
                    permits,
                    reservation: granted.reservation,
                });
            }
            Err((error, shared)) => {
                self.waiting = None;
                self.refuse(ready.attempt, ready.deployment, error, shared);
            }
        }
    }

    /// The call succeeded (a stream: its first chunk arrived). Latency ends now; the permits
    /// are settled with the usage where known and held until the run ends (a stream keeps
    /// them while it is read).
    pub fn succeeded(&mut self, attempt: AttemptId, usage: Usage) {
        let latency = self.elapsed(attempt);
        let used = usage.total();
        if let Some(i) = self.slot(attempt) {
            self.attempts[i].answered = true;
            if used > 0 {
                self.attempts[i]
                    .permits
                    .iter_mut()
                    .for_each(|p| p.settle(used));
                self.settle_hold(i, &usage);
            }
        }
        self.exec
            .report(attempt, Outcome::Success { latency, usage });
        self.release_others(attempt);
    }

    /// The call failed with this kind of error; its permits are released.
    pub fn failed(&mut self, attempt: AttemptId, kind: ErrorKind) {
        self.mark = self.exec.router().clock.now_nanos();
        if let Some(i) = self.slot(attempt) {
            self.attempts[i].release(); // a failed call is not charged
        }
        self.exec.report(attempt, Outcome::Failure(kind));
    }

    /// The real usage of the answer (a stream's, once read): settles the held permits.
    pub fn settle(&mut self, used_tokens: u64) {
        if used_tokens == 0 {
            return;
        }
        let input = self.tokens.min(used_tokens);
        self.settle_usage(Usage::new(input, used_tokens - input));
    }

    /// The same with input and output apart (priced apart): a stream's final usage, or for
    /// a stream cut short, what it received.
    pub fn settle_usage(&mut self, usage: Usage) {
        let used = usage.total();
        if used > 0 {
            for slot in &mut self.attempts {
                slot.permits.iter_mut().for_each(|p| p.settle(used));
            }
        }
        self.exec.note_usage(&usage);
        for i in 0..self.attempts.len() {
            self.settle_hold(i, &usage);
        }
    }

    /// Where `attempt` is in `attempts`.
    fn slot(&self, attempt: AttemptId) -> Option<usize> {
        self.attempts.iter().position(|s| s.attempt == attempt)
    }

    /// Settles the reservation the attempt at `i` holds, if any, with the real usage.
    fn settle_hold(&mut self, i: usize, usage: &Usage) {
        let Some(slot) = self.attempts.get_mut(i) else {
            return;
        };
        let Some(reservation) = slot.reservation.take() else {
            return;
        };
        let usd = self
            .exec
            .router()
            .deployments()
            .get(slot.deployment)
            .map_or(0.0, |dep| dep.charge(usage));
        reservation.settle(Cost {
            requests: 1,
            tokens: usage.total(),
            usd,
        });
    }

    /// The permits the next call waits for, when the last action was [`Action::Acquire`]
    /// (the same request again: asking does not advance the run).
    pub fn pending_permits(&self) -> Option<PermitRequest> {
        match (self.waiting, &self.granted) {
            (Some(ready), None) => Some(self.permit_request(ready)),
            _ => None,
        }
    }

    /// The limiter refusal that failed `attempt`, if one did.
    pub fn refusal(&self, attempt: AttemptId) -> Option<&LimitError> {
        self.refusals
            .iter()
            .find(|(a, _, _)| *a == attempt)
            .map(|(_, _, e)| e)
    }

    /// How long `attempt` waited before it went out: since the run began or the attempt
    /// before it went out or ended (backoff, cool-downs, a hedge's delay, permits).
    pub fn waited(&self, attempt: AttemptId) -> Option<Duration> {
        self.slot(attempt).map(|i| self.attempts[i].waited)
    }

    /// Every limiter refusal of this request: (attempt, deployment, error).
    pub fn refusals(&self) -> &[(AttemptId, usize, LimitError)] {
        &self.refusals
    }

    fn call(&mut self, ready: Ready, held: Held) -> Action {
        let now = self.exec.router().clock.now_nanos();
        self.attempts.push(Slot {
            attempt: ready.attempt,
            deployment: ready.deployment,
            started: Some(now),
            waited: Duration::from_nanos(now.saturating_sub(self.mark)),
            permits: held.permits,
            reservation: held.reservation,
            answered: false,
        });
        self.mark = now;
        Action::Call {
            attempt: ready.attempt,
            deployment: ready.deployment,
            kind: ready.kind,
            timeout: ready.timeout,
        }
    }

    /// Whose permits these are: the request's tenant, for the limiters' fair queues.
    fn ask(&self) -> Ask {
        Ask {
            priority: Priority::Standard,
            flow: self.exec.info().tenant.clone(),
        }
    }

    fn budget_ask(&self, d: usize) -> Option<BudgetAsk> {
        let spend = self.spend.as_ref()?;
        Some(BudgetAsk::new(self.exec.router(), spend, d, self.tokens))
    }

    /// The budget reservation first (all levels at once), then the limiters' permits.
    fn try_permits(&self, d: usize) -> Result<Option<Held>, (LimitError, bool)> {
        let reservation = match self.budget_ask(d) {
            Some(ask) => match ask.try_reserve()? {
                Some(r) => Some(r),
                None => return Ok(None),
            },
            None => None,
        };
        let limiters = self.limits.for_deployment(d);
        let mut permits = Vec::with_capacity(limiters.len());
        for (limiter, shared) in &limiters {
            match limiter.try_acquire(self.tokens, Priority::Standard) {
                Ok(Some(p)) => permits.push(p),
                Ok(None) => return Ok(None),
                Err(e) => return Err((e, *shared)),
            }
        }
        Ok(Some(Held {
            permits,
            reservation,
        }))
    }

    fn permit_request(&self, ready: Ready) -> PermitRequest {
        PermitRequest {
            attempt: ready.attempt,
            limiters: self.limits.for_deployment(ready.deployment),
            tokens: self.tokens,
            ask: self.ask(),
            // A permit is worth waiting for until the request's deadline, not longer.
            timeout: self.exec.time_left(),
            budget: self.budget_ask(ready.deployment),
        }
    }

    fn refuse(&mut self, attempt: AttemptId, deployment: usize, error: LimitError, shared: bool) {
        self.refusals.push((attempt, deployment, error));
        self.exec.report(
            attempt,
            Outcome::Failure(ErrorKind::Limited {
                every_deployment: shared,
            }),
        );
    }

    fn elapsed(&mut self, attempt: AttemptId) -> Duration {
        let now = self.exec.router().clock.now_nanos();
        self.mark = now;
        let started = self
            .attempts
            .iter_mut()
            .find(|s| s.attempt == attempt)
            .and_then(|s| s.started.take());
        started.map_or(Duration::ZERO, |t| {
            Duration::from_nanos(now.saturating_sub(t))
        })
    }

    fn release_others(&mut self, winner: AttemptId) {
        self.attempts
            .iter_mut()
            .filter(|s| s.attempt != winner)
            .for_each(Slot::release);
    }

    fn release_all(&mut self) {
        self.attempts.iter_mut().for_each(Slot::release);
        self.waiting = None;
        self.granted = None;
    }
}

impl Run {
    /// The request is over: a reservation still held by an attempt that answered was used
    /// but never told how much (no usage reported): it is charged its estimate. Others are
    /// released. Dropping the run does this; a driver calls it first where that may block
    /// (budgets in Redis).
    pub fn end(&mut self) {
        for slot in &mut self.attempts {
            let reservation = slot.reservation.take();
            if let (Some(reservation), true) = (reservation, slot.answered) {
                let estimate = reservation.estimate();
                reservation.settle(estimate);
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, FakeClock};
    use crate::limit::{Limiter, LimiterConfig};
    use crate::route::{Deployment, RequestInfo, Router, RouterConfig};
    use crate::spend::OnOver;

    fn setup(n: usize, config: RouterConfig) -> (Arc<Router>, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new());
        let deployments = (0..n).map(|i| Deployment::new(format!("d{i}"))).collect();
        let router = Router::new(deployments, config, clock.clone()).unwrap();
        (Arc::new(router), clock)
    }

    fn limiter(clock: &Arc<FakeClock>, config: LimiterConfig) -> AnyLimiter {
        let clock: Arc<dyn Clock> = clock.clone();
        AnyLimiter::Local(Limiter::with_clock(&config, clock).unwrap())
    }

    fn run(router: &Arc<Router>, limits: Limits, tokens: u64) -> Run {
        Run::new(router.start(RequestInfo::default()), limits, tokens)
    }

    #[track_caller]
    fn call(action: Action) -> (AttemptId, usize) {
        match action {
            Action::Call {
                attempt,
                deployment,
                ..
            } => (attempt, deployment),
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn latency_runs_from_the_permit_to_the_answer() {
        let (router, clock) = setup(1, RouterConfig::default());
        let mut r = run(&router, Limits::default(), 0);
        let (a, _) = call(r.next());
        clock.advance(Duration::from_millis(40));
        r.succeeded(a, Usage::new(3, 2));
        assert!(matches!(r.next(), Action::Done { .. }));
        let d = &router.snapshot().deployments[0];
        assert_eq!(d.latency.max, Duration::from_millis(40));
        assert_eq!((d.input_tokens, d.output_tokens), (3, 2));
    }

    #[test]
    fn a_deployment_whose_limiter_cannot_hold_the_request_is_skipped() {
        let (router, clock) = setup(2, RouterConfig::default());
        let small = limiter(
            &clock,
            LimiterConfig {
                tokens_per_minute: Some(10.0),
                token_burst: Some(10),
                ..LimiterConfig::default()
            },
        );
        let limits = Limits {
            shared: None,
            own: vec![Some(small)],
        };
        let mut r = run(&router, limits, 50);
        let (a, d) = call(r.next());
        assert_eq!(d, 1, "the refused deployment is not called");
        assert_eq!(r.refusals().len(), 1);
        r.succeeded(a, Usage::new(0, 0));
        assert!(matches!(r.next(), Action::Done { deployment: 1, .. }));
        let s = router.snapshot();
        assert_eq!(s.deployments[0].errors.limited, 1);
        assert_eq!(s.deployments[0].breaker.as_str(), "closed");
    }

    #[test]
    fn the_shared_limiter_refusing_fails_the_request_with_its_error() {
        let (router, clock) = setup(2, RouterConfig::default());
        let small = limiter(
            &clock,
            LimiterConfig {
                tokens_per_minute: Some(10.0),
                token_burst: Some(10),
                ..LimiterConfig::default()
            },
        );
        let limits = Limits {
            shared: Some(small),
            own: Vec::new(),
        };
        let mut r = run(&router, limits, 50);
        let Action::Fail(reason) = r.next() else {
            panic!("expected a failure")
        };
        let last = reason.last_error().unwrap();
        assert!(matches!(
            r.refusal(last.attempt),
            Some(LimitError::Config(_))
        ));
        assert_eq!(router.snapshot().deployments[1].requests, 0);
    }

    #[test]
    fn permits_not_free_now_are_acquired_then_the_call_goes_out() {
        let (router, clock) = setup(1, RouterConfig::default());
        let one = limiter(
            &clock,
            LimiterConfig {
                max_concurrency: Some(1),
                ..LimiterConfig::default()
            },
        );
        let limits = Limits {
            shared: Some(one.clone()),
            own: Vec::new(),
        };
        let held = one.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut r = run(&router, limits, 0);
        let Action::Acquire(request) = r.next() else {
            panic!("expected acquire")
        };
        assert!(
            r.pending_permits().is_some(),
            "asking again gives the same request"
        );
        drop(held);
        r.permitted(request.acquire_blocking());
        let (a, _) = call(r.next());
        r.failed(a, ErrorKind::InvalidRequest);
        assert!(matches!(r.next(), Action::Fail(_)));
        // The permit went back with the failure.
        assert!(one.try_acquire(0, Priority::Standard).unwrap().is_some());
    }

    #[test]
    fn each_attempt_knows_how_long_it_waited_before_it_went_out() {
        let (router, clock) = setup(1, RouterConfig::default());
        let mut r = run(&router, Limits::default(), 0);
        clock.advance(Duration::from_millis(3));
        let (first, _) = call(r.next());
        assert_eq!(r.waited(first), Some(Duration::from_millis(3)));
        clock.advance(Duration::from_millis(40));
        r.failed(first, ErrorKind::Server);
        let Action::Sleep(backoff) = r.next() else {
            panic!("a retry after a 5xx backs off first")
        };
        clock.advance(backoff);
        let (second, _) = call(r.next());
        assert_ne!(first, second);
        assert_eq!(
            r.waited(second),
            Some(backoff),
            "the call's own 40 ms is not a wait"
        );
        assert_eq!(r.waited(AttemptId(u32::MAX)), None);
    }

    #[test]
    fn a_call_in_flight_is_waited_on_until_the_hedge_is_due() {
        let config = RouterConfig {
            hedge_delay: Some(Duration::from_millis(50)),
            ..RouterConfig::default()
        };
        let (router, _clock) = setup(2, config);
        let mut r = run(&router, Limits::default(), 0);
        let _ = call(r.next());
        assert!(matches!(r.next(), Action::Wait(Some(_))));
    }

    fn budgets(clock: &Arc<FakeClock>, usd: f64, on_over: OnOver) -> Budgets {
        use crate::spend::{BudgetCap, LevelConfig, SpendConfig, Window};
        let level = LevelConfig {
            budgets: vec![BudgetCap {
                usd: Some(usd),
                tokens: None,
                window: Window::Day,
                calendar: false,
            }],
            on_over,
            ..LevelConfig::default()
        };
        let config = SpendConfig {
            tenant_default: Some(level),
            ..SpendConfig::default()
        };
        let clock: Arc<dyn Clock> = clock.clone();
        Budgets::local(config, clock).unwrap()
    }

    fn priced(tags: &[&[&str]], clock: &Arc<FakeClock>) -> Arc<Router> {
        let deployments = tags
            .iter()
            .enumerate()
            .map(|(i, t)| Deployment {
                price_in: 10.0 / (i as f64 + 1.0),
                price_out: 10.0 / (i as f64 + 1.0),
                tags: t.iter().map(|s| (*s).to_owned()).collect(),
                ..Deployment::new(format!("d{i}"))
            })
            .collect();
        let clock: Arc<dyn Clock> = clock.clone();
        Arc::new(Router::new(deployments, RouterConfig::default(), clock).unwrap())
    }

    fn spend(budgets: &Budgets) -> Option<Spend> {
        Some(Spend {
            budgets: budgets.clone(),
            who: Who::new(Some("acme"), None),
            output_tokens: Some(100),
        })
    }

    #[test]
    fn a_call_reserves_then_settles_its_real_cost() {
        let clock = Arc::new(FakeClock::new());
        let router = priced(&[&[]], &clock);
        let b = budgets(&clock, 10.0, OnOver::Raise);
        let mut r = run(&router, Limits::default(), 100).with_spend(spend(&b));
        let (a, _) = call(r.next());
        assert_eq!(b.report().in_flight, 1);
        r.succeeded(a, Usage::new(100, 50));
        assert!(matches!(r.next(), Action::Done { .. }));
        drop(r);
        let report = b.report();
        assert_eq!(report.in_flight, 0);
        let t = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
        // 150 tokens at $10 per 1k.
        assert!((t.counters.usd - 1.5).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn over_budget_fails_the_request_with_the_budget_refusal() {
        let clock = Arc::new(FakeClock::new());
        let router = priced(&[&[], &[]], &clock);
        // One call costs $2 at d0's price: over a $1 budget.
        let b = budgets(&clock, 1.0, OnOver::Raise);
        let mut r = run(&router, Limits::default(), 100).with_spend(spend(&b));
        let Action::Fail(reason) = r.next() else {
            panic!("expected a failure")
        };
        let last = reason.last_error().unwrap();
        let Some(LimitError::Budget(e)) = r.refusal(last.attempt) else {
            panic!("expected a budget refusal")
        };
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(router.snapshot().deployments[1].requests, 0);
    }

    #[test]
    fn degrade_routes_to_the_deployment_tagged_cheap() {
        let clock = Arc::new(FakeClock::new());
        let router = priced(&[&[], &["cheap"]], &clock);
        let b = budgets(&clock, 1.0, OnOver::Degrade);
        let mut r = run(&router, Limits::default(), 100).with_spend(spend(&b));
        let (a, d) = call(r.next());
        assert_eq!(d, 1, "only the cheap deployment may serve");
        r.succeeded(a, Usage::new(10, 10));
        assert!(matches!(r.next(), Action::Done { deployment: 1, .. }));
    }

    #[test]
    fn a_failed_call_is_not_charged_and_an_unreported_answer_is_charged_its_estimate() {
        let clock = Arc::new(FakeClock::new());
        let router = priced(&[&[]], &clock);
        let b = budgets(&clock, 100.0, OnOver::Raise);
        let mut r = run(&router, Limits::default(), 100).with_spend(spend(&b));
        let (a, _) = call(r.next());
        r.failed(a, ErrorKind::InvalidRequest);
        assert!(matches!(r.next(), Action::Fail(_)));
        drop(r);
        let usd = |b: &Budgets| {
            b.report()
                .levels
                .iter()
                .find(|l| l.key == "t:acme")
                .map_or(0.0, |l| l.counters.usd)
        };
        assert!(usd(&b).abs() < 1e-12);
        let mut r = run(&router, Limits::default(), 100).with_spend(spend(&b));
        let (a, _) = call(r.next());
        r.succeeded(a, Usage::new(0, 0)); // a stream's first chunk: usage comes later
        drop(r); // ...or never: the estimate (200 tokens at $10/1k) is charged
        assert!((usd(&b) - 2.0).abs() < 1e-9);
    }

    /// Settle `n` requests for acme through `router` and say where each went.
    fn served(router: &Arc<Router>, b: &Budgets, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let mut r = run(router, Limits::default(), 100).with_spend(spend(b));
                let (a, d) = call(r.next());
                r.succeeded(a, Usage::new(100, 100));
                assert!(matches!(r.next(), Action::Done { .. }));
                d
            })
            .collect()
    }

    #[test]
    fn a_usd_budget_running_low_routes_the_cheapest_deployment_first() {
        let clock = Arc::new(FakeClock::new());
        // d0 first by priority at $10 per 1k tokens, d1 at $5: a call is $2 on d0, $1 on d1.
        let router = priced(&[&[], &[]], &clock);
        let b = budgets(&clock, 10.0, OnOver::Raise);
        // $8 of $10 is the default `near` (0.8): the fifth request goes to the cheaper one.
        assert_eq!(served(&router, &b, 6), [0, 0, 0, 0, 1, 1]);
        assert_eq!(router.snapshot().cheaper_first, 2);
        // Another tenant's budget is its own: it still starts at d0.
        let mut r = run(&router, Limits::default(), 100).with_spend(Some(Spend {
            who: Who::new(Some("other"), None),
            ..spend(&b).unwrap()
        }));
        assert_eq!(call(r.next()).1, 0);
    }

    #[test]
    fn prefer_cheaper_near_off_or_a_token_budget_keeps_the_strategys_order() {
        use crate::spend::{BudgetCap, LevelConfig, SpendConfig, Window};
        let clock = Arc::new(FakeClock::new());
        let router = priced(&[&[], &[]], &clock);
        let b = budgets(&clock, 10.0, OnOver::Raise);
        let mut config = (*b.config()).clone();
        config.prefer_cheaper_near = false;
        b.update(config).unwrap();
        assert_eq!(served(&router, &b, 5), [0; 5]);
        // Tokens cost the same anywhere: a token budget running low changes nothing.
        let tokens = LevelConfig {
            budgets: vec![BudgetCap {
                usd: None,
                tokens: Some(1000.0),
                window: Window::Day,
                calendar: false,
            }],
            ..LevelConfig::default()
        };
        let config = SpendConfig {
            tenant_default: Some(tokens),
            ..SpendConfig::default()
        };
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let b = Budgets::local(config, dyn_clock).unwrap();
        assert_eq!(served(&router, &b, 5), [0; 5]);
        assert_eq!(router.snapshot().cheaper_first, 0);
    }

    proptest::proptest! {
        /// The first call goes to the cheapest deployment exactly when the tenant's USD
        /// budget has used its `near` fraction; otherwise to the strategy's first.
        #[test]
        fn the_shift_happens_exactly_at_the_near_fraction(
            prices in proptest::collection::vec(0.5f64..20.0, 2..5),
            spent in 0.0f64..990.0,
            near in 0.05f64..1.0,
        ) {
            use crate::spend::Cost;
            let clock = Arc::new(FakeClock::new());
            let deployments = crate::route::tests::priced(&prices);
            let dyn_clock: Arc<dyn Clock> = clock.clone();
            let router =
                Arc::new(Router::new(deployments, RouterConfig::default(), dyn_clock).unwrap());
            // Room for the call itself (at most $4) whatever was spent.
            let b = budgets(&clock, 1000.0, OnOver::Raise);
            let mut config = (*b.config()).clone();
            config.near = near;
            b.update(config).unwrap();
            let who = Who::new(Some("acme"), None);
            let cost = Cost { requests: 1, tokens: 0, usd: spent };
            b.reserve(&who, cost, false).unwrap().settle(cost);
            let mut r = run(&router, Limits::default(), 100).with_spend(spend(&b));
            let (_, d) = call(r.next());
            let cheapest = prices
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap();
            let expected = if spent >= 1000.0 * near { cheapest } else { 0 };
            proptest::prop_assert_eq!(d, expected);
        }
    }

    #[test]
    fn a_request_takes_its_callers_deadline_else_its_levels_else_the_models() {
        let (router, clock) = setup(
            1,
            RouterConfig {
                deadline: Some(Duration::from_secs(10)),
                ..RouterConfig::default()
            },
        );
        let b = budgets(&clock, 100.0, OnOver::Raise);
        let mut config = (*b.config()).clone();
        if let Some(level) = config.tenant_default.as_mut() {
            level.deadline = Some(2.0);
        }
        b.update(config).unwrap();
        let wait = |info: RequestInfo, who: &str| {
            let spend = Spend {
                who: Who::new(Some(who), None),
                ..spend(&b).unwrap()
            };
            let mut r = Run::new(router.start(info), Limits::default(), 10).with_spend(Some(spend));
            let _ = call(r.next());
            match r.next() {
                Action::Wait(Some(d)) => d,
                other => panic!("expected a bounded wait, got {other:?}"),
            }
        };
        // The tenant's level (tenant_default) gives 2 s; the caller's own 5 s wins over it.
        assert_eq!(wait(RequestInfo::default(), "acme"), Duration::from_secs(2));
        let five = RequestInfo {
            deadline: Some(Duration::from_secs(5)),
            ..RequestInfo::default()
        };
        assert_eq!(wait(five, "acme"), Duration::from_secs(5));
        // No level deadline: the model's 10 s.
        let mut config = (*b.config()).clone();
        if let Some(level) = config.tenant_default.as_mut() {
            level.deadline = None;
        }
        b.update(config).unwrap();
        assert_eq!(
            wait(RequestInfo::default(), "acme"),
            Duration::from_secs(10)
        );
    }
}
