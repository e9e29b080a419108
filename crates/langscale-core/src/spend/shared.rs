//! Budgets held in Redis, the scripts and their arguments: one Lua script per operation
//! (reserve across every meter at once, settle, read), all on the server clock (`TIME` inside
//! the script), so processes with skewed clocks agree and no check-then-increment race is
//! possible. [`super::SharedLedger`] builds the `Budgets` semantics on top.
//!
//! Keys of one ledger share one hash tag (`{<prefix>:spend}`), so a reservation across the
//! global, tenant and user levels is one atomic script on one Cluster slot. Per meter, a hash
//! holds spend per slot plus `held` (reservations in flight). Reservations live in a hash
//! (id -> the meters and amounts they hold) and an expiry sorted set: every reserve first
//! drops reservations past their deadline, so a crashed worker does not hold budget.
//! Settle (and release, a settle of nothing) is idempotent by id: a `done` marker kept a day.
//! Per level, a hash of counters (requests, usd, refusals, cache savings) and a set naming
//! the levels seen, for reports. A lease ([`super::lease`]) is a hold like a reservation's,
//! one per meter and process, with its own expiry set (`lexpiry`, kept out of the count of
//! reservations in flight); one script books what a lease settled and resizes its hold.
//!
//! Window arithmetic stays in Rust ([`Span`]): the script gets each meter's slot length and
//! how many slots count. A calendar month has no fixed length, so for it Rust names the
//! current month and when it ends (from this host's clock: only a skew across the month's
//! first second matters).

use super::window::{Span, Window, SLOTS};
use crate::store::{Lua, Store, StoreError};
use std::sync::LazyLock;

/// The Lua functions the budget scripts share, written once: `concat!(prelude!(), body)`
/// puts them before a script's body at compile time.
macro_rules! prelude {
    () => {
        r"
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function add_held(key, d)
  local h = tonumber(redis.call('HGET', key, 'held') or '0') + d
  if h < 1e-12 then h = 0 end
  redis.call('HSET', key, 'held', string.format('%.17g', h))
end

-- what lease `lid` holds (its single `key|amount;` entry), 0 without one
local function lease_hold(holds, lid)
  local v = redis.call('HGET', holds, lid)
  if v then return tonumber(string.match(v, '|([^;|]+);$')) or 0 end
  return 0
end

local function unhold(holds, expiry, id)
  local v = redis.call('HGET', holds, id)
  if v then
    for key, amt in string.gmatch(v, '([^;]+)|([^;]+);') do add_held(key, -tonumber(amt)) end
    redis.call('HDEL', holds, id)
  end
  redis.call('ZREM', expiry, id)
end

-- drops the holds of `expiry` past their deadline
local function expire(holds, expiry, now)
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    unhold(holds, expiry, old)
  end
end

local function slot_of(now, slot_us, fixed)
  if fixed > 0 then return fixed end
  return math.floor(now / slot_us)
end

-- `used` plus what a meter booked in the `slots` slots up to `current`, and those slots as
-- {slot, amount}; older slots are deleted on the way
local function window(key, current, slots, used)
  local first = current - slots + 1
  local booked = {}
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    if all[j] ~= 'held' then
      local s = tonumber(all[j])
      if s < first then
        redis.call('HDEL', key, all[j])
      else
        used = used + tonumber(all[j + 1])
        booked[#booked + 1] = {s, tonumber(all[j + 1])}
      end
    end
  end
  return used, booked
end

-- a refusal of meter `i`: what it used and in how many us enough of `booked` leaves the
-- window for `amount` to fit under `limit` (-1: never)
local function refuse(fails, i, used, amount, limit, booked, slots, slot_us, fixed, fixed_end, now)
  local resets = -1
  if amount <= limit and slots > 0 then
    table.sort(booked, function(x, y) return x[1] < y[1] end)
    local u = used
    for _, e in ipairs(booked) do
      u = u - e[2]
      if u + amount <= limit + 1e-9 then
        if fixed > 0 then resets = fixed_end - now else resets = (e[1] + slots) * slot_us - now end
        break
      end
    end
  end
  fails[#fails + 1] = tostring(i)
  fails[#fails + 1] = string.format('%.17g', used)
  fails[#fails + 1] = string.format('%.0f', resets)
end
"
    };
}

/// Reserve: every meter is checked and held at once, or none is.
static RESERVE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        prelude!(),
        r"
local now = server_now()
local holds, expiry, levels = KEYS[1], KEYS[2], KEYS[3]
expire(holds, expiry, now)
expire(holds, KEYS[#KEYS], now)
local id, ttl = ARGV[1], tonumber(ARGV[2])
local n, m, force = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local fails, useds = {}, {}
for i = 1, n do
  local key, b = KEYS[3 + i], 6 + 7 * (i - 1)
  local slot_us, slots = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
  local limit, amount = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local check, fixed, fixed_end = ARGV[b + 4] == '1', tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local held = tonumber(redis.call('HGET', key, 'held') or '0')
  local used, booked = window(key, slot_of(now, slot_us, fixed), slots, held)
  useds[i] = string.format('%.17g', used)
  if check and used + amount > limit + 1e-9 then
    refuse(fails, i, used, amount, limit, booked, slots, slot_us, fixed, fixed_end, now)
  end
end
local lb = 6 + 7 * n
for j = 1, m do redis.call('SADD', levels, ARGV[lb + j - 1]) end
if #fails > 0 then
  local field = 'refused'
  if force then field = 'would_refuse' end
  for j = 1, m do redis.call('HINCRBY', KEYS[3 + n + j], field, 1) end
  if not force then return {0, fails, useds} end
end
local v = ''
for i = 1, n do
  local amount = tonumber(ARGV[6 + 7 * (i - 1) + 3])
  if amount > 0 then
    local a = string.format('%.17g', amount)
    redis.call('HINCRBYFLOAT', KEYS[3 + i], 'held', a)
    v = v .. KEYS[3 + i] .. '|' .. a .. ';'
  end
end
redis.call('HSET', holds, id, v)
redis.call('ZADD', expiry, now + ttl, id)
return {1, fails, useds}
",
    ))
});

/// Settle (or release: a settle of nothing), once per id.
static SETTLE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        prelude!(),
        r"
local now = server_now()
local holds, expiry, done, levels = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
if redis.call('SET', done, '1', 'NX', 'PX', 86400000) == false then return 0 end
unhold(holds, expiry, id)
local n, m, count = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
for i = 1, n do
  local b = 8 + 3 * (i - 1)
  local slot_us, amount, fixed = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  if amount > 0 then
    local slot = slot_of(now, slot_us, fixed)
    redis.call('HINCRBYFLOAT', KEYS[4 + i], string.format('%.0f', slot), string.format('%.17g', amount))
  end
end
if count then
  local lb = 8 + 3 * n
  for j = 1, m do
    local c = KEYS[4 + n + j]
    redis.call('HINCRBY', c, 'requests', ARGV[5])
    redis.call('HINCRBY', c, 'tokens', ARGV[6])
    redis.call('HINCRBYFLOAT', c, 'usd', ARGV[7])
    redis.call('SADD', levels, ARGV[lb + j - 1])
  end
end
return 1
",
    ))
});

/// A lease's tick: books what it settled and resizes its hold, per meter.
static LEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        prelude!(),
        r"
local now = server_now()
local holds, lexpiry, done, levels, expiry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
expire(holds, expiry, now)
expire(holds, lexpiry, now)
local ttl, n, m, share = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- Only an operation that books needs to be recognised when retried.
local dup = false
if ARGV[1] ~= '' then dup = redis.call('SET', done, '1', 'NX', 'PX', 86400000) == false end
local W = 11
local rows, fails, out = {}, {}, {}
for i = 1, n do
  local key, b = KEYS[5 + i], 6 + W * (i - 1)
  local lid = ARGV[b]
  local slot_us, slots, limit = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local book, cover, want = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local unit, shrink = tonumber(ARGV[b + 7]), ARGV[b + 8] == '1'
  local fixed, fixed_end = tonumber(ARGV[b + 9]), tonumber(ARGV[b + 10])
  local current = slot_of(now, slot_us, fixed)
  local hold0 = lease_hold(holds, lid)
  if dup then book = 0 end
  local hold1 = hold0 - book
  if hold1 < 0 then hold1 = 0 end
  if book > 0 then
    redis.call('HINCRBYFLOAT', key, string.format('%.0f', current), string.format('%.17g', book))
  end
  local held = tonumber(redis.call('HGET', key, 'held') or '0')
  local booked, list = window(key, current, slots, 0)
  local others = booked + held - hold0
  if others < 0 then others = 0 end
  rows[i] = {key = key, lid = lid, hold0 = hold0, hold1 = hold1, others = others, limit = limit,
    cover = cover, want = want, unit = unit, shrink = shrink}
  if not dup and not shrink and cover > hold1 + 1e-12 and others + cover > limit + 1e-9 then
    refuse(fails, i, others, cover, limit, list, slots, slot_us, fixed, fixed_end, now)
  end
end
local refused = #fails > 0
for i = 1, n do
  local r = rows[i]
  local new = r.hold0
  if not dup then
    if r.shrink then
      new = r.cover
    elseif refused then
      new = r.hold1
    else
      local extra = 0
      local free = r.limit - r.others - r.cover
      if free > 0 and r.want > r.cover then
        local cap = share * free
        if cap >= r.unit and r.unit > 0 then
          -- Whole calls only: a fraction of one would sit unused in the lease.
          extra = math.floor(math.min(r.want - r.cover, cap) / r.unit + 1e-9) * r.unit
        end
      end
      new = math.max(r.hold1, r.cover + extra)
    end
    if new < 1e-12 then new = 0 end
    local d = new - r.hold0
    if d ~= 0 then add_held(r.key, d) end
    if new > 0 then
      redis.call('HSET', holds, r.lid, r.key .. '|' .. string.format('%.17g', new) .. ';')
      redis.call('ZADD', lexpiry, now + ttl, r.lid)
    else
      redis.call('HDEL', holds, r.lid)
      redis.call('ZREM', lexpiry, r.lid)
    end
  end
  out[#out + 1] = string.format('%.17g', new)
  out[#out + 1] = string.format('%.17g', r.others)
end
if not dup then
  local lb = 6 + W * n
  for j = 1, m do
    local c, b = KEYS[5 + n + j], lb + 5 * (j - 1)
    redis.call('SADD', levels, ARGV[b])
    if ARGV[b + 1] ~= '0' then redis.call('HINCRBY', c, 'requests', ARGV[b + 1]) end
    if ARGV[b + 2] ~= '0' then redis.call('HINCRBY', c, 'tokens', ARGV[b + 2]) end
    if tonumber(ARGV[b + 3]) ~= 0 then redis.call('HINCRBYFLOAT', c, 'usd', ARGV[b + 3]) end
    if refused and ARGV[b + 4] == '1' then redis.call('HINCRBY', c, 'refused', 1) end
  end
end
local flag = 1
if refused then flag = 0 end
if dup then flag = 2 end
return {flag, fails, out}
",
    ))
});

/// A cache hit's savings, counted per level.
static SAVED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local m = tonumber(ARGV[1])
for j = 1, m do
  local c = KEYS[1 + j]
  redis.call('HINCRBY', c, 'cache_hits', 1)
  redis.call('HINCRBYFLOAT', c, 'saved_usd', ARGV[2])
  redis.call('HINCRBY', c, 'saved_tokens', ARGV[3])
  redis.call('SADD', KEYS[1], ARGV[3 + j])
end
return 1
",
    )
});

/// What each meter used (held included) and each level's counters.
static READ: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        prelude!(),
        r"
local now = server_now()
local holds, expiry = KEYS[1], KEYS[2]
expire(holds, expiry, now)
expire(holds, KEYS[#KEYS], now)
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local useds, counters = {}, {}
for i = 1, n do
  local key, b = KEYS[2 + i], 3 + 4 * (i - 1)
  local slot_us, slots, fixed = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local first = slot_of(now, slot_us, fixed) - slots + 1
  local used = 0
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    if all[j] == 'held' or tonumber(all[j]) >= first then used = used + tonumber(all[j + 1]) end
  end
  -- the asking process's lease on this meter: what it holds now, read with the total
  local lease = 0
  if ARGV[b + 3] ~= '' then lease = lease_hold(holds, ARGV[b + 3]) end
  useds[#useds + 1] = string.format('%.17g', used)
  useds[#useds + 1] = string.format('%.17g', lease)
end
local fields = {'requests', 'refused', 'would_refuse', 'usd', 'tokens', 'cache_hits',
  'saved_usd', 'saved_tokens'}
for j = 1, m do
  local values = redis.call('HMGET', KEYS[2 + n + j], unpack(fields))
  for k = 1, #fields do counters[#counters + 1] = values[k] or '0' end
end
local in_flight = redis.call('ZCARD', expiry)
return {tostring(in_flight), useds, counters}
",
    ))
});

/// The counters a level keeps in Redis, in the order [`SharedSpend::read`] returns them.
pub const COUNTERS: [&str; 8] = [
    "requests",
    "refused",
    "would_refuse",
    "usd",
    "tokens",
    "cache_hits",
    "saved_usd",
    "saved_tokens",
];

/// One meter of one level as Redis holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedMeter {
    /// Level and meter key ("t:acme/usd:day:r"); becomes part of the Redis key.
    pub name: String,
    /// None: calls in flight (held only, never booked).
    pub span: Option<Span>,
    pub limit: f64,
}

impl SharedMeter {
    /// Slot length (µs), how many slots count, and for a calendar month the current month and
    /// when it ends (µs): the only window facts the scripts get.
    fn slots(&self, now_us: u64) -> (u64, u64, u64, u64) {
        match self.span {
            None => (1, 0, 0, 0),
            Some(span) => match (span.calendar, span.window) {
                (true, Window::Month) => {
                    let slot = span.slot(now_us);
                    (Window::Month.micros(), 1, slot, span.expires(slot))
                }
                (true, w) => (w.micros(), 1, 0, 0),
                (false, w) => (w.micros() / SLOTS, SLOTS, 0, 0),
            },
        }
    }
}

/// One meter a reservation would take over its limit: which (index into the list given),
/// what it had used, and in how long enough of that leaves the window (None: never, or only
/// when calls in flight end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedRefusal {
    pub meter: usize,
    pub used: f64,
    pub resets_in_us: Option<u64>,
}

/// What a reserve did: held (with the meters over their limit, in shadow mode) or refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    pub held: bool,
    pub over: Vec<SharedRefusal>,
    /// What each meter had used before this reservation.
    pub used: Vec<f64>,
}

/// One meter in a reserve: what to hold and whether to check it against its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Take {
    pub meter: SharedMeter,
    pub amount: f64,
    /// False: held without a check (a degraded level serving a cheaper deployment).
    pub check: bool,
}

/// What a level's counters hold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Charge {
    pub requests: u64,
    pub tokens: u64,
    pub usd: f64,
}

/// What [`SharedSpend::read`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Read {
    pub in_flight: usize,
    /// Per meter asked, what it used: every hold (leases included) and the window's spend.
    pub used: Vec<f64>,
    /// Per meter asked, what the lease named for it holds (0 without one), read in the same
    /// script as `used`.
    pub leased: Vec<f64>,
    /// Per level asked, the [`COUNTERS`] in order.
    pub counters: Vec<[f64; 8]>,
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(0.0)
}

fn float(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.17e}")
    } else {
        "0".into()
    }
}

/// The meters a script found over their limit: (1-based index, used, µs until it resets).
fn refusals(fails: &[String]) -> Vec<SharedRefusal> {
    fails
        .chunks(3)
        .filter_map(|c| match c {
            [i, used, resets] => Some(SharedRefusal {
                meter: i.parse::<usize>().ok()?.checked_sub(1)?,
                used: num(used),
                resets_in_us: match resets.parse::<i64>() {
                    Ok(-1) | Err(_) => None,
                    // A negative time to a month's end: this host's clock is ahead.
                    Ok(r) => Some(u64::try_from(r).unwrap_or(0)),
                },
            }),
            _ => None,
        })
        .collect()
}

/// One meter of a lease operation: book the spend settled under the lease, then set its hold
/// to at least `cover` (refused, all or none, when that does not fit under the limit), growing
/// it toward `want` by at most `share` of the room left beyond `cover`, and not at all when
/// that is less than `unit` (one call). `shrink`: set the hold to exactly `cover` (a return).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseTake {
    pub meter: SharedMeter,
    /// The lease's id among the holds (one per meter and process).
    pub lease: String,
    pub book: f64,
    pub cover: f64,
    pub want: f64,
    pub unit: f64,
    pub shrink: bool,
}

/// Counters a lease operation adds at one level; `call`: the call asking is counted here (a
/// refusal counts at it).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseLevel {
    pub name: String,
    pub charge: Charge,
    pub call: bool,
}

/// What a lease operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Booked, and every hold is at least its `cover`.
    Granted,
    /// Booked, but some `cover` did not fit: holds unchanged (after booking).
    Refused,
    /// This operation id had already run (a retry after a lost reply): nothing changed.
    Duplicate,
}

/// The answer to a lease operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    pub outcome: LeaseOutcome,
    /// Meters whose `cover` did not fit; `used` is what the others use (booked plus held).
    pub over: Vec<SharedRefusal>,
    /// Each lease's hold now.
    pub holds: Vec<f64>,
    /// What every other hold and the booked spend use of each meter.
    pub others: Vec<f64>,
}

/// Budgets in Redis, one round trip per operation.
#[derive(Debug, Clone)]
pub struct SharedSpend {
    store: Store,
}

impl SharedSpend {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn key(&self, name: &str) -> String {
        self.store.key("spend", name)
    }

    fn meter_key(&self, m: &SharedMeter) -> String {
        self.key(&format!("m:{}", m.name))
    }

    fn counter_key(&self, level: &str) -> String {
        self.key(&format!("c:{level}"))
    }

    /// Every level a reservation or settlement was counted at, ever.
    pub async fn levels(&self) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.key("levels"));
        self.store.query(cmd).await
    }

    /// Hold `takes`, all or none, under reservation `id` (unique per call) and count a
    /// refusal at `levels` if one is over its limit; `force` (shadow mode) holds anyway.
    /// Unsettled, the hold expires after `ttl_us` (server time). `now_us` (this host's clock)
    /// only names the calendar month.
    pub async fn reserve(
        &self,
        id: &str,
        takes: &[Take],
        levels: &[String],
        force: bool,
        ttl_us: u64,
        now_us: u64,
    ) -> Result<Reserved, StoreError> {
        let mut keys = vec![self.key("holds"), self.key("expiry"), self.key("levels")];
        let mut args = vec![
            id.to_owned(),
            ttl_us.to_string(),
            takes.len().to_string(),
            levels.len().to_string(),
            if force { "1" } else { "0" }.to_owned(),
        ];
        for t in takes {
            let (slot_us, slots, fixed, fixed_end) = t.meter.slots(now_us);
            keys.push(self.meter_key(&t.meter));
            args.extend([
                slot_us.to_string(),
                slots.to_string(),
                float(t.meter.limit),
                float(t.amount),
                if t.check { "1" } else { "0" }.to_owned(),
                fixed.to_string(),
                fixed_end.to_string(),
            ]);
        }
        for l in levels {
            keys.push(self.counter_key(l));
        }
        args.extend(levels.iter().cloned());
        keys.push(self.key("lexpiry"));
        let (ok, fails, used): (i64, Vec<String>, Vec<String>) =
            self.store.eval(&RESERVE, keys, args).await?;
        Ok(Reserved {
            held: ok == 1,
            over: refusals(&fails),
            used: used.iter().map(|u| num(u)).collect(),
        })
    }

    /// Book `amounts[i]` (real usage) on `meters[i]`, count `charge` at `levels` and drop
    /// reservation `id`'s hold. A retried settle (or a settle after a release) changes
    /// nothing: returns false.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle(
        &self,
        id: &str,
        meters: &[SharedMeter],
        amounts: &[f64],
        levels: &[String],
        charge: Option<Charge>,
        now_us: u64,
    ) -> Result<bool, StoreError> {
        let mut keys = vec![
            self.key("holds"),
            self.key("expiry"),
            self.key(&format!("done:{id}")),
            self.key("levels"),
        ];
        let c = charge.unwrap_or_default();
        let mut args = vec![
            id.to_owned(),
            meters.len().to_string(),
            levels.len().to_string(),
            if charge.is_some() { "1" } else { "0" }.to_owned(),
            c.requests.to_string(),
            c.tokens.to_string(),
            float(c.usd),
        ];
        for (m, a) in meters.iter().zip(amounts) {
            let (slot_us, _, fixed, _) = m.slots(now_us);
            keys.push(self.meter_key(m));
            args.extend([slot_us.to_string(), float(*a), fixed.to_string()]);
        }
        for l in levels {
            keys.push(self.counter_key(l));
        }
        args.extend(levels.iter().cloned());
        let n: i64 = self.store.eval(&SETTLE, keys, args).await?;
        Ok(n == 1)
    }

    /// One lease operation, all meters at once, idempotent by `op` (a retry after a lost reply
    /// changes nothing; an empty `op`, for one that books nothing, leaves no marker). Holds
    /// not renewed expire after `ttl_us` (server time).
    pub async fn lease(
        &self,
        op: &str,
        takes: &[LeaseTake],
        levels: &[LeaseLevel],
        share: f64,
        ttl_us: u64,
        now_us: u64,
    ) -> Result<Leased, StoreError> {
        let mut keys = vec![
            self.key("holds"),
            self.key("lexpiry"),
            self.key(&format!("done:{op}")),
            self.key("levels"),
            self.key("expiry"),
        ];
        let mut args = vec![
            op.to_owned(),
            ttl_us.to_string(),
            takes.len().to_string(),
            levels.len().to_string(),
            float(share),
        ];
        for t in takes {
            let (slot_us, slots, fixed, fixed_end) = t.meter.slots(now_us);
            keys.push(self.meter_key(&t.meter));
            args.extend([
                t.lease.clone(),
                slot_us.to_string(),
                slots.to_string(),
                float(t.meter.limit),
                float(t.book),
                float(t.cover),
                float(t.want),
                float(t.unit),
                if t.shrink { "1" } else { "0" }.to_owned(),
                fixed.to_string(),
                fixed_end.to_string(),
            ]);
        }
        for l in levels {
            keys.push(self.counter_key(&l.name));
            args.extend([
                l.name.clone(),
                l.charge.requests.to_string(),
                l.charge.tokens.to_string(),
                float(l.charge.usd),
                if l.call { "1" } else { "0" }.to_owned(),
            ]);
        }
        let (flag, fails, out): (i64, Vec<String>, Vec<String>) =
            self.store.eval(&LEASE, keys, args).await?;
        let mut holds = Vec::with_capacity(takes.len());
        let mut others = Vec::with_capacity(takes.len());
        for pair in out.chunks(2) {
            if let [h, o] = pair {
                holds.push(num(h));
                others.push(num(o));
            }
        }
        Ok(Leased {
            outcome: match flag {
                1 => LeaseOutcome::Granted,
                2 => LeaseOutcome::Duplicate,
                _ => LeaseOutcome::Refused,
            },
            over: refusals(&fails),
            holds,
            others,
        })
    }

    /// Give reservation `id` back uncharged: a settle of nothing.
    pub async fn release(&self, id: &str) -> Result<bool, StoreError> {
        self.settle(id, &[], &[], &[], None, 0).await
    }

    /// Count a cache hit that saved `usd` and `tokens` at `levels`.
    pub async fn saved(&self, levels: &[String], usd: f64, tokens: u64) -> Result<(), StoreError> {
        let mut keys = vec![self.key("levels")];
        keys.extend(levels.iter().map(|l| self.counter_key(l)));
        let mut args = vec![levels.len().to_string(), float(usd), tokens.to_string()];
        args.extend(levels.iter().cloned());
        let _: i64 = self.store.eval(&SAVED, keys, args).await?;
        Ok(())
    }

    /// What each meter counts now (booked in its window plus held, reservations past their
    /// deadline dropped first) and what the lease named with it holds, the counters of each
    /// level, and the reservations in flight.
    pub async fn read(
        &self,
        meters: &[(SharedMeter, Option<String>)],
        levels: &[String],
        now_us: u64,
    ) -> Result<Read, StoreError> {
        let mut keys = vec![self.key("holds"), self.key("expiry")];
        let mut args = vec![meters.len().to_string(), levels.len().to_string()];
        for (m, lease) in meters {
            let (slot_us, slots, fixed, _) = m.slots(now_us);
            keys.push(self.meter_key(m));
            args.extend([
                slot_us.to_string(),
                slots.to_string(),
                fixed.to_string(),
                lease.clone().unwrap_or_default(),
            ]);
        }
        keys.extend(levels.iter().map(|l| self.counter_key(l)));
        keys.push(self.key("lexpiry"));
        let (in_flight, used, counters): (String, Vec<String>, Vec<String>) =
            self.store.eval(&READ, keys, args).await?;
        Ok(Read {
            in_flight: in_flight.parse().unwrap_or(0),
            used: used.iter().step_by(2).map(|u| num(u)).collect(),
            leased: used.iter().skip(1).step_by(2).map(|u| num(u)).collect(),
            counters: counters
                .chunks(COUNTERS.len())
                .map(|c| {
                    let mut out = [0.0; 8];
                    for (o, v) in out.iter_mut().zip(c) {
                        *o = num(v);
                    }
                    out
                })
                .collect(),
        })
    }
}

#[cfg(test)]
#[path = "shared/tests.rs"]
mod tests;
