//! Requests- and tokens-per-minute quotas of a simulated provider, the way OpenAI describes
//! its own: buckets that refill continuously to one minute's worth, a request admitted only
//! when both hold enough, and the figures for the `x-ratelimit-*` headers.

/// One continuously refilling bucket of `capacity` per minute.
#[derive(Debug, Clone)]
struct Bucket {
    /// The advertised per-minute limit.
    limit: f64,
    /// What may be used at once: `burst_seconds` worth of the rate.
    capacity: f64,
    per_second: f64,
    level: f64,
    at: f64,
}

impl Bucket {
    fn new(per_minute: f64, burst_seconds: f64) -> Self {
        let capacity = (per_minute * burst_seconds / 60.0).max(1.0);
        Self {
            limit: per_minute,
            capacity,
            per_second: per_minute / 60.0,
            level: capacity,
            at: 0.0,
        }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.level = (self.level + (now - self.at) * self.per_second).min(self.capacity);
            self.at = now;
        }
    }

    /// Seconds until `amount` is available (0 when it is now).
    fn wait_for(&self, amount: f64) -> f64 {
        if self.level >= amount {
            0.0
        } else {
            (amount - self.level) / self.per_second
        }
    }

    /// Seconds until the bucket is full again.
    fn reset(&self) -> f64 {
        (self.capacity - self.level).max(0.0) / self.per_second
    }
}

/// What the quota said about one request; the figures go into the response headers.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaDecision {
    /// `None`: admitted. `Some(seconds)`: refused, retry after this long.
    pub retry_after: Option<f64>,
    /// Which quota refused it: "requests" or "tokens".
    pub exceeded: Option<&'static str>,
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub reset_requests: Option<f64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens: Option<f64>,
}

/// Requests and tokens per minute; either may be absent (unlimited).
#[derive(Debug, Clone)]
pub struct Quota {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Quota {
    /// Buckets holding `burst_seconds` worth of each rate (60: a whole minute, as OpenAI).
    pub fn new(
        requests_per_minute: Option<f64>,
        tokens_per_minute: Option<f64>,
        burst_seconds: f64,
    ) -> Self {
        Self {
            requests: requests_per_minute.map(|r| Bucket::new(r, burst_seconds)),
            tokens: tokens_per_minute.map(|t| Bucket::new(t, burst_seconds)),
        }
    }

    pub fn is_limited(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some()
    }

    /// Admit a request costing `tokens` at `now` seconds (monotonic), or say how long to wait.
    /// A request larger than the whole token quota is refused with the time to a full bucket.
    pub fn admit(&mut self, now: f64, tokens: u64) -> QuotaDecision {
        let cost = tokens as f64;
        let mut wait_requests = 0.0;
        let mut wait_tokens = 0.0;
        if let Some(b) = &mut self.requests {
            b.refill(now);
            wait_requests = b.wait_for(1.0);
        }
        if let Some(b) = &mut self.tokens {
            b.refill(now);
            wait_tokens = b.wait_for(cost.min(b.capacity));
            if cost > b.capacity {
                wait_tokens = wait_tokens.max(b.reset()).max(60.0);
            }
        }
        let refused = wait_requests > 0.0 || wait_tokens > 0.0;
        if !refused {
            if let Some(b) = &mut self.requests {
                b.level -= 1.0;
            }
            if let Some(b) = &mut self.tokens {
                b.level -= cost;
            }
        }
        let exceeded = if wait_requests > 0.0 {
            Some("requests")
        } else if wait_tokens > 0.0 {
            Some("tokens")
        } else {
            None
        };
        QuotaDecision {
            retry_after: refused.then(|| wait_requests.max(wait_tokens)),
            exceeded,
            limit_requests: self.requests.as_ref().map(|b| b.limit.round() as u64),
            remaining_requests: self
                .requests
                .as_ref()
                .map(|b| b.level.max(0.0).floor() as u64),
            reset_requests: self.requests.as_ref().map(Bucket::reset),
            limit_tokens: self.tokens.as_ref().map(|b| b.limit.round() as u64),
            remaining_tokens: self
                .tokens
                .as_ref()
                .map(|b| b.level.max(0.0).floor() as u64),
            reset_tokens: self.tokens.as_ref().map(Bucket::reset),
        }
    }

    /// Charge the difference between the estimate and the real cost (never below empty).
    pub fn settle(&mut self, estimated: u64, actual: u64) {
        if let Some(b) = &mut self.tokens {
            b.level = (b.level + estimated as f64 - actual as f64).min(b.capacity);
        }
    }
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: "1s", "6m0s", "120ms".
pub fn format_duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).ceil() as u64);
    }
    let whole = seconds.ceil() as u64;
    if whole < 60 {
        return format!("{whole}s");
    }
    let (h, m, s) = (whole / 3600, (whole % 3600) / 60, whole % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_admits_a_minute_then_refills() {
        let mut q = Quota::new(Some(60.0), None, 60.0);
        for i in 0..60 {
            let d = q.admit(0.0, 0);
            assert_eq!(d.retry_after, None, "request {i}");
        }
        let d = q.admit(0.0, 0);
        assert_eq!(d.exceeded, Some("requests"));
        let after = d.retry_after.unwrap_or_default();
        assert!((after - 1.0).abs() < 1e-9, "{after}");
        assert_eq!(d.remaining_requests, Some(0));
        assert_eq!(d.limit_requests, Some(60));
        assert_eq!(q.admit(0.5, 0).exceeded, Some("requests"));
        assert_eq!(q.admit(1.0, 0).retry_after, None);
    }

    #[test]
    fn tokens_per_minute_counts_the_cost() {
        let mut q = Quota::new(None, Some(600.0), 60.0);
        assert_eq!(q.admit(0.0, 500).retry_after, None);
        let d = q.admit(0.0, 200);
        assert_eq!(d.exceeded, Some("tokens"));
        // 100 tokens left, 100 more come in 10 s.
        let after = d.retry_after.unwrap_or_default();
        assert!((after - 10.0).abs() < 1e-9, "{after}");
        assert_eq!(d.remaining_tokens, Some(100));
        q.settle(500, 300);
        assert_eq!(q.admit(0.0, 200).retry_after, None);
        // Larger than the whole quota: refused, never admitted by waiting a little.
        assert!(q.admit(100.0, 601).retry_after.unwrap_or_default() >= 60.0);
    }

    #[test]
    fn a_short_burst_window_holds_less_but_refills_at_the_same_rate() {
        let mut q = Quota::new(Some(600.0), None, 1.0);
        for _ in 0..10 {
            assert_eq!(q.admit(0.0, 0).retry_after, None);
        }
        let d = q.admit(0.0, 0);
        assert_eq!(d.limit_requests, Some(600));
        assert!((d.retry_after.unwrap_or_default() - 0.1).abs() < 1e-9);
        assert_eq!(q.admit(0.1, 0).retry_after, None);
    }

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(format_duration(0.12), "120ms");
        assert_eq!(format_duration(1.0), "1s");
        assert_eq!(format_duration(360.0), "6m0s");
        assert_eq!(format_duration(3661.0), "1h1m1s");
    }
}
