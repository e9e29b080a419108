//! The exact cache in two tiers: L1 in this process ([`ExactCache`], moka) and, once shared,
//! L2 in Redis. This file owns every decision of the sharing: the Redis key (namespace, clear
//! counter), the label an entry is sealed with (namespace and the store's tenant), when a
//! value read from Redis may answer and fill L1, the L2 counters, and a `clear()` that reaches
//! every process. The Redis round trip itself is a [`Fetch`] or a [`Write`], run blocking or
//! awaited by the caller; what happens around it is the same code either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::namespace::Namespace;
use super::shared::{self, Label, Unreadable};
use super::{cache_key, CacheError, CacheKey, CacheStats, ExactCache, ExactCacheConfig};
use crate::store::{Epoch, Store, StoreError};

/// Which tier answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// This process's L1.
    Local,
    /// Redis (the value is in L1 now too).
    Shared,
}

/// A value a lookup found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: Arc<[u8]>,
    pub tier: Tier,
}

/// The counters of a [`TieredCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TieredStats {
    pub l1: CacheStats,
    /// None while the cache is not shared.
    pub l2: Option<L2Stats>,
}

/// L1 misses answered from Redis (`hits`), not found there or labelled for another
/// namespace or tenant (`misses`), found unreadable there (`errors`): they add up to the L1
/// misses of a shared cache. Redis unreachable counts as a miss here (and in the store's
/// own counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L2Stats {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
}

/// The cache was shared already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this cache already has a store")]
pub struct AlreadyShared;

/// The Redis tier: values sealed with their label under keys that carry the namespace's clear
/// counter, so a `clear()` anywhere makes older entries unreachable everywhere at once.
#[derive(Debug)]
struct L2 {
    store: Store,
    /// The clear counter of the current namespace, watched in Redis.
    clears: Mutex<Arc<Epoch>>,
    /// The counter's value L1 holds entries for: when the watched value moves on (another
    /// process cleared this namespace), L1 is emptied too.
    seen: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

impl L2 {
    fn new(store: Store, namespace: &str) -> Self {
        let clears = Self::watch(&store, namespace);
        Self {
            seen: AtomicU64::new(clears.current()),
            clears: Mutex::new(clears),
            store,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Start watching the clear counter of `namespace` (waits for its first read).
    fn watch(store: &Store, namespace: &str) -> Arc<Epoch> {
        let key = format!(
            "exact-clears:{:032x}",
            cache_key(namespace, "\u{0}langscale:clears", "")
        );
        Arc::new(Epoch::start(store.clone(), store.key(&key, "")))
    }

    fn clears(&self) -> Arc<Epoch> {
        Arc::clone(&self.clears.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Key entries by `clears` from now on (L1 holds none of them yet).
    fn install(&self, clears: Arc<Epoch>) {
        self.seen.store(clears.current(), Ordering::SeqCst);
        *self.clears.lock().unwrap_or_else(PoisonError::into_inner) = clears;
    }

    fn label(&self, namespace: &str) -> Label {
        Label::new(namespace, self.store.config().tenant.as_deref())
    }

    /// The Redis key of the entry under `key` (the L1 key) in clear period `epoch`.
    fn key(&self, epoch: u64, key: CacheKey) -> String {
        self.store.key(&format!("exact:{epoch}:{key:032x}"), "")
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Inner {
    l1: ExactCache,
    namespace: Namespace,
    l2: OnceLock<L2>,
}

/// An exact cache of opaque values (the caller's codec bytes) in L1 and, once [`share`]d,
/// in Redis. `Send + Sync`; clones share one cache.
///
/// [`share`]: TieredCache::share
#[derive(Debug, Clone)]
pub struct TieredCache {
    inner: Arc<Inner>,
}

/// What a [`Fetch`] found: the value (in L1 now too), nothing usable (a miss), or bytes that
/// are not a langscale entry (counted in `errors`).
pub type Fetched = Result<Option<Arc<[u8]>>, Unreadable>;

/// The read from Redis a lookup that missed L1 makes: run it with [`Fetch::blocking`] or
/// await [`Fetch::run`]; either way the answer is judged by the same code.
#[derive(Debug)]
pub struct Fetch {
    inner: Arc<Inner>,
    store: Store,
    key: String,
    /// The label the value must carry: this cache's when the lookup began.
    label: Label,
    /// Where it goes in L1.
    l1_key: CacheKey,
    /// The clear period it was looked up in: a clear meanwhile makes it a miss.
    epoch: u64,
}

/// The Redis reads of several prompts that missed L1, sent in one round trip: run it with
/// [`FetchMany::blocking`] or await [`FetchMany::run`]; each answer is judged as a [`Fetch`]'s.
#[derive(Debug)]
pub struct FetchMany {
    inner: Arc<Inner>,
    store: Store,
    /// (Redis key, L1 key) of each prompt, in the caller's order.
    keys: Vec<(String, CacheKey)>,
    label: Label,
    epoch: u64,
}

/// The write to Redis an update (or a batch of them) makes, in one round trip (L1 is filled
/// already).
#[derive(Debug)]
pub struct Write {
    store: Store,
    /// (Redis key, sealed value) of each entry.
    entries: Vec<(String, Vec<u8>)>,
    ttl: Option<Duration>,
}

impl TieredCache {
    /// An unshared cache (L1 only) with these bounds, keyed under `namespace`.
    pub fn new(config: ExactCacheConfig, namespace: &str) -> Result<Self, CacheError> {
        Ok(Self {
            inner: Arc::new(Inner {
                l1: ExactCache::new(config)?,
                namespace: Namespace::new(namespace),
                l2: OnceLock::new(),
            }),
        })
    }

    /// Share entries through `store` from now on (once per cache). Waits for the first read
    /// of the namespace's clear counter (at most the store's timeout).
    pub fn share(&self, store: Store) -> Result<(), AlreadyShared> {
        if self.inner.l2.get().is_some() {
            return Err(AlreadyShared);
        }
        let namespace = self.namespace();
        self.inner
            .l2
            .set(L2::new(store, &namespace))
            .map_err(|_| AlreadyShared)
    }

    pub fn is_shared(&self) -> bool {
        self.inner.l2.get().is_some()
    }

    pub fn config(&self) -> ExactCacheConfig {
        self.inner.l1.config()
    }

    pub fn namespace(&self) -> String {
        self.inner.namespace.read().clone()
    }

    /// The L1 key of a prompt under the current namespace.
    pub fn key_of(&self, prompt: &str, llm_string: &str) -> CacheKey {
        cache_key(&self.inner.namespace.read(), llm_string, prompt)
    }

    /// Empty L1 when another process cleared this namespace since L1 was filled.
    fn sync(&self) {
        if let Some(l2) = self.inner.l2.get() {
            let now = l2.clears().current();
            if l2.seen.swap(now, Ordering::SeqCst) != now {
                self.inner.l1.clear();
            }
        }
    }

    /// L1 only: the stored value, counted as an L1 hit or miss.
    pub fn lookup_local(&self, prompt: &str, llm_string: &str) -> Option<Arc<[u8]>> {
        self.sync();
        self.inner.l1.get(self.key_of(prompt, llm_string))
    }

    /// L1, then (on a miss, when shared) Redis through `round_trip`, which runs the fetch
    /// (blocking, or with the caller's lock released around it). Err: Redis held bytes that
    /// are not a langscale entry (a miss, counted in `errors`; the reason is for a log line).
    pub fn lookup_with(
        &self,
        prompt: &str,
        llm_string: &str,
        round_trip: impl FnOnce(Fetch) -> Fetched,
    ) -> Result<Option<Found>, Unreadable> {
        self.sync();
        let fetch = {
            let namespace = self.inner.namespace.read();
            let key = cache_key(&namespace, llm_string, prompt);
            if let Some(value) = self.inner.l1.get(key) {
                return Ok(Some(Found {
                    value,
                    tier: Tier::Local,
                }));
            }
            let Some(fetch) = self.fetch_under(&namespace, key) else {
                return Ok(None);
            };
            fetch
        };
        Ok(round_trip(fetch)?.map(|value| Found {
            value,
            tier: Tier::Shared,
        }))
    }

    /// L1, then Redis (blocking, at most about the store's timeout).
    pub fn lookup(&self, prompt: &str, llm_string: &str) -> Result<Option<Found>, Unreadable> {
        self.lookup_with(prompt, llm_string, Fetch::blocking)
    }

    /// The Redis read for a prompt that missed L1 (`lookup_local`); None when not shared.
    pub fn fetch(&self, prompt: &str, llm_string: &str) -> Option<Fetch> {
        let namespace = self.inner.namespace.read();
        let key = cache_key(&namespace, llm_string, prompt);
        self.fetch_under(&namespace, key)
    }

    /// The Redis reads for prompts that missed L1 (`lookup_local`), in one round trip; None
    /// when not shared.
    pub fn fetch_many<'a>(
        &self,
        prompts: impl IntoIterator<Item = &'a str>,
        llm_string: &str,
    ) -> Option<FetchMany> {
        let l2 = self.inner.l2.get()?;
        let namespace = self.inner.namespace.read();
        let epoch = l2.clears().current();
        let keys = prompts
            .into_iter()
            .map(|prompt| {
                let l1_key = cache_key(&namespace, llm_string, prompt);
                (l2.key(epoch, l1_key), l1_key)
            })
            .collect();
        Some(FetchMany {
            inner: Arc::clone(&self.inner),
            store: l2.store.clone(),
            keys,
            label: l2.label(&namespace),
            epoch,
        })
    }

    fn fetch_under(&self, namespace: &str, l1_key: CacheKey) -> Option<Fetch> {
        let l2 = self.inner.l2.get()?;
        let epoch = l2.clears().current();
        Some(Fetch {
            inner: Arc::clone(&self.inner),
            store: l2.store.clone(),
            key: l2.key(epoch, l1_key),
            label: l2.label(namespace),
            l1_key,
            epoch,
        })
    }

    /// Store `value` in L1; the Redis write to make when shared (sealed with this cache's
    /// label, expiring with the cache's TTL).
    pub fn insert(&self, prompt: &str, llm_string: &str, value: Arc<[u8]>) -> Option<Write> {
        self.insert_many([(prompt, value)], llm_string)
    }

    /// `insert` of each (prompt, value); the one Redis write that stores them all when shared.
    pub fn insert_many<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, Arc<[u8]>)>,
        llm_string: &str,
    ) -> Option<Write> {
        self.sync();
        let namespace = self.inner.namespace.read();
        let l2 = self.inner.l2.get();
        let sealing = l2.map(|l2| (l2, l2.clears().current(), l2.label(&namespace)));
        let mut sealed = Vec::new();
        for (prompt, value) in entries {
            let key = cache_key(&namespace, llm_string, prompt);
            if let Some((l2, epoch, label)) = &sealing {
                sealed.push((l2.key(*epoch, key), shared::seal(label, &value)));
            }
            self.inner.l1.insert(key, value);
        }
        sealing.map(|(l2, _, _)| Write {
            store: l2.store.clone(),
            entries: sealed,
            ttl: self.config().ttl,
        })
    }

    /// `insert`, then the Redis write (blocking); false when Redis could not take it.
    pub fn update(&self, prompt: &str, llm_string: &str, value: Arc<[u8]>) -> bool {
        self.insert(prompt, llm_string, value)
            .is_none_or(Write::blocking)
    }

    /// A value `lookup` found that the caller could not read: it leaves L1, and the lookup
    /// counts as a miss (L1) or an `errors` (found in Redis) instead of a hit.
    pub fn unreadable(&self, prompt: &str, llm_string: &str, tier: Tier) {
        let key = self.key_of(prompt, llm_string);
        match (tier, self.inner.l2.get()) {
            (Tier::Shared, Some(l2)) => {
                self.inner.l1.remove(key);
                let _ = l2
                    .hits
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                L2::count(&l2.errors);
            }
            _ => self.inner.l1.unreadable(key),
        }
    }

    /// Forget the entry for this prompt in L1.
    pub fn remove(&self, prompt: &str, llm_string: &str) {
        self.inner.l1.remove(self.key_of(prompt, llm_string));
    }

    /// Empty L1; when shared, every process's entries under this namespace go too (its clear
    /// counter moves on in Redis; others see it within a poll). Blocks for the bump.
    pub fn clear(&self) {
        self.inner.l1.clear();
        if let Some(l2) = self.inner.l2.get() {
            if let Ok(now) = l2.clears().bump() {
                l2.seen.store(now, Ordering::SeqCst);
            }
        }
    }

    /// Key entries under `name` from now on; a real change drops everything under the old
    /// name (here) and, when shared, starts watching the new name's clear counter (read
    /// before the swap, blocking, so lookups never wait on Redis for it).
    pub fn set_namespace(&self, name: &str) {
        let clears = match self.inner.l2.get() {
            Some(l2) if *self.inner.namespace.read() != name => Some(L2::watch(&l2.store, name)),
            _ => None,
        };
        self.inner.namespace.replace(name, || {
            self.inner.l1.clear();
            if let (Some(l2), Some(clears)) = (self.inner.l2.get(), clears) {
                l2.install(clears);
            }
        });
    }

    /// The Redis key of this prompt's entry now; None when not shared.
    pub fn l2_key(&self, prompt: &str, llm_string: &str) -> Option<String> {
        let l2 = self.inner.l2.get()?;
        Some(l2.key(l2.clears().current(), self.key_of(prompt, llm_string)))
    }

    /// (key, value) of this prompt's entry as `insert` writes it to Redis; None when not
    /// shared.
    pub fn l2_entry(
        &self,
        prompt: &str,
        llm_string: &str,
        value: &[u8],
    ) -> Option<(String, Vec<u8>)> {
        let l2 = self.inner.l2.get()?;
        let namespace = self.inner.namespace.read();
        let key = l2.key(
            l2.clears().current(),
            cache_key(&namespace, llm_string, prompt),
        );
        Some((key, shared::seal(&l2.label(&namespace), value)))
    }

    pub fn stats(&self) -> TieredStats {
        TieredStats {
            l1: self.inner.l1.stats(),
            l2: self.inner.l2.get().map(|l2| L2Stats {
                hits: l2.hits.load(Ordering::Relaxed),
                misses: l2.misses.load(Ordering::Relaxed),
                errors: l2.errors.load(Ordering::Relaxed),
            }),
        }
    }

    /// The store this cache shares through, if any.
    pub fn store(&self) -> Option<&Store> {
        self.inner.l2.get().map(|l2| &l2.store)
    }
}

impl Fetch {
    /// Run the read from a plain thread (waits at most about the store's timeout).
    pub fn blocking(self) -> Fetched {
        let (store, key) = (self.store.clone(), self.key.clone());
        let reply = self.store.block_on(async move { store.get(key).await });
        self.answer(reply)
    }

    /// Run the read on the caller's runtime (`Send + 'static`: hand it to any executor).
    pub async fn run(self) -> Fetched {
        let reply = self.store.get(self.key.clone()).await;
        self.answer(reply)
    }

    fn answer(self, reply: Result<Option<Vec<u8>>, StoreError>) -> Fetched {
        judge(&self.inner, &self.label, self.epoch, self.l1_key, reply)
    }
}

impl FetchMany {
    /// Run the reads from a plain thread (waits at most about the store's timeout).
    pub fn blocking(self) -> Vec<Fetched> {
        let (store, keys) = (self.store.clone(), self.redis_keys());
        let count = keys.len();
        let replies = self
            .store
            .block_on(async move { Ok(store.get_many(keys).await) })
            .unwrap_or_else(|err| vec![Err(err); count]);
        self.answer(replies)
    }

    /// Run the reads on the caller's runtime (`Send + 'static`: hand it to any executor).
    pub async fn run(self) -> Vec<Fetched> {
        let replies = self.store.get_many(self.redis_keys()).await;
        self.answer(replies)
    }

    fn redis_keys(&self) -> Vec<String> {
        self.keys.iter().map(|(key, _)| key.clone()).collect()
    }

    /// One answer per prompt, in order (a reply missing from Redis's answer is a miss).
    fn answer(self, replies: Vec<Result<Option<Vec<u8>>, StoreError>>) -> Vec<Fetched> {
        let mut replies = replies.into_iter();
        self.keys
            .iter()
            .map(|&(_, l1_key)| {
                let reply = replies.next().unwrap_or(Err(StoreError::Down));
                judge(&self.inner, &self.label, self.epoch, l1_key, reply)
            })
            .collect()
    }
}

/// The one judgement of what Redis sent for a lookup labelled `wanted` in clear period
/// `epoch`: a value sealed with that label, read in the same clear period and namespace,
/// answers and fills L1; nothing, another label or an unreachable Redis is a miss; bytes that
/// are not a sealed entry are an error.
fn judge(
    inner: &Inner,
    wanted: &Label,
    epoch: u64,
    l1_key: CacheKey,
    reply: Result<Option<Vec<u8>>, StoreError>,
) -> Fetched {
    let Some(l2) = inner.l2.get() else {
        return Ok(None);
    };
    let Ok(Some(sealed)) = reply else {
        L2::count(&l2.misses);
        return Ok(None);
    };
    let (label, payload) = shared::open(&sealed).inspect_err(|_| L2::count(&l2.errors))?;
    // Under the namespace lock: a rename cannot come between this check and the fill.
    let namespace = inner.namespace.read();
    let current = *namespace == wanted.namespace && l2.clears().current() == epoch;
    if !current || !label.is_for(wanted) {
        L2::count(&l2.misses);
        return Ok(None);
    }
    let value: Arc<[u8]> = payload.into();
    inner.l1.insert(l1_key, Arc::clone(&value));
    L2::count(&l2.hits);
    Ok(Some(value))
}

impl Write {
    /// Send it from a plain thread; false when Redis could not take it.
    pub fn blocking(self) -> bool {
        let store = self.store.clone();
        store.block_on(self.send()).is_ok()
    }

    /// Send it on the caller's runtime; false when Redis could not take it.
    pub async fn run(self) -> bool {
        self.send().await.is_ok()
    }

    async fn send(self) -> Result<(), StoreError> {
        let Self {
            store,
            entries,
            ttl,
        } = self;
        match <[_; 1]>::try_from(entries) {
            Ok([(key, sealed)]) => store.set(key, sealed, ttl).await,
            Err(entries) if entries.is_empty() => Ok(()),
            Err(entries) => {
                let entries = entries.into_iter().map(|(k, v)| (k, v, ttl)).collect();
                store.set_many(entries).await
            }
        }
    }
}

#[cfg(test)]
mod tests;
