//! A counter in Redis that many processes watch: one process bumps it (INCR), every watcher
//! sees the new value within one poll. The exact cache keys its L2 entries by the counter of
//! its namespace, so a bump (a `clear()`) makes every entry stored before unreachable at once,
//! in every process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::stream::STREAM_POLL;
use super::{Store, StoreError};

#[derive(Debug)]
struct Inner {
    store: Store,
    key: String,
    value: AtomicU64,
    stop: AtomicBool,
}

impl Inner {
    async fn read(&self) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(&self.key);
        let value: Option<u64> = self.store.query(cmd).await?;
        Ok(self.raise_to(value.unwrap_or(0)))
    }

    /// Counters only go up: a late reply never takes a watcher back.
    fn raise_to(&self, value: u64) -> u64 {
        self.value.fetch_max(value, Ordering::SeqCst).max(value)
    }
}

/// Watches one counter; dropping it stops the watch.
#[derive(Debug)]
pub struct Epoch {
    inner: Arc<Inner>,
}

impl Epoch {
    /// Start watching `key`; the first read is waited for (at most the store's timeout), so a
    /// new watcher starts with the current value when Redis answers.
    pub fn start(store: Store, key: String) -> Self {
        let inner = Arc::new(Inner {
            store,
            key,
            value: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let first = Arc::clone(&inner);
        let _ = inner.store.block_on(async move { first.read().await });
        let weak = Arc::downgrade(&inner);
        super::runtime().spawn(async move {
            loop {
                tokio::time::sleep(STREAM_POLL).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.stop.load(Ordering::Relaxed) {
                    return;
                }
                let _ = inner.read().await;
            }
        });
        Self { inner }
    }

    /// The value last seen.
    pub fn current(&self) -> u64 {
        self.inner.value.load(Ordering::SeqCst)
    }

    /// Add one in Redis (waiting at most the store's timeout); the new value, or the error
    /// when Redis could not be reached (then nothing changed anywhere).
    pub fn bump(&self) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        self.inner.store.block_on(async move {
            let mut cmd = redis::cmd("INCR");
            cmd.arg(&inner.key);
            let value: u64 = inner.store.query(cmd).await?;
            Ok(inner.raise_to(value))
        })
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}
