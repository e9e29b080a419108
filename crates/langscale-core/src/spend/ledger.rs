//! Budgets held in this process: every meter of every level a call touches is checked and
//! charged under one lock, so concurrent callers can never both pass a check that only one
//! fits (the race LiteLLM's check-then-increment has). No I/O: time comes from the clock
//! (Unix time; a fake one in tests).

use std::collections::{HashMap, VecDeque};

use foldhash::HashMap as FastMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{LevelConfig, OnOver, SpendConfig};
use super::window::Span;
use super::{near_limit, Cost, Exceeded, Level, Meter, Refusal, Unit, Who};
use crate::clock::Clock;
use crate::limit::LimitError;

/// Unix time in nanoseconds: calendar windows need the real date.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnixClock;

impl Clock for UnixClock {
    fn now_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Spend of one meter: booked per slot (with their running total), plus what reservations
/// in flight hold.
#[derive(Debug, Default)]
struct MeterState {
    held: f64,
    slots: VecDeque<(u64, f64)>,
    /// The sum of `slots` (kept as they come and go, not summed on every call).
    total: f64,
}

impl MeterState {
    fn prune(&mut self, span: Span, current: u64) {
        while let Some(&(slot, v)) = self.slots.front() {
            if span.counts(slot, current) {
                break;
            }
            self.slots.pop_front();
            self.total -= v;
        }
        if self.slots.is_empty() {
            self.total = 0.0; // no rounding left over from the additions and removals
        }
    }

    fn booked(&mut self, span: Option<Span>, now: u64) -> f64 {
        let Some(span) = span else { return 0.0 };
        self.prune(span, span.slot(now));
        self.total.max(0.0)
    }

    fn book(&mut self, span: Option<Span>, now: u64, amount: f64) {
        let Some(span) = span else { return };
        if amount <= 0.0 {
            return;
        }
        let slot = span.slot(now);
        match self.slots.back_mut() {
            Some((s, v)) if *s == slot => *v += amount,
            _ => self.slots.push_back((slot, amount)),
        }
        self.total += amount;
    }

    /// How long until `amount` more fits under `limit` (None: only when calls in flight end,
    /// or never).
    fn room_in(&self, span: Option<Span>, now: u64, limit: f64, amount: f64) -> Option<Duration> {
        let span = span?;
        let mut used: f64 = self.held + self.slots.iter().map(|(_, v)| v).sum::<f64>();
        if amount > limit {
            return None;
        }
        for (slot, v) in &self.slots {
            used -= v;
            if used + amount <= limit + EPSILON {
                return Some(super::window::micros(
                    span.expires(*slot).saturating_sub(now),
                ));
            }
        }
        None
    }
}

const EPSILON: f64 = 1e-9;

/// Counters of one level.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counters {
    pub requests: u64,
    pub refused: u64,
    /// Calls that would have been refused (shadow mode).
    pub would_refuse: u64,
    pub usd: f64,
    pub tokens: u64,
    pub saved_usd: f64,
    pub saved_tokens: u64,
    pub cache_hits: u64,
}

/// One level's state: its meters by key (a handful: a Vec, searched in place) and counters.
/// A meter keeps its state across configuration updates that only change its limit.
#[derive(Debug, Default)]
struct LevelState {
    meters: Vec<(Arc<str>, MeterState)>,
    counters: Counters,
}

impl LevelState {
    fn meter_mut(&mut self, key: &Arc<str>) -> &mut MeterState {
        let at = match self
            .meters
            .iter()
            .position(|(k, _)| Arc::ptr_eq(k, key) || k == key)
        {
            Some(i) => i,
            None => {
                self.meters.push((Arc::clone(key), MeterState::default()));
                self.meters.len() - 1
            }
        };
        &mut self.meters[at].1
    }
}

/// A tenant's level and its users' levels.
#[derive(Debug, Default)]
struct TenantState {
    level: LevelState,
    users: FastMap<String, LevelState>,
}

/// What one reservation holds on one meter.
#[derive(Debug)]
struct HeldOn {
    level: Level,
    meter: Arc<str>,
    unit: Unit,
    span: Option<Span>,
    amount: f64,
}

#[derive(Debug)]
struct Held {
    who: Who,
    on: Vec<HeldOn>,
    expires: u64,
}

#[derive(Debug, Default)]
struct State {
    global: LevelState,
    tenants: FastMap<String, TenantState>,
    holds: FastMap<u64, Held>,
    next_id: u64,
    next_expiry: u64,
}

impl State {
    /// The states of every level of `who` (global, tenant, user), made on first use: one
    /// lookup per level, no allocation once they exist.
    fn levels_mut(&mut self, who: &Who) -> LevelsMut<'_> {
        let Some(tenant) = who.tenant.as_deref() else {
            return LevelsMut {
                global: &mut self.global,
                tenant: None,
                user: None,
            };
        };
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantState::default());
        }
        let Some(t) = self.tenants.get_mut(tenant) else {
            // Not reached: inserted just before.
            return LevelsMut {
                global: &mut self.global,
                tenant: None,
                user: None,
            };
        };
        let user = match who.user.as_deref() {
            Some(user) => {
                if !t.users.contains_key(user) {
                    t.users.insert(user.to_owned(), LevelState::default());
                }
                t.users.get_mut(user)
            }
            None => None,
        };
        LevelsMut {
            global: &mut self.global,
            tenant: Some(&mut t.level),
            user,
        }
    }
}

/// The states of one caller's levels, borrowed together.
struct LevelsMut<'a> {
    global: &'a mut LevelState,
    tenant: Option<&'a mut LevelState>,
    user: Option<&'a mut LevelState>,
}

impl LevelsMut<'_> {
    fn get(&mut self, level: Level) -> Option<&mut LevelState> {
        match level {
            Level::Global => Some(&mut *self.global),
            Level::Tenant => self.tenant.as_deref_mut(),
            Level::User => self.user.as_deref_mut(),
        }
    }

    fn each(&mut self, mut f: impl FnMut(&mut LevelState)) {
        f(self.global);
        if let Some(t) = self.tenant.as_deref_mut() {
            f(t);
        }
        if let Some(u) = self.user.as_deref_mut() {
            f(u);
        }
    }
}

/// One level's limits as the ledger applies them: its meters with their state keys, built
/// once per configuration instead of on every call.
#[derive(Debug)]
struct LevelPlan {
    config: LevelConfig,
    meters: Vec<(Meter, Arc<str>)>,
}

impl LevelPlan {
    fn new(config: &LevelConfig) -> Self {
        Self {
            meters: config
                .meters()
                .into_iter()
                .map(|m| (m, Arc::from(m.key())))
                .collect(),
            config: config.clone(),
        }
    }
}

/// A configuration, with every level's plan.
#[derive(Debug)]
struct Plan {
    config: Arc<SpendConfig>,
    global: Option<LevelPlan>,
    tenant_default: Option<LevelPlan>,
    tenants: HashMap<String, LevelPlan>,
    user_default: Option<LevelPlan>,
    /// By "tenant/user".
    users: HashMap<String, LevelPlan>,
    /// Some level has a USD budget (else nothing can run low on money).
    has_usd: bool,
}

impl Plan {
    fn new(config: SpendConfig) -> Self {
        let plans = |m: &HashMap<String, LevelConfig>| {
            m.iter()
                .map(|(k, v)| (k.clone(), LevelPlan::new(v)))
                .collect()
        };
        let mut plan = Self {
            global: config.global.as_ref().map(LevelPlan::new),
            tenant_default: config.tenant_default.as_ref().map(LevelPlan::new),
            tenants: plans(&config.tenants),
            user_default: config.user_default.as_ref().map(LevelPlan::new),
            users: plans(&config.users),
            config: Arc::new(config),
            has_usd: false,
        };
        let usd = |p: &LevelPlan| p.meters.iter().any(|(m, _)| m.unit == Unit::Usd);
        plan.has_usd = [&plan.global, &plan.tenant_default, &plan.user_default]
            .into_iter()
            .flatten()
            .chain(plan.tenants.values())
            .chain(plan.users.values())
            .any(usd);
        plan
    }

    /// How many meters a call for `who` is held on, at most.
    fn meters_of(&self, who: &Who) -> usize {
        self.levels(who)
            .map(|(_, p)| p.map_or(0, |p| p.meters.len()))
            .sum()
    }

    /// The levels a call for `who` is counted at, most general first, with their limits
    /// (None: counted, unlimited). As [`SpendConfig::levels`], without building keys.
    fn levels<'a>(&'a self, who: &'a Who) -> impl Iterator<Item = (Level, Option<&'a LevelPlan>)> {
        let tenant = who.tenant.as_deref();
        let user = tenant.and(who.user.as_deref());
        let global = std::iter::once((Level::Global, self.global.as_ref()));
        let tenant_level = tenant.map(|t| {
            (
                Level::Tenant,
                self.tenants.get(t).or(self.tenant_default.as_ref()),
            )
        });
        let user_level = tenant.zip(user).map(|(t, u)| {
            // Per-user settings are looked up by "tenant/user": built only when there are any.
            let own = if self.users.is_empty() {
                None
            } else {
                self.users.get(&format!("{t}/{u}"))
            };
            (Level::User, own.or(self.user_default.as_ref()))
        });
        global.chain(tenant_level).chain(user_level)
    }
}

/// One meter's standing, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterReport {
    pub budget: String,
    pub used: f64,
    pub limit: f64,
    pub remaining: f64,
    pub near: bool,
}

/// One level's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelReport {
    /// "g", "t:<tenant>" or "u:<tenant>/<user>".
    pub key: String,
    pub counters: Counters,
    pub meters: Vec<MeterReport>,
}

/// Every level seen, with reservations in flight.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub levels: Vec<LevelReport>,
    pub in_flight: usize,
    pub shadow: bool,
}

/// Budgets held in this process.
#[derive(Debug)]
pub struct Ledger {
    plan: RwLock<Arc<Plan>>,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

fn micros(clock: &dyn Clock) -> u64 {
    clock.now_nanos() / 1000
}

impl Ledger {
    pub fn new(config: SpendConfig, clock: Arc<dyn Clock>) -> Result<Self, LimitError> {
        config.check()?;
        Ok(Self {
            plan: RwLock::new(Arc::new(Plan::new(config))),
            state: Mutex::new(State::default()),
            clock,
        })
    }

    /// A ledger on the real (Unix) clock.
    pub fn system(config: SpendConfig) -> Result<Self, LimitError> {
        Self::new(config, Arc::new(UnixClock))
    }

    fn plan(&self) -> Arc<Plan> {
        Arc::clone(&self.plan.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn config(&self) -> Arc<SpendConfig> {
        Arc::clone(&self.plan().config)
    }

    pub fn update(&self, config: SpendConfig) -> Result<(), LimitError> {
        config.check()?;
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Plan::new(config));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Check every limit of every level for `cost` and, if all hold, charge them all, under
    /// one lock. Returns the reservation's id.
    pub fn reserve(&self, who: &Who, cost: Cost, cheap: bool) -> Result<u64, Refusal> {
        let plan = self.plan();
        let now = micros(&*self.clock);
        let mut state = self.lock();
        if now >= state.next_expiry {
            expire(&mut state, now);
        }
        let mut levels = state.levels_mut(who);
        if let Some(refusal) = check(&mut levels, &plan, who, cost, cheap, now) {
            let shadow = plan.config.shadow;
            levels.each(|l| {
                if shadow {
                    l.counters.would_refuse += 1;
                } else {
                    l.counters.refused += 1;
                }
            });
            if !shadow {
                return Err(refusal);
            }
        }
        let mut on = Vec::with_capacity(plan.meters_of(who));
        for (level, limits) in plan.levels(who) {
            let Some(state_level) = levels.get(level) else {
                continue;
            };
            for (m, key) in limits.map_or(&[][..], |p| &p.meters[..]) {
                let amount = m.unit.of(&cost);
                if amount <= 0.0 {
                    continue;
                }
                state_level.meter_mut(key).held += amount;
                on.push(HeldOn {
                    level,
                    meter: Arc::clone(key),
                    unit: m.unit,
                    span: m.span,
                    amount,
                });
            }
        }
        let ttl = u64::try_from(plan.config.ttl().as_micros()).unwrap_or(u64::MAX);
        let expires = now.saturating_add(ttl);
        state.next_id += 1;
        let id = state.next_id;
        if state.holds.is_empty() || expires < state.next_expiry {
            state.next_expiry = expires;
        }
        state.holds.insert(
            id,
            Held {
                who: who.clone(),
                on,
                expires,
            },
        );
        Ok(id)
    }

    /// A USD budget of `who` (any level) has used its `near` fraction, holds included: the
    /// router then tries the cheapest deployments first (`prefer_cheaper_near`).
    pub fn running_low(&self, who: &Who) -> bool {
        let plan = self.plan();
        if !plan.config.prefer_cheaper_near || !plan.has_usd {
            return false;
        }
        let now = micros(&*self.clock);
        let mut state = self.lock();
        let mut levels = state.levels_mut(who);
        for (level, limits) in plan.levels(who) {
            let Some(state_level) = levels.get(level) else {
                continue;
            };
            for (m, key) in limits.map_or(&[][..], |p| &p.meters[..]) {
                if m.unit != Unit::Usd {
                    continue;
                }
                let ms = state_level.meter_mut(key);
                let used = ms.booked(m.span, now) + ms.held;
                if near_limit(used, m.limit, plan.config.near) {
                    return true;
                }
            }
        }
        false
    }

    /// Charge `cost` for reservation `id` (its hold goes). A reservation that expired first
    /// is charged all the same: the call happened.
    pub fn settle(&self, id: u64, who: &Who, cost: Cost) {
        let now = micros(&*self.clock);
        let plan = self.plan();
        let mut state = self.lock();
        let on = match state.holds.remove(&id) {
            Some(held) => held.on,
            None => plan
                .levels(who)
                .flat_map(|(level, limits)| {
                    limits
                        .map_or(&[][..], |p| &p.meters[..])
                        .iter()
                        .map(move |(m, key)| HeldOn {
                            level,
                            meter: Arc::clone(key),
                            unit: m.unit,
                            span: m.span,
                            amount: 0.0,
                        })
                })
                .collect(),
        };
        let mut levels = state.levels_mut(who);
        for h in on {
            if let Some(level) = levels.get(h.level) {
                let meter = level.meter_mut(&h.meter);
                meter.held = (meter.held - h.amount).max(0.0);
                meter.book(h.span, now, h.unit.of(&cost));
            }
        }
        levels.each(|l| {
            l.counters.requests += cost.requests;
            l.counters.tokens += cost.tokens;
            l.counters.usd += cost.usd;
        });
    }

    /// Give reservation `id` back uncharged (the call failed or never went out).
    pub fn release(&self, id: u64) {
        let mut state = self.lock();
        if let Some(held) = state.holds.remove(&id) {
            unhold(&mut state, held);
        }
    }

    /// Spend charged directly (written back from elsewhere): booked at every level of `who`.
    pub fn charge(&self, who: &Who, cost: Cost) {
        self.settle(u64::MAX, who, cost);
    }

    /// A cache hit: nothing spent, `cost` saved.
    pub fn saved(&self, who: &Who, cost: Cost) {
        self.lock().levels_mut(who).each(|l| {
            l.counters.cache_hits += 1;
            l.counters.saved_usd += cost.usd;
            l.counters.saved_tokens += cost.tokens;
        });
    }

    pub fn report(&self) -> Report {
        let plan = self.plan();
        let now = micros(&*self.clock);
        let mut state = self.lock();
        let mut seen: Vec<(String, Who, Level)> =
            vec![("g".to_owned(), Who::default(), Level::Global)];
        for (tenant, t) in &state.tenants {
            let who = Who::new(Some(tenant), None);
            seen.push((format!("t:{tenant}"), who, Level::Tenant));
            for user in t.users.keys() {
                let who = Who::new(Some(tenant), Some(user));
                seen.push((format!("u:{tenant}/{user}"), who, Level::User));
            }
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let mut levels = Vec::with_capacity(seen.len());
        for (key, who, level) in seen {
            let limits = plan
                .levels(&who)
                .find(|(l, _)| *l == level)
                .and_then(|(_, p)| p);
            let mut all = state.levels_mut(&who);
            let Some(level_state) = all.get(level) else {
                continue;
            };
            let mut meters = Vec::new();
            for (m, mkey) in limits.map_or(&[][..], |p| &p.meters[..]) {
                let ms = level_state.meter_mut(mkey);
                let used = ms.booked(m.span, now) + ms.held;
                meters.push(MeterReport {
                    budget: m.describe(),
                    used,
                    limit: m.limit,
                    remaining: (m.limit - used).max(0.0),
                    near: near_limit(used, m.limit, plan.config.near),
                });
            }
            levels.push(LevelReport {
                key,
                counters: level_state.counters,
                meters,
            });
        }
        Report {
            levels,
            in_flight: state.holds.len(),
            shadow: plan.config.shadow,
        }
    }

    /// Reservations in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().holds.len()
    }
}

fn unhold(state: &mut State, held: Held) {
    let mut levels = state.levels_mut(&held.who);
    for h in held.on {
        if let Some(level) = levels.get(h.level) {
            let m = level.meter_mut(&h.meter);
            m.held = (m.held - h.amount).max(0.0);
        }
    }
}

fn expire(state: &mut State, now: u64) {
    let gone: Vec<u64> = state
        .holds
        .iter()
        .filter(|(_, h)| h.expires <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in gone {
        if let Some(held) = state.holds.remove(&id) {
            unhold(state, held);
        }
    }
    state.next_expiry = state
        .holds
        .values()
        .map(|h| h.expires)
        .min()
        .unwrap_or(u64::MAX);
}

/// The refusal for `cost`, if any level cannot hold it: raise wins over degrade over wait;
/// among waits, the longest.
fn check(
    levels: &mut LevelsMut<'_>,
    plan: &Plan,
    who: &Who,
    cost: Cost,
    cheap: bool,
    now: u64,
) -> Option<Refusal> {
    let mut found: Option<Refusal> = None;
    for (level, limits) in plan.levels(who) {
        let (Some(limits), Some(state)) = (limits, levels.get(level)) else {
            continue;
        };
        let config = &limits.config;
        for (m, key) in &limits.meters {
            let amount = m.unit.of(&cost);
            if amount <= 0.0 {
                continue;
            }
            let ms = state.meter_mut(key);
            let used = ms.booked(m.span, now) + ms.held;
            if used + amount <= m.limit + EPSILON {
                continue;
            }
            if config.on_over == OnOver::Degrade && cheap {
                continue;
            }
            let resets_in = ms.room_in(m.span, now, m.limit, amount);
            let exceeded = Box::new(Exceeded {
                tenant: who.tenant.clone(),
                user: who.user.clone().filter(|_| level == Level::User),
                level,
                budget: m.describe(),
                spent: used,
                limit: m.limit,
                resets_in,
            });
            let refusal = match config.on_over {
                OnOver::Raise => Refusal::Raise(exceeded),
                OnOver::Degrade => Refusal::Degrade(exceeded),
                OnOver::Wait if amount > m.limit => Refusal::Raise(exceeded),
                OnOver::Wait => Refusal::Wait {
                    retry_after: resets_in.unwrap_or(Duration::from_millis(20)),
                    exceeded,
                    timeout: config.wait_timeout(),
                },
            };
            found = Some(match (found, refusal) {
                (None, r) => r,
                (Some(a @ Refusal::Raise(_)), _) => a,
                (_, b @ Refusal::Raise(_)) => b,
                (Some(a @ Refusal::Degrade(_)), _) => a,
                (_, b @ Refusal::Degrade(_)) => b,
                (Some(a @ Refusal::Wait { .. }), b @ Refusal::Wait { .. }) => {
                    if wait_of(&b) > wait_of(&a) {
                        b
                    } else {
                        a
                    }
                }
            });
        }
    }
    found
}

fn wait_of(r: &Refusal) -> Duration {
    match r {
        Refusal::Wait { retry_after, .. } => *retry_after,
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
