//! The exact cache: serialized results under a [`CacheKey`], in a moka cache (TinyLFU
//! admission, bounded by entry count and optionally by bytes, optional time to live), with
//! hit, miss, eviction, entry and byte counters kept exact by moka's eviction listener.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::key::CacheKey;

/// Bytes a key takes.
const KEY_BYTES: u64 = 16;

/// Bytes charged to every entry on top of its value and key: an estimate of the `Arc<[u8]>`
/// header (16) plus moka's per-entry bookkeeping (hash-map slot, entry info, deque nodes,
/// about 48). `bytes` in [`CacheStats`] and the `max_bytes` bound count entries this way.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// The longest time to live moka accepts (its builder panics beyond 1000 years).
const MAX_TTL: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// Bounds and expiry of an [`ExactCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactCacheConfig {
    /// Most entries held.
    pub maxsize: u64,
    /// Most bytes held, counted as value length + 16 (key) + [`ENTRY_OVERHEAD_BYTES`] per
    /// entry.
    pub max_bytes: Option<u64>,
    /// Entries expire this long after they were inserted.
    pub ttl: Option<Duration>,
}

/// Errors of the cache module.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid cache setting: {0}")]
    InvalidConfig(String),
}

/// A snapshot of an [`ExactCache`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls that found a value.
    pub hits: u64,
    /// `get` calls that found nothing.
    pub misses: u64,
    /// Entries removed (or refused admission) to keep the cache within its bounds.
    pub evictions: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held, counted as for `max_bytes`.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// An in-process cache of serialized results. `Send + Sync`; share it through an `Arc`.
///
/// Bounds: with `maxsize` alone every entry weighs 1 and moka's capacity is `maxsize`. With
/// `max_bytes` as well, the capacity is `units = min(maxsize, max_bytes / 80)` (80 being the
/// smallest possible entry, so the count bound cannot bind beyond it) and an entry weighs
/// `max(1, ceil(entry_bytes * units / max_bytes))`. Every entry weighing at least 1 keeps the
/// count within `maxsize`; the weights summing to at most `units` keeps the bytes within
/// `max_bytes`. Rounding weights up means the cache can fill somewhat less than either
/// bound, never more (beyond moka's short overshoot until its pending tasks run).
pub struct ExactCache {
    entries: Cache<CacheKey, Arc<[u8]>>,
    counters: Arc<Counters>,
    config: ExactCacheConfig,
}

impl fmt::Debug for ExactCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExactCache")
            .field("config", &self.config)
            .field("stats", &self.counters)
            .finish_non_exhaustive()
    }
}

impl ExactCache {
    /// A cache with the given bounds; a zero `maxsize`, `max_bytes` or `ttl` is refused.
    pub fn new(config: ExactCacheConfig) -> Result<Self, CacheError> {
        validate(&config)?;
        let counters = Arc::new(Counters::default());
        let (capacity, per_unit) = match config.max_bytes {
            None => (config.maxsize, None),
            Some(max_bytes) => {
                let units = config
                    .maxsize
                    .min(max_bytes / (KEY_BYTES + ENTRY_OVERHEAD_BYTES))
                    .max(1);
                (units, Some((units, max_bytes)))
            }
        };
        let listener_counters = Arc::clone(&counters);
        let mut builder = Cache::builder()
            .max_capacity(capacity)
            .weigher(move |_key: &CacheKey, value: &Arc<[u8]>| weight(value, per_unit))
            .eviction_listener(move |_key, value: Arc<[u8]>, cause| {
                // Every removal, whatever its cause, gives back what `insert` counted.
                let c = &listener_counters;
                c.bytes.fetch_sub(entry_bytes(&value), Ordering::Relaxed);
                c.entries.fetch_sub(1, Ordering::Relaxed);
                if cause == RemovalCause::Size {
                    c.evictions.fetch_add(1, Ordering::Relaxed);
                }
            });
        if let Some(ttl) = config.ttl {
            builder = builder.time_to_live(ttl);
        }
        Ok(Self {
            entries: builder.build(),
            counters,
            config,
        })
    }

    /// The value under `key`, counting a hit or a miss.
    pub fn get(&self, key: CacheKey) -> Option<Arc<[u8]>> {
        let value = self.entries.get(&key);
        let counter = if value.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        value
    }

    /// Stores `value` under `key`, replacing any value there.
    pub fn insert(&self, key: CacheKey, value: Arc<[u8]>) {
        // Counted before moka sees the value, so the listener's subtraction for this value
        // always comes after it and the counters never go below zero.
        self.counters
            .bytes
            .fetch_add(entry_bytes(&value), Ordering::Relaxed);
        self.counters.entries.fetch_add(1, Ordering::Relaxed);
        self.entries.insert(key, value);
    }

    /// Removes the value under `key`, if any.
    pub fn remove(&self, key: CacheKey) {
        self.entries.invalidate(&key);
    }

    /// A `get` hit whose value the caller could not read: the entry goes and the lookup is
    /// counted as a miss, so hits + misses stays the number of lookups answered as such.
    pub fn unreadable(&self, key: CacheKey) {
        self.entries.invalidate(&key);
        let c = &self.counters;
        let _ = c
            .hits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        c.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes every entry; `stats` shows no entries and no bytes right after (unless other
    /// threads insert meanwhile).
    pub fn clear(&self) {
        self.entries.invalidate_all();
        // moka removes invalidated entries in its maintenance pass, which stops after a time
        // budget; repeat while it makes progress.
        let mut left = u64::MAX;
        loop {
            self.entries.run_pending_tasks();
            let now = self.counters.entries.load(Ordering::Relaxed);
            if now == 0 || now >= left {
                break;
            }
            left = now;
        }
    }

    /// The counters, after running moka's pending maintenance so that expired and evicted
    /// entries are no longer counted.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            entries: c.entries.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }

    /// The settings this cache was built with.
    pub fn config(&self) -> ExactCacheConfig {
        self.config
    }
}

fn validate(config: &ExactCacheConfig) -> Result<(), CacheError> {
    if config.maxsize == 0 {
        return Err(CacheError::InvalidConfig(
            "maxsize must be at least 1, got 0".to_owned(),
        ));
    }
    if config.max_bytes == Some(0) {
        return Err(CacheError::InvalidConfig(
            "max_bytes must be at least 1, got 0".to_owned(),
        ));
    }
    if let Some(ttl) = config.ttl {
        if ttl.is_zero() {
            return Err(CacheError::InvalidConfig(
                "ttl must be longer than zero, got 0s".to_owned(),
            ));
        }
        if ttl > MAX_TTL {
            return Err(CacheError::InvalidConfig(format!(
                "ttl must be at most 1000 years, got {}s",
                ttl.as_secs()
            )));
        }
    }
    Ok(())
}

/// What an entry holding `value` counts for in bytes.
fn entry_bytes(value: &[u8]) -> u64 {
    u64::try_from(value.len())
        .unwrap_or(u64::MAX)
        .saturating_add(KEY_BYTES + ENTRY_OVERHEAD_BYTES)
}

/// moka weight of `value`: 1 without a byte bound, else its share of the byte bound in
/// `units` of `max_bytes / units` bytes each, rounded up.
fn weight(value: &[u8], per_unit: Option<(u64, u64)>) -> u32 {
    let Some((units, max_bytes)) = per_unit else {
        return 1;
    };
    let scaled = u128::from(entry_bytes(value)) * u128::from(units);
    let weight = scaled.div_ceil(u128::from(max_bytes)).max(1);
    u32::try_from(weight).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cache(maxsize: u64, max_bytes: Option<u64>, ttl: Option<Duration>) -> ExactCache {
        ExactCache::new(ExactCacheConfig {
            maxsize,
            max_bytes,
            ttl,
        })
        .unwrap()
    }

    fn value(len: usize) -> Arc<[u8]> {
        vec![7u8; len].into()
    }

    #[test]
    fn counts_hits_and_misses() {
        let c = cache(100, None, None);
        assert!(c.get(1).is_none());
        c.insert(1, value(10));
        assert_eq!(&*c.get(1).unwrap(), &[7u8; 10][..]);
        assert!(c.get(1).is_some());
        assert!(c.get(2).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries, s.evictions), (2, 2, 1, 0));
        assert_eq!(s.bytes, 10 + KEY_BYTES + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn insert_replaces_and_keeps_bytes_exact() {
        let c = cache(100, None, None);
        c.insert(1, value(10));
        c.insert(1, value(500));
        c.insert(1, value(20));
        assert_eq!(c.get(1).unwrap().len(), 20);
        let s = c.stats();
        assert_eq!(s.entries, 1);
        assert_eq!(s.bytes, entry_bytes(&value(20)));
        assert_eq!(s.evictions, 0);
    }

    #[test]
    fn remove_takes_one_entry() {
        let c = cache(100, None, None);
        c.insert(1, value(10));
        c.insert(2, value(30));
        c.remove(1);
        c.remove(3);
        assert!(c.get(1).is_none());
        assert!(c.get(2).is_some());
        let s = c.stats();
        assert_eq!(
            (s.entries, s.bytes, s.evictions),
            (1, entry_bytes(&value(30)), 0)
        );
    }

    #[test]
    fn clear_resets_entries_and_bytes() {
        let c = cache(100_000, None, Some(Duration::from_secs(3600)));
        for k in 0..5_000 {
            c.insert(k, value(64));
        }
        c.get(1);
        c.clear();
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.hits), (0, 0, 1));
        assert!(c.get(1).is_none());
        assert_eq!(c.entries.entry_count(), 0);
        // Usable afterwards.
        c.insert(9, value(1));
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn size_bound_evicts() {
        let c = cache(100, None, None);
        for k in 0..1_000 {
            c.insert(k, value(32));
        }
        let s = c.stats();
        assert!(s.entries <= 100, "{s:?}");
        assert!(s.evictions > 0, "{s:?}");
        assert_eq!(s.entries, c.entries.entry_count());
        assert_eq!(s.bytes, s.entries * entry_bytes(&value(32)));
    }

    #[test]
    fn byte_bound_holds() {
        let c = cache(1_000, Some(10_000), None);
        for k in 0..100 {
            c.insert(k, value(920));
        }
        let s = c.stats();
        assert!(s.bytes <= 10_000, "{s:?}");
        assert!(
            s.entries >= 5,
            "the byte bound should still leave room: {s:?}"
        );
        assert!(s.evictions > 0, "{s:?}");
        assert_eq!(s.entries, c.entries.entry_count());
        // The count bound still holds when values are small.
        let small = cache(10, Some(1_000_000), None);
        for k in 0..100 {
            small.insert(k, value(1));
        }
        assert!(small.stats().entries <= 10);
    }

    #[test]
    fn weights_cover_both_bounds() {
        assert_eq!(weight(&[0; 100], None), 1);
        // 120 bytes in units of 10_000 / 100 = 100 bytes → 2 units.
        assert_eq!(weight(&[0; 40], Some((100, 10_000))), 2);
        assert_eq!(weight(&[0; 0], Some((1, u64::MAX))), 1);
        // A value bigger than the whole byte bound outweighs the capacity.
        assert!(u64::from(weight(&[0; 2_000], Some((10, 1_000)))) > 10);
    }

    #[test]
    fn entries_expire_after_ttl() {
        let c = cache(100, None, Some(Duration::from_millis(100)));
        c.insert(1, value(10));
        assert!(c.get(1).is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert!(c.get(1).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.evictions), (0, 0, 0));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let ok = ExactCacheConfig {
            maxsize: 10,
            max_bytes: None,
            ttl: None,
        };
        let cases = [
            (ExactCacheConfig { maxsize: 0, ..ok }, "maxsize"),
            (
                ExactCacheConfig {
                    max_bytes: Some(0),
                    ..ok
                },
                "max_bytes",
            ),
            (
                ExactCacheConfig {
                    ttl: Some(Duration::ZERO),
                    ..ok
                },
                "ttl",
            ),
            (
                ExactCacheConfig {
                    ttl: Some(Duration::MAX),
                    ..ok
                },
                "ttl",
            ),
        ];
        for (config, name) in cases {
            let err = ExactCache::new(config).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("invalid cache setting: "), "{message}");
            assert!(message.contains(name), "{message}");
        }
        assert!(ExactCache::new(ok).is_ok());
        assert!(ExactCache::new(ExactCacheConfig {
            maxsize: u64::MAX,
            max_bytes: Some(1),
            ttl: Some(MAX_TTL)
        })
        .is_ok());
    }

    #[test]
    fn concurrent_use_loses_no_counts() {
        let c = Arc::new(cache(100_000, None, None));
        let threads: Vec<_> = (0..8u128)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..1_000u128 {
                        let k = t * 1_000_000 + i;
                        c.insert(k, value(8));
                        assert!(c.get(k).is_some());
                        assert!(c.get(k + 500_000).is_none());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (8_000, 8_000, 8_000));
        assert_eq!(s.bytes, 8_000 * entry_bytes(&value(8)));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ExactCache>();
    }

    #[test]
    fn an_unreadable_hit_is_counted_as_a_miss() {
        let c = cache(100, None, None);
        c.insert(7, b"garbage".as_slice().into());
        assert!(c.get(7).is_some());
        c.unreadable(7);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (0, 1, 0));
        assert!(c.get(7).is_none());
    }
}
