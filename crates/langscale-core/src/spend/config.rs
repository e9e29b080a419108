//! The budgets' settings, as a dict or TOML file spells them (serde, unknown keys refused),
//! checked once: every bad value is a `LimitError::Config` naming it.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::window::{Span, Window};
use super::{Level, Meter, Unit, Who};
use crate::limit::LimitError;

/// A budget over a window: USD and/or tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetCap {
    #[serde(default)]
    pub usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<f64>,
    pub window: Window,
    /// Calendar (the current UTC minute/hour/day/month) rather than rolling.
    #[serde(default)]
    pub calendar: bool,
}

/// What a level does when a call would go over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOver {
    /// Raise `BudgetExceeded`.
    #[default]
    Raise,
    /// Wait for room, up to `wait_timeout`, then raise.
    Wait,
    /// Serve only from deployments tagged cheaper (`degrade_tag`); raise if there is none.
    Degrade,
}

/// One level's limits.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub requests_per_minute: Option<f64>,
    #[serde(default)]
    pub tokens_per_minute: Option<f64>,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub budgets: Vec<BudgetCap>,
    #[serde(default)]
    pub on_over: OnOver,
    /// Seconds a call waits for room under `on_over = "wait"`.
    #[serde(default)]
    pub wait_timeout: Option<f64>,
    /// The time budget, in seconds, of a request for this level when its caller gives
    /// none (the most specific level's wins over the model's own `deadline`).
    #[serde(default)]
    pub deadline: Option<f64>,
}

/// What shared budgets do while Redis is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisDown {
    /// Refuse every call that has a budget (raise `BudgetExceeded`... naming the outage).
    FailClosed,
    /// Admit from this process's share (`local_share`) of each limit, and write the spend
    /// back to Redis when it is up again.
    #[default]
    LocalShare,
}

/// Every setting of a set of budgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendConfig {
    #[serde(default)]
    pub global: Option<LevelConfig>,
    /// For tenants without an entry in `tenants`.
    #[serde(default)]
    pub tenant_default: Option<LevelConfig>,
    #[serde(default)]
    pub tenants: HashMap<String, LevelConfig>,
    /// For users without an entry in `users`.
    #[serde(default)]
    pub user_default: Option<LevelConfig>,
    /// By "tenant/user".
    #[serde(default)]
    pub users: HashMap<String, LevelConfig>,
    /// Count and report, never refuse.
    #[serde(default)]
    pub shadow: bool,
    /// The fraction of a limit from which a level is reported near it.
    #[serde(default = "default_near")]
    pub near: f64,
    /// Output tokens reserved for a call that sets no `max_tokens`.
    #[serde(default = "default_output_estimate")]
    pub output_estimate: u64,
    /// Seconds after which a reservation never settled stops holding budget.
    #[serde(default = "default_ttl")]
    pub reservation_ttl: f64,
    /// Once a USD budget of a request's tenant (any level) has used its `near` fraction, the
    /// router tries the cheapest deployments for it first, before the budget runs out.
    #[serde(
        default = "default_prefer_cheaper",
        deserialize_with = "prefer_cheaper_flag"
    )]
    pub prefer_cheaper_near: bool,
    /// Deployments with this tag serve a degraded level.
    #[serde(default = "default_tag")]
    pub degrade_tag: String,
    #[serde(default)]
    pub on_redis_down: RedisDown,
    /// This process's share of each limit while Redis is down.
    #[serde(default = "default_share")]
    pub local_share: f64,
    /// Budgets in Redis: take leases (a slice of each budget per round trip) and reserve and
    /// settle against them in this process; false: one script per reserve and per settle.
    #[serde(default = "default_lease", deserialize_with = "lease_flag")]
    pub lease: bool,
    /// The most of the room left beyond a call that one lease may take.
    #[serde(
        default = "default_lease_share",
        deserialize_with = "lease_share_number"
    )]
    pub lease_share: f64,
}

fn default_near() -> f64 {
    0.8
}
fn default_output_estimate() -> u64 {
    256
}
fn default_ttl() -> f64 {
    600.0
}
fn default_tag() -> String {
    "cheap".into()
}
fn default_share() -> f64 {
    0.25
}
fn default_lease() -> bool {
    true
}
fn default_lease_share() -> f64 {
    0.1
}

/// `lease_share` is a number; anything else is refused naming it.
fn lease_share_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| {
            serde::de::Error::custom(format!("lease_share must be a number, got {n}"))
        }),
        other => Err(serde::de::Error::custom(format!(
            "lease_share must be a number, got {other}"
        ))),
    }
}

/// A flag is true or false; anything else is refused naming the key (serde alone would
/// not say which).
fn flag<'de, D: serde::Deserializer<'de>>(d: D, key: &str) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        other => Err(serde::de::Error::custom(format!(
            "{key} must be true or false, got {other}"
        ))),
    }
}

fn lease_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    flag(d, "lease")
}

fn prefer_cheaper_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    flag(d, "prefer_cheaper_near")
}

fn default_prefer_cheaper() -> bool {
    true
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self {
            global: None,
            tenant_default: None,
            tenants: HashMap::new(),
            user_default: None,
            users: HashMap::new(),
            shadow: false,
            near: default_near(),
            output_estimate: default_output_estimate(),
            reservation_ttl: default_ttl(),
            prefer_cheaper_near: default_prefer_cheaper(),
            degrade_tag: default_tag(),
            on_redis_down: RedisDown::default(),
            local_share: default_share(),
            lease: default_lease(),
            lease_share: default_lease_share(),
        }
    }
}

fn bad(msg: String) -> LimitError {
    LimitError::Config(msg)
}

fn positive(name: &str, value: Option<f64>) -> Result<(), LimitError> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(bad(format!(
            "{name} must be a finite number at least 0, got {v}"
        ))),
        _ => Ok(()),
    }
}

impl LevelConfig {
    fn check(&self, name: &str) -> Result<(), LimitError> {
        positive(
            &format!("{name}.requests_per_second"),
            self.requests_per_second,
        )?;
        positive(
            &format!("{name}.requests_per_minute"),
            self.requests_per_minute,
        )?;
        positive(&format!("{name}.tokens_per_minute"), self.tokens_per_minute)?;
        positive(&format!("{name}.wait_timeout"), self.wait_timeout)?;
        if let Some(d) = self.deadline {
            if !(d.is_finite() && d > 0.0 && Duration::try_from_secs_f64(d).is_ok()) {
                return Err(bad(format!(
                    "{name}.deadline must be a number of seconds above 0, got {d}"
                )));
            }
        }
        for (i, b) in self.budgets.iter().enumerate() {
            positive(&format!("{name}.budgets[{i}].usd"), b.usd)?;
            positive(&format!("{name}.budgets[{i}].tokens"), b.tokens)?;
            if b.usd.is_none() && b.tokens.is_none() {
                return Err(bad(format!(
                    "{name}.budgets[{i}] needs usd or tokens (or both)"
                )));
            }
        }
        Ok(())
    }

    /// Every limit of this level as meters.
    pub fn meters(&self) -> Vec<Meter> {
        let minute = Some(Span {
            window: Window::Minute,
            calendar: false,
        });
        let mut out = Vec::new();
        if let Some(l) = self.requests_per_second {
            out.push(Meter {
                unit: Unit::Requests,
                span: Some(Span {
                    window: Window::Second,
                    calendar: false,
                }),
                limit: l,
            });
        }
        if let Some(l) = self.requests_per_minute {
            out.push(Meter {
                unit: Unit::Requests,
                span: minute,
                limit: l,
            });
        }
        if let Some(l) = self.tokens_per_minute {
            out.push(Meter {
                unit: Unit::Tokens,
                span: minute,
                limit: l,
            });
        }
        if let Some(c) = self.concurrency {
            out.push(Meter {
                unit: Unit::InFlight,
                span: None,
                limit: f64::from(c),
            });
        }
        for b in &self.budgets {
            let span = Some(Span {
                window: b.window,
                calendar: b.calendar,
            });
            if let Some(l) = b.usd {
                out.push(Meter {
                    unit: Unit::Usd,
                    span,
                    limit: l,
                });
            }
            if let Some(l) = b.tokens {
                out.push(Meter {
                    unit: Unit::Tokens,
                    span,
                    limit: l,
                });
            }
        }
        out
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.wait_timeout.unwrap_or(30.0)).unwrap_or(Duration::MAX)
    }
}

/// One level a call is counted at: its state key and its limits (None: counted, unlimited).
#[derive(Debug, Clone)]
pub struct LevelOf<'a> {
    pub level: Level,
    pub key: String,
    pub config: Option<&'a LevelConfig>,
}

impl SpendConfig {
    pub fn from_json(text: &str) -> Result<Self, LimitError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                bad(format!("budgets: {inner}"))
            } else {
                bad(format!("budgets: {path}: {inner}"))
            }
        })?;
        de.end().map_err(|e| bad(format!("budgets: {e}")))?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), LimitError> {
        if let Some(g) = &self.global {
            g.check("global")?;
        }
        if let Some(t) = &self.tenant_default {
            t.check("tenant_default")?;
        }
        if let Some(u) = &self.user_default {
            u.check("user_default")?;
        }
        for (name, t) in &self.tenants {
            t.check(&format!("tenants.{name}"))?;
        }
        for (name, u) in &self.users {
            if !name.contains('/') {
                return Err(bad(format!("users keys are \"tenant/user\", got {name:?}")));
            }
            u.check(&format!("users.{name}"))?;
        }
        if !(self.near.is_finite() && self.near > 0.0 && self.near <= 1.0) {
            return Err(bad(format!(
                "near must be above 0 and at most 1, got {}",
                self.near
            )));
        }
        if !(self.reservation_ttl.is_finite() && self.reservation_ttl >= 0.1) {
            return Err(bad(format!(
                "reservation_ttl must be at least 0.1 s, got {}",
                self.reservation_ttl
            )));
        }
        if !(self.local_share.is_finite() && self.local_share > 0.0 && self.local_share <= 1.0) {
            return Err(bad(format!(
                "local_share must be above 0 and at most 1, got {}",
                self.local_share
            )));
        }
        if !(self.lease_share.is_finite() && self.lease_share > 0.0 && self.lease_share <= 1.0) {
            return Err(bad(format!(
                "lease_share must be above 0 and at most 1, got {}",
                self.lease_share
            )));
        }
        Ok(())
    }

    /// The time budget of a request for `who` whose caller gives none: the user level's,
    /// else the tenant's, else the global level's `deadline` (None: the model's own).
    pub fn deadline_for(&self, who: &Who) -> Option<Duration> {
        let tenant = who
            .tenant
            .as_deref()
            .and_then(|t| self.tenants.get(t).or(self.tenant_default.as_ref()));
        let user = who
            .tenant
            .as_deref()
            .zip(who.user.as_deref())
            .and_then(|(t, u)| {
                let own = if self.users.is_empty() {
                    None
                } else {
                    self.users.get(&format!("{t}/{u}"))
                };
                own.or(self.user_default.as_ref())
            });
        [user, tenant, self.global.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|level| level.deadline)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// The levels a call for `who` is counted at, most general first.
    pub fn levels(&self, who: &Who) -> Vec<LevelOf<'_>> {
        let mut out = vec![LevelOf {
            level: Level::Global,
            key: "g".into(),
            config: self.global.as_ref(),
        }];
        if let Some(t) = &who.tenant {
            out.push(LevelOf {
                level: Level::Tenant,
                key: format!("t:{t}"),
                config: self.tenants.get(t).or(self.tenant_default.as_ref()),
            });
            if let Some(u) = &who.user {
                let name = format!("{t}/{u}");
                let config = self.users.get(&name).or(self.user_default.as_ref());
                out.push(LevelOf {
                    level: Level::User,
                    key: format!("u:{name}"),
                    config,
                });
            }
        }
        out
    }

    /// The limits of a level by its state key ("g", "t:<tenant>", "u:<tenant>/<user>").
    pub fn level(&self, key: &str) -> Option<&LevelConfig> {
        if key == "g" {
            return self.global.as_ref();
        }
        if let Some(t) = key.strip_prefix("t:") {
            return self.tenants.get(t).or(self.tenant_default.as_ref());
        }
        key.strip_prefix("u:")
            .and_then(|u| self.users.get(u).or(self.user_default.as_ref()))
    }

    pub fn ttl(&self) -> Duration {
        Duration::try_from_secs_f64(self.reservation_ttl).unwrap_or(Duration::from_secs(600))
    }
}
