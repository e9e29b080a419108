//! The circuit breaker of one deployment: closed while the failure rate over a recent window stays
//! under a threshold, open (every call refused) for a cool-down once it does not, then half-open,
//! letting a few probe calls through; the first probe to succeed closes it, the first to fail
//! reopens it.

use std::collections::VecDeque;
use std::time::Duration;

use super::{nanos, RouteError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Which recent calls the failure rate is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerWindow {
    /// The last N calls.
    Count(u32),
    /// The calls of the last duration, counted in ten buckets (so old calls leave in tenths).
    Time(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open when failures / calls in the window reach this (0 < rate <= 1).
    pub failure_rate: f64,
    /// ... and the window holds at least this many calls, so three failures out of four at
    /// startup do not open it.
    pub minimum_requests: u32,
    pub window: BreakerWindow,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// How many probe calls may be in flight at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            minimum_requests: 20,
            window: BreakerWindow::Time(Duration::from_secs(30)),
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    pub(crate) fn validate(&self) -> Result<(), RouteError> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(RouteError::Config(format!(
                "breaker failure_rate must be above 0 and at most 1, got {}",
                self.failure_rate
            )));
        }
        if self.minimum_requests == 0 {
            return Err(RouteError::Config(
                "breaker minimum_requests must be at least 1, got 0".into(),
            ));
        }
        match self.window {
            BreakerWindow::Count(0) => {
                return Err(RouteError::Config(
                    "breaker window must count at least 1 call, got 0".into(),
                ))
            }
            BreakerWindow::Time(d) if d.is_zero() => {
                return Err(RouteError::Config(
                    "breaker window must be longer than 0 s".into(),
                ))
            }
            _ => {}
        }
        if self.half_open_probes == 0 {
            return Err(RouteError::Config(
                "breaker half_open_probes must be at least 1, got 0".into(),
            ));
        }
        Ok(())
    }
}

/// How often the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerTransitions {
    pub opened: u64,
    pub half_opened: u64,
    pub closed: u64,
}

/// A half-open probe slot, valid only for the half-open period that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeToken(u64);

/// Whether a call may go ahead. Hand it back with the call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as one of the half-open probes.
    Probe(ProbeToken),
    /// Refused: open until this clock time (ns), or `None` while the probe slots are taken.
    Refused(Option<u64>),
}

const TIME_BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
enum Window {
    Count {
        outcomes: VecDeque<bool>,
        capacity: usize,
        failures: u32,
    },
    Time {
        bucket_nanos: u64,
        buckets: [Bucket; TIME_BUCKETS as usize],
    },
}

impl Window {
    fn new(window: BreakerWindow) -> Self {
        match window {
            BreakerWindow::Count(n) => Self::Count {
                outcomes: VecDeque::new(),
                capacity: n.max(1) as usize,
                failures: 0,
            },
            BreakerWindow::Time(d) => Self::Time {
                bucket_nanos: (nanos(d) / TIME_BUCKETS).max(1),
                buckets: [Bucket::default(); TIME_BUCKETS as usize],
            },
        }
    }

    fn record(&mut self, now: u64, failed: bool) {
        match self {
            Self::Count {
                outcomes,
                capacity,
                failures,
            } => {
                if outcomes.len() >= *capacity && outcomes.pop_front() == Some(true) {
                    *failures = failures.saturating_sub(1);
                }
                outcomes.push_back(failed);
                if failed {
                    *failures = failures.saturating_add(1);
                }
            }
            Self::Time {
                bucket_nanos,
                buckets,
            } => {
                let epoch = now / *bucket_nanos;
                let slot = (epoch % TIME_BUCKETS) as usize;
                if let Some(b) = buckets.get_mut(slot) {
                    if b.epoch != epoch || b.calls == 0 {
                        *b = Bucket {
                            epoch,
                            calls: 0,
                            failures: 0,
                        };
                    }
                    b.calls = b.calls.saturating_add(1);
                    if failed {
                        b.failures = b.failures.saturating_add(1);
                    }
                }
            }
        }
    }

    /// (calls, failures) in the window at `now`.
    fn totals(&self, now: u64) -> (u32, u32) {
        match self {
            Self::Count {
                outcomes, failures, ..
            } => (u32::try_from(outcomes.len()).unwrap_or(u32::MAX), *failures),
            Self::Time {
                bucket_nanos,
                buckets,
            } => {
                let current = now / *bucket_nanos;
                buckets
                    .iter()
                    .filter(|b| {
                        b.calls > 0 && b.epoch <= current && b.epoch + TIME_BUCKETS > current
                    })
                    .fold((0u32, 0u32), |(c, f), b| {
                        (c.saturating_add(b.calls), f.saturating_add(b.failures))
                    })
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Self::Count {
                outcomes, failures, ..
            } => {
                outcomes.clear();
                *failures = 0;
            }
            Self::Time { buckets, .. } => *buckets = [Bucket::default(); TIME_BUCKETS as usize],
        }
    }
}

/// One deployment's breaker. Not thread-safe on its own: the router keeps it behind a mutex.
#[derive(Debug)]
pub struct Breaker {
    failure_rate: f64,
    minimum_requests: u32,
    open_nanos: u64,
    probes_allowed: u32,
    state: BreakerState,
    opened_at: u64,
    window: Window,
    /// Bumped on every state change, so a probe from an earlier half-open period cannot free
    /// a slot of the current one.
    generation: u64,
    probes: u32,
    transitions: BreakerTransitions,
}

impl Breaker {
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            failure_rate: config.failure_rate,
            minimum_requests: config.minimum_requests,
            open_nanos: nanos(config.open_for),
            probes_allowed: config.half_open_probes.max(1),
            state: BreakerState::Closed,
            opened_at: 0,
            window: Window::new(config.window),
            generation: 0,
            probes: 0,
            transitions: BreakerTransitions::default(),
        }
    }

    /// The state at `now` (an open breaker whose cool-down has passed turns half-open).
    pub fn state(&mut self, now: u64) -> BreakerState {
        self.advance(now);
        self.state
    }

    pub fn transitions(&self) -> BreakerTransitions {
        self.transitions
    }

    /// (calls, failures) counted in the window at `now`, while closed.
    pub fn window_totals(&self, now: u64) -> (u32, u32) {
        self.window.totals(now)
    }

    /// When an open breaker will let probes through (clock ns).
    pub fn open_until(&self) -> Option<u64> {
        (self.state == BreakerState::Open).then(|| self.opened_at.saturating_add(self.open_nanos))
    }

    /// Ask to make one call now.
    pub fn try_acquire(&mut self, now: u64) -> Admission {
        self.advance(now);
        match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => Admission::Refused(self.open_until()),
            BreakerState::HalfOpen if self.probes < self.probes_allowed => {
                self.probes += 1;
                Admission::Probe(ProbeToken(self.generation))
            }
            BreakerState::HalfOpen => Admission::Refused(None),
        }
    }

    /// Whether a call would be admitted now, without taking a probe slot.
    pub fn would_admit(&mut self, now: u64) -> bool {
        self.advance(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.probes < self.probes_allowed,
        }
    }

    pub fn record_success(&mut self, now: u64, admission: Admission) {
        self.advance(now);
        match self.state {
            BreakerState::Closed => self.window.record(now, false),
            BreakerState::HalfOpen if self.is_current_probe(admission) => self.close(),
            // Calls admitted before the breaker opened prove nothing about now.
            BreakerState::HalfOpen | BreakerState::Open => {}
        }
    }

    pub fn record_failure(&mut self, now: u64, admission: Admission) {
        self.advance(now);
        match self.state {
            BreakerState::Closed => {
                self.window.record(now, true);
                let (calls, failures) = self.window.totals(now);
                if calls >= self.minimum_requests
                    && f64::from(failures) >= self.failure_rate * f64::from(calls)
                {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen if self.is_current_probe(admission) => self.open(now),
            BreakerState::HalfOpen | BreakerState::Open => {}
        }
    }

    /// The call ended with an outcome that says nothing about the deployment's health (rate
    /// limited, a bad request, cancelled): give a probe slot back.
    pub fn release(&mut self, admission: Admission) {
        if self.state == BreakerState::HalfOpen && self.is_current_probe(admission) {
            self.probes = self.probes.saturating_sub(1);
        }
    }

    fn is_current_probe(&self, admission: Admission) -> bool {
        matches!(admission, Admission::Probe(ProbeToken(g)) if g == self.generation)
    }

    fn advance(&mut self, now: u64) {
        if self.state == BreakerState::Open && now >= self.opened_at.saturating_add(self.open_nanos)
        {
            self.state = BreakerState::HalfOpen;
            self.generation += 1;
            self.probes = 0;
            self.transitions.half_opened += 1;
        }
    }

    fn open(&mut self, now: u64) {
        self.state = BreakerState::Open;
        self.opened_at = now;
        self.generation += 1;
        self.probes = 0;
        self.window.clear();
        self.transitions.opened += 1;
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.generation += 1;
        self.probes = 0;
        self.window.clear();
        self.transitions.closed += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn breaker(window: BreakerWindow, probes: u32) -> Breaker {
        Breaker::new(&BreakerConfig {
            failure_rate: 0.5,
            minimum_requests: 10,
            window,
            open_for: Duration::from_secs(30),
            half_open_probes: probes,
        })
    }

    fn fail(b: &mut Breaker, now: u64) {
        let a = b.try_acquire(now);
        b.record_failure(now, a);
    }

    fn succeed(b: &mut Breaker, now: u64) {
        let a = b.try_acquire(now);
        b.record_success(now, a);
    }

    #[test]
    fn stays_closed_below_the_minimum_volume() {
        let mut b = breaker(BreakerWindow::Count(100), 1);
        for _ in 0..9 {
            fail(&mut b, 0);
        }
        assert_eq!(
            b.state(0),
            BreakerState::Closed,
            "9 failures < 10 calls minimum"
        );
        fail(&mut b, 0);
        assert_eq!(b.state(0), BreakerState::Open);
        assert_eq!(b.transitions().opened, 1);
    }

    #[test]
    fn opens_at_the_failure_rate_not_below() {
        let mut b = breaker(BreakerWindow::Count(100), 1);
        for _ in 0..11 {
            succeed(&mut b, 0);
        }
        for _ in 0..10 {
            fail(&mut b, 0);
        }
        assert_eq!(b.state(0), BreakerState::Closed, "10 of 21 is under 50%");
        fail(&mut b, 0);
        assert_eq!(b.state(0), BreakerState::Open, "11 of 22 is 50%");
    }

    #[test]
    fn count_window_forgets_the_oldest_calls() {
        let mut b = breaker(BreakerWindow::Count(10), 1);
        for _ in 0..4 {
            fail(&mut b, 0);
        }
        for _ in 0..10 {
            succeed(&mut b, 0);
        }
        assert_eq!(b.window_totals(0), (10, 0));
    }

    #[test]
    fn time_window_forgets_old_failures() {
        let mut b = breaker(BreakerWindow::Time(Duration::from_secs(10)), 1);
        for _ in 0..9 {
            fail(&mut b, 0);
        }
        assert_eq!(b.window_totals(5 * S), (9, 9));
        assert_eq!(
            b.window_totals(10 * S),
            (0, 0),
            "the window has moved past them"
        );
        fail(&mut b, 10 * S);
        assert_eq!(
            b.state(10 * S),
            BreakerState::Closed,
            "only 1 call in the window"
        );
    }

    #[test]
    fn refuses_while_open_then_half_opens_with_limited_probes() {
        let mut b = breaker(BreakerWindow::Count(100), 2);
        for _ in 0..10 {
            fail(&mut b, 0);
        }
        assert_eq!(b.try_acquire(29 * S), Admission::Refused(Some(30 * S)));
        let p1 = b.try_acquire(30 * S);
        let p2 = b.try_acquire(30 * S);
        assert!(matches!(p1, Admission::Probe(_)));
        assert!(matches!(p2, Admission::Probe(_)));
        assert_eq!(
            b.try_acquire(30 * S),
            Admission::Refused(None),
            "2 probes at most"
        );
        assert_eq!(b.transitions().half_opened, 1);
        b.release(p2);
        let p3 = b.try_acquire(30 * S);
        assert!(
            matches!(p3, Admission::Probe(_)),
            "a released slot is free again"
        );
        b.record_success(31 * S, p1);
        assert_eq!(b.state(31 * S), BreakerState::Closed);
        assert_eq!(b.transitions().closed, 1);
        assert_eq!(
            b.window_totals(31 * S),
            (0, 0),
            "closing starts a fresh window"
        );
        // A stale probe from the closed period changes nothing.
        b.record_failure(31 * S, p3);
        assert_eq!(b.window_totals(31 * S), (1, 1));
        assert_eq!(b.state(31 * S), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cool_down() {
        let mut b = breaker(BreakerWindow::Count(100), 1);
        for _ in 0..10 {
            fail(&mut b, 0);
        }
        let probe = b.try_acquire(30 * S);
        b.record_failure(31 * S, probe);
        assert_eq!(b.state(31 * S), BreakerState::Open);
        assert_eq!(b.try_acquire(60 * S), Admission::Refused(Some(61 * S)));
        assert!(matches!(b.try_acquire(61 * S), Admission::Probe(_)));
        assert_eq!(b.transitions().opened, 2);
    }

    #[test]
    fn late_outcomes_of_calls_admitted_before_opening_are_ignored() {
        let mut b = breaker(BreakerWindow::Count(100), 1);
        let early = b.try_acquire(0);
        for _ in 0..10 {
            fail(&mut b, 0);
        }
        let _probe = b.try_acquire(30 * S);
        b.record_success(30 * S, early);
        assert_eq!(b.state(30 * S), BreakerState::HalfOpen);
    }

    #[test]
    fn bad_configs_are_named() {
        let bad = BreakerConfig {
            failure_rate: f64::NAN,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("NaN"));
        let bad = BreakerConfig {
            window: BreakerWindow::Count(0),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(BreakerConfig::default().validate().is_ok());
    }
}
