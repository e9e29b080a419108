//! `Budgets::Shared` against a real `redis-server` (skipped when it is not installed, except
//! in CI): the same answers as the local ledger, the 200-threads race, and Redis killed and
//! restarted mid-run under both down policies.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::*;
use crate::spend::ledger::UnixClock;
use crate::spend::{BudgetCap, Budgets, Window};
use crate::store::tests::{config, server};
use crate::store::StoreConfig;

fn level(usd: f64, on_over: OnOver) -> LevelConfig {
    LevelConfig {
        budgets: vec![BudgetCap {
            usd: Some(usd),
            tokens: None,
            window: Window::Day,
            calendar: false,
        }],
        on_over,
        ..LevelConfig::default()
    }
}

fn spend_config(tenant_usd: f64) -> SpendConfig {
    let mut tenants = HashMap::new();
    tenants.insert("acme".to_owned(), level(tenant_usd, OnOver::Raise));
    SpendConfig {
        global: Some(LevelConfig {
            requests_per_minute: Some(1000.0),
            ..level(100.0, OnOver::Wait)
        }),
        tenants,
        user_default: Some(LevelConfig {
            concurrency: Some(50),
            ..LevelConfig::default()
        }),
        ..SpendConfig::default()
    }
}

fn shared(port: u16, prefix: &str, config: SpendConfig) -> Budgets {
    let store = Store::new(self::config(port, prefix)).unwrap();
    Budgets::shared(config, store, Arc::new(UnixClock)).unwrap()
}

/// For the races: 200 threads on a loaded machine can keep a call waiting past the store's
/// 100 ms default, which refuses it as Redis being down (a CI run admitted 0 of 10); the races
/// count admissions, not timeouts.
fn racing(port: u16, prefix: &str, config: SpendConfig) -> Budgets {
    let store = Store::new(StoreConfig {
        timeout: Duration::from_secs(5),
        ..self::config(port, prefix)
    })
    .unwrap();
    Budgets::shared(config, store, Arc::new(UnixClock)).unwrap()
}

fn usd(x: f64) -> Cost {
    Cost {
        requests: 1,
        tokens: 10,
        usd: x,
    }
}

#[test]
fn shared_budgets_answer_as_the_local_ledger_does() {
    let Some(server) = server() else { return };
    let who = Who::new(Some("acme"), Some("u1"));
    let local = Budgets::local(spend_config(1.0), Arc::new(UnixClock)).unwrap();
    let remote = shared(server.port, "same", spend_config(1.0));
    for b in [&local, &remote] {
        for x in [0.3, 0.25] {
            let r = b.reserve(&who, usd(0.4), false).unwrap();
            r.settle(usd(x));
        }
        drop(b.reserve(&who, usd(0.1), false).unwrap()); // released: not charged
        b.saved(&who, usd(0.2));
    }
    let refuse = |b: &Budgets| match b.reserve(&who, usd(0.5), false) {
        Err(Refusal::Raise(e)) => e,
        other => panic!("expected a raise, got {other:?}"),
    };
    let (l, r) = (refuse(&local), refuse(&remote));
    assert_eq!(
        (&l.tenant, &l.user, l.level, &l.budget, l.limit),
        (&r.tenant, &r.user, r.level, &r.budget, r.limit)
    );
    assert!(
        (l.spent - r.spent).abs() < 1e-9,
        "{} vs {}",
        l.spent,
        r.spent
    );
    let (lr, rr) = (l.resets_in.unwrap(), r.resets_in.unwrap());
    assert!(lr.abs_diff(rr) < Duration::from_secs(5), "{lr:?} vs {rr:?}");
    assert!(r.to_string().contains("tenant \"acme\""), "{r}");
    let (lrep, rrep) = (local.report(), remote.report());
    assert_eq!(rrep.in_flight, 0);
    assert_eq!(
        lrep.levels.iter().map(|l| &l.key).collect::<Vec<_>>(),
        rrep.levels.iter().map(|l| &l.key).collect::<Vec<_>>()
    );
    for (a, b) in lrep.levels.iter().zip(&rrep.levels) {
        assert_eq!(a.counters.requests, b.counters.requests, "{}", a.key);
        assert_eq!(a.counters.refused, b.counters.refused, "{}", a.key);
        assert_eq!(a.counters.cache_hits, b.counters.cache_hits, "{}", a.key);
        assert!((a.counters.usd - b.counters.usd).abs() < 1e-9, "{}", a.key);
        assert_eq!(a.meters.len(), b.meters.len());
        for (x, y) in a.meters.iter().zip(&b.meters) {
            assert_eq!(x.budget, y.budget);
            assert!((x.used - y.used).abs() < 1e-9, "{}: {x:?} vs {y:?}", a.key);
        }
    }
}

#[test]
fn two_hundred_threads_against_room_for_ten_admit_ten() {
    let Some(server) = server() else { return };
    let b = racing(server.port, "race", spend_config(1.0));
    let who = Who::new(Some("acme"), None);
    let admitted = AtomicUsize::new(0);
    let held = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..200 {
            s.spawn(|| {
                if let Ok(r) = b.reserve(&who, usd(0.1), false) {
                    admitted.fetch_add(1, Ordering::Relaxed);
                    held.lock().unwrap().push(r);
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 10);
    assert_eq!(b.report().in_flight, 10);
    for r in held.into_inner().unwrap() {
        r.settle(usd(0.1));
    }
    let report = b.report();
    let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!(acme.counters.requests, 10);
    assert_eq!(acme.counters.refused, 190);
    assert!((acme.meters[0].used - 1.0).abs() < 1e-9);
}

#[test]
fn a_degraded_level_admits_a_cheap_deployment_and_shadow_only_counts() {
    let Some(server) = server() else { return };
    let mut config = spend_config(0.1);
    config
        .tenants
        .insert("acme".into(), level(0.1, OnOver::Degrade));
    let b = shared(server.port, "degrade", config.clone());
    let who = Who::new(Some("acme"), None);
    assert!(matches!(
        b.reserve(&who, usd(0.5), false),
        Err(Refusal::Degrade(_))
    ));
    b.reserve(&who, usd(0.5), true).unwrap().settle(usd(0.5));
    config.shadow = true;
    b.update(config).unwrap();
    b.reserve(&who, usd(0.5), false).unwrap().settle(usd(0.5));
    let report = b.report();
    let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!((acme.counters.refused, acme.counters.would_refuse), (1, 1));
    assert!((acme.counters.usd - 1.0).abs() < 1e-9);
}

/// A server with an append-only file synced on every write, restartable on its port.
struct Durable {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Durable {
    fn start() -> Option<Self> {
        let first = server()?; // skips (or fails in CI) exactly as the other tests do
        let port = first.port;
        drop(first);
        let dir = std::env::temp_dir().join(format!("langscale-spend-{}", unique_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Self {
            child: None,
            port,
            dir,
        };
        d.restart();
        Some(d)
    }

    fn restart(&mut self) {
        self.child = Some(
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tenant_used(b: &Budgets) -> f64 {
    let report = b.report();
    report
        .levels
        .iter()
        .find(|l| l.key == "t:acme")
        .map_or(0.0, |l| l.meters[0].used)
}

#[test]
fn spend_while_redis_is_down_is_written_back_when_it_returns() {
    let Some(mut redis) = Durable::start() else {
        return;
    };
    let mut config = spend_config(10.0);
    config.local_share = 0.5;
    let store = Store::new(StoreConfig {
        timeout: Duration::from_millis(200),
        ..self::config(redis.port, "down")
    })
    .unwrap();
    let b = Budgets::shared(config, store.clone(), Arc::new(UnixClock)).unwrap();
    let Budgets::Shared(ledger) = &b else {
        unreachable!()
    };
    let who = Who::new(Some("acme"), None);
    let mut spent = 0.0;
    for _ in 0..4 {
        b.reserve(&who, usd(1.0), false).unwrap().settle(usd(1.0));
        spent += 1.0;
    }
    // A reservation made before the outage and settled during it.
    let across = b.reserve(&who, usd(1.0), false).unwrap();
    redis.kill();
    // Half of what was left (10 - 4 - 1 held = 5): 2.5 of room without Redis.
    let mut admitted = 0;
    for _ in 0..10 {
        if let Ok(r) = b.reserve(&who, usd(1.0), false) {
            admitted += 1;
            r.settle(usd(0.9));
            spent += 0.9;
        }
    }
    across.settle(usd(0.7));
    spent += 0.7;
    assert!(!store.is_up());
    assert_eq!(admitted, 2, "the local share is half the remaining budget");
    assert_eq!(ledger.stats().pending, 3);
    assert!(ledger.stats().local_refused >= 8);
    redis.restart();
    wait_until("the store to reconnect", || store.is_up());
    let used = tenant_used(&b);
    assert!(
        (used - spent).abs() < 1e-9,
        "redis holds {used}, spent {spent}"
    );
    assert_eq!(ledger.stats().pending, 0);
    // Written back once: asking again changes nothing.
    ledger.flush();
    assert!((tenant_used(&b) - spent).abs() < 1e-9);
    let report = b.report();
    let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!(acme.counters.requests, 7);
}

#[test]
fn fail_closed_refuses_while_redis_is_down_naming_the_outage() {
    let Some(mut redis) = Durable::start() else {
        return;
    };
    let mut config = spend_config(10.0);
    config.on_redis_down = RedisDown::FailClosed;
    let store = Store::new(self::config(redis.port, "closed")).unwrap();
    let b = Budgets::shared(config, store.clone(), Arc::new(UnixClock)).unwrap();
    let who = Who::new(Some("acme"), None);
    b.reserve(&who, usd(1.0), false).unwrap().settle(usd(1.0));
    redis.kill();
    let e = match b.reserve(&who, usd(1.0), false) {
        Err(Refusal::Raise(e)) => e,
        other => panic!("expected a raise, got {other:?}"),
    };
    assert!(e.budget.contains("redis is unreachable"), "{}", e.budget);
    assert_eq!(e.level, Level::Global);
    // A call with no budget to check still goes.
    let free = Budgets::shared(SpendConfig::default(), store.clone(), Arc::new(UnixClock)).unwrap();
    assert!(free.reserve(&who, usd(1.0), false).is_ok());
    redis.restart();
    wait_until("the store to reconnect", || store.is_up());
    assert!(b.reserve(&who, usd(1.0), false).is_ok());
}

#[test]
fn leased_calls_skip_the_round_trip_and_every_cent_is_booked() {
    let Some(server) = server() else { return };
    let store = Store::new(self::config(server.port, "leased")).unwrap();
    let b = Budgets::shared(spend_config(1e6), store.clone(), Arc::new(UnixClock)).unwrap();
    let Budgets::Shared(ledger) = &b else {
        unreachable!()
    };
    let who = Who::new(Some("acme"), None);
    let before = store.stats().calls;
    for i in 0..200 {
        // Reserved at 0.01, really 0.02 every other call: usage above the estimate counts.
        let r = b.reserve(&who, usd(0.01), false).unwrap();
        r.settle(usd(if i % 2 == 0 { 0.02 } else { 0.01 }));
    }
    let trips = store.stats().calls - before;
    assert!(
        trips < 40,
        "{trips} round trips for 200 calls, {:?}",
        ledger.stats()
    );
    assert!(ledger.stats().lease.leased > 150, "{:?}", ledger.stats());
    // Another process's view, once this one has booked (report books first).
    let _ = b.report();
    let other = shared(server.port, "leased", spend_config(1e6));
    let report = other.report();
    let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!(acme.counters.requests, 200);
    assert!(
        (acme.counters.usd - 3.0).abs() < 1e-9,
        "{}",
        acme.counters.usd
    );
    // Used: the 3.0 booked, plus what this process's lease still holds unused.
    assert!(acme.meters[0].used >= 3.0 - 1e-9);
    ledger.hand_back();
    let report = other.report();
    let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert!(
        (acme.meters[0].used - 3.0).abs() < 1e-9,
        "{}",
        acme.meters[0].used
    );
    assert_eq!(report.in_flight, 0);
}

#[test]
fn a_report_takes_what_its_lease_holds_from_the_read_that_sums_the_meter() {
    // A renewal of this process's lease lands whenever Redis answers it (in the background):
    // what the lease holds comes from the read that sums the meter, not from what this
    // process last heard. (Taken from the last answer, a report once showed $21 of $20 spent:
    // a renewal landed between that answer and the read.)
    let Some(server) = server() else { return };
    let b = shared(server.port, "lease-report", spend_config(1e6));
    let Budgets::Shared(ledger) = &b else {
        unreachable!()
    };
    let who = Who::new(Some("acme"), None);
    for _ in 0..20 {
        b.reserve(&who, usd(0.01), false).unwrap().settle(usd(1.0));
    }
    let meter = plan(&ledger.config(), &who)
        .0
        .into_iter()
        .map(|p| p.shared)
        .find(|m| m.name.starts_with("t:acme/usd"))
        .unwrap();
    let used = |b: &Budgets| {
        let report = b.report();
        let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
        acme.meters[0].used
    };
    assert!((used(&b) - 20.0).abs() < 1e-9, "{}", used(&b));
    // The lease's hold in Redis moves under the reports, as renewals would move it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let (spend, lease, stop) = (
            ledger.spend.clone(),
            ledger.leases.lease_id(&meter.name),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let mut moves = 0_u32;
            while !stop.load(Ordering::Relaxed) {
                moves += 1;
                let hold = f64::from(moves % 4);
                let take = crate::spend::shared::LeaseTake {
                    meter: meter.clone(),
                    lease: lease.clone(),
                    book: 0.0,
                    cover: hold,
                    want: hold,
                    unit: 1.0,
                    shrink: true,
                };
                let s = spend.clone();
                let _ = spend
                    .store()
                    .block_on(async move { s.lease("", &[take], &[], 0.5, 60_000_000, 0).await });
            }
            moves
        })
    };
    let seen: Vec<f64> = (0..40).map(|_| used(&b)).collect();
    stop.store(true, Ordering::Relaxed);
    assert!(mover.join().unwrap() > 10, "the hold hardly moved");
    assert!(
        seen.iter().all(|u| (u - 20.0).abs() < 1e-9),
        "reports while the lease's hold moved: {seen:?}"
    );
}

#[test]
fn four_leasing_processes_of_fifty_threads_against_room_for_ten_admit_ten() {
    let Some(server) = server() else { return };
    let ledgers: Vec<Budgets> = (0..4)
        .map(|_| racing(server.port, "race4", spend_config(1.0)))
        .collect();
    let who = Who::new(Some("acme"), None);
    let admitted = AtomicUsize::new(0);
    let held = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for b in &ledgers {
            for _ in 0..50 {
                s.spawn(|| {
                    if let Ok(r) = b.reserve(&who, usd(0.1), false) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        held.lock().unwrap().push(r);
                    }
                });
            }
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 10);
    for r in held.into_inner().unwrap() {
        r.settle(usd(0.1));
    }
    let report = ledgers[0].report();
    let acme = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!(acme.counters.requests, 10);
    assert_eq!(acme.counters.refused, 190);
    assert!((acme.meters[0].used - 1.0).abs() < 1e-9);
}

#[test]
fn running_low_follows_what_redis_last_said_every_process_used() {
    let Some(server) = server() else { return };
    for lease in [true, false] {
        let prefix = format!("low-{lease}");
        let config = SpendConfig {
            lease,
            ..spend_config(10.0)
        };
        let (a, b) = (
            shared(server.port, &prefix, config.clone()),
            shared(server.port, &prefix, config),
        );
        let who = Who::new(Some("acme"), None);
        b.reserve(&who, usd(0.01), false).unwrap().settle(usd(0.01));
        assert!(!b.running_low(&who), "lease={lease}: nothing spent yet");
        for _ in 0..17 {
            a.reserve(&who, usd(0.5), false).unwrap().settle(usd(0.5));
        }
        assert!(a.running_low(&who), "lease={lease}: its own $8.5 of $10");
        if let Budgets::Shared(l) = &a {
            l.hand_back(); // booked in Redis: what the other process reads
        }
        // The other process knows once Redis has answered it again.
        wait_until("the other process sees the spend", || {
            b.reserve(&who, usd(0.01), false).unwrap().settle(usd(0.01));
            b.running_low(&who)
        });
        // Another tenant's budget is untouched.
        assert!(!b.running_low(&Who::new(Some("other"), None)));
    }
}
