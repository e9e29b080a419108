//! Per-deployment counters and a latency histogram, all atomics so that recording never takes a
//! lock; read out as plain structs for the snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::deployment::Usage;
use super::execution::{AttemptKind, ErrorKind};

/// Failed calls by what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorCounts {
    pub rate_limited: u64,
    pub server: u64,
    pub timeout: u64,
    pub connection: u64,
    pub context_overflow: u64,
    pub auth: u64,
    pub invalid_request: u64,
    pub other: u64,
    pub limited: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        [
            self.rate_limited,
            self.server,
            self.timeout,
            self.connection,
            self.context_overflow,
            self.auth,
            self.invalid_request,
            self.other,
            self.limited,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// Latency of successful calls. Percentiles come from log-scale buckets (8 per doubling,
/// so within about 6% of the true value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Sub-buckets per doubling of latency.
const SUB: u64 = 8;
/// Doublings covered: 2^35 µs is about 9.5 hours; longer latencies land in the last bucket.
const TOP_OCTAVE: u64 = 35;
const BUCKETS: usize = (SUB + (TOP_OCTAVE - 2) * SUB) as usize;

/// Microseconds -> bucket: exact below 8 µs, then 8 linear sub-buckets per power of two.
fn bucket_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let octave = u64::from(63 - micros.leading_zeros()).min(TOP_OCTAVE);
    let sub = if octave == TOP_OCTAVE && micros >> octave > 1 {
        SUB - 1
    } else {
        (micros >> (octave - 3)) - SUB
    };
    ((SUB + (octave - 3) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The midpoint of a bucket, in microseconds.
fn bucket_mid(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let octave = 3 + (index - SUB) / SUB;
    let sub = (index - SUB) % SUB;
    let width = 1u64 << (octave - 3);
    (SUB + sub) * width + width / 2
}

#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.buckets.get(bucket_of(micros)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// Adds another histogram's counts to this one.
    pub(crate) fn merge(&self, other: &Self) {
        for (a, b) in self.buckets.iter().zip(other.buckets.iter()) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.count
            .fetch_add(other.count.load(Ordering::Relaxed), Ordering::Relaxed);
        self.sum_micros
            .fetch_add(other.sum_micros.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max_micros
            .fetch_max(other.max_micros.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return LatencySummary::default();
        }
        let max = self.max_micros.load(Ordering::Relaxed);
        let quantile = |q: f64| {
            // The rank of the q-th value, 1-based; f64 is exact enough for any real count.
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0u64;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_micros(bucket_mid(i).min(max));
                }
            }
            Duration::from_micros(max)
        };
        let recorded = self.count.load(Ordering::Relaxed).max(1);
        LatencySummary {
            count,
            mean: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed) / recorded),
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            max: Duration::from_micros(max),
        }
    }
}

/// Counters of one deployment.
#[derive(Debug)]
pub(crate) struct DeploymentStats {
    pub(crate) requests: AtomicU64,
    pub(crate) successes: AtomicU64,
    errors: [AtomicU64; 9],
    pub(crate) retries: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) input_tokens: AtomicU64,
    pub(crate) output_tokens: AtomicU64,
    pub(crate) cache_read_tokens: AtomicU64,
    pub(crate) cache_write_tokens: AtomicU64,
    pub(crate) latency: LatencyHistogram,
}

impl DeploymentStats {
    pub(crate) fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            errors: Default::default(),
            retries: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cache_read_tokens: AtomicU64::new(0),
            cache_write_tokens: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }

    pub(crate) fn record_call(&self, kind: AttemptKind) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let counter = match kind {
            AttemptKind::First => return,
            AttemptKind::Retry => &self.retries,
            AttemptKind::Fallback => &self.fallbacks,
            AttemptKind::Hedge => &self.hedges,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_success(&self, latency: Duration, usage: &Usage) {
        let usage = usage.clamped();
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.input_tokens.fetch_add(usage.input, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(usage.output, Ordering::Relaxed);
        self.cache_read_tokens
            .fetch_add(usage.cache_read, Ordering::Relaxed);
        self.cache_write_tokens
            .fetch_add(usage.cache_write, Ordering::Relaxed);
        self.latency.record(latency);
    }

    /// Every token answered so far, for the deployment's cost (charges add up linearly).
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            input: self.input_tokens.load(Ordering::Relaxed),
            output: self.output_tokens.load(Ordering::Relaxed),
            cache_read: self.cache_read_tokens.load(Ordering::Relaxed),
            cache_write: self.cache_write_tokens.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record_error(&self, kind: ErrorKind) {
        let slot = match kind {
            ErrorKind::RateLimited { .. } => 0,
            ErrorKind::Server => 1,
            ErrorKind::Timeout => 2,
            ErrorKind::Connection => 3,
            ErrorKind::ContextOverflow => 4,
            ErrorKind::Auth => 5,
            ErrorKind::InvalidRequest => 6,
            ErrorKind::Other { .. } => 7,
            ErrorKind::Limited { .. } => 8,
        };
        if let Some(c) = self.errors.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn errors(&self) -> ErrorCounts {
        let [rate_limited, server, timeout, connection, context_overflow, auth, invalid_request, other, limited] =
            self.errors.each_ref().map(|c| c.load(Ordering::Relaxed));
        ErrorCounts {
            rate_limited,
            server,
            timeout,
            connection,
            context_overflow,
            auth,
            invalid_request,
            other,
            limited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_midpoints_land_inside() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 34, (1 << 35) - 1, 1 << 35, u64::MAX]) {
            let b = bucket_of(micros);
            assert!(b >= last, "{micros}");
            assert!(b < BUCKETS);
            last = b;
        }
        for micros in [1u64, 9, 100, 1000, 123_456, 10_000_000] {
            let mid = bucket_mid(bucket_of(micros));
            let err = (mid as f64 - micros as f64).abs() / micros as f64;
            assert!(err <= 0.07, "{micros} -> {mid}");
        }
    }

    #[test]
    fn percentiles_from_a_known_distribution() {
        let h = LatencyHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1000.0 - ms).abs() / ms < 0.07;
        assert!(near(s.p50, 50.0), "{:?}", s.p50);
        assert!(near(s.p95, 95.0), "{:?}", s.p95);
        assert!(near(s.p99, 99.0), "{:?}", s.p99);
    }

    #[test]
    fn empty_histogram_reads_zero() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }
}
