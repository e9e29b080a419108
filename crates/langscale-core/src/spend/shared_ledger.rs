//! Budgets shared by every process on one Redis (`Budgets::Shared`): the local ledger's
//! semantics (levels, meters, policies, shadow mode, the same refusals) with the state in
//! Redis, one script per reserve, settle or release ([`SharedSpend`]).
//!
//! With `lease` (the default), calls whose every limit has a window reserve and settle
//! against this process's leases ([`super::lease`]): no round trip while a lease has room.
//! Calls under a concurrency cap, in shadow mode or serving a degraded level take one
//! script per reserve and settle, as with `lease = false`.
//!
//! Redis down: `on_redis_down = "fail_closed"` refuses every call that has a budget;
//! `"local_share"` admits from this process's share (`local_share`) of what each meter had
//! left when Redis last answered (of the whole limit for a meter never seen), windows frozen
//! while down. Spend settled while down (and any settle that failed) is kept and written back
//! when Redis answers again, each under its own id, so a write-back retried after a lost
//! reply is not counted twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use super::config::{LevelConfig, OnOver, RedisDown, SpendConfig};
use super::lease::{Admit, Ask, LeaseStats, Leases, Terms};
use super::ledger::{Counters, LevelReport, MeterReport, Report};
use super::shared::{Charge, SharedMeter, SharedRefusal, SharedSpend, Take, COUNTERS};
use super::{near_limit, Cost, Exceeded, Level, Meter, Refusal, Unit, Who};
use crate::clock::Clock;
use crate::limit::LimitError;
use crate::store::{unique_id, Store};

/// Ids of reservations held in Redis carry this bit; those under a lease `LEASED`; the others
/// are held locally (Redis down).
const IN_REDIS: u64 = 1 << 63;
const LEASED: u64 = 1 << 62;
const ID_BITS: u64 = LEASED - 1;
/// The longest a lease's hold lives in Redis unrenewed (shorter if `reservation_ttl` is).
const LEASE_TTL: Duration = Duration::from_secs(10);

const EPSILON: f64 = 1e-9;

/// One meter of one level a call for some `who` is counted at.
#[derive(Debug, Clone)]
struct Planned {
    level: Level,
    on_over: OnOver,
    wait_timeout: Duration,
    meter: Meter,
    shared: SharedMeter,
}

fn shared_meter(level_key: &str, meter: &Meter) -> SharedMeter {
    SharedMeter {
        name: format!("{level_key}/{}", meter.key()),
        span: meter.span,
        limit: meter.limit,
    }
}

fn plan(config: &SpendConfig, who: &Who) -> (Vec<Planned>, Vec<String>) {
    let mut out = Vec::new();
    let mut levels = Vec::new();
    for l in config.levels(who) {
        if let Some(c) = l.config {
            for meter in c.meters() {
                out.push(Planned {
                    level: l.level,
                    on_over: c.on_over,
                    wait_timeout: c.wait_timeout(),
                    shared: shared_meter(&l.key, &meter),
                    meter,
                });
            }
        }
        levels.push(l.key);
    }
    (out, levels)
}

/// The refusal of a level's policy for one meter over its limit.
fn refusal(
    p: &Planned,
    who: &Who,
    spent: f64,
    amount: f64,
    resets_in: Option<Duration>,
    budget: String,
) -> Refusal {
    let exceeded = Box::new(Exceeded {
        tenant: who.tenant.clone(),
        user: who.user.clone().filter(|_| p.level == Level::User),
        level: p.level,
        budget,
        spent,
        limit: p.meter.limit,
        resets_in,
    });
    match p.on_over {
        OnOver::Raise => Refusal::Raise(exceeded),
        OnOver::Degrade => Refusal::Degrade(exceeded),
        OnOver::Wait if amount > p.meter.limit => Refusal::Raise(exceeded),
        OnOver::Wait => Refusal::Wait {
            retry_after: resets_in.unwrap_or(Duration::from_millis(20)),
            exceeded,
            timeout: p.wait_timeout,
        },
    }
}

/// Of two refusals, the one the caller sees: raise over degrade over wait; of two waits, the
/// longer (as the local ledger decides).
fn worse(a: Option<Refusal>, b: Refusal) -> Refusal {
    match (a, b) {
        (None, b) => b,
        (Some(a @ Refusal::Raise(_)), _) => a,
        (_, b @ Refusal::Raise(_)) => b,
        (Some(a @ Refusal::Degrade(_)), _) => a,
        (_, b @ Refusal::Degrade(_)) => b,
        (
            Some(
                a @ Refusal::Wait {
                    retry_after: wa, ..
                },
            ),
            b @ Refusal::Wait {
                retry_after: wb, ..
            },
        ) => {
            if wb > wa {
                b
            } else {
                a
            }
        }
    }
}

/// A meter's allowance while Redis is down, and what this process has taken of it.
#[derive(Debug, Clone, Copy)]
struct Share {
    allowance: f64,
    taken: f64,
}

/// A settlement still to be written to Redis (None: a release, of a reservation whose
/// script may have run though no answer came).
#[derive(Debug, Clone)]
struct Pending {
    id: String,
    who: Who,
    cost: Option<Cost>,
}

#[derive(Debug, Default)]
struct Down {
    /// Per meter (Redis name), what Redis last said it had used, holds included.
    last_used: HashMap<String, f64>,
    /// Level keys seen, for reports while Redis is down.
    seen: HashSet<String>,
    /// Per meter, this process's share while Redis is down (dropped once it is back).
    share: HashMap<String, Share>,
    /// Reservations made while down: the meters and amounts each holds of the share.
    holds: HashMap<u64, Vec<(String, f64)>>,
    pending: Vec<Pending>,
    next_local: u64,
    /// Calls admitted and refused without Redis.
    local_admitted: u64,
    local_refused: u64,
}

/// Counters of what happened without Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedLedgerStats {
    /// Calls admitted from the local share (Redis down).
    pub local_admitted: u64,
    /// Calls refused without asking Redis (down, fail closed or the share used up).
    pub local_refused: u64,
    /// Settlements waiting to be written back.
    pub pending: usize,
    /// Leasing: calls admitted from a lease, lease scripts run, leases held now.
    pub lease: LeaseStats,
}

/// Budgets in Redis, shared by every process naming the same store prefix.
#[derive(Debug)]
pub struct SharedLedger {
    spend: SharedSpend,
    config: RwLock<Arc<SpendConfig>>,
    clock: Arc<dyn Clock>,
    /// Reservation ids are `<origin>:<n>`: unique across processes.
    origin: String,
    next: AtomicU64,
    down: Mutex<Down>,
    leases: Arc<Leases>,
}

fn terms(config: &SpendConfig) -> Terms {
    Terms {
        share: config.lease_share,
        ttl: config.ttl().min(LEASE_TTL),
        reservation: config.ttl(),
        enabled: config.lease,
    }
}

impl SharedLedger {
    pub fn new(
        config: SpendConfig,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LimitError> {
        config.check()?;
        let spend = SharedSpend::new(store);
        let origin = unique_id();
        let leases = Leases::new(spend.clone(), origin.clone(), terms(&config));
        Ok(Self {
            spend,
            config: RwLock::new(Arc::new(config)),
            clock,
            origin,
            next: AtomicU64::new(0),
            down: Mutex::new(Down::default()),
            leases,
        })
    }

    pub fn store(&self) -> &Store {
        self.spend.store()
    }

    pub fn config(&self) -> Arc<SpendConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn update(&self, config: SpendConfig) -> Result<(), LimitError> {
        config.check()?;
        self.leases.set_terms(terms(&config));
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    pub fn stats(&self) -> SharedLedgerStats {
        let d = self.lock();
        SharedLedgerStats {
            local_admitted: d.local_admitted,
            local_refused: d.local_refused,
            pending: d.pending.iter().filter(|p| p.cost.is_some()).count() + self.leases.pending(),
            lease: self.leases.stats(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Down> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_us(&self) -> u64 {
        self.clock.now_nanos() / 1000
    }

    fn redis_id(&self, n: u64) -> String {
        format!("{}:{n}", self.origin)
    }

    /// Check every limit of every level for `cost` and hold them all, in one script (or from
    /// the local share while Redis is down). Returns the reservation's id.
    pub fn reserve(&self, who: &Who, cost: Cost, cheap: bool) -> Result<u64, Refusal> {
        self.flush();
        let config = self.config();
        let (planned, levels) = plan(&config, who);
        let takes: Vec<(usize, Take)> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let amount = p.meter.unit.of(&cost);
                (amount > 0.0).then(|| {
                    (
                        i,
                        Take {
                            meter: p.shared.clone(),
                            amount,
                            check: !(p.on_over == OnOver::Degrade && cheap),
                        },
                    )
                })
            })
            .collect();
        if let Some(answer) = self.reserve_leased(&config, who, &planned, &takes, &levels) {
            return answer;
        }
        self.reserve_per_call(&config, who, &planned, &takes, levels)
    }

    /// From this process's leases, when every limit of the call can be leased; None: the
    /// call takes the per-call path.
    fn reserve_leased(
        &self,
        config: &SpendConfig,
        who: &Who,
        planned: &[Planned],
        takes: &[(usize, Take)],
        levels: &[String],
    ) -> Option<Result<u64, Refusal>> {
        let leasable = config.lease
            && !config.shadow
            && takes
                .iter()
                .all(|(i, t)| t.check && planned.get(*i).is_some_and(|p| p.meter.span.is_some()));
        if !leasable || !self.store().is_up() {
            return None;
        }
        let asks: Vec<Ask<'_>> = takes
            .iter()
            .map(|(_, t)| Ask {
                meter: &t.meter,
                amount: t.amount,
            })
            .collect();
        match self.leases.reserve(&asks, levels) {
            Admit::Held(id) => Some(Ok(LEASED | (id & ID_BITS))),
            Admit::Refused(over) => {
                self.lock().seen.extend(levels.iter().cloned());
                Some(Err(self.refusal_of(who, planned, takes, &over)))
            }
            // Redis did not answer (the down policy decides), or a lease stayed busy.
            Admit::Failed if self.store().is_up() => None,
            Admit::Failed => Some(self.reserve_down(config, who, planned, takes, levels.to_vec())),
        }
    }

    /// One script holds every limit of the call.
    fn reserve_per_call(
        &self,
        config: &SpendConfig,
        who: &Who,
        planned: &[Planned],
        takes: &[(usize, Take)],
        levels: Vec<String>,
    ) -> Result<u64, Refusal> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) & ID_BITS;
        let id = self.redis_id(n);
        let ttl = u64::try_from(config.ttl().as_micros()).unwrap_or(u64::MAX);
        let now = self.now_us();
        let was_up = self.store().is_up();
        let answer = {
            let spend = self.spend.clone();
            let only: Vec<Take> = takes.iter().map(|(_, t)| t.clone()).collect();
            let (levels, shadow) = (levels.clone(), config.shadow);
            self.store()
                .block_on(async move { spend.reserve(&id, &only, &levels, shadow, ttl, now).await })
        };
        let Ok(reserved) = answer else {
            if was_up {
                // The script may have run with its answer lost: its hold would stay until
                // `reservation_ttl`. Released once Redis answers again.
                self.lock().pending.push(Pending {
                    id: self.redis_id(n),
                    who: who.clone(),
                    cost: None,
                });
            }
            return self.reserve_down(config, who, planned, takes, levels);
        };
        {
            let mut d = self.lock();
            for ((_, t), used) in takes.iter().zip(&reserved.used) {
                let held = if reserved.held { t.amount } else { 0.0 };
                d.last_used.insert(t.meter.name.clone(), used + held);
            }
            d.seen.extend(levels);
        }
        if reserved.held {
            return Ok(IN_REDIS | n);
        }
        Err(self.refusal_of(who, planned, takes, &reserved.over))
    }

    fn refusal_of(
        &self,
        who: &Who,
        planned: &[Planned],
        takes: &[(usize, Take)],
        over: &[SharedRefusal],
    ) -> Refusal {
        let mut found = None;
        for o in over {
            let Some((i, take)) = takes.get(o.meter) else {
                continue;
            };
            let Some(p) = planned.get(*i) else { continue };
            let resets = o.resets_in_us.map(Duration::from_micros);
            found = Some(worse(
                found,
                refusal(p, who, o.used, take.amount, resets, p.meter.describe()),
            ));
        }
        found.unwrap_or_else(|| {
            // Redis refused without naming a meter: a script out of step; refuse plainly.
            let p = takes.first().and_then(|(i, _)| planned.get(*i));
            let exceeded = Exceeded {
                tenant: who.tenant.clone(),
                user: None,
                level: p.map_or(Level::Global, |p| p.level),
                budget: p.map_or_else(|| "budget".into(), |p| p.meter.describe()),
                spent: f64::NAN,
                limit: p.map_or(0.0, |p| p.meter.limit),
                resets_in: None,
            };
            Refusal::Raise(Box::new(exceeded))
        })
    }

    /// Redis did not answer: the configured policy decides.
    fn reserve_down(
        &self,
        config: &SpendConfig,
        who: &Who,
        planned: &[Planned],
        takes: &[(usize, Take)],
        levels: Vec<String>,
    ) -> Result<u64, Refusal> {
        let seen = self.leases.take_seen();
        let mut d = self.lock();
        d.last_used.extend(seen);
        d.seen.extend(levels);
        let mut found = None;
        if config.on_redis_down == RedisDown::FailClosed {
            if let Some((i, t)) = takes.first() {
                if let Some(p) = planned.get(*i) {
                    let budget = format!(
                        "{} (unknown while redis is unreachable: on_redis_down = fail_closed)",
                        p.meter.describe()
                    );
                    let mut r = refusal(p, who, p.meter.limit, t.amount, None, budget);
                    if let Refusal::Wait { exceeded, .. } | Refusal::Degrade(exceeded) = r {
                        r = Refusal::Raise(exceeded);
                    }
                    found = Some(r);
                }
            }
        } else {
            for (i, t) in takes {
                let Some(p) = planned.get(*i) else { continue };
                let last = d.last_used.get(&t.meter.name).copied().unwrap_or(0.0);
                let share = *d.share.entry(t.meter.name.clone()).or_insert(Share {
                    allowance: config.local_share * (t.meter.limit - last).max(0.0),
                    taken: 0.0,
                });
                if !t.check || share.taken + t.amount <= share.allowance + EPSILON {
                    continue;
                }
                let budget = format!(
                    "{} (this process's share while redis is unreachable)",
                    p.meter.describe()
                );
                let spent = last + share.taken;
                found = Some(worse(found, refusal(p, who, spent, t.amount, None, budget)));
            }
        }
        if let Some(r) = found {
            if !config.shadow {
                d.local_refused += 1;
                return Err(r);
            }
        }
        let mut held = Vec::with_capacity(takes.len());
        for (_, t) in takes {
            if let Some(s) = d.share.get_mut(&t.meter.name) {
                s.taken += t.amount;
            }
            held.push((t.meter.name.clone(), t.amount));
        }
        d.next_local += 1;
        let id = d.next_local & ID_BITS;
        d.holds.insert(id, held);
        d.local_admitted += 1;
        Ok(id)
    }

    /// A USD budget of `who` has used its `near` fraction, as this process last saw it in
    /// Redis (a lease's answer, else a per-call script's), its own calls in flight included.
    /// A meter never seen is not low.
    pub fn running_low(&self, who: &Who) -> bool {
        let config = self.config();
        if !config.prefer_cheaper_near {
            return false;
        }
        let (planned, _) = plan(&config, who);
        planned
            .iter()
            .filter(|p| p.meter.unit == Unit::Usd)
            .any(|p| {
                let name = &p.shared.name;
                let used = self
                    .leases
                    .used(name)
                    .or_else(|| self.lock().last_used.get(name).copied());
                used.is_some_and(|u| near_limit(u, p.meter.limit, config.near))
            })
    }

    /// Charge `cost` for reservation `id` and drop its hold. A settlement Redis does not take
    /// now is kept and written back later; one retried after a lost reply counts once.
    pub fn settle(&self, id: u64, who: &Who, cost: Cost) {
        if id & LEASED != 0 {
            let config = self.config();
            let (planned, levels) = plan(&config, who);
            let real: Vec<(&SharedMeter, f64)> = planned
                .iter()
                .filter(|p| p.meter.span.is_some())
                .map(|p| (&p.shared, p.meter.unit.of(&cost)))
                .collect();
            let charge = Charge {
                requests: cost.requests,
                tokens: cost.tokens,
                usd: cost.usd,
            };
            if self.store().is_up() {
                self.leases.settle(id & ID_BITS, &real, &levels, charge);
                return;
            }
            // Redis is down: written back as a settlement made while down.
            self.leases.release(id & ID_BITS);
            let n = self.next.fetch_add(1, Ordering::Relaxed) & ID_BITS;
            let mut d = self.lock();
            take_share(&mut d, &config, who, cost);
            d.pending.push(Pending {
                id: format!("{}:ls{n}", self.origin),
                who: who.clone(),
                cost: Some(cost),
            });
            return;
        }
        if id & IN_REDIS == 0 {
            let mut d = self.lock();
            unhold(&mut d, id);
            take_share(&mut d, &self.config(), who, cost);
            let write = format!("{}:w{id}", self.origin);
            d.pending.push(Pending {
                id: write,
                who: who.clone(),
                cost: Some(cost),
            });
            drop(d);
            self.flush();
            return;
        }
        let write = self.redis_id(id & !IN_REDIS);
        if self.write(&write, who, cost).is_err() {
            let mut d = self.lock();
            take_share(&mut d, &self.config(), who, cost);
            d.pending.push(Pending {
                id: write,
                who: who.clone(),
                cost: Some(cost),
            });
        }
    }

    /// One settlement to Redis.
    fn write(&self, id: &str, who: &Who, cost: Cost) -> Result<bool, crate::store::StoreError> {
        let config = self.config();
        let (planned, levels) = plan(&config, who);
        let mut meters = Vec::new();
        let mut amounts = Vec::new();
        for p in planned.iter().filter(|p| p.meter.span.is_some()) {
            meters.push(p.shared.clone());
            amounts.push(p.meter.unit.of(&cost));
        }
        let charge = Charge {
            requests: cost.requests,
            tokens: cost.tokens,
            usd: cost.usd,
        };
        let (spend, id, now) = (self.spend.clone(), id.to_owned(), self.now_us());
        self.store().block_on(async move {
            spend
                .settle(&id, &meters, &amounts, &levels, Some(charge), now)
                .await
        })
    }

    /// Give reservation `id` back uncharged. If Redis does not answer, its hold expires.
    pub fn release(&self, id: u64) {
        if id & LEASED != 0 {
            self.leases.release(id & ID_BITS);
            return;
        }
        if id & IN_REDIS == 0 {
            unhold(&mut self.lock(), id);
            return;
        }
        let _ = self.release_in_redis(&self.redis_id(id & !IN_REDIS));
    }

    fn release_in_redis(&self, id: &str) -> Result<bool, crate::store::StoreError> {
        let (spend, id) = (self.spend.clone(), id.to_owned());
        self.store()
            .block_on(async move { spend.release(&id).await })
    }

    /// Write back what was settled while Redis was down, once it is up. The local share ends
    /// when nothing is left to write.
    pub fn flush(&self) {
        if !self.store().is_up() {
            return;
        }
        if self.leases.pending() > 0 {
            self.leases.retry_pending();
        }
        let batch = {
            let mut d = self.lock();
            if d.pending.is_empty() {
                if !d.share.is_empty() {
                    d.share.clear();
                }
                return;
            }
            std::mem::take(&mut d.pending)
        };
        let mut left = Vec::new();
        for p in batch {
            if left.is_empty() {
                let written = match p.cost {
                    Some(cost) => self.write(&p.id, &p.who, cost).is_ok(),
                    None => self.release_in_redis(&p.id).is_ok(),
                };
                if written {
                    continue;
                }
            }
            left.push(p);
        }
        let mut d = self.lock();
        if left.is_empty() && d.pending.is_empty() {
            d.share.clear();
        } else {
            d.pending.splice(0..0, left);
        }
    }

    /// A cache hit: nothing spent, `cost` saved (counted in Redis; lost if it is down).
    pub fn saved(&self, who: &Who, cost: Cost) {
        let levels: Vec<String> = self
            .config()
            .levels(who)
            .into_iter()
            .map(|l| l.key)
            .collect();
        let spend = self.spend.clone();
        let _ = self
            .store()
            .block_on(async move { spend.saved(&levels, cost.usd, cost.tokens).await });
    }

    /// Write back everything now and hand this process's leases back: for a process about to
    /// exit (what is left unwritten at exit is lost; leases expire by themselves).
    pub fn hand_back(&self) {
        self.flush();
        if self.store().is_up() {
            self.leases.run_tick(None, true, false, false);
        }
    }

    /// Spend, limits and what is left per level, as Redis holds them (two round trips, and
    /// one to book what leases settled); while Redis is down, what this process last saw plus
    /// what it took since. A limit's use counts every process's leases, less what this
    /// process's leases hold unused: Redis says what this process's lease holds in the read
    /// that sums the meter (a lease renewed in the background meanwhile is not counted twice).
    pub fn report(&self) -> Report {
        self.flush();
        if self.store().is_up() {
            // Waits for lease operations in flight: what they book is then in Redis.
            self.leases.run_tick(None, false, false, true);
        }
        let config = self.config();
        let spend = self.spend.clone();
        let levels = self.store().block_on(async move { spend.levels().await });
        let Ok(mut levels) = levels else {
            return self.report_down(&config);
        };
        levels.sort();
        let mut meters = Vec::new();
        for key in &levels {
            for m in config
                .level(key)
                .map(LevelConfig::meters)
                .unwrap_or_default()
            {
                meters.push((key.clone(), m, shared_meter(key, &m)));
            }
        }
        let spend = self.spend.clone();
        let shared: Vec<(SharedMeter, Option<String>)> = meters
            .iter()
            .map(|(_, _, s)| (s.clone(), Some(self.leases.lease_id(&s.name))))
            .collect();
        let (asked, now) = (levels.clone(), self.now_us());
        let Ok(read) = self
            .store()
            .block_on(async move { spend.read(&shared, &asked, now).await })
        else {
            return self.report_down(&config);
        };
        {
            let mut d = self.lock();
            for ((_, _, s), used) in meters.iter().zip(&read.used) {
                d.last_used.insert(s.name.clone(), *used);
            }
        }
        // This process's share of its leases: what its calls took (read after Redis answered:
        // a call settled meanwhile is here, not yet booked there).
        let in_use = self.leases.in_use();
        let mut out = Vec::with_capacity(levels.len());
        let mut used = read.used.iter().zip(&read.leased);
        let mut m = meters.iter().peekable();
        for (key, counters) in levels.iter().zip(&read.counters) {
            let mut reports = Vec::new();
            while let Some((_, meter, shared)) = m.next_if(|(k, _, _)| k == key) {
                let (u, leased) = used.next().map_or((0.0, 0.0), |(u, l)| (*u, *l));
                let mine = in_use.get(&shared.name).copied().unwrap_or(0.0);
                reports.push(meter_report(&config, meter, (u - leased).max(0.0) + mine));
            }
            out.push(LevelReport {
                key: key.clone(),
                counters: counters_of(counters),
                meters: reports,
            });
        }
        Report {
            levels: out,
            in_flight: read.in_flight + self.lock().holds.len() + self.leases.in_flight(),
            shadow: config.shadow,
        }
    }

    fn report_down(&self, config: &SpendConfig) -> Report {
        let d = self.lock();
        let mut keys: Vec<&String> = d.seen.iter().collect();
        keys.sort();
        let levels = keys
            .into_iter()
            .map(|key| {
                let meters = config
                    .level(key)
                    .map(LevelConfig::meters)
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        let name = shared_meter(key, m).name;
                        let used = d.last_used.get(&name).copied().unwrap_or(0.0)
                            + d.share.get(&name).map_or(0.0, |s| s.taken);
                        meter_report(config, m, used)
                    })
                    .collect();
                LevelReport {
                    key: key.clone(),
                    counters: Counters::default(),
                    meters,
                }
            })
            .collect();
        Report {
            levels,
            in_flight: d.holds.len() + self.leases.in_flight(),
            shadow: config.shadow,
        }
    }
}

fn meter_report(config: &SpendConfig, m: &Meter, used: f64) -> MeterReport {
    MeterReport {
        budget: m.describe(),
        used,
        limit: m.limit,
        remaining: (m.limit - used).max(0.0),
        near: near_limit(used, m.limit, config.near),
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn counters_of(c: &[f64; 8]) -> Counters {
    debug_assert_eq!(COUNTERS.len(), c.len());
    let int = |x: f64| x.max(0.0) as u64;
    Counters {
        requests: int(c[0]),
        refused: int(c[1]),
        would_refuse: int(c[2]),
        usd: c[3],
        tokens: int(c[4]),
        cache_hits: int(c[5]),
        saved_usd: c[6],
        saved_tokens: int(c[7]),
    }
}

/// Drop a local reservation's hold on the share.
fn unhold(d: &mut Down, id: u64) {
    if let Some(held) = d.holds.remove(&id) {
        for (name, amount) in held {
            if let Some(s) = d.share.get_mut(&name) {
                s.taken = (s.taken - amount).max(0.0);
            }
        }
    }
}

/// Count spend settled while down against the share (windows frozen until Redis is back).
fn take_share(d: &mut Down, config: &SpendConfig, who: &Who, cost: Cost) {
    if d.share.is_empty() {
        return;
    }
    let (planned, _) = plan(config, who);
    for p in planned.iter().filter(|p| p.meter.span.is_some()) {
        if let Some(s) = d.share.get_mut(&p.shared.name) {
            s.taken += p.meter.unit.of(&cost);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "shared_ledger/tests.rs"]
mod tests;
