//! The semantic index's replication log: a Redis Stream (capped by MAXLEN) of inserts and
//! deletions. Every process appends what it stores and tails what others append; a process
//! that starts late reads the stream from its start, so it loads what is there. Entries are
//! opaque field maps here; the cache layer decides what they mean.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::streams::StreamReadReply;
use redis::Value;
use tokio::sync::mpsc;

use super::Store;

/// How often the stream is read.
pub const STREAM_POLL: Duration = Duration::from_millis(100);
/// Events kept waiting for the cache to apply them; beyond this the oldest are dropped.
const BUFFER_MAX: usize = 200_000;

/// One entry of the stream: its fields, minus the origin.
pub type IndexEvent = Vec<(String, Vec<u8>)>;

#[derive(Debug)]
struct Inner {
    store: Store,
    key: String,
    origin: String,
    maxlen: u64,
    buffer: Mutex<VecDeque<IndexEvent>>,
    stop: AtomicBool,
    /// Set to read the stream again from its start (the next poll does).
    rewind: AtomicBool,
    received: AtomicU64,
    published: AtomicU64,
}

/// Appends to and tails one stream. Dropping it stops the tail.
#[derive(Debug)]
pub struct IndexStream {
    inner: Arc<Inner>,
    /// To the one writer task: events go to Redis in the order they were published.
    outbox: mpsc::UnboundedSender<IndexEvent>,
}

impl IndexStream {
    pub fn start(store: Store, name: &str, maxlen: u64) -> Self {
        let key = store.key(&format!("semantic:{name}"), "log");
        let origin = super::unique_id();
        let inner = Arc::new(Inner {
            store,
            key,
            origin,
            maxlen: maxlen.max(1),
            buffer: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
            rewind: AtomicBool::new(false),
            received: AtomicU64::new(0),
            published: AtomicU64::new(0),
        });
        let (outbox, mut pending) = mpsc::unbounded_channel::<IndexEvent>();
        let writer = Arc::clone(&inner);
        // One writer: what one process publishes reaches the stream in order (a deletion never
        // overtakes the insert it undoes). What is queued is sent as one pipeline.
        super::runtime().spawn(async move {
            const BATCH: usize = 256;
            let mut batch = Vec::with_capacity(BATCH);
            // Ends once the stream is dropped and what it published is sent.
            while pending.recv_many(&mut batch, BATCH).await > 0 {
                let inner = &writer;
                let mut pipe = redis::pipe();
                for fields in batch.drain(..) {
                    pipe.add_command(inner.xadd(&fields)).ignore();
                }
                let _ = inner.store.pipeline::<Value>(pipe).await;
            }
        });
        let weak = Arc::downgrade(&inner);
        super::runtime().spawn(async move {
            let mut last = "0-0".to_owned();
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if inner.stop.load(Ordering::Relaxed) {
                    return;
                }
                if inner.rewind.swap(false, Ordering::SeqCst) {
                    "0-0".clone_into(&mut last);
                }
                let full = inner.poll(&mut last).await;
                drop(inner);
                if !full {
                    tokio::time::sleep(STREAM_POLL).await;
                }
            }
        });
        Self { inner, outbox }
    }

    /// Append an event (fire and forget: a lost event costs other processes a miss only).
    pub fn publish(&self, fields: IndexEvent) {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.outbox.send(fields);
    }

    /// Up to `max` events other processes appended, in order, not handed out before.
    pub fn drain(&self, max: usize) -> Vec<IndexEvent> {
        let mut buffer = self
            .inner
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = buffer.len().min(max);
        buffer.drain(..n).collect()
    }

    /// Read the whole stream again from its start (what is left of it under MAXLEN), as a
    /// process starting now would: for a receiver that now accepts entries it skipped before.
    /// Events read but not handed out yet are dropped; the re-read brings them again in order.
    pub fn rewind(&self) {
        self.inner
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.inner.rewind.store(true, Ordering::SeqCst);
    }

    /// The tenant of the store this stream lives in.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.store.config().tenant.as_deref()
    }

    /// (events received from others, events published).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.received.load(Ordering::Relaxed),
            self.inner.published.load(Ordering::Relaxed),
        )
    }
}

impl Drop for IndexStream {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}

impl Inner {
    fn xadd(&self, fields: &IndexEvent) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.maxlen)
            .arg("*")
            .arg("o")
            .arg(&self.origin);
        for (field, value) in fields {
            cmd.arg(field).arg(value.as_slice());
        }
        cmd
    }

    /// Read the next batch; true when the batch was full (read again at once).
    async fn poll(&self, last: &mut String) -> bool {
        const COUNT: usize = 1000;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(last.as_str());
        let Ok(reply) = self.store.query::<Option<StreamReadReply>>(cmd).await else {
            return false;
        };
        let Some(reply) = reply else { return false };
        let mut n = 0;
        let mut events = Vec::new();
        for key in reply.keys {
            for entry in key.ids {
                n += 1;
                last.clone_from(&entry.id);
                let mut own = false;
                let mut fields = Vec::with_capacity(entry.map.len());
                for (field, value) in entry.map {
                    let bytes: Vec<u8> = redis::from_redis_value(value).unwrap_or_default();
                    if field == "o" {
                        own = bytes == self.origin.as_bytes();
                    } else {
                        fields.push((field, bytes));
                    }
                }
                if !own {
                    events.push(fields);
                }
            }
        }
        if !events.is_empty() {
            self.received
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.extend(events);
            while buffer.len() > BUFFER_MAX {
                buffer.pop_front();
            }
        }
        n >= COUNT
    }
}
