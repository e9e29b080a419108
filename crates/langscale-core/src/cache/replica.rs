//! A semantic cache shared through a Redis Stream: what this process stores or clears is
//! published labelled with its namespace and the store's tenant; what others published is
//! applied here when labelled with this cache's label now (entries under their own label,
//! with the TTL their expiry stamp leaves), and skipped otherwise. A process that starts late
//! reads the stream from its start, so it catches up with what is there; after a rename it
//! reads it again for what it skipped under the new name.

use std::sync::Arc;
use std::time::Duration;

use super::namespace::Namespace;
use super::semantic::SemanticCache;
use super::shared::{self, Label, SharedEntry, SharedEvent};
use super::{split_prompt, Scoped};
use crate::store::IndexStream;

/// Events from other processes applied per [`Replica::apply_pending`] call, at most: a late
/// starter catches up over many lookups, so no one lookup pays for indexing a long stream.
pub const APPLY_BATCH: usize = 512;

/// The stream one semantic cache publishes to and tails.
#[derive(Debug)]
pub struct Replica {
    stream: Arc<IndexStream>,
    tenant: Option<String>,
}

impl Replica {
    pub fn new(stream: Arc<IndexStream>) -> Self {
        Self {
            tenant: stream.tenant().map(str::to_owned),
            stream,
        }
    }

    pub fn stream(&self) -> &Arc<IndexStream> {
        &self.stream
    }

    /// The label of what this process stores under `namespace`.
    pub fn label(&self, namespace: &str) -> Label {
        Label::new(namespace, self.tenant.as_deref())
    }

    /// Tell the others about an entry stored here under `namespace`, expiring after `ttl`
    /// from now in every process. Only a caller's `vector` travels: a receiver without one
    /// embeds with its own embedder.
    pub fn publish_entry(
        &self,
        namespace: &str,
        prompt: &str,
        llm_string: &str,
        value: &[u8],
        vector: Option<Vec<f32>>,
        ttl: Option<Duration>,
    ) {
        let event = SharedEvent::Entry(SharedEntry {
            label: self.label(namespace),
            prompt: prompt.to_owned(),
            llm_string: llm_string.to_owned(),
            value: value.to_vec(),
            expires_ms: shared::expiry_after(ttl),
            vector,
        });
        self.stream.publish(event.to_fields());
    }

    /// Tell the others to drop what they hold under `namespace` (and this tenant).
    pub fn publish_clear(&self, namespace: &str) {
        self.stream
            .publish(SharedEvent::Clear(self.label(namespace)).to_fields());
    }

    /// Read the stream again from its start (after a rename: entries skipped under the old
    /// name may be this cache's now).
    pub fn rewind(&self) {
        self.stream.rewind();
    }

    /// Apply up to [`APPLY_BATCH`] events others published since the last call to `cache`,
    /// keyed under `namespace`. `vector_for` gives the vector to index an entry under (the
    /// one it carries, else the receiver's own embedding, or None for exact hits only).
    /// Unreadable events are counted in the cache's `l2_errors`; returns why each was.
    pub fn apply_pending(
        &self,
        cache: &SemanticCache,
        namespace: &Namespace,
        vector_for: impl Fn(&Scoped, Option<Vec<f32>>) -> Option<Arc<[f32]>>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for fields in self.stream.drain(APPLY_BATCH) {
            let applied = SharedEvent::from_fields(&fields)
                .map_err(|err| err.to_string())
                .and_then(|event| self.apply(cache, namespace, event, &vector_for));
            if let Err(err) = applied {
                cache.note_unreadable();
                errors.push(err);
            }
        }
        errors
    }

    /// One event, if it is labelled with the cache's label (under the namespace lock, so a
    /// rename cannot come between the check and the insert). Entries are stored under their
    /// own label, never re-labelled; an expired one is dropped.
    fn apply(
        &self,
        cache: &SemanticCache,
        namespace: &Namespace,
        event: SharedEvent,
        vector_for: &impl Fn(&Scoped, Option<Vec<f32>>) -> Option<Arc<[f32]>>,
    ) -> Result<(), String> {
        let namespace = namespace.read();
        if !event.label().is_for(&self.label(&namespace)) {
            return Ok(());
        }
        match event {
            SharedEvent::Clear(_) => cache.clear(),
            SharedEvent::Entry(entry) => {
                if shared::expired(entry.expires_ms, shared::now_ms()) {
                    return Ok(());
                }
                let scoped = split_prompt(&entry.label.namespace, &entry.llm_string, &entry.prompt);
                let vector = vector_for(&scoped, entry.vector);
                cache
                    .insert_until(
                        &scoped,
                        vector.as_deref(),
                        entry.value.into(),
                        entry.expires_ms,
                    )
                    .map_err(|err| err.to_string())?;
            }
        }
        Ok(())
    }
}
