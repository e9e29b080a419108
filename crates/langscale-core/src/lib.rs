//! langscale-core: everything on langscale's hot path, with no knowledge of Python.
//!
//! `limit` owns rate limiting (GCRA buckets, concurrency, priority waiting), `cache` owns
//! the caches and their key normalisation, `route` owns routing across deployments, retries,
//! fallbacks, circuit breakers and hedging. Time is injected through [`clock::Clock`].

pub mod cache;
pub mod clock;
pub mod embed;
pub mod limit;
pub mod provider;
pub mod route;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spend;
pub mod store;
pub mod tokens;
