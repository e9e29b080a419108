//! Store tests: key naming and settings without a server; the limiter, values and outages
//! against a `redis-server` the test starts on a free port (skipped when it is not installed,
//! except in CI, where that is a failure).

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::limit::{LimiterConfig, Priority, SharedLimiter, SharedLimiterConfig};

pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("redis-server is required in CI")
        }
        Err(_) => return None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server { child, port })
}

pub(crate) fn config(port: u16, prefix: &str) -> StoreConfig {
    StoreConfig {
        urls: vec![format!("redis://127.0.0.1:{port}")],
        prefix: prefix.into(),
        ..StoreConfig::default()
    }
}

#[test]
fn keys_carry_prefix_tenant_and_a_hash_tag() {
    let store = Store::new(StoreConfig {
        urls: vec!["redis://127.0.0.1:1".into()],
        tenant: Some("acme".into()),
        timeout: Duration::from_millis(20),
        ..StoreConfig::default()
    })
    .unwrap();
    assert_eq!(store.key("limiter:x", "s"), "{langscale:acme:limiter:x}:s");
    assert_eq!(store.key("exact:ab", ""), "{langscale:acme:exact:ab}");
    assert!(!store.is_up(), "nothing listens on port 1");
}

#[test]
fn bad_settings_are_config_errors() {
    let bad = |config: StoreConfig| matches!(Store::new(config), Err(StoreError::Config(_)));
    assert!(bad(StoreConfig {
        timeout: Duration::ZERO,
        ..StoreConfig::default()
    }));
    assert!(bad(StoreConfig {
        urls: vec![],
        ..StoreConfig::default()
    }));
    assert!(bad(StoreConfig {
        prefix: "a{b".into(),
        ..StoreConfig::default()
    }));
    let err = Store::new(StoreConfig {
        urls: vec!["http://user:hunter2@host".into()],
        ..StoreConfig::default()
    })
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        conn::redacted("redis://alice:s3cret@host:6379/0"),
        "redis://alice:***@host:6379/0"
    );
    assert_eq!(conn::redacted("redis://host:6379"), "redis://host:6379");
}

#[test]
fn values_round_trip_and_expire() {
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "v")).unwrap();
    assert!(store.is_up());
    let s = store.clone();
    store
        .block_on(async move {
            s.set(
                "k".into(),
                b"value".to_vec(),
                Some(Duration::from_millis(100)),
            )
            .await
        })
        .unwrap();
    let s = store.clone();
    let got = store
        .block_on(async move { s.get("k".into()).await })
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"value"[..]));
    std::thread::sleep(Duration::from_millis(150));
    let s = store.clone();
    assert_eq!(
        store
            .block_on(async move { s.get("k".into()).await })
            .unwrap(),
        None
    );
}

#[test]
fn shared_limiter_holds_a_rate_across_two_instances_and_falls_back() {
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "l")).unwrap();
    let shared = |share| {
        SharedLimiter::new(
            store.clone(),
            SharedLimiterConfig {
                name: "x".into(),
                limits: LimiterConfig {
                    requests_per_second: Some(10.0),
                    burst: Some(2),
                    ..LimiterConfig::default()
                },
                local_share: share,
                ..SharedLimiterConfig::default()
            },
        )
        .unwrap()
    };
    let (a, b) = (shared(None), shared(Some(0.5)));
    assert!(a.try_acquire(0, Priority::Standard).unwrap().is_some());
    assert!(b.try_acquire(0, Priority::Standard).unwrap().is_some());
    // the shared burst of 2 is spent, whichever instance asks
    assert!(a.try_acquire(0, Priority::Standard).unwrap().is_none());
    assert!(b.try_acquire(0, Priority::Standard).unwrap().is_none());
    let started = Instant::now();
    let permit = b
        .acquire_blocking(0, Priority::Standard, Some(Duration::from_secs(2)))
        .unwrap();
    assert!(!permit.is_local());
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(server);
    let permit = b
        .acquire_blocking(0, Priority::Standard, Some(Duration::from_secs(2)))
        .unwrap();
    assert!(permit.is_local(), "Redis is gone: the local share answers");
    assert!(!store.is_up());
    assert_eq!(store.stats().degraded, 1);
}

/// Put raw bytes under a Redis key, as another (maybe broken) writer would.
pub(crate) fn put(store: &Store, key: String, bytes: Vec<u8>) {
    let s = store.clone();
    store
        .block_on(async move { s.set(key, bytes, None).await })
        .unwrap();
}

pub(crate) fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} not reached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bumped_epoch_reaches_every_watcher() {
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "e")).unwrap();
    let (a, b) = (
        Epoch::start(store.clone(), "clears".into()),
        Epoch::start(store.clone(), "clears".into()),
    );
    let other = Epoch::start(store.clone(), "other".into());
    assert_eq!((a.current(), b.current()), (0, 0));
    assert_eq!(a.bump().unwrap(), 1);
    assert_eq!(a.current(), 1, "the bumping watcher sees it at once");
    eventually("b sees the bump", || b.current() == 1);
    // a late watcher starts with the value; another key is untouched
    assert_eq!(Epoch::start(store.clone(), "clears".into()).current(), 1);
    assert_eq!(other.current(), 0);
}

#[test]
fn a_rewound_stream_hands_out_everything_again_in_order() {
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "s")).unwrap();
    let (writer, reader) = (
        IndexStream::start(store.clone(), "x", 100),
        IndexStream::start(store.clone(), "x", 100),
    );
    for i in 0..5u8 {
        writer.publish(vec![("i".into(), vec![i])]);
    }
    let mut seen = Vec::new();
    eventually("five events", || {
        seen.extend(reader.drain(2));
        seen.len() == 5
    });
    assert_eq!(
        seen,
        (0..5u8)
            .map(|i| vec![("i".into(), vec![i])])
            .collect::<Vec<_>>()
    );
    reader.rewind();
    let mut again = Vec::new();
    eventually("five events again", || {
        again.extend(reader.drain(usize::MAX));
        again.len() == 5
    });
    assert_eq!(again, seen);
    assert_eq!(reader.tenant(), None);
}

fn fair_limiter(store: &Store, name: &str, rps: f64, burst: u64) -> SharedLimiter {
    SharedLimiter::new(
        store.clone(),
        SharedLimiterConfig {
            name: name.into(),
            limits: LimiterConfig {
                requests_per_second: Some(rps),
                burst: Some(burst),
                ..LimiterConfig::default()
            },
            ..SharedLimiterConfig::default()
        },
    )
    .unwrap()
}

fn fair_keys_exist(store: &Store, name: &str) -> i64 {
    let tag = format!("limiter:{name}");
    let mut cmd = redis::cmd("EXISTS");
    for k in ["ts", "ta", "tw", "tz"] {
        cmd.arg(store.key(&tag, k));
    }
    let s = store.clone();
    store
        .block_on(async move { s.query::<i64>(cmd).await })
        .unwrap()
}

#[test]
fn a_tenant_takes_beyond_its_share_while_no_other_is_starved() {
    use crate::limit::Ask;
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "f")).unwrap();
    let (a, b) = (
        fair_limiter(&store, "w", 10.0, 8),
        fair_limiter(&store, "w", 10.0, 8),
    );
    // requests naming no tenant do no fair-share work in Redis
    assert!(a.try_acquire(0, Priority::Standard).unwrap().is_some());
    assert_eq!(fair_keys_exist(&store, "w"), 0);
    let light = Ask::new(Priority::Standard, Some("light"));
    let heavy = Ask::new(Priority::Standard, Some("heavy"));
    assert!(a.try_acquire(0, light).unwrap().is_some());
    // light is active (heavy's share is half: 4 of the burst of 8) but not starved: heavy
    // may use all the rest
    let mut n = 0;
    while b.try_acquire(0, heavy.clone()).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
    assert!(fair_keys_exist(&store, "w") >= 3);
}

#[test]
fn a_starved_tenant_holds_the_others_to_their_share() {
    use crate::limit::Ask;
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "g")).unwrap();
    // 2/s, burst 4; two tenants of weight 1: 1/s each, a tenant burst of 2
    let (a, b) = (
        fair_limiter(&store, "s", 2.0, 4),
        fair_limiter(&store, "s", 2.0, 4),
    );
    let light = Ask::new(Priority::Standard, Some("light"));
    let heavy = Ask::new(Priority::Standard, Some("heavy"));
    let t0 = Instant::now();
    assert!(a.try_acquire(0, light.clone()).unwrap().is_some());
    for _ in 0..3 {
        assert!(b.try_acquire(0, heavy.clone()).unwrap().is_some());
    }
    // light, within its share, is refused by the full bucket (for ~500 ms): it is starved
    // for ~1 s
    let refused = a.acquire_blocking(0, light.clone(), Some(Duration::from_millis(20)));
    assert!(refused.is_err());
    // at ~750 ms the bucket has room for one again; heavy is beyond its share and refused
    std::thread::sleep(Duration::from_millis(750).saturating_sub(t0.elapsed()));
    assert!(b.try_acquire(0, heavy.clone()).unwrap().is_none());
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "too slow a machine"
    );
    // ... the room goes to the starved tenant
    assert!(a.try_acquire(0, light).unwrap().is_some());
}

#[test]
fn tenants_share_by_weight_and_bad_weights_are_config_errors() {
    use crate::limit::Ask;
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "h")).unwrap();
    let l = fair_limiter(&store, "k", 10.0, 8);
    assert!(l.set_tenant_weight("gold", f64::NAN).is_err());
    assert!(l.set_tenant_weight("gold", 3.0).is_ok());
    let gold = Ask::new(Priority::Standard, Some("gold"));
    let tin = Ask::new(Priority::Standard, Some("tin"));
    assert!(l.try_acquire(0, tin.clone()).unwrap().is_some());
    let mut n = 0;
    while l.try_acquire(0, gold.clone()).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 7, "the rest of the burst of 8");
    // tin (share 1/4: 2 of the burst) is refused within its share: it is starved
    assert!(l
        .acquire_blocking(0, tin, Some(Duration::from_millis(20)))
        .is_err());
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(store.key("limiter:k", "tz")).arg(0).arg(-1);
    let s = store.clone();
    let starved: Vec<String> = store.block_on(async move { s.query(cmd).await }).unwrap();
    assert_eq!(starved, vec!["tin".to_owned()]);
}

fn slot_limiter(store: &Store, name: &str, cmax: u32) -> SharedLimiter {
    SharedLimiter::new(
        store.clone(),
        SharedLimiterConfig {
            name: name.into(),
            limits: LimiterConfig {
                max_concurrency: Some(cmax),
                ..LimiterConfig::default()
            },
            ..SharedLimiterConfig::default()
        },
    )
    .unwrap()
}

fn slot_count(store: &Store, name: &str, tenant: &str) -> Option<i64> {
    let mut cmd = redis::cmd("HGET");
    cmd.arg(store.key(&format!("limiter:{name}"), "cc"))
        .arg(tenant);
    let s = store.clone();
    store
        .block_on(async move { s.query::<Option<i64>>(cmd).await })
        .unwrap()
}

#[test]
fn a_starved_tenant_gets_the_next_free_slot_before_a_tenant_at_its_share() {
    use crate::limit::Ask;
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "cs")).unwrap();
    let (a, b) = (slot_limiter(&store, "q", 4), slot_limiter(&store, "q", 4));
    let light = Ask::new(Priority::Standard, Some("light"));
    let heavy = Ask::new(Priority::Standard, Some("heavy"));
    // alone, heavy may take every slot
    let mut held: Vec<_> = (0..4)
        .map(|_| b.try_acquire(0, heavy.clone()).unwrap().unwrap())
        .collect();
    assert_eq!(slot_count(&store, "q", "heavy"), Some(4));
    // light (slot share 2 of 4, holding none) waits and marks itself starved
    let waiter = {
        let a = a.clone();
        std::thread::spawn(move || a.acquire_blocking(0, light, Some(Duration::from_secs(5))))
    };
    std::thread::sleep(Duration::from_millis(100));
    held.pop();
    // heavy (3 slots, its share 2) asks again and again for the freed slot: first come, it
    // would win it; it is refused while light is starved, and light takes it
    let mut stolen = 0;
    while !waiter.is_finished() {
        if let Some(p) = b.try_acquire(0, heavy.clone()).unwrap() {
            stolen += 1;
            held.push(p);
        }
    }
    let permit = waiter.join().unwrap().unwrap();
    assert_eq!(stolen, 0, "heavy took the slot a starved tenant waited for");
    assert_eq!(slot_count(&store, "q", "light"), Some(1));
    assert_eq!(slot_count(&store, "q", "heavy"), Some(3));
    // counts follow releases down to nothing
    drop(permit);
    held.clear();
    eventually("counts released", || {
        slot_count(&store, "q", "light").is_none() && slot_count(&store, "q", "heavy").is_none()
    });
    // requests naming no tenant keep first-come slots and no counts
    let plain: Vec<_> = (0..4)
        .map(|_| a.try_acquire(0, Priority::Standard).unwrap().unwrap())
        .collect();
    assert!(a.try_acquire(0, Priority::Standard).unwrap().is_none());
    assert_eq!(slot_count(&store, "q", "heavy"), None);
    drop(plain);
}

#[test]
fn an_expired_tenant_slot_is_counted_off() {
    use crate::limit::Ask;
    let Some(server) = server() else { return };
    let store = Store::new(config(server.port, "ce")).unwrap();
    let l = slot_limiter(&store, "e", 2);
    let heavy = Ask::new(Priority::Standard, Some("heavy"));
    // two slots of a crashed worker, as the admission script writes them, expiring soon
    let (slots, counts) = (store.key("limiter:e", "c"), store.key("limiter:e", "cc"));
    let s = store.clone();
    let (secs, micros): (u64, u64) = store
        .block_on(async move { s.query(redis::cmd("TIME")).await })
        .unwrap();
    let expiry = (secs * 1_000_000 + micros + 200_000) as f64;
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(&slots)
        .arg(expiry)
        .arg("dead:1|heavy")
        .arg(expiry)
        .arg("dead:2|heavy")
        .ignore();
    pipe.cmd("HSET").arg(&counts).arg("heavy").arg(2).ignore();
    let s = store.clone();
    store
        .block_on(async move { s.pipeline::<()>(pipe).await })
        .unwrap();
    assert!(l.try_acquire(0, heavy.clone()).unwrap().is_none());
    std::thread::sleep(Duration::from_millis(300));
    let permit = l.try_acquire(0, heavy.clone()).unwrap();
    assert!(permit.is_some(), "the crashed worker's slots expired");
    assert_eq!(slot_count(&store, "e", "heavy"), Some(1));
}
