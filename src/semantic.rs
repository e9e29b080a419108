//! Python face of the core semantic cache. With the built-in embedder everything runs here in
//! one call; with a LangChain `Embeddings` the Python layer embeds the text this module
//! extracts and passes the vector in.

use std::sync::{Arc, OnceLock};

use langscale_core::cache::{self, Namespace, Outcome, Replica, SemanticConfig};
use langscale_core::embed as cache_embed;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::args::{self, LlmString, Prompt, Text};
use crate::errors::{config_error, CoreError, LangscaleError};
use crate::namespace;

/// What a lookup found: (kind, value, similarity, matched text, guard reason, entry key).
/// kind is "exact", "semantic" or "miss"; the key (of the entry that answered) is what
/// `unreadable` takes when the caller cannot read the value.
type Found<'py> = (
    &'static str,
    Option<Bound<'py, PyBytes>>,
    Option<f32>,
    Option<String>,
    Option<&'static str>,
    Option<u128>,
);

/// A prompt split once (exact key, scope key, the text compared by similarity), for a lookup
/// that goes through several calls (exact layer, then an embedding in Python, then the index).
#[pyclass(frozen, module = "langscale._core")]
pub struct SplitPrompt {
    scoped: cache::Scoped,
}

#[pymethods]
impl SplitPrompt {
    /// The text compared by similarity: the last user turn, or a plain prompt whole.
    #[getter]
    fn text(&self) -> String {
        self.scoped.text.clone()
    }
}

/// Exact + semantic cache: exact layer, per-scope vector index, guard.
#[pyclass(frozen, module = "langscale._core")]
pub struct SemanticCache {
    cache: cache::SemanticCache,
    namespace: Namespace,
    builtin: bool,
    shared: OnceLock<Replica>,
}

fn found<'py>(py: Python<'py>, scoped: &cache::Scoped, outcome: Outcome) -> Found<'py> {
    match outcome {
        Outcome::Exact(value) => (
            "exact",
            Some(PyBytes::new(py, &value)),
            Some(1.0),
            None,
            None,
            Some(scoped.exact),
        ),
        Outcome::Semantic {
            value,
            similarity,
            matched,
            key,
        } => (
            "semantic",
            Some(PyBytes::new(py, &value)),
            Some(similarity),
            Some(matched),
            None,
            Some(key),
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
            None,
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
    #[pyo3(signature = (threshold=None, maxsize=None, ttl=None, guard=None, namespace=None, builtin=true, flat_max=None, candidates=None, embedder=None, surface_threshold=None))]
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
        surface_threshold: Option<&Bound<'_, PyAny>>,
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
            // Hybrid only beside another embedder: the built-in one is the surface already.
            surface_threshold: args::number("surface_threshold", surface_threshold)?
                .filter(|_| has_embedder)
                .map(|t| t as f32),
            ..defaults
        };
        let cache = match embedder {
            Some(embedder) => cache::SemanticCache::with_embedder(config, embedder),
            None => cache::SemanticCache::new(config),
        }
        .map_err(CoreError::from)?;
        Ok(Self {
            cache,
            namespace: namespace::from_py(namespace)?,
            builtin: builtin || has_embedder,
            shared: OnceLock::new(),
        })
    }

    /// Share entries through `stream`: every update and clear is published there labelled
    /// with this cache's namespace and the store's tenant, and `apply_shared` takes in what
    /// other processes published under the same label. Once per cache.
    fn share(&self, stream: &crate::store::IndexStream) -> PyResult<()> {
        self.shared
            .set(Replica::new(Arc::clone(&stream.stream)))
            .map_err(|_| config_error("this cache already shares through a stream"))
    }

    /// Apply up to a batch of what other processes stored or cleared under this cache's
    /// label since the last call; the others are skipped. Returns why each unreadable event
    /// was skipped (they are counted in `l2_errors`).
    fn apply_shared(&self, py: Python<'_>) -> Vec<String> {
        let Some(shared) = self.shared.get() else {
            return Vec::new();
        };
        py.detach(|| {
            shared.apply_pending(&self.cache, &self.namespace, |scoped, vector| {
                self.vector_for(scoped, vector)
            })
        })
    }

    /// A hit (its kind and key from `lookup`) whose value the caller could not read: the
    /// entry goes and the lookup counts as a miss and an `l2_errors`.
    fn unreadable(&self, kind: &str, key: u128) {
        self.cache.unreadable(key, kind == "semantic");
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

    /// The n-gram threshold of a hybrid cache (None: the embedder's similarity alone).
    #[getter]
    fn surface_threshold(&self) -> Option<f32> {
        self.cache.config().surface_threshold
    }

    /// The text compared by similarity: the last user turn, or a plain prompt whole.
    fn text_of(&self, prompt: Prompt<'_>) -> String {
        cache::split_prompt("", "", prompt.0).text
    }

    /// Split `prompt` once for `lookup_exact_split` and `lookup_split` (under this cache's
    /// namespace now).
    fn split_prompt(&self, prompt: Prompt<'_>, llm_string: LlmString<'_>) -> SplitPrompt {
        SplitPrompt {
            scoped: self.split(prompt.0, llm_string.0),
        }
    }

    /// `lookup_exact` for a prompt split by `split_prompt`.
    fn lookup_exact_split<'py>(&self, py: Python<'py>, split: &SplitPrompt) -> Option<Found<'py>> {
        self.cache
            .lookup_exact(&split.scoped)
            .map(|v| found(py, &split.scoped, Outcome::Exact(v)))
    }

    /// `lookup` for a prompt split by `split_prompt`.
    #[pyo3(signature = (split, vector=None))]
    fn lookup_split<'py>(
        &self,
        py: Python<'py>,
        split: &SplitPrompt,
        vector: Option<Vec<f32>>,
    ) -> Found<'py> {
        let scoped = &split.scoped;
        let outcome = py.detach(|| {
            let vector = self.vector_for(scoped, vector);
            self.cache.lookup(scoped, vector.as_deref())
        });
        found(py, scoped, outcome)
    }

    /// Exact layer only: what `lookup` returns for an exact hit, or None (not counted).
    fn lookup_exact<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
    ) -> Option<Found<'py>> {
        let scoped = self.split(prompt.0, llm_string.0);
        self.cache
            .lookup_exact(&scoped)
            .map(|v| found(py, &scoped, Outcome::Exact(v)))
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
        found(py, &scoped, outcome)
    }

    /// Store bytes for this prompt; indexed under `vector` (or the built-in embedding).
    /// A shared cache also publishes it, labelled with the namespace it was stored under.
    #[pyo3(signature = (prompt, llm_string, value, vector=None))]
    fn update(
        &self,
        py: Python<'_>,
        prompt: Prompt<'_>,
        llm_string: LlmString<'_>,
        value: &[u8],
        vector: Option<Vec<f32>>,
    ) -> PyResult<()> {
        let (scoped, namespace) = {
            let namespace = self.namespace.read();
            (
                cache::split_prompt(&namespace, llm_string.0, prompt.0),
                namespace.clone(),
            )
        };
        let stored = py.detach(|| {
            let indexed = self.vector_for(&scoped, vector.clone());
            self.cache.insert(&scoped, indexed.as_deref(), value.into())
        });
        stored.map_err(CoreError::from)?;
        if let Some(shared) = self.shared.get() {
            let ttl = self.cache.config().ttl;
            shared.publish_entry(&namespace, prompt.0, llm_string.0, value, vector, ttl);
        }
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

    /// Drop every entry; a shared cache tells the others to drop theirs under this
    /// namespace (and only this one).
    fn clear(&self) {
        let namespace = self.namespace.read();
        self.cache.clear();
        if let Some(shared) = self.shared.get() {
            shared.publish_clear(&namespace);
        }
    }

    #[getter]
    fn namespace(&self) -> String {
        self.namespace.read().clone()
    }

    #[setter]
    fn set_namespace(&self, namespace: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = crate::namespace::text(namespace)?;
        self.namespace.replace(&name, || {
            self.cache.clear();
            // What others stored under the new name was skipped so far: read it again.
            if let Some(shared) = self.shared.get() {
                shared.rewind();
            }
        });
        Ok(())
    }

    /// Counters: exact_hits, semantic_hits, guard_rejections, misses, l2_errors, entries,
    /// scopes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.cache.stats();
        let d = PyDict::new(py);
        d.set_item("exact_hits", s.exact_hits)?;
        d.set_item("semantic_hits", s.semantic_hits)?;
        d.set_item("guard_rejections", s.guard_rejections)?;
        d.set_item("misses", s.misses)?;
        d.set_item("l2_errors", s.l2_errors)?;
        d.set_item("entries", s.entries)?;
        d.set_item("scopes", s.scopes)?;
        Ok(d)
    }
}

// For request coalescing (`coalesce.rs`): a question in flight as this cache compares it.
impl SemanticCache {
    /// The core cache, whose rule decides which question in flight answers which.
    pub(crate) fn core(&self) -> &cache::SemanticCache {
        &self.cache
    }

    /// `split` as the cache compares it, embedded as a lookup would be: `vector`, else by the
    /// cache's own embedder when it uses one (when a comparison first needs it).
    pub(crate) fn probe(&self, split: &SplitPrompt, vector: Option<Vec<f32>>) -> cache::Probe {
        match vector {
            Some(v) => self.cache.probe(&split.scoped, Some(&v)),
            None if self.builtin => self.cache.probe_own(&split.scoped),
            None => self.cache.probe(&split.scoped, None),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SemanticCache>()?;
    m.add_class::<SplitPrompt>()?;
    Ok(())
}
