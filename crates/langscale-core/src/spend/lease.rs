//! Leases on budgets held in Redis: a process takes a slice of a meter's room in one script
//! ([`SharedSpend::lease`]) and reserves and settles calls against it here, with no round
//! trip; the spend settled under a lease is booked to Redis by the next lease operation.
//!
//! Per meter and process there is one lease: `held` (what Redis holds for it), `reserved`
//! (estimates of calls in flight) and `unbooked` (spend settled, not yet booked); a call fits
//! when `held - reserved - unbooked` covers it. Redis counts every lease's hold as used, so
//! no process admits what the others hold: spend stays within the limit plus what calls in
//! flight use beyond their estimates, as without leases. A lease grows toward a second of this
//! process's consumption, by at most `lease_share` of the room left beyond the call, and not at
//! all when that is less than one call: near the limit every call takes the round trip and
//! settles at once (as without leases). Operations on one lease run one at a time; a lease
//! running low is renewed in the background, and a tick books spend, keeps leases alive and
//! returns idle ones. Concurrency caps are not leased (a call in flight must be counted where
//! every process sees it): calls with one take the per-call path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::shared::{
    Charge, LeaseLevel, LeaseOutcome, LeaseTake, Leased, SharedMeter, SharedRefusal, SharedSpend,
};
use crate::store::{Store, StoreError};

/// A lease aims to cover this much of the process's consumption.
const HORIZON_S: f64 = 1.0;
/// The longest between two ticks (booking spend, keeping leases alive).
const TICK: Duration = Duration::from_secs(1);
/// A lease not used for this many ticks is returned.
const IDLE_TICKS: u32 = 3;
const EPSILON: f64 = 1e-9;

/// Settings a lease operation takes from the budgets' configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Terms {
    /// `lease_share`.
    pub share: f64,
    /// How long a lease's hold lives in Redis without renewal.
    pub ttl: Duration,
    /// How long a call in flight under a lease holds its part (`reservation_ttl`).
    pub reservation: Duration,
    /// False: leasing switched off; every lease is returned at the next tick.
    pub enabled: bool,
}

#[derive(Debug)]
struct Lease {
    meter: SharedMeter,
    held: f64,
    reserved: f64,
    unbooked: f64,
    /// Past this, `held` may have expired in Redis: renew before using it.
    until: Instant,
    busy: bool,
    /// The last grant gave nothing beyond the call: settle books at once.
    tight: bool,
    /// Consumption per second (moving average), what was taken since `since`.
    rate: f64,
    taken: f64,
    since: Instant,
    unit: f64,
    idle_ticks: u32,
    /// An operation's answer was lost: Redis may hold more than `held` (resynced next tick).
    unsure: bool,
}

impl Lease {
    fn new(meter: SharedMeter, now: Instant) -> Self {
        Self {
            meter,
            held: 0.0,
            reserved: 0.0,
            unbooked: 0.0,
            until: now,
            busy: false,
            tight: true,
            rate: 0.0,
            taken: 0.0,
            since: now,
            unit: 0.0,
            idle_ticks: 0,
            unsure: false,
        }
    }

    fn room(&self, now: Instant) -> f64 {
        if now >= self.until {
            return f64::NEG_INFINITY;
        }
        self.held - self.reserved - self.unbooked
    }

    /// What the next grant should aim for beyond the calls in flight.
    fn want_extra(&mut self, now: Instant, unit: f64) -> f64 {
        let dt = now.duration_since(self.since).as_secs_f64().max(1e-3);
        let sample = self.taken / dt;
        self.rate = if self.rate == 0.0 {
            sample
        } else {
            0.5 * self.rate + 0.5 * sample
        };
        self.taken = 0.0;
        self.since = now;
        (self.rate * HORIZON_S).max(unit)
    }
}

#[derive(Debug)]
struct Hold {
    meters: Vec<(String, f64)>,
    deadline: Instant,
}

/// A lease operation whose answer was lost: retried under the same id (booking only) until
/// Redis answers, so its spend is booked exactly once.
#[derive(Debug, Clone)]
struct Pending {
    op: String,
    takes: Vec<LeaseTake>,
    levels: Vec<LeaseLevel>,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<String, Lease>,
    holds: HashMap<u64, Hold>,
    next_hold: u64,
    /// Per level, counters of settled calls not yet written.
    counters: HashMap<String, Charge>,
    pending: Vec<Pending>,
    /// Per meter, what Redis last said it used (every hold and booked spend).
    seen: HashMap<String, f64>,
    /// Per meter, what Redis last said the other processes hold and everyone booked (never
    /// drained: what `used` adds this process's calls to).
    others: HashMap<String, f64>,
}

/// Counters of leasing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Calls admitted from a lease without a round trip.
    pub leased: u64,
    /// Lease operations sent to Redis (on a caller's path or in the background).
    pub operations: u64,
    /// Leases this process holds now.
    pub leases: usize,
}

/// What [`Leases::reserve`] decided.
#[derive(Debug)]
pub(super) enum Admit {
    /// Held under this local id.
    Held(u64),
    /// Over a limit: index into the meters asked, what is used (as a reservation would see
    /// it) and when it resets.
    Refused(Vec<SharedRefusal>),
    /// Redis did not answer: the down policy decides.
    Failed,
}

/// One meter a call reserves: what to hold, at which level counters.
pub(super) struct Ask<'a> {
    pub meter: &'a SharedMeter,
    pub amount: f64,
}

/// What a lease operation's answer is applied to.
struct Sent {
    op: String,
    names: Vec<String>,
    takes: Vec<LeaseTake>,
    levels: Vec<LeaseLevel>,
    started: Instant,
    /// Per take: the reservation (call) it covers, to add on success.
    call: Vec<f64>,
}

/// Every lease of one set of shared budgets in this process.
#[derive(Debug)]
pub(super) struct Leases {
    spend: SharedSpend,
    origin: String,
    state: Mutex<State>,
    turn: Condvar,
    next_op: AtomicU64,
    leased: AtomicU64,
    operations: AtomicU64,
    ticking: AtomicBool,
    terms: Mutex<Terms>,
    me: Weak<Leases>,
}

impl Leases {
    pub(super) fn new(spend: SharedSpend, origin: String, terms: Terms) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            spend,
            origin,
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
            next_op: AtomicU64::new(0),
            leased: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
            terms: Mutex::new(terms),
            me: me.clone(),
        })
    }

    fn store(&self) -> &Store {
        self.spend.store()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_terms(&self, terms: Terms) {
        *self.terms.lock().unwrap_or_else(PoisonError::into_inner) = terms;
    }

    fn terms(&self) -> Terms {
        *self.terms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn stats(&self) -> LeaseStats {
        LeaseStats {
            leased: self.leased.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
            leases: self.lock().leases.values().filter(|l| l.held > 0.0).count(),
        }
    }

    /// Calls in flight under a lease.
    pub(super) fn in_flight(&self) -> usize {
        self.lock().holds.len()
    }

    /// Per meter, what this process's calls take of its lease: calls in flight and spend
    /// settled, not yet booked (the rest of what the lease holds nobody spent yet).
    pub(super) fn in_use(&self) -> HashMap<String, f64> {
        self.lock()
            .leases
            .iter()
            .map(|(k, l)| (k.clone(), l.reserved + l.unbooked))
            .collect()
    }

    /// The id in Redis of this process's lease on `meter` (whether it holds one or not).
    pub(super) fn lease_id(&self, meter: &str) -> String {
        format!("L:{}:{meter}", self.origin)
    }

    fn op_id(&self) -> String {
        format!(
            "{}:l{}",
            self.origin,
            self.next_op.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Reserve `asks` (all or none) from this process's leases, renewing those that lack room
    /// in one script. `levels`: the call's levels (a refusal counts there).
    pub(super) fn reserve(&self, asks: &[Ask<'_>], levels: &[String]) -> Admit {
        let terms = self.terms();
        let (ttl, life) = (terms.ttl, terms.reservation);
        let give_up = Instant::now() + self.store().timeout() * 4 + Duration::from_millis(250);
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            for a in asks {
                match st.leases.get_mut(&a.meter.name) {
                    Some(l) => {
                        if l.meter.limit.to_bits() != a.meter.limit.to_bits() {
                            l.meter.limit = a.meter.limit;
                        }
                    }
                    None => {
                        st.leases
                            .insert(a.meter.name.clone(), Lease::new(a.meter.clone(), now));
                    }
                }
            }
            let short: Vec<usize> = asks
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    st.leases
                        .get(&a.meter.name)
                        .is_none_or(|l| l.room(now) + EPSILON < a.amount)
                })
                .map(|(i, _)| i)
                .collect();
            if short.is_empty() {
                let id = self.hold_locally(&mut st, asks, now, life);
                self.leased.fetch_add(1, Ordering::Relaxed);
                let low = self.running_low(&mut st, asks, now);
                drop(st);
                if let Some(low) = low {
                    self.renew_later(low);
                }
                self.ensure_tick();
                return Admit::Held(id);
            }
            let busy = short
                .iter()
                .any(|&i| st.leases.get(&asks[i].meter.name).is_some_and(|l| l.busy));
            if busy {
                if now >= give_up {
                    return Admit::Failed;
                }
                st = self
                    .turn
                    .wait_timeout(st, give_up - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            // The meters with room are held now (undone if the script refuses).
            let mut tentative = Vec::new();
            for (i, a) in asks.iter().enumerate() {
                if !short.contains(&i) {
                    if let Some(l) = st.leases.get_mut(&a.meter.name) {
                        l.reserved += a.amount;
                        tentative.push((a.meter.name.clone(), a.amount));
                    }
                }
            }
            let mut names = Vec::new();
            let mut takes = Vec::new();
            let mut call = Vec::new();
            for &i in &short {
                let a = &asks[i];
                let Some(l) = st.leases.get_mut(&a.meter.name) else {
                    continue;
                };
                l.busy = true;
                l.unit = a.amount;
                let book = l.unbooked;
                l.unbooked = 0.0;
                l.held = (l.held - book).max(0.0);
                let cover = l.reserved + a.amount;
                let extra = l.want_extra(now, a.amount);
                names.push(a.meter.name.clone());
                call.push(a.amount);
                takes.push(LeaseTake {
                    meter: l.meter.clone(),
                    lease: self.lease_id(&a.meter.name),
                    book,
                    cover,
                    want: cover + extra,
                    unit: a.amount,
                    shrink: false,
                });
            }
            let sent = Sent {
                op: self.op_id(),
                levels: take_counters(&mut st, levels),
                names,
                takes,
                started: now,
                call,
            };
            drop(st);
            let answer = self.send(&sent);
            let mut st = self.lock();
            let admitted = match &answer {
                Ok(a) => a.outcome == LeaseOutcome::Granted,
                Err(_) => false,
            };
            if !admitted {
                for (name, amount) in &tentative {
                    if let Some(l) = st.leases.get_mut(name) {
                        l.reserved = (l.reserved - amount).max(0.0);
                    }
                }
            }
            let outcome = self.apply(&mut st, &sent, answer, ttl);
            self.turn.notify_all();
            return match outcome {
                Applied::Granted => {
                    let mut meters = tentative;
                    meters.extend(sent.names.iter().cloned().zip(sent.call.iter().copied()));
                    let id = new_hold(&mut st, meters, Instant::now() + life);
                    drop(st);
                    self.ensure_tick();
                    Admit::Held(id)
                }
                Applied::Refused(over) => Admit::Refused(
                    over.into_iter()
                        .filter_map(|mut o| {
                            o.meter = *short.get(o.meter)?;
                            Some(o)
                        })
                        .collect(),
                ),
                Applied::Failed => Admit::Failed,
            };
        }
    }

    fn hold_locally(&self, st: &mut State, asks: &[Ask<'_>], now: Instant, ttl: Duration) -> u64 {
        let mut meters = Vec::with_capacity(asks.len());
        for a in asks {
            if let Some(l) = st.leases.get_mut(&a.meter.name) {
                l.reserved += a.amount;
                l.taken += a.amount;
                l.unit = a.amount;
                l.idle_ticks = 0;
            }
            meters.push((a.meter.name.clone(), a.amount));
        }
        new_hold(st, meters, now + ttl)
    }

    /// A lease left with less than a call or a quarter of its aim: renew it in the background.
    fn running_low(&self, st: &mut State, asks: &[Ask<'_>], now: Instant) -> Option<String> {
        for a in asks {
            let Some(l) = st.leases.get_mut(&a.meter.name) else {
                continue;
            };
            if l.busy || l.tight {
                continue;
            }
            let aim = (l.rate * HORIZON_S).max(l.unit);
            let room = l.room(now);
            let expiring = l.until.saturating_duration_since(now) < TICK / 2;
            if room < l.unit.max(0.25 * aim) || expiring {
                return Some(a.meter.name.clone());
            }
        }
        None
    }

    fn send(&self, sent: &Sent) -> Result<Leased, StoreError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let terms = self.terms();
        let ttl = u64::try_from(terms.ttl.as_micros()).unwrap_or(u64::MAX);
        let books = sent.takes.iter().any(|t| t.book != 0.0)
            || sent.levels.iter().any(|l| l.charge != Charge::default());
        let (spend, op, takes, levels) = (
            self.spend.clone(),
            if books {
                sent.op.clone()
            } else {
                String::new()
            },
            sent.takes.clone(),
            sent.levels.clone(),
        );
        let now = unix_us();
        self.store().block_on(async move {
            spend
                .lease(&op, &takes, &levels, terms.share, ttl, now)
                .await
        })
    }

    /// Take an answer in: the holds Redis now has, the deadlines, and on failure the booking
    /// kept for a retry.
    fn apply(
        &self,
        st: &mut State,
        sent: &Sent,
        answer: Result<Leased, StoreError>,
        ttl: Duration,
    ) -> Applied {
        let until = sent.started + ttl.mul_f64(0.9);
        match answer {
            Ok(a) => {
                let granted = a.outcome == LeaseOutcome::Granted;
                for ((name, hold), others) in sent.names.iter().zip(&a.holds).zip(&a.others) {
                    st.seen.insert(name.clone(), hold + others);
                    st.others.insert(name.clone(), *others);
                }
                for (i, name) in sent.names.iter().enumerate() {
                    let Some(l) = st.leases.get_mut(name) else {
                        continue;
                    };
                    l.busy = false;
                    l.unsure = false;
                    if let Some(h) = a.holds.get(i) {
                        l.held = *h;
                    }
                    if a.outcome != LeaseOutcome::Duplicate {
                        l.until = until;
                    }
                    if granted {
                        let take = &sent.takes[i];
                        let call = sent.call.get(i).copied().unwrap_or(0.0);
                        l.reserved += call;
                        l.taken += call;
                        if call > 0.0 {
                            l.idle_ticks = 0;
                        }
                        if !take.shrink {
                            l.tight = l.held <= take.cover + take.unit * 0.5;
                        }
                    }
                }
                if granted {
                    Applied::Granted
                } else if a.outcome == LeaseOutcome::Refused {
                    let over = a
                        .over
                        .iter()
                        .map(|o| SharedRefusal {
                            // As a reservation sees it: the others' use plus this process's
                            // calls in flight.
                            used: o.used
                                + sent.takes.get(o.meter).map_or(0.0, |t| {
                                    t.cover - sent.call.get(o.meter).copied().unwrap_or(0.0)
                                }),
                            ..*o
                        })
                        .collect();
                    Applied::Refused(over)
                } else {
                    // An id already used: nothing was granted (never on a caller's fresh id).
                    Applied::Failed
                }
            }
            Err(_) => {
                for name in &sent.names {
                    if let Some(l) = st.leases.get_mut(name) {
                        l.busy = false;
                        // Unknown now: assume nothing is held (Redis's hold expires).
                        l.held = 0.0;
                        l.until = Instant::now();
                        l.tight = true;
                        l.unsure = true;
                    }
                }
                let takes: Vec<LeaseTake> = sent
                    .takes
                    .iter()
                    .filter(|t| t.book > 0.0)
                    .map(|t| LeaseTake {
                        cover: 0.0,
                        want: 0.0,
                        unit: 0.0,
                        shrink: false,
                        ..t.clone()
                    })
                    .collect();
                let levels: Vec<LeaseLevel> = sent
                    .levels
                    .iter()
                    .filter(|l| l.charge != Charge::default())
                    .map(|l| LeaseLevel {
                        call: false,
                        ..l.clone()
                    })
                    .collect();
                if !takes.is_empty() || !levels.is_empty() {
                    st.pending.push(Pending {
                        op: sent.op.clone(),
                        takes,
                        levels,
                    });
                }
                Applied::Failed
            }
        }
    }

    /// Charge `real` (per meter, the call's true use) for local reservation `id`, and count
    /// `charge` at `levels`. Near the limit (a tight lease) it is booked at once.
    pub(super) fn settle(
        &self,
        id: u64,
        real: &[(&SharedMeter, f64)],
        levels: &[String],
        charge: Charge,
    ) {
        let mut st = self.lock();
        unreserve(&mut st, id);
        let now = Instant::now();
        let mut book_now = false;
        for (m, amount) in real {
            let l = st
                .leases
                .entry(m.name.clone())
                .or_insert_with(|| Lease::new((*m).clone(), now));
            l.unbooked += amount;
            book_now |= l.tight;
        }
        for level in levels {
            let c = st.counters.entry(level.clone()).or_default();
            c.requests += charge.requests;
            c.tokens += charge.tokens;
            c.usd += charge.usd;
        }
        drop(st);
        if book_now && self.store().is_up() {
            let names: Vec<String> = real.iter().map(|(m, _)| m.name.clone()).collect();
            // Near the limit, as without leases: booked before the settle returns.
            self.run_tick(Some(&names), false, false, true);
        }
        self.ensure_tick();
    }

    /// Give local reservation `id` back uncharged.
    pub(super) fn release(&self, id: u64) {
        unreserve(&mut self.lock(), id);
        self.turn.notify_all();
    }

    /// Renew lease `name` off the caller's path.
    fn renew_later(&self, name: String) {
        let Some(me) = self.me.upgrade() else { return };
        let store = self.store().clone();
        store.spawn(async move {
            tokio::task::spawn_blocking(move || me.run_tick(Some(&[name]), false, false, false))
                .await
                .map_err(|e| StoreError::Reply(e.to_string()))
        });
    }

    /// Start the tick if it is not running: every second (or a quarter of the hold's life),
    /// book spend, keep leases alive, return idle ones; it stops when nothing is leased.
    fn ensure_tick(&self) {
        if self.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = self.me.clone();
        let every = TICK.min(self.terms().ttl / 4);
        crate::store::runtime().spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = weak.upgrade() else { return };
                let more = tokio::task::spawn_blocking(move || {
                    if me.store().is_up() {
                        me.retry_pending();
                        me.run_tick(None, false, true, false);
                    }
                    let more = me.has_work();
                    if !more {
                        me.ticking.store(false, Ordering::Release);
                    }
                    more
                })
                .await
                .unwrap_or(false);
                if !more {
                    return;
                }
            }
        });
    }

    fn has_work(&self) -> bool {
        let st = self.lock();
        !st.pending.is_empty()
            || !st.counters.is_empty()
            || !st.holds.is_empty()
            || st
                .leases
                .values()
                .any(|l| l.held > 0.0 || l.unbooked > 0.0 || l.unsure)
    }

    /// One operation over leases (`only` these, or all): book what they settled, keep them
    /// alive, top up those running low, return idle ones (all of them with `exit`).
    /// `wait`: for operations in flight on those leases to end first (so what was settled
    /// before is written when this returns).
    pub(super) fn run_tick(&self, only: Option<&[String]>, exit: bool, tick: bool, wait: bool) {
        let terms = self.terms();
        let mut st = self.lock();
        if wait {
            let give_up = Instant::now() + self.store().timeout() * 4 + Duration::from_millis(250);
            let busy = |st: &State| match only {
                Some(names) => names
                    .iter()
                    .any(|n| st.leases.get(n).is_some_and(|l| l.busy)),
                None => st.leases.values().any(|l| l.busy),
            };
            while busy(&st) {
                let left = give_up.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st = self
                    .turn
                    .wait_timeout(st, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let now = Instant::now();
        // Calls in flight past their reservation's life stop holding.
        let expired: Vec<u64> = st
            .holds
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            unreserve(&mut st, id);
        }
        let mut names = Vec::new();
        let mut takes = Vec::new();
        let mut call = Vec::new();
        let keys: Vec<String> = match only {
            Some(o) => o.to_vec(),
            None => st.leases.keys().cloned().collect(),
        };
        for name in keys {
            let lease_id = self.lease_id(&name);
            let Some(l) = st.leases.get_mut(&name) else {
                continue;
            };
            if l.busy || (l.held <= 0.0 && l.unbooked <= 0.0 && !l.unsure) {
                continue;
            }
            if tick {
                l.idle_ticks += 1;
            }
            let book = l.unbooked;
            l.unbooked = 0.0;
            l.held = (l.held - book).max(0.0);
            let idle = exit || !terms.enabled || l.idle_ticks >= IDLE_TICKS || l.tight || l.unsure;
            let cover = l.reserved;
            let (want, shrink) = if idle {
                // Hand back what no call holds.
                l.held = l.held.min(cover);
                (cover, true)
            } else {
                (cover + l.want_extra(now, l.unit), false)
            };
            l.busy = true;
            names.push(name);
            call.push(0.0);
            takes.push(LeaseTake {
                meter: l.meter.clone(),
                lease: lease_id,
                book,
                cover,
                want,
                unit: l.unit,
                shrink,
            });
        }
        let levels = take_counters(&mut st, &[]);
        if takes.is_empty() && levels.is_empty() {
            return;
        }
        let sent = Sent {
            op: self.op_id(),
            names,
            takes,
            levels,
            started: now,
            call,
        };
        drop(st);
        let answer = self.send(&sent);
        let mut st = self.lock();
        self.apply(&mut st, &sent, answer, terms.ttl);
        // Returned leases with nothing in flight are forgotten.
        st.leases.retain(|_, l| {
            l.busy || l.unsure || l.held > 0.0 || l.unbooked > 0.0 || l.reserved > 0.0
        });
        drop(st);
        self.turn.notify_all();
    }

    /// Write lease operations whose answer was lost (same ids: counted once).
    pub(super) fn retry_pending(&self) {
        let batch = std::mem::take(&mut self.lock().pending);
        let mut left = Vec::new();
        for p in batch {
            if left.is_empty() {
                self.operations.fetch_add(1, Ordering::Relaxed);
                let (spend, op, takes, levels) = (
                    self.spend.clone(),
                    p.op.clone(),
                    p.takes.clone(),
                    p.levels.clone(),
                );
                let share = self.terms().share;
                let done = self.store().block_on(async move {
                    spend
                        .lease(&op, &takes, &levels, share, 1_000_000, unix_us())
                        .await
                });
                if done.is_ok() {
                    continue;
                }
            }
            left.push(p);
        }
        self.lock().pending.splice(0..0, left);
    }

    /// What `meter` has used as far as this process knows: what Redis last said the others
    /// hold and everyone booked, plus this process's calls in flight and spend not yet
    /// booked. None: no lease operation has seen it.
    pub(super) fn used(&self, meter: &str) -> Option<f64> {
        let st = self.lock();
        let others = *st.others.get(meter)?;
        let mine = st
            .leases
            .get(meter)
            .map_or(0.0, |l| l.reserved + l.unbooked);
        Some(others + mine)
    }

    /// What lease operations saw each meter use since last asked.
    pub(super) fn take_seen(&self) -> HashMap<String, f64> {
        std::mem::take(&mut self.lock().seen)
    }

    /// Lease bookings still to be written back.
    pub(super) fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

enum Applied {
    Granted,
    Refused(Vec<SharedRefusal>),
    Failed,
}

fn new_hold(st: &mut State, meters: Vec<(String, f64)>, deadline: Instant) -> u64 {
    st.next_hold += 1;
    let id = st.next_hold;
    st.holds.insert(id, Hold { meters, deadline });
    id
}

fn unreserve(st: &mut State, id: u64) {
    if let Some(h) = st.holds.remove(&id) {
        for (name, amount) in h.meters {
            if let Some(l) = st.leases.get_mut(&name) {
                l.reserved = (l.reserved - amount).max(0.0);
            }
        }
    }
}

/// Every level's unwritten counters (taken out: the operation writes them), plus the call's
/// `levels` (a refusal counts at them).
fn take_counters(st: &mut State, levels: &[String]) -> Vec<LeaseLevel> {
    let mut out: Vec<LeaseLevel> = st
        .counters
        .drain()
        .map(|(name, charge)| LeaseLevel {
            call: levels.contains(&name),
            name,
            charge,
        })
        .collect();
    for l in levels {
        if !out.iter().any(|o| &o.name == l) {
            out.push(LeaseLevel {
                name: l.clone(),
                charge: Charge::default(),
                call: true,
            });
        }
    }
    out
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
