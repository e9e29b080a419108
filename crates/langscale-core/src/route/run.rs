//! One request from start to answer, for every driver: the [`Execution`]'s decisions plus
//! everything around a call that used to be decided by each caller — taking the limiters'
//! permits (and what a refusal means), when latency starts and stops, what a `Wait` with
//! nothing in flight means, settling permits with the real usage. A driver only does the
//! I/O an [`Action`] names: call, acquire, wait, sleep. The native loop (tokio), Python's
//! sync loop and Python's asyncio loop are such drivers, for plain and streamed answers.

use std::collections::HashMap;
use std::time::Duration;

use super::execution::{AttemptId, AttemptKind, ErrorKind, Execution, FailReason, Outcome, Step};
use crate::limit::{AnyLimiter, AnyPermit, LimitError, Priority};

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
    timeout: Option<Duration>,
}

/// The permits, or which limiter refused and why.
#[derive(Debug)]
pub struct Granted {
    attempt: AttemptId,
    result: Result<Vec<AnyPermit>, (LimitError, bool)>,
}

impl PermitRequest {
    pub async fn acquire(self) -> Granted {
        let mut permits = Vec::with_capacity(self.limiters.len());
        for (limiter, shared) in &self.limiters {
            match limiter
                .acquire(self.tokens, Priority::Standard, self.timeout)
                .await
            {
                Ok(p) => permits.push(p),
                Err(e) => return self.refused(e, *shared),
            }
        }
        Granted {
            attempt: self.attempt,
            result: Ok(permits),
        }
    }

    /// The same on the calling thread (never from async code).
    pub fn acquire_blocking(self) -> Granted {
        let mut permits = Vec::with_capacity(self.limiters.len());
        for (limiter, shared) in &self.limiters {
            match limiter.acquire_blocking(self.tokens, Priority::Standard, self.timeout) {
                Ok(p) => permits.push(p),
                Err(e) => return self.refused(e, *shared),
            }
        }
        Granted {
            attempt: self.attempt,
            result: Ok(permits),
        }
    }

    fn refused(&self, error: LimitError, shared: bool) -> Granted {
        Granted {
            attempt: self.attempt,
            result: Err((error, shared)),
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
    /// Its permits, once granted.
    granted: Option<Vec<AnyPermit>>,
    permits: HashMap<AttemptId, Vec<AnyPermit>>,
    started: HashMap<AttemptId, u64>,
    refusals: Vec<(AttemptId, usize, LimitError)>,
    /// When the run began or its last attempt went out or ended (clock nanos).
    mark: u64,
    /// How long each attempt waited before it went out (backoff, cool-downs, hedge delay,
    /// permits): from `mark` to its call.
    waits: HashMap<AttemptId, Duration>,
}

impl Run {
    /// `tokens`: the estimate each limiter is charged before a call.
    pub fn new(exec: Execution, limits: Limits, tokens: u64) -> Self {
        let mark = exec.router().clock.now_nanos();
        Self {
            mark,
            waits: HashMap::new(),
            exec,
            limits,
            tokens,
            waiting: None,
            granted: None,
            permits: HashMap::new(),
            started: HashMap::new(),
            refusals: Vec::new(),
        }
    }

    pub fn execution(&self) -> &Execution {
        &self.exec
    }

    /// What to do now.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Action {
        loop {
            if let Some(ready) = self.waiting {
                if let Some(permits) = self.granted.take() {
                    self.waiting = None;
                    return self.call(ready, permits);
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
                        Ok(Some(permits)) => return self.call(ready, permits),
                        Ok(None) => self.waiting = Some(ready),
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
            Ok(permits) => self.granted = Some(permits),
            Err((error, shared)) => {
                self.waiting = None;
                self.refuse(ready.attempt, ready.deployment, error, shared);
            }
        }
    }

    /// The call succeeded (a stream: its first chunk arrived). Latency ends now; the permits
    /// are settled with the usage where known and held until the run ends (a stream keeps
    /// them while it is read).
    pub fn succeeded(&mut self, attempt: AttemptId, input_tokens: u64, output_tokens: u64) {
        let latency = self.elapsed(attempt);
        if let Some(permits) = self.permits.get_mut(&attempt) {
            let used = input_tokens.saturating_add(output_tokens);
            if used > 0 {
                permits.iter_mut().for_each(|p| p.settle(used));
            }
        }
        self.exec.report(
            attempt,
            Outcome::Success {
                latency,
                input_tokens,
                output_tokens,
            },
        );
        self.release_others(attempt);
    }

    /// The call failed with this kind of error; its permits are released.
    pub fn failed(&mut self, attempt: AttemptId, kind: ErrorKind) {
        self.mark = self.exec.router().clock.now_nanos();
        self.started.remove(&attempt);
        self.permits.remove(&attempt);
        self.exec.report(attempt, Outcome::Failure(kind));
    }

    /// The real usage of the answer (a stream's, once read): settles the held permits.
    pub fn settle(&mut self, used_tokens: u64) {
        if used_tokens == 0 {
            return;
        }
        for permits in self.permits.values_mut() {
            permits.iter_mut().for_each(|p| p.settle(used_tokens));
        }
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
        self.waits.get(&attempt).copied()
    }

    /// Every limiter refusal of this request: (attempt, deployment, error).
    pub fn refusals(&self) -> &[(AttemptId, usize, LimitError)] {
        &self.refusals
    }

    fn call(&mut self, ready: Ready, permits: Vec<AnyPermit>) -> Action {
        let now = self.exec.router().clock.now_nanos();
        self.started.insert(ready.attempt, now);
        self.waits.insert(
            ready.attempt,
            Duration::from_nanos(now.saturating_sub(self.mark)),
        );
        self.mark = now;
        if !permits.is_empty() {
            self.permits.insert(ready.attempt, permits);
        }
        Action::Call {
            attempt: ready.attempt,
            deployment: ready.deployment,
            kind: ready.kind,
            timeout: ready.timeout,
        }
    }

    fn try_permits(&self, d: usize) -> Result<Option<Vec<AnyPermit>>, (LimitError, bool)> {
        let limiters = self.limits.for_deployment(d);
        let mut permits = Vec::with_capacity(limiters.len());
        for (limiter, shared) in &limiters {
            match limiter.try_acquire(self.tokens, Priority::Standard) {
                Ok(Some(p)) => permits.push(p),
                Ok(None) => return Ok(None),
                Err(e) => return Err((e, *shared)),
            }
        }
        Ok(Some(permits))
    }

    fn permit_request(&self, ready: Ready) -> PermitRequest {
        PermitRequest {
            attempt: ready.attempt,
            limiters: self.limits.for_deployment(ready.deployment),
            tokens: self.tokens,
            // A permit is worth waiting for until the request's deadline, not longer.
            timeout: self.exec.time_left(),
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
        self.started.remove(&attempt).map_or(Duration::ZERO, |t| {
            Duration::from_nanos(now.saturating_sub(t))
        })
    }

    fn release_others(&mut self, winner: AttemptId) {
        self.permits.retain(|a, _| *a == winner);
        self.started.retain(|a, _| *a == winner);
    }

    fn release_all(&mut self) {
        self.permits.clear();
        self.started.clear();
        self.waiting = None;
        self.granted = None;
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
        r.succeeded(a, 3, 2);
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
        r.succeeded(a, 0, 0);
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
}
