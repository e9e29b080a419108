//! Python face of the core tiered exact cache (L1 in process, L2 in Redis once shared).
//! Values are opaque bytes here; the Python layer encodes LangChain generations into them
//! (data only, never pickle) and reports back the ones it cannot read.

use std::sync::{Arc, Mutex, PoisonError};

use langscale_core::cache::{self, ExactCacheConfig, Fetched, Tier, TieredCache, Write};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args::{self, LlmString, Prompt};
use crate::errors::{config_error, CoreError};
use crate::namespace;
use crate::store::RedisStore;

/// Bounded (TinyLFU) exact cache with TTL, keyed by a normalised prompt; shared through
/// Redis once given a store.
#[pyclass(frozen, module = "langscale._core")]
pub struct ExactCache {
    cache: TieredCache,
}

fn bytes<'py>(py: Python<'py>, value: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, value)
}

/// Bytes in Redis that are not a langscale entry: ValueError, as the codec raises for a value
/// it cannot read (the core counted it already).
fn unreadable(err: cache::Unreadable) -> PyErr {
    PyValueError::new_err(err.0)
}

/// The Redis write of a batch `ExactCache.insert_many` stored in L1: sent once, blocking
/// (`send`, the GIL released) or awaited (`send_async`), so the caller can hold its own lock
/// around the L1 fill and not around the round trip.
#[pyclass(frozen, module = "langscale._core")]
pub struct PendingWrite {
    write: Mutex<Option<Write>>,
}

impl PendingWrite {
    fn take(&self) -> PyResult<Write> {
        self.write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| config_error("this write was sent already"))
    }
}

#[pymethods]
impl PendingWrite {
    /// Send it (GIL released); False when Redis could not take it.
    fn send(&self, py: Python<'_>) -> PyResult<bool> {
        let write = self.take()?;
        Ok(py.detach(|| write.blocking()))
    }

    /// `send` as an awaitable.
    fn send_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let write = self.take()?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(write.run().await) })
    }
}

/// The bytes each fetch found, None for a miss or an unreadable entry (the core counted it in
/// `l2_errors`).
fn found_bytes(py: Python<'_>, fetched: Vec<Fetched>) -> Vec<Option<Bound<'_, PyBytes>>> {
    fetched
        .into_iter()
        .map(|value| value.ok().flatten().map(|v| bytes(py, &v)))
        .collect()
}

/// A list of bytes, each named by its index in errors.
fn values(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<Arc<[u8]>>> {
    args::items(name, value)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.cast::<PyBytes>()
                .map(|b| Arc::from(b.as_bytes()))
                .map_err(|_| {
                    config_error(format!(
                        "{name}[{i}] must be bytes, got {}",
                        args::describe(item)
                    ))
                })
        })
        .collect()
}

impl ExactCache {
    fn not_shared() -> PyErr {
        config_error("this cache has no store (give store= or redis_url=)")
    }
}

#[pymethods]
impl ExactCache {
    #[new]
    #[pyo3(signature = (maxsize=None, max_bytes=None, ttl=None, namespace=None))]
    fn new(
        maxsize: Option<&Bound<'_, PyAny>>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        namespace: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = ExactCacheConfig {
            maxsize: args::positive_count("maxsize", maxsize)?.unwrap_or(100_000),
            max_bytes: args::positive_count("max_bytes", max_bytes)?,
            ttl: args::seconds("ttl", ttl)?,
        };
        let namespace = namespace
            .map(namespace::text)
            .transpose()?
            .unwrap_or_default();
        let cache = TieredCache::new(config, &namespace).map_err(CoreError::from)?;
        Ok(Self { cache })
    }

    /// Share entries through `store` (once per cache): lookups that miss L1 read Redis,
    /// updates write there, `clear()` reaches every process.
    fn share(&self, py: Python<'_>, store: &RedisStore) -> PyResult<()> {
        let store = store.store.clone();
        py.detach(|| self.cache.share(store))
            .map_err(|err| config_error(err.to_string()))
    }

    /// (bytes, found in Redis) for this prompt: L1, then Redis when shared (the GIL released
    /// around the round trip; a value found there fills L1); None when neither has it.
    /// Raises ValueError for bytes in Redis that are not a langscale entry (already counted
    /// in `l2_errors`: the caller only logs it).
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, bool)>> {
        let found = self
            .cache
            .lookup_with(prompt.0, llm_string.0, |fetch| {
                py.detach(|| fetch.blocking())
            })
            .map_err(unreadable)?;
        Ok(found.map(|found| (bytes(py, &found.value), found.tier == Tier::Shared)))
    }

    /// L1 only: the stored bytes, or None (then `fetch` / `fetch_async` asks Redis).
    fn lookup_local<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> Option<Bound<'py, PyBytes>> {
        self.cache
            .lookup_local(prompt.0, llm_string.0)
            .map(|value| bytes(py, &value))
    }

    /// After an L1 miss: the bytes Redis holds for this prompt under this cache's label
    /// (filling L1), or None; None at once when not shared. Raises ValueError as `lookup`.
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Some(fetch) = self.cache.fetch(prompt.0, llm_string.0) else {
            return Ok(None);
        };
        let value = py.detach(|| fetch.blocking()).map_err(unreadable)?;
        Ok(value.map(|value| bytes(py, &value)))
    }

    /// `fetch` as an awaitable.
    fn fetch_async<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fetch = self.cache.fetch(prompt.0, llm_string.0);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let value = match fetch {
                Some(fetch) => fetch.run().await.map_err(unreadable)?,
                None => None,
            };
            Python::attach(|py| Ok(value.map(|v| bytes(py, &v).unbind())))
        })
    }

    /// After L1 misses: what Redis holds for each prompt under this cache's label (filling
    /// L1), in order, read in one round trip with the GIL released; all None at once when
    /// not shared. A miss and an unreadable entry (counted in `l2_errors`) are None.
    fn fetch_many<'py>(
        &self,
        py: Python<'py>,
        prompts: &Bound<'py, PyAny>,
        llm_string: LlmString<'_>,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let prompts = args::texts("prompts", prompts)?;
        let Some(fetch) = self
            .cache
            .fetch_many(prompts.iter().map(String::as_str), llm_string.0)
        else {
            return Ok(vec![None; prompts.len()]);
        };
        let fetched = py.detach(|| fetch.blocking());
        Ok(found_bytes(py, fetched))
    }

    /// `fetch_many` as an awaitable.
    fn fetch_many_async<'py>(
        &self,
        py: Python<'py>,
        prompts: &Bound<'py, PyAny>,
        llm_string: LlmString<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let prompts = args::texts("prompts", prompts)?;
        let count = prompts.len();
        let fetch = self
            .cache
            .fetch_many(prompts.iter().map(String::as_str), llm_string.0);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let fetched = match fetch {
                Some(fetch) => fetch.run().await,
                None => vec![Ok(None); count],
            };
            Python::attach(|py| {
                Ok(found_bytes(py, fetched)
                    .into_iter()
                    .map(|v| v.map(Bound::unbind))
                    .collect::<Vec<_>>())
            })
        })
    }

    /// Store bytes for each prompt in L1 at once; when shared, the one Redis write of them
    /// all to send (`PendingWrite`), else None.
    fn insert_many(
        &self,
        prompts: &Bound<'_, PyAny>,
        llm_string: LlmString<'_>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PendingWrite>> {
        let prompts = args::texts("prompts", prompts)?;
        let values = self::values("values", values)?;
        if prompts.len() != values.len() {
            return Err(config_error(format!(
                "{} prompts but {} values",
                prompts.len(),
                values.len()
            )));
        }
        let entries = prompts.iter().map(String::as_str).zip(values);
        Ok(self
            .cache
            .insert_many(entries, llm_string.0)
            .map(|write| PendingWrite {
                write: Mutex::new(Some(write)),
            }))
    }

    /// Store bytes for this prompt, replacing what was there; when shared also in Redis
    /// (the GIL released around the write). False when Redis could not take it.
    fn update(
        &self,
        py: Python<'_>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
        value: &[u8],
    ) -> bool {
        match self.cache.insert(prompt.0, llm_string.0, value.into()) {
            Some(write) => py.detach(|| write.blocking()),
            None => true,
        }
    }

    /// `update` with the Redis write as an awaitable (L1 holds the value at once).
    fn update_async<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
        value: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        let write = self.cache.insert(prompt.0, llm_string.0, value.into());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(match write {
                Some(write) => write.run().await,
                None => true,
            })
        })
    }

    /// A value from `lookup`/`fetch` whose bytes the caller could not read: dropped from L1,
    /// counted a miss (from L1) or an `l2_errors` (`shared`: found in Redis).
    #[pyo3(signature = (prompt, llm_string, shared=false))]
    fn unreadable(&self, prompt: &str, llm_string: &str, shared: bool) {
        let tier = if shared { Tier::Shared } else { Tier::Local };
        self.cache.unreadable(prompt, llm_string, tier);
    }

    /// The Redis key of this prompt's entry (under the namespace and its clear counter).
    fn l2_key(&self, prompt: &str, llm_string: &str) -> PyResult<String> {
        self.cache
            .l2_key(prompt, llm_string)
            .ok_or_else(Self::not_shared)
    }

    /// (key, value) this cache stores in Redis for this prompt: the value sealed with its
    /// label.
    fn l2_entry<'py>(
        &self,
        py: Python<'py>,
        prompt: &str,
        llm_string: &str,
        value: &[u8],
    ) -> PyResult<(String, Bound<'py, PyBytes>)> {
        let (key, sealed) = self
            .cache
            .l2_entry(prompt, llm_string, value)
            .ok_or_else(Self::not_shared)?;
        Ok((key, bytes(py, &sealed)))
    }

    /// Forget the entry for this prompt, if any (L1).
    fn remove(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>) {
        self.cache.remove(prompt.0, llm_string.0);
    }

    /// Empty the cache; with a store, every process's entries under this namespace go too
    /// (the namespace's clear counter moves on; others see it within a poll).
    fn clear(&self, py: Python<'_>) {
        py.detach(|| self.cache.clear());
    }

    /// The normalised key of a prompt, as an int (for debugging and tests).
    fn key_of(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>) -> u128 {
        self.cache.key_of(prompt.0, llm_string.0)
    }

    /// Entries are keyed under the namespace; setting a new one drops everything under the old.
    #[getter]
    fn namespace(&self) -> String {
        self.cache.namespace()
    }

    #[setter]
    fn set_namespace(&self, py: Python<'_>, namespace: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = crate::namespace::text(namespace)?;
        py.detach(|| self.cache.set_namespace(&name));
        Ok(())
    }

    /// Counters: hits, misses, evictions, entries, bytes (L1); with a store also l2_hits,
    /// l2_misses and l2_errors (L1 misses answered from Redis, not found there, unreadable
    /// there).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cache.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.l1.hits)?;
        d.set_item("misses", s.l1.misses)?;
        d.set_item("evictions", s.l1.evictions)?;
        d.set_item("entries", s.l1.entries)?;
        d.set_item("bytes", s.l1.bytes)?;
        if let Some(l2) = s.l2 {
            d.set_item("l2_hits", l2.hits)?;
            d.set_item("l2_misses", l2.misses)?;
            d.set_item("l2_errors", l2.errors)?;
        }
        Ok(d)
    }
}

/// The key langscale uses for (namespace, llm_string, prompt).
#[pyfunction]
fn cache_key(
    namespace: &Bound<'_, PyAny>,
    llm_string: LlmString<'_>,
    prompt: Prompt<'_>,
) -> PyResult<u128> {
    let namespace = args::text("namespace", namespace)?;
    Ok(cache::cache_key(namespace, llm_string.0, prompt.0))
}

/// The prompt as it is hashed: volatile ids and metadata removed, tool-call ids renumbered.
#[pyfunction]
fn canonical_prompt(prompt: Prompt<'_>) -> String {
    cache::canonical_prompt(prompt.0)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ExactCache>()?;
    m.add_class::<PendingWrite>()?;
    m.add_function(wrap_pyfunction!(cache_key, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_prompt, m)?)?;
    Ok(())
}
