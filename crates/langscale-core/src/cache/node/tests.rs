//! The node cache in process and against a real `redis-server` (the store tests' harness:
//! skipped when it is not installed, a failure in CI). Each `Store` stands for one process.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use crate::store::tests::{config, eventually, put, server};
use crate::store::StoreConfig;

fn key(namespace: &[&str], key: &str) -> NodeKey {
    NodeKey {
        namespace: namespace.iter().map(|p| (*p).to_owned()).collect(),
        key: key.to_owned(),
    }
}

fn json(text: &str) -> NodeValue {
    NodeValue {
        kind: "json".into(),
        data: Arc::from(text.as_bytes()),
    }
}

fn store(port: u16, tenant: Option<&str>) -> Store {
    Store::new(StoreConfig {
        tenant: tenant.map(str::to_owned),
        ..config(port, "t")
    })
    .unwrap()
}

fn shared(store: &Store) -> NodeCache {
    let cache = NodeCache::new(100);
    assert!(cache.share(store.clone()));
    cache
}

fn get(cache: &NodeCache, keys: Vec<NodeKey>) -> Vec<Option<NodeValue>> {
    let c = cache.clone();
    cache.blocking(async move { c.get(&keys).await }).unwrap()
}

fn set(cache: &NodeCache, entries: Vec<(NodeKey, NodeValue, Option<Duration>)>) -> bool {
    let c = cache.clone();
    cache
        .blocking(async move { c.set(entries).await })
        .unwrap()
        .unwrap()
}

fn clear(cache: &NodeCache, namespaces: Option<Vec<Vec<String>>>) -> bool {
    let c = cache.clone();
    cache
        .blocking(async move { c.clear(namespaces.as_deref()).await })
        .unwrap()
}

fn l2_key(cache: &NodeCache, k: &NodeKey) -> String {
    let (c, k) = (cache.clone(), k.clone());
    cache
        .blocking(async move { c.l2_key(&k).await })
        .unwrap()
        .unwrap()
}

#[test]
fn in_process_values_ttl_clears_and_the_lru_bound() {
    let cache = NodeCache::new(2);
    let (a, b, c) = (key(&["g"], "a"), key(&["g"], "b"), key(&["h"], "c"));
    assert!(set(&cache, vec![(a.clone(), json("1"), None)]));
    assert!(set(&cache, vec![(b.clone(), json("2"), None)]));
    assert!(set(&cache, vec![(c.clone(), json("3"), None)]));
    assert_eq!(
        get(&cache, vec![a.clone(), b.clone(), c.clone()]),
        vec![None, Some(json("2")), Some(json("3"))],
        "the least recently used went first"
    );
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.evictions, s.entries), (2, 1, 1, 2));
    // clear(namespaces) drops those namespaces only; clear() everything
    assert!(clear(&cache, Some(vec![vec!["g".into()]])));
    assert_eq!(
        get(&cache, vec![b.clone(), c.clone()]),
        vec![None, Some(json("3"))]
    );
    assert!(clear(&cache, None));
    assert_eq!(cache.stats().entries, 0);
    // a TTL holds in process
    let short = Some(Duration::from_millis(50));
    assert!(set(&cache, vec![(a.clone(), json("1"), short)]));
    assert_eq!(get(&cache, vec![a.clone()]), vec![Some(json("1"))]);
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(get(&cache, vec![a]), vec![None]);
    assert!(cache.store().is_none());
}

#[test]
fn only_data_is_stored() {
    let cache = NodeCache::new(10);
    let pickle = NodeValue {
        kind: "pickle".into(),
        data: Arc::from(&b"\x80\x04"[..]),
    };
    let k = key(&["g"], "k");
    let c = cache.clone();
    let entries = vec![
        (key(&["g"], "ok"), json("1"), None),
        (k.clone(), pickle, None),
    ];
    let result = cache.blocking(async move { c.set(entries).await }).unwrap();
    assert_eq!(result, Err(NotData("pickle".into())));
    assert_eq!(cache.stats().entries, 0, "nothing of the batch stored");
    for kind in DATA_KINDS {
        assert!(is_data(kind));
    }
    assert!(!is_data("pickle") && !is_data(""));
}

#[test]
fn a_value_stored_by_one_is_served_by_the_other_and_fills_its_l1() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one), shared(&two));
    let (k, other) = (key(&["g", "n"], "k"), key(&["g", "n"], "other"));
    assert!(set(&a, vec![(k.clone(), json("v"), None)]));
    assert_eq!(
        get(&b, vec![other.clone(), k.clone()]),
        vec![None, Some(json("v"))]
    );
    let s = b.stats();
    assert_eq!((s.hits, s.misses, s.l2_hits, s.entries), (1, 1, 1, 1));
    assert_eq!(get(&b, vec![k]), vec![Some(json("v"))]);
    assert_eq!(b.stats().l2_hits, 1, "answered by b's L1 the second time");
    assert!(!b.share(two), "shared once");
}

#[test]
fn an_awaited_get_judges_like_the_blocking_one() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b, c) = (shared(&one), shared(&two), shared(&two));
    let (k, bad) = (key(&["g"], "k"), key(&["g"], "bad"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let entries = vec![(k.clone(), json("v"), None)];
    assert_eq!(runtime.block_on(a.set(entries)), Ok(true));
    put(&one, l2_key(&a, &bad), b"garbage".to_vec());
    let keys = [bad, key(&["g"], "none"), k];
    let awaited = runtime.block_on(b.get(&keys));
    assert_eq!(awaited, get(&c, keys.to_vec()));
    assert_eq!(awaited, vec![None, None, Some(json("v"))]);
    assert_eq!(b.stats(), c.stats());
    let s = b.stats();
    assert_eq!((s.hits, s.misses, s.l2_hits, s.refused), (1, 1, 1, 1));
}

#[test]
fn namespaces_and_tenants_never_cross_and_foreign_kinds_are_refused() {
    let Some(server) = server() else { return };
    let plain = store(server.port, None);
    let acme = store(server.port, Some("acme"));
    let a = shared(&plain);
    let k = key(&["g"], "k");
    assert!(set(&a, vec![(k.clone(), json("v"), None)]));
    assert_eq!(get(&shared(&plain), vec![key(&["h"], "k")]), vec![None]);
    assert_eq!(get(&shared(&plain), vec![key(&["g", ""], "k")]), vec![None]);
    assert_eq!(get(&shared(&acme), vec![k.clone()]), vec![None]);
    // a pickle planted under the entry's own key: refused, never filled, never returned
    let pickle = NodeValue {
        kind: "pickle".into(),
        data: Arc::from(&b"\x80\x04boom"[..]),
    };
    put(&plain, l2_key(&a, &k), pack(&pickle, 0));
    let reader = shared(&plain);
    assert_eq!(get(&reader, vec![k.clone()]), vec![None]);
    let s = reader.stats();
    assert_eq!((s.refused, s.l2_hits, s.entries), (1, 0, 0));
    // bytes that are not an entry at all: refused too
    put(&plain, l2_key(&a, &k), b"\x80\x04 pickle".to_vec());
    assert_eq!(get(&reader, vec![k]), vec![None]);
    assert_eq!(reader.stats().refused, 2);
}

#[test]
fn a_clear_in_one_reaches_the_other() {
    let Some(server) = server() else { return };
    let (one, two) = (store(server.port, None), store(server.port, None));
    let (a, b) = (shared(&one), shared(&two));
    let (g, h) = (key(&["g"], "k"), key(&["h"], "k"));
    assert!(set(
        &a,
        vec![(g.clone(), json("1"), None), (h.clone(), json("2"), None)]
    ));
    assert_eq!(
        get(&b, vec![g.clone(), h.clone()]).iter().flatten().count(),
        2
    );
    assert!(clear(&a, Some(vec![vec!["g".into()]])));
    assert_eq!(get(&a, vec![g.clone()]), vec![None], "at once here");
    eventually("b sees a's clear of g", || {
        get(&b, vec![g.clone()]) == vec![None]
    });
    assert_eq!(get(&b, vec![h.clone()]), vec![Some(json("2"))], "h kept");
    assert!(clear(&b, None));
    eventually("a sees b's clear of everything", || {
        get(&a, vec![h.clone()]) == vec![None]
    });
    // entries stored after a clear are shared again
    assert!(set(&b, vec![(g.clone(), json("3"), None)]));
    assert_eq!(get(&shared(&one), vec![g]), vec![Some(json("3"))]);
}

#[test]
fn entries_expire_in_redis_with_their_ttl() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let a = shared(&one);
    let (short, long) = (key(&["g"], "short"), key(&["g"], "long"));
    let entries = vec![
        (short.clone(), json("s"), Some(Duration::from_millis(300))),
        (long.clone(), json("l"), None),
    ];
    assert!(set(&a, entries));
    assert_eq!(
        get(&shared(&one), vec![short.clone()]),
        vec![Some(json("s"))]
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        get(&shared(&one), vec![short.clone(), long]),
        vec![None, Some(json("l"))]
    );
    assert_eq!(get(&a, vec![short]), vec![None], "expired in L1 too");
    // an entry whose stamp has passed is a miss even while Redis still holds it
    let stale = key(&["g"], "stale");
    put(&one, l2_key(&a, &stale), pack(&json("x"), 1));
    assert_eq!(get(&shared(&one), vec![stale]), vec![None]);
}

#[test]
fn with_redis_down_l1_keeps_working() {
    let Some(server) = server() else { return };
    let one = store(server.port, None);
    let a = shared(&one);
    let k = key(&["g"], "k");
    assert!(set(&a, vec![(k.clone(), json("v"), None)]));
    drop(server);
    let q = key(&["g"], "q");
    assert!(
        !set(&a, vec![(q.clone(), json("w"), None)]),
        "Redis could not take it"
    );
    assert_eq!(
        get(&a, vec![k, q, key(&["g"], "r")])
            .iter()
            .flatten()
            .count(),
        2
    );
    assert!(!clear(&a, None), "Redis could not take the clear");
    assert_eq!(a.stats().entries, 0, "the clear still empties L1");
}

proptest! {
    #[test]
    fn pack_and_unpack_round_trip(
        kind in ".{0,12}",
        data in proptest::collection::vec(any::<u8>(), 0..64),
        expires in any::<u64>(),
    ) {
        let value = NodeValue { kind, data: data.into() };
        prop_assert_eq!(unpack(&pack(&value, expires)).unwrap(), (value, expires));
    }

    #[test]
    fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = unpack(&bytes);
        let mut framed = WIRE.to_vec();
        framed.extend_from_slice(&bytes);
        let _ = unpack(&framed);
    }
}
