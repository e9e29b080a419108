//! Coalescing near-duplicates for the semantic cache: the questions in flight, by cache and
//! scope, so that a request the cache would answer with an in-flight leader's answer (the
//! cache's own rule, [`SemanticCache::answers`]) waits for that leader instead of calling.
//! Leaders land by ticket; a landed or stale flight leaves the index at once, so later
//! requests look the cache up as usual.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use super::coalesce::{Flight, FlightStats, Landing, Role, Ticket};
use super::guard::Signature;
use super::key::CacheKey;
use super::semantic::{Probe, SemanticCache};

/// Which cache (its address, stable while it lives) and which of its scopes.
type Group = (usize, CacheKey);

#[derive(Debug)]
struct Pending<V, E> {
    probe: Probe,
    flight: Arc<Flight<V, E>>,
}

#[derive(Debug)]
struct Index<V, E> {
    by_scope: HashMap<Group, Vec<Arc<Pending<V, E>>>>,
    groups: HashMap<Ticket, Group>,
}

impl<V: Clone, E: Clone> Index<V, E> {
    /// The open flights of `group`, the landed and stale ones dropped (into `stale`).
    fn open(
        &mut self,
        group: Group,
        now: Instant,
        stale: &mut Vec<Arc<Flight<V, E>>>,
    ) -> &mut Vec<Arc<Pending<V, E>>> {
        let Index { by_scope, groups } = self;
        let pending = by_scope.entry(group).or_default();
        pending.retain(|p| {
            let open = p.flight.is_open(now);
            if !open {
                groups.remove(&p.flight.ticket());
                stale.push(Arc::clone(&p.flight));
            }
            open
        });
        pending
    }
}

/// What [`NearFlights::begin`] decided.
#[derive(Debug)]
pub enum Begun<V, E> {
    /// Lead or follow.
    Role(Role<V, E>),
    /// Only with `defer`: another question is in flight in the scope, and comparing with it
    /// needs this one's embedding, which the caller asked to work out elsewhere (off an event
    /// loop): call again without `defer`.
    Deferred(Box<Probe>),
}

/// Counters of a [`NearFlights`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearStats {
    /// `led`, `followed` (the same prompt or a near-duplicate) and `in_flight`.
    pub flights: FlightStats,
    /// Of `followed`, those that waited for a different prompt (a near-duplicate).
    pub similar: u64,
}

/// Guard signatures remembered (by text hash): a burst repeats a few texts many times.
const SIGNATURES: u64 = 4096;

/// The semantic cache's questions in flight. `Send + Sync`; share it through an `Arc`.
pub struct NearFlights<V, E> {
    index: Mutex<Index<V, E>>,
    signatures: moka::sync::Cache<u64, Arc<Signature>>,
    bound: Duration,
    next: AtomicU64,
    led: AtomicU64,
    followed: AtomicU64,
    similar: AtomicU64,
}

impl<V, E> std::fmt::Debug for NearFlights<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearFlights")
            .field("bound", &self.bound)
            .field("led", &self.led)
            .field("followed", &self.followed)
            .finish_non_exhaustive()
    }
}

impl<V: Clone, E: Clone> NearFlights<V, E> {
    /// Flights that hold followers back at most `bound` (a zero bound never coalesces).
    pub fn new(bound: Duration) -> Self {
        Self {
            index: Mutex::new(Index {
                by_scope: HashMap::new(),
                groups: HashMap::new(),
            }),
            signatures: moka::sync::Cache::new(SIGNATURES),
            bound,
            next: AtomicU64::new(1),
            led: AtomicU64::new(0),
            followed: AtomicU64::new(0),
            similar: AtomicU64::new(0),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index<V, E>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The longest a follower waits.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Follow the flight in `cache`'s scope that the cache would answer `probe` with (the
    /// same prompt first, then the nearest near-duplicate), or lead a new one. What the
    /// comparison needs (signatures, embeddings) is worked out outside the index lock, and
    /// only when another question is in flight in the scope.
    pub fn begin(&self, cache: &SemanticCache, probe: Probe, defer: bool) -> Begun<V, E> {
        let now = Instant::now();
        let deadline = now.checked_add(self.bound).unwrap_or(now);
        if deadline <= now {
            self.led.fetch_add(1, Ordering::Relaxed);
            return Begun::Role(Role::Lead(self.ticket()));
        }
        let group = (std::ptr::from_ref(cache).addr(), probe.scope());
        let mut stale = Vec::new();
        let others = {
            let mut index = self.index();
            let pending = index.open(group, now, &mut stale);
            if let Some(same) = pending.iter().find(|p| p.probe.exact() == probe.exact()) {
                let flight = Arc::clone(&same.flight);
                drop(index);
                return self.follow(flight, false, stale);
            }
            if pending.is_empty() {
                let role = self.lead(&mut index, group, probe, deadline);
                drop(index);
                land_stale(stale);
                return Begun::Role(role);
            }
            pending.clone()
        };
        if defer && probe.needs_embedding() {
            land_stale(stale);
            return Begun::Deferred(Box::new(probe));
        }
        for p in std::iter::once(&probe).chain(others.iter().map(|o| &o.probe)) {
            if p.needs_signature() {
                let text = p.text();
                let signature = self
                    .signatures
                    .get_with(xxh3_64(text.as_bytes()), || Arc::new(Signature::of(text)));
                p.set_signature(signature);
            }
            cache.prepare(p);
        }
        let now = Instant::now();
        let mut index = self.index();
        let pending = index.open(group, now, &mut stale);
        let best = pending
            .iter()
            .filter_map(|p| Some((cache.answers(&p.probe, &probe)?, p)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(margin, p)| (margin, Arc::clone(&p.flight)));
        if let Some((margin, flight)) = best {
            drop(index);
            return self.follow(flight, margin.is_finite(), stale);
        }
        let role = self.lead(&mut index, group, probe, deadline);
        drop(index);
        land_stale(stale);
        Begun::Role(role)
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn lead(
        &self,
        index: &mut Index<V, E>,
        group: Group,
        probe: Probe,
        deadline: Instant,
    ) -> Role<V, E> {
        let ticket = self.ticket();
        let flight = Arc::new(Flight::new(ticket, deadline));
        index
            .by_scope
            .entry(group)
            .or_default()
            .push(Arc::new(Pending { probe, flight }));
        index.groups.insert(ticket, group);
        self.led.fetch_add(1, Ordering::Relaxed);
        Role::Lead(ticket)
    }

    fn follow(
        &self,
        flight: Arc<Flight<V, E>>,
        similar: bool,
        stale: Vec<Arc<Flight<V, E>>>,
    ) -> Begun<V, E> {
        land_stale(stale);
        self.followed.fetch_add(1, Ordering::Relaxed);
        if similar {
            self.similar.fetch_add(1, Ordering::Relaxed);
        }
        Begun::Role(Role::Follow(flight))
    }

    /// The leader holding `ticket` lands its answer, failure or abandonment; its question
    /// leaves the index. False (nothing done) when its flight went stale and was dropped.
    pub fn land(&self, ticket: Ticket, landing: Landing<V, E>) -> bool {
        let flight = {
            let mut index = self.index();
            let Index { by_scope, groups } = &mut *index;
            let Some(group) = groups.remove(&ticket) else {
                return false;
            };
            let Some(pending) = by_scope.get_mut(&group) else {
                return false;
            };
            let at = pending.iter().position(|p| p.flight.ticket() == ticket);
            let flight = at.map(|at| Arc::clone(&pending.swap_remove(at).flight));
            if pending.is_empty() {
                by_scope.remove(&group);
            }
            flight
        };
        flight.is_some_and(|flight| {
            flight.land(landing);
            true
        })
    }

    /// Counters; `in_flight` includes stale flights not yet dropped or landed.
    pub fn stats(&self) -> NearStats {
        NearStats {
            flights: FlightStats {
                led: self.led.load(Ordering::Relaxed),
                followed: self.followed.load(Ordering::Relaxed),
                in_flight: self.index().groups.len() as u64,
            },
            similar: self.similar.load(Ordering::Relaxed),
        }
    }
}

/// Flights dropped as stale: anyone still waiting on one stops (its wait was bounded anyway).
fn land_stale<V: Clone, E: Clone>(stale: Vec<Arc<Flight<V, E>>>) {
    for flight in stale {
        flight.land(Landing::Abandoned);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::scope::split_prompt;
    use super::super::SemanticConfig;
    use super::*;
    use std::thread;

    type Near = NearFlights<String, String>;

    fn cache() -> SemanticCache {
        SemanticCache::new(SemanticConfig::default()).unwrap()
    }

    fn probe(c: &SemanticCache, llm_string: &str, text: &str) -> Probe {
        c.probe_own(&split_prompt("", llm_string, text))
    }

    /// `begin` without deferring: the role.
    trait Begin {
        fn begin_now(&self, c: &SemanticCache, probe: Probe) -> Role<String, String>;
    }

    impl Begin for Near {
        fn begin_now(&self, c: &SemanticCache, probe: Probe) -> Role<String, String> {
            match self.begin(c, probe, false) {
                Begun::Role(role) => role,
                Begun::Deferred(_) => panic!("deferred without defer"),
            }
        }
    }

    fn near() -> Arc<Near> {
        Arc::new(NearFlights::new(Duration::from_secs(30)))
    }

    #[test]
    fn a_retyped_question_follows_and_a_guarded_one_leads() {
        let (c, f) = (cache(), near());
        let Role::Lead(ticket) = f.begin_now(&c, probe(&c, "m", "How do I reset my password?"))
        else {
            panic!("first caller must lead")
        };
        assert!(matches!(
            f.begin_now(&c, probe(&c, "m", "how do i reset my password")),
            Role::Follow(_)
        ));
        assert!(matches!(
            f.begin_now(&c, probe(&c, "m", "How do I reset my password?")),
            Role::Follow(_)
        ));
        assert!(
            matches!(
                f.begin_now(&c, probe(&c, "m", "How do I not reset my password?")),
                Role::Lead(_)
            ),
            "the guard refuses a negation"
        );
        let s = f.stats();
        assert_eq!((s.flights.led, s.flights.followed, s.similar), (2, 2, 1));
        assert!(f.land(ticket, Landing::Value("v".into())));
        assert!(!f.land(ticket, Landing::Abandoned), "landed once");
        assert!(
            matches!(
                f.begin_now(&c, probe(&c, "m", "how do i reset my password")),
                Role::Lead(_)
            ),
            "a landed flight leaves the index"
        );
    }

    #[test]
    fn the_rule_is_the_caches_own() {
        let c = cache();
        let pairs = [
            (
                "What is the capital of France?",
                "What is the population of France?",
                false,
            ),
            ("enable dark mode", "turn off dark mode", false),
            ("Convert 10 km to miles", "Convert 12 km to miles", false),
            (
                "How do I reset my password?",
                "how do i reset my password",
                true,
            ),
            (
                "What's the weather in Paris?",
                "whats the weather in paris",
                true,
            ),
        ];
        for (stored, asked, expected) in pairs {
            let f = near();
            let fresh = cache();
            let s = split_prompt("", "m", stored);
            fresh
                .insert(
                    &s,
                    Some(&fresh.embed_builtin(&s.text).unwrap()),
                    "a".as_bytes().into(),
                )
                .unwrap();
            let q = split_prompt("", "m", asked);
            let hit = !matches!(
                fresh.lookup(&q, Some(&fresh.embed_builtin(&q.text).unwrap())),
                super::super::Outcome::Miss { .. }
            );
            let _ = f.begin_now(&c, probe(&c, "m", stored));
            let follows = matches!(f.begin_now(&c, probe(&c, "m", asked)), Role::Follow(_));
            assert_eq!(follows, hit, "{stored:?} then {asked:?}");
            assert_eq!(hit, expected, "the cache on {stored:?} then {asked:?}");
        }
    }

    #[test]
    fn scopes_and_caches_never_cross() {
        let (c, other, f) = (cache(), cache(), near());
        let _ = f.begin_now(
            &c,
            probe(&c, "m\u{0}tenant=a", "How do I reset my password?"),
        );
        assert!(matches!(
            f.begin_now(
                &c,
                probe(&c, "m\u{0}tenant=b", "How do I reset my password?")
            ),
            Role::Lead(_)
        ));
        assert!(matches!(
            f.begin_now(
                &other,
                probe(&other, "m\u{0}tenant=a", "How do I reset my password?")
            ),
            Role::Lead(_)
        ));
    }

    #[test]
    fn followers_on_threads_get_the_failure() {
        let (c, f) = (Arc::new(cache()), near());
        let Role::Lead(ticket) = f.begin_now(&c, probe(&c, "m", "How do I reset my password?"))
        else {
            panic!("first caller must lead")
        };
        let waiters: Vec<_> = ["how do i reset my password", "How do I reset my password"]
            .into_iter()
            .map(|q| {
                let Role::Follow(flight) = f.begin_now(&c, probe(&c, "m", q)) else {
                    panic!("{q:?} must follow")
                };
                thread::spawn(move || flight.wait_blocking())
            })
            .collect();
        assert!(f.land(ticket, Landing::Failed("boom".into())));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Some(Landing::Failed("boom".into())));
        }
        assert_eq!(f.stats().flights.in_flight, 0);
    }

    #[test]
    fn a_stale_flight_is_dropped_and_a_zero_bound_never_coalesces() {
        let c = cache();
        let f: Near = NearFlights::new(Duration::from_millis(20));
        let Role::Lead(old) = f.begin_now(&c, probe(&c, "m", "How do I reset my password?")) else {
            panic!("first caller must lead")
        };
        thread::sleep(Duration::from_millis(40));
        assert!(matches!(
            f.begin_now(&c, probe(&c, "m", "how do i reset my password")),
            Role::Lead(_)
        ));
        assert!(
            !f.land(old, Landing::Abandoned),
            "the stale leader was dropped"
        );
        assert_eq!(f.stats().flights.in_flight, 1);
        let zero: Near = NearFlights::new(Duration::ZERO);
        let _ = zero.begin_now(&c, probe(&c, "m", "hello there"));
        assert!(matches!(
            zero.begin_now(&c, probe(&c, "m", "hello there")),
            Role::Lead(_)
        ));
        assert_eq!(zero.stats().flights.in_flight, 0);
    }

    #[test]
    fn a_deferred_begin_asks_for_the_embedding_only_when_another_question_is_in_flight() {
        let (c, f) = (cache(), near());
        let Begun::Role(Role::Lead(_)) =
            f.begin(&c, probe(&c, "m", "How do I reset my password?"), true)
        else {
            panic!("alone in its scope: leads at once")
        };
        let Begun::Role(Role::Follow(_)) =
            f.begin(&c, probe(&c, "m", "How do I reset my password?"), true)
        else {
            panic!("the same prompt follows at once")
        };
        let Begun::Deferred(deferred) =
            f.begin(&c, probe(&c, "m", "how do i reset my password"), true)
        else {
            panic!("a different prompt in the scope needs its embedding")
        };
        assert!(matches!(f.begin_now(&c, *deferred), Role::Follow(_)));
        let given = split_prompt("", "m", "how do i reset my password?");
        let vector = c.embed_builtin(&given.text).unwrap();
        assert!(
            matches!(
                f.begin(&c, c.probe(&given, Some(&vector)), true),
                Begun::Role(Role::Follow(_))
            ),
            "a given embedding is never deferred"
        );
        assert!(matches!(
            f.begin(&c, probe(&c, "other", "how do i reset my password"), true),
            Begun::Role(Role::Lead(_))
        ));
    }

    fn question() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (
            prop::sample::select(vec!["What is", "what is", "Tell me", "whats"]),
            prop::sample::select(vec!["the capital", "the population", "the capitol"]),
            prop::sample::select(vec!["France", "france", "Peru", "Spain"]),
            prop::sample::select(vec!["?", "", "??", " please?"]),
        )
            .prop_map(|(a, b, c, d)| format!("{a} {b} of {c}{d}"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn follows_exactly_when_the_cache_would_hit(
            stored in question(),
            asked in question(),
            same_scope in proptest::bool::ANY,
        ) {
            let c = cache();
            let f = near();
            let _ = f.begin_now(&c, probe(&c, "m", &stored));
            let llm = if same_scope { "m" } else { "n" };
            let follows = matches!(f.begin_now(&c, probe(&c, llm, &asked)), Role::Follow(_));
            let fresh = cache();
            let s = split_prompt("", "m", &stored);
            fresh.insert(&s, Some(&fresh.embed_builtin(&s.text).unwrap()), "a".as_bytes().into()).unwrap();
            let q = split_prompt("", llm, &asked);
            let hit = !matches!(
                fresh.lookup(&q, Some(&fresh.embed_builtin(&q.text).unwrap())),
                super::super::Outcome::Miss { .. }
            );
            proptest::prop_assert_eq!(follows, hit);
        }

        #[test]
        fn any_text_leads_or_follows_without_panicking(a in ".{0,60}", b in ".{0,60}") {
            let c = cache();
            let f = near();
            let Role::Lead(ticket) = f.begin_now(&c, probe(&c, "m", &a)) else {
                return Err(proptest::test_runner::TestCaseError::fail("first caller must lead"));
            };
            let _ = f.begin_now(&c, probe(&c, "m", &b));
            proptest::prop_assert!(f.land(ticket, Landing::Abandoned));
        }
    }
}
