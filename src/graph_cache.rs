//! Python face of the core node cache (LangGraph's `BaseCache` in `graph_cache.py`): keys,
//! values as opaque `(kind, bytes)` from LangGraph's serializer, each operation blocking (the
//! GIL released) or awaited, both running the core's one future.

use std::time::Duration;

use langscale_core::cache::node::data_only;
use langscale_core::cache::{NodeCache as CoreNodeCache, NodeKey, NodeValue};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args;
use crate::errors::config_error;
use crate::store::RedisStore;

/// LangGraph node results in process (least recently used out first) and, once shared, in
/// Redis; clears reach every process; only data kinds are stored or served.
#[pyclass(frozen, module = "langscale._core")]
pub struct NodeCache {
    cache: CoreNodeCache,
}

type Found = Option<(String, Py<PyBytes>)>;

fn node_key(namespace: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<NodeKey> {
    Ok(NodeKey {
        namespace: args::texts("namespace", namespace)?,
        key: args::text("key", key)?.to_owned(),
    })
}

fn key_of(value: &Bound<'_, PyAny>) -> PyResult<NodeKey> {
    let bad = || {
        config_error(format!(
            "a graph cache key must be (tuple of str, str), got {}",
            args::describe(value)
        ))
    };
    let parts = args::items("key", value).map_err(|_| bad())?;
    let [namespace, key] = parts.as_slice() else {
        return Err(bad());
    };
    node_key(namespace, key)
}

fn keys_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<NodeKey>> {
    args::items("keys", value)?.iter().map(key_of).collect()
}

/// (namespace, key, kind, bytes, ttl seconds or None) for each entry.
fn entries_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<(NodeKey, NodeValue, Option<Duration>)>> {
    args::items("entries", value)?
        .iter()
        .map(|entry| {
            let bad = || {
                config_error(format!(
                    "a graph cache entry must be (namespace, key, kind, bytes, ttl), got {}",
                    args::describe(entry)
                ))
            };
            let parts = args::items("entry", entry).map_err(|_| bad())?;
            let [namespace, key, kind, data, ttl] = parts.as_slice() else {
                return Err(bad());
            };
            let data = args::optional_bytes("data", Some(data))?.ok_or_else(bad)?;
            Ok((
                node_key(namespace, key)?,
                NodeValue {
                    kind: args::text("kind", kind)?.to_owned(),
                    data: data.into(),
                },
                args::seconds("ttl", Some(ttl))?,
            ))
        })
        .collect()
}

fn namespaces_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<Vec<String>>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    args::items("namespaces", value)?
        .iter()
        .map(|ns| args::texts("namespace", ns))
        .collect::<PyResult<_>>()
        .map(Some)
}

fn found(py: Python<'_>, values: Vec<Option<NodeValue>>) -> Vec<Found> {
    values
        .into_iter()
        .map(|value| value.map(|v| (v.kind, PyBytes::new(py, &v.data).unbind())))
        .collect()
}

#[pymethods]
impl NodeCache {
    #[new]
    fn new(max_entries: &Bound<'_, PyAny>) -> PyResult<Self> {
        let max = args::positive_count("max_entries", Some(max_entries))?.unwrap_or(1);
        Ok(Self {
            cache: CoreNodeCache::new(max),
        })
    }

    /// Share entries through `store` (once per cache).
    fn share(&self, store: &RedisStore) -> PyResult<()> {
        if self.cache.share(store.store.clone()) {
            Ok(())
        } else {
            Err(config_error("this cache already has a store"))
        }
    }

    /// (kind, bytes) of each key present and not expired, else None, in order.
    fn get(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<Vec<Found>> {
        let keys = keys_of(keys)?;
        let count = keys.len();
        let cache = self.cache.clone();
        let values = py
            .detach(|| self.cache.blocking(async move { cache.get(&keys).await }))
            .unwrap_or_else(|| vec![None; count]);
        Ok(found(py, values))
    }

    /// `get` as an awaitable.
    fn get_async<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys_of(keys)?;
        let cache = self.cache.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let values = cache.get(&keys).await;
            Python::attach(|py| Ok(found(py, values)))
        })
    }

    /// Store each (namespace, key, kind, bytes, ttl); False when Redis could not take them.
    /// Raises ConfigError, storing nothing, for a kind that is not data.
    fn set(&self, py: Python<'_>, entries: &Bound<'_, PyAny>) -> PyResult<bool> {
        let entries = entries_of(entries)?;
        let cache = self.cache.clone();
        py.detach(|| self.cache.blocking(async move { cache.set(entries).await }))
            .unwrap_or(Ok(false))
            .map_err(|err| config_error(err.to_string()))
    }

    /// `set` as an awaitable (the kinds are checked before it is returned).
    fn set_async<'py>(
        &self,
        py: Python<'py>,
        entries: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let entries = entries_of(entries)?;
        data_only(&entries).map_err(|err| config_error(err.to_string()))?;
        let cache = self.cache.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            cache
                .set(entries)
                .await
                .map_err(|err| config_error(err.to_string()))
        })
    }

    /// Drop the entries of `namespaces` (all when None), here and in every process.
    #[pyo3(signature = (namespaces=None))]
    fn clear(&self, py: Python<'_>, namespaces: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let namespaces = namespaces_of(namespaces)?;
        let cache = self.cache.clone();
        Ok(py
            .detach(|| {
                self.cache
                    .blocking(async move { cache.clear(namespaces.as_deref()).await })
            })
            .unwrap_or(false))
    }

    /// `clear` as an awaitable.
    #[pyo3(signature = (namespaces=None))]
    fn clear_async<'py>(
        &self,
        py: Python<'py>,
        namespaces: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let namespaces = namespaces_of(namespaces)?;
        let cache = self.cache.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(cache.clear(namespaces.as_deref()).await)
        })
    }

    /// A value `get` returned that the caller could not load: dropped, counted as refused.
    fn refuse(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = key_of(key)?;
        let cache = self.cache.clone();
        py.detach(|| self.cache.blocking(async move { cache.refuse(&key).await }));
        Ok(())
    }

    /// The Redis key of this key's entry now.
    fn l2_key(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<String> {
        let key = key_of(key)?;
        let cache = self.cache.clone();
        py.detach(|| self.cache.blocking(async move { cache.l2_key(&key).await }))
            .flatten()
            .ok_or_else(|| config_error("this cache has no store"))
    }

    /// hits, misses, l2_hits, refused, evictions, entries.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cache.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("l2_hits", s.l2_hits)?;
        d.set_item("refused", s.refused)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("entries", s.entries)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NodeCache>()
}
