//! Tenant quotas and budgets: a hierarchy global → tenant → user, each level with requests
//! and tokens per minute, a concurrency cap and budgets in USD or tokens over a window.
//! Enforced by reservation: a call reserves its estimated cost at every level at once (one
//! lock here, one Lua script in Redis: no check-then-increment race), then settles with its
//! real usage or releases; a reservation never settled expires. In Redis, a process leases a
//! slice of each budget and reserves against it without a round trip (`lease`). (Not the
//! router's retry budget, which is `route::budget`.)

mod config;
mod lease;
mod ledger;
mod shared;
mod shared_ledger;
mod window;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use config::{BudgetCap, LevelConfig, OnOver, RedisDown, SpendConfig};
pub use lease::LeaseStats;
pub use ledger::{Ledger, LevelReport, Report, UnixClock};
pub use shared::{SharedMeter, SharedRefusal, SharedSpend};
pub use shared_ledger::{SharedLedger, SharedLedgerStats};
pub use window::{Span, Window};

use crate::clock::Clock;
use crate::limit::LimitError;

/// Who a call is for. No tenant: only the global level applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Who {
    pub tenant: Option<String>,
    pub user: Option<String>,
}

impl Who {
    pub fn new(tenant: Option<&str>, user: Option<&str>) -> Self {
        Self {
            tenant: tenant.map(str::to_owned),
            user: user.filter(|_| tenant.is_some()).map(str::to_owned),
        }
    }
}

/// What a call costs (or is estimated to cost).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub requests: u64,
    pub tokens: u64,
    pub usd: f64,
}

/// Which level of the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Global,
    Tenant,
    User,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Tenant => "tenant",
            Self::User => "user",
        }
    }
}

/// What a meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Requests,
    Tokens,
    Usd,
    /// Calls in flight (a concurrency cap): reservations held, no window.
    InFlight,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Usd => "usd",
            Self::InFlight => "concurrency",
        }
    }

    /// How much of this unit a cost uses.
    pub fn of(self, cost: &Cost) -> f64 {
        match self {
            Self::Requests | Self::InFlight => cost.requests as f64,
            Self::Tokens => cost.tokens as f64,
            Self::Usd => cost.usd,
        }
    }
}

/// One limit of one level: a unit over a span (or in flight), up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meter {
    pub unit: Unit,
    pub span: Option<Span>,
    pub limit: f64,
}

impl Meter {
    /// Names the budget as an error does: "usd per day (calendar)".
    pub fn describe(&self) -> String {
        match self.span {
            None => format!("{} {}", self.unit.as_str(), self.limit),
            Some(s) => format!(
                "{} per {} ({})",
                self.unit.as_str(),
                s.window.as_str(),
                if s.calendar { "calendar" } else { "rolling" }
            ),
        }
    }

    /// The state key of this meter within its level (kept across config updates that only
    /// change the limit).
    pub fn key(&self) -> String {
        match self.span {
            None => self.unit.as_str().to_owned(),
            Some(s) => format!("{}:{}", self.unit.as_str(), s.tag()),
        }
    }
}

/// A refusal: which budget, how much is spent against which limit, when room comes back.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub level: Level,
    pub budget: String,
    pub spent: f64,
    pub limit: f64,
    /// How long until enough of the spend leaves the window (None: when calls in flight end,
    /// or when the request could never fit).
    pub resets_in: Option<Duration>,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match (&self.tenant, &self.user) {
            (Some(t), Some(u)) => format!("tenant {t:?}, user {u:?}"),
            (Some(t), None) => format!("tenant {t:?}"),
            _ => "all tenants".to_owned(),
        };
        write!(
            f,
            "budget exceeded for {who} at the {} level: {} spent {} of {}",
            self.level.as_str(),
            self.budget,
            trim(self.spent),
            trim(self.limit)
        )?;
        match self.resets_in {
            Some(d) => write!(f, "; resets in {:.1} s", d.as_secs_f64()),
            None => write!(f, "; frees up as calls in flight finish"),
        }
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A meter that has used `near` (a fraction) of `limit` is near it; a limit of 0 always is.
pub(crate) fn near_limit(used: f64, limit: f64, near: f64) -> bool {
    limit <= 0.0 || used >= limit * near
}

/// Budgets as the router takes them: held in this process, or in Redis and shared by every
/// process on it (one Lua script per reserve/settle/release). Cloning shares.
#[derive(Debug, Clone)]
pub enum Budgets {
    Local(Arc<Ledger>),
    Shared(Arc<SharedLedger>),
}

/// What the router needs from a refusal.
#[derive(Debug)]
pub enum Refusal {
    /// Over a level whose policy is to wait: try again after this long, up to `timeout`.
    Wait {
        exceeded: Box<Exceeded>,
        retry_after: Duration,
        timeout: Duration,
    },
    /// Over a level whose policy is to degrade: deployments tagged cheaper may still serve.
    Degrade(Box<Exceeded>),
    /// Raise.
    Raise(Box<Exceeded>),
}

impl Refusal {
    pub fn exceeded(&self) -> &Exceeded {
        match self {
            Self::Wait { exceeded, .. } | Self::Degrade(exceeded) | Self::Raise(exceeded) => {
                exceeded
            }
        }
    }

    pub fn into_error(self) -> LimitError {
        LimitError::Budget(match self {
            Self::Wait { exceeded, .. } | Self::Degrade(exceeded) | Self::Raise(exceeded) => {
                exceeded
            }
        })
    }
}

/// A reservation held for one call: settle it with the real cost, or drop it to release.
#[derive(Debug)]
pub struct Reservation {
    budgets: Budgets,
    id: u64,
    who: Who,
    estimate: Cost,
    settled: bool,
}

impl Reservation {
    pub fn estimate(&self) -> Cost {
        self.estimate
    }

    /// Charge `cost` instead of the estimate. Idempotent: the reservation is consumed.
    pub fn settle(mut self, cost: Cost) {
        self.settled = true;
        match &self.budgets {
            Budgets::Local(l) => l.settle(self.id, &self.who, cost),
            Budgets::Shared(s) => s.settle(self.id, &self.who, cost),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        match &self.budgets {
            Budgets::Local(l) => l.release(self.id),
            Budgets::Shared(s) => s.release(self.id),
        }
    }
}

impl Budgets {
    pub fn local(config: SpendConfig, clock: Arc<dyn Clock>) -> Result<Self, LimitError> {
        Ok(Self::Local(Arc::new(Ledger::new(config, clock)?)))
    }

    /// Budgets in Redis through `store`, shared by every process using the same store prefix.
    pub fn shared(
        config: SpendConfig,
        store: crate::store::Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LimitError> {
        Ok(Self::Shared(Arc::new(SharedLedger::new(
            config, store, clock,
        )?)))
    }

    pub fn config(&self) -> Arc<SpendConfig> {
        match self {
            Self::Local(l) => l.config(),
            Self::Shared(s) => s.config(),
        }
    }

    /// Replace the configuration; spend so far is kept.
    pub fn update(&self, config: SpendConfig) -> Result<(), LimitError> {
        match self {
            Self::Local(l) => l.update(config),
            Self::Shared(s) => s.update(config),
        }
    }

    /// Reserve `cost` for `who` at every level now, or say why not. `cheap`: the call goes
    /// to a deployment tagged cheaper (a level whose policy is degrade admits it).
    pub fn reserve(&self, who: &Who, cost: Cost, cheap: bool) -> Result<Reservation, Refusal> {
        let id = match self {
            Self::Local(l) => l.reserve(who, cost, cheap)?,
            Self::Shared(s) => s.reserve(who, cost, cheap)?,
        };
        Ok(Reservation {
            budgets: self.clone(),
            id,
            who: who.clone(),
            estimate: cost,
            settled: false,
        })
    }

    /// A call answered from a cache: it cost nothing and saved `cost`.
    pub fn saved(&self, who: &Who, cost: Cost) {
        match self {
            Self::Local(l) => l.saved(who, cost),
            Self::Shared(s) => s.saved(who, cost),
        }
    }

    /// A USD budget of `who` has used its `near` fraction (config `prefer_cheaper_near`):
    /// route to the cheapest deployments first, to make what is left last. In Redis, as
    /// last seen by this process (reservations, settles and leases report it).
    pub fn running_low(&self, who: &Who) -> bool {
        match self {
            Self::Local(l) => l.running_low(who),
            Self::Shared(s) => s.running_low(who),
        }
    }

    /// Spend, limits and what is left, per level seen.
    pub fn report(&self) -> Report {
        match self {
            Self::Local(l) => l.report(),
            Self::Shared(s) => s.report(),
        }
    }
}
