//! Python face of the local sentence-embedding model (cargo feature `minilm`): loads the
//! files once, checks arguments, releases the GIL around tokenising and the forward pass.

use std::path::PathBuf;
use std::sync::Arc;

use langscale_core::embed::{EmbedError, Embedder, MiniLm, MiniLmConfig};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::args::{self, Text};
use crate::errors::{config_error, LangscaleError};

/// A sentence-transformers BERT model (all-MiniLM-L6-v2) run by candle on the CPU.
#[pyclass(frozen, module = "langscale._core")]
pub struct LocalEmbeddings {
    model: Arc<MiniLm>,
}

impl LocalEmbeddings {
    /// The shared model, for a `SemanticCache` that embeds from Rust.
    pub fn embedder(&self) -> Arc<dyn Embedder> {
        Arc::clone(&self.model) as Arc<dyn Embedder>
    }
}

fn embed_error(err: &EmbedError) -> PyErr {
    match err {
        EmbedError::Compute(_) => LangscaleError::new_err(err.to_string()),
        EmbedError::Missing { .. } | EmbedError::Invalid(_) | EmbedError::Config(_) => {
            config_error(err.to_string())
        }
    }
}

/// A model directory: a str or an os.PathLike.
fn path(value: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    if value.is_instance_of::<PyString>() {
        return args::text("path", value).map(PathBuf::from);
    }
    value.extract::<PathBuf>().map_err(|_| {
        config_error(format!(
            "path must be a str or an os.PathLike, got {}",
            args::describe(value)
        ))
    })
}

#[pymethods]
impl LocalEmbeddings {
    /// Load the model from a directory holding config.json, tokenizer.json and
    /// model.safetensors (the GIL is released while reading and building it).
    #[new]
    #[pyo3(signature = (path, batch_size=None, max_seq_length=None))]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        batch_size: Option<&Bound<'_, PyAny>>,
        max_seq_length: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let path = self::path(path)?;
        let defaults = MiniLmConfig::default();
        let config = MiniLmConfig {
            batch_size: args::positive_count("batch_size", batch_size)?
                .map_or(defaults.batch_size, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX).min(1 << 16)
                }),
            max_seq_length: args::positive_count("max_seq_length", max_seq_length)?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let model = py
            .detach(|| MiniLm::load(&path, config))
            .map_err(|err| embed_error(&err))?;
        Ok(Self {
            model: Arc::new(model),
        })
    }

    /// The default similarity threshold of this model in a `SemanticCache`.
    #[staticmethod]
    fn default_threshold() -> f32 {
        MiniLm::DEFAULT_THRESHOLD
    }

    #[getter]
    fn dim(&self) -> usize {
        self.model.dim()
    }

    #[getter]
    fn path(&self) -> String {
        self.model.dir().display().to_string()
    }

    #[getter]
    fn batch_size(&self) -> usize {
        self.model.batch_size()
    }

    #[getter]
    fn max_seq_length(&self) -> usize {
        self.model.max_seq_length()
    }

    /// Token ids of a text as the model sees it (special tokens added, truncated).
    fn tokenize(&self, py: Python<'_>, text: Text<'_>) -> PyResult<Vec<u32>> {
        py.detach(|| self.model.tokenize(text.0))
            .map_err(|err| embed_error(&err))
    }

    /// The normalised embedding of one text.
    fn embed_query(&self, py: Python<'_>, text: Text<'_>) -> PyResult<Vec<f32>> {
        py.detach(|| self.model.embed(text.0))
            .map_err(|err| embed_error(&err))
    }

    /// The normalised embeddings of a list (or tuple) of texts, batched, in order.
    fn embed_documents(&self, py: Python<'_>, texts: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<f32>>> {
        let texts = args::texts("texts", texts)?;
        py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            self.model.embed_batch(&refs)
        })
        .map_err(|err| embed_error(&err))
    }

    fn __repr__(&self) -> String {
        format!(
            "LocalEmbeddings(path={:?}, dim={}, batch_size={}, max_seq_length={})",
            self.model.dir().display().to_string(),
            self.model.dim(),
            self.model.batch_size(),
            self.model.max_seq_length()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LocalEmbeddings>()?;
    Ok(())
}
