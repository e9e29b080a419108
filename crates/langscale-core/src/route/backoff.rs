//! How often and how long to wait before retrying one deployment: full-jitter exponential
//! backoff (a uniform wait between zero and a doubling ceiling), so clients that failed together
//! do not retry together. The randomness is a tiny xorshift generator, seeded from the config or
//! the clock, so tests on a fake clock are deterministic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{nanos, RouteError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls one request may make to one deployment (first call included) before it fails
    /// over to the next.
    pub max_attempts_per_deployment: u32,
    /// Ceiling of the first retry's wait; each further retry doubles it ...
    pub backoff_base: Duration,
    /// ... up to this.
    pub backoff_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts_per_deployment: 3,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn validate(&self) -> Result<(), RouteError> {
        if self.max_attempts_per_deployment == 0 {
            return Err(RouteError::Config(
                "max_attempts_per_deployment must be at least 1, got 0".into(),
            ));
        }
        if self.backoff_cap < self.backoff_base {
            return Err(RouteError::Config(format!(
                "backoff_cap ({:.3} s) must not be below backoff_base ({:.3} s)",
                self.backoff_cap.as_secs_f64(),
                self.backoff_base.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// The longest wait before retry number `retry` (1 for the first retry).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(63);
        let ceiling = nanos(self.backoff_base).saturating_mul(1u64 << doublings);
        Duration::from_nanos(ceiling.min(nanos(self.backoff_cap)))
    }

    /// A wait drawn uniformly from `[0, backoff_ceiling(retry)]`.
    pub(crate) fn backoff(&self, retry: u32, jitter: &Jitter) -> Duration {
        Duration::from_nanos(jitter.up_to(nanos(self.backoff_ceiling(retry))))
    }
}

/// A shared xorshift64* generator: not cryptographic, only enough to spread retries.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams and the state is never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            state: AtomicU64::new(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z }),
        }
    }

    fn next_u64(&self) -> u64 {
        let step = |mut x: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x
        };
        let prev = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
            .unwrap_or_else(|x| x);
        step(prev).wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, max]`.
    pub(crate) fn up_to(&self, max: u64) -> u64 {
        let range = u128::from(max) + 1;
        u64::try_from((u128::from(self.next_u64()) * range) >> 64).unwrap_or(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts_per_deployment: 10,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(1000),
        };
        let ceilings: Vec<u128> = (1..=6).map(|r| p.backoff_ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn jittered_waits_cover_the_range_and_stay_inside_it() {
        let p = RetryPolicy::default();
        let j = Jitter::new(7);
        let ceiling = p.backoff_ceiling(2);
        let waits: Vec<Duration> = (0..10_000).map(|_| p.backoff(2, &j)).collect();
        assert!(waits.iter().all(|w| *w <= ceiling));
        assert!(waits.iter().any(|w| *w < ceiling / 10));
        assert!(waits.iter().any(|w| *w > ceiling * 9 / 10));
        let mean = waits.iter().sum::<Duration>() / 10_000;
        assert!(
            mean > ceiling * 45 / 100 && mean < ceiling * 55 / 100,
            "{mean:?}"
        );
    }

    #[test]
    fn same_seed_same_waits() {
        let p = RetryPolicy::default();
        let (a, b) = (Jitter::new(1), Jitter::new(1));
        for r in 1..20 {
            assert_eq!(p.backoff(r, &a), p.backoff(r, &b));
        }
        assert_eq!(Jitter::new(0).up_to(0), 0);
        // The full range must not overflow.
        let _ = Jitter::new(0).up_to(u64::MAX);
    }

    #[test]
    fn cap_below_base_is_rejected() {
        let p = RetryPolicy {
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
