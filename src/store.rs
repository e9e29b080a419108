//! Python face of the shared-state store: `_core.RedisStore` (the connection every shared
//! object uses; a shared `_core.RateLimiter` takes one, see `limit.rs`). Health changes
//! become one warning line each on the `langscale.store` logger.

use std::time::Duration;

use langscale_core::route::SharedBreakers as CoreBreakers;
use langscale_core::store::{
    HealthEvent, IndexStream as CoreStream, Store, StoreConfig, StoreError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::args;
use crate::errors::{config_error, CoreError};
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
    Ok(())
}
