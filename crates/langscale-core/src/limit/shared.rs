//! A rate limiter shared by every process that names the same limit: GCRA buckets (requests
//! per second/minute, tokens per minute) and a concurrency cap held in Redis and changed by
//! one atomic Lua script per admission, with the server's clock (no skew between hosts).
//!
//! - Leasing: with `lease > 1` a process takes up to that many request units per round trip
//!   and hands them out locally; the global rate still holds (units are taken from the shared
//!   bucket), at the cost of units expiring unused when the process goes quiet.
//! - Concurrency: each admitted call holds a slot (a member of a sorted set scored by its
//!   expiry); a heartbeat renews the slots this process holds, so a crashed worker's slots
//!   expire after `slot_ttl` instead of leaking.
//! - Priorities across processes: a waiter that is refused registers its ticket in the
//!   waiting set of its priority (expiring shortly after its next retry); the script refuses
//!   anyone of a lower priority while a more urgent waiter is registered anywhere.
//! - Fair shares across processes: a request naming a tenant (`Ask::flow`) records it as
//!   active; its share is its weight (`tenant_weights`, default 1) over those of the tenants
//!   active in the last second. A tenant refused while within its share marks itself starved
//!   for twice its wait; while another tenant is starved, a tenant is admitted only within its
//!   share (a GCRA of its own at the share's rate), else it may use whatever is free. Requests
//!   naming no tenant do no extra work and take no part; tenants never lease.
//! - Fair slots: with a concurrency cap, a tenant's slot share is max(1, floor(share × cap)).
//!   Its slots are members `ticket|tenant`, counted per tenant in a hash that every removal
//!   keeps right (release, and the admission script when it prunes expired slots). With the
//!   slots full, a waiting tenant holding fewer than its slot share marks itself slot-starved
//!   until just after its next poll (cleared when it is admitted); while another tenant is so
//!   marked, a tenant holding its slot share or more is refused a free slot, which goes to the
//!   starved tenant at its next poll. Requests naming no tenant keep first-come slots.
//! - Redis down: admissions come from a local limiter holding this process's share of every
//!   limit (`local_share`, or one over the live workers counted by the heartbeat); sharing
//!   resumes as soon as the store is up again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use super::fair::Flow;
use super::{Ask, LimitError, Limiter, LimiterConfig, LimiterStats, Permit, Priority};
use crate::store::{unique_id, Lua, Store, StoreError};

const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id, prio, register = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local want, tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local cmax, slot_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local nb = tonumber(ARGV[8])
local function wait(us)
  us = math.min(us, 3600000000)
  if register then
    redis.call('ZADD', KEYS[3 + prio], string.format('%.17g', now + us + 250000), id)
    redis.call('PEXPIRE', KEYS[3 + prio], 60000)
  end
  return {0, math.floor(us)}
end
for p = 0, prio - 1 do
  local w = KEYS[3 + p]
  redis.call('ZREMRANGEBYSCORE', w, '-inf', string.format('%.17g', now))
  if redis.call('ZCARD', w) > 0 then return wait(2000) end
end
-- Concurrency slots: members are tickets, 'ticket|tenant' for a tenant's slot; KEYS[6] counts
-- each tenant's slots and is kept right by every removal (here, and the release script).
local used = 0
if cmax > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%.17g', now))
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.17g', now))
    for _, m in ipairs(gone) do
      local bar = string.find(m, '|', 1, true)
      if bar then
        local who = string.sub(m, bar + 1)
        if redis.call('HINCRBY', KEYS[6], who, -1) <= 0 then redis.call('HDEL', KEYS[6], who) end
      end
    end
  end
  used = redis.call('ZCARD', KEYS[2])
  if used >= cmax and not ARGV[9 + nb * 4] then return wait(5000) end
end
-- Fair shares (only when the request names a tenant): the tenant's share is its weight over
-- the weights of the tenants seen in the last second; a per-tenant GCRA at that share says
-- whether it is within it. Beyond its share it is admitted only while no other tenant is
-- starved (refused recently while within its own share).
local tenant = ARGV[9 + nb * 4]
local share, others = 1, false
if tenant then
  local cutoff = string.format('%.17g', now - 1000000)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', '(' .. cutoff)
  for _, g in ipairs(gone) do redis.call('HDEL', KEYS[9], g) end
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. cutoff)
  redis.call('ZADD', KEYS[8], string.format('%.17g', now), tenant)
  redis.call('HSET', KEYS[9], tenant, ARGV[10 + nb * 4])
  local sum = 0
  for _, a in ipairs(redis.call('ZRANGE', KEYS[8], 0, -1)) do
    sum = sum + (tonumber(redis.call('HGET', KEYS[9], a)) or 1)
  end
  local weight = tonumber(ARGV[10 + nb * 4])
  share = weight / math.max(sum, weight)
  redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', string.format('%.17g', now))
  local n = redis.call('ZCARD', KEYS[10])
  if redis.call('ZSCORE', KEYS[10], tenant) then n = n - 1 end
  others = n > 0
  for k = 8, 10 do redis.call('PEXPIRE', KEYS[k], 60000) end
end
-- Fair slots: a tenant's slot share is max(1, floor(share * cmax)). With the slots full, a
-- waiting tenant holding fewer marks itself starved (KEYS[11]) until just after its next
-- poll; while another tenant is starved, one holding its slot share or more is refused a
-- free slot, which the starved tenant takes at its next poll.
local held, slot_share = 0, 0
if tenant and cmax > 0 then
  if used == 0 then redis.call('DEL', KEYS[6]) end
  held = tonumber(redis.call('HGET', KEYS[6], tenant) or '0')
  slot_share = math.max(1, math.floor(share * cmax + 1e-9))
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', string.format('%.17g', now))
  if used >= cmax then
    if held < slot_share and register then
      redis.call('ZADD', KEYS[11], string.format('%.17g', now + 50000), tenant)
      redis.call('PEXPIRE', KEYS[11], 60000)
    end
    return wait(5000)
  end
  if held >= slot_share then
    local n = redis.call('ZCARD', KEYS[11])
    if redis.call('ZSCORE', KEYS[11], tenant) then n = n - 1 end
    if n > 0 then return wait(5000) end
  end
end
local take = want
local tats, mine = {}, {}
local delay, tdelay, within = 0, 0, true
for i = 0, nb - 1 do
  local b = 9 + i * 4
  local interval, cap, kind = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), ARGV[b + 3]
  local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[b]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  if kind == 'r' then
    local fit = math.floor((now + cap - tat) / interval + 1e-9)
    if fit < 1 then
      delay = math.max(delay, tat + interval - cap - now)
      take = 0
    elseif fit < take then
      take = fit
    end
  elseif tokens > 0 and tat + tokens * interval - now > cap + 1e-6 then
    delay = math.max(delay, tat + tokens * interval - cap - now)
    take = 0
  end
  if tenant then
    local ti = interval / share
    local units = 1
    if kind ~= 'r' then units = tokens end
    local tcap = math.max(cap, ti * math.max(units, 1))
    local field = ARGV[b] .. ':' .. tenant
    local ttat = tonumber(redis.call('HGET', KEYS[7], field) or '0')
    if ttat < now then ttat = now end
    mine[i] = {field, ttat, ti, tcap}
    if units > 0 and ttat + units * ti - now > tcap + 1e-6 then
      tdelay = math.max(tdelay, ttat + units * ti - tcap - now)
      within = false
    end
  end
end
if tenant and others and not within then return wait(math.max(tdelay, 1)) end
if take < 1 then
  if tenant and within and register then
    local till = now + 2 * math.min(delay, 3600000000) + 50000
    redis.call('ZADD', KEYS[10], string.format('%.17g', till), tenant)
  end
  return wait(math.max(delay, 1))
end
local horizon = 0
for i = 0, nb - 1 do
  local b = 9 + i * 4
  local units = take
  if ARGV[b + 3] ~= 'r' then units = tokens end
  if units > 0 then
    local new = tats[i] + units * tonumber(ARGV[b + 1])
    redis.call('HSET', KEYS[1], ARGV[b], string.format('%.17g', new))
    horizon = math.max(horizon, new - now)
    local m = mine[i]
    if m then
      -- Beyond its share the tenant owes at most one burst, not its whole excess.
      local tnew = math.min(m[2] + units * m[3], now + m[4])
      redis.call('HSET', KEYS[7], m[1], string.format('%.17g', tnew))
      local tttl = math.min(math.max(math.ceil((tnew - now) / 1000) + 1000, 60000), 1e12)
      redis.call('PEXPIRE', KEYS[7], string.format('%.0f', tttl))
    end
  end
end
if horizon > 0 then
  local ttl = math.min(math.ceil(horizon / 1000) + 1000, 1e12)
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
end
if cmax > 0 then
  local member, ttl = id, math.ceil(slot_ttl / 1000) + 1000
  if tenant then
    member = id .. '|' .. tenant
    redis.call('HINCRBY', KEYS[6], tenant, 1)
    redis.call('PEXPIRE', KEYS[6], ttl)
    redis.call('ZREM', KEYS[11], tenant)
  end
  redis.call('ZADD', KEYS[2], string.format('%.17g', now + slot_ttl), member)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
for p = 0, 2 do redis.call('ZREM', KEYS[3 + p], id) end
return {take, 0}
";

const ADJUST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local delta = tonumber(ARGV[2])
if delta > 0 then
  if tat < now then tat = now end
  tat = tat + math.min(delta, tonumber(ARGV[3]))
else
  tat = tat + delta
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.17g', tat))
local ttl = math.min(math.max(math.ceil((tat - now) / 1000), 0) + 1000, 1e12)
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
return 1
";

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], string.format('%.17g', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[2], 'XX', string.format('%.17g', now + tonumber(ARGV[3])), ARGV[i])
end
if #ARGV >= 4 then
  -- The sets outlive the slots renewed in them (calls longer than slot_ttl included).
  local ttl = math.ceil(tonumber(ARGV[3]) / 1000) + 1000
  for k = 2, 3 do redis.call('PEXPIRE', KEYS[k], ttl) end
end
return redis.call('ZCARD', KEYS[1])
";

/// Give back a tenant's slot: its count goes down only if the slot was still held (not
/// already expired and counted off by the admission script).
const RELEASE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
return 1
";

/// The longest a waiter sleeps before asking again, and the longest a lease stays valid.
const MAX_NAP: Duration = Duration::from_secs(3600);

fn script(cell: &'static OnceLock<Lua>, source: &'static str) -> &'static Lua {
    cell.get_or_init(|| Lua::new(source))
}

fn take_script() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    script(&S, TAKE)
}

fn adjust_script() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    script(&S, ADJUST)
}

fn release_script() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    script(&S, RELEASE)
}

fn heartbeat_script() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    script(&S, HEARTBEAT)
}

/// One asking waiter at a time (see `Inner::turns`).
type Gate = Arc<tokio::sync::Mutex<()>>;

/// A shared limit: which one (`name`), its limits, and how this process takes part.
#[derive(Debug, Clone)]
pub struct SharedLimiterConfig {
    /// Processes naming the same limit (under the same store prefix and tenant) share it.
    pub name: String,
    pub limits: LimiterConfig,
    /// Request units taken per round trip (1: every admission asks Redis). Used only for
    /// requests that carry no token count and when there is no concurrency cap.
    pub lease: u64,
    /// This process's share of every limit while Redis is down; `None`: one over the number
    /// of live workers last counted.
    pub local_share: Option<f64>,
    /// A concurrency slot not renewed for this long is freed (a crashed worker's slots).
    pub slot_ttl: Duration,
}

impl Default for SharedLimiterConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            limits: LimiterConfig::default(),
            lease: 1,
            local_share: None,
            slot_ttl: Duration::from_secs(30),
        }
    }
}

/// Counters of a shared limiter: those every limiter keeps, and its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SharedStats {
    /// As a local limiter counts them; waits include its local share's (Redis down).
    pub counts: LimiterStats,
    /// Script calls made to Redis for admissions.
    pub round_trips: u64,
    /// Admissions served from a lease, without a round trip.
    pub leased: u64,
    /// Admissions made by the local share while Redis was down.
    pub local: u64,
    /// Live workers last counted by the heartbeat.
    pub workers: u64,
    pub local_share: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    field: &'static str,
    /// Microseconds one unit costs.
    interval: f64,
    /// How far ahead of now the schedule may run, in microseconds.
    capacity: f64,
    requests: bool,
}

#[derive(Debug)]
struct Lease {
    units: u64,
    until: Instant,
}

#[derive(Debug)]
struct Keys {
    state: String,
    slots: String,
    members: String,
    waiting: [String; 3],
    /// Slots held per tenant.
    slot_counts: String,
    /// Tenant TATs, active tenants, their weights, starved tenants.
    fair: [String; 4],
    /// Tenants starved of concurrency slots.
    slot_starved: String,
}

#[derive(Debug, Default)]
struct Counters {
    acquired: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    timeouts: AtomicU64,
    waiting: AtomicU64,
    in_flight: AtomicU64,
    round_trips: AtomicU64,
    leased: AtomicU64,
    local: AtomicU64,
    workers: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    keys: Keys,
    id: String,
    config: SharedLimiterConfig,
    buckets: Vec<Bucket>,
    token_burst: Option<u64>,
    /// The local share and the limiter enforcing it.
    local: RwLock<(f64, Limiter)>,
    lease: Mutex<Lease>,
    held: Mutex<HashSet<String>>,
    /// One waiter per priority in this process asks Redis at a time; the rest queue here in
    /// arrival order. The asking waiter stands for them in the shared waiting sets, so
    /// priorities still hold, and a binding rate costs about two round trips per admission
    /// instead of one per waiter per turn.
    turns: [tokio::sync::Mutex<()>; 3],
    /// The same per tenant and priority, so one tenant's waiters never queue behind another's.
    tenant_turns: Mutex<HashMap<(Arc<str>, u8), Gate>>,
    weights: RwLock<HashMap<Arc<str>, f64>>,
    seq: AtomicU64,
    counters: Counters,
}

/// A limiter shared through Redis. Clone is cheap.
#[derive(Debug, Clone)]
pub struct SharedLimiter {
    inner: Arc<Inner>,
}

/// How a permit was admitted.
#[derive(Debug)]
enum Admission {
    /// By the shared script; `slot` is the concurrency slot held, if any.
    Shared { slot: Option<String> },
    /// From this process's lease.
    Leased,
    /// By the local share while Redis was down.
    Local(Permit),
}

/// Admission to make one call. Dropping it (or `release`) gives its concurrency slot back.
#[derive(Debug)]
pub struct SharedPermit {
    inner: Arc<Inner>,
    tokens: u64,
    priority: Priority,
    admission: Admission,
    released: bool,
}

fn default_burst(rate_per_second: f64) -> u64 {
    (rate_per_second * 0.02).ceil().max(1.0) as u64
}

/// The limits scaled to a share, for the local fallback.
fn local_limits(limits: &LimiterConfig, share: f64) -> LimiterConfig {
    let scale = |r: Option<f64>| r.map(|r| (r * share).max(1e-6));
    LimiterConfig {
        requests_per_second: scale(limits.requests_per_second),
        requests_per_minute: scale(limits.requests_per_minute),
        tokens_per_minute: scale(limits.tokens_per_minute),
        max_concurrency: limits
            .max_concurrency
            .map(|m| ((f64::from(m) * share).floor() as u32).max(1)),
        burst: limits
            .burst
            .map(|b| ((b as f64 * share).ceil() as u64).max(1)),
        token_burst: limits
            .token_burst
            .or(limits.tokens_per_minute.map(|t| t as u64))
            .map(|b| ((b as f64 * share).ceil() as u64).max(1)),
        priority_aging: limits.priority_aging,
        tenant_weights: limits.tenant_weights.clone(),
    }
}

impl SharedLimiter {
    pub fn new(store: Store, config: SharedLimiterConfig) -> Result<Self, LimitError> {
        // The same checks as a local limiter (and the same error messages).
        Limiter::new(&config.limits)?;
        if config.lease == 0 {
            return Err(LimitError::Config("lease must be at least 1, got 0".into()));
        }
        if let Some(share) = config.local_share {
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return Err(LimitError::Config(format!(
                    "local_share must be above 0 and at most 1, got {share}"
                )));
            }
        }
        if config.slot_ttl < Duration::from_millis(100) {
            return Err(LimitError::Config(format!(
                "slot_ttl must be at least 0.1 s, got {:?}",
                config.slot_ttl
            )));
        }
        let limits = &config.limits;
        let mut buckets = Vec::new();
        for (field, rate, per) in [
            ("rps", limits.requests_per_second, 1.0),
            ("rpm", limits.requests_per_minute, 60.0),
        ] {
            if let Some(rate) = rate {
                let burst = limits.burst.unwrap_or_else(|| default_burst(rate / per));
                let interval = per * 1e6 / rate;
                buckets.push(Bucket {
                    field,
                    interval,
                    capacity: interval * burst as f64,
                    requests: true,
                });
            }
        }
        let mut token_burst = None;
        if let Some(rate) = limits.tokens_per_minute {
            let burst = limits.token_burst.unwrap_or((rate as u64).max(1));
            let interval = 60e6 / rate;
            token_burst = Some(burst);
            buckets.push(Bucket {
                field: "tpm",
                interval,
                capacity: interval * burst as f64,
                requests: false,
            });
        }
        let tag = format!("limiter:{}", config.name);
        let keys = Keys {
            state: store.key(&tag, "s"),
            slots: store.key(&tag, "c"),
            members: store.key(&tag, "m"),
            waiting: [
                store.key(&tag, "w0"),
                store.key(&tag, "w1"),
                store.key(&tag, "w2"),
            ],
            fair: [
                store.key(&tag, "ts"),
                store.key(&tag, "ta"),
                store.key(&tag, "tw"),
                store.key(&tag, "tz"),
            ],
            slot_counts: store.key(&tag, "cc"),
            slot_starved: store.key(&tag, "cz"),
        };
        let weights = limits
            .tenant_weights
            .iter()
            .map(|(t, w)| (Arc::from(t.as_str()), *w))
            .collect();
        let share = config.local_share.unwrap_or(1.0);
        let local = Limiter::new(&local_limits(limits, share))?;
        let inner = Arc::new(Inner {
            store,
            keys,
            id: unique_id(),
            buckets,
            token_burst,
            local: RwLock::new((share, local)),
            lease: Mutex::new(Lease {
                units: 0,
                until: Instant::now(),
            }),
            held: Mutex::new(HashSet::new()),
            turns: Default::default(),
            tenant_turns: Mutex::new(HashMap::new()),
            weights: RwLock::new(weights),
            seq: AtomicU64::new(0),
            counters: Counters {
                workers: AtomicU64::new(1),
                ..Counters::default()
            },
            config,
        });
        start_heartbeat(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// The most tokens one request may ask for, if tokens are limited.
    pub fn max_tokens(&self) -> Option<u64> {
        self.inner.token_burst
    }

    /// Change a tenant's weight (its share against the other active tenants; default 1).
    /// Each process sends its own weight with its requests, so set it in every process.
    pub fn set_tenant_weight(&self, tenant: &str, weight: f64) -> Result<(), LimitError> {
        let weight = super::limiter::check_weight(tenant, weight)?;
        self.inner
            .weights
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Arc::from(tenant), weight);
        Ok(())
    }

    fn check_tokens(&self, tokens: u64) -> Result<(), LimitError> {
        match self.inner.token_burst {
            Some(burst) if tokens > burst => Err(LimitError::Config(format!(
                "a request for {tokens} tokens can never be admitted: the token bucket holds at most {burst} (raise token_burst)"
            ))),
            _ => Ok(()),
        }
    }

    pub fn stats(&self) -> SharedStats {
        let c = &self.inner.counters;
        let local = self.inner.local_limiter();
        let ls = local.stats();
        SharedStats {
            counts: LimiterStats {
                acquired: c.acquired.load(Ordering::Relaxed),
                waited: c.waited.load(Ordering::Relaxed) + ls.waited,
                wait_nanos: c.wait_nanos.load(Ordering::Relaxed) + ls.wait_nanos,
                timeouts: c.timeouts.load(Ordering::Relaxed) + ls.timeouts,
                waiting: c.waiting.load(Ordering::Relaxed) + ls.waiting,
                in_flight: c.in_flight.load(Ordering::Relaxed),
            },
            round_trips: c.round_trips.load(Ordering::Relaxed),
            leased: c.leased.load(Ordering::Relaxed),
            local: c.local.load(Ordering::Relaxed),
            workers: c.workers.load(Ordering::Relaxed),
            local_share: self.inner.share(),
        }
    }

    /// Admit now if possible (one round trip at most), never waiting.
    pub fn try_acquire(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
    ) -> Result<Option<SharedPermit>, LimitError> {
        let Ask { priority, flow } = ask.into();
        self.check_tokens(tokens)?;
        if let Some(permit) = self.inner.take_leased(tokens, priority, &flow) {
            return Ok(Some(permit));
        }
        let inner = Arc::clone(&self.inner);
        let ticket = self.inner.ticket();
        let store = self.inner.store.clone();
        let outcome = store.block_on(async move {
            let taken = inner.take(&ticket, priority, false, tokens, &flow).await;
            Ok::<_, StoreError>((inner, ticket, flow, taken))
        });
        match outcome {
            Ok((inner, ticket, flow, Ok(Taken::Units(units)))) => {
                Ok(Some(inner.admitted(ticket, units, tokens, priority, &flow)))
            }
            Ok((_, _, _, Ok(Taken::Wait(_)))) => Ok(None),
            _ => self.inner.local_try(tokens, priority),
        }
    }

    /// Wait until admitted or `timeout` passes. Runs on any async runtime.
    pub async fn acquire(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
        timeout: Option<Duration>,
    ) -> Result<SharedPermit, LimitError> {
        let Ask { priority, flow } = ask.into();
        self.check_tokens(tokens)?;
        if let Some(permit) = self.inner.take_leased(tokens, priority, &flow) {
            return Ok(permit);
        }
        let inner = Arc::clone(&self.inner);
        // The wait runs on the store's runtime; dropping this future cancels it there too.
        let task = crate::store::runtime()
            .spawn(async move { inner.wait(tokens, priority, flow, timeout).await });
        let abort = AbortOnDrop(task.abort_handle());
        let result = task.await;
        drop(abort);
        result.unwrap_or_else(|err| Err(LimitError::Config(format!("limiter wait failed: {err}"))))
    }

    /// `acquire` from a plain thread.
    pub fn acquire_blocking(
        &self,
        tokens: u64,
        ask: impl Into<Ask>,
        timeout: Option<Duration>,
    ) -> Result<SharedPermit, LimitError> {
        let Ask { priority, flow } = ask.into();
        self.check_tokens(tokens)?;
        if let Some(permit) = self.inner.take_leased(tokens, priority, &flow) {
            return Ok(permit);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::clone(&self.inner);
        let task = crate::store::runtime().spawn(async move {
            let _ = tx.send(inner.wait(tokens, priority, flow, timeout).await);
        });
        let _abort = AbortOnDrop(task.abort_handle());
        // The wait honours `timeout` itself; the margin only guards against a lost task.
        let result = match timeout {
            Some(t) => rx
                .recv_timeout(t.saturating_add(Duration::from_secs(2)))
                .ok(),
            None => rx.recv().ok(),
        };
        result.unwrap_or_else(|| {
            self.inner.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            Err(LimitError::Timeout(
                timeout.map_or(0.0, |t| t.as_secs_f64()),
            ))
        })
    }
}

/// A concurrency slot's member in the shared set: the ticket (which holds no `|`), and for a
/// tenant's slot `ticket|tenant`, as the admission script writes it.
fn slot_member(ticket: String, tenant: &Flow) -> String {
    match tenant {
        Some(t) => format!("{ticket}|{t}"),
        None => ticket,
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The script's answer.
#[derive(Debug)]
enum Taken {
    Units(u64),
    /// Refused: retry after this long.
    Wait(Duration),
}

/// Removes a refused waiter's registration if it gives up (timeout, cancel).
struct Registration {
    inner: Arc<Inner>,
    ticket: String,
    active: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let store = self.inner.store.clone();
        let keys = self.inner.keys.waiting.clone();
        let ticket = self.ticket.clone();
        store.clone().spawn(async move {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("ZREM").arg(key).arg(&ticket).ignore();
            }
            store.pipeline::<()>(pipe).await
        });
    }
}

impl Inner {
    fn ticket(&self) -> String {
        format!("{}:{}", self.id, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// The turn gate of one tenant at one priority (pruned of unused gates as it grows).
    fn tenant_gate(&self, tenant: &Arc<str>, priority: Priority) -> Gate {
        let mut gates = self
            .tenant_turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if gates.len() >= 256 {
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        Arc::clone(
            gates
                .entry((Arc::clone(tenant), priority as u8))
                .or_default(),
        )
    }

    fn share(&self) -> f64 {
        self.local.read().unwrap_or_else(PoisonError::into_inner).0
    }

    fn local_limiter(&self) -> Limiter {
        self.local
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Rebuild the local limiter when the worker count changes the share.
    fn set_workers(&self, workers: u64) {
        self.counters.workers.store(workers, Ordering::Relaxed);
        if self.config.local_share.is_some() {
            return;
        }
        let share = 1.0 / workers.max(1) as f64;
        if (self.share() - share).abs() < 1e-9 {
            return;
        }
        if let Ok(limiter) = Limiter::new(&local_limits(&self.config.limits, share)) {
            *self.local.write().unwrap_or_else(PoisonError::into_inner) = (share, limiter);
        }
    }

    fn leasing(&self, tokens: u64, tenant: &Flow) -> bool {
        self.config.lease > 1
            && tokens == 0
            && tenant.is_none()
            && self.config.limits.max_concurrency.is_none()
    }

    fn take_leased(
        self: &Arc<Self>,
        tokens: u64,
        priority: Priority,
        tenant: &Flow,
    ) -> Option<SharedPermit> {
        if !self.leasing(tokens, tenant) || !self.store.is_up() {
            return None;
        }
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        if lease.units == 0 || Instant::now() >= lease.until {
            lease.units = 0;
            return None;
        }
        lease.units -= 1;
        drop(lease);
        self.counters.leased.fetch_add(1, Ordering::Relaxed);
        self.counters.acquired.fetch_add(1, Ordering::Relaxed);
        Some(self.permit(tokens, priority, Admission::Leased))
    }

    fn permit(
        self: &Arc<Self>,
        tokens: u64,
        priority: Priority,
        admission: Admission,
    ) -> SharedPermit {
        SharedPermit {
            inner: Arc::clone(self),
            tokens,
            priority,
            admission,
            released: false,
        }
    }

    /// One round trip of the admission script.
    async fn take(
        &self,
        ticket: &str,
        priority: Priority,
        register: bool,
        tokens: u64,
        tenant: &Flow,
    ) -> Result<Taken, StoreError> {
        let want = if self.leasing(tokens, tenant) {
            self.config.lease
        } else {
            1
        };
        let mut args = vec![
            ticket.to_owned(),
            (priority as u8).to_string(),
            if register { "1" } else { "0" }.to_owned(),
            want.to_string(),
            tokens.to_string(),
            self.config.limits.max_concurrency.unwrap_or(0).to_string(),
            self.config.slot_ttl.as_micros().to_string(),
            self.buckets.len().to_string(),
        ];
        for b in &self.buckets {
            args.push(b.field.to_owned());
            args.push(format!("{:.6}", b.interval));
            args.push(format!("{:.6}", b.capacity));
            args.push(if b.requests { "r" } else { "t" }.to_owned());
        }
        let mut keys = vec![self.keys.state.clone(), self.keys.slots.clone()];
        keys.extend(self.keys.waiting.iter().cloned());
        keys.push(self.keys.slot_counts.clone());
        if let Some(tenant) = tenant {
            let weight = self
                .weights
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(tenant)
                .copied()
                .unwrap_or(1.0);
            args.push(tenant.to_string());
            args.push(format!("{weight:.9}"));
            keys.extend(self.keys.fair.iter().cloned());
            keys.push(self.keys.slot_starved.clone());
        }
        self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        let (units, wait_us): (u64, u64) = self.store.eval(take_script(), keys, args).await?;
        if units > 0 {
            Ok(Taken::Units(units))
        } else {
            Ok(Taken::Wait(Duration::from_micros(wait_us.max(1))))
        }
    }

    /// Book an admission the script granted: keep leased units, hold the slot.
    fn admitted(
        self: &Arc<Self>,
        ticket: String,
        units: u64,
        tokens: u64,
        priority: Priority,
        tenant: &Flow,
    ) -> SharedPermit {
        if units > 1 {
            let slowest = self
                .buckets
                .iter()
                .filter(|b| b.requests)
                .map(|b| b.interval)
                .fold(0.0, f64::max);
            // Spare units are good for as long as they took to earn; after that they would
            // add to a later burst, so they are dropped.
            let valid = Duration::try_from_secs_f64((slowest * units as f64 / 1e6).max(0.02))
                .unwrap_or(Duration::MAX);
            let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
            lease.units = units - 1;
            lease.until = Instant::now()
                .checked_add(valid.min(MAX_NAP))
                .unwrap_or_else(Instant::now);
        }
        self.counters.acquired.fetch_add(1, Ordering::Relaxed);
        let slot = self.config.limits.max_concurrency.map(|_| {
            let slot = slot_member(ticket, tenant);
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(slot.clone());
            self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            slot
        });
        self.permit(tokens, priority, Admission::Shared { slot })
    }

    fn local_try(
        self: &Arc<Self>,
        tokens: u64,
        priority: Priority,
    ) -> Result<Option<SharedPermit>, LimitError> {
        let local = self.local_limiter();
        let tokens = local.max_tokens().map_or(tokens, |max| tokens.min(max));
        Ok(local.try_acquire(tokens, priority)?.map(|p| {
            self.counters.local.fetch_add(1, Ordering::Relaxed);
            self.counters.acquired.fetch_add(1, Ordering::Relaxed);
            self.permit(tokens, priority, Admission::Local(p))
        }))
    }

    /// The waiting loop: ask the script, sleep as long as it says, until admitted; with
    /// Redis down, wait on the local share instead.
    async fn wait(
        self: Arc<Self>,
        tokens: u64,
        priority: Priority,
        tenant: Flow,
        timeout: Option<Duration>,
    ) -> Result<SharedPermit, LimitError> {
        let start = Instant::now();
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let ticket = self.ticket();
        let mut registration = Registration {
            inner: Arc::clone(&self),
            ticket: ticket.clone(),
            active: false,
        };
        let aging = self.config.limits.priority_aging;
        let waiting = WaitingGuard::new(&self.counters);
        let own_gate = tenant.as_ref().map(|t| self.tenant_gate(t, priority));
        let gate = own_gate
            .as_deref()
            .unwrap_or(&self.turns[priority as usize]);
        let _turn = match gate.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                waiting.start();
                match deadline {
                    Some(d) => {
                        if let Ok(turn) = tokio::time::timeout_at(d.into(), gate.lock()).await {
                            turn
                        } else {
                            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                            return Err(LimitError::Timeout(
                                timeout.map_or(0.0, |t| t.as_secs_f64()),
                            ));
                        }
                    }
                    None => gate.lock().await,
                }
            }
        };
        loop {
            // Waiting long enough lifts a waiter one level per `priority_aging`.
            let levels = if aging.is_zero() {
                2
            } else {
                (start.elapsed().as_nanos() / aging.as_nanos().max(1)) as u8
            };
            let effective = match (priority as u8).saturating_sub(levels) {
                0 => Priority::High,
                1 => Priority::Standard,
                _ => Priority::Batch,
            };
            match self.take(&ticket, effective, true, tokens, &tenant).await {
                Ok(Taken::Units(units)) => {
                    registration.active = false;
                    if waiting.waited() {
                        self.counters.waited.fetch_add(1, Ordering::Relaxed);
                        self.counters.wait_nanos.fetch_add(
                            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
                            Ordering::Relaxed,
                        );
                    }
                    return Ok(self.admitted(ticket, units, tokens, priority, &tenant));
                }
                Ok(Taken::Wait(after)) => {
                    registration.active = true;
                    waiting.start();
                    // A very slow rate may say "in years": wake hourly and ask again.
                    let wake = Instant::now() + after.min(MAX_NAP);
                    let wake = deadline.map_or(wake, |d| wake.min(d));
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(LimitError::Timeout(
                            timeout.map_or(0.0, |t| t.as_secs_f64()),
                        ));
                    }
                    tokio::time::sleep_until(wake.into()).await;
                }
                Err(StoreError::Reply(message)) => {
                    // A script error is a bug or a foreign key in the way: never block the
                    // caller on it, fall back as for an outage.
                    let _ = message;
                    return self.wait_local(tokens, priority, deadline, timeout).await;
                }
                Err(_) => return self.wait_local(tokens, priority, deadline, timeout).await,
            }
        }
    }

    async fn wait_local(
        self: &Arc<Self>,
        tokens: u64,
        priority: Priority,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<SharedPermit, LimitError> {
        let local = self.local_limiter();
        let tokens = local.max_tokens().map_or(tokens, |max| tokens.min(max));
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(LimitError::Timeout(
                timeout.map_or(0.0, |t| t.as_secs_f64()),
            ));
        }
        let permit = local.acquire(tokens, priority, remaining).await?;
        self.counters.local.fetch_add(1, Ordering::Relaxed);
        self.counters.acquired.fetch_add(1, Ordering::Relaxed);
        Ok(self.permit(tokens, priority, Admission::Local(permit)))
    }

    fn release_slot(&self, slot: String) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&slot);
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let store = self.store.clone();
        let key = self.keys.slots.clone();
        if let Some((_, tenant)) = slot.split_once('|') {
            let keys = vec![key, self.keys.slot_counts.clone()];
            let args = vec![slot.clone(), tenant.to_owned()];
            self.store
                .spawn(async move { store.eval::<i64>(release_script(), keys, args).await });
            return;
        }
        self.store.spawn(async move {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(key).arg(slot);
            store.query::<i64>(cmd).await
        });
    }

    /// Charge (positive) or refund (negative) tokens on the shared bucket.
    fn adjust_tokens(&self, delta: i64) {
        let Some(bucket) = self.buckets.iter().find(|b| !b.requests) else {
            return;
        };
        let store = self.store.clone();
        let keys = vec![self.keys.state.clone()];
        let args = vec![
            bucket.field.to_owned(),
            format!("{:.6}", delta as f64 * bucket.interval),
            format!("{:.6}", bucket.capacity),
        ];
        self.store
            .spawn(async move { store.eval::<i64>(adjust_script(), keys, args).await });
    }
}

/// Counts a waiter in `waiting` from its first refusal until it is done.
struct WaitingGuard<'a> {
    counters: &'a Counters,
    started: std::sync::atomic::AtomicBool,
}

impl<'a> WaitingGuard<'a> {
    fn new(counters: &'a Counters) -> Self {
        Self {
            counters,
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn start(&self) {
        if !self.started.swap(true, Ordering::Relaxed) {
            self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waited(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        if self.started.load(Ordering::Relaxed) {
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Every `min(1 s, slot_ttl / 3)`: count live workers (for the local share) and renew the
/// concurrency slots this process holds. Ends when the limiter is dropped.
fn start_heartbeat(weak: Weak<Inner>) {
    crate::store::runtime().spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let every = (inner.config.slot_ttl / 3).min(Duration::from_secs(1));
            let member_ttl = every * 3;
            let mut args = vec![
                inner.id.clone(),
                member_ttl.as_micros().to_string(),
                inner.config.slot_ttl.as_micros().to_string(),
            ];
            args.extend(
                inner
                    .held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .cloned(),
            );
            let keys = vec![
                inner.keys.members.clone(),
                inner.keys.slots.clone(),
                inner.keys.slot_counts.clone(),
            ];
            if let Ok(workers) = inner
                .store
                .eval::<u64>(heartbeat_script(), keys, args)
                .await
            {
                inner.set_workers(workers);
            }
            drop(inner);
            tokio::time::sleep(every).await;
        }
    });
}

impl SharedPermit {
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Was it admitted by the local share (Redis down)?
    pub fn is_local(&self) -> bool {
        matches!(self.admission, Admission::Local(_))
    }

    /// Reconcile the token estimate with real usage on whichever bucket admitted it.
    pub fn settle(&mut self, actual_tokens: u64) {
        if actual_tokens == self.tokens {
            return;
        }
        match &mut self.admission {
            Admission::Local(permit) => permit.settle(actual_tokens),
            Admission::Shared { .. } | Admission::Leased => {
                let burst = self.inner.token_burst.unwrap_or(0);
                let delta = if actual_tokens > self.tokens {
                    i64::try_from((actual_tokens - self.tokens).min(burst)).unwrap_or(i64::MAX)
                } else {
                    -i64::try_from(self.tokens - actual_tokens).unwrap_or(i64::MAX)
                };
                self.inner.adjust_tokens(delta);
            }
        }
        self.tokens = actual_tokens;
    }

    /// Give the concurrency slot back now (dropping the permit does the same).
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        match &mut self.admission {
            Admission::Local(permit) => permit.release(),
            Admission::Shared { slot } => {
                if let Some(slot) = slot.take() {
                    self.inner.release_slot(slot);
                }
            }
            Admission::Leased => {}
        }
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        self.release();
    }
}
