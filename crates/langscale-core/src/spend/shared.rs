//! Budgets held in Redis: the building block of cross-process budgets (issue 16). One Lua
//! script per operation (reserve across every meter at once, settle, release), all on the
//! server clock (`TIME` inside the script), so processes with skewed clocks agree.
//!
//! Keys of one ledger share one hash tag (`{<prefix>:spend}`), so a reservation across the
//! global, tenant and user levels is one atomic script on one Cluster slot. Per meter, a hash
//! holds spend per slot plus `held` (reservations in flight). Reservations live in a hash
//! (id -> the meters and amounts they hold) and an expiry sorted set: every reserve first
//! drops reservations past their deadline, so a crashed worker does not hold budget.
//! Settle and release are idempotent by reservation id (a `done` marker kept for a day).
//!
//! Window arithmetic stays in Rust ([`Span`]): the script only gets each meter's slot length
//! and how many slots count. A calendar month is counted as a 30-day slot here (the
//! in-process ledger counts true months).
//!
//! Not yet wired into `Budgets`/`route::Run`, nor the Redis-down policy or leasing.

use super::window::{Span, Window, SLOTS};
use crate::store::{Lua, Store, StoreError};
use std::sync::OnceLock;

const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local holds, expiry, done = KEYS[1], KEYS[2], KEYS[3]
local function unhold(id)
  local v = redis.call('HGET', holds, id)
  if v then
    for key, amt in string.gmatch(v, '([^;]+)|([^;]+);') do
      local h = tonumber(redis.call('HGET', key, 'held') or '0') - tonumber(amt)
      if h < 1e-12 then h = 0 end
      redis.call('HSET', key, 'held', string.format('%.17g', h))
    end
    redis.call('HDEL', holds, id)
  end
  redis.call('ZREM', expiry, id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do unhold(id) end
local id, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  local key = KEYS[3 + i]
  local slot_us, slots = tonumber(ARGV[4*i]), tonumber(ARGV[4*i+1])
  local limit, amount = tonumber(ARGV[4*i+2]), tonumber(ARGV[4*i+3])
  local first = math.floor(now / slot_us) - slots + 1
  local used = tonumber(redis.call('HGET', key, 'held') or '0')
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    if all[j] ~= 'held' then
      if tonumber(all[j]) < first then redis.call('HDEL', key, all[j])
      else used = used + tonumber(all[j+1]) end
    end
  end
  if used + amount > limit + 1e-9 then return {0, i, string.format('%.17g', used)} end
end
local v = ''
for i = 1, n do
  local key, amount = KEYS[3 + i], tonumber(ARGV[4*i+3])
  if amount > 0 then
    redis.call('HINCRBYFLOAT', key, 'held', string.format('%.17g', amount))
    v = v .. key .. '|' .. string.format('%.17g', amount) .. ';'
  end
end
redis.call('HSET', holds, id, v)
redis.call('ZADD', expiry, now + ttl, id)
return {1, 0, '0'}
";

const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local holds, expiry, done = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
if redis.call('SET', done, '1', 'NX', 'PX', 86400000) == false then return 0 end
local v = redis.call('HGET', holds, id)
if v then
  for key, amt in string.gmatch(v, '([^;]+)|([^;]+);') do
    local h = tonumber(redis.call('HGET', key, 'held') or '0') - tonumber(amt)
    if h < 1e-12 then h = 0 end
    redis.call('HSET', key, 'held', string.format('%.17g', h))
  end
  redis.call('HDEL', holds, id)
end
redis.call('ZREM', expiry, id)
local n = tonumber(ARGV[2])
for i = 1, n do
  local slot_us, amount = tonumber(ARGV[1+2*i]), tonumber(ARGV[2+2*i])
  if amount > 0 then
    redis.call('HINCRBYFLOAT', KEYS[3 + i], tostring(math.floor(now / slot_us)),
      string.format('%.17g', amount))
  end
end
return 1
";

fn reserve_script() -> &'static Lua {
    static CELL: OnceLock<Lua> = OnceLock::new();
    CELL.get_or_init(|| Lua::new(RESERVE))
}

fn settle_script() -> &'static Lua {
    static CELL: OnceLock<Lua> = OnceLock::new();
    CELL.get_or_init(|| Lua::new(SETTLE))
}

/// One meter of one level as Redis holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedMeter {
    /// Level and meter key ("t:acme/usd:day-r"); becomes part of the Redis key.
    pub name: String,
    pub span: Span,
    pub limit: f64,
}

impl SharedMeter {
    /// Slot length (µs) and how many slots count: the only window facts the script gets.
    fn slots(&self) -> (u64, u64) {
        let w = self.span.window;
        match (self.span.calendar, w) {
            (true, Window::Month) => (Window::Month.micros(), 1),
            (true, _) => (w.micros(), 1),
            (false, _) => (w.micros() / SLOTS, SLOTS),
        }
    }
}

/// A refusal from Redis: which meter (index into the list given) and what it had used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedRefusal {
    pub meter: usize,
    pub used: f64,
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

    fn key(&self, name: &str) -> String {
        self.store.key("spend", name)
    }

    /// Reserve `amounts[i]` on `meters[i]`, all or none, under reservation `id` (unique per
    /// call: [`crate::store`]'s ids are). Unsettled, it expires after `ttl_us` (server time).
    pub async fn reserve(
        &self,
        id: &str,
        meters: &[SharedMeter],
        amounts: &[f64],
        ttl_us: u64,
    ) -> Result<Result<(), SharedRefusal>, StoreError> {
        let mut keys = vec![self.key("holds"), self.key("expiry"), self.key("done")];
        let mut args = vec![id.to_owned(), ttl_us.to_string(), meters.len().to_string()];
        for (m, a) in meters.iter().zip(amounts) {
            let (slot_us, slots) = m.slots();
            keys.push(self.key(&format!("m:{}", m.name)));
            args.extend([
                slot_us.to_string(),
                slots.to_string(),
                format!("{:.17e}", m.limit),
                format!("{a:.17e}"),
            ]);
        }
        let (ok, index, used): (i64, usize, String) =
            self.store.eval(reserve_script(), keys, args).await?;
        if ok == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(SharedRefusal {
            meter: index.saturating_sub(1),
            used: used.parse().unwrap_or(f64::NAN),
        }))
    }

    /// Book `amounts[i]` (real usage) on `meters[i]` and drop reservation `id`'s hold. A
    /// retried settle (or a settle after a release) counts nothing: returns false.
    pub async fn settle(
        &self,
        id: &str,
        meters: &[SharedMeter],
        amounts: &[f64],
    ) -> Result<bool, StoreError> {
        let mut keys = vec![
            self.key("holds"),
            self.key("expiry"),
            self.key(&format!("done:{id}")),
        ];
        let mut args = vec![id.to_owned(), meters.len().to_string()];
        for (m, a) in meters.iter().zip(amounts) {
            keys.push(self.key(&format!("m:{}", m.name)));
            args.extend([m.slots().0.to_string(), format!("{a:.17e}")]);
        }
        let n: i64 = self.store.eval(settle_script(), keys, args).await?;
        Ok(n == 1)
    }

    /// Give reservation `id` back uncharged: a settle of nothing.
    pub async fn release(&self, id: &str, meters: &[SharedMeter]) -> Result<bool, StoreError> {
        let zeros = vec![0.0; meters.len()];
        self.settle(id, meters, &zeros).await
    }

    /// What `meter` counts now (booked in its window plus held), for reports and tests.
    pub async fn used(&self, meter: &SharedMeter) -> Result<f64, StoreError> {
        let id = format!("probe:{}", crate::store::unique_id());
        // A reservation of nothing against an infinite limit prunes and never refuses; the
        // refusal path reports the total, so ask with an impossible amount instead.
        let probe = SharedMeter {
            limit: -1.0,
            ..meter.clone()
        };
        match self.reserve(&id, &[probe], &[0.0], 1).await? {
            Err(r) => Ok(r.used),
            Ok(()) => Ok(0.0),
        }
    }
}

#[cfg(test)]
#[path = "shared/tests.rs"]
mod tests;
