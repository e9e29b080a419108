//! Caches: the exact cache (moka) and the key normalisation that makes LangChain prompts hit,
//! and the semantic cache: scope split, built-in embedder, guard, per-scope vector index.
//! `key` turns `(namespace, llm_string, prompt)` into a 128-bit key with volatile ids and
//! metadata normalised away; `exact` stores serialized results under those keys; `shared`
//! is what travels between processes (labelled with namespace and tenant); `tiered` is the
//! exact cache with its Redis tier (L1 fill, labels, clears reaching every process) and
//! `replica` the semantic cache's stream replication; `node` is LangGraph's node cache (L1 and
//! Redis, generations for clears, data only). The vector index (`index`, `hnsw`) is the
//! `langscale-index` crate, re-exported here.

pub mod coalesce;
pub mod embed;
pub mod exact;
pub mod guard;
pub use langscale_index as index;
pub use langscale_index::hnsw;
pub mod key;
pub mod namespace;
pub mod near_flights;
pub mod node;
pub mod replica;
pub mod scope;
pub mod semantic;
pub mod shared;
pub(crate) mod text;
pub mod tiered;

pub use exact::{CacheError, CacheStats, ExactCache, ExactCacheConfig};
pub use key::{cache_key, canonical_prompt, CacheKey};
pub use namespace::Namespace;
pub use node::{NodeCache, NodeKey, NodeStats, NodeValue, NotData};
pub use replica::Replica;
pub use scope::{split_prompt, Scoped};
pub use semantic::{Outcome, Probe, SemanticCache, SemanticConfig, SemanticStats};
pub use shared::{Label, SharedEntry, SharedEvent, Unreadable};
pub use tiered::{
    Fetch, FetchMany, Fetched, Found, L2Stats, Tier, TieredCache, TieredStats, Write,
};
