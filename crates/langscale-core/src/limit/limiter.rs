//! The limiter: request buckets, a token bucket and a concurrency cap combined, plus the wait
//! queue. Admission with nobody waiting is lock-free; waiters queue fairly between tenants
//! (weighted, on tokens: `fair`) and in (priority, arrival) order inside a tenant, and only the
//! head may take capacity, so order is strict and nobody is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

use super::fair::{FairQueue, Flow, Place};
use super::{Gcra, LimitError};
use crate::clock::{Clock, SystemClock};

/// How urgent a request is. Lower sorts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    High = 0,
    Standard = 1,
    Batch = 2,
}

impl std::str::FromStr for Priority {
    type Err = LimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Self::High),
            "standard" => Ok(Self::Standard),
            "batch" => Ok(Self::Batch),
            other => Err(LimitError::Config(format!(
                "priority must be 'high', 'standard' or 'batch', got {other:?}"
            ))),
        }
    }
}

/// Who asks for a permit: how urgent it is and which tenant (flow) it is for. Waiters of
/// different tenants share capacity by weight; a `Priority` alone asks for no tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub priority: Priority,
    pub flow: Flow,
}

impl Ask {
    pub fn new(priority: Priority, tenant: Option<&str>) -> Self {
        Self {
            priority,
            flow: tenant.map(Arc::from),
        }
    }
}

impl From<Priority> for Ask {
    fn from(priority: Priority) -> Self {
        Self {
            priority,
            flow: None,
        }
    }
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Standard => "standard",
            Self::Batch => "batch",
        }
    }
}

/// Limits to enforce; any combination, `None` meaning "no limit of that kind".
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    pub requests_per_second: Option<f64>,
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
    pub max_concurrency: Option<u32>,
    /// Requests admitted at once. Default: 20 ms worth of the request rate, at least 1, so a
    /// waiter woken a little late by the OS timer does not lose its slot.
    pub burst: Option<u64>,
    /// Tokens admitted at once. Default: one minute's worth (`tokens_per_minute`).
    pub token_burst: Option<u64>,
    /// Waiting this long lifts a waiter one priority level, so batch work cannot starve.
    pub priority_aging: Duration,
    /// Each tenant's share of capacity while tenants wait (default 1 each).
    pub tenant_weights: HashMap<String, f64>,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            requests_per_second: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_concurrency: None,
            burst: None,
            token_burst: None,
            priority_aging: Duration::from_secs(5),
            tenant_weights: HashMap::new(),
        }
    }
}

/// Counters, for metrics and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    pub acquired: u64,
    pub waited: u64,
    pub wait_nanos: u64,
    pub timeouts: u64,
    pub waiting: u64,
    pub in_flight: u64,
}

#[derive(Debug)]
struct Waiter {
    event: Event,
}

type Queue = FairQueue<Arc<Waiter>>;

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    request_buckets: Vec<Gcra>,
    token_bucket: Option<Gcra>,
    max_concurrency: Option<u32>,
    in_flight: AtomicU32,
    queue: Mutex<Queue>,
    waiting: AtomicUsize,
    aging_nanos: u64,
    acquired: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    timeouts: AtomicU64,
}

/// Why admission failed.
enum Blocked {
    /// A bucket is empty until this time (ns).
    Until(u64),
    /// All concurrency slots are taken; a release will wake the head.
    Slots,
}

/// A rate limiter shared by any number of threads and tasks (clone is cheap).
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

/// The result of polling a ticket.
#[derive(Debug)]
pub enum Poll {
    Ready(Permit),
    /// Not yet: poll again at this clock time (ns), or when woken if `None`.
    Pending(Option<u64>),
}

/// A place in the wait queue. Dropping it gives the place back.
#[derive(Debug)]
pub struct Ticket {
    inner: Arc<Inner>,
    place: Place,
    tokens: u64,
    priority: Priority,
    waiter: Arc<Waiter>,
    queued_at: u64,
    done: bool,
}

/// Admission to make one call. Holds a concurrency slot until released or dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    tokens: u64,
    priority: Priority,
    holds_slot: bool,
}

/// A tenant weight is a positive finite number (local and shared limiters alike).
pub(super) fn check_weight(tenant: &str, weight: f64) -> Result<f64, LimitError> {
    if weight.is_finite() && weight > 0.0 {
        Ok(weight)
    } else {
        Err(LimitError::Config(format!(
            "the weight of tenant {tenant:?} must be a positive number, got {weight}"
        )))
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding this lock cannot leave the queue inconsistent (every mutation is
    // a single map operation), so a poisoned lock is still safe to use.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Limiter {
    pub fn new(config: &LimiterConfig) -> Result<Self, LimitError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: &LimiterConfig, clock: Arc<dyn Clock>) -> Result<Self, LimitError> {
        let mut request_buckets = Vec::new();
        for (name, rate, per) in [
            ("requests_per_second", config.requests_per_second, 1.0),
            ("requests_per_minute", config.requests_per_minute, 60.0),
        ] {
            if let Some(rate) = rate {
                let burst = match config.burst {
                    Some(b) => b,
                    None if rate.is_finite() && rate > 0.0 => {
                        ((rate / per) * 0.02).ceil().max(1.0) as u64
                    }
                    None => 1,
                };
                request_buckets.push(Gcra::new(name, rate, per, burst)?);
            }
        }
        let token_bucket = match config.tokens_per_minute {
            Some(rate) => {
                let burst = match config.token_burst {
                    Some(b) => b,
                    None if rate.is_finite() && rate >= 1.0 => rate as u64,
                    None => 1,
                };
                Some(Gcra::new("tokens_per_minute", rate, 60.0, burst)?)
            }
            None => None,
        };
        if config.max_concurrency == Some(0) {
            return Err(LimitError::Config(
                "max_concurrency must be at least 1, got 0".into(),
            ));
        }
        let aging_nanos = u64::try_from(config.priority_aging.as_nanos()).unwrap_or(u64::MAX);
        let mut queue = Queue::default();
        for (tenant, weight) in &config.tenant_weights {
            queue.set_weight(Arc::from(tenant.as_str()), check_weight(tenant, *weight)?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                clock,
                request_buckets,
                token_bucket,
                max_concurrency: config.max_concurrency,
                in_flight: AtomicU32::new(0),
                queue: Mutex::new(queue),
                waiting: AtomicUsize::new(0),
                aging_nanos,
                acquired: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                wait_nanos: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
            }),
        })
    }

    /// Change a tenant's share of capacity while tenants wait (at run time).
    pub fn set_tenant_weight(&self, tenant: &str, weight: f64) -> Result<(), LimitError> {
        let weight = check_weight(tenant, weight)?;
        lock(&self.inner.queue).set_weight(Arc::from(tenant), weight);
        Ok(())
    }

    /// Reject a token count that no wait could ever satisfy.
    pub fn check_tokens(&self, tokens: u64) -> Result<(), LimitError> {
        if let Some(bucket) = &self.inner.token_bucket {
            if tokens > bucket.burst() {
                return Err(LimitError::Config(format!(
                    "a request for {tokens} tokens can never be admitted: the token bucket holds at most {} (raise token_burst)",
                    bucket.burst()
                )));
            }
        }
        Ok(())
    }

    /// Admit now if nobody is waiting and capacity is there; never waits.
    pub fn try_acquire(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
    ) -> Result<Option<Permit>, LimitError> {
        let priority = ask.into().priority;
        self.check_tokens(tokens)?;
        if self.inner.waiting.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        let now = self.inner.clock.now_nanos();
        match self.inner.admit(tokens, now) {
            Ok(()) => Ok(Some(self.inner.permit(tokens, priority))),
            Err(Blocked::Until(_)) => {
                // `admit` held a concurrency slot for a moment and gave it back: a head that
                // looked while we held it sleeps until a release, so this is one.
                if self.inner.max_concurrency.is_some() {
                    self.inner.wake_head();
                }
                Ok(None)
            }
            Err(Blocked::Slots) => Ok(None),
        }
    }

    /// Join the wait queue. Poll the ticket to learn when it is admitted.
    pub fn enqueue(&self, tokens: u64, ask: impl Into<Ask>) -> Result<Ticket, LimitError> {
        let Ask { priority, flow } = ask.into();
        self.check_tokens(tokens)?;
        let now = self.inner.clock.now_nanos();
        let rank = now.saturating_add(self.inner.aging_nanos.saturating_mul(priority as u64));
        let waiter = Arc::new(Waiter {
            event: Event::new(),
        });
        let place = {
            let mut queue = lock(&self.inner.queue);
            let place = queue.push(flow, rank, tokens, Arc::clone(&waiter));
            self.inner.waiting.fetch_add(1, Ordering::SeqCst);
            place
        };
        Ok(Ticket {
            inner: Arc::clone(&self.inner),
            place,
            tokens,
            priority,
            waiter,
            queued_at: now,
            done: false,
        })
    }

    /// Wait on the calling thread until admitted or `timeout` passes.
    pub fn acquire_blocking(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
        timeout: Option<Duration>,
    ) -> Result<Permit, LimitError> {
        let ask = ask.into();
        if let Some(permit) = self.try_acquire(tokens, ask.priority)? {
            return Ok(permit);
        }
        // A timeout too large to represent is no deadline at all.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut ticket = self.enqueue(tokens, ask)?;
        loop {
            let listener = ticket.waiter.event.listen();
            let wake_at = match ticket.poll() {
                Poll::Ready(permit) => return Ok(permit),
                Poll::Pending(at) => at.map(|at| self.instant_of(at)),
            };
            let until = match (wake_at, deadline) {
                (Some(a), Some(d)) => Some(a.min(d)),
                (a, d) => a.or(d),
            };
            match until {
                Some(until) => {
                    listener.wait_deadline(until);
                }
                None => {
                    listener.wait();
                }
            }
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    if let Poll::Ready(permit) = ticket.poll() {
                        return Ok(permit);
                    }
                    return Err(self.inner.timed_out(timeout));
                }
            }
        }
    }

    /// Wait as a future (tokio timers) until admitted or `timeout` passes. Dropping the
    /// future gives the place in the queue back.
    pub async fn acquire(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
        timeout: Option<Duration>,
    ) -> Result<Permit, LimitError> {
        let ask = ask.into();
        if let Some(permit) = self.try_acquire(tokens, ask.priority)? {
            return Ok(permit);
        }
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut ticket = self.enqueue(tokens, ask)?;
        loop {
            let listener = ticket.waiter.event.listen();
            let wake_at = match ticket.poll() {
                Poll::Ready(permit) => return Ok(permit),
                Poll::Pending(at) => {
                    at.map(|at| tokio::time::Instant::from_std(self.instant_of(at)))
                }
            };
            let until = match (wake_at, deadline) {
                (Some(a), Some(d)) => Some(a.min(d)),
                (a, d) => a.or(d),
            };
            match until {
                Some(until) => {
                    let _ = tokio::time::timeout_at(until, listener).await;
                }
                None => listener.await,
            }
            if let Some(deadline) = deadline {
                if tokio::time::Instant::now() >= deadline {
                    if let Poll::Ready(permit) = ticket.poll() {
                        return Ok(permit);
                    }
                    return Err(self.inner.timed_out(timeout));
                }
            }
        }
    }

    /// Convert a clock time to a wall instant (only meaningful for the system clock).
    fn instant_of(&self, at: u64) -> Instant {
        let now = self.inner.clock.now_nanos();
        Instant::now() + Duration::from_nanos(at.saturating_sub(now))
    }

    pub fn stats(&self) -> LimiterStats {
        let inner = &self.inner;
        LimiterStats {
            acquired: inner.acquired.load(Ordering::Relaxed),
            waited: inner.waited.load(Ordering::Relaxed),
            wait_nanos: inner.wait_nanos.load(Ordering::Relaxed),
            timeouts: inner.timeouts.load(Ordering::Relaxed),
            waiting: inner.waiting.load(Ordering::Relaxed) as u64,
            in_flight: u64::from(inner.in_flight.load(Ordering::Relaxed)),
        }
    }

    /// The most tokens one request may ask for, if tokens are limited.
    pub fn max_tokens(&self) -> Option<u64> {
        self.inner.token_bucket.as_ref().map(Gcra::burst)
    }
}

impl Inner {
    /// Take a slot and every bucket's share at `now`, all or nothing.
    fn admit(&self, tokens: u64, now: u64) -> Result<(), Blocked> {
        if let Some(max) = self.max_concurrency {
            let taken = self
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max).then_some(n + 1)
                });
            if taken.is_err() {
                return Err(Blocked::Slots);
            }
        }
        let rollback = |buckets: &[Gcra]| {
            for b in buckets {
                b.give_back(1);
            }
            if self.max_concurrency.is_some() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        };
        for (i, bucket) in self.request_buckets.iter().enumerate() {
            if let Err(at) = bucket.try_take(1, now) {
                rollback(&self.request_buckets[..i]);
                return Err(Blocked::Until(at));
            }
        }
        if let Some(bucket) = &self.token_bucket {
            if tokens > 0 {
                if let Err(at) = bucket.try_take(tokens, now) {
                    rollback(&self.request_buckets);
                    return Err(Blocked::Until(at));
                }
            }
        }
        self.acquired.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn permit(self: &Arc<Self>, tokens: u64, priority: Priority) -> Permit {
        Permit {
            inner: Arc::clone(self),
            tokens,
            priority,
            holds_slot: self.max_concurrency.is_some(),
        }
    }

    /// Wake whoever is now first in the queue (it is the only one that may proceed).
    fn wake_head(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let queue = lock(&self.queue);
        if let Some(waiter) = queue.head() {
            waiter.event.notify(usize::MAX);
        }
    }

    fn timed_out(&self, timeout: Option<Duration>) -> LimitError {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        LimitError::Timeout(timeout.map_or(0.0, |t| t.as_secs_f64()))
    }
}

impl Ticket {
    /// Try to be admitted: only the head of the queue may take capacity.
    pub fn poll(&mut self) -> Poll {
        if self.done {
            return Poll::Pending(None);
        }
        let inner = Arc::clone(&self.inner);
        let mut queue = lock(&inner.queue);
        if !queue.is_head(&self.place) {
            return Poll::Pending(None);
        }
        let now = inner.clock.now_nanos();
        match inner.admit(self.tokens, now) {
            Ok(()) => {
                queue.pop_head();
                inner.waiting.fetch_sub(1, Ordering::SeqCst);
                self.done = true;
                inner.waited.fetch_add(1, Ordering::Relaxed);
                inner
                    .wait_nanos
                    .fetch_add(now.saturating_sub(self.queued_at), Ordering::Relaxed);
                if let Some(next) = queue.head() {
                    next.event.notify(usize::MAX);
                }
                drop(queue);
                Poll::Ready(inner.permit(self.tokens, self.priority))
            }
            Err(Blocked::Until(at)) => Poll::Pending(Some(at)),
            Err(Blocked::Slots) => Poll::Pending(None),
        }
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut queue = lock(&self.inner.queue);
        let was_head = queue.is_head(&self.place);
        if queue.remove(&self.place) {
            self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if was_head {
            if let Some(next) = queue.head() {
                next.event.notify(usize::MAX);
            }
        }
    }
}

impl Permit {
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Reconcile the token estimate with real usage: refund the difference or charge it.
    pub fn settle(&mut self, actual_tokens: u64) {
        if let Some(bucket) = &self.inner.token_bucket {
            if actual_tokens > self.tokens {
                // Debt is capped at one full bucket, so a wild figure cannot stall every
                // later caller for ever.
                let extra = (actual_tokens - self.tokens).min(bucket.burst());
                bucket.charge(extra, self.inner.clock.now_nanos());
            } else if actual_tokens < self.tokens {
                bucket.give_back(self.tokens - actual_tokens);
                self.inner.wake_head();
            }
        }
        self.tokens = actual_tokens;
    }

    /// Give the concurrency slot back now (dropping the permit does the same).
    pub fn release(&mut self) {
        if self.holds_slot {
            self.holds_slot = false;
            self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.wake_head();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn limiter(config: LimiterConfig) -> (Limiter, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new());
        let limiter = Limiter::with_clock(&config, clock.clone()).unwrap();
        (limiter, clock)
    }

    fn ready(poll: Poll) -> Permit {
        match poll {
            Poll::Ready(p) => p,
            Poll::Pending(at) => panic!("expected ready, pending until {at:?}"),
        }
    }

    #[test]
    fn rate_is_held_over_time() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(100.0),
            ..Default::default()
        });
        let mut admitted = 0;
        for _ in 0..10_000 {
            if l.try_acquire(0, Priority::Standard).unwrap().is_some() {
                admitted += 1;
            }
            clock.advance(Duration::from_micros(100));
        }
        // one second of 100/s plus the 2-request default burst
        assert!((100..=102).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn per_minute_and_per_second_combine() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(10.0),
            requests_per_minute: Some(60.0),
            burst: Some(1),
            ..Default::default()
        });
        let mut admitted = 0;
        for _ in 0..10_000 {
            if l.try_acquire(0, Priority::Standard).unwrap().is_some() {
                admitted += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        assert_eq!(admitted, 10, "the tighter per-minute limit wins");
    }

    #[test]
    fn burst_admits_at_once() {
        let (l, _clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(5),
            ..Default::default()
        });
        let permits: Vec<_> = (0..5)
            .map(|_| l.try_acquire(0, Priority::Standard).unwrap())
            .collect();
        assert!(permits.iter().all(Option::is_some));
        assert!(l.try_acquire(0, Priority::Standard).unwrap().is_none());
    }

    #[test]
    fn waiter_is_told_exactly_when_its_turn_is_due() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(10.0),
            burst: Some(1),
            ..Default::default()
        });
        let _first = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut t = l.enqueue(0, Priority::Standard).unwrap();
        match t.poll() {
            Poll::Pending(Some(at)) => assert_eq!(at, 100 * MS),
            other => panic!("{other:?}"),
        }
        clock.advance(Duration::from_millis(99));
        assert!(matches!(t.poll(), Poll::Pending(Some(_))));
        clock.advance(Duration::from_millis(1));
        ready(t.poll());
        assert_eq!(l.stats().waited, 1);
        assert_eq!(l.stats().wait_nanos, 100 * MS);
    }

    #[test]
    fn waiters_are_served_by_priority_then_arrival() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(1),
            ..Default::default()
        });
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut b1 = l.enqueue(0, Priority::Batch).unwrap();
        let mut s1 = l.enqueue(0, Priority::Standard).unwrap();
        let mut h1 = l.enqueue(0, Priority::High).unwrap();
        let mut s2 = l.enqueue(0, Priority::Standard).unwrap();
        let mut h2 = l.enqueue(0, Priority::High).unwrap();
        let mut order = Vec::new();
        let mut tickets = vec![
            ("b1", &mut b1),
            ("s1", &mut s1),
            ("h1", &mut h1),
            ("s2", &mut s2),
            ("h2", &mut h2),
        ];
        for _ in 0..5 {
            clock.advance(Duration::from_secs(1));
            let mut admitted = 0;
            for (name, t) in &mut tickets {
                if let Poll::Ready(_) = t.poll() {
                    order.push(*name);
                    admitted += 1;
                }
            }
            assert_eq!(admitted, 1, "one admission per second");
        }
        assert_eq!(order, ["h1", "h2", "s1", "s2", "b1"]);
    }

    /// Admit one waiter per simulated second; the names in the order admitted.
    fn admit_in_turn(clock: &FakeClock, tickets: &mut [(String, Ticket)]) -> Vec<String> {
        let mut order = Vec::new();
        for _ in 0..tickets.len() {
            clock.advance(Duration::from_secs(1));
            for (name, t) in tickets.iter_mut() {
                if let Poll::Ready(_) = t.poll() {
                    order.push(name.clone());
                }
            }
        }
        order
    }

    #[test]
    fn tenants_share_a_limit_fairly_and_priorities_hold_inside_a_tenant() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(1),
            ..Default::default()
        });
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut tickets = Vec::new();
        for i in 0..20 {
            let t = l
                .enqueue(0, Ask::new(Priority::Standard, Some("heavy")))
                .unwrap();
            tickets.push((format!("heavy{i}"), t));
        }
        let light = |p| Ask::new(p, Some("light"));
        tickets.push((
            "light-b".into(),
            l.enqueue(0, light(Priority::Batch)).unwrap(),
        ));
        tickets.push((
            "light-h".into(),
            l.enqueue(0, light(Priority::High)).unwrap(),
        ));
        let order = admit_in_turn(&clock, &mut tickets);
        assert_eq!(order.len(), 22, "everyone admitted once: {order:?}");
        let at = |name: &str| order.iter().position(|n| n == name).unwrap();
        assert!(
            at("light-h") <= 1,
            "the light tenant waits behind one heavy at most: {order:?}"
        );
        assert!(
            at("light-b") <= 3,
            "and its second behind one more: {order:?}"
        );
        assert!(
            at("light-h") < at("light-b"),
            "priority inside a tenant: {order:?}"
        );
        let heavy: Vec<_> = order.iter().filter(|n| n.starts_with("heavy")).collect();
        let arrival: Vec<_> = (0..20).map(|i| format!("heavy{i}")).collect();
        assert_eq!(
            heavy,
            arrival.iter().collect::<Vec<_>>(),
            "FIFO inside a tenant"
        );
    }

    #[test]
    fn tenant_weights_set_the_shares() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(1),
            tenant_weights: [("gold".to_owned(), 2.0)].into_iter().collect(),
            ..Default::default()
        });
        assert!(l.set_tenant_weight("bad", 0.0).is_err());
        assert!(l.set_tenant_weight("bad", f64::NAN).is_err());
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut tickets = Vec::new();
        for i in 0..12 {
            for who in ["gold", "free"] {
                let t = l
                    .enqueue(10, Ask::new(Priority::Standard, Some(who)))
                    .unwrap();
                tickets.push((format!("{who}{i}"), t));
            }
        }
        let order = admit_in_turn(&clock, &mut tickets);
        let gold = order[..12].iter().filter(|n| n.starts_with("gold")).count();
        assert_eq!(
            gold, 8,
            "weight 2 against 1: two thirds of the first 12: {order:?}"
        );
    }

    #[test]
    fn a_tenant_giving_up_passes_the_turn_on() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(1),
            ..Default::default()
        });
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let a = l
            .enqueue(0, Ask::new(Priority::Standard, Some("a")))
            .unwrap();
        let mut b = l
            .enqueue(0, Ask::new(Priority::Standard, Some("b")))
            .unwrap();
        drop(a);
        clock.advance(Duration::from_secs(1));
        ready(b.poll());
        assert_eq!(l.stats().waiting, 0);
    }

    #[test]
    fn batch_is_not_starved_by_a_stream_of_high_priority_work() {
        let config = LimiterConfig {
            requests_per_second: Some(10.0),
            burst: Some(1),
            priority_aging: Duration::from_secs(1),
            ..Default::default()
        };
        let (l, clock) = limiter(config);
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut batch = l.enqueue(0, Priority::Batch).unwrap();
        let mut highs = Vec::new();
        let mut batch_admitted_at = None;
        for step in 0..100 {
            // two new high-priority requests arrive every 100 ms, more than the rate serves
            highs.push(l.enqueue(0, Priority::High).unwrap());
            highs.push(l.enqueue(0, Priority::High).unwrap());
            clock.advance(Duration::from_millis(100));
            if matches!(batch.poll(), Poll::Ready(_)) {
                batch_admitted_at = Some(step);
                break;
            }
            for h in &mut highs {
                if matches!(h.poll(), Poll::Ready(_)) {
                    break;
                }
            }
        }
        let at = batch_admitted_at.expect("batch waiter starved");
        // Ranked as if it had arrived 2 s (two aging steps) late, the batch waiter goes after the
        // 40 high-priority requests that came before that, and before every later one.
        assert!(at <= 41, "batch admitted after {at} steps");
    }

    #[test]
    fn dropped_ticket_gives_its_place_back() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(1),
            ..Default::default()
        });
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let first = l.enqueue(0, Priority::Standard).unwrap();
        let mut second = l.enqueue(0, Priority::Standard).unwrap();
        clock.advance(Duration::from_secs(1));
        assert!(
            matches!(second.poll(), Poll::Pending(None)),
            "second is not the head yet"
        );
        drop(first);
        ready(second.poll());
        assert_eq!(l.stats().waiting, 0);
    }

    #[test]
    fn fast_path_does_not_jump_the_queue() {
        let (l, clock) = limiter(LimiterConfig {
            requests_per_second: Some(1.0),
            burst: Some(1),
            ..Default::default()
        });
        let _p = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut t = l.enqueue(0, Priority::Standard).unwrap();
        clock.advance(Duration::from_secs(1));
        assert!(l.try_acquire(0, Priority::High).unwrap().is_none());
        ready(t.poll());
    }

    #[test]
    fn concurrency_slots_are_released_and_wake_the_head() {
        let (l, _clock) = limiter(LimiterConfig {
            max_concurrency: Some(2),
            ..Default::default()
        });
        let a = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let _b = l.try_acquire(0, Priority::Standard).unwrap().unwrap();
        assert!(l.try_acquire(0, Priority::Standard).unwrap().is_none());
        let mut t = l.enqueue(0, Priority::Standard).unwrap();
        assert!(matches!(t.poll(), Poll::Pending(None)));
        assert_eq!(l.stats().in_flight, 2);
        drop(a);
        ready(t.poll());
    }

    #[test]
    fn tokens_are_limited_and_settle_refunds_or_charges() {
        let config = LimiterConfig {
            tokens_per_minute: Some(6000.0),
            token_burst: Some(1000),
            ..Default::default()
        };
        let (l, _clock) = limiter(config); // 100 tokens/s
        let mut p = l.try_acquire(800, Priority::Standard).unwrap().unwrap();
        assert!(l.try_acquire(300, Priority::Standard).unwrap().is_none());
        p.settle(500); // used less: 300 back
        assert_eq!(p.tokens(), 500);
        let mut q = l.try_acquire(300, Priority::Standard).unwrap().unwrap();
        assert!(
            l.try_acquire(300, Priority::Standard).unwrap().is_none(),
            "only 200 left"
        );
        q.settle(700); // used more: 400 charged, the bucket is 200 in debt
        let mut t = l.enqueue(100, Priority::Standard).unwrap();
        match t.poll() {
            Poll::Pending(Some(at)) => assert_eq!(at, 3 * S, "200 of debt and 100 more at 100/s"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impossible_requests_are_rejected_not_waited_on() {
        let (l, _clock) = limiter(LimiterConfig {
            tokens_per_minute: Some(1000.0),
            ..Default::default()
        });
        assert!(matches!(
            l.try_acquire(1001, Priority::Standard),
            Err(LimitError::Config(_))
        ));
        assert!(matches!(
            l.enqueue(5000, Priority::Standard),
            Err(LimitError::Config(_))
        ));
        assert!(l.try_acquire(1000, Priority::Standard).unwrap().is_some());
    }

    #[test]
    fn bad_settings_are_rejected() {
        for config in [
            LimiterConfig {
                requests_per_second: Some(0.0),
                ..Default::default()
            },
            LimiterConfig {
                requests_per_minute: Some(-1.0),
                ..Default::default()
            },
            LimiterConfig {
                tokens_per_minute: Some(f64::NAN),
                ..Default::default()
            },
            LimiterConfig {
                max_concurrency: Some(0),
                ..Default::default()
            },
            LimiterConfig {
                requests_per_second: Some(1.0),
                burst: Some(0),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(Limiter::new(&config), Err(LimitError::Config(_))),
                "{config:?}"
            );
        }
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!("batch".parse::<Priority>().unwrap(), Priority::Batch);
    }

    #[test]
    fn blocking_acquire_waits_and_times_out() {
        let l = Limiter::new(&LimiterConfig {
            requests_per_second: Some(20.0),
            burst: Some(1),
            ..Default::default()
        })
        .unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            l.acquire_blocking(0, Priority::Standard, None).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(90));
        let l = Limiter::new(&LimiterConfig {
            requests_per_minute: Some(1.0),
            burst: Some(1),
            ..Default::default()
        })
        .unwrap();
        l.acquire_blocking(0, Priority::Standard, None).unwrap();
        let err = l
            .acquire_blocking(0, Priority::Standard, Some(Duration::from_millis(20)))
            .unwrap_err();
        assert!(matches!(err, LimitError::Timeout(_)));
        assert_eq!(l.stats().timeouts, 1);
        assert_eq!(l.stats().waiting, 0, "the timed-out waiter left the queue");
    }

    #[test]
    fn many_threads_share_one_limiter() {
        let l = Limiter::new(&LimiterConfig {
            requests_per_second: Some(1000.0),
            max_concurrency: Some(4),
            ..Default::default()
        })
        .unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let _p = l
                            .acquire_blocking(0, Priority::Standard, Some(Duration::from_secs(10)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(l.stats().acquired, 200);
        assert_eq!(l.stats().in_flight, 0);
        assert_eq!(l.stats().waiting, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_waiters_are_admitted_and_cancelled_ones_leave() {
        let l = Limiter::new(&LimiterConfig {
            requests_per_second: Some(200.0),
            burst: Some(1),
            ..Default::default()
        })
        .unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(
                    async move { l.acquire(0, Priority::Standard, None).await.map(|_| ()) },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(l.stats().acquired, 20);

        let slow = Limiter::new(&LimiterConfig {
            requests_per_minute: Some(1.0),
            burst: Some(1),
            ..Default::default()
        })
        .unwrap();
        let _p = slow.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let waiter = {
            let slow = slow.clone();
            tokio::spawn(async move { slow.acquire(0, Priority::Standard, None).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(slow.stats().waiting, 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(
            slow.stats().waiting,
            0,
            "a cancelled waiter gives its place back"
        );
    }

    #[test]
    fn a_fast_path_rollback_wakes_a_head_waiting_for_a_slot() {
        // Regression: a fast-path caller that briefly held the last slot and rolled back
        // after a bucket refused left a head waiting for a slot asleep for ever.
        let l = Limiter::new(&LimiterConfig {
            requests_per_second: Some(1000.0),
            max_concurrency: Some(1),
            ..Default::default()
        })
        .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let (l, stop) = (l.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    drop(l.try_acquire(0, Priority::Standard));
                }
            })
        };
        for _ in 0..300 {
            let permit = l.acquire_blocking(0, Priority::Standard, Some(Duration::from_secs(10)));
            assert!(permit.is_ok(), "a waiter was never woken");
        }
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
    }

    #[test]
    fn huge_timeouts_and_settlements_do_not_panic_or_stall() {
        let l = Limiter::new(&LimiterConfig {
            tokens_per_minute: Some(6000.0),
            token_burst: Some(100),
            ..Default::default()
        })
        .unwrap();
        let mut p = l
            .acquire_blocking(10, Priority::Standard, Some(Duration::MAX))
            .unwrap();
        p.settle(u64::MAX);
        let t = l.enqueue(1, Priority::Standard).unwrap();
        drop(t);
        let mut t = l.enqueue(1, Priority::Standard).unwrap();
        match t.poll() {
            Poll::Pending(Some(at)) => assert!(at <= 3 * S, "debt capped at one bucket: {at}"),
            Poll::Pending(None) => panic!("no wake time"),
            Poll::Ready(_) => {}
        }
    }
}
