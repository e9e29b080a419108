//! Python face of the shared-state store: `_core.RedisStore` (the connection every shared
//! object uses), `_core.SharedRateLimiter` and its `SharedPermit`. Health changes become one
//! warning line each on the `langscale.store` logger.

use std::sync::Mutex;
use std::time::Duration;

use langscale_core::limit::{
    Ask, LimiterConfig, Priority, SharedLimiter, SharedLimiterConfig, SharedPermit as CorePermit,
};
use langscale_core::route::SharedBreakers as CoreBreakers;
use langscale_core::store::{
    HealthEvent, IndexStream as CoreStream, Store, StoreConfig, StoreError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::args;
use crate::errors::{config_error, CoreError};
use crate::limit::{permit_methods, py_bool, PriorityArg, Tokens};
use crate::route::Router;

fn store_error(err: StoreError) -> PyErr {
    CoreError::from(err).into()
}

fn log_event(event: &HealthEvent) {
    Python::attach(|py| {
        let logged = py
            .import("logging")
            .and_then(|logging| logging.call_method1("getLogger", ("langscale.store",)))
            .and_then(|logger| logger.call_method1("warning", (event.message.as_str(),)));
        if let Err(err) = logged {
            err.print(py);
        }
    });
}

fn urls(value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Ok(args::text("url", value)?
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect());
    }
    args::texts("url", value)
}

args::text_arg! {
    /// A Redis key.
    Key = "key";
}

/// `value=`: bytes.
struct Value(Vec<u8>);

impl<'a, 'py> FromPyObject<'a, 'py> for Value {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        args::optional_bytes("value", Some(&obj))?
            .map(Self)
            .ok_or_else(|| config_error("value must be bytes, got None"))
    }
}

/// A connection to Redis shared by caches, limiters and routers (one per process is enough).
#[pyclass(frozen, module = "langscale._core")]
pub struct RedisStore {
    pub(crate) store: Store,
}

#[pymethods]
impl RedisStore {
    #[new]
    #[pyo3(signature = (url, prefix=None, tenant=None, timeout=None, cluster=None, tls_ca=None))]
    fn new(
        py: Python<'_>,
        url: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        cluster: Option<&Bound<'_, PyAny>>,
        tls_ca: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = StoreConfig {
            urls: urls(url)?,
            cluster: cluster.map_or(Ok(false), |c| args::flag("cluster", c))?,
            prefix: args::optional_text("prefix", prefix)?
                .unwrap_or("langscale")
                .to_owned(),
            tenant: args::optional_text("tenant", tenant)?.map(str::to_owned),
            timeout: args::seconds("timeout", timeout)?.unwrap_or(Duration::from_millis(100)),
            tls_ca: args::optional_bytes("tls_ca", tls_ca)?,
        };
        let store = py.detach(|| Store::new(config)).map_err(store_error)?;
        store.set_listener(log_event);
        Ok(Self { store })
    }

    /// Is Redis answering (as far as this process knows)?
    #[getter]
    fn up(&self) -> bool {
        self.store.is_up()
    }

    #[getter]
    fn prefix(&self) -> String {
        self.store.config().prefix.clone()
    }

    #[getter]
    fn tenant(&self) -> Option<String> {
        self.store.config().tenant.clone()
    }

    /// The full key for (tag, name): prefix, tenant, and a hash tag around the group.
    fn key(&self, tag: &Bound<'_, PyAny>, name: &Bound<'_, PyAny>) -> PyResult<String> {
        Ok(self
            .store
            .key(args::text("tag", tag)?, args::text("name", name)?))
    }

    /// Bytes under a key, or None (also None when Redis is down or slow).
    fn get<'py>(&self, py: Python<'py>, key: Key<'_>) -> Option<Bound<'py, PyBytes>> {
        let key = key.0.to_owned();
        let store = self.store.clone();
        let value = py.detach(|| self.store.block_on(async move { store.get(key).await }));
        value.ok().flatten().map(|v| PyBytes::new(py, &v))
    }

    /// Store bytes under a key, expiring after `ttl` seconds; False when it could not.
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: Key<'_>,
        value: Value,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let (key, value, ttl) = (key.0.to_owned(), value.0, args::seconds("ttl", ttl)?);
        let store = self.store.clone();
        let done = py.detach(|| {
            self.store
                .block_on(async move { store.set(key, value, ttl).await })
        });
        Ok(done.is_ok())
    }

    /// Remove a key; False when Redis could not be reached.
    fn delete(&self, py: Python<'_>, key: Key<'_>) -> bool {
        let key = key.0.to_owned();
        let store = self.store.clone();
        py.detach(|| self.store.block_on(async move { store.delete(key).await }))
            .is_ok()
    }

    /// `get` as an awaitable.
    fn get_async<'py>(&self, py: Python<'py>, key: Key<'_>) -> PyResult<Bound<'py, PyAny>> {
        let key = key.0.to_owned();
        let store = self.store.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let value = store.get(key).await.ok().flatten();
            Python::attach(|py| Ok(value.map(|v| PyBytes::new(py, &v).unbind())))
        })
    }

    /// `set` as an awaitable.
    #[pyo3(signature = (key, value, ttl=None))]
    fn set_async<'py>(
        &self,
        py: Python<'py>,
        key: Key<'_>,
        value: Value,
        ttl: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (key, value, ttl) = (key.0.to_owned(), value.0, args::seconds("ttl", ttl)?);
        let store = self.store.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(store.set(key, value, ttl).await.is_ok())
        })
    }

    /// Log health changes not logged yet (async callers call this after awaiting).
    fn flush_events(&self) {
        self.store.flush_events();
    }

    /// up, calls, errors, timeouts, skipped (not tried: Redis down), degraded, recovered.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.store.stats();
        let d = PyDict::new(py);
        d.set_item("up", s.up)?;
        d.set_item("calls", s.calls)?;
        d.set_item("errors", s.errors)?;
        d.set_item("timeouts", s.timeouts)?;
        d.set_item("skipped", s.skipped)?;
        d.set_item("degraded", s.degraded)?;
        d.set_item("recovered", s.recovered)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = self.store.config();
        format!(
            "RedisStore(prefix={:?}, tenant={:?}, cluster={}, up={})",
            c.prefix,
            c.tenant,
            if c.cluster { "True" } else { "False" },
            if self.store.is_up() { "True" } else { "False" }
        )
    }
}

/// A rate limiter whose buckets, concurrency slots and waiting priorities live in Redis.
#[pyclass(frozen, module = "langscale._core")]
pub struct SharedRateLimiter {
    pub(crate) limiter: SharedLimiter,
    store: Store,
}

#[pymethods]
impl SharedRateLimiter {
    #[new]
    #[pyo3(signature = (store, name, requests_per_second=None, requests_per_minute=None, tokens_per_minute=None, max_concurrency=None, burst=None, token_burst=None, priority_aging=None, lease=None, local_share=None, slot_ttl=None, tenant_weights=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: &RedisStore,
        name: args::Name<'_>,
        requests_per_second: Option<&Bound<'_, PyAny>>,
        requests_per_minute: Option<&Bound<'_, PyAny>>,
        tokens_per_minute: Option<&Bound<'_, PyAny>>,
        max_concurrency: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
        token_burst: Option<&Bound<'_, PyAny>>,
        priority_aging: Option<&Bound<'_, PyAny>>,
        lease: Option<&Bound<'_, PyAny>>,
        local_share: Option<&Bound<'_, PyAny>>,
        slot_ttl: Option<&Bound<'_, PyAny>>,
        tenant_weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = name.0;
        if name.is_empty() || name.contains(['{', '}']) {
            return Err(config_error(format!(
                "name must be a non-empty string without braces, got {name:?}"
            )));
        }
        let max_concurrency = args::positive_count("max_concurrency", max_concurrency)?
            .map(|n| {
                u32::try_from(n)
                    .map_err(|_| config_error(format!("max_concurrency is too large: {n}")))
            })
            .transpose()?;
        let limits = LimiterConfig {
            requests_per_second: args::positive_number("requests_per_second", requests_per_second)?,
            requests_per_minute: args::positive_number("requests_per_minute", requests_per_minute)?,
            tokens_per_minute: args::positive_number("tokens_per_minute", tokens_per_minute)?,
            max_concurrency,
            burst: args::positive_count("burst", burst)?,
            token_burst: args::positive_count("token_burst", token_burst)?,
            priority_aging: args::seconds("priority_aging", priority_aging)?
                .unwrap_or(Duration::from_secs(5)),
            tenant_weights: args::tenant_weights("tenant_weights", tenant_weights)?,
        };
        let defaults = SharedLimiterConfig::default();
        let config = SharedLimiterConfig {
            name: name.to_owned(),
            limits,
            lease: args::positive_count("lease", lease)?.unwrap_or(1),
            local_share: args::positive_number("local_share", local_share)?,
            slot_ttl: args::seconds("slot_ttl", slot_ttl)?.unwrap_or(defaults.slot_ttl),
        };
        let limiter = SharedLimiter::new(store.store.clone(), config).map_err(CoreError::from)?;
        Ok(Self {
            limiter,
            store: store.store.clone(),
        })
    }

    /// Admit now if possible (at most one round trip), else None. A `tenant` is held to its
    /// share (by `tenant_weights`) while another tenant is starved, in every process.
    #[pyo3(
        signature = (tokens=Tokens(0), priority=PriorityArg(Priority::Standard), tenant=None),
        text_signature = "($self, tokens=0, priority='standard', tenant=None)"
    )]
    fn try_acquire(
        &self,
        py: Python<'_>,
        tokens: Tokens,
        priority: PriorityArg,
        tenant: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<SharedPermit>> {
        let (tokens, priority) = (tokens.0, priority.0);
        let ask = Ask::new(priority, args::optional_text("tenant", tenant)?);
        let permit = py
            .detach(|| self.limiter.try_acquire(tokens, ask))
            .map_err(CoreError::from)?;
        Ok(permit.map(SharedPermit::new))
    }

    /// Wait (releasing the GIL) until admitted; raises RateLimitTimeout after `timeout` s.
    #[pyo3(
        signature = (tokens=Tokens(0), priority=PriorityArg(Priority::Standard), timeout=None, tenant=None),
        text_signature = "($self, tokens=0, priority='standard', timeout=None, tenant=None)"
    )]
    fn acquire(
        &self,
        py: Python<'_>,
        tokens: Tokens,
        priority: PriorityArg,
        timeout: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SharedPermit> {
        let (tokens, priority) = (tokens.0, priority.0);
        let timeout = args::seconds("timeout", timeout)?;
        let ask = Ask::new(priority, args::optional_text("tenant", tenant)?);
        let permit = py.detach(|| {
            let permit = self.limiter.acquire_blocking(tokens, ask, timeout);
            self.store.flush_events();
            permit
        });
        Ok(SharedPermit::new(permit.map_err(CoreError::from)?))
    }

    /// An awaitable of a SharedPermit; cancelling it gives the place back.
    #[pyo3(
        signature = (tokens=Tokens(0), priority=PriorityArg(Priority::Standard), timeout=None, tenant=None),
        text_signature = "($self, tokens=0, priority='standard', timeout=None, tenant=None)"
    )]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        tokens: Tokens,
        priority: PriorityArg,
        timeout: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (tokens, priority) = (tokens.0, priority.0);
        let timeout = args::seconds("timeout", timeout)?;
        let ask = Ask::new(priority, args::optional_text("tenant", tenant)?);
        let limiter = self.limiter.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let permit = limiter
                .acquire(tokens, ask, timeout)
                .await
                .map_err(CoreError::from)?;
            Ok(SharedPermit::new(permit))
        })
    }

    /// Change a tenant's weight in this process (set it alike in every process sharing it).
    fn set_tenant_weight(
        &self,
        tenant: &Bound<'_, PyAny>,
        weight: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let tenant = args::text("tenant", tenant)?;
        let weight = args::positive_number("weight", Some(weight))?.unwrap_or(1.0);
        self.limiter
            .set_tenant_weight(tenant, weight)
            .map_err(|e| CoreError::from(e).into())
    }

    #[getter]
    fn max_tokens(&self) -> Option<u64> {
        self.limiter.max_tokens()
    }

    /// acquired, waited, wait_seconds, timeouts, waiting, in_flight, round_trips, leased,
    /// local, workers, local_share.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.store.flush_events();
        let s = self.limiter.stats();
        let d = PyDict::new(py);
        d.set_item("acquired", s.acquired)?;
        d.set_item("waited", s.waited)?;
        d.set_item("wait_seconds", s.wait_nanos as f64 / 1e9)?;
        d.set_item("timeouts", s.timeouts)?;
        d.set_item("waiting", s.waiting)?;
        d.set_item("in_flight", s.in_flight)?;
        d.set_item("round_trips", s.round_trips)?;
        d.set_item("leased", s.leased)?;
        d.set_item("local", s.local)?;
        d.set_item("workers", s.workers)?;
        d.set_item("local_share", s.local_share)?;
        Ok(d)
    }
}

/// Admission from a SharedRateLimiter; same use as `Permit`.
#[pyclass(frozen, module = "langscale._core")]
pub struct SharedPermit {
    permit: Mutex<CorePermit>,
    released: std::sync::atomic::AtomicBool,
    tokens: std::sync::atomic::AtomicU64,
    priority: Priority,
    local: bool,
}

impl SharedPermit {
    fn new(permit: CorePermit) -> Self {
        Self {
            tokens: std::sync::atomic::AtomicU64::new(permit.tokens()),
            priority: permit.priority(),
            local: permit.is_local(),
            permit: Mutex::new(permit),
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn describe(&self) -> String {
        format!(
            "SharedPermit(tokens={}, priority='{}', released={}, local={})",
            self.tokens.load(std::sync::atomic::Ordering::Relaxed),
            self.priority.as_str(),
            py_bool(self.released.load(std::sync::atomic::Ordering::Relaxed)),
            py_bool(self.local)
        )
    }
}

permit_methods!(SharedPermit {
    /// True when admitted by this process's local share because Redis was down.
    #[getter]
    fn local(&self) -> bool {
        self.local
    }
});

/// Shares a router's circuit breakers with every process naming the same group, while alive.
#[pyclass(frozen, module = "langscale._core")]
pub struct SharedBreakers {
    breakers: CoreBreakers,
}

#[pymethods]
impl SharedBreakers {
    #[new]
    fn new(store: &RedisStore, router: &Router, group: args::SharedName<'_>) -> PyResult<Self> {
        let group = group.0;
        if group.is_empty() || group.contains(['{', '}']) {
            return Err(config_error(format!(
                "the breaker group must be a non-empty string without braces, got {group:?}"
            )));
        }
        let names: Vec<String> = router
            .router
            .deployments()
            .iter()
            .map(|d| d.name.clone())
            .collect();
        let weak = std::sync::Arc::downgrade(&router.router);
        Ok(Self {
            breakers: CoreBreakers::start(store.store.clone(), weak, group, &names),
        })
    }

    /// (breaker openings published, hold-offs applied from other processes).
    fn counts(&self) -> (u64, u64) {
        self.breakers.counts()
    }
}

/// The semantic cache's replication stream: publish inserts and deletions, drain others'.
/// Its events are the core's `SharedEvent`s, each labelled with namespace and tenant.
#[pyclass(frozen, module = "langscale._core")]
pub struct IndexStream {
    pub(crate) stream: std::sync::Arc<CoreStream>,
}

#[pymethods]
impl IndexStream {
    #[new]
    #[pyo3(signature = (store, name, maxlen=100_000))]
    fn new(store: &RedisStore, name: args::SharedName<'_>, maxlen: u64) -> PyResult<Self> {
        let name = name.0;
        if name.contains(['{', '}']) {
            return Err(config_error(format!(
                "the stream name may not contain braces, got {name:?}"
            )));
        }
        Ok(Self {
            stream: std::sync::Arc::new(CoreStream::start(store.store.clone(), name, maxlen)),
        })
    }

    /// Append one event (field, bytes) pairs; never waits for Redis.
    fn publish(&self, fields: Vec<(String, Vec<u8>)>) {
        self.stream.publish(fields);
    }

    /// Events from other processes not handed out before, oldest first (a cache sharing
    /// this stream takes them itself: see `SemanticCache.share`).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.stream.drain(usize::MAX);
        let out = PyList::empty(py);
        for event in events {
            let d = PyDict::new(py);
            for (field, value) in event {
                d.set_item(field, PyBytes::new(py, &value))?;
            }
            out.append(d)?;
        }
        Ok(out)
    }

    /// (events received from others, events published).
    fn counts(&self) -> (u64, u64) {
        self.stream.counts()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SharedBreakers>()?;
    m.add_class::<IndexStream>()?;
    m.add_class::<RedisStore>()?;
    m.add_class::<SharedRateLimiter>()?;
    m.add_class::<SharedPermit>()?;
    Ok(())
}
