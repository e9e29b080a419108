//! Counters of one simulated provider: what it was asked and what it answered, in total and
//! per second since it started (for charts of calls over time).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// Seconds of per-second history kept (one day); later seconds add to the last one.
const TIMELINE_SECONDS: usize = 86_400;

/// How a request ended, for counters and the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    RateLimited,
    ServerError,
    Unavailable,
    Timeout,
    Reset,
    ClientError,
    /// The client went away before the answer was complete.
    Cancelled,
}

#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    chat: AtomicU64,
    streams: AtomicU64,
    embeddings: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    unavailable: AtomicU64,
    timeouts: AtomicU64,
    hangs: AtomicU64,
    resets: AtomicU64,
    client_errors: AtomicU64,
    cancelled: AtomicU64,
    tool_calls: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    in_flight: AtomicU64,
    /// Per second: requests, ok, rate limited, errors (5xx, timeouts, resets).
    timeline: Mutex<Vec<[u64; 4]>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderStats {
    pub requests: u64,
    pub chat_requests: u64,
    pub stream_requests: u64,
    pub embedding_requests: u64,
    pub ok: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub unavailable: u64,
    pub timeouts: u64,
    pub hangs: u64,
    pub resets: u64,
    pub client_errors: u64,
    pub cancelled: u64,
    pub tool_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub in_flight: u64,
}

/// The request kinds counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Stream,
    Embedding,
    Other,
}

impl Counters {
    pub fn start(&self, kind: Kind, second: usize) {
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        match kind {
            Kind::Chat => self.chat.fetch_add(1, Relaxed),
            Kind::Stream => {
                self.chat.fetch_add(1, Relaxed);
                self.streams.fetch_add(1, Relaxed)
            }
            Kind::Embedding => self.embeddings.fetch_add(1, Relaxed),
            Kind::Other => 0,
        };
        self.bump(second, 0);
    }

    pub fn hang(&self) {
        self.hangs.fetch_add(1, Relaxed);
    }

    pub fn tokens(&self, prompt: u64, completion: u64, tool_calls: u64) {
        self.prompt_tokens.fetch_add(prompt, Relaxed);
        self.completion_tokens.fetch_add(completion, Relaxed);
        self.tool_calls.fetch_add(tool_calls, Relaxed);
    }

    pub fn finish(&self, outcome: Outcome, second: usize) {
        self.in_flight.fetch_sub(1, Relaxed);
        let (counter, column) = match outcome {
            Outcome::Ok => (&self.ok, 1),
            Outcome::RateLimited => (&self.rate_limited, 2),
            Outcome::ServerError => (&self.server_errors, 3),
            Outcome::Unavailable => (&self.unavailable, 3),
            Outcome::Timeout => (&self.timeouts, 3),
            Outcome::Reset => (&self.resets, 3),
            Outcome::ClientError => (&self.client_errors, 4),
            Outcome::Cancelled => (&self.cancelled, 4),
        };
        counter.fetch_add(1, Relaxed);
        if column < 4 {
            self.bump(second, column);
        }
    }

    fn bump(&self, second: usize, column: usize) {
        let mut t = self.timeline.lock().unwrap_or_else(PoisonError::into_inner);
        let second = second.min(TIMELINE_SECONDS - 1);
        if t.len() <= second {
            t.resize(second + 1, [0; 4]);
        }
        t[second][column] += 1;
    }

    pub fn snapshot(&self) -> ProviderStats {
        ProviderStats {
            requests: self.requests.load(Relaxed),
            chat_requests: self.chat.load(Relaxed),
            stream_requests: self.streams.load(Relaxed),
            embedding_requests: self.embeddings.load(Relaxed),
            ok: self.ok.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            server_errors: self.server_errors.load(Relaxed),
            unavailable: self.unavailable.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            hangs: self.hangs.load(Relaxed),
            resets: self.resets.load(Relaxed),
            client_errors: self.client_errors.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            tool_calls: self.tool_calls.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            completion_tokens: self.completion_tokens.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
        }
    }

    /// Per second since start: `[requests, ok, rate_limited, errors]`.
    pub fn timeline(&self) -> Vec<[u64; 4]> {
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Zero everything except requests in flight (they still finish and are counted).
    pub fn reset(&self) {
        for c in [
            &self.requests,
            &self.chat,
            &self.streams,
            &self.embeddings,
            &self.ok,
            &self.rate_limited,
            &self.server_errors,
            &self.unavailable,
            &self.timeouts,
            &self.hangs,
            &self.resets,
            &self.client_errors,
            &self.cancelled,
            &self.tool_calls,
            &self.prompt_tokens,
            &self.completion_tokens,
        ] {
            c.store(0, Relaxed);
        }
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
