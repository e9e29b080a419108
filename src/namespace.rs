//! The namespace both caches key entries under: read on every lookup, replaced rarely
//! (a replacement tells the caller so it can drop what was stored under the old one).

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use pyo3::prelude::*;

use crate::args;

#[derive(Debug, Default)]
pub struct Namespace(RwLock<String>);

impl Namespace {
    /// From a Python value that must be a str.
    pub fn from_py(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self(RwLock::new(Self::text(value)?)))
    }

    pub fn text(value: &Bound<'_, PyAny>) -> PyResult<String> {
        args::text("namespace", value).map(str::to_owned)
    }

    pub fn read(&self) -> RwLockReadGuard<'_, String> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace it; `on_change` runs (under the lock, so no lookup sees the new name with old
    /// entries) only when the name really changes.
    pub fn replace(&self, value: &Bound<'_, PyAny>, on_change: impl FnOnce()) -> PyResult<()> {
        let value = Self::text(value)?;
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if *current != value {
            *current = value;
            on_change();
        }
        Ok(())
    }
}
