//! Request coalescing (single-flight): when many callers miss on the same key at once, the
//! first leads (makes the one provider call) and the others follow, waiting for what the
//! leader lands: its value, its failure, or word that it gave up (then one follower leads).
//!
//! Waits are bounded: a follower waits at most until the flight is `bound` old, and a flight
//! that old no longer holds anyone back (the next caller leads a fresh one), so a leader that
//! never lands, because it crashed or was never going to store, cannot block others for long.
//! Threads wait on a condition variable, coroutines on a `Notify`; one landing wakes both.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a leader lands for its followers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing<V, E> {
    /// The answer, stored by any caller for the key: followers use it.
    Value(V),
    /// The leader's call failed: followers get the same error (a failure is never stored).
    Failed(E),
    /// The leader gave up (cancelled, interrupted, or its answer is not cacheable):
    /// followers try again, and one of them leads.
    Abandoned,
}

/// Identifies one leader's flight, so a leader whose flight went stale and was replaced
/// cannot fail or abandon its successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// A caller's part in a flight, from [`Flights::begin`].
#[derive(Debug)]
pub enum Role<V, E> {
    /// Make the call, then land it ([`Flights::land_value`] or [`Flights::land_failure`]).
    Lead(Ticket),
    /// Someone else is making it: wait on this flight.
    Follow(Arc<Flight<V, E>>),
}

/// One call in flight and what it landed.
#[derive(Debug)]
pub struct Flight<V, E> {
    ticket: Ticket,
    deadline: Instant,
    landed: Mutex<Option<Landing<V, E>>>,
    threads: Condvar,
    tasks: Notify,
}

impl<V: Clone, E: Clone> Flight<V, E> {
    pub(crate) fn new(ticket: Ticket, deadline: Instant) -> Self {
        Self {
            ticket,
            deadline,
            landed: Mutex::new(None),
            threads: Condvar::new(),
            tasks: Notify::new(),
        }
    }

    pub(crate) fn land(&self, landing: Landing<V, E>) {
        let mut landed = self.landed.lock().unwrap_or_else(PoisonError::into_inner);
        if landed.is_none() {
            *landed = Some(landing);
        }
        drop(landed);
        self.threads.notify_all();
        self.tasks.notify_waiters();
    }

    fn landed(&self) -> Option<Landing<V, E>> {
        self.landed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether it still holds callers back at `now`: not landed, not stale.
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.deadline > now
            && self
                .landed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
    }

    /// The leader's ticket.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// Blocks the thread until the flight lands or goes stale; None when it went stale.
    pub fn wait_blocking(&self) -> Option<Landing<V, E>> {
        let mut landed = self.landed.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(landing) = landed.as_ref() {
                return Some(landing.clone());
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            landed = self
                .threads
                .wait_timeout(landed, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits (on a tokio runtime with time enabled) until the flight lands or goes stale;
    /// None when it went stale. Dropping the future stops waiting and changes nothing.
    pub async fn wait(&self) -> Option<Landing<V, E>> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        loop {
            // Registered before the check, so a landing between the two still wakes it.
            let notified = self.tasks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(landing) = self.landed() {
                return Some(landing);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.landed();
            }
        }
    }
}

/// Counters of a [`Flights`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlightStats {
    /// Callers that led a flight (made the call).
    pub led: u64,
    /// Callers that followed one instead of making their own call.
    pub followed: u64,
    /// Flights open now.
    pub in_flight: u64,
}

/// The open flights by key. `Send + Sync`; share it through an `Arc`.
#[derive(Debug)]
pub struct Flights<K, V, E> {
    open: Mutex<HashMap<K, Arc<Flight<V, E>>>>,
    bound: Duration,
    next: AtomicU64,
    led: AtomicU64,
    followed: AtomicU64,
}

impl<K: Hash + Eq, V: Clone, E: Clone> Flights<K, V, E> {
    /// Flights that hold followers back at most `bound` (a zero bound never coalesces).
    pub fn new(bound: Duration) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            bound,
            next: AtomicU64::new(1),
            led: AtomicU64::new(0),
            followed: AtomicU64::new(0),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<Flight<V, E>>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The longest a follower waits.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Lead a new flight for `key`, or follow the one in flight (unless it is stale).
    pub fn begin(&self, key: K) -> Role<V, E> {
        let now = Instant::now();
        let mut open = self.open();
        if let Some(flight) = open.get(&key) {
            if flight.deadline > now {
                self.followed.fetch_add(1, Ordering::Relaxed);
                return Role::Follow(Arc::clone(flight));
            }
        }
        let ticket = Ticket(self.next.fetch_add(1, Ordering::Relaxed));
        let deadline = now.checked_add(self.bound).unwrap_or(now);
        if let Some(stale) = open.insert(key, Arc::new(Flight::new(ticket, deadline))) {
            stale.land(Landing::Abandoned);
        }
        self.led.fetch_add(1, Ordering::Relaxed);
        Role::Lead(ticket)
    }

    /// A value stored for `key` (by its leader or anyone else): the flight, if any, lands it.
    pub fn land_value(&self, key: &K, value: V) {
        let flight = self.open().remove(key);
        if let Some(flight) = flight {
            flight.land(Landing::Value(value));
        }
    }

    /// The leader holding `ticket` failed or gave up: its flight lands that, and is closed.
    /// False (nothing done) when the flight for `key` is no longer this leader's.
    pub fn land_failure(&self, key: &K, ticket: Ticket, landing: Landing<V, E>) -> bool {
        let flight = {
            let mut open = self.open();
            match open.get(key) {
                Some(flight) if flight.ticket == ticket => open.remove(key),
                _ => None,
            }
        };
        flight.is_some_and(|flight| {
            flight.land(landing);
            true
        })
    }

    /// True when some flight is open (so a store must look for one to land).
    pub fn busy(&self) -> bool {
        !self.open().is_empty()
    }

    /// Counters; `in_flight` includes stale flights not yet replaced or landed.
    pub fn stats(&self) -> FlightStats {
        FlightStats {
            led: self.led.load(Ordering::Relaxed),
            followed: self.followed.load(Ordering::Relaxed),
            in_flight: self.open().len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    type TestFlights = Flights<u32, String, String>;

    fn flights() -> Arc<TestFlights> {
        Arc::new(Flights::new(Duration::from_secs(30)))
    }

    #[test]
    fn first_caller_leads_and_the_rest_follow() {
        let f = flights();
        assert!(matches!(f.begin(1), Role::Lead(_)));
        assert!(matches!(f.begin(1), Role::Follow(_)));
        assert!(matches!(f.begin(2), Role::Lead(_)));
        let s = f.stats();
        assert_eq!((s.led, s.followed, s.in_flight), (2, 1, 2));
    }

    #[test]
    fn followers_on_threads_get_the_value() {
        let f = flights();
        let Role::Lead(_) = f.begin(7) else {
            panic!("first caller must lead")
        };
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let Role::Follow(flight) = f.begin(7) else {
                    panic!("later callers must follow")
                };
                thread::spawn(move || flight.wait_blocking())
            })
            .collect();
        f.land_value(&7, "answer".to_owned());
        for w in waiters {
            assert_eq!(
                w.join().expect("a waiter thread panicked"),
                Some(Landing::Value("answer".to_owned()))
            );
        }
        assert_eq!(f.stats().in_flight, 0);
        assert!(
            matches!(f.begin(7), Role::Lead(_)),
            "a landed flight is closed"
        );
    }

    #[tokio::test]
    async fn followers_on_tasks_get_the_failure() {
        let f = flights();
        let Role::Lead(ticket) = f.begin(3) else {
            panic!("first caller must lead")
        };
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let Role::Follow(flight) = f.begin(3) else {
                panic!("later callers must follow")
            };
            tasks.push(tokio::spawn(async move { flight.wait().await }));
        }
        tokio::task::yield_now().await;
        assert!(f.land_failure(&3, ticket, Landing::Failed("boom".to_owned())));
        for t in tasks {
            assert_eq!(
                t.await.expect("a waiter task panicked"),
                Some(Landing::Failed("boom".to_owned()))
            );
        }
    }

    #[test]
    fn a_landing_before_the_wait_is_seen() {
        let f = flights();
        let _ = f.begin(1);
        let Role::Follow(flight) = f.begin(1) else {
            panic!("second caller must follow")
        };
        f.land_value(&1, "v".to_owned());
        assert_eq!(flight.wait_blocking(), Some(Landing::Value("v".to_owned())));
    }

    #[test]
    fn a_stale_flight_stops_holding_callers_back() {
        let f: TestFlights = Flights::new(Duration::from_millis(20));
        let Role::Lead(old) = f.begin(1) else {
            panic!("first caller must lead")
        };
        let Role::Follow(flight) = f.begin(1) else {
            panic!("second caller must follow")
        };
        assert_eq!(flight.wait_blocking(), None, "the wait is bounded");
        let Role::Lead(new) = f.begin(1) else {
            panic!("a stale flight is replaced")
        };
        assert_ne!(old, new);
        assert!(
            !f.land_failure(&1, old, Landing::Abandoned),
            "the stale leader cannot close its successor's flight"
        );
        assert!(f.land_failure(&1, new, Landing::Abandoned));
    }

    #[test]
    fn a_zero_bound_never_coalesces() {
        let f: TestFlights = Flights::new(Duration::ZERO);
        assert!(matches!(f.begin(1), Role::Lead(_)));
        assert!(matches!(f.begin(1), Role::Lead(_)));
    }

    #[tokio::test]
    async fn an_abandoned_flight_lets_a_follower_lead() {
        let f = flights();
        let Role::Lead(ticket) = f.begin(5) else {
            panic!("first caller must lead")
        };
        let Role::Follow(flight) = f.begin(5) else {
            panic!("second caller must follow")
        };
        assert!(f.land_failure(&5, ticket, Landing::Abandoned));
        assert_eq!(flight.wait().await, Some(Landing::Abandoned));
        assert!(matches!(f.begin(5), Role::Lead(_)));
    }

    #[tokio::test]
    async fn an_async_wait_is_bounded() {
        let f: TestFlights = Flights::new(Duration::from_millis(50));
        let _ = f.begin(1);
        let Role::Follow(flight) = f.begin(1) else {
            panic!("second caller must follow")
        };
        assert_eq!(flight.wait().await, None);
    }
}
