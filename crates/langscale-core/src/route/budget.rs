//! The retry budget: retries (and hedges) may be at most a fraction of the requests of a recent
//! window, plus a small allowance per second for quiet times, so an outage cannot turn every
//! request into several and become a retry storm.

use std::time::Duration;

use super::{nanos, RouteError};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request in the window (0.2: one retry for every five requests).
    pub ratio: f64,
    /// Retries allowed per second of the window whatever the traffic.
    pub min_per_second: f64,
    /// How far back requests and retries are counted.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 1.0,
            window: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetConfig {
    pub(crate) fn validate(&self) -> Result<(), RouteError> {
        if !(self.ratio.is_finite() && self.ratio >= 0.0) {
            return Err(RouteError::Config(format!(
                "retry budget ratio must be a finite number >= 0, got {}",
                self.ratio
            )));
        }
        if !(self.min_per_second.is_finite() && self.min_per_second >= 0.0) {
            return Err(RouteError::Config(format!(
                "retry budget min_per_second must be a finite number >= 0, got {}",
                self.min_per_second
            )));
        }
        if self.window.is_zero() {
            return Err(RouteError::Config(
                "retry budget window must be longer than 0 s".into(),
            ));
        }
        Ok(())
    }
}

const BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    requests: u64,
    retries: u64,
}

/// Requests and retries counted in ten buckets over the window. The router keeps it behind a
/// mutex.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_window: f64,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS as usize],
}

impl RetryBudget {
    pub fn new(config: &RetryBudgetConfig) -> Self {
        Self {
            ratio: config.ratio,
            min_per_window: config.min_per_second * config.window.as_secs_f64(),
            bucket_nanos: (nanos(config.window) / BUCKETS).max(1),
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    /// A request started: it earns `ratio` retries.
    pub fn record_request(&mut self, now: u64) {
        if let Some(b) = self.bucket(now) {
            b.requests = b.requests.saturating_add(1);
        }
    }

    /// Take one retry from the budget, if there is one left.
    pub fn try_withdraw(&mut self, now: u64) -> bool {
        let (requests, retries) = self.totals(now);
        // u64 -> f64 loses precision only past 2^53 requests in one window.
        let allowed = self.ratio * requests as f64 + self.min_per_window;
        if (retries.saturating_add(1)) as f64 > allowed {
            return false;
        }
        if let Some(b) = self.bucket(now) {
            b.retries = b.retries.saturating_add(1);
        }
        true
    }

    /// (requests, retries) in the window at `now`.
    pub fn totals(&self, now: u64) -> (u64, u64) {
        let current = now / self.bucket_nanos;
        self.buckets
            .iter()
            .filter(|b| b.epoch <= current && b.epoch + BUCKETS > current)
            .fold((0u64, 0u64), |(q, r), b| {
                (q.saturating_add(b.requests), r.saturating_add(b.retries))
            })
    }

    fn bucket(&mut self, now: u64) -> Option<&mut Bucket> {
        let epoch = now / self.bucket_nanos;
        let b = self.buckets.get_mut((epoch % BUCKETS) as usize)?;
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                requests: 0,
                retries: 0,
            };
        }
        Some(b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn budget(ratio: f64, min_per_second: f64) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            ratio,
            min_per_second,
            window: Duration::from_secs(10),
        })
    }

    #[test]
    fn retries_are_a_fraction_of_requests_plus_the_minimum() {
        let mut b = budget(0.2, 1.0);
        for _ in 0..1000 {
            b.record_request(0);
        }
        let granted = (0..1000).filter(|_| b.try_withdraw(0)).count();
        assert_eq!(granted, 210, "0.2 x 1000 + 1/s x 10 s");
    }

    #[test]
    fn the_minimum_allows_retries_with_no_traffic() {
        let mut b = budget(0.0, 0.5);
        let granted = (0..100).filter(|_| b.try_withdraw(0)).count();
        assert_eq!(granted, 5);
    }

    #[test]
    fn old_requests_and_retries_leave_the_window() {
        let mut b = budget(1.0, 0.0);
        b.record_request(0);
        assert!(b.try_withdraw(0));
        assert!(!b.try_withdraw(0));
        assert_eq!(b.totals(9 * S), (1, 1));
        assert_eq!(b.totals(10 * S), (0, 0));
        assert!(!b.try_withdraw(10 * S), "no requests in the new window");
        b.record_request(10 * S);
        assert!(b.try_withdraw(10 * S));
    }

    #[test]
    fn bad_configs_are_named() {
        let bad = RetryBudgetConfig {
            ratio: -1.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("-1"));
        let bad = RetryBudgetConfig {
            window: Duration::ZERO,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
