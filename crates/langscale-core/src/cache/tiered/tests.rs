//! The sharing of both caches against a real `redis-server` (the store tests' harness: skipped
//! when it is not installed, a failure in CI). Each `Store` stands for one process.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::cache::shared::{Label, SharedEntry, SharedEvent};
use crate::cache::{split_prompt, Namespace, Replica, SemanticCache, SemanticConfig};
use crate::store::tests::{config, eventually, put, server};
use crate::store::{IndexStream, StoreConfig};

const LLM: &str = "model=m";

fn settings(ttl: Option<Duration>) -> ExactCacheConfig {
    ExactCacheConfig {
        maxsize: 1000,
        max_bytes: None,
        ttl,
    }
}

fn store(port: u16, tenant: Option<&str>) -> Store {
    Store::new(StoreConfig {
        tenant: tenant.map(str::to_owned),
        ..config(port, "t")
    })
    .unwrap()
}

/// A cache shared through `store` (one per "process").
fn shared(store: &Store, namespace: &str, ttl: Option<Duration>) -> TieredCache {
    let cache = TieredCache::new(settings(ttl), namespace).unwrap();
    cache.share(store.clone()).unwrap();
    cache
}

fn value(found: Option<Found>) -> Option<(Vec<u8>, Tier)> {
    found.map(|f| (f.value.to_vec(), f.tier))
}

fn l2(cache: &TieredCache) -> L2Stats {
    cache.stats().l2.unwrap()
}

#[test]
fn an_unshared_cache_is_l1_only() {
    let cache = TieredCache::new(settings(None), "").unwrap();
    assert!(cache.update("p", LLM, Arc::from(&b"v"[..])));
    assert_eq!(
        value(cache.lookup("p", LLM).unwrap()),
        Some((b"v".to_vec(), Tier::Local))
    );
    assert!(cache.fetch("p", LLM).is_none());
    assert!(cache.l2_key("p", LLM).is_none() && cache.stats().l2.is_none());
    cache.unreadable("p", LLM, Tier::Shared);
    let s = cache.stats().l1;
    assert_eq!((s.hits, s.misses, s.entries), (0, 1, 0));
}

#[test]
fn a_value_stored_by_one_is_served_by_the_other_and_fills_its_l1() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one, "ns", None), shared(&two, "ns", None));
    assert!(a.update("p", LLM, Arc::from(&b"answer"[..])));
    assert_eq!(
        value(b.lookup("p", LLM).unwrap()),
        Some((b"answer".to_vec(), Tier::Shared))
    );
    let s = b.stats();
    assert_eq!((s.l1.misses, s.l1.entries, l2(&b).hits), (1, 1, 1));
    // the second lookup is answered by b's own L1
    assert_eq!(
        value(b.lookup("p", LLM).unwrap()),
        Some((b"answer".to_vec(), Tier::Local))
    );
    assert_eq!((b.stats().l1.hits, l2(&b).hits), (1, 1));
    assert_eq!(b.lookup("other", LLM).unwrap(), None);
    assert_eq!(
        l2(&b),
        L2Stats {
            hits: 1,
            misses: 1,
            errors: 0
        }
    );
    assert!(a.stats().l2.is_some() && a.store().is_some());
    assert!(a.share(one.clone()).is_err(), "shared once");
}

#[test]
fn the_awaited_fetch_and_write_judge_like_the_blocking_ones() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one, "", None), shared(&two, "", None));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let write = a.insert("p", LLM, Arc::from(&b"v"[..])).unwrap();
    assert!(runtime.block_on(write.run()));
    assert_eq!(b.lookup_local("p", LLM), None);
    let fetched = runtime.block_on(b.fetch("p", LLM).unwrap().run()).unwrap();
    assert_eq!(fetched.as_deref(), Some(&b"v"[..]));
    assert_eq!(
        b.lookup_local("p", LLM).as_deref(),
        Some(&b"v"[..]),
        "filled L1"
    );
    let missing = runtime.block_on(b.fetch("q", LLM).unwrap().run()).unwrap();
    assert_eq!((missing, l2(&b).hits, l2(&b).misses), (None, 1, 1));
}

#[test]
fn namespaces_and_tenants_never_cross() {
    let Some(server) = server() else { return };
    let plain = store(server.port, None);
    let acme = store(server.port, Some("acme"));
    let a = shared(&plain, "x", None);
    let other_ns = shared(&plain, "y", None);
    let other_tenant = shared(&acme, "x", None);
    assert!(a.update("p", LLM, Arc::from(&b"v"[..])));
    assert_eq!(other_ns.lookup("p", LLM).unwrap(), None);
    assert_eq!(other_tenant.lookup("p", LLM).unwrap(), None);
    // Values labelled for another namespace or tenant, planted under this cache's own key:
    // still never served, counted as misses (not errors), L1 left empty.
    for label in [
        Label::new("y", None),
        Label::new("x", Some("acme")),
        Label::new("x", Some("")),
    ] {
        put(
            &plain,
            a.l2_key("q", LLM).unwrap(),
            shared::seal(&label, b"foreign"),
        );
        let before = l2(&a).misses;
        assert_eq!(a.lookup("q", LLM).unwrap(), None, "{label:?}");
        assert_eq!(l2(&a).misses, before + 1);
    }
    assert_eq!((l2(&a).errors, a.stats().l1.entries), (0, 1));
    // the tenant's store keys its entries apart
    assert_ne!(a.l2_key("p", LLM), other_tenant.l2_key("p", LLM));
}

#[test]
fn clear_in_one_reaches_the_other() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one, "ns", None), shared(&two, "ns", None));
    let kept = shared(&two, "kept", None);
    assert!(a.update("p", LLM, Arc::from(&b"v"[..])));
    assert!(kept.update("p", LLM, Arc::from(&b"k"[..])));
    assert!(b.lookup("p", LLM).unwrap().is_some(), "in b's L1 now");
    a.clear();
    assert_eq!(a.lookup("p", LLM).unwrap(), None);
    eventually("b's L1 is emptied by a's clear", || {
        b.lookup_local("p", LLM).is_none()
    });
    assert_eq!(
        b.lookup("p", LLM).unwrap(),
        None,
        "nor is Redis's old entry reachable"
    );
    assert!(
        kept.lookup("p", LLM).unwrap().is_some(),
        "another namespace keeps its entries"
    );
    // a late starter starts after the clear
    assert_eq!(shared(&two, "ns", None).lookup("p", LLM).unwrap(), None);
    // entries stored after the clear are shared again
    assert!(b.update("p2", LLM, Arc::from(&b"w"[..])));
    assert!(a.lookup("p2", LLM).unwrap().is_some());
}

#[test]
fn entries_expire_in_redis_with_the_ttl() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let ttl = Some(Duration::from_millis(300));
    let a = shared(&one, "", ttl);
    assert!(a.update("p", LLM, Arc::from(&b"v"[..])));
    assert!(shared(&one, "", ttl).lookup("p", LLM).unwrap().is_some());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(shared(&one, "", ttl).lookup("p", LLM).unwrap(), None);
    assert_eq!(a.lookup("p", LLM).unwrap(), None, "expired in L1 too");
}

#[test]
fn an_unreadable_value_in_redis_is_a_miss_counted_as_an_error() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let a = shared(&one, "", None);
    let garbage: [&[u8]; 4] = [
        b"",
        b"not langscale",
        b"LSE1\0\0\0\x09ab",
        b"LSE1\0\0\0\0\x07",
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let prompt = format!("p{i}");
        put(&one, a.l2_key(&prompt, LLM).unwrap(), bytes.to_vec());
        assert!(a.lookup(&prompt, LLM).is_err(), "{bytes:?}");
    }
    assert_eq!(
        l2(&a),
        L2Stats {
            hits: 0,
            misses: 0,
            errors: 4
        }
    );
    assert_eq!(a.stats().l1.entries, 0);
    // a value that opens but that the caller cannot read: dropped, counted as an error
    put(
        &one,
        a.l2_key("bad", LLM).unwrap(),
        a.l2_entry("bad", LLM, b"{").unwrap().1,
    );
    let found = a.lookup("bad", LLM).unwrap().unwrap();
    assert_eq!((found.tier, l2(&a).hits), (Tier::Shared, 1));
    a.unreadable("bad", LLM, Tier::Shared);
    assert_eq!(
        l2(&a),
        L2Stats {
            hits: 0,
            misses: 0,
            errors: 5
        }
    );
    assert_eq!(a.lookup_local("bad", LLM), None, "gone from L1");
}

#[test]
fn with_redis_down_l1_keeps_working_and_errors_are_counted() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let a = shared(&one, "", None);
    assert!(a.update("p", LLM, Arc::from(&b"v"[..])));
    drop(server);
    let b = a.clone();
    assert!(
        !b.update("q", LLM, Arc::from(&b"w"[..])),
        "Redis could not take it"
    );
    assert_eq!(
        value(a.lookup("q", LLM).unwrap()),
        Some((b"w".to_vec(), Tier::Local))
    );
    assert_eq!(
        value(a.lookup("p", LLM).unwrap()),
        Some((b"v".to_vec(), Tier::Local))
    );
    assert_eq!(a.lookup("r", LLM).unwrap(), None);
    a.clear();
    assert_eq!(a.lookup("p", LLM).unwrap(), None, "clear still empties L1");
    assert_eq!(l2(&a).misses, 2);
    let s = one.stats();
    assert!(s.errors + s.timeouts + s.skipped > 0, "{s:?}");
    // a cache shared on a Redis that never answered starts and works from L1
    let nowhere = Store::new(StoreConfig {
        timeout: Duration::from_millis(50),
        ..config(1, "t")
    })
    .unwrap();
    let c = shared(&nowhere, "", None);
    assert!(!c.update("p", LLM, Arc::from(&b"v"[..])));
    assert!(c.lookup("p", LLM).unwrap().is_some() && c.lookup("q", LLM).unwrap().is_none());
}

// -- batches (fetch_many / insert_many) -------------------------------------------------------

fn entries<'a>(prompts: &[&'a str], tag: &str) -> Vec<(&'a str, Arc<[u8]>)> {
    prompts
        .iter()
        .map(|p| (*p, Arc::from(format!("{tag}:{p}").into_bytes())))
        .collect()
}

/// What a batch fetch found, as plain bytes (an unreadable entry as `Err`).
fn found(fetched: Vec<Fetched>) -> Vec<Result<Option<Vec<u8>>, ()>> {
    fetched
        .into_iter()
        .map(|f| f.map(|v| v.map(|v| v.to_vec())).map_err(|_| ()))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_batch_stored_by_one_is_served_by_the_other_in_order_and_fills_its_l1() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one, "ns", None), shared(&two, "ns", None));
    let write = a.insert_many(entries(&["p", "q", "r"], "v"), LLM).unwrap();
    assert_eq!(
        a.stats().l1.entries,
        3,
        "L1 filled before the write is sent"
    );
    assert!(write.blocking());
    let got = found(b.fetch_many(["r", "missing", "p"], LLM).unwrap().blocking());
    assert_eq!(
        got,
        vec![
            Ok(Some(b"v:r".to_vec())),
            Ok(None),
            Ok(Some(b"v:p".to_vec()))
        ]
    );
    assert_eq!(
        l2(&b),
        L2Stats {
            hits: 2,
            misses: 1,
            errors: 0
        }
    );
    assert_eq!(b.lookup_local("r", LLM).as_deref(), Some(&b"v:r"[..]));
    assert_eq!(
        b.lookup_local("q", LLM),
        None,
        "only what was asked for fills L1"
    );
    // a batch and a single lookup read the same entries
    assert_eq!(
        value(b.lookup("q", LLM).unwrap()),
        Some((b"v:q".to_vec(), Tier::Shared))
    );
    let empty = b.fetch_many([], LLM).unwrap().blocking();
    assert!(empty.is_empty());
    assert!(
        a.insert_many([], LLM).unwrap().blocking(),
        "nothing to send"
    );
    // unshared: L1 only, no Redis work to do
    let alone = TieredCache::new(settings(None), "ns").unwrap();
    assert!(alone.fetch_many(["p"], LLM).is_none());
    assert!(alone.insert_many(entries(&["p"], "v"), LLM).is_none());
    assert!(alone.lookup_local("p", LLM).is_some());
}

#[test]
fn an_awaited_batch_judges_like_the_blocking_one() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b, c) = (
        shared(&one, "ns", None),
        shared(&two, "ns", None),
        shared(&two, "ns", None),
    );
    let runtime = runtime();
    let write = a.insert_many(entries(&["p", "q"], "v"), LLM).unwrap();
    assert!(runtime.block_on(write.run()));
    put(&one, a.l2_key("bad", LLM).unwrap(), b"garbage".to_vec());
    let prompts = ["q", "bad", "none", "p"];
    let awaited = found(runtime.block_on(b.fetch_many(prompts, LLM).unwrap().run()));
    let blocking = found(c.fetch_many(prompts, LLM).unwrap().blocking());
    assert_eq!(awaited, blocking);
    assert_eq!(
        awaited,
        vec![
            Ok(Some(b"v:q".to_vec())),
            Err(()),
            Ok(None),
            Ok(Some(b"v:p".to_vec()))
        ]
    );
    assert_eq!(l2(&b), l2(&c));
    assert_eq!(
        l2(&b),
        L2Stats {
            hits: 2,
            misses: 1,
            errors: 1
        }
    );
    assert_eq!(b.stats().l1, c.stats().l1);
}

#[test]
fn a_batch_never_crosses_namespaces_or_tenants() {
    let Some(server) = server() else { return };
    let plain = store(server.port, None);
    let acme = store(server.port, Some("acme"));
    let a = shared(&plain, "x", None);
    assert!(a
        .insert_many(entries(&["p", "q"], "v"), LLM)
        .unwrap()
        .blocking());
    for other in [shared(&plain, "y", None), shared(&acme, "x", None)] {
        let got = found(other.fetch_many(["p", "q"], LLM).unwrap().blocking());
        assert_eq!(got, vec![Ok(None), Ok(None)]);
        assert_eq!(other.stats().l1.entries, 0);
    }
    // foreign labels planted under this cache's own keys: misses, never served
    let b = shared(&plain, "x", None);
    let labels = [Label::new("y", None), Label::new("x", Some("acme"))];
    for (prompt, label) in ["p", "q"].into_iter().zip(&labels) {
        put(
            &plain,
            b.l2_key(prompt, LLM).unwrap(),
            shared::seal(label, b"foreign"),
        );
    }
    let got = found(b.fetch_many(["p", "q"], LLM).unwrap().blocking());
    assert_eq!(got, vec![Ok(None), Ok(None)]);
    assert_eq!(
        (l2(&b).misses, l2(&b).errors, b.stats().l1.entries),
        (2, 0, 0)
    );
}

#[test]
fn a_clear_in_one_reaches_the_others_batches() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one, "ns", None), shared(&two, "ns", None));
    assert!(a
        .insert_many(entries(&["p", "q"], "v"), LLM)
        .unwrap()
        .blocking());
    let got = found(b.fetch_many(["p", "q"], LLM).unwrap().blocking());
    assert!(got.iter().all(|f| matches!(f, Ok(Some(_)))));
    // a fetch begun before the clear lands after it: a miss, L1 left empty; a write
    // prepared before it is keyed by the old period: sent after it, never served
    let stale = b.fetch_many(["p"], LLM).unwrap();
    let late = b.insert_many(entries(&["r"], "old"), LLM).unwrap();
    a.clear();
    eventually("b sees a's clear", || b.lookup_local("p", LLM).is_none());
    assert_eq!(found(stale.blocking()), vec![Ok(None)]);
    assert_eq!(b.lookup_local("p", LLM), None);
    let got = found(b.fetch_many(["p", "q"], LLM).unwrap().blocking());
    assert_eq!(got, vec![Ok(None), Ok(None)], "old entries unreachable");
    assert!(late.blocking());
    let fresh = shared(&two, "ns", None);
    assert_eq!(
        found(fresh.fetch_many(["r"], LLM).unwrap().blocking()),
        vec![Ok(None)]
    );
    // entries written after the clear are shared again
    assert!(a
        .insert_many(entries(&["r"], "new"), LLM)
        .unwrap()
        .blocking());
    let got = found(fresh.fetch_many(["r"], LLM).unwrap().blocking());
    assert_eq!(got, vec![Ok(Some(b"new:r".to_vec()))]);
}

#[test]
fn a_batch_expires_in_redis_with_the_ttl() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let ttl = Some(Duration::from_millis(300));
    let a = shared(&one, "", ttl);
    assert!(a
        .insert_many(entries(&["p", "q"], "v"), LLM)
        .unwrap()
        .blocking());
    let got = found(
        shared(&one, "", ttl)
            .fetch_many(["p", "q"], LLM)
            .unwrap()
            .blocking(),
    );
    assert!(got.iter().all(|f| matches!(f, Ok(Some(_)))));
    std::thread::sleep(Duration::from_millis(600));
    let got = found(
        shared(&one, "", ttl)
            .fetch_many(["p", "q"], LLM)
            .unwrap()
            .blocking(),
    );
    assert_eq!(got, vec![Ok(None), Ok(None)]);
}

#[test]
fn with_redis_down_a_batch_is_counted_misses_and_l1_keeps_working() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let a = shared(&one, "", None);
    drop(server);
    let write = a.insert_many(entries(&["p", "q"], "v"), LLM).unwrap();
    assert!(!write.blocking(), "Redis could not take it");
    assert!(a.lookup_local("q", LLM).is_some(), "L1 has it");
    let got = found(a.fetch_many(["r", "s"], LLM).unwrap().blocking());
    assert_eq!(got, vec![Ok(None), Ok(None)]);
    let got = found(runtime().block_on(a.fetch_many(["t"], LLM).unwrap().run()));
    assert_eq!(got, vec![Ok(None)]);
    assert_eq!(
        l2(&a),
        L2Stats {
            hits: 0,
            misses: 3,
            errors: 0
        }
    );
}

#[test]
fn a_renamed_cache_reads_the_new_namespace_only() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let (a, b) = (shared(&one, "old", None), shared(&one, "new", None));
    assert!(b.update("p", LLM, Arc::from(&b"new"[..])));
    assert!(a.update("p", LLM, Arc::from(&b"old"[..])));
    a.set_namespace("new");
    assert_eq!(a.namespace(), "new");
    assert_eq!(
        value(a.lookup("p", LLM).unwrap()),
        Some((b"new".to_vec(), Tier::Shared))
    );
    // a clear under the new name reaches b, and the old name is untouched
    a.clear();
    eventually("b cleared", || b.lookup_local("p", LLM).is_none());
    assert!(shared(&one, "old", None)
        .lookup("p", LLM)
        .unwrap()
        .is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the labels and payload: served (and identical) exactly when the writer's
    /// label is the reader's.
    #[test]
    fn served_only_under_the_same_label(
        ns_a in ".{0,12}", ns_b in ".{0,12}",
        tenant_a in proptest::option::of("[a-z]{0,4}"),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let Some(server) = server() else { return Ok(()) };
        let one = store(server.port, None);
        let a = shared(&one, &ns_a, None);
        let b = shared(&one, &ns_b, None);
        // planted under b's key as a writer with `tenant_a` on the same keys would
        let label = Label::new(&ns_a, tenant_a.as_deref());
        put(&one, b.l2_key("p", LLM).unwrap(), shared::seal(&label, &payload));
        let found = b.lookup("p", LLM).unwrap().map(|f| f.value.to_vec());
        let same = label == Label::new(&ns_b, None);
        prop_assert_eq!(found, same.then(|| payload.clone()));
        prop_assert_eq!(l2(&b).errors, 0);
        drop(a);
    }
}

// -- the semantic cache's stream -----------------------------------------------------------

/// One process's semantic cache sharing a stream.
struct Semantic {
    cache: SemanticCache,
    namespace: Namespace,
    replica: Replica,
}

impl Semantic {
    fn start(store: &Store, namespace: &str) -> Self {
        Self::with(store, namespace, None)
    }

    fn with(store: &Store, namespace: &str, ttl: Option<Duration>) -> Self {
        let stream = IndexStream::start(store.clone(), "shared", 1000);
        Self {
            cache: SemanticCache::new(SemanticConfig {
                ttl,
                ..SemanticConfig::default()
            })
            .unwrap(),
            namespace: Namespace::new(namespace),
            replica: Replica::new(Arc::new(stream)),
        }
    }

    fn store(&self, prompt: &str, value: &[u8]) {
        let namespace = self.namespace.read().clone();
        let scoped = split_prompt(&namespace, LLM, prompt);
        let vector = self.cache.embed_builtin(&scoped.text).ok();
        self.cache
            .insert(&scoped, vector.as_deref(), Arc::from(value))
            .unwrap();
        let ttl = self.cache.config().ttl;
        self.replica
            .publish_entry(&namespace, prompt, LLM, value, None, ttl);
    }

    fn apply(&self) -> Vec<String> {
        self.replica
            .apply_pending(&self.cache, &self.namespace, |scoped, vector| {
                vector
                    .map(Arc::from)
                    .or_else(|| self.cache.embed_builtin(&scoped.text).ok())
            })
    }

    fn has(&self, prompt: &str) -> bool {
        let scoped = split_prompt(&self.namespace.read(), LLM, prompt);
        self.cache.lookup_exact(&scoped).is_some()
    }

    fn entries(&self) -> u64 {
        self.cache.stats().entries
    }

    /// Apply until `done` (events arrive within a poll).
    fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        eventually(what, || {
            self.apply();
            done(self)
        });
    }
}

#[test]
fn a_late_starter_gets_earlier_entries_and_answers_similar_questions() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let a = Semantic::start(&one, "ns");
    for i in 0..3 {
        a.store(&format!("what is the capital of country {i}"), b"v");
    }
    let late = Semantic::start(&two, "ns");
    late.until("three entries", |s| s.entries() == 3);
    assert!(late.has("what is the capital of country 1"));
    let scoped = split_prompt("ns", LLM, "what is the capital of country 2?");
    let vector = late.cache.embed_builtin(&scoped.text).ok();
    assert!(
        matches!(
            late.cache.lookup(&scoped, vector.as_deref()),
            crate::cache::Outcome::Semantic { .. } | crate::cache::Outcome::Exact(_)
        ),
        "indexed for similar questions too"
    );
    assert_eq!(late.cache.stats().l2_errors, 0);
}

#[test]
fn semantic_namespaces_and_tenants_are_isolated() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let a = Semantic::start(&one, "ns");
    let same = Semantic::start(&two, "ns");
    let other = Semantic::start(&two, "other");
    // another tenant's event on this stream (as a receiver must never trust a stream to hold
    // one tenant only)
    let event = SharedEvent::Entry(SharedEntry {
        label: Label::new("ns", Some("acme")),
        prompt: "foreign".into(),
        llm_string: LLM.into(),
        value: b"x".to_vec(),
        expires_ms: 0,
        vector: None,
    });
    a.replica.stream().publish(event.to_fields());
    a.store("mine", b"v");
    same.until("a's entry", |s| s.has("mine"));
    assert!(!same.has("foreign"), "another tenant's entry is skipped");
    other.until("the events read", |s| s.replica.stream().counts().0 >= 2);
    assert_eq!(other.entries(), 0, "another namespace takes nothing");
    // the tenant's own store keeps its stream apart
    let acme = Semantic::start(&store(server.port, Some("acme")), "ns");
    std::thread::sleep(Duration::from_millis(300));
    acme.apply();
    assert_eq!(acme.entries(), 0);
    // a rename reads the stream again for what it skipped
    other.namespace.replace("ns", || {
        other.cache.clear();
        other.replica.rewind();
    });
    other.until("a's entry after the rename", |s| s.has("mine"));
    assert!(!other.has("foreign"));
}

#[test]
fn a_semantic_clear_propagates_to_its_label_only() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let a = Semantic::start(&one, "ns");
    let b = Semantic::start(&two, "ns");
    let other = Semantic::start(&one, "other");
    a.store("p", b"v");
    other.store("q", b"w");
    b.until("a's entry", |s| s.has("p"));
    b.store("own", b"x");
    a.replica.publish_clear("ns");
    b.until("the clear", |s| s.entries() == 0);
    let watcher = Semantic::start(&two, "other");
    watcher.until("other's entry survives a clear of ns", |s| s.has("q"));
}

#[test]
fn shared_entries_keep_their_ttl_and_garbage_is_counted() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let a = Semantic::with(&one, "", Some(Duration::from_millis(400)));
    let b = Semantic::start(&two, "");
    a.store("p", b"v");
    b.until("a's entry", |s| s.has("p"));
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !b.has("p"),
        "expired with the sender's TTL though b has none"
    );
    // an entry already expired when it arrives is not applied
    a.replica.stream().publish(
        SharedEvent::Entry(SharedEntry {
            label: Label::new("", None),
            prompt: "old".into(),
            llm_string: LLM.into(),
            value: b"v".to_vec(),
            expires_ms: 1,
            vector: None,
        })
        .to_fields(),
    );
    a.replica
        .stream()
        .publish(vec![("k".into(), b"garbage".to_vec())]);
    let mut errors = Vec::new();
    eventually("the garbage event", || {
        errors.extend(b.apply());
        !errors.is_empty()
    });
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(!b.has("old"));
    assert_eq!(b.cache.stats().l2_errors, 1);
}
