//! Python face of the core exact cache. Values are opaque bytes here; the Python layer
//! encodes LangChain generations into them (data only, never pickle).

use langscale_core::cache::{self, ExactCacheConfig};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args::{self, LlmString, Prompt};
use crate::errors::CoreError;
use crate::namespace::Namespace;

/// Bounded (TinyLFU) exact cache with TTL, keyed by a normalised prompt.
#[pyclass(frozen, module = "langscale._core")]
pub struct ExactCache {
    cache: cache::ExactCache,
    namespace: Namespace,
}

impl ExactCache {
    fn key(&self, prompt: &str, llm_string: &str) -> cache::CacheKey {
        let namespace = self.namespace.read();
        cache::cache_key(&namespace, llm_string, prompt)
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
        })
    }

    /// The stored bytes for this prompt, or None.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> Option<Bound<'py, PyBytes>> {
        let key = self.key(prompt.0, llm_string.0);
        self.cache.get(key).map(|value| PyBytes::new(py, &value))
    }

    /// Store bytes for this prompt, replacing what was there.
    fn update(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>, value: &[u8]) {
        let key = self.key(prompt.0, llm_string.0);
        self.cache.insert(key, value.into());
    }

    /// Forget the entry for this prompt, if any.
    fn remove(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>) {
        self.cache.remove(self.key(prompt.0, llm_string.0));
    }

    /// Empty the cache.
    fn clear(&self) {
        self.cache.clear();
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
    fn set_namespace(&self, namespace: &Bound<'_, PyAny>) -> PyResult<()> {
        self.namespace.replace(namespace, || self.cache.clear())
    }

    /// Counters: hits, misses, evictions, entries, bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cache.stats();
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("entries", s.entries)?;
        d.set_item("bytes", s.bytes)?;
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
