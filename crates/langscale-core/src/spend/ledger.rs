//! Budgets held in this process: every meter of every level a call touches is checked and
//! charged under one lock, so concurrent callers can never both pass a check that only one
//! fits (the race LiteLLM's check-then-increment has). No I/O: time comes from the clock
//! (Unix time; a fake one in tests).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{LevelOf, OnOver, SpendConfig};
use super::window::Span;
use super::{Cost, Exceeded, Level, Refusal, Unit, Who};
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

/// Spend of one meter: booked per slot, plus what reservations in flight hold.
#[derive(Debug, Default)]
struct MeterState {
    held: f64,
    slots: VecDeque<(u64, f64)>,
}

impl MeterState {
    fn prune(&mut self, span: Span, current: u64) {
        while let Some(&(slot, _)) = self.slots.front() {
            if span.counts(slot, current) {
                break;
            }
            self.slots.pop_front();
        }
    }

    fn booked(&mut self, span: Option<Span>, now: u64) -> f64 {
        let Some(span) = span else { return 0.0 };
        let current = span.slot(now);
        self.prune(span, current);
        self.slots.iter().map(|(_, v)| v).sum()
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

#[derive(Debug, Default)]
struct LevelState {
    meters: HashMap<String, MeterState>,
    counters: Counters,
}

/// What one reservation holds on one meter.
#[derive(Debug)]
struct HeldOn {
    level: String,
    meter: String,
    unit: Unit,
    span: Option<Span>,
    amount: f64,
}

#[derive(Debug)]
struct Held {
    on: Vec<HeldOn>,
    levels: Vec<String>,
    expires: u64,
}

#[derive(Debug, Default)]
struct State {
    levels: HashMap<String, LevelState>,
    holds: HashMap<u64, Held>,
    next_id: u64,
    next_expiry: u64,
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
    config: RwLock<Arc<SpendConfig>>,
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
            config: RwLock::new(Arc::new(config)),
            state: Mutex::new(State::default()),
            clock,
        })
    }

    /// A ledger on the real (Unix) clock.
    pub fn system(config: SpendConfig) -> Result<Self, LimitError> {
        Self::new(config, Arc::new(UnixClock))
    }

    pub fn config(&self) -> Arc<SpendConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn update(&self, config: SpendConfig) -> Result<(), LimitError> {
        config.check()?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Check every limit of every level for `cost` and, if all hold, charge them all, under
    /// one lock. Returns the reservation's id.
    pub fn reserve(&self, who: &Who, cost: Cost, cheap: bool) -> Result<u64, Refusal> {
        let config = self.config();
        let now = micros(&*self.clock);
        let levels = config.levels(who);
        let mut state = self.lock();
        if now >= state.next_expiry {
            expire(&mut state, now);
        }
        let refusal = check(&mut state, &levels, who, cost, cheap, now);
        if let Some(refusal) = refusal {
            let counter = if config.shadow {
                |c: &mut Counters| c.would_refuse += 1
            } else {
                |c: &mut Counters| c.refused += 1
            };
            for l in &levels {
                counter(&mut state.levels.entry(l.key.clone()).or_default().counters);
            }
            if !config.shadow {
                return Err(refusal);
            }
        }
        let mut on = Vec::new();
        for l in &levels {
            let level = state.levels.entry(l.key.clone()).or_default();
            for m in l.config.map(|c| c.meters()).unwrap_or_default() {
                let amount = m.unit.of(&cost);
                if amount <= 0.0 {
                    continue;
                }
                let key = m.key();
                level.meters.entry(key.clone()).or_default().held += amount;
                on.push(HeldOn {
                    level: l.key.clone(),
                    meter: key,
                    unit: m.unit,
                    span: m.span,
                    amount,
                });
            }
        }
        let ttl = u64::try_from(config.ttl().as_micros()).unwrap_or(u64::MAX);
        let expires = now.saturating_add(ttl);
        state.next_id += 1;
        let id = state.next_id;
        if state.holds.is_empty() || expires < state.next_expiry {
            state.next_expiry = expires;
        }
        state.holds.insert(
            id,
            Held {
                on,
                levels: levels.into_iter().map(|l| l.key).collect(),
                expires,
            },
        );
        Ok(id)
    }

    /// Charge `cost` for reservation `id` (its hold goes). A reservation that expired first
    /// is charged all the same: the call happened.
    pub fn settle(&self, id: u64, who: &Who, cost: Cost) {
        let now = micros(&*self.clock);
        let config = self.config();
        let mut state = self.lock();
        let (on, levels) = match state.holds.remove(&id) {
            Some(held) => (held.on, held.levels),
            None => {
                let levels = config.levels(who);
                let mut on = Vec::new();
                for l in &levels {
                    for m in l.config.map(|c| c.meters()).unwrap_or_default() {
                        on.push(HeldOn {
                            level: l.key.clone(),
                            meter: m.key(),
                            unit: m.unit,
                            span: m.span,
                            amount: 0.0,
                        });
                    }
                }
                (on, levels.into_iter().map(|l| l.key).collect())
            }
        };
        for h in on {
            let meter = state
                .levels
                .entry(h.level)
                .or_default()
                .meters
                .entry(h.meter)
                .or_default();
            meter.held = (meter.held - h.amount).max(0.0);
            meter.book(h.span, now, h.unit.of(&cost));
        }
        for key in levels {
            let c = &mut state.levels.entry(key).or_default().counters;
            c.requests += cost.requests;
            c.tokens += cost.tokens;
            c.usd += cost.usd;
        }
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
        let config = self.config();
        let mut state = self.lock();
        for l in config.levels(who) {
            let c = &mut state.levels.entry(l.key).or_default().counters;
            c.cache_hits += 1;
            c.saved_usd += cost.usd;
            c.saved_tokens += cost.tokens;
        }
    }

    pub fn report(&self) -> Report {
        let config = self.config();
        let now = micros(&*self.clock);
        let mut state = self.lock();
        let mut keys: Vec<String> = state.levels.keys().cloned().collect();
        keys.sort();
        let mut levels = Vec::with_capacity(keys.len());
        for key in keys {
            let limits = level_config(&config, &key);
            let level = state.levels.entry(key.clone()).or_default();
            let mut meters = Vec::new();
            for m in limits.map(|c| c.meters()).unwrap_or_default() {
                let ms = level.meters.entry(m.key()).or_default();
                let used = ms.booked(m.span, now) + ms.held;
                meters.push(MeterReport {
                    budget: m.describe(),
                    used,
                    limit: m.limit,
                    remaining: (m.limit - used).max(0.0),
                    near: m.limit <= 0.0 || used >= m.limit * config.near,
                });
            }
            levels.push(LevelReport {
                key,
                counters: level.counters,
                meters,
            });
        }
        Report {
            levels,
            in_flight: state.holds.len(),
            shadow: config.shadow,
        }
    }

    /// Reservations in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().holds.len()
    }
}

/// The limits of a level by its state key.
fn level_config<'a>(config: &'a SpendConfig, key: &str) -> Option<&'a super::LevelConfig> {
    if key == "g" {
        return config.global.as_ref();
    }
    if let Some(t) = key.strip_prefix("t:") {
        return config.tenants.get(t).or(config.tenant_default.as_ref());
    }
    key.strip_prefix("u:")
        .and_then(|u| config.users.get(u).or(config.user_default.as_ref()))
}

fn unhold(state: &mut State, held: Held) {
    for h in held.on {
        if let Some(m) = state
            .levels
            .get_mut(&h.level)
            .and_then(|l| l.meters.get_mut(&h.meter))
        {
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
    state: &mut State,
    levels: &[LevelOf<'_>],
    who: &Who,
    cost: Cost,
    cheap: bool,
    now: u64,
) -> Option<Refusal> {
    let mut found: Option<Refusal> = None;
    for l in levels {
        let Some(config) = l.config else { continue };
        for m in config.meters() {
            let amount = m.unit.of(&cost);
            if amount <= 0.0 {
                continue;
            }
            let used = match state
                .levels
                .get_mut(&l.key)
                .and_then(|s| s.meters.get_mut(&m.key()))
            {
                Some(ms) => ms.booked(m.span, now) + ms.held,
                None => 0.0,
            };
            if used + amount <= m.limit + EPSILON {
                continue;
            }
            if config.on_over == OnOver::Degrade && cheap {
                continue;
            }
            let resets_in = state
                .levels
                .get(&l.key)
                .and_then(|s| s.meters.get(&m.key()))
                .and_then(|ms| ms.room_in(m.span, now, m.limit, amount));
            let exceeded = Box::new(Exceeded {
                tenant: who.tenant.clone(),
                user: who.user.clone().filter(|_| l.level == Level::User),
                level: l.level,
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
