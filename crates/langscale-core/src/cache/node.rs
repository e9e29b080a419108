//! LangGraph's node cache in two tiers: L1 in this process (moka, least recently used out
//! first) and, once shared, L2 in Redis. This file owns every decision of it: keys (a
//! namespace of parts and a key), the per-namespace generations that `clear` moves on in
//! Redis so a clear reaches every process, per-entry expiry (in L1 and in Redis), the wire
//! format, and the refusal of anything but data: values are opaque `(kind, bytes)` pairs
//! from the caller's serializer, and an entry whose kind is not data (`pickle`) is never
//! stored, never filled into L1 and never handed back.
//!
//! Every operation is one `async fn`; the blocking form runs the same future on the store's
//! runtime (or at once when not shared: it then never waits), so sync and async decide alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::shared::{expired, now_ms, put_str, take_str, Unreadable};
use crate::store::{Store, StoreError};

/// The serializer kinds that are data; anything else (`pickle`) is refused.
pub const DATA_KINDS: [&str; 5] = ["null", "bytes", "bytearray", "json", "msgpack"];

/// How long a generation read from Redis is used before it is read again: a clear in another
/// process is seen within this (in the clearing process at once).
pub const GENERATION_POLL: Duration = Duration::from_millis(100);

const WIRE: &[u8; 4] = b"LSG2";

/// A node's cache key as LangGraph gives it: a namespace of parts, and a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    pub namespace: Vec<String>,
    pub key: String,
}

/// A stored value: the serializer's kind and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeValue {
    pub kind: String,
    pub data: Arc<[u8]>,
}

/// The caller asked to store a kind that is not data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GraphCache stores data only; the serializer produced {0:?}")]
pub struct NotData(pub String);

/// The counters of a [`NodeCache`]: `get` keys found (`hits`, less those the caller could
/// not load) or not (`misses`), misses here found in Redis (`l2_hits`), entries not loaded
/// (`refused`: not data, unreadable, or the caller's `refuse`), entries evicted by the bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub hits: u64,
    pub misses: u64,
    pub l2_hits: u64,
    pub refused: u64,
    pub evictions: u64,
    pub entries: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    namespace: u128,
    value: NodeValue,
    /// Wall-clock milliseconds; 0: never.
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    l2_hits: AtomicU64,
    refused: AtomicU64,
    evictions: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Inner {
    l1: Cache<u128, Arc<Entry>>,
    counters: Arc<Counters>,
    store: OnceLock<Store>,
    /// Redis generation key -> (value, when read).
    generations: Mutex<HashMap<String, (u64, Instant)>>,
}

/// LangGraph's node cache. `Send + Sync`; clones share one cache.
#[derive(Clone)]
pub struct NodeCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Is this serializer kind data?
pub fn is_data(kind: &str) -> bool {
    DATA_KINDS.contains(&kind)
}

/// Err naming the first kind among `entries` that is not data.
pub fn data_only(entries: &[(NodeKey, NodeValue, Option<Duration>)]) -> Result<(), NotData> {
    match entries.iter().find(|(_, v, _)| !is_data(&v.kind)) {
        Some((_, value, _)) => Err(NotData(value.kind.clone())),
        None => Ok(()),
    }
}

fn namespace_id(namespace: &[String]) -> u128 {
    let mut bytes = Vec::new();
    for part in namespace {
        put_str(&mut bytes, part);
    }
    xxh3_128(&bytes)
}

/// A value as Redis holds it: `LSG2`, the expiry (ms, big-endian; 0 never), the kind, the data.
pub fn pack(value: &NodeValue, expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.kind.len() + value.data.len());
    out.extend_from_slice(WIRE);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    put_str(&mut out, &value.kind);
    out.extend_from_slice(&value.data);
    out
}

/// The value and expiry `pack` wrote.
pub fn unpack(bytes: &[u8]) -> Result<(NodeValue, u64), Unreadable> {
    let rest = bytes
        .strip_prefix(WIRE)
        .ok_or_else(|| Unreadable("not a langscale graph cache entry".into()))?;
    let (expiry, mut rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| Unreadable("expiry: truncated".into()))?;
    let kind = take_str(&mut rest, "kind")?.to_owned();
    Ok((
        NodeValue {
            kind,
            data: rest.into(),
        },
        u64::from_be_bytes(*expiry),
    ))
}

/// Where one key lives now: its L1 key and, when shared, its Redis key.
struct Place {
    namespace: u128,
    l1: u128,
    redis: Option<String>,
}

impl NodeCache {
    /// A cache of at most `max_entries` (at least 1) entries in process.
    pub fn new(max_entries: u64) -> Self {
        let counters = Arc::new(Counters::default());
        let listener = Arc::clone(&counters);
        let l1 = Cache::builder()
            .max_capacity(max_entries.max(1))
            .eviction_policy(EvictionPolicy::lru())
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    count(&listener.evictions);
                }
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                l1,
                counters,
                store: OnceLock::new(),
                generations: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Share entries through `store` from now on; false when shared already.
    pub fn share(&self, store: Store) -> bool {
        self.inner.store.set(store).is_ok()
    }

    pub fn store(&self) -> Option<&Store> {
        self.inner.store.get()
    }

    fn generation_key(store: &Store, namespace: Option<u128>) -> String {
        let name = namespace.map_or_else(|| "*".to_owned(), |id| format!("{id:032x}"));
        store.key("graph-gen", &name)
    }

    /// The generation of each namespace (the `clear()`-all one joined with its own), read
    /// from Redis when older than [`GENERATION_POLL`]; all 0 when not shared.
    async fn generations(&self, namespaces: &[u128]) -> HashMap<u128, (u64, u64)> {
        let Some(store) = self.inner.store.get() else {
            return namespaces.iter().map(|&id| (id, (0, 0))).collect();
        };
        let all = Self::generation_key(store, None);
        let keys: Vec<String> = std::iter::once(all.clone())
            .chain(
                namespaces
                    .iter()
                    .map(|&id| Self::generation_key(store, Some(id))),
            )
            .collect();
        let now = Instant::now();
        let mut known: HashMap<String, u64> = {
            let seen = self
                .inner
                .generations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            keys.iter()
                .filter_map(|key| {
                    let (value, at) = seen.get(key)?;
                    (now.duration_since(*at) < GENERATION_POLL).then(|| (key.clone(), *value))
                })
                .collect()
        };
        let stale: Vec<String> = keys
            .iter()
            .filter(|key| !known.contains_key(*key))
            .cloned()
            .collect();
        if !stale.is_empty() {
            let replies = store.get_many(stale.clone()).await;
            let mut seen = self
                .inner
                .generations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (key, reply) in stale.into_iter().zip(replies) {
                let value = match reply {
                    Ok(Some(bytes)) => generation_of(&bytes),
                    Ok(None) => 0,
                    // Redis unreachable: the last value seen (entries stay keyed alike).
                    Err(_) => seen.get(&key).map_or(0, |(value, _)| *value),
                };
                seen.insert(key.clone(), (value, now));
                known.insert(key, value);
            }
        }
        let everything = known.get(&all).copied().unwrap_or(0);
        namespaces
            .iter()
            .map(|&id| {
                let own = known
                    .get(&Self::generation_key(store, Some(id)))
                    .copied()
                    .unwrap_or(0);
                (id, (everything, own))
            })
            .collect()
    }

    async fn places(&self, keys: &[NodeKey]) -> Vec<Place> {
        let ids: Vec<u128> = keys.iter().map(|k| namespace_id(&k.namespace)).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let generations = self.generations(&distinct).await;
        keys.iter()
            .zip(ids)
            .map(|(key, namespace)| {
                let (everything, own) = generations.get(&namespace).copied().unwrap_or((0, 0));
                let key_id = xxh3_128(key.key.as_bytes());
                let mut framed = Vec::with_capacity(48);
                framed.extend_from_slice(&everything.to_be_bytes());
                framed.extend_from_slice(&own.to_be_bytes());
                framed.extend_from_slice(&namespace.to_be_bytes());
                framed.extend_from_slice(&key_id.to_be_bytes());
                let redis = self.inner.store.get().map(|store| {
                    store.key(
                        "graph",
                        &format!("{everything}.{own}:{namespace:032x}:{key_id:032x}"),
                    )
                });
                Place {
                    namespace,
                    l1: xxh3_128(&framed),
                    redis,
                }
            })
            .collect()
    }

    /// The L1 entry under `l1` unless it expired (then it goes).
    fn local(&self, l1: u128, now: u64) -> Option<Arc<Entry>> {
        let entry = self.inner.l1.get(&l1)?;
        if expired(entry.expires_ms, now) {
            self.inner.l1.invalidate(&l1);
            return None;
        }
        Some(entry)
    }

    /// The value of each key present and not expired, in order: L1, then Redis for the
    /// misses (one round trip; a value found there fills L1 unless it is not data).
    pub async fn get(&self, keys: &[NodeKey]) -> Vec<Option<NodeValue>> {
        let places = self.places(keys).await;
        let now = now_ms();
        let mut found: Vec<Option<NodeValue>> = places
            .iter()
            .map(|place| self.local(place.l1, now).map(|e| e.value.clone()))
            .collect();
        let missing: Vec<usize> = (0..places.len())
            .filter(|&i| found[i].is_none() && places[i].redis.is_some())
            .collect();
        let mut refused = vec![false; places.len()];
        if let (Some(store), false) = (self.inner.store.get(), missing.is_empty()) {
            let redis_keys = missing
                .iter()
                .filter_map(|&i| places[i].redis.clone())
                .collect();
            let replies = store.get_many(redis_keys).await;
            for (&i, reply) in missing.iter().zip(replies) {
                match self.judge(&places[i], reply, now) {
                    Ok(value) => found[i] = value,
                    Err(()) => refused[i] = true,
                }
            }
        }
        for (value, refused) in found.iter().zip(refused) {
            match (value, refused) {
                (Some(_), _) => count(&self.inner.counters.hits),
                (None, false) => count(&self.inner.counters.misses),
                (None, true) => {}
            }
        }
        found
    }

    /// The one judgement of what Redis sent: a readable, unexpired data entry answers and
    /// fills L1; nothing or an unreachable Redis is a miss; anything else is refused (Err).
    fn judge(
        &self,
        place: &Place,
        reply: Result<Option<Vec<u8>>, StoreError>,
        now: u64,
    ) -> Result<Option<NodeValue>, ()> {
        let Ok(Some(bytes)) = reply else {
            return Ok(None);
        };
        let refuse = || count(&self.inner.counters.refused);
        let Ok((value, expires_ms)) = unpack(&bytes) else {
            refuse();
            return Err(());
        };
        if expired(expires_ms, now) {
            return Ok(None);
        }
        if !is_data(&value.kind) {
            refuse();
            return Err(());
        }
        let entry = Entry {
            namespace: place.namespace,
            value: value.clone(),
            expires_ms,
        };
        self.inner.l1.insert(place.l1, Arc::new(entry));
        self.inner.l1.run_pending_tasks();
        count(&self.inner.counters.l2_hits);
        Ok(Some(value))
    }

    /// Store each value for its TTL (None: until evicted or cleared), here and, when shared,
    /// in Redis (one round trip; false when Redis could not take it). Nothing is stored when
    /// any value is not data.
    pub async fn set(
        &self,
        entries: Vec<(NodeKey, NodeValue, Option<Duration>)>,
    ) -> Result<bool, NotData> {
        data_only(&entries)?;
        let keys: Vec<NodeKey> = entries.iter().map(|(key, _, _)| key.clone()).collect();
        let places = self.places(&keys).await;
        let now = now_ms();
        let mut writes = Vec::new();
        for (place, (_, value, ttl)) in places.into_iter().zip(entries) {
            let expires_ms = ttl.map_or(0, |ttl| {
                now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            });
            if let Some(redis) = place.redis {
                writes.push((redis, pack(&value, expires_ms), ttl));
            }
            let entry = Entry {
                namespace: place.namespace,
                value,
                expires_ms,
            };
            self.inner.l1.insert(place.l1, Arc::new(entry));
        }
        self.inner.l1.run_pending_tasks();
        Ok(match (self.inner.store.get(), writes.is_empty()) {
            (Some(store), false) => store.set_many(writes).await.is_ok(),
            _ => true,
        })
    }

    /// Drop the entries of `namespaces` (every entry when None), here at once and, when
    /// shared, in every process (their generations move on in Redis; others see it within
    /// [`GENERATION_POLL`]). False when Redis could not take it.
    pub async fn clear(&self, namespaces: Option<&[Vec<String>]>) -> bool {
        let ids: Option<Vec<u128>> =
            namespaces.map(|all| all.iter().map(|ns| namespace_id(ns)).collect());
        match &ids {
            None => self.inner.l1.invalidate_all(),
            Some(ids) => {
                let ids = ids.clone();
                // Err only without support_invalidation_closures, which `new` turns on.
                let _ = self
                    .inner
                    .l1
                    .invalidate_entries_if(move |_, entry| ids.contains(&entry.namespace));
            }
        }
        self.inner.l1.run_pending_tasks();
        let Some(store) = self.inner.store.get() else {
            return true;
        };
        let keys: Vec<String> = match ids {
            None => vec![Self::generation_key(store, None)],
            Some(ids) => ids
                .into_iter()
                .map(|id| Self::generation_key(store, Some(id)))
                .collect(),
        };
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("INCR").arg(key);
        }
        let Ok(values) = store.pipeline::<Vec<u64>>(pipe).await else {
            return false;
        };
        let now = Instant::now();
        let mut seen = self
            .inner
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (key, value) in keys.into_iter().zip(values) {
            seen.insert(key, (value, now));
        }
        true
    }

    /// A value `get` returned that the caller could not load: it leaves L1 and counts as
    /// refused instead of a hit.
    pub async fn refuse(&self, key: &NodeKey) {
        let places = self.places(std::slice::from_ref(key)).await;
        for place in places {
            self.inner.l1.invalidate(&place.l1);
        }
        let counters = &self.inner.counters;
        let _ = counters
            .hits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        count(&counters.refused);
    }

    /// The Redis key `key`'s entry has now; None when not shared.
    pub async fn l2_key(&self, key: &NodeKey) -> Option<String> {
        self.places(std::slice::from_ref(key))
            .await
            .pop()
            .and_then(|place| place.redis)
    }

    /// Run one of this cache's operations from a plain thread. It is polled here first (with
    /// the store's runtime entered): one answered from L1 with fresh generations is done then,
    /// with no hand-off to another thread; one that waits on Redis goes on on the store's
    /// runtime (at most about three store timeouts: None past that). Not shared, it never
    /// waits.
    pub fn blocking<T: Send + 'static>(
        &self,
        operation: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let mut operation = Box::pin(operation);
        let Some(store) = self.inner.store.get() else {
            return operation.now_or_never();
        };
        let first = {
            let _runtime = crate::store::runtime().enter();
            (&mut operation).now_or_never()
        };
        match first {
            Some(value) => Some(value),
            None => store.block_on(async move { Ok(operation.await) }).ok(),
        }
    }

    pub fn stats(&self) -> NodeStats {
        self.inner.l1.run_pending_tasks();
        let c = &self.inner.counters;
        NodeStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            entries: self.inner.l1.entry_count(),
        }
    }
}

/// A generation as Redis holds it: the INCR counter, or (bytes another writer left) their
/// hash, so any change still moves the generation.
fn generation_of(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| xxh3_64(bytes))
}

#[cfg(test)]
mod tests;
