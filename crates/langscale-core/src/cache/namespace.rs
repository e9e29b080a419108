//! The namespace a cache keys its entries under: read on every lookup, replaced rarely. A
//! replacement runs the caller's change (dropping what was stored under the old name) under
//! the write lock, so no lookup sees the new name with the old entries.

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

#[derive(Debug, Default)]
pub struct Namespace(RwLock<String>);

impl Namespace {
    pub fn new(name: impl Into<String>) -> Self {
        Self(RwLock::new(name.into()))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, String> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace it; `on_change` runs (under the lock) only when the name really changes.
    pub fn replace(&self, name: &str, on_change: impl FnOnce()) {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if *current != name {
            name.clone_into(&mut current);
            on_change();
        }
    }
}
