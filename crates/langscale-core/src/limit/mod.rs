//! Rate limiting: GCRA buckets for requests and tokens, a concurrency cap, and a wait queue
//! that wakes waiters exactly when their turn is due, in priority order.

mod any;
mod fair;
mod gcra;
mod limiter;
mod shared;

pub use any::{AnyLimiter, AnyPermit};
pub use gcra::Gcra;
pub use limiter::{Ask, Limiter, LimiterConfig, LimiterStats, Permit, Poll, Priority, Ticket};
pub use shared::{SharedLimiter, SharedLimiterConfig, SharedPermit, SharedStats};

/// What can go wrong when limiting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    /// A setting or a request that can never be satisfied.
    #[error("{0}")]
    Config(String),
    /// The wait exceeded the caller's timeout.
    #[error("rate limit wait exceeded the timeout of {0:.3} s")]
    Timeout(f64),
    /// A tenant, user or global budget refused the call (`spend`).
    #[error("{0}")]
    Budget(Box<crate::spend::Exceeded>),
}
