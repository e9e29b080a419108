//! Routing, retry and fallback for one logical chat model spread over several deployments.
//! A shared [`Router`] holds every deployment's live state (in-flight calls, latency, breaker,
//! rate-limit cool-down, counters); each request runs an [`Execution`], a state machine that says
//! what to do next ([`Step`]) and takes each attempt's [`Outcome`] back. The caller performs the
//! calls and the sleeps; every decision is made here, with time from the injected clock.
//!
//! A caller's loop, in outline (hedging needs a caller that can hold two calls in flight):
//!
//! ```text
//! let mut exec = router.start(info);
//! loop {
//!     match exec.next() {
//!         Step::Call { attempt, deployment, timeout, .. } => start the call; report its outcome
//!                                                            with exec.report(attempt, outcome)
//!         Step::Wait(at_most) => wait for a call in flight to finish (report it), or until
//!                                `at_most` passes, then ask again
//!         Step::Sleep(d) => sleep d, then ask again
//!         Step::Done { attempt, .. } => return that attempt's result; cancel any other call
//!         Step::Fail(reason) => raise reason.last_error()'s original exception, or the reason
//!     }
//! }
//! ```

mod backoff;
mod breaker;
mod budget;
pub mod classify;
mod deployment;
mod execution;
mod router;
mod run;
mod shared_breaker;
mod stats;
mod strategy;
mod tenants;

#[cfg(test)]
mod tests;

pub use backoff::RetryPolicy;
pub use breaker::{
    Admission, Breaker, BreakerConfig, BreakerState, BreakerTransitions, BreakerWindow, ProbeToken,
};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use deployment::{Deployment, RequestInfo, Usage};
pub use execution::{
    AttemptError, AttemptId, AttemptKind, ErrorKind, Execution, FailReason, Outcome, Step,
};
pub use router::{DeploymentSnapshot, FailureCounts, Router, RouterConfig, RouterSnapshot};
pub(crate) use run::blocking_if;
pub use run::{Action, Granted, Limits, PermitRequest, Run, Spend};
pub use shared_breaker::{SharedBreakers, BREAKER_POLL};
pub use stats::{ErrorCounts, LatencySummary};
pub use strategy::Strategy;
pub use tenants::{
    TenantOutcome, TenantSnapshot, DEFAULT_TOP_TENANTS, MAX_TOP_TENANTS, OTHER_TENANT,
};

/// A router configuration that cannot work, naming the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Config(String),
}

/// Clock nanoseconds in a `Duration`, saturating rather than overflowing.
fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
