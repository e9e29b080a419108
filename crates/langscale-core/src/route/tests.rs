//! Executor tests on a fake clock: which deployment answers, when it waits, when it gives up.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::{Clock, FakeClock};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn named(n: usize) -> Vec<Deployment> {
    (0..n).map(|i| Deployment::new(format!("d{i}"))).collect()
}

fn config() -> RouterConfig {
    RouterConfig {
        seed: Some(1),
        ..Default::default()
    }
}

fn router(deployments: Vec<Deployment>, config: RouterConfig) -> (Arc<Router>, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new());
    let router = Router::new(deployments, config, clock.clone()).unwrap();
    (Arc::new(router), clock)
}

fn ok() -> Outcome {
    ok_in(10 * MS)
}

fn ok_in(latency: Duration) -> Outcome {
    Outcome::Success {
        latency,
        usage: Usage::default(),
    }
}

fn failed(kind: ErrorKind) -> Outcome {
    Outcome::Failure(kind)
}

fn rate_limited(after: Option<Duration>) -> Outcome {
    failed(ErrorKind::RateLimited { retry_after: after })
}

#[track_caller]
fn expect_call(step: Step) -> (AttemptId, usize, AttemptKind) {
    match step {
        Step::Call {
            attempt,
            deployment,
            kind,
            ..
        } => (attempt, deployment, kind),
        other => panic!("expected a call, got {other:?}"),
    }
}

#[track_caller]
fn expect_sleep(step: Step) -> Duration {
    match step {
        Step::Sleep(d) => d,
        other => panic!("expected a sleep, got {other:?}"),
    }
}

#[track_caller]
fn expect_fail(step: Step) -> FailReason {
    match step {
        Step::Fail(reason) => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Run one request to its end, each call answered by `answer(deployment)`, sleeps taken on the
/// fake clock. Returns the final step and the deployments called, in order.
fn drive(
    router: &Arc<Router>,
    clock: &FakeClock,
    info: RequestInfo,
    mut answer: impl FnMut(usize) -> Outcome,
) -> (Step, Vec<usize>) {
    let mut exec = router.start(info);
    let mut calls = Vec::new();
    for _ in 0..10_000 {
        match exec.next() {
            Step::Call {
                attempt,
                deployment,
                ..
            } => {
                calls.push(deployment);
                exec.report(attempt, answer(deployment));
            }
            Step::Sleep(d) => clock.advance(d),
            step @ (Step::Done { .. } | Step::Fail(_)) => return (step, calls),
            Step::Wait(w) => panic!("nothing is in flight, yet asked to wait {w:?}"),
        }
    }
    panic!("the request never finished: {calls:?}");
}

fn answered_by(router: &Arc<Router>, clock: &FakeClock, info: RequestInfo) -> usize {
    match drive(router, clock, info, |_| ok()).0 {
        Step::Done { deployment, .. } => deployment,
        other => panic!("{other:?}"),
    }
}

// ---- strategies ----

#[test]
fn priority_sends_everything_to_the_lowest_priority_number() {
    let mut deps = named(3);
    deps[0].priority = 2;
    deps[1].priority = 0;
    deps[2].priority = 1;
    let (r, clock) = router(deps, config());
    for _ in 0..5 {
        assert_eq!(answered_by(&r, &clock, RequestInfo::default()), 1);
    }
}

#[test]
fn round_robin_takes_turns() {
    let (r, clock) = router(
        named(3),
        RouterConfig {
            strategy: Strategy::RoundRobin,
            ..config()
        },
    );
    let order: Vec<usize> = (0..6)
        .map(|_| answered_by(&r, &clock, RequestInfo::default()))
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn weighted_interleaves_smoothly_by_weight() {
    let mut deps = named(3);
    deps[0].weight = 5.0;
    let (r, clock) = router(
        deps,
        RouterConfig {
            strategy: Strategy::Weighted,
            ..config()
        },
    );
    let order: Vec<usize> = (0..7)
        .map(|_| answered_by(&r, &clock, RequestInfo::default()))
        .collect();
    assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    let mut counts = [0; 3];
    for _ in 0..700 {
        counts[answered_by(&r, &clock, RequestInfo::default())] += 1;
    }
    assert_eq!(counts, [500, 100, 100]);
}

#[test]
fn least_in_flight_picks_the_idlest() {
    let (r, _clock) = router(
        named(3),
        RouterConfig {
            strategy: Strategy::LeastInFlight,
            ..config()
        },
    );
    let mut e1 = r.start(RequestInfo::default());
    let mut e2 = r.start(RequestInfo::default());
    let mut e3 = r.start(RequestInfo::default());
    let (a1, d1, _) = expect_call(e1.next());
    let (_, d2, _) = expect_call(e2.next());
    let (_, d3, _) = expect_call(e3.next());
    assert_eq!([d1, d2, d3], [0, 1, 2]);
    e1.report(a1, ok());
    let mut e4 = r.start(RequestInfo::default());
    assert_eq!(expect_call(e4.next()).1, 0, "0 is the only idle one");
    let mut e5 = r.start(RequestInfo::default());
    assert_eq!(
        expect_call(e5.next()).1,
        0,
        "all busy once: ties go by priority"
    );
}

#[test]
fn lowest_latency_tries_untimed_first_then_the_fastest() {
    let (r, clock) = router(
        named(3),
        RouterConfig {
            strategy: Strategy::LowestLatency,
            ewma_alpha: 0.5,
            ..config()
        },
    );
    let latencies = [300 * MS, 100 * MS, 200 * MS];
    let run = || match drive(&r, &clock, RequestInfo::default(), |d| ok_in(latencies[d])).0 {
        Step::Done { deployment, .. } => deployment,
        other => panic!("{other:?}"),
    };
    assert_eq!([run(), run(), run()], [0, 1, 2], "each untimed one first");
    assert_eq!(run(), 1);
    // d1 slows down: 100 -> 350 -> 475 ms average, so d2 (200 ms) takes over.
    let step = drive(&r, &clock, RequestInfo::default(), |_| ok_in(600 * MS)).0;
    assert!(matches!(step, Step::Done { deployment: 1, .. }));
    assert_eq!(run(), 2);
    let ewma = r.snapshot().deployments[1].ewma_latency.unwrap();
    assert_eq!(ewma, 350 * MS);
}

#[test]
fn lowest_cost_prices_the_request() {
    let price = |name: &str, price_in: f64, price_out: f64| Deployment {
        price_in,
        price_out,
        ..Deployment::new(name)
    };
    let (r, clock) = router(
        vec![
            price("even", 10.0, 10.0),
            price("cheap-in", 1.0, 30.0),
            price("cheap-out", 3.0, 3.0),
        ],
        RouterConfig {
            strategy: Strategy::LowestCost,
            ..config()
        },
    );
    let long_prompt = RequestInfo {
        estimated_input_tokens: 1000,
        expected_output_tokens: Some(10),
        ..Default::default()
    };
    assert_eq!(answered_by(&r, &clock, long_prompt), 1);
    let long_answer = RequestInfo {
        estimated_input_tokens: 100,
        expected_output_tokens: Some(1000),
        ..Default::default()
    };
    assert_eq!(answered_by(&r, &clock, long_answer), 2);
}

#[test]
fn complexity_sends_hard_requests_to_the_large_model() {
    let (r, clock) = router(
        named(2),
        RouterConfig {
            strategy: Strategy::Complexity {
                small: vec![0],
                large: vec![1],
                threshold: 0.3,
            },
            ..config()
        },
    );
    let simple = RequestInfo {
        estimated_input_tokens: 300,
        turns: 1,
        ..Default::default()
    };
    let agentic = RequestInfo {
        estimated_input_tokens: 1500,
        tools: 4,
        turns: 8,
        ..Default::default()
    };
    assert_eq!(answered_by(&r, &clock, simple.clone()), 0);
    assert_eq!(answered_by(&r, &clock, agentic.clone()), 1);
    let hinted_hard = RequestInfo {
        complexity_hint: Some(0.9),
        ..simple.clone()
    };
    assert_eq!(answered_by(&r, &clock, hinted_hard), 1);
    let hinted_easy = RequestInfo {
        complexity_hint: Some(0.0),
        ..agentic
    };
    assert_eq!(answered_by(&r, &clock, hinted_easy), 0);
    // The other group is the fallback.
    let (step, calls) = drive(&r, &clock, simple, |d| {
        if d == 0 {
            failed(ErrorKind::Other { retryable: false })
        } else {
            ok()
        }
    });
    assert!(matches!(step, Step::Done { deployment: 1, .. }));
    assert_eq!(calls, [0, 1]);
}

// ---- error policy ----

#[test]
fn rate_limit_cools_the_deployment_and_fails_over_at_once() {
    let (r, clock) = router(named(2), config());
    let mut e = r.start(RequestInfo::default());
    let (a, d, kind) = expect_call(e.next());
    assert_eq!((d, kind), (0, AttemptKind::First));
    e.report(a, rate_limited(Some(10 * SEC)));
    let (a, d, kind) = expect_call(e.next());
    assert_eq!(
        (d, kind),
        (1, AttemptKind::Fallback),
        "no sleep: d1 is free"
    );
    e.report(a, ok());
    assert!(matches!(e.next(), Step::Done { deployment: 1, .. }));

    clock.advance(5 * SEC);
    assert_eq!(
        r.snapshot().deployments[0].cooldown_remaining,
        Some(5 * SEC)
    );
    assert_eq!(
        answered_by(&r, &clock, RequestInfo::default()),
        1,
        "d0 skipped"
    );
    clock.advance(5 * SEC);
    assert_eq!(
        answered_by(&r, &clock, RequestInfo::default()),
        0,
        "cool-down over"
    );
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].errors.rate_limited, 1);
    assert_eq!(snap.deployments[1].fallbacks, 1);
    assert_eq!(snap.deployments[0].cooldown_remaining, None);
}

#[test]
fn rate_limit_with_no_wait_still_tries_another_deployment_first() {
    let (r, clock) = router(named(2), config());
    let (step, calls) = drive(&r, &clock, RequestInfo::default(), |d| {
        if d == 0 {
            rate_limited(Some(Duration::ZERO))
        } else {
            ok()
        }
    });
    assert!(matches!(step, Step::Done { deployment: 1, .. }));
    assert_eq!(calls, [0, 1]);
}

#[test]
fn rate_limit_with_nowhere_else_to_go_sleeps_until_the_cool_down_ends() {
    let (r, clock) = router(named(1), config());
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    e.report(a, rate_limited(Some(3 * SEC)));
    assert_eq!(expect_sleep(e.next()), 3 * SEC);
    clock.advance(SEC);
    assert_eq!(
        expect_sleep(e.next()),
        2 * SEC,
        "asking early just says sleep on"
    );
    clock.advance(2 * SEC);
    let (a, d, kind) = expect_call(e.next());
    assert_eq!((d, kind), (0, AttemptKind::Retry));
    e.report(a, rate_limited(None));
    assert_eq!(
        expect_sleep(e.next()),
        RouterConfig::default().default_cooldown,
        "no Retry-After: the default cool-down"
    );
}

#[test]
fn rate_limit_past_the_deadline_fails_with_the_wait_named() {
    let (r, _clock) = router(
        named(1),
        RouterConfig {
            deadline: Some(2 * SEC),
            ..config()
        },
    );
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    e.report(a, rate_limited(Some(3 * SEC)));
    let reason = expect_fail(e.next());
    assert_eq!(
        reason,
        FailReason::Unavailable {
            open: 0,
            cooling: 1,
            retry_in: Some(3 * SEC),
            last: Some(AttemptError {
                attempt: AttemptId(0),
                deployment: 0,
                error: ErrorKind::RateLimited {
                    retry_after: Some(3 * SEC)
                },
            }),
        }
    );
    assert!(reason.to_string().contains("1 cooling down"), "{reason}");
    assert_eq!(r.snapshot().failures.unavailable, 1);
}

#[test]
fn server_errors_retry_with_jittered_backoff_then_fail_over() {
    let base = 100 * MS;
    let cap = 300 * MS;
    let mut sleeps_seen = Vec::new();
    for seed in 0..50 {
        let (r, clock) = router(
            named(2),
            RouterConfig {
                retry: RetryPolicy {
                    max_attempts_per_deployment: 4,
                    backoff_base: base,
                    backoff_cap: cap,
                },
                seed: Some(seed),
                ..config()
            },
        );
        let mut e = r.start(RequestInfo::default());
        let mut sleeps = Vec::new();
        for retry in 0..4 {
            let (a, d, kind) = expect_call(e.next());
            assert_eq!(d, 0);
            let expected = if retry == 0 {
                AttemptKind::First
            } else {
                AttemptKind::Retry
            };
            assert_eq!(kind, expected);
            e.report(a, failed(ErrorKind::Server));
            if retry < 3 {
                let s = expect_sleep(e.next());
                clock.advance(s);
                sleeps.push(s);
            }
        }
        let (a, d, kind) = expect_call(e.next());
        assert_eq!(
            (d, kind),
            (1, AttemptKind::Fallback),
            "no sleep before failing over"
        );
        e.report(a, ok());
        assert!(matches!(e.next(), Step::Done { deployment: 1, .. }));
        let ceilings = [base, 2 * base, cap];
        for (s, c) in sleeps.iter().zip(ceilings) {
            assert!(*s <= c, "{s:?} > {c:?}");
        }
        sleeps_seen.extend(sleeps);
        let snap = r.snapshot();
        assert_eq!(snap.deployments[0].retries, 3);
        assert_eq!(snap.deployments[0].errors.server, 4);
        assert_eq!(snap.deployments[1].fallbacks, 1);
    }
    // Full jitter: waits spread over the range rather than sitting at the ceiling.
    assert!(sleeps_seen.iter().any(|s| *s < 20 * MS));
    assert!(sleeps_seen.iter().any(|s| *s > 80 * MS));
}

#[test]
fn auth_and_invalid_request_fail_fast_without_retry() {
    for error in [ErrorKind::Auth, ErrorKind::InvalidRequest] {
        let (r, clock) = router(named(2), config());
        let (step, calls) = drive(&r, &clock, RequestInfo::default(), |_| failed(error));
        let reason = expect_fail(step);
        let expected = AttemptError {
            attempt: AttemptId(0),
            deployment: 0,
            error,
        };
        assert_eq!(reason, FailReason::Fatal(expected));
        assert_eq!(reason.last_error(), Some(expected));
        assert_eq!(calls, [0], "one call, no retry, no fallback");
        let snap = r.snapshot();
        assert_eq!(snap.deployments[0].retries, 0);
        assert_eq!(snap.deployments[1].requests, 0);
        assert_eq!(snap.failures.fatal, 1);
        assert_eq!(clock.now_nanos(), 0, "no sleep either");
    }
}

#[test]
fn other_errors_fail_over_without_retry_unless_retryable() {
    let (r, clock) = router(named(2), config());
    let (_, calls) = drive(&r, &clock, RequestInfo::default(), |d| {
        if d == 0 {
            failed(ErrorKind::Other { retryable: false })
        } else {
            ok()
        }
    });
    assert_eq!(calls, [0, 1]);
    let (_, calls) = drive(&r, &clock, RequestInfo::default(), |d| {
        if d == 0 {
            failed(ErrorKind::Other { retryable: true })
        } else {
            ok()
        }
    });
    assert_eq!(calls, [0, 0, 0, 1]);
}

#[test]
fn context_overflow_moves_to_a_larger_window_only() {
    let windows = [Some(8_000), Some(4_000), Some(8_000), Some(32_000), None];
    let deps = windows
        .iter()
        .enumerate()
        .map(|(i, w)| Deployment {
            context_window: *w,
            ..Deployment::new(format!("d{i}"))
        })
        .collect();
    let (r, clock) = router(deps, config());
    let (step, calls) = drive(&r, &clock, RequestInfo::default(), |d| {
        if d == 3 {
            ok()
        } else {
            failed(ErrorKind::ContextOverflow)
        }
    });
    assert!(matches!(step, Step::Done { deployment: 3, .. }));
    assert_eq!(
        calls,
        [0, 3],
        "4k, the other 8k and the unknown window are skipped"
    );
    let (step, calls) = drive(&r, &clock, RequestInfo::default(), |_| {
        failed(ErrorKind::ContextOverflow)
    });
    assert_eq!(calls, [0, 3]);
    let reason = expect_fail(step);
    assert_eq!(
        reason,
        FailReason::Exhausted {
            last: Some(AttemptError {
                attempt: AttemptId(1),
                deployment: 3,
                error: ErrorKind::ContextOverflow
            })
        }
    );
}

#[test]
fn prompts_too_long_for_a_window_skip_it_up_front() {
    let deps = vec![
        Deployment {
            context_window: Some(4_000),
            ..Deployment::new("small")
        },
        Deployment {
            context_window: Some(16_000),
            ..Deployment::new("large")
        },
    ];
    let (r, clock) = router(deps, config());
    let info = |tokens| RequestInfo {
        estimated_input_tokens: tokens,
        ..Default::default()
    };
    assert_eq!(answered_by(&r, &clock, info(1_000)), 0);
    assert_eq!(answered_by(&r, &clock, info(10_000)), 1);
    assert_eq!(
        answered_by(&r, &clock, info(100_000)),
        0,
        "none fits: try anyway, the estimate may be wrong"
    );
}

// ---- breaker ----

fn breaker_config() -> RouterConfig {
    RouterConfig {
        retry: RetryPolicy {
            max_attempts_per_deployment: 1,
            ..Default::default()
        },
        breaker: BreakerConfig {
            failure_rate: 0.5,
            minimum_requests: 4,
            window: BreakerWindow::Count(10),
            open_for: 10 * SEC,
            half_open_probes: 1,
        },
        ..config()
    }
}

#[test]
fn breaker_opens_skips_then_half_opens_with_one_probe_and_closes() {
    let (r, clock) = router(named(2), breaker_config());
    let d0_fails = |d: usize| {
        if d == 0 {
            failed(ErrorKind::Server)
        } else {
            ok()
        }
    };
    for _ in 0..4 {
        let (_, calls) = drive(&r, &clock, RequestInfo::default(), d0_fails);
        assert_eq!(calls, [0, 1]);
    }
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].breaker, BreakerState::Open);
    assert_eq!(snap.deployments[0].breaker_transitions.opened, 1);
    let (_, calls) = drive(&r, &clock, RequestInfo::default(), d0_fails);
    assert_eq!(calls, [1], "an open deployment is skipped");

    clock.advance(10 * SEC);
    assert_eq!(r.snapshot().deployments[0].breaker, BreakerState::HalfOpen);
    let mut probe = r.start(RequestInfo::default());
    let (pa, pd, _) = expect_call(probe.next());
    assert_eq!(pd, 0, "the probe");
    let mut other = r.start(RequestInfo::default());
    assert_eq!(expect_call(other.next()).1, 1, "only one probe at a time");
    probe.report(pa, ok());
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].breaker, BreakerState::Closed);
    assert_eq!(snap.deployments[0].breaker_transitions.closed, 1);
    assert_eq!(answered_by(&r, &clock, RequestInfo::default()), 0);
}

#[test]
fn all_breakers_open_fails_with_a_clear_error() {
    let (r, clock) = router(named(1), breaker_config());
    for _ in 0..4 {
        drive(&r, &clock, RequestInfo::default(), |_| {
            failed(ErrorKind::Timeout)
        });
    }
    clock.advance(4 * SEC);
    let (step, calls) = drive(&r, &clock, RequestInfo::default(), |_| ok());
    assert!(calls.is_empty());
    let reason = expect_fail(step);
    assert_eq!(
        reason,
        FailReason::Unavailable {
            open: 1,
            cooling: 0,
            retry_in: Some(6 * SEC),
            last: None,
        }
    );
    assert!(
        reason
            .to_string()
            .contains("1 with an open circuit breaker"),
        "{reason}"
    );
    clock.advance(6 * SEC);
    assert_eq!(
        answered_by(&r, &clock, RequestInfo::default()),
        0,
        "probe due"
    );
}

#[test]
fn a_failing_probe_reopens_and_a_dropped_probe_frees_its_slot() {
    let (r, clock) = router(named(1), breaker_config());
    for _ in 0..4 {
        drive(&r, &clock, RequestInfo::default(), |_| {
            failed(ErrorKind::Server)
        });
    }
    clock.advance(10 * SEC);
    let mut probe = r.start(RequestInfo::default());
    expect_call(probe.next());
    drop(probe);
    let (step, _) = drive(&r, &clock, RequestInfo::default(), |_| {
        failed(ErrorKind::Server)
    });
    assert!(matches!(
        expect_fail(step),
        FailReason::Exhausted { last: Some(_) }
    ));
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].breaker, BreakerState::Open);
    assert_eq!(snap.deployments[0].breaker_transitions.opened, 2);
    assert_eq!(snap.failures.abandoned, 1);
}

// ---- retry budget ----

#[test]
fn retry_budget_prevents_a_retry_storm_during_an_outage() {
    let budget = RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 1.0,
        window: Duration::from_secs(10),
    };
    let (r, clock) = router(
        named(1),
        RouterConfig {
            retry: RetryPolicy {
                max_attempts_per_deployment: 3,
                backoff_base: MS,
                backoff_cap: MS,
            },
            budget: budget.clone(),
            breaker: BreakerConfig {
                minimum_requests: u32::MAX,
                ..Default::default()
            },
            ..config()
        },
    );
    for _ in 0..1000 {
        let (step, _) = drive(&r, &clock, RequestInfo::default(), |_| {
            failed(ErrorKind::Server)
        });
        assert!(matches!(expect_fail(step), FailReason::Exhausted { .. }));
    }
    assert!(
        clock.now_nanos() < 5 * 1_000_000_000,
        "all inside one window"
    );
    let snap = r.snapshot();
    let d = &snap.deployments[0];
    let limit = (budget.ratio * 1000.0 + budget.min_per_second * 10.0) as u64;
    assert!(d.retries <= limit, "{} retries > {limit}", d.retries);
    assert!(d.retries >= limit - 1, "the budget is used: {}", d.retries);
    assert_eq!(d.requests, 1000 + d.retries);
    assert!(snap.retries_denied > 0);
    assert_eq!(snap.failures.exhausted, 1000);
}

#[test]
fn a_denied_retry_fails_over_instead() {
    let (r, clock) = router(
        named(2),
        RouterConfig {
            budget: RetryBudgetConfig {
                ratio: 0.0,
                min_per_second: 0.0,
                ..Default::default()
            },
            ..config()
        },
    );
    let (step, calls) = drive(&r, &clock, RequestInfo::default(), |d| {
        if d == 0 {
            failed(ErrorKind::Server)
        } else {
            ok()
        }
    });
    assert!(matches!(step, Step::Done { deployment: 1, .. }));
    assert_eq!(calls, [0, 1], "no retry on d0, straight to d1");
    assert_eq!(r.snapshot().retries_denied, 1);
}

// ---- time limits ----

#[test]
fn call_timeout_is_the_attempt_timeout_or_the_time_left() {
    let (r, clock) = router(
        named(2),
        RouterConfig {
            attempt_timeout: Some(3 * SEC),
            deadline: Some(5 * SEC),
            ..config()
        },
    );
    let mut e = r.start(RequestInfo::default());
    let Step::Call {
        attempt, timeout, ..
    } = e.next()
    else {
        panic!()
    };
    assert_eq!(timeout, Some(3 * SEC));
    clock.advance(3 * SEC);
    e.report(attempt, failed(ErrorKind::Other { retryable: false }));
    let Step::Call { timeout, .. } = e.next() else {
        panic!()
    };
    assert_eq!(timeout, Some(2 * SEC), "only 2 s of the deadline left");
}

#[test]
fn deadline_is_never_overslept_and_ends_the_request() {
    for seed in 0..20 {
        let (r, clock) = router(
            named(2),
            RouterConfig {
                retry: RetryPolicy {
                    max_attempts_per_deployment: 100,
                    backoff_base: 200 * MS,
                    backoff_cap: SEC,
                },
                deadline: Some(5 * SEC),
                seed: Some(seed),
                ..config()
            },
        );
        let end = 5_000_000_000u64;
        let mut e = r.start(RequestInfo::default());
        let reason = loop {
            match e.next() {
                Step::Call {
                    attempt, timeout, ..
                } => {
                    let left = Duration::from_nanos(end - clock.now_nanos());
                    assert_eq!(timeout, Some(left));
                    clock.advance((300 * MS).min(left));
                    e.report(attempt, failed(ErrorKind::Timeout));
                }
                Step::Sleep(d) => {
                    assert!(clock.now_nanos() + (d.as_nanos() as u64) < end);
                    clock.advance(d);
                }
                Step::Fail(reason) => break reason,
                other => panic!("{other:?}"),
            }
        };
        assert!(clock.now_nanos() <= end);
        assert!(
            matches!(
                reason,
                FailReason::DeadlineExceeded { .. } | FailReason::Exhausted { .. }
            ),
            "{reason:?}"
        );
        assert!(reason.last_error().is_some());
    }
}

#[test]
fn deadline_passing_with_a_call_in_flight_fails_and_releases_it() {
    let (r, clock) = router(
        named(1),
        RouterConfig {
            deadline: Some(SEC),
            ..config()
        },
    );
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    assert_eq!(e.next(), Step::Wait(Some(SEC)));
    clock.advance(SEC);
    let reason = expect_fail(e.next());
    assert_eq!(
        reason,
        FailReason::DeadlineExceeded {
            deadline: SEC,
            last: None
        }
    );
    assert!(reason.to_string().contains("1.000 s"), "{reason}");
    e.report(a, ok());
    assert!(
        matches!(e.next(), Step::Fail(_)),
        "a late answer changes nothing"
    );
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].in_flight, 0);
    assert_eq!(snap.deployments[0].cancelled, 1);
    assert_eq!(snap.deployments[0].successes, 0);
    assert_eq!(snap.failures.deadline, 1);
}

// ---- hedging ----

fn hedged() -> RouterConfig {
    RouterConfig {
        hedge_delay: Some(100 * MS),
        ..config()
    }
}

#[test]
fn hedge_starts_after_the_delay_and_the_first_answer_wins() {
    let (r, clock) = router(named(2), hedged());
    let mut e = r.start(RequestInfo::default());
    let (first, d, _) = expect_call(e.next());
    assert_eq!(d, 0);
    assert_eq!(e.next(), Step::Wait(Some(100 * MS)));
    clock.advance(60 * MS);
    assert_eq!(e.next(), Step::Wait(Some(40 * MS)));
    clock.advance(40 * MS);
    let (second, d, kind) = expect_call(e.next());
    assert_eq!((d, kind), (1, AttemptKind::Hedge));
    assert_eq!(e.in_flight(), 2);
    assert_eq!(e.next(), Step::Wait(None), "one hedge per request");
    e.report(second, ok());
    assert_eq!(
        e.next(),
        Step::Done {
            attempt: second,
            deployment: 1
        }
    );
    e.report(first, ok());
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].in_flight, 0);
    assert_eq!(snap.deployments[0].cancelled, 1);
    assert_eq!(
        snap.deployments[0].successes, 0,
        "the loser's late answer is ignored"
    );
    assert_eq!(snap.deployments[1].hedges, 1);
    assert_eq!(snap.successes, 1);
}

#[test]
fn no_hedge_when_the_first_answers_in_time() {
    let (r, clock) = router(named(2), hedged());
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    clock.advance(99 * MS);
    e.report(a, ok());
    assert!(matches!(e.next(), Step::Done { deployment: 0, .. }));
    assert_eq!(r.snapshot().deployments[1].requests, 0);
}

#[test]
fn a_failure_while_the_hedge_runs_waits_for_the_hedge() {
    let (r, clock) = router(named(3), hedged());
    let mut e = r.start(RequestInfo::default());
    let (first, _, _) = expect_call(e.next());
    clock.advance(100 * MS);
    let (second, d, _) = expect_call(e.next());
    assert_eq!(d, 1);
    e.report(first, failed(ErrorKind::Server));
    assert_eq!(
        e.next(),
        Step::Wait(None),
        "no new call while the hedge runs"
    );
    e.report(second, ok());
    assert!(matches!(e.next(), Step::Done { deployment: 1, .. }));
    assert_eq!(r.snapshot().deployments[2].requests, 0);
}

#[test]
fn hedges_spend_the_retry_budget() {
    let (r, clock) = router(
        named(2),
        RouterConfig {
            budget: RetryBudgetConfig {
                ratio: 0.0,
                min_per_second: 0.0,
                ..Default::default()
            },
            ..hedged()
        },
    );
    let mut e = r.start(RequestInfo::default());
    expect_call(e.next());
    clock.advance(100 * MS);
    assert_eq!(e.next(), Step::Wait(None), "budget refuses the hedge");
    assert_eq!(r.snapshot().retries_denied, 1);
}

// ---- observability ----

#[test]
fn counters_and_snapshot_add_up() {
    let deps = vec![
        Deployment {
            price_in: 1.0,
            price_out: 2.0,
            ..Deployment::new("main")
        },
        Deployment::new("backup"),
    ];
    let (r, clock) = router(deps, config());
    for ms in [100, 200, 300] {
        let (step, _) = drive(&r, &clock, RequestInfo::default(), |_| Outcome::Success {
            latency: ms * MS,
            usage: Usage::new(1000, 500),
        });
        assert!(matches!(step, Step::Done { .. }));
    }
    drive(&r, &clock, RequestInfo::default(), |d| {
        if d == 0 {
            failed(ErrorKind::Connection)
        } else {
            ok()
        }
    });
    let snap = r.snapshot();
    assert_eq!(snap.strategy, "priority");
    assert_eq!(snap.requests, 4);
    assert_eq!(snap.successes, 4);
    assert_eq!(snap.active, 0);
    let main = &snap.deployments[0];
    assert_eq!(main.name, "main");
    assert_eq!(main.requests, 6, "3 answered, 1 failed 3 times");
    assert_eq!(main.successes, 3);
    assert_eq!(main.errors.connection, 3);
    assert_eq!(main.errors.total(), 3);
    assert_eq!(main.retries, 2);
    assert_eq!(main.input_tokens, 3000);
    assert_eq!(main.output_tokens, 1500);
    assert!((main.cost - 6.0).abs() < 1e-9, "{}", main.cost);
    assert_eq!(main.latency.count, 3);
    assert_eq!(main.latency.max, 300 * MS);
    assert_eq!(main.latency.mean, 200 * MS);
    let p50 = main.latency.p50.as_secs_f64();
    assert!((p50 - 0.2).abs() < 0.2 * 0.07, "{p50}");
    assert_eq!(main.breaker, BreakerState::Closed);
    assert_eq!(main.in_flight, 0);
    let backup = &snap.deployments[1];
    assert_eq!(
        (backup.requests, backup.fallbacks, backup.successes),
        (1, 1, 1)
    );
}

#[test]
fn dropping_an_execution_releases_its_calls() {
    let (r, _clock) = router(named(2), hedged());
    let mut e = r.start(RequestInfo::default());
    expect_call(e.next());
    assert_eq!(r.snapshot().deployments[0].in_flight, 1);
    assert_eq!(r.snapshot().active, 1);
    drop(e);
    let snap = r.snapshot();
    assert_eq!(snap.deployments[0].in_flight, 0);
    assert_eq!(snap.deployments[0].cancelled, 1);
    assert_eq!(snap.active, 0);
    assert_eq!(snap.failures.abandoned, 1);
}

#[test]
fn reports_for_unknown_or_repeated_attempts_are_ignored() {
    let (r, _clock) = router(named(1), config());
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    e.report(AttemptId(7), ok());
    e.report(AttemptId(u32::MAX), failed(ErrorKind::Auth));
    assert_eq!(e.in_flight(), 1);
    e.report(a, failed(ErrorKind::Server));
    e.report(a, ok());
    assert!(matches!(e.next(), Step::Sleep(_)));
    assert_eq!(r.snapshot().deployments[0].in_flight, 0);
    assert_eq!(e.deployment_of(a), Some(0));
    assert_eq!(e.deployment_of(AttemptId(9)), None);
}

// ---- config ----

#[test]
fn router_is_shared_and_executions_move_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Router>();
    shared::<Execution>();
    shared::<RouterSnapshot>();
}

#[test]
fn bad_configs_are_rejected_naming_the_value() {
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(FakeClock::new());
    let err = |deps: Vec<Deployment>, config: RouterConfig| {
        Router::new(deps, config, clock.clone())
            .unwrap_err()
            .to_string()
    };
    assert!(err(vec![], config()).contains("at least one deployment"));
    let mut deps = named(2);
    deps[1].name = "d0".into();
    assert!(err(deps, config()).contains("\"d0\" is used twice"));
    let mut deps = named(1);
    deps[0].weight = -1.0;
    assert!(err(deps, config()).contains("weight -1"));
    let mut deps = named(1);
    deps[0].price_in = f64::NAN;
    assert!(err(deps, config()).contains("price_in NaN"));
    let complexity = RouterConfig {
        strategy: Strategy::Complexity {
            small: vec![0],
            large: vec![5],
            threshold: 0.5,
        },
        ..config()
    };
    assert!(err(named(2), complexity).contains("index 5 is out of range"));
    let alpha = RouterConfig {
        ewma_alpha: 0.0,
        ..config()
    };
    assert!(err(named(1), alpha).contains("ewma_alpha"));
    let timeout = RouterConfig {
        attempt_timeout: Some(Duration::ZERO),
        ..config()
    };
    assert!(err(named(1), timeout).contains("attempt_timeout"));
}

#[test]
fn http_statuses_classify() {
    let after = Some(SEC);
    assert_eq!(
        ErrorKind::from_http_status(429, after),
        ErrorKind::RateLimited { retry_after: after }
    );
    assert_eq!(ErrorKind::from_http_status(503, None), ErrorKind::Server);
    assert_eq!(ErrorKind::from_http_status(401, None), ErrorKind::Auth);
    assert_eq!(
        ErrorKind::from_http_status(400, None),
        ErrorKind::InvalidRequest
    );
    assert_eq!(ErrorKind::from_http_status(408, None), ErrorKind::Timeout);
    assert_eq!(
        ErrorKind::from_http_status(302, None),
        ErrorKind::Other { retryable: false }
    );
}

// ---- threads ----

#[test]
fn many_threads_share_one_router_and_in_flight_returns_to_zero() {
    let (r, clock) = router(
        named(3),
        RouterConfig {
            strategy: Strategy::LeastInFlight,
            hedge_delay: Some(5 * MS),
            retry: RetryPolicy {
                max_attempts_per_deployment: 2,
                backoff_base: MS,
                backoff_cap: 2 * MS,
            },
            breaker: BreakerConfig {
                open_for: 50 * MS,
                ..Default::default()
            },
            ..config()
        },
    );
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 2000;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let r = Arc::clone(&r);
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut roll = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % 100
                };
                let mut finished = 0u64;
                for _ in 0..PER_THREAD {
                    let mut e = r.start(RequestInfo::default());
                    let mut calls: Vec<AttemptId> = Vec::new();
                    let abandon = roll() < 3;
                    for _ in 0..1000 {
                        match e.next() {
                            Step::Call { attempt, .. } => {
                                if abandon {
                                    break;
                                }
                                calls.push(attempt);
                            }
                            Step::Wait(limit) => {
                                // Either the hedge comes due or a call answers.
                                if limit.is_some() && roll() < 30 {
                                    clock.advance(limit.unwrap_or_default());
                                } else if let Some(a) = calls.pop() {
                                    let outcome = match roll() {
                                        0..=69 => ok(),
                                        70..=79 => failed(ErrorKind::Server),
                                        80..=89 => rate_limited(Some(MS)),
                                        90..=97 => failed(ErrorKind::Timeout),
                                        _ => failed(ErrorKind::Auth),
                                    };
                                    e.report(a, outcome);
                                } else {
                                    clock.advance(MS);
                                }
                            }
                            Step::Sleep(d) => clock.advance(d),
                            Step::Done { .. } | Step::Fail(_) => {
                                finished += 1;
                                break;
                            }
                        }
                    }
                }
                finished
            })
        })
        .collect();
    let finished: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let snap = r.snapshot();
    assert_eq!(snap.requests, THREADS * PER_THREAD);
    assert_eq!(snap.active, 0);
    let f = snap.failures;
    let ended = snap.successes + f.fatal + f.exhausted + f.unavailable + f.deadline;
    assert_eq!(ended, finished);
    assert_eq!(ended + f.abandoned, THREADS * PER_THREAD);
    assert!(snap.successes > THREADS * PER_THREAD / 2, "{snap:?}");
    for d in &snap.deployments {
        assert_eq!(d.in_flight, 0, "{}", d.name);
        let ended = d.successes + d.errors.total() + d.cancelled;
        assert_eq!(ended, d.requests, "{d:?}");
    }
    let answered: u64 = snap.deployments.iter().map(|d| d.successes).sum();
    assert_eq!(answered, snap.successes);
}

// --- cost-aware fail-over --------------------------------------------------------------------

/// Deployments `d0`, `d1`, ... costing `prices[i]` per 1k tokens in and out (shared with
/// the run's own tests).
pub(super) fn priced(prices: &[f64]) -> Vec<Deployment> {
    prices
        .iter()
        .enumerate()
        .map(|(i, &p)| Deployment {
            price_in: p,
            price_out: p,
            ..Deployment::new(format!("d{i}"))
        })
        .collect()
}

fn cost_aware(deadline: Duration) -> RouterConfig {
    RouterConfig {
        failover_price_ratio: Some(2.0),
        deadline: Some(deadline),
        ..config()
    }
}

#[test]
fn a_request_with_time_waits_for_the_cheap_deployment_instead_of_paying_more() {
    let (r, clock) = router(priced(&[1.0, 16.0]), cost_aware(10 * SEC));
    let mut e = r.start(RequestInfo::default());
    let (a, d, _) = expect_call(e.next());
    assert_eq!(d, 0);
    e.report(a, rate_limited(Some(2 * SEC)));
    // Back in 2 s, well inside the 10 s budget, and 16x cheaper: wait for it.
    assert_eq!(e.next(), Step::Sleep(2 * SEC));
    clock.advance(2 * SEC);
    let (_, d, _) = expect_call(e.next());
    assert_eq!(d, 0);
}

#[test]
fn a_request_with_time_waits_for_a_half_open_cheap_deployments_probe_instead_of_paying_more() {
    let config = RouterConfig {
        failover_price_ratio: Some(2.0),
        deadline: Some(30 * SEC),
        ..breaker_config()
    };
    let (r, clock) = router(priced(&[1.0, 16.0]), config);
    let d0_fails = |d: usize| {
        if d == 0 {
            failed(ErrorKind::Server)
        } else {
            ok()
        }
    };
    for _ in 0..4 {
        drive(&r, &clock, RequestInfo::default(), d0_fails);
    }
    assert_eq!(r.snapshot().deployments[0].breaker, BreakerState::Open);
    clock.advance(10 * SEC);
    let mut probe = r.start(RequestInfo::default());
    let (pa, pd, _) = expect_call(probe.next());
    assert_eq!(pd, 0, "the probe");
    // The probe is out: the next request waits for its answer rather than pay 16x.
    let mut other = r.start(RequestInfo::default());
    let Step::Sleep(poll) = other.next() else {
        panic!("expected a sleep while the probe is out");
    };
    assert!(poll <= Duration::from_millis(500), "{poll:?}");
    probe.report(pa, ok());
    clock.advance(poll);
    assert_eq!(
        expect_call(other.next()).1,
        0,
        "the breaker closed: the cheap one"
    );
}

#[test]
fn without_the_time_or_with_a_small_price_gap_it_fails_over_at_once() {
    // The cool-down outlasts the deadline.
    let (r, _) = router(priced(&[1.0, 16.0]), cost_aware(SEC));
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    e.report(a, rate_limited(Some(2 * SEC)));
    assert_eq!(expect_call(e.next()).1, 1);
    // The fallback costs less than twice as much.
    let (r, _) = router(priced(&[1.0, 1.5]), cost_aware(10 * SEC));
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    e.report(a, rate_limited(Some(2 * SEC)));
    assert_eq!(expect_call(e.next()).1, 1);
    // Price-blind (no ratio set): today's behaviour.
    let config = RouterConfig {
        deadline: Some(10 * SEC),
        ..config()
    };
    let (r, _) = router(priced(&[1.0, 16.0]), config);
    let mut e = r.start(RequestInfo::default());
    let (a, _, _) = expect_call(e.next());
    e.report(a, rate_limited(Some(2 * SEC)));
    assert_eq!(expect_call(e.next()).1, 1);
}

#[test]
fn a_bad_price_ratio_is_refused() {
    for bad in [0.5, f64::NAN, f64::INFINITY] {
        let config = RouterConfig {
            failover_price_ratio: Some(bad),
            ..config()
        };
        assert!(Router::new(named(2), config, Arc::new(FakeClock::new())).is_err());
    }
}
