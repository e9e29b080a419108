//! Sentence embedders behind one trait: the semantic cache asks an [`Embedder`] for vectors
//! without knowing whether they come from the hashed n-gram embedder or a real model.
//! `minilm` (cargo feature `minilm`) runs all-MiniLM-L6-v2 on candle from local files.

#[cfg(feature = "minilm")]
mod bert;
#[cfg(feature = "minilm")]
pub mod minilm;

use std::fmt::Debug;

#[cfg(feature = "minilm")]
pub use minilm::{MiniLm, MiniLmConfig};

/// Why an embedding could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing or unreadable.
    #[error("{what} not found at {path}")]
    Missing { what: &'static str, path: String },
    /// A model file was read but is not what the model needs.
    #[error("invalid model files: {0}")]
    Invalid(String),
    /// A bad argument (batch size, sequence length).
    #[error("{0}")]
    Config(String),
    /// The tokenizer or the tensor code failed.
    #[error("embedding failed: {0}")]
    Compute(String),
}

/// Something that turns texts into L2-normalised vectors of a fixed dimension. Shared by many
/// threads at once.
pub trait Embedder: Send + Sync + Debug {
    /// Length of every vector it returns.
    fn dim(&self) -> usize;

    /// Cosine similarity from which a cached answer may be offered, measured for this embedder.
    fn default_threshold(&self) -> f32;

    /// The embedding of one text.
    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError>;

    /// The embeddings of many texts, in order (batched where the embedder gains from it).
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts.iter().map(|t| self.embed(t)).collect()
    }
}

impl Embedder for crate::cache::embed::HashEmbedder {
    fn dim(&self) -> usize {
        Self::dim(self)
    }

    fn default_threshold(&self) -> f32 {
        Self::DEFAULT_THRESHOLD
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(Self::embed(self, text))
    }
}
