//! Caches: the exact cache (moka) and the key normalisation that makes LangChain prompts hit,
//! and the semantic cache: scope split, built-in embedder, guard, per-scope vector index.
//! `key` turns `(namespace, llm_string, prompt)` into a 128-bit key with volatile ids and
//! metadata normalised away; `exact` stores serialized results under those keys; `shared`
//! is what travels between processes (labelled with namespace and tenant).

pub mod coalesce;
pub mod embed;
pub mod exact;
pub mod guard;
pub mod hnsw;
pub mod index;
pub mod key;
pub mod near_flights;
pub mod scope;
pub mod semantic;
pub mod shared;
pub(crate) mod text;

pub use exact::{CacheError, CacheStats, ExactCache, ExactCacheConfig};
pub use key::{cache_key, canonical_prompt, CacheKey};
pub use scope::{split_prompt, Scoped};
pub use semantic::{Outcome, Probe, SemanticCache, SemanticConfig, SemanticStats};
pub use shared::{Label, SharedEntry, SharedEvent, Unreadable};
