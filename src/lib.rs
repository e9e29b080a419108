//! The binding layer only: the `langscale._core` module, pyclass wrappers around the core
//! crate, argument checking and error mapping. No logic lives here.

mod args;
mod cache;
mod coalesce;
#[cfg(feature = "minilm")]
mod embeddings;
mod endpoint;
mod errors;
mod graph_cache;
mod limit;
mod namespace;
mod route;
mod semantic;
mod sim;
mod spend;
mod store;
mod tokens;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    limit::register(m)?;
    cache::register(m)?;
    graph_cache::register(m)?;
    coalesce::register(m)?;
    semantic::register(m)?;
    route::register(m)?;
    endpoint::register(m)?;
    sim::register(m)?;
    store::register(m)?;
    spend::register(m)?;
    tokens::register(m)?;
    #[cfg(feature = "minilm")]
    embeddings::register(m)?;
    Ok(())
}
