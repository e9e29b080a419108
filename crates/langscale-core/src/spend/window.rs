//! Time windows of a budget: which slot a moment falls in, which slots still count, and when
//! the oldest counted spend stops counting. A rolling window is 60 slots (a second: 1/60 s
//! each; a minute: one second each; a month: 30 days of 12 hours), so spend leaves it at most
//! a sixtieth of the window early. A calendar window is one slot: the current UTC second,
//! minute, hour, day or month.

use std::time::Duration;

use serde::Deserialize;

/// The length of a budget window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
    Month,
}

/// Rolling windows are cut into this many slots.
pub const SLOTS: u64 = 60;

const MICROS_PER_SEC: u64 = 1_000_000;

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The window's length in microseconds (a rolling month is 30 days).
    pub fn micros(self) -> u64 {
        MICROS_PER_SEC
            * match self {
                Self::Second => 1,
                Self::Minute => 60,
                Self::Hour => 3600,
                Self::Day => 86_400,
                Self::Month => 30 * 86_400,
            }
    }
}

/// A window as a meter counts it: rolling or calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub window: Window,
    pub calendar: bool,
}

impl Span {
    /// The slot `now` (Unix microseconds, UTC) falls in.
    pub fn slot(self, now: u64) -> u64 {
        match (self.calendar, self.window) {
            (true, Window::Month) => month_index(now),
            (true, w) => now / w.micros(),
            (false, w) => now / (w.micros() / SLOTS),
        }
    }

    /// Whether spend booked in slot `slot` still counts at slot `current`.
    pub fn counts(self, slot: u64, current: u64) -> bool {
        if self.calendar {
            slot == current
        } else {
            slot + SLOTS > current
        }
    }

    /// When spend booked in `slot` stops counting, in Unix microseconds.
    pub fn expires(self, slot: u64) -> u64 {
        match (self.calendar, self.window) {
            (true, Window::Month) => month_start(slot + 1),
            (true, w) => (slot + 1).saturating_mul(w.micros()),
            (false, w) => (slot + SLOTS).saturating_mul(w.micros() / SLOTS),
        }
    }

    /// The Redis form: `<window>:<c|r>`.
    pub fn tag(self) -> String {
        format!(
            "{}:{}",
            self.window.as_str(),
            if self.calendar { 'c' } else { 'r' }
        )
    }
}

/// Days since 1970-01-01 to (year, month 1..=12); Howard Hinnant's civil_from_days.
fn civil(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1))
}

/// (year, month 1..=12) to days since 1970-01-01 of its first day; days_from_civil.
fn days_from_civil(year: i64, month: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Months since January 1970 of a Unix time in microseconds.
fn month_index(now: u64) -> u64 {
    let days = i64::try_from(now / (86_400 * MICROS_PER_SEC)).unwrap_or(i64::MAX / 2);
    let (year, month) = civil(days);
    u64::try_from((year - 1970) * 12 + i64::from(month) - 1).unwrap_or(0)
}

/// Unix microseconds of the first moment of month `index` (months since January 1970).
fn month_start(index: u64) -> u64 {
    let index = i64::try_from(index).unwrap_or(i64::MAX / 24);
    let year = 1970 + index / 12;
    let month = u32::try_from(index % 12 + 1).unwrap_or(1);
    let days = days_from_civil(year, month);
    u64::try_from(days)
        .unwrap_or(0)
        .saturating_mul(86_400 * MICROS_PER_SEC)
}

/// Microseconds to a `Duration`.
pub fn micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400 * MICROS_PER_SEC;

    #[test]
    fn calendar_months_start_on_the_first() {
        // 2026-02-14 12:00 UTC
        let t = 20_498 * DAY + 12 * 3600 * MICROS_PER_SEC;
        let span = Span {
            window: Window::Month,
            calendar: true,
        };
        let slot = span.slot(t);
        assert_eq!(slot, (2026 - 1970) * 12 + 1);
        // 2026-03-01 is day 20_513.
        assert_eq!(span.expires(slot), 20_513 * DAY);
        assert!(span.counts(slot, span.slot(20_513 * DAY - 1)));
        assert!(!span.counts(slot, span.slot(20_513 * DAY)));
    }

    #[test]
    fn civil_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m) = civil(days);
            let first = days_from_civil(y, m);
            assert!(first <= days && days - first < 31, "{days}: {y}-{m}");
        }
    }

    #[test]
    fn rolling_spend_counts_for_the_window_then_leaves() {
        let span = Span {
            window: Window::Minute,
            calendar: false,
        };
        let t = 1_000 * MICROS_PER_SEC;
        let slot = span.slot(t);
        assert!(span.counts(slot, span.slot(t + 59 * MICROS_PER_SEC)));
        assert!(!span.counts(slot, span.slot(t + 60 * MICROS_PER_SEC)));
        assert_eq!(span.expires(slot), t + 60 * MICROS_PER_SEC);
    }
}
