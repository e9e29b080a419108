//! Shared state in Redis (or Valkey, or Redis Cluster): the connection, its health, key
//! naming, and the one way every Redis call is made (a short timeout, errors counted, no
//! call made while Redis is known to be down). The shared limiter, cache entries, breaker
//! state, the semantic index stream and the exact cache's clear counters build on [`Store`].
//!
//! Every call runs on one process-wide tokio runtime owned here, so a store is usable from
//! plain threads (blocking helpers) and from any async runtime (the futures are spawned here
//! and awaited through their join handles).

mod conn;
mod epoch;
mod stream;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

pub use epoch::Epoch;
pub use stream::{IndexEvent, IndexStream};

use conn::Conn;
use futures_util::future::join_all;
use redis::{Cmd, FromRedisValue};

/// A Lua script and its SHA1, for EVALSHA with an EVAL fallback.
pub(crate) struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    pub(crate) fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }
}

/// What can go wrong with the store. None of it reaches a user's agent: callers fall back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A setting that can never work (a malformed URL, a zero timeout).
    #[error("{0}")]
    Config(String),
    /// Redis is known to be unreachable; no call was made.
    #[error("redis is down")]
    Down,
    /// The call did not answer within the store's timeout.
    #[error("redis call timed out")]
    Timeout,
    /// No connection could be made.
    #[error("cannot connect to redis: {0}")]
    Connect(String),
    /// Redis answered with an error (a script error, a wrong type): Redis itself is up.
    #[error("redis replied with an error: {0}")]
    Reply(String),
}

/// How to reach Redis and how to name keys there.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). With `cluster`, one
    /// or more seed nodes.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Every key starts with this.
    pub prefix: String,
    /// Keys of different tenants never meet.
    pub tenant: Option<String>,
    /// Longest wait for any one Redis call (and for connecting).
    pub timeout: Duration,
    /// PEM CA certificate(s) for `rediss://` servers not signed by a system root.
    pub tls_ca: Option<Vec<u8>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            prefix: "langscale".into(),
            tenant: None,
            timeout: Duration::from_millis(100),
            tls_ca: None,
        }
    }
}

/// A change of health, for the one warning log line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub up: bool,
    pub message: String,
}

/// Counters of the store's calls and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub up: bool,
    pub calls: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Calls not made because Redis was known to be down.
    pub skipped: u64,
    /// Times the store went from up to down, and back.
    pub degraded: u64,
    pub recovered: u64,
}

type Listener = Arc<dyn Fn(&HealthEvent) + Send + Sync>;

/// The process-wide runtime every Redis future runs on. Never dropped: dropping a runtime from
/// inside another async context panics, and a store may be dropped anywhere.
/// An id no other process or call shares (connection identities, stream origins).
pub(crate) fn unique_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{}:{}:{}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes()))
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("langscale-store")
            .enable_all()
            .build()
            .unwrap_or_else(|err| {
                // Without a runtime nothing can reach Redis; this only fails when the OS refuses
                // a thread, and there is no way to go on.
                panic!("langscale: cannot start the store runtime: {err}")
            })
    })
}

struct Inner {
    config: StoreConfig,
    conn: Mutex<Option<Conn>>,
    up: AtomicBool,
    probing: AtomicBool,
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    degraded: AtomicU64,
    recovered: AtomicU64,
    events: Mutex<Vec<HealthEvent>>,
    listener: Mutex<Option<Listener>>,
}

/// A connection to Redis shared by every object that keeps state there. Clone is cheap.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("cluster", &self.inner.config.cluster)
            .field("prefix", &self.inner.config.prefix)
            .field("tenant", &self.inner.config.tenant)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// Does this error say the server or the path to it is unwell (rather than that a command
/// was wrong)? Only the former marks the store down.
fn degrades(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match err.kind() {
        ErrorKind::Server(ServerErrorKind::ClusterDown | ServerErrorKind::TryAgain) => true,
        ErrorKind::Server(_)
        | ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::Extension => false,
        _ => true,
    }
}

impl Store {
    /// Check the settings and start connecting. Never fails because Redis is unreachable: the
    /// store then starts down and reconnects in the background.
    pub fn new(config: StoreConfig) -> Result<Self, StoreError> {
        if config.timeout.is_zero() {
            return Err(StoreError::Config("timeout must be above 0 s".into()));
        }
        if config.urls.is_empty() {
            return Err(StoreError::Config(
                "at least one redis URL is needed".into(),
            ));
        }
        for name in std::iter::once(&config.prefix).chain(config.tenant.iter()) {
            if name.contains(['{', '}']) {
                return Err(StoreError::Config(format!(
                    "prefix and tenant may not contain braces (they delimit hash tags), got {name:?}"
                )));
            }
        }
        conn::install_crypto();
        // Parse now so a bad URL is a config error at construction, not a silent outage.
        conn::check(&config)?;
        let store = Self {
            inner: Arc::new(Inner {
                config,
                conn: Mutex::new(None),
                up: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                calls: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                degraded: AtomicU64::new(0),
                recovered: AtomicU64::new(0),
                events: Mutex::new(Vec::new()),
                listener: Mutex::new(None),
            }),
        };
        // One connection attempt, bounded by the timeout; on failure the probe keeps trying.
        let weak = Arc::downgrade(&store.inner);
        let first = store.block_on(async move { connect_and_ping(&weak).await });
        match first {
            Ok(()) => store.inner.up.store(true, Ordering::SeqCst),
            Err(err) => {
                store.inner.degraded.fetch_add(1, Ordering::Relaxed);
                store.note(false, format!("langscale: redis unreachable at start ({err}); state stays local until it answers"));
                store.start_probe();
            }
        }
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub fn timeout(&self) -> Duration {
        self.inner.config.timeout
    }

    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// A key under the prefix and tenant. `tag` names the group of keys that must share a
    /// cluster slot (they are wrapped in a hash tag); `name` is appended outside it.
    pub fn key(&self, tag: &str, name: &str) -> String {
        let config = &self.inner.config;
        let base = match &config.tenant {
            Some(t) => format!("{}:{}:{}", config.prefix, t, tag),
            None => format!("{}:{}", config.prefix, tag),
        };
        if name.is_empty() {
            format!("{{{base}}}")
        } else {
            format!("{{{base}}}:{name}")
        }
    }

    /// Called with each health change (on a caller's thread, never while holding a lock).
    pub fn set_listener(&self, listener: impl Fn(&HealthEvent) + Send + Sync + 'static) {
        *self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(listener));
        self.flush_events();
    }

    pub fn stats(&self) -> StoreStats {
        self.flush_events();
        let i = &self.inner;
        StoreStats {
            up: self.is_up(),
            calls: i.calls.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            timeouts: i.timeouts.load(Ordering::Relaxed),
            skipped: i.skipped.load(Ordering::Relaxed),
            degraded: i.degraded.load(Ordering::Relaxed),
            recovered: i.recovered.load(Ordering::Relaxed),
        }
    }

    fn note(&self, up: bool, message: String) {
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(HealthEvent { up, message });
    }

    /// Hand queued health events to the listener. Runs on callers' threads, so the listener
    /// (which may take Python's GIL) never runs on the runtime thread.
    pub fn flush_events(&self) {
        let events = std::mem::take(
            &mut *self
                .inner
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if events.is_empty() {
            return;
        }
        let listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(listener) = listener {
            for event in &events {
                listener(event);
            }
        } else {
            // Nobody listens yet: keep them for the first listener.
            self.inner
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .splice(0..0, events);
        }
    }

    fn mark_down(&self, why: &str) {
        if self.inner.up.swap(false, Ordering::SeqCst) {
            self.inner.degraded.fetch_add(1, Ordering::Relaxed);
            self.note(
                false,
                format!("langscale: redis unavailable ({why}); falling back to local state"),
            );
        }
        self.start_probe();
    }

    /// Reconnect in the background with exponential backoff (50 ms doubling to 2 s) until a
    /// PING answers, then mark the store up.
    fn start_probe(&self) {
        if self.inner.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        runtime().spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                if weak.strong_count() == 0 {
                    return;
                }
                if connect_and_ping(&weak).await.is_ok() {
                    if let Some(inner) = weak.upgrade() {
                        let store = Store { inner };
                        store.inner.probing.store(false, Ordering::SeqCst);
                        if !store.inner.up.swap(true, Ordering::SeqCst) {
                            store.inner.recovered.fetch_add(1, Ordering::Relaxed);
                            store.note(
                                true,
                                "langscale: redis reachable again; shared state resumed".into(),
                            );
                        }
                    }
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    fn connection(&self) -> Option<Conn> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Run one command (or script) future against the connection, with the timeout, health
    /// accounting and no call at all while Redis is known to be down.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let conn = match (self.is_up(), self.connection()) {
            (true, Some(conn)) => conn,
            _ => {
                self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                self.start_probe();
                return Err(StoreError::Down);
            }
        };
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout();
        let task = runtime().spawn(async move { tokio::time::timeout(timeout, f(conn)).await });
        let result = match task.await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(err))) => {
                let counter = if err.is_timeout() {
                    &self.inner.timeouts
                } else {
                    &self.inner.errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if degrades(&err) {
                    self.mark_down(&err.to_string());
                    Err(StoreError::Down)
                } else {
                    Err(StoreError::Reply(err.to_string()))
                }
            }
            Ok(Err(_elapsed)) => {
                self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
                self.mark_down(&format!("no answer within {timeout:?}"));
                Err(StoreError::Timeout)
            }
            Err(join) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Reply(join.to_string()))
            }
        };
        result
    }

    /// One command.
    pub async fn query<T: FromRedisValue + Send + 'static>(
        &self,
        cmd: Cmd,
    ) -> Result<T, StoreError> {
        self.call(move |mut conn| async move { conn.query(&cmd).await })
            .await
    }

    /// Several commands in one round trip (each reply in order).
    pub async fn pipeline<T: FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.call(move |mut conn| async move { conn.pipeline(&pipe).await })
            .await
    }

    /// A Lua script by EVALSHA, falling back to EVAL when the server does not know it yet
    /// (NOSCRIPT: first use, a restarted server, a cluster node that never saw it).
    pub(crate) async fn eval<T: FromRedisValue + Send + 'static>(
        &self,
        script: &'static Lua,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, StoreError> {
        self.call(move |mut conn| async move {
            let mut sha = redis::cmd("EVALSHA");
            sha.arg(&script.sha).arg(keys.len()).arg(&keys).arg(&args);
            match conn.query(&sha).await {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(script.source)
                        .arg(keys.len())
                        .arg(&keys)
                        .arg(&args);
                    conn.query(&eval).await
                }
                other => other,
            }
        })
        .await
    }

    /// Run a store future to completion from a plain (non-async) thread. Never waits much
    /// longer than the store's timeout.
    pub fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        let limit = self.timeout() * 3 + Duration::from_millis(250);
        let result = rx.recv_timeout(limit).unwrap_or(Err(StoreError::Timeout));
        self.flush_events();
        result
    }

    /// Spawn a store call whose result nobody waits for (a release, a refund, a heartbeat).
    pub fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) {
        runtime().spawn(async move {
            let _ = fut.await;
        });
    }

    // -- plain values (the exact cache's L2) ------------------------------------------------

    /// The bytes under `key`, if any.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query(cmd).await
    }

    /// Store bytes under `key`, expiring after `ttl` when given.
    pub async fn set(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.query(set_command(key, value, ttl)).await
    }

    /// The bytes under each of `keys`, in order, in one round trip: one pipeline, or on a
    /// cluster (where keys live in different slots) every GET at once on the connection.
    pub async fn get_many(&self, keys: Vec<String>) -> Vec<Result<Option<Vec<u8>>, StoreError>> {
        if self.inner.config.cluster {
            return join_all(keys.into_iter().map(|key| self.get(key))).await;
        }
        let count = keys.len();
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(key);
        }
        match self.pipeline::<Vec<Option<Vec<u8>>>>(pipe).await {
            Ok(values) if values.len() == count => values.into_iter().map(Ok).collect(),
            Ok(values) => {
                let err = StoreError::Reply(format!("{} replies to {count} reads", values.len()));
                vec![Err(err); count]
            }
            Err(err) => vec![Err(err); count],
        }
    }

    /// Store each (key, bytes, ttl), expiring after its ttl when given, in one round trip
    /// (as `get_many`); Err when any write failed.
    pub async fn set_many(
        &self,
        entries: Vec<(String, Vec<u8>, Option<Duration>)>,
    ) -> Result<(), StoreError> {
        if self.inner.config.cluster {
            let writes = entries
                .into_iter()
                .map(|(key, value, ttl)| self.set(key, value, ttl));
            return join_all(writes).await.into_iter().collect();
        }
        let mut pipe = redis::pipe();
        for (key, value, ttl) in entries {
            pipe.add_command(set_command(key, value, ttl)).ignore();
        }
        self.pipeline::<()>(pipe).await
    }

    pub async fn delete(&self, key: String) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.query::<i64>(cmd).await.map(|_| ())
    }
}

/// SET of bytes under `key`, expiring after `ttl` (at least a millisecond) when given.
fn set_command(key: String, value: Vec<u8>, ttl: Option<Duration>) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
    }
    cmd
}

/// Connect if there is no connection yet, then PING.
async fn connect_and_ping(weak: &Weak<Inner>) -> Result<(), StoreError> {
    let Some(inner) = weak.upgrade() else {
        return Err(StoreError::Down);
    };
    let timeout = inner.config.timeout;
    let existing = inner
        .conn
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut conn = match existing {
        Some(conn) => conn,
        None => {
            let conn = tokio::time::timeout(timeout * 5, Conn::connect(&inner.config))
                .await
                .map_err(|_| StoreError::Timeout)??;
            *inner.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
            conn
        }
    };
    let ping = redis::cmd("PING");
    match tokio::time::timeout(timeout, conn.query::<String>(&ping)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(StoreError::Reply(err.to_string())),
        Err(_) => Err(StoreError::Timeout),
    }
}

#[cfg(test)]
pub(crate) mod tests;
