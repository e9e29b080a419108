//! Python face of the core exact cache. Values are opaque bytes here; the Python layer
//! encodes LangChain generations into them (data only, never pickle).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use langscale_core::cache::{self, shared, ExactCacheConfig, Label};
use langscale_core::store::{Epoch, Store};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args::{self, LlmString, Prompt};
use crate::errors::{config_error, CoreError};
use crate::namespace::Namespace;
use crate::store::RedisStore;

/// Bounded (TinyLFU) exact cache with TTL, keyed by a normalised prompt.
#[pyclass(frozen, module = "langscale._core")]
pub struct ExactCache {
    cache: cache::ExactCache,
    namespace: Namespace,
    l2: OnceLock<L2>,
}

/// The Redis layer: values sealed with their label (namespace, tenant) under keys that carry
/// the namespace's clear counter, so a `clear()` anywhere makes older entries unreachable.
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
    fn clears(&self) -> Arc<Epoch> {
        Arc::clone(&self.clears.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Start watching the clear counter of `namespace` (waits for its first read).
    fn watch(store: &Store, namespace: &str) -> Arc<Epoch> {
        let key = format!(
            "exact-clears:{:032x}",
            cache::cache_key(namespace, "\u{0}langscale:clears", "")
        );
        Arc::new(Epoch::start(store.clone(), store.key(&key, "")))
    }

    /// Key entries by `clears` from now on (L1 holds none of them yet).
    fn install(&self, clears: Arc<Epoch>) {
        self.seen.store(clears.current(), Ordering::SeqCst);
        *self.clears.lock().unwrap_or_else(PoisonError::into_inner) = clears;
    }

    fn label(&self, namespace: &str) -> Label {
        Label::new(namespace, self.store.config().tenant.as_deref())
    }
}

impl ExactCache {
    fn key(&self, prompt: &str, llm_string: &str) -> cache::CacheKey {
        let namespace = self.namespace.read();
        cache::cache_key(&namespace, llm_string, prompt)
    }

    /// Empty L1 when another process cleared this namespace since L1 was filled.
    fn sync(&self) {
        if let Some(l2) = self.l2.get() {
            let now = l2.clears().current();
            if l2.seen.swap(now, Ordering::SeqCst) != now {
                self.cache.clear();
            }
        }
    }

    fn l2(&self) -> PyResult<&L2> {
        self.l2
            .get()
            .ok_or_else(|| config_error("this cache has no store (give store= or redis_url=)"))
    }

    fn l2_key_under(l2: &L2, namespace: &str, prompt: &str, llm_string: &str) -> String {
        let key = cache::cache_key(namespace, llm_string, prompt);
        l2.store
            .key(&format!("exact:{}:{key:032x}", l2.clears().current()), "")
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
        let cache = cache::ExactCache::new(config).map_err(CoreError::from)?;
        Ok(Self {
            cache,
            namespace: match namespace {
                Some(value) => Namespace::from_py(value)?,
                None => Namespace::default(),
            },
            l2: OnceLock::new(),
        })
    }

    /// Share entries through `store` (once per cache): the Python layer reads and writes
    /// them with `l2_key`, `l2_entry`, `l2_open` and `l2_fill`; `clear()` reaches every
    /// process.
    fn share(&self, py: Python<'_>, store: &RedisStore) -> PyResult<()> {
        // No lock is held while the GIL is released (a thread holding the GIL may be waiting
        // for one), so the namespace is read first.
        let namespace = self.namespace.read().clone();
        let clears = py.detach(|| L2::watch(&store.store, &namespace));
        let l2 = L2 {
            store: store.store.clone(),
            seen: AtomicU64::new(clears.current()),
            clears: Mutex::new(clears),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        self.l2
            .set(l2)
            .map_err(|_| config_error("this cache already has a store"))
    }

    /// The stored bytes for this prompt, or None.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> Option<Bound<'py, PyBytes>> {
        self.sync();
        let key = self.key(prompt.0, llm_string.0);
        self.cache.get(key).map(|value| PyBytes::new(py, &value))
    }

    /// Store bytes for this prompt, replacing what was there.
    fn update(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>, value: &[u8]) {
        self.sync();
        let key = self.key(prompt.0, llm_string.0);
        self.cache.insert(key, value.into());
    }

    /// A hit from `lookup` whose bytes the caller could not read: dropped, counted a miss.
    fn unreadable(&self, prompt: &str, llm_string: &str) {
        self.cache.unreadable(self.key(prompt, llm_string));
    }

    /// The Redis key of this prompt's entry (under the namespace and its clear counter).
    fn l2_key(&self, prompt: &str, llm_string: &str) -> PyResult<String> {
        let l2 = self.l2()?;
        let namespace = self.namespace.read();
        Ok(Self::l2_key_under(l2, &namespace, prompt, llm_string))
    }

    /// (key, value) to store in Redis for this prompt: the value sealed with its label.
    fn l2_entry<'py>(
        &self,
        py: Python<'py>,
        prompt: &str,
        llm_string: &str,
        value: &[u8],
    ) -> PyResult<(String, Bound<'py, PyBytes>)> {
        let l2 = self.l2()?;
        let namespace = self.namespace.read();
        let key = Self::l2_key_under(l2, &namespace, prompt, llm_string);
        let sealed = shared::seal(&l2.label(&namespace), value);
        Ok((key, PyBytes::new(py, &sealed)))
    }

    /// The codec bytes of a value read from Redis when it is labelled with this cache's
    /// namespace and tenant; None (counted as an L2 miss) when nothing was there or it is
    /// labelled otherwise. Raises ValueError for a value that is not a langscale entry (the
    /// caller counts it with `l2_unreadable`).
    fn l2_open<'py>(
        &self,
        py: Python<'py>,
        value: Option<&[u8]>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let l2 = self.l2()?;
        let Some(value) = value else {
            l2.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let (label, payload) = shared::open(value).map_err(|e| PyValueError::new_err(e.0))?;
        if !label.is_for(&l2.label(&self.namespace.read())) {
            l2.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(PyBytes::new(py, payload)))
    }

    /// Put a value read from Redis (and readable) into L1, under its own label: only while
    /// that label is still this cache's (a namespace change meanwhile makes it a miss).
    /// Counts the L2 hit or miss; True when filled.
    fn l2_fill(&self, prompt: &str, llm_string: &str, value: &[u8]) -> PyResult<bool> {
        let l2 = self.l2()?;
        let (label, payload) = shared::open(value).map_err(|e| PyValueError::new_err(e.0))?;
        let namespace = self.namespace.read();
        if !label.is_for(&l2.label(&namespace)) {
            l2.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let key = cache::cache_key(&label.namespace, llm_string, prompt);
        self.cache.insert(key, payload.into());
        l2.hits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Count an entry read from Redis that could not be read (`l2_errors`).
    fn l2_unreadable(&self) -> PyResult<()> {
        self.l2()?.errors.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Forget the entry for this prompt, if any.
    fn remove(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>) {
        self.cache.remove(self.key(prompt.0, llm_string.0));
    }

    /// Empty the cache; with a store, every process's entries under this namespace go too
    /// (the namespace's clear counter moves on; others see it within a poll).
    fn clear(&self, py: Python<'_>) {
        self.cache.clear();
        if let Some(l2) = self.l2.get() {
            let clears = l2.clears();
            if let Ok(now) = py.detach(|| clears.bump()) {
                l2.seen.store(now, Ordering::SeqCst);
            }
        }
    }

    /// The normalised key of a prompt, as an int (for debugging and tests).
    fn key_of(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>) -> u128 {
        self.key(prompt.0, llm_string.0)
    }

    /// Entries are keyed under the namespace; setting a new one drops everything under the old.
    #[getter]
    fn namespace(&self) -> String {
        self.namespace.read().clone()
    }

    #[setter]
    fn set_namespace(&self, py: Python<'_>, namespace: &Bound<'_, PyAny>) -> PyResult<()> {
        // The new name's clear counter is read before taking the lock (never held while the
        // GIL is released): a rename then swaps it in with the name, atomically for lookups.
        let name = Namespace::text(namespace)?;
        let clears = match self.l2.get() {
            Some(l2) if *self.namespace.read() != name => {
                Some(py.detach(|| L2::watch(&l2.store, &name)))
            }
            _ => None,
        };
        self.namespace.replace(namespace, || {
            self.cache.clear();
            if let (Some(l2), Some(clears)) = (self.l2.get(), clears) {
                l2.install(clears);
            }
        })
    }

    /// Counters: hits, misses, evictions, entries, bytes (L1); with a store also l2_hits,
    /// l2_misses and l2_errors (L1 misses answered from Redis, not found there, unreadable
    /// there).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cache.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("entries", s.entries)?;
        d.set_item("bytes", s.bytes)?;
        if let Some(l2) = self.l2.get() {
            d.set_item("l2_hits", l2.hits.load(Ordering::Relaxed))?;
            d.set_item("l2_misses", l2.misses.load(Ordering::Relaxed))?;
            d.set_item("l2_errors", l2.errors.load(Ordering::Relaxed))?;
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
    m.add_function(wrap_pyfunction!(cache_key, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_prompt, m)?)?;
    Ok(())
}
