//! Caches: the exact cache (moka) and the key normalisation that makes LangChain prompts hit.
//! `key` turns `(namespace, llm_string, prompt)` into a 128-bit key with volatile ids and
//! metadata normalised away; `exact` stores serialized results under those keys.

pub mod exact;
pub mod key;

pub use exact::{CacheError, CacheStats, ExactCache, ExactCacheConfig};
pub use key::{cache_key, canonical_prompt, CacheKey};
