//! The Redis scripts against a real `redis-server` (skipped when it is not installed, except
//! in CI): the 200-callers race, idempotent settlement, expiry of unsettled reservations.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::clock::Clock;
use crate::store::tests::{config, server};
use crate::store::Store;

fn meter(name: &str, limit: f64) -> SharedMeter {
    SharedMeter {
        name: name.into(),
        span: Some(Span {
            window: Window::Day,
            calendar: false,
        }),
        limit,
    }
}

fn spend(port: u16, prefix: &str) -> SharedSpend {
    SharedSpend::new(Store::new(config(port, prefix)).unwrap())
}

fn takes(meters: &[SharedMeter], amounts: &[f64]) -> Vec<Take> {
    meters
        .iter()
        .zip(amounts)
        .map(|(m, a)| Take {
            meter: m.clone(),
            amount: *a,
            check: true,
        })
        .collect()
}

impl SharedSpend {
    /// Hold `amounts` on `meters` (no levels counted): whether it was held, and the refusal.
    async fn hold(
        &self,
        id: &str,
        meters: &[SharedMeter],
        amounts: &[f64],
        ttl_us: u64,
    ) -> Result<Result<(), SharedRefusal>, StoreError> {
        let r = self
            .reserve(id, &takes(meters, amounts), &[], false, ttl_us, 0)
            .await?;
        if r.held {
            Ok(Ok(()))
        } else {
            Ok(Err(r.over[0]))
        }
    }

    async fn book(
        &self,
        id: &str,
        meters: &[SharedMeter],
        amounts: &[f64],
    ) -> Result<bool, StoreError> {
        self.settle(id, meters, amounts, &[], None, 0).await
    }

    async fn used(&self, meter: &SharedMeter) -> Result<f64, StoreError> {
        Ok(self.read(&[(meter.clone(), None)], &[], 0).await?.used[0])
    }
}

#[test]
fn two_hundred_concurrent_reservations_admit_at_most_ten() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "race"));
    let meters = Arc::new(vec![meter("g/usd", 1.0), meter("t:acme/usd", 0.5)]);
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let (spend, meters) = (Arc::clone(&spend), Arc::clone(&meters));
            crate::store::runtime().spawn(async move {
                spend
                    .hold(&format!("r{i}"), &meters, &[0.05, 0.05], 60_000_000)
                    .await
            })
        })
        .collect();
    let admitted = crate::store::runtime().block_on(async {
        let mut n = 0;
        for h in handles {
            if h.await.unwrap().unwrap().is_ok() {
                n += 1;
            }
        }
        n
    });
    assert_eq!(admitted, 10);
    let used = spend
        .store
        .block_on({
            let (s, m) = (Arc::clone(&spend), meters[1].clone());
            async move { s.used(&m).await }
        })
        .unwrap();
    assert!((used - 0.5).abs() < 1e-9, "held {used}");
}

#[test]
fn a_retried_settle_counts_once_and_frees_the_hold() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "settle"));
    let m = vec![meter("t:acme/usd", 1.0)];
    let s = Arc::clone(&spend);
    let (first, second, third, used, refused) = spend
        .store
        .block_on(async move {
            assert!(s.hold("a", &m, &[0.9], 60_000_000).await?.is_ok());
            let first = s.book("a", &m, &[0.3]).await?;
            let second = s.book("a", &m, &[0.3]).await?;
            let third = s.release("a").await?;
            let used = s.used(&m[0]).await?;
            // 0.3 booked: 0.8 more does not fit, 0.7 does.
            let refused = s.hold("b", &m, &[0.8], 60_000_000).await?;
            assert!(s.hold("c", &m, &[0.7], 60_000_000).await?.is_ok());
            Ok((first, second, third, used, refused))
        })
        .unwrap();
    assert!(first);
    assert!(!second && !third);
    assert!((used - 0.3).abs() < 1e-9, "used {used}");
    let refused = refused.unwrap_err();
    assert_eq!(refused.meter, 0);
    assert!((refused.used - 0.3).abs() < 1e-9);
}

#[test]
fn an_unsettled_reservation_expires_on_the_server_clock() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "expiry"));
    let m = vec![meter("t:acme/tokens", 100.0)];
    let s = Arc::clone(&spend);
    let (full, expired, after, used) = spend
        .store
        .block_on(async move {
            assert!(s.hold("crashed", &m, &[100.0], 200_000).await?.is_ok());
            let full = s.hold("x", &m, &[1.0], 200_000).await?;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            // A read drops it too (a report never shows an expired hold).
            let expired = s.read(&[(m[0].clone(), None)], &[], 0).await?;
            let after = s.hold("y", &m, &[100.0], 60_000_000).await?;
            let used = s.used(&m[0]).await?;
            Ok((full, expired, after, used))
        })
        .unwrap();
    assert!(full.is_err(), "a held budget admitted more");
    assert_eq!((expired.in_flight, expired.used[0]), (0, 0.0));
    assert!(after.is_ok(), "an expired reservation still held budget");
    assert!((used - 100.0).abs() < 1e-9);
}

#[test]
fn spend_is_shared_between_ledgers_on_one_server() {
    let Some(server) = server() else { return };
    let a = Arc::new(spend(server.port, "two"));
    let b = spend(server.port, "two");
    let m = vec![meter("g/usd", 1.0)];
    let (a2, m2) = (Arc::clone(&a), m.clone());
    a.store
        .block_on(async move {
            assert!(a2.hold("p1", &m2, &[0.6], 60_000_000).await?.is_ok());
            a2.book("p1", &m2, &[0.55]).await?;
            Ok(())
        })
        .unwrap();
    let used = b
        .store
        .block_on({
            let b = b.clone();
            async move {
                let r = b.hold("p2", &m, &[0.5], 60_000_000).await?;
                assert!(r.is_err(), "0.55 + 0.5 passed a 1.0 budget");
                b.used(&m[0]).await
            }
        })
        .unwrap();
    assert!((used - 0.55).abs() < 1e-9, "used {used}");
}

#[test]
fn a_calendar_month_counts_from_its_first_and_says_when_it_ends() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "month"));
    let month = Span {
        window: Window::Month,
        calendar: true,
    };
    let m = SharedMeter {
        name: "t:acme/usd:month:c".into(),
        span: Some(month),
        limit: 1.0,
    };
    let now = crate::spend::UnixClock.now_nanos() / 1000;
    let s = Arc::clone(&spend);
    let (last_month, this_month, refused) = spend
        .store
        .block_on(async move {
            let t = |a: f64| takes(std::slice::from_ref(&m), &[a]);
            // Booked last month: does not count now.
            let before = month.expires(month.slot(now)) - 40 * 86_400_000_000;
            s.reserve("old", &t(0.9), &[], false, 60_000_000, before)
                .await?;
            s.settle("old", std::slice::from_ref(&m), &[0.9], &[], None, before)
                .await?;
            let last_month = s.read(&[(m.clone(), None)], &[], now).await?.used[0];
            s.reserve("new", &t(0.6), &[], false, 60_000_000, now)
                .await?;
            s.settle("new", std::slice::from_ref(&m), &[0.6], &[], None, now)
                .await?;
            let this_month = s.read(&[(m.clone(), None)], &[], now).await?.used[0];
            let refused = s
                .reserve("over", &t(0.5), &[], false, 60_000_000, now)
                .await?;
            Ok((last_month, this_month, refused))
        })
        .unwrap();
    assert!(
        last_month.abs() < 1e-9,
        "last month's spend counted: {last_month}"
    );
    assert!((this_month - 0.6).abs() < 1e-9);
    assert!(!refused.held);
    let resets = refused.over[0].resets_in_us.unwrap();
    let expected = month.expires(month.slot(now)) - now;
    assert!(
        resets.abs_diff(expected) < 5_000_000,
        "{resets} vs {expected}"
    );
}

fn take(m: &SharedMeter, lease: &str, book: f64, cover: f64, want: f64) -> LeaseTake {
    LeaseTake {
        meter: m.clone(),
        lease: lease.into(),
        book,
        cover,
        want,
        unit: 1.0,
        shrink: false,
    }
}

#[test]
fn a_lease_grows_by_whole_calls_within_its_share_and_not_at_all_near_the_limit() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "lease-size"));
    let m = meter("t:acme/usd", 100.0);
    let s = Arc::clone(&spend);
    let (out, used, read) = spend
        .store
        .block_on(async move {
            let ttl = 60_000_000;
            let mut out = Vec::new();
            // Wants 50 beyond the call: 10% of the 99 left beyond it, in whole calls: 9.
            let a = [take(&m, "A", 0.0, 1.0, 51.0)];
            out.push(s.lease("op1", &a, &[], 0.1, ttl, 0).await?);
            // Another lease sees A's 10 as used: 10% of 89 is 8.9, so 8.
            let b = [take(&m, "B", 0.0, 1.0, 51.0)];
            out.push(s.lease("op2", &b, &[], 0.1, ttl, 0).await?);
            // A books 10 spent and asks 75 for one big call: 19 used beside it, 6 left after
            // it, 10% of that is under a call: nothing extra.
            let c = [take(&m, "A", 10.0, 75.0, 80.0)];
            out.push(s.lease("op3", &c, &[], 0.1, ttl, 0).await?);
            let used = s.used(&m).await?;
            // A report's read: the meter's total and, in the same script, what the asking
            // process's lease holds of it (A, B, and a lease that holds nothing).
            let asked: Vec<_> = ["A", "B", "Z"]
                .iter()
                .map(|l| (m.clone(), Some((*l).to_owned())))
                .collect();
            let read = s.read(&asked, &[], 0).await?;
            // Near the limit: one call each, nothing beyond.
            let d = [take(&m, "C", 0.0, 1.0, 40.0)];
            out.push(s.lease("op4", &d, &[], 0.1, ttl, 0).await?);
            let e = [take(&m, "D", 0.0, 1.0, 40.0)];
            out.push(s.lease("op5", &e, &[], 0.1, ttl, 0).await?);
            Ok((out, used, read))
        })
        .unwrap();
    assert_eq!(read.used, [94.0; 3]);
    assert_eq!(read.leased, [75.0, 9.0, 0.0]);
    assert_eq!(out[0].outcome, LeaseOutcome::Granted);
    assert!((out[0].holds[0] - 10.0).abs() < 1e-9, "{:?}", out[0]);
    assert!((out[1].holds[0] - 9.0).abs() < 1e-9, "{:?}", out[1]);
    assert!((out[1].others[0] - 10.0).abs() < 1e-9, "{:?}", out[1]);
    assert_eq!(out[2].outcome, LeaseOutcome::Granted);
    assert!((out[2].holds[0] - 75.0).abs() < 1e-9, "{:?}", out[2]);
    assert!((out[2].others[0] - 19.0).abs() < 1e-9, "{:?}", out[2]);
    assert!((used - 94.0).abs() < 1e-9, "used {used}");
    for o in &out[3..] {
        assert_eq!(o.outcome, LeaseOutcome::Granted);
        assert!((o.holds[0] - 1.0).abs() < 1e-9, "{o:?}");
    }
}

#[test]
fn a_lease_never_takes_more_than_the_room_and_a_refusal_still_books() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "lease-refuse"));
    let m = meter("t:acme/usd", 3.0);
    let s = Arc::clone(&spend);
    let (granted, refused, used) = spend
        .store
        .block_on(async move {
            let g = s
                .lease(
                    "op1",
                    &[take(&m, "A", 0.0, 3.0, 9.0)],
                    &[],
                    1.0,
                    60_000_000,
                    0,
                )
                .await?;
            // B asks for one call: nothing left. A books 2.5 and keeps 0.5 for a call in flight.
            let r = s
                .lease(
                    "op2",
                    &[take(&m, "B", 0.0, 1.0, 2.0)],
                    &[],
                    1.0,
                    60_000_000,
                    0,
                )
                .await?;
            let _ = s
                .lease(
                    "op3",
                    &[LeaseTake {
                        shrink: true,
                        ..take(&m, "A", 2.5, 0.5, 0.5)
                    }],
                    &[],
                    1.0,
                    60_000_000,
                    0,
                )
                .await?;
            let used = s.used(&m).await?;
            Ok((g, r, used))
        })
        .unwrap();
    assert!((granted.holds[0] - 3.0).abs() < 1e-9);
    assert_eq!(refused.outcome, LeaseOutcome::Refused);
    assert_eq!(refused.over[0].meter, 0);
    assert!((refused.over[0].used - 3.0).abs() < 1e-9);
    assert_eq!(refused.holds[0], 0.0);
    assert!(
        (used - 3.0).abs() < 1e-9,
        "2.5 booked + 0.5 held, got {used}"
    );
}

#[test]
fn a_retried_lease_operation_books_once_and_an_unrenewed_lease_expires() {
    let Some(server) = server() else { return };
    let spend = Arc::new(spend(server.port, "lease-retry"));
    let m = meter("t:acme/tokens", 100.0);
    let s = Arc::clone(&spend);
    let (first, again, held, after) = spend
        .store
        .block_on(async move {
            s.lease(
                "op0",
                &[take(&m, "A", 0.0, 10.0, 10.0)],
                &[],
                0.1,
                200_000,
                0,
            )
            .await?;
            let levels = [LeaseLevel {
                name: "t:acme".into(),
                charge: Charge {
                    requests: 3,
                    tokens: 30,
                    usd: 0.3,
                },
                call: false,
            }];
            let op = [take(&m, "A", 4.0, 0.0, 0.0)];
            let first = s.lease("op1", &op, &levels, 0.1, 200_000, 0).await?;
            let again = s.lease("op1", &op, &levels, 0.1, 200_000, 0).await?;
            let held = s.used(&m).await?;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let after = s.read(&[(m.clone(), None)], &["t:acme".into()], 0).await?;
            Ok((first, again, held, after))
        })
        .unwrap();
    assert_eq!(first.outcome, LeaseOutcome::Granted);
    assert!((first.holds[0] - 6.0).abs() < 1e-9, "10 held less 4 booked");
    assert_eq!(again.outcome, LeaseOutcome::Duplicate);
    assert!((again.holds[0] - 6.0).abs() < 1e-9);
    assert!(
        (held - 10.0).abs() < 1e-9,
        "4 booked once + 6 held, got {held}"
    );
    // The hold expired unrenewed; the booking and the counters stay, once.
    assert!((after.used[0] - 4.0).abs() < 1e-9, "{after:?}");
    assert_eq!(after.counters[0][0], 3.0);
    assert_eq!(after.counters[0][4], 30.0);
}
