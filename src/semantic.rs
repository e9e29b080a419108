//! Python face of the core semantic cache. With the built-in embedder everything runs here in
//! one call; with a LangChain `Embeddings` the Python layer embeds the text this module
//! extracts and passes the vector in.

use std::sync::Arc;

use langscale_core::cache::{self, Outcome, SemanticConfig};
use langscale_core::embed as cache_embed;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args::{self, LlmString, Prompt, Text};
use crate::errors::{config_error, CoreError, LangscaleError};
use crate::namespace::Namespace;

/// What a lookup found: (kind, value, similarity, matched text, guard reason).
/// kind is "exact", "semantic" or "miss".
type Found<'py> = (
    &'static str,
    Option<Bound<'py, PyBytes>>,
    Option<f32>,
    Option<String>,
    Option<&'static str>,
);

/// Exact + semantic cache: exact layer, per-scope vector index, guard.
#[pyclass(frozen, module = "langscale._core")]
pub struct SemanticCache {
    cache: cache::SemanticCache,
    namespace: Namespace,
    builtin: bool,
}

fn found<'py>(py: Python<'py>, outcome: Outcome) -> Found<'py> {
    match outcome {
        Outcome::Exact(value) => (
            "exact",
            Some(PyBytes::new(py, &value)),
            Some(1.0),
            None,
            None,
        ),
        Outcome::Semantic {
            value,
            similarity,
            matched,
        } => (
            "semantic",
            Some(PyBytes::new(py, &value)),
            Some(similarity),
            Some(matched),
            None,
        ),
        Outcome::Miss {
            rejected,
            best_similarity,
        } => (
            "miss",
            None,
            best_similarity,
            None,
            rejected.map(cache::guard::Conflict::as_str),
        ),
    }
}

/// The Rust embedder behind a `LocalEmbeddings` passed as `embedder`.
fn native_embedder(
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Arc<dyn cache_embed::Embedder>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    #[cfg(feature = "minilm")]
    if let Ok(local) = value.cast::<crate::embeddings::LocalEmbeddings>() {
        return Ok(Some(local.get().embedder()));
    }
    Err(config_error(format!(
        "embedder must be a langscale._core.LocalEmbeddings, got {}",
        args::describe(value)
    )))
}

impl SemanticCache {
    /// The vector to search or index with: the caller's, or the built-in embedding.
    fn vector_for(&self, scoped: &cache::Scoped, given: Option<Vec<f32>>) -> Option<Arc<[f32]>> {
        match given {
            Some(v) => Some(Arc::from(v)),
            // An embedder that fails on this text leaves it to the exact layer (a miss).
            None if self.builtin => self.cache.embed_builtin(&scoped.text).ok(),
            None => None,
        }
    }

    fn split(&self, prompt: &str, llm_string: &str) -> cache::Scoped {
        let namespace = self.namespace.read();
        cache::split_prompt(&namespace, llm_string, prompt)
    }
}

#[pymethods]
impl SemanticCache {
    #[new]
    #[pyo3(signature = (threshold=None, maxsize=None, ttl=None, guard=None, namespace=None, builtin=true, flat_max=None, candidates=None, embedder=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        threshold: Option<&Bound<'_, PyAny>>,
        maxsize: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        guard: Option<&Bound<'_, PyAny>>,
        namespace: Option<&Bound<'_, PyAny>>,
        builtin: bool,
        flat_max: Option<&Bound<'_, PyAny>>,
        candidates: Option<&Bound<'_, PyAny>>,
        embedder: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let defaults = SemanticConfig::default();
        let embedder = native_embedder(embedder)?;
        let has_embedder = embedder.is_some();
        let default_threshold = embedder
            .as_ref()
            .map_or(defaults.threshold, |e| e.default_threshold());
        let config = SemanticConfig {
            threshold: args::number("threshold", threshold)?
                .map_or(default_threshold, |t| t as f32),
            maxsize: args::positive_count("maxsize", maxsize)?.unwrap_or(defaults.maxsize),
            ttl: args::seconds("ttl", ttl)?,
            guard: guard.map_or(Ok(true), |g| args::flag("guard", g))?,
            flat_max: args::positive_count("flat_max", flat_max)?.map_or(defaults.flat_max, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
            candidates: args::positive_count("candidates", candidates)?
                .map_or(defaults.candidates, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX).min(1024)
                }),
            ..defaults
        };
        let cache = match embedder {
            Some(embedder) => cache::SemanticCache::with_embedder(config, embedder),
            None => cache::SemanticCache::new(config),
        }
        .map_err(CoreError::from)?;
        Ok(Self {
            cache,
            namespace: match namespace {
                Some(value) => Namespace::from_py(value)?,
                None => Namespace::default(),
            },
            builtin: builtin || has_embedder,
        })
    }

    /// The default similarity threshold of the built-in embedder.
    #[staticmethod]
    fn default_threshold() -> f32 {
        SemanticConfig::default().threshold
    }

    #[getter]
    fn threshold(&self) -> f32 {
        self.cache.config().threshold
    }

    /// The text compared by similarity: the last user turn, or a plain prompt whole.
    fn text_of(&self, prompt: Prompt<'_>) -> String {
        cache::split_prompt("", "", prompt.0).text
    }

    /// Exact layer only.
    fn lookup_exact<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> Option<Bound<'py, PyBytes>> {
        let scoped = self.split(prompt.0, llm_string.0);
        self.cache
            .lookup_exact(&scoped)
            .map(|v| PyBytes::new(py, &v))
    }

    /// Exact, then semantic with the given vector (or the built-in embedding when None and
    /// this cache uses the built-in embedder).
    #[pyo3(signature = (prompt, llm_string, vector=None))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
        vector: Option<Vec<f32>>,
    ) -> Found<'py> {
        let scoped = self.split(prompt.0, llm_string.0);
        // Embedding and the index walk take tens of microseconds: let other threads run.
        let outcome = py.detach(|| {
            let vector = self.vector_for(&scoped, vector);
            self.cache.lookup(&scoped, vector.as_deref())
        });
        found(py, outcome)
    }

    /// Store bytes for this prompt; indexed under `vector` (or the built-in embedding).
    #[pyo3(signature = (prompt, llm_string, value, vector=None))]
    fn update(
        &self,
        py: Python<'_>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
        value: &[u8],
        vector: Option<Vec<f32>>,
    ) -> PyResult<()> {
        let scoped = self.split(prompt.0, llm_string.0);
        let value: Arc<[u8]> = value.into();
        let stored = py.detach(|| {
            let vector = self.vector_for(&scoped, vector);
            self.cache.insert(&scoped, vector.as_deref(), value)
        });
        stored.map_err(CoreError::from)?;
        Ok(())
    }

    /// A remembered embedding for this text, if any.
    fn remembered_embedding(&self, text: Text<'_>) -> Option<Vec<f32>> {
        self.cache.remembered_embedding(text.0).map(|v| v.to_vec())
    }

    /// Check (finite, consistent dimension) and remember an embedding; returns it normalised.
    fn remember_embedding(&self, text: Text<'_>, vector: Vec<f32>) -> PyResult<Vec<f32>> {
        let checked = self
            .cache
            .remember_embedding(text.0, &vector)
            .map_err(CoreError::from)?;
        Ok(checked.to_vec())
    }

    /// The embedding of a text by this cache's own embedder (normalised).
    fn embed(&self, py: Python<'_>, text: Text<'_>) -> PyResult<Vec<f32>> {
        py.detach(|| self.cache.embed_builtin(text.0))
            .map(|v| v.to_vec())
            .map_err(|err| LangscaleError::new_err(err.to_string()))
    }

    fn clear(&self) {
        self.cache.clear();
    }

    #[getter]
    fn namespace(&self) -> String {
        self.namespace.read().clone()
    }

    #[setter]
    fn set_namespace(&self, namespace: &Bound<'_, PyAny>) -> PyResult<()> {
        self.namespace.replace(namespace, || self.cache.clear())
    }

    /// Counters: exact_hits, semantic_hits, guard_rejections, misses, entries, scopes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cache.stats();
        let d = PyDict::new(py);
        d.set_item("exact_hits", s.exact_hits)?;
        d.set_item("semantic_hits", s.semantic_hits)?;
        d.set_item("guard_rejections", s.guard_rejections)?;
        d.set_item("misses", s.misses)?;
        d.set_item("entries", s.entries)?;
        d.set_item("scopes", s.scopes)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SemanticCache>()?;
    Ok(())
}
