use std::thread;

use super::*;
use crate::clock::FakeClock;
use crate::spend::{BudgetCap, Budgets, LevelConfig, Window};

fn usd_per_day(usd: f64, on_over: OnOver) -> LevelConfig {
    LevelConfig {
        budgets: vec![BudgetCap {
            usd: Some(usd),
            tokens: None,
            window: Window::Day,
            calendar: true,
        }],
        on_over,
        ..LevelConfig::default()
    }
}

fn acme() -> Who {
    Who::new(Some("acme"), Some("u1"))
}

fn cost(usd: f64) -> Cost {
    Cost {
        requests: 1,
        tokens: 100,
        usd,
    }
}

fn ledger(config: SpendConfig) -> (Arc<Ledger>, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new());
    // 2026-02-14 12:00 UTC
    clock.set_nanos((20_498 * 86_400 + 12 * 3600) * 1_000_000_000);
    (Arc::new(Ledger::new(config, clock.clone()).unwrap()), clock)
}

fn tenants(level: LevelConfig) -> SpendConfig {
    SpendConfig {
        tenant_default: Some(level),
        ..SpendConfig::default()
    }
}

#[test]
fn two_hundred_threads_against_room_for_ten_admit_ten() {
    let (ledger, _) = ledger(tenants(usd_per_day(1.0, OnOver::Raise)));
    let admitted: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|_| {
                let l = Arc::clone(&ledger);
                s.spawn(move || usize::from(l.reserve(&acme(), cost(0.1), false).is_ok()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 10);
    assert_eq!(ledger.in_flight(), 10);
    let report = ledger.report();
    let tenant = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!(tenant.counters.refused, 190);
}

#[test]
fn settling_charges_the_real_cost_and_releasing_charges_nothing() {
    let (ledger, _) = ledger(tenants(usd_per_day(1.0, OnOver::Raise)));
    let a = ledger.reserve(&acme(), cost(0.6), false).unwrap();
    assert!(ledger.reserve(&acme(), cost(0.6), false).is_err());
    ledger.settle(a, &acme(), cost(0.2));
    let b = ledger.reserve(&acme(), cost(0.6), false).unwrap();
    ledger.release(b);
    ledger.release(b); // twice: nothing more
    let report = ledger.report();
    let tenant = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert!((tenant.meters[0].used - 0.2).abs() < 1e-9, "{tenant:?}");
    assert!((tenant.counters.usd - 0.2).abs() < 1e-9);
    assert_eq!(tenant.counters.requests, 1);
}

#[test]
fn a_reservation_never_settled_expires() {
    let config = SpendConfig {
        reservation_ttl: 5.0,
        ..tenants(usd_per_day(1.0, OnOver::Raise))
    };
    let (ledger, clock) = ledger(config);
    let _lost = ledger.reserve(&acme(), cost(0.9), false).unwrap();
    assert!(ledger.reserve(&acme(), cost(0.9), false).is_err());
    clock.advance(Duration::from_secs(5));
    assert!(ledger.reserve(&acme(), cost(0.9), false).is_ok());
}

#[test]
fn the_refusal_names_tenant_level_budget_spent_limit_and_reset() {
    let (ledger, _) = ledger(tenants(usd_per_day(1.0, OnOver::Raise)));
    let a = ledger.reserve(&acme(), cost(0.9), false).unwrap();
    ledger.settle(a, &acme(), cost(0.9));
    let Err(Refusal::Raise(e)) = ledger.reserve(&acme(), cost(0.2), false) else {
        panic!("expected a refusal")
    };
    assert_eq!(e.tenant.as_deref(), Some("acme"));
    assert_eq!(e.level, Level::Tenant);
    assert!((e.spent - 0.9).abs() < 1e-9);
    assert!((e.limit - 1.0).abs() < 1e-9);
    // Calendar day: resets at midnight, 12 h away.
    assert_eq!(e.resets_in, Some(Duration::from_secs(12 * 3600)));
    let text = e.to_string();
    for part in [
        "tenant \"acme\"",
        "tenant level",
        "usd per day (calendar)",
        "0.9",
        "of 1",
        "43200.0 s",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

#[test]
fn overrides_beat_defaults_and_users_have_their_own_level() {
    let mut config = tenants(usd_per_day(1.0, OnOver::Raise));
    config
        .tenants
        .insert("big".into(), usd_per_day(100.0, OnOver::Raise));
    config.user_default = Some(usd_per_day(0.5, OnOver::Raise));
    let (ledger, _) = ledger(config);
    assert!(ledger
        .reserve(&Who::new(Some("big"), None), cost(50.0), false)
        .is_ok());
    assert!(ledger.reserve(&acme(), cost(0.6), false).is_err());
    let Err(Refusal::Raise(e)) = ledger.reserve(&acme(), cost(0.6), false) else {
        panic!()
    };
    assert_eq!(e.level, Level::User);
    assert_eq!(e.user.as_deref(), Some("u1"));
    // Another user of acme still has the tenant's room.
    assert!(ledger
        .reserve(&Who::new(Some("acme"), Some("u2")), cost(0.4), false)
        .is_ok());
}

#[test]
fn shadow_mode_admits_and_counts_what_it_would_refuse() {
    let config = SpendConfig {
        shadow: true,
        ..tenants(usd_per_day(1.0, OnOver::Raise))
    };
    let (ledger, _) = ledger(config);
    for _ in 0..3 {
        assert!(ledger.reserve(&acme(), cost(0.6), false).is_ok());
    }
    let report = ledger.report();
    let t = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert_eq!(t.counters.would_refuse, 2);
    assert_eq!(t.counters.refused, 0);
    assert!(t.meters[0].near);
}

#[test]
fn degrade_admits_cheap_deployments_only() {
    let (ledger, _) = ledger(tenants(usd_per_day(1.0, OnOver::Degrade)));
    let _a = ledger.reserve(&acme(), cost(0.9), false).unwrap();
    assert!(matches!(
        ledger.reserve(&acme(), cost(0.5), false),
        Err(Refusal::Degrade(_))
    ));
    assert!(ledger.reserve(&acme(), cost(0.5), true).is_ok());
}

#[test]
fn wait_says_when_rolling_spend_leaves_the_window() {
    let level = LevelConfig {
        requests_per_minute: Some(2.0),
        on_over: OnOver::Wait,
        ..LevelConfig::default()
    };
    let (ledger, clock) = ledger(tenants(level));
    for _ in 0..2 {
        let id = ledger.reserve(&acme(), cost(0.0), false).unwrap();
        ledger.settle(id, &acme(), cost(0.0));
        clock.advance(Duration::from_secs(10));
    }
    let Err(Refusal::Wait { retry_after, .. }) = ledger.reserve(&acme(), cost(0.0), false) else {
        panic!("expected a wait")
    };
    // The first request leaves the rolling minute 60 s after it: 40 s from now.
    assert_eq!(retry_after, Duration::from_secs(40));
    clock.advance(retry_after);
    assert!(ledger.reserve(&acme(), cost(0.0), false).is_ok());
}

#[test]
fn requests_per_second_roll_over_one_second() {
    let level = LevelConfig {
        requests_per_second: Some(2.0),
        on_over: OnOver::Wait,
        ..LevelConfig::default()
    };
    let (ledger, clock) = ledger(tenants(level));
    for _ in 0..2 {
        let id = ledger.reserve(&acme(), cost(0.0), false).unwrap();
        ledger.settle(id, &acme(), cost(0.0));
    }
    let Err(Refusal::Wait {
        exceeded,
        retry_after,
        ..
    }) = ledger.reserve(&acme(), cost(0.0), false)
    else {
        panic!("expected a wait")
    };
    assert_eq!(exceeded.budget, "requests per second (rolling)");
    assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
    clock.advance(retry_after);
    assert!(ledger.reserve(&acme(), cost(0.0), false).is_ok());
}

#[test]
fn concurrency_is_held_until_settled() {
    let level = LevelConfig {
        concurrency: Some(1),
        ..LevelConfig::default()
    };
    let (ledger, _) = ledger(tenants(level));
    let a = ledger.reserve(&acme(), cost(0.0), false).unwrap();
    assert!(ledger.reserve(&acme(), cost(0.0), false).is_err());
    ledger.settle(a, &acme(), cost(0.0));
    assert!(ledger.reserve(&acme(), cost(0.0), false).is_ok());
}

#[test]
fn an_update_changes_limits_and_keeps_spend() {
    let (ledger, _) = ledger(tenants(usd_per_day(1.0, OnOver::Raise)));
    let a = ledger.reserve(&acme(), cost(0.8), false).unwrap();
    ledger.settle(a, &acme(), cost(0.8));
    assert!(ledger.reserve(&acme(), cost(0.5), false).is_err());
    ledger
        .update(tenants(usd_per_day(2.0, OnOver::Raise)))
        .unwrap();
    assert!(ledger.reserve(&acme(), cost(0.5), false).is_ok());
    assert!(ledger
        .update(tenants(usd_per_day(f64::NAN, OnOver::Raise)))
        .is_err());
}

#[test]
fn a_reservation_dropped_releases_and_settled_once_counts_once() {
    let budgets = Budgets::Local(ledger(tenants(usd_per_day(1.0, OnOver::Raise))).0);
    let r = budgets.reserve(&acme(), cost(0.9), false).unwrap();
    drop(r);
    let r = budgets.reserve(&acme(), cost(0.9), false).unwrap();
    r.settle(cost(0.3));
    let report = budgets.report();
    let t = report.levels.iter().find(|l| l.key == "t:acme").unwrap();
    assert!((t.counters.usd - 0.3).abs() < 1e-9);
    assert_eq!(report.in_flight, 0);
}

/// `cargo test -p langscale-core --release bench_a_budget_check -- --ignored --nocapture`:
/// the cost of one reserve + settle against a tenant with a USD budget and a rate.
#[test]
#[ignore = "a measurement, not a test"]
fn bench_a_budget_check() {
    let mut level = usd_per_day(1e12, OnOver::Raise);
    level.requests_per_minute = Some(1e12);
    let ledger = Ledger::system(tenants(level)).unwrap();
    let who = acme();
    let n = 1_000_000u32;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let id = ledger.reserve(&who, cost(0.001), false).unwrap();
        ledger.settle(id, &who, cost(0.001));
    }
    let per = started.elapsed() / n;
    println!("reserve + settle: {per:?} per call (3 levels, 2 meters at tenant and user)");
    assert!(per > Duration::ZERO);
}

#[test]
fn a_deadline_comes_from_the_most_specific_level_and_bad_ones_are_named() {
    let secs = |s: f64| LevelConfig {
        deadline: Some(s),
        ..LevelConfig::default()
    };
    let mut config = SpendConfig {
        global: Some(secs(30.0)),
        tenant_default: Some(secs(10.0)),
        user_default: Some(secs(3.0)),
        ..SpendConfig::default()
    };
    config.tenants.insert("big".into(), secs(20.0));
    config
        .users
        .insert("big/vip".into(), LevelConfig::default());
    let d = |t: Option<&str>, u: Option<&str>| config.deadline_for(&Who::new(t, u));
    assert_eq!(d(None, None), Some(Duration::from_secs(30)));
    assert_eq!(d(Some("acme"), None), Some(Duration::from_secs(10)));
    assert_eq!(d(Some("acme"), Some("u1")), Some(Duration::from_secs(3)));
    assert_eq!(d(Some("big"), None), Some(Duration::from_secs(20)));
    // A user entry without a deadline falls back to its tenant's.
    assert_eq!(d(Some("big"), Some("vip")), Some(Duration::from_secs(20)));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
        let config = SpendConfig {
            tenant_default: Some(secs(bad)),
            ..SpendConfig::default()
        };
        let err = Ledger::system(config).unwrap_err().to_string();
        assert!(err.contains("tenant_default.deadline"), "{bad}: {err}");
    }
}
