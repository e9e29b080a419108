//! Per-tenant request statistics with bounded cardinality: the top N tenants by requests get
//! their own row, everything else is counted under "other". Untracked tenants are counted in a
//! bounded candidate table (space-saving: when full, the least-counted candidate is dropped); a
//! candidate whose count passes the smallest tracked tenant's takes its row, and the displaced
//! tenant's figures fold into "other". Memory is O(N) however many distinct names arrive.
//! Recording takes one short lock per request that has a tenant; requests without one skip it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::stats::{LatencyHistogram, LatencySummary};

/// Default number of tenants with their own row.
pub const DEFAULT_TOP_TENANTS: usize = 20;
/// Candidates kept per tracked row.
const CANDIDATES_PER_ROW: usize = 4;

/// How one request ended, for its tenant's row.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TenantOutcome {
    pub success: bool,
    pub latency: Duration,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// USD, from the deployment's prices.
    pub spend: f64,
    /// Provider rate-limit answers (429) among the request's attempts.
    pub throttled: u64,
    /// Attempts refused by a local limiter or budget.
    pub rejected: u64,
}

#[derive(Debug)]
struct Row {
    requests: u64,
    successes: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    spend: f64,
    throttled: u64,
    rejected: u64,
    latency: LatencyHistogram,
}

impl Row {
    fn new() -> Self {
        Self {
            requests: 0,
            successes: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            spend: 0.0,
            throttled: 0,
            rejected: 0,
            latency: LatencyHistogram::new(),
        }
    }

    fn record(&mut self, o: &TenantOutcome) {
        self.requests += 1;
        if o.success {
            self.successes += 1;
            self.latency.record(o.latency);
        } else {
            self.errors += 1;
        }
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        if o.spend.is_finite() && o.spend > 0.0 {
            self.spend += o.spend;
        }
        self.throttled = self.throttled.saturating_add(o.throttled);
        self.rejected = self.rejected.saturating_add(o.rejected);
    }

    fn fold_into(&self, other: &mut Row) {
        other.requests += self.requests;
        other.successes += self.successes;
        other.errors += self.errors;
        other.input_tokens = other.input_tokens.saturating_add(self.input_tokens);
        other.output_tokens = other.output_tokens.saturating_add(self.output_tokens);
        other.spend += self.spend;
        other.throttled += self.throttled;
        other.rejected += self.rejected;
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
                self.spend / self.successes as f64
            } else {
                0.0
            },
            throttled: self.throttled,
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
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub spend: f64,
    pub cost_per_success: f64,
    pub throttled: u64,
    pub rejected: u64,
    pub latency: LatencySummary,
}

#[derive(Debug)]
struct Inner {
    top: usize,
    rows: HashMap<Arc<str>, Row>,
    candidates: HashMap<Arc<str>, u64>,
    other: Row,
}

/// The per-tenant table of one router.
#[derive(Debug)]
pub(crate) struct TenantTable {
    inner: Mutex<Inner>,
}

/// The name "other" rows are reported under.
pub const OTHER_TENANT: &str = "other";

impl TenantTable {
    pub(crate) fn new(top: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                top,
                rows: HashMap::new(),
                candidates: HashMap::new(),
                other: Row::new(),
            }),
        }
    }

    /// Tenants with their own row from now on; rows beyond it fold into "other".
    pub(crate) fn set_top(&self, top: usize) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.top = top;
        while g.rows.len() > top {
            if !g.evict_smallest() {
                break;
            }
        }
        let cap = top.max(1) * CANDIDATES_PER_ROW;
        g.candidates.retain(|_, _| true);
        while g.candidates.len() > cap {
            g.drop_smallest_candidate();
        }
    }

    pub(crate) fn record(&self, tenant: &Arc<str>, outcome: &TenantOutcome) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.record(tenant, outcome);
    }

    /// Tracked tenants by requests (most first), then "other".
    pub(crate) fn snapshot(&self) -> Vec<TenantSnapshot> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.rows.len() + g.candidates.len()
    }
}

impl Inner {
    fn record(&mut self, tenant: &Arc<str>, outcome: &TenantOutcome) {
        if let Some(row) = self.rows.get_mut(tenant) {
            row.record(outcome);
            return;
        }
        if self.rows.len() < self.top {
            let mut row = Row::new();
            row.record(outcome);
            self.rows.insert(Arc::clone(tenant), row);
            return;
        }
        // Not tracked: counted in "other", and as a candidate for a row.
        self.other.record(outcome);
        let cap = self.top.max(1) * CANDIDATES_PER_ROW;
        let count = match self.candidates.get_mut(tenant) {
            Some(c) => {
                *c += 1;
                *c
            }
            None => {
                // Space-saving: a newcomer inherits the dropped minimum's count, so that a
                // frequent tenant cannot be starved out by a flood of one-off names.
                let floor = if self.candidates.len() >= cap {
                    self.drop_smallest_candidate()
                } else {
                    0
                };
                self.candidates.insert(Arc::clone(tenant), floor + 1);
                floor + 1
            }
        };
        if self.top == 0 {
            return;
        }
        let smallest = self.rows.values().map(|r| r.requests).min().unwrap_or(0);
        if count > smallest {
            self.evict_smallest();
            self.candidates.remove(tenant);
            self.rows.insert(Arc::clone(tenant), Row::new());
        }
    }

    /// Folds the tracked tenant with the fewest requests into "other"; false if none.
    fn evict_smallest(&mut self) -> bool {
        let Some(name) = self
            .rows
            .iter()
            .min_by(|a, b| a.1.requests.cmp(&b.1.requests).then_with(|| b.0.cmp(a.0)))
            .map(|(t, _)| Arc::clone(t))
        else {
            return false;
        };
        if let Some(row) = self.rows.remove(&name) {
            row.fold_into(&mut self.other);
            self.candidates.insert(name, row.requests);
        }
        let cap = self.top.max(1) * CANDIDATES_PER_ROW;
        while self.candidates.len() > cap {
            self.drop_smallest_candidate();
        }
        true
    }

    /// Drops the candidate with the smallest count, returning that count.
    fn drop_smallest_candidate(&mut self) -> u64 {
        let Some((name, count)) = self
            .candidates
            .iter()
            .min_by_key(|(_, c)| **c)
            .map(|(t, c)| (Arc::clone(t), *c))
        else {
            return 0;
        };
        self.candidates.remove(&name);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn counts_per_tenant() {
        let t = TenantTable::new(DEFAULT_TOP_TENANTS);
        let (a, b): (Arc<str>, Arc<str>) = ("acme".into(), "beta".into());
        for ms in 1..=100 {
            t.record(&a, &ok(ms));
        }
        t.record(
            &b,
            &TenantOutcome {
                throttled: 2,
                rejected: 1,
                ..Default::default()
            },
        );
        let s = t.snapshot();
        assert_eq!(s[0].tenant, "acme");
        assert_eq!((s[0].requests, s[0].successes, s[0].errors), (100, 100, 0));
        assert_eq!((s[0].input_tokens, s[0].output_tokens), (1000, 500));
        assert!((s[0].spend - 1.0).abs() < 1e-9);
        assert!((s[0].cost_per_success - 0.01).abs() < 1e-9);
        let p95 = s[0].latency.p95.as_secs_f64() * 1000.0;
        assert!((p95 - 95.0).abs() / 95.0 < 0.07, "{p95}");
        assert_eq!(s[1].tenant, "beta");
        assert_eq!((s[1].errors, s[1].throttled, s[1].rejected), (1, 2, 1));
        assert_eq!(s[2].tenant, OTHER_TENANT);
        assert_eq!(s[2].requests, 0);
    }

    #[test]
    fn a_flood_of_names_stays_bounded_and_totals_are_kept() {
        let t = TenantTable::new(3);
        let heavy: Arc<str> = "heavy".into();
        for i in 0..20_000u64 {
            t.record(&heavy, &ok(1));
            let name: Arc<str> = format!("t{i}").into();
            t.record(&name, &ok(1));
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
    fn a_tenant_leaving_the_top_folds_into_other() {
        let t = TenantTable::new(1);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        t.record(&a, &ok(1));
        for _ in 0..5 {
            t.record(&b, &ok(1));
        }
        let s = t.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].tenant, "b");
        assert_eq!(s[1].tenant, OTHER_TENANT);
        assert_eq!(s[0].requests + s[1].requests, 6);
        t.set_top(0);
        let s = t.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].requests, 6);
    }
}
