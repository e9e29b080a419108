//! The `namespace=` argument of both caches: a str, kept in the core's `Namespace`.

use langscale_core::cache::Namespace;
use pyo3::prelude::*;

use crate::args;

/// The namespace named by a Python value that must be a str.
pub fn from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Namespace> {
    Ok(match value {
        Some(value) => Namespace::new(text(value)?),
        None => Namespace::default(),
    })
}

pub fn text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    args::text("namespace", value).map(str::to_owned)
}
