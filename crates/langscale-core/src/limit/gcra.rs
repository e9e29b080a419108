//! One GCRA bucket: a single "theoretical arrival time" (TAT) in an atomic, updated with
//! compare-and-swap. No lock, no thread; the caller passes the time in.

use std::sync::atomic::{AtomicU64, Ordering};

use super::LimitError;

/// A generic cell rate algorithm bucket for `rate` units per second with room for `burst` units.
#[derive(Debug)]
pub struct Gcra {
    /// Nanoseconds one unit "costs" (the emission interval).
    interval: u64,
    /// How far the TAT may run ahead of now: `burst * interval`.
    capacity: u64,
    burst: u64,
    tat: AtomicU64,
}

impl Gcra {
    /// `rate` units per `per_seconds` seconds, at most `burst` units at once.
    pub fn new(
        name: &'static str,
        rate: f64,
        per_seconds: f64,
        burst: u64,
    ) -> Result<Self, LimitError> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(LimitError::Config(format!(
                "{name} must be a positive number, got {rate}"
            )));
        }
        if burst == 0 {
            return Err(LimitError::Config(format!(
                "burst for {name} must be at least 1, got 0"
            )));
        }
        let interval = (per_seconds * 1e9 / rate).round();
        // A rate above one unit per nanosecond is effectively unlimited; keep it at 1 ns.
        let interval = if interval < 1.0 {
            1
        } else {
            interval.min(u64::MAX as f64 / 4.0) as u64
        };
        let capacity = interval.checked_mul(burst).ok_or_else(|| {
            LimitError::Config(format!(
                "burst {burst} for {name} is too large for its rate"
            ))
        })?;
        Ok(Self {
            interval,
            capacity,
            burst,
            tat: AtomicU64::new(0),
        })
    }

    /// The most units one call can ever take.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn cost(&self, units: u64) -> u64 {
        units.saturating_mul(self.interval)
    }

    /// Take `units` at `now`, or say the earliest time (ns) they could be taken.
    pub fn try_take(&self, units: u64, now: u64) -> Result<(), u64> {
        let cost = self.cost(units);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = tat.max(now).saturating_add(cost);
            if new_tat - now > self.capacity {
                return Err(new_tat - self.capacity);
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// The earliest time (ns) `units` could be taken, without taking them.
    pub fn ready_at(&self, units: u64, now: u64) -> u64 {
        let new_tat = self
            .tat
            .load(Ordering::Acquire)
            .max(now)
            .saturating_add(self.cost(units));
        new_tat.saturating_sub(self.capacity).max(now)
    }

    /// Return units taken earlier (a refund, or a rollback).
    pub fn give_back(&self, units: u64) {
        let cost = self.cost(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(cost))
            });
    }

    /// Take `units` whether or not they are there: the bucket goes into debt and later
    /// callers wait it off. Used to charge real usage above an estimate.
    pub fn charge(&self, units: u64, now: u64) {
        let cost = self.cost(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(cost))
            });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn admits_at_exactly_the_configured_rate() {
        let g = Gcra::new("rps", 10.0, 1.0, 1).unwrap();
        let mut admitted = 0;
        let mut now = 0;
        while now < 10 * S {
            if g.try_take(1, now).is_ok() {
                admitted += 1;
            }
            now += MS;
        }
        assert_eq!(admitted, 100);
    }

    #[test]
    fn burst_is_available_at_once_then_refills() {
        let g = Gcra::new("rps", 10.0, 1.0, 5).unwrap();
        for _ in 0..5 {
            assert!(g.try_take(1, 0).is_ok());
        }
        let next = g.try_take(1, 0).unwrap_err();
        assert_eq!(next, 100 * MS);
        assert!(g.try_take(1, 100 * MS).is_ok());
        assert!(g.try_take(1, 100 * MS).is_err());
    }

    #[test]
    fn multi_unit_takes_and_reports_when_ready() {
        let g = Gcra::new("tpm", 600.0, 60.0, 100).unwrap(); // 10 tokens/s
        assert!(g.try_take(100, 0).is_ok());
        let at = g.try_take(30, 0).unwrap_err();
        assert_eq!(at, 3 * S);
        assert_eq!(g.ready_at(30, 0), 3 * S);
        assert!(g.try_take(30, 3 * S).is_ok());
    }

    #[test]
    fn give_back_refunds_and_charge_puts_into_debt() {
        let g = Gcra::new("tpm", 600.0, 60.0, 100).unwrap();
        assert!(g.try_take(100, 0).is_ok());
        g.give_back(50);
        assert!(g.try_take(50, 0).is_ok());
        g.charge(20, 0);
        assert_eq!(g.ready_at(1, 0), 2 * S + 100 * MS);
    }

    #[test]
    fn rejects_bad_rates() {
        assert!(Gcra::new("rps", 0.0, 1.0, 1).is_err());
        assert!(Gcra::new("rps", -3.0, 1.0, 1).is_err());
        assert!(Gcra::new("rps", f64::NAN, 1.0, 1).is_err());
        assert!(Gcra::new("rps", f64::INFINITY, 1.0, 1).is_err());
        assert!(Gcra::new("rps", 1.0, 1.0, 0).is_err());
    }

    #[test]
    fn huge_rates_do_not_overflow() {
        let g = Gcra::new("rps", 1e15, 1.0, u64::MAX / 8)
            .unwrap_or_else(|_| Gcra::new("rps", 1e15, 1.0, 1000).unwrap());
        assert!(g.try_take(1, u64::MAX / 2).is_ok());
    }
}
