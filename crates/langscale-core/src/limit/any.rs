//! One limiter interface: a limit held in this process or shared through Redis, taken the same
//! way (try now, wait in async code, wait blocking), so every caller accepts either.

use std::time::Duration;

use super::{Ask, LimitError, Limiter, Permit, SharedLimiter, SharedPermit};

/// A limiter of either kind. Cloning shares the same limit.
#[derive(Debug, Clone)]
pub enum AnyLimiter {
    Local(Limiter),
    Shared(SharedLimiter),
}

/// A permit of either kind: released when dropped, settled with the real usage.
#[derive(Debug)]
pub enum AnyPermit {
    Local(Permit),
    Shared(SharedPermit),
}

impl From<Limiter> for AnyLimiter {
    fn from(l: Limiter) -> Self {
        Self::Local(l)
    }
}

impl From<SharedLimiter> for AnyLimiter {
    fn from(l: SharedLimiter) -> Self {
        Self::Shared(l)
    }
}

impl AnyLimiter {
    /// A permit if one is free now, without waiting.
    pub fn try_acquire(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
    ) -> Result<Option<AnyPermit>, LimitError> {
        let ask = ask.into();
        Ok(match self {
            Self::Local(l) => l.try_acquire(tokens, ask)?.map(AnyPermit::Local),
            Self::Shared(l) => l.try_acquire(tokens, ask)?.map(AnyPermit::Shared),
        })
    }

    pub async fn acquire(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
        timeout: Option<Duration>,
    ) -> Result<AnyPermit, LimitError> {
        let ask = ask.into();
        Ok(match self {
            Self::Local(l) => AnyPermit::Local(l.acquire(tokens, ask, timeout).await?),
            Self::Shared(l) => AnyPermit::Shared(l.acquire(tokens, ask, timeout).await?),
        })
    }

    /// Waits on the calling thread (never from async code).
    pub fn acquire_blocking(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
        timeout: Option<Duration>,
    ) -> Result<AnyPermit, LimitError> {
        let ask = ask.into();
        Ok(match self {
            Self::Local(l) => AnyPermit::Local(l.acquire_blocking(tokens, ask, timeout)?),
            Self::Shared(l) => AnyPermit::Shared(l.acquire_blocking(tokens, ask, timeout)?),
        })
    }

    pub fn max_tokens(&self) -> Option<u64> {
        match self {
            Self::Local(l) => l.max_tokens(),
            Self::Shared(l) => l.max_tokens(),
        }
    }

    /// Change a tenant's share (default weight 1); a shared limit's in this process only.
    pub fn set_tenant_weight(&self, tenant: &str, weight: f64) -> Result<(), LimitError> {
        match self {
            Self::Local(l) => l.set_tenant_weight(tenant, weight),
            Self::Shared(l) => l.set_tenant_weight(tenant, weight),
        }
    }
}

impl AnyPermit {
    /// Charge the real usage instead of the estimate.
    pub fn settle(&mut self, actual_tokens: u64) {
        match self {
            Self::Local(p) => p.settle(actual_tokens),
            Self::Shared(p) => p.settle(actual_tokens),
        }
    }
}
