//! Per-tenant request statistics with bounded cardinality: the top N tenants by requests get
//! their own row, everything else is counted under "other". Untracked tenants are counted in a
//! bounded candidate table (space-saving: when full, the least-counted candidate is dropped and
//! a newcomer inherits its count as possible error); a candidate whose guaranteed count (count
//! minus that error) passes the smallest tracked tenant's rank takes its row, and the displaced
//! tenant's figures fold into "other". A row keeps the count it came in with as its rank, so a
//! newly promoted tenant is not displaced again by the next one-off name. Ties are broken by
//! name, so the same requests give the same rows in any process. Memory is O(N) however many
//! distinct names arrive. A tenant literally named "other" is counted in the "other" row (its
//! own would carry the same label). Recording takes one short lock per request that has a
//! tenant; requests without one skip it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::stats::{LatencyHistogram, LatencySummary};

/// Default number of tenants with their own row.
pub const DEFAULT_TOP_TENANTS: usize = 20;
/// The most rows a router may be asked for (each is a set of labels in Prometheus).
pub const MAX_TOP_TENANTS: usize = 1000;
/// Candidates kept per tracked row.
const CANDIDATES_PER_ROW: usize = 4;
/// The name the row of every other tenant is reported under.
pub const OTHER_TENANT: &str = "other";

/// How one request ended, for its tenant's row.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TenantOutcome {
    pub success: bool,
    /// From the request's start to its answer (successes only).
    pub latency: Duration,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// From the deployment's prices.
    pub spend: f64,
    /// Provider rate-limit answers (429) among the request's attempts.
    pub throttled: u64,
    /// Attempts that waited for a limiter permit or a budget reservation.
    pub queued: u64,
    /// Attempts refused by a local limiter or budget.
    pub rejected: u64,
}

#[derive(Debug)]
struct Row {
    /// Requests counted before this tenant got its row (they are in "other"): its rank only.
    prior: u64,
    requests: u64,
    successes: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    spend: f64,
    throttled: u64,
    queued: u64,
    rejected: u64,
    latency: LatencyHistogram,
}

impl Row {
    fn new(prior: u64) -> Self {
        Self {
            prior,
            requests: 0,
            successes: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            spend: 0.0,
            throttled: 0,
            queued: 0,
            rejected: 0,
            latency: LatencyHistogram::new(),
        }
    }

    fn rank(&self) -> u64 {
        self.prior.saturating_add(self.requests)
    }

    fn record(&mut self, o: &TenantOutcome) {
        self.requests = self.requests.saturating_add(1);
        if o.success {
            self.successes = self.successes.saturating_add(1);
            self.latency.record(o.latency);
        } else {
            self.errors = self.errors.saturating_add(1);
        }
        self.add_usage(o.input_tokens, o.output_tokens, o.spend);
        self.throttled = self.throttled.saturating_add(o.throttled);
        self.queued = self.queued.saturating_add(o.queued);
        self.rejected = self.rejected.saturating_add(o.rejected);
    }

    fn add_usage(&mut self, input_tokens: u64, output_tokens: u64, spend: f64) {
        self.input_tokens = self.input_tokens.saturating_add(input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(output_tokens);
        if spend.is_finite() && spend > 0.0 {
            self.spend += spend;
        }
    }

    fn fold_into(&self, other: &mut Row) {
        other.requests = other.requests.saturating_add(self.requests);
        other.successes = other.successes.saturating_add(self.successes);
        other.errors = other.errors.saturating_add(self.errors);
        other.add_usage(self.input_tokens, self.output_tokens, self.spend);
        other.throttled = other.throttled.saturating_add(self.throttled);
        other.queued = other.queued.saturating_add(self.queued);
        other.rejected = other.rejected.saturating_add(self.rejected);
        other.latency.merge(&self.latency);
    }

    fn snapshot(&self, tenant: &str) -> TenantSnapshot {
        TenantSnapshot {
            tenant: tenant.to_string(),
            requests: self.requests,
            successes: self.successes,
            errors: self.errors,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            spend: self.spend,
            cost_per_success: if self.successes > 0 {
                // u64 -> f64 is exact below 2^53 requests.
                self.spend / self.successes as f64
            } else {
                0.0
            },
            throttled: self.throttled,
            queued: self.queued,
            rejected: self.rejected,
            latency: self.latency.summary(),
        }
    }
}

/// One tenant's figures (or "other"'s).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSnapshot {
    pub tenant: String,
    pub requests: u64,
    pub successes: u64,
    /// Requests that failed or were abandoned.
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub spend: f64,
    pub cost_per_success: f64,
    pub throttled: u64,
    pub queued: u64,
    pub rejected: u64,
    /// From each request's start to its answer, successes only.
    pub latency: LatencySummary,
}

/// An untracked tenant's count, and how much of it may be inherited from a dropped one.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    count: u64,
    error: u64,
}

impl Candidate {
    fn guaranteed(self) -> u64 {
        self.count.saturating_sub(self.error)
    }
}

#[derive(Debug)]
struct Inner {
    top: usize,
    rows: HashMap<Arc<str>, Row>,
    candidates: HashMap<Arc<str>, Candidate>,
    other: Row,
}

/// The per-tenant table of one router.
#[derive(Debug)]
pub(crate) struct TenantTable {
    inner: Mutex<Inner>,
}

impl TenantTable {
    /// `top` is capped at [`MAX_TOP_TENANTS`].
    pub(crate) fn new(top: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                top: top.min(MAX_TOP_TENANTS),
                rows: HashMap::new(),
                candidates: HashMap::new(),
                other: Row::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tenants with their own row from now on (capped at [`MAX_TOP_TENANTS`]); the smallest
    /// rows beyond it fold into "other".
    pub(crate) fn set_top(&self, top: usize) {
        let mut g = self.lock();
        g.top = top.min(MAX_TOP_TENANTS);
        while g.rows.len() > g.top {
            if !g.evict_smallest() {
                break;
            }
        }
        g.trim_candidates();
    }

    pub(crate) fn top(&self) -> usize {
        self.lock().top
    }

    pub(crate) fn record(&self, tenant: &Arc<str>, outcome: &TenantOutcome) {
        self.lock().record(tenant, outcome);
    }

    /// Usage learnt after the request was recorded (a stream's, once read): added to the
    /// tenant's row if it has one, else to "other". Not a request of its own.
    pub(crate) fn add_usage(&self, tenant: &Arc<str>, input: u64, output: u64, spend: f64) {
        let mut g = self.lock();
        let g = &mut *g;
        match g.rows.get_mut(tenant) {
            Some(row) => row.add_usage(input, output, spend),
            None => g.other.add_usage(input, output, spend),
        }
    }

    /// Tracked tenants by requests (most first, then by name), then "other".
    pub(crate) fn snapshot(&self) -> Vec<TenantSnapshot> {
        let g = self.lock();
        let mut out: Vec<TenantSnapshot> = g.rows.iter().map(|(t, r)| r.snapshot(t)).collect();
        out.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.tenant.cmp(&b.tenant))
        });
        out.push(g.other.snapshot(OTHER_TENANT));
        out
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        let g = self.lock();
        g.rows.len() + g.candidates.len()
    }
}

impl Inner {
    fn candidate_cap(&self) -> usize {
        self.top.max(1) * CANDIDATES_PER_ROW
    }

    fn record(&mut self, tenant: &Arc<str>, outcome: &TenantOutcome) {
        if &**tenant == OTHER_TENANT {
            self.other.record(outcome);
            return;
        }
        if let Some(row) = self.rows.get_mut(tenant) {
            row.record(outcome);
            return;
        }
        if self.rows.len() < self.top {
            let prior = self
                .candidates
                .remove(tenant)
                .map_or(0, Candidate::guaranteed);
            let mut row = Row::new(prior);
            row.record(outcome);
            self.rows.insert(Arc::clone(tenant), row);
            return;
        }
        // Not tracked: counted in "other", and as a candidate for a row.
        self.other.record(outcome);
        if self.top == 0 {
            return;
        }
        let candidate = match self.candidates.get_mut(tenant) {
            Some(c) => {
                c.count = c.count.saturating_add(1);
                *c
            }
            None => {
                // Space-saving: a newcomer inherits the dropped minimum's count (as possible
                // error), so that a frequent tenant is not pushed out by a flood of one-off
                // names, and a one-off name is never promoted on inherited counts alone.
                let floor = if self.candidates.len() >= self.candidate_cap() {
                    self.drop_smallest_candidate()
                } else {
                    0
                };
                let c = Candidate {
                    count: floor.saturating_add(1),
                    error: floor,
                };
                self.candidates.insert(Arc::clone(tenant), c);
                c
            }
        };
        let smallest = self.smallest_row().map_or(0, |(_, rank)| rank);
        if candidate.guaranteed() > smallest {
            self.evict_smallest();
            self.candidates.remove(tenant);
            self.rows
                .insert(Arc::clone(tenant), Row::new(candidate.guaranteed()));
        }
    }

    /// The tracked tenant with the lowest rank (ties: the first name), and its rank.
    fn smallest_row(&self) -> Option<(Arc<str>, u64)> {
        self.rows
            .iter()
            .map(|(t, r)| (t, r.rank()))
            .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(t, rank)| (Arc::clone(t), rank))
    }

    /// Folds the tracked tenant with the lowest rank into "other", keeping it as a
    /// candidate; false if none.
    fn evict_smallest(&mut self) -> bool {
        let Some((name, rank)) = self.smallest_row() else {
            return false;
        };
        if let Some(row) = self.rows.remove(&name) {
            row.fold_into(&mut self.other);
            self.candidates.insert(
                name,
                Candidate {
                    count: rank,
                    error: 0,
                },
            );
        }
        self.trim_candidates();
        true
    }

    fn trim_candidates(&mut self) {
        let cap = if self.top == 0 {
            0
        } else {
            self.candidate_cap()
        };
        while self.candidates.len() > cap {
            self.drop_smallest_candidate();
        }
    }

    /// Drops the candidate with the smallest count (ties: the first name), returning that
    /// count.
    fn drop_smallest_candidate(&mut self) -> u64 {
        let Some((name, count)) = self
            .candidates
            .iter()
            .min_by(|a, b| a.1.count.cmp(&b.1.count).then_with(|| a.0.cmp(b.0)))
            .map(|(t, c)| (Arc::clone(t), c.count))
        else {
            return 0;
        };
        self.candidates.remove(&name);
        count
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(ms: u64) -> TenantOutcome {
        TenantOutcome {
            success: true,
            latency: Duration::from_millis(ms),
            input_tokens: 10,
            output_tokens: 5,
            spend: 0.01,
            ..Default::default()
        }
    }

    fn failed() -> TenantOutcome {
        TenantOutcome::default()
    }

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn row<'a>(s: &'a [TenantSnapshot], tenant: &str) -> &'a TenantSnapshot {
        s.iter().find(|r| r.tenant == tenant).unwrap()
    }

    fn names(s: &[TenantSnapshot]) -> Vec<&str> {
        s.iter().map(|r| r.tenant.as_str()).collect()
    }

    #[test]
    fn counts_per_tenant_and_outcome() {
        let t = TenantTable::new(DEFAULT_TOP_TENANTS);
        let (a, b) = (name("acme"), name("beta"));
        for ms in 1..=100 {
            t.record(&a, &ok(ms));
        }
        t.record(
            &b,
            &TenantOutcome {
                throttled: 2,
                queued: 3,
                rejected: 1,
                ..failed()
            },
        );
        t.record(&b, &ok(7));
        let s = t.snapshot();
        assert_eq!(names(&s), ["acme", "beta", OTHER_TENANT]);
        assert_eq!((s[0].requests, s[0].successes, s[0].errors), (100, 100, 0));
        assert_eq!((s[0].input_tokens, s[0].output_tokens), (1000, 500));
        assert!((s[0].spend - 1.0).abs() < 1e-9);
        assert!((s[0].cost_per_success - 0.01).abs() < 1e-9);
        assert_eq!((s[0].throttled, s[0].queued, s[0].rejected), (0, 0, 0));
        assert_eq!((s[1].requests, s[1].successes, s[1].errors), (2, 1, 1));
        assert_eq!((s[1].throttled, s[1].queued, s[1].rejected), (2, 3, 1));
        // Only successes have a latency.
        assert_eq!(s[1].latency.count, 1);
        assert_eq!(s[2].requests, 0);
        assert_eq!(s[2].cost_per_success, 0.0);
    }

    #[test]
    fn percentiles_per_tenant() {
        let t = TenantTable::new(4);
        let (fast, slow) = (name("fast"), name("slow"));
        for ms in 1..=100 {
            t.record(&fast, &ok(ms));
            t.record(&slow, &ok(10 * ms));
        }
        let s = t.snapshot();
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1000.0 - ms).abs() / ms < 0.07;
        let f = row(&s, "fast").latency;
        assert!(
            near(f.p50, 50.0) && near(f.p95, 95.0) && near(f.p99, 99.0),
            "{f:?}"
        );
        let w = row(&s, "slow").latency;
        assert!(
            near(w.p50, 500.0) && near(w.p95, 950.0) && near(w.p99, 990.0),
            "{w:?}"
        );
        assert_eq!(w.max, Duration::from_millis(1000));
    }

    #[test]
    fn a_flood_of_names_stays_bounded_and_totals_are_kept() {
        let t = TenantTable::new(3);
        let heavy = name("heavy");
        for i in 0..20_000u64 {
            t.record(&heavy, &ok(1));
            t.record(&name(&format!("t{i}")), &ok(1));
        }
        assert!(t.entries() <= 3 + 3 * CANDIDATES_PER_ROW, "{}", t.entries());
        let s = t.snapshot();
        assert!(s.len() <= 4);
        assert_eq!(s[0].tenant, "heavy");
        assert_eq!(s[0].requests, 20_000);
        let total: u64 = s.iter().map(|r| r.requests).sum();
        assert_eq!(total, 40_000);
    }

    #[test]
    fn one_off_names_never_displace_a_tenant_that_keeps_asking() {
        let t = TenantTable::new(2);
        let (a, b) = (name("a"), name("b"));
        for i in 0..5_000u64 {
            t.record(&a, &ok(1));
            if i % 10 == 0 {
                t.record(&b, &ok(1));
            }
            t.record(&name(&format!("once{i}")), &ok(1));
        }
        let s = t.snapshot();
        assert_eq!(names(&s), ["a", "b", OTHER_TENANT]);
        assert_eq!(s[0].requests, 5_000);
        assert_eq!(s[1].requests, 500);
        assert_eq!(s[2].requests, 5_000);
    }

    #[test]
    fn a_tenant_leaving_the_top_folds_into_other() {
        let t = TenantTable::new(1);
        let (a, b) = (name("a"), name("b"));
        t.record(&a, &ok(1));
        for _ in 0..5 {
            t.record(&b, &ok(1));
        }
        let s = t.snapshot();
        assert_eq!(names(&s), ["b", OTHER_TENANT]);
        // b's first two requests were counted under "other" before it took a's row.
        assert_eq!((s[0].requests, s[1].requests), (3, 3));
        assert_eq!(s[1].latency.count, 3);
        t.set_top(0);
        let s = t.snapshot();
        assert_eq!(names(&s), [OTHER_TENANT]);
        assert_eq!(s[0].requests, 6);
        assert_eq!(s[0].latency.count, 6);
        assert_eq!(t.entries(), 0);
        // With no rows, every tenant is counted under "other".
        t.record(&a, &ok(1));
        assert_eq!(t.snapshot()[0].requests, 7);
        t.set_top(2);
        t.record(&a, &ok(1));
        assert_eq!(names(&t.snapshot()), ["a", OTHER_TENANT]);
    }

    #[test]
    fn eviction_is_decided_by_counts_then_names_not_by_hash_order() {
        // Ties everywhere: every table must pick the same rows.
        let run = || {
            let t = TenantTable::new(3);
            for round in 0..3 {
                for n in ["d", "b", "e", "a", "c", "f"] {
                    t.record(&name(n), &ok(round + 1));
                }
            }
            t.set_top(2);
            names(&t.snapshot())
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, ["d", "e", OTHER_TENANT]);
        for _ in 0..20 {
            assert_eq!(run(), first);
        }
    }

    #[test]
    fn a_tenant_named_other_is_counted_in_the_other_row() {
        let t = TenantTable::new(5);
        t.record(&name(OTHER_TENANT), &ok(1));
        t.record(&name("acme"), &ok(1));
        let s = t.snapshot();
        assert_eq!(names(&s), ["acme", OTHER_TENANT]);
        assert_eq!(s[1].requests, 1);
    }

    #[test]
    fn late_usage_lands_in_the_row_or_other() {
        let t = TenantTable::new(1);
        let (a, b) = (name("a"), name("b"));
        t.record(&a, &failed());
        t.add_usage(&a, 7, 3, 0.5);
        t.add_usage(&b, 1, 1, f64::NAN);
        let s = t.snapshot();
        assert_eq!((s[0].input_tokens, s[0].output_tokens), (7, 3));
        assert!((s[0].spend - 0.5).abs() < 1e-12);
        assert_eq!(
            (s[1].input_tokens, s[1].output_tokens, s[1].spend),
            (1, 1, 0.0)
        );
        assert_eq!(s[0].requests + s[1].requests, 1);
    }

    #[test]
    fn top_is_capped() {
        let t = TenantTable::new(usize::MAX);
        assert_eq!(t.top(), MAX_TOP_TENANTS);
        t.set_top(7);
        assert_eq!(t.top(), 7);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record(u8, u8),
        SetTop(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => (0u8..40, 0u8..4).prop_map(|(t, o)| Op::Record(t, o)),
            1 => (0u8..6).prop_map(Op::SetTop),
        ]
    }

    fn outcome(kind: u8) -> TenantOutcome {
        match kind {
            0 => ok(3),
            1 => TenantOutcome {
                throttled: 1,
                ..failed()
            },
            2 => TenantOutcome {
                queued: 1,
                rejected: 1,
                ..failed()
            },
            _ => TenantOutcome {
                queued: 2,
                ..ok(40)
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn totals_over_all_labels_equal_what_was_recorded(
            top in 0usize..6,
            ops in proptest::collection::vec(op(), 0..400),
        ) {
            let t = TenantTable::new(top);
            let twin = TenantTable::new(top);
            let (mut requests, mut successes, mut throttled, mut queued, mut rejected) =
                (0u64, 0u64, 0u64, 0u64, 0u64);
            let mut limit = top;
            for op in &ops {
                match *op {
                    Op::Record(tenant, kind) => {
                        let n = name(&format!("t{tenant}"));
                        let o = outcome(kind);
                        t.record(&n, &o);
                        twin.record(&n, &o);
                        requests += 1;
                        successes += u64::from(o.success);
                        throttled += o.throttled;
                        queued += o.queued;
                        rejected += o.rejected;
                    }
                    Op::SetTop(n) => {
                        limit = usize::from(n);
                        t.set_top(limit);
                        twin.set_top(limit);
                    }
                }
                prop_assert!(t.entries() <= limit + limit.max(1) * CANDIDATES_PER_ROW);
            }
            let s = t.snapshot();
            prop_assert!(s.len() <= limit + 1);
            prop_assert_eq!(s.last().map(|r| r.tenant.as_str()), Some(OTHER_TENANT));
            let sum = |f: fn(&TenantSnapshot) -> u64| s.iter().map(f).sum::<u64>();
            prop_assert_eq!(sum(|r| r.requests), requests);
            prop_assert_eq!(sum(|r| r.successes), successes);
            prop_assert_eq!(sum(|r| r.errors), requests - successes);
            prop_assert_eq!(sum(|r| r.latency.count), successes);
            prop_assert_eq!(sum(|r| r.throttled), throttled);
            prop_assert_eq!(sum(|r| r.queued), queued);
            prop_assert_eq!(sum(|r| r.rejected), rejected);
            prop_assert_eq!(sum(|r| r.input_tokens), 10 * successes);
            for r in &s {
                prop_assert_eq!(r.successes + r.errors, r.requests);
            }
            // Same requests, same rows (the tables' hash orders differ).
            prop_assert_eq!(s, twin.snapshot());
        }
    }
}

/// The rows as the router fills them: one per request, whichever way it ends.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod through_the_router {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::clock::{Clock, FakeClock};
    use crate::limit::{AnyLimiter, Limiter, LimiterConfig, Priority};
    use crate::route::{
        Action, AttemptId, Deployment, ErrorKind, Limits, Outcome, RequestInfo, Router,
        RouterConfig, Run, Step, TenantSnapshot, Usage, OTHER_TENANT,
    };

    fn router(n: usize) -> (Arc<Router>, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new());
        let deployments = (0..n)
            .map(|i| Deployment {
                price_in: 1.0,
                price_out: 2.0,
                ..Deployment::new(format!("d{i}"))
            })
            .collect();
        let config = RouterConfig {
            seed: Some(1),
            ..RouterConfig::default()
        };
        let r = Router::new(deployments, config, clock.clone()).unwrap();
        (Arc::new(r), clock)
    }

    fn info(tenant: &str) -> RequestInfo {
        RequestInfo {
            tenant: Some(Arc::from(tenant)),
            ..RequestInfo::default()
        }
    }

    fn row(router: &Router, tenant: &str) -> TenantSnapshot {
        router
            .tenant_snapshot()
            .into_iter()
            .find(|r| r.tenant == tenant)
            .unwrap()
    }

    #[track_caller]
    fn call(step: Step) -> (AttemptId, usize) {
        match step {
            Step::Call {
                attempt,
                deployment,
                ..
            } => (attempt, deployment),
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn every_way_a_request_ends_is_one_request_of_its_tenant() {
        let (router, clock) = router(2);
        // Answered after a 429 on the first deployment, 30 ms after it started.
        let mut e = router.start(info("acme"));
        let (a, _) = call(e.next());
        e.report(
            a,
            Outcome::Failure(ErrorKind::RateLimited { retry_after: None }),
        );
        let (b, d) = call(e.next());
        assert_eq!(d, 1);
        clock.advance(Duration::from_millis(30));
        e.report(
            b,
            Outcome::Success {
                latency: Duration::from_millis(30),
                usage: Usage::new(1000, 500),
            },
        );
        assert!(matches!(e.next(), Step::Done { .. }));
        drop(e);
        // Failed at once.
        let mut e = router.start(info("acme"));
        let (a, _) = call(e.next());
        e.report(a, Outcome::Failure(ErrorKind::Auth));
        assert!(matches!(e.next(), Step::Fail(_)));
        drop(e);
        // Abandoned with a call in flight.
        let mut e = router.start(info("acme"));
        call(e.next());
        drop(e);
        // No tenant: not in any row.
        let mut e = router.start(RequestInfo::default());
        let (a, _) = call(e.next());
        e.report(a, Outcome::Failure(ErrorKind::Auth));
        drop(e);

        let s = router.tenant_snapshot();
        assert_eq!(s.len(), 2);
        let acme = &s[0];
        assert_eq!(acme.tenant, "acme");
        assert_eq!((acme.requests, acme.successes, acme.errors), (3, 1, 2));
        assert_eq!((acme.throttled, acme.queued, acme.rejected), (1, 0, 0));
        assert_eq!((acme.input_tokens, acme.output_tokens), (1000, 500));
        assert!((acme.spend - 2.0).abs() < 1e-9, "{}", acme.spend);
        assert!((acme.cost_per_success - 2.0).abs() < 1e-9);
        assert_eq!(acme.latency.count, 1);
        assert_eq!(acme.latency.max, Duration::from_millis(30));
        assert_eq!(s[1].tenant, OTHER_TENANT);
        assert_eq!(s[1].requests, 0);
        assert_eq!(router.snapshot().requests, 4);
    }

    fn limiter(clock: &Arc<FakeClock>, config: &LimiterConfig) -> AnyLimiter {
        let clock: Arc<dyn Clock> = clock.clone();
        AnyLimiter::Local(Limiter::with_clock(config, clock).unwrap())
    }

    #[test]
    fn waits_refusals_and_a_streams_late_usage_reach_the_row() {
        let (router, clock) = router(2);
        let one = limiter(
            &clock,
            &LimiterConfig {
                max_concurrency: Some(1),
                ..LimiterConfig::default()
            },
        );
        let small = limiter(
            &clock,
            &LimiterConfig {
                tokens_per_minute: Some(10.0),
                token_burst: Some(10),
                ..LimiterConfig::default()
            },
        );
        let limits = Limits {
            shared: Some(one.clone()),
            own: vec![Some(small)],
        };
        let held = one.try_acquire(0, Priority::Standard).unwrap().unwrap();
        let mut r = Run::new(router.start(info("acme")), limits, 50);
        // d0's own limiter cannot hold 50 tokens: refused; d1 waits for the shared slot.
        let Action::Acquire(request) = r.next() else {
            panic!("expected a wait for the permit")
        };
        drop(held);
        r.permitted(request.acquire_blocking());
        let Action::Call { attempt, .. } = r.next() else {
            panic!("expected a call")
        };
        r.succeeded(attempt, Usage::new(0, 0)); // a stream: its first chunk
        assert!(matches!(r.next(), Action::Done { .. }));
        let acme = row(&router, "acme");
        assert_eq!((acme.requests, acme.successes), (1, 1));
        assert_eq!((acme.queued, acme.rejected, acme.throttled), (1, 1, 0));
        assert_eq!((acme.input_tokens, acme.output_tokens), (0, 0));
        r.settle_usage(Usage::new(40, 10));
        r.settle_usage(Usage::new(40, 10)); // told twice, counted once
        let acme = row(&router, "acme");
        assert_eq!((acme.input_tokens, acme.output_tokens), (40, 10));
        assert!((acme.spend - 0.06).abs() < 1e-9, "{}", acme.spend);
        assert_eq!(acme.requests, 1);
    }
}
