//! The semantic cache: an exact layer keyed by the whole normalised prompt, then a vector
//! search inside the prompt's scope, then the guard. Entries live in one moka cache (LRU,
//! TTL, size bound); each scope keeps its own vector index, kept in step by moka's eviction
//! listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use xxhash_rust::xxh3::xxh3_64;

use super::embed::HashEmbedder;
use super::guard::{Conflict, Signature};
use super::index::{GraphParams, ScopeIndex};
use super::key::CacheKey;
use super::scope::Scoped;
use super::shared;
use super::CacheError;
use crate::embed::{EmbedError, Embedder};

/// Settings of a semantic cache.
#[derive(Debug, Clone)]
pub struct SemanticConfig {
    /// Cosine similarity at or above which a candidate may answer: above 0 and at most 1
    /// (at 0 or below every stored question would answer every other).
    pub threshold: f32,
    pub maxsize: u64,
    pub ttl: Option<Duration>,
    /// Reject candidates that differ in numbers, dates, names, quotes or negation.
    pub guard: bool,
    /// Scopes up to this many entries are scanned exactly; larger ones use HNSW.
    pub flat_max: usize,
    /// Candidates checked against the guard per lookup.
    pub candidates: usize,
    /// Bound on remembered embeddings (by text hash).
    pub embedding_cache: u64,
    pub graph: GraphParams,
    /// Hybrid matching for a cache with another embedder (MiniLM): each entry is also indexed
    /// by the built-in n-gram embedding, and a candidate whose n-gram similarity reaches this
    /// threshold may answer too (the guard still decides). The n-grams catch retyped
    /// questions a sentence model scores low; the model catches rewordings. None: the
    /// embedder's similarity alone. Ignored with the built-in embedder.
    pub surface_threshold: Option<f32>,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            threshold: HashEmbedder::DEFAULT_THRESHOLD,
            maxsize: 100_000,
            ttl: None,
            guard: true,
            flat_max: 512,
            candidates: 8,
            embedding_cache: 10_000,
            graph: GraphParams::default(),
            surface_threshold: None,
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The same prompt (after normalisation) was stored.
    Exact(Arc<[u8]>),
    /// A similar question in the same scope passed the guard.
    Semantic {
        value: Arc<[u8]>,
        similarity: f32,
        matched: String,
        /// The exact key of the entry that answered.
        key: CacheKey,
    },
    /// Nothing usable; `rejected` names the guard's reason for the best candidate it refused.
    Miss {
        rejected: Option<Conflict>,
        best_similarity: Option<f32>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SemanticStats {
    pub exact_hits: u64,
    pub semantic_hits: u64,
    pub guard_rejections: u64,
    pub misses: u64,
    /// Entries from other processes that could not be read (also counted as misses when a
    /// lookup found one).
    pub l2_errors: u64,
    pub entries: u64,
    pub scopes: u64,
}

struct Entry {
    scope: CacheKey,
    text: String,
    signature: Signature,
    value: Arc<[u8]>,
    /// Wall-clock expiry (ms since the epoch) set by the process that stored it; 0 never.
    expires_ms: u64,
    /// Order of storing in this cache: the index forgets a key only for its newest entry.
    stamp: u64,
}

impl Entry {
    fn is_expired(&self) -> bool {
        self.expires_ms != 0 && shared::expired(self.expires_ms, shared::now_ms())
    }
}

type Scopes = RwLock<HashMap<CacheKey, Arc<RwLock<ScopeIndex>>>>;

/// Unindex an entry moka let go of. The notice may come late (moka runs listeners when it
/// gets to them): after a `clear()` and the same prompt stored again, the index holds the
/// newer entry's stamp and keeps it.
fn forget(listener_scopes: &[Arc<Scopes>; 2], key: CacheKey, entry: &Entry) {
    for listener_scopes in listener_scopes {
        let scope = read(listener_scopes).get(&entry.scope).cloned();
        let Some(scope) = scope else { continue };
        let emptied = {
            let mut index = write(&scope);
            index.remove_stamped(key, entry.stamp);
            index.is_empty()
        };
        // An emptied scope is dropped, so memory stays bounded by `maxsize` however many
        // scopes (conversations, system prompts) come and go.
        if emptied {
            let mut scopes = write(listener_scopes);
            if scopes.get(&entry.scope).is_some_and(|s| read(s).is_empty()) {
                scopes.remove(&entry.scope);
            }
        }
    }
}

/// A semantic cache shared by any number of threads.
pub struct SemanticCache {
    config: SemanticConfig,
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    scopes: Arc<Scopes>,
    /// The n-gram indexes of a hybrid cache, by scope.
    surface_scopes: Arc<Scopes>,
    dim: AtomicUsize,
    embedder: Arc<dyn Embedder>,
    /// The built-in embedder of a hybrid cache (see [`SemanticConfig::surface_threshold`]).
    surface: Option<HashEmbedder>,
    embeddings: moka::sync::Cache<u64, Arc<[f32]>>,
    exact_hits: AtomicU64,
    semantic_hits: AtomicU64,
    guard_rejections: AtomicU64,
    misses: AtomicU64,
    l2_errors: AtomicU64,
    /// The last entry's stamp (see `Entry::stamp`).
    stamps: AtomicU64,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl SemanticCache {
    /// A cache embedding texts with the built-in hashed n-gram embedder.
    pub fn new(config: SemanticConfig) -> Result<Self, CacheError> {
        Self::with_embedder(config, Arc::new(HashEmbedder::default()))
    }

    /// A cache embedding texts with `embedder` (for example the MiniLM model), called from
    /// Rust with no round trip through Python.
    pub fn with_embedder(
        config: SemanticConfig,
        embedder: Arc<dyn Embedder>,
    ) -> Result<Self, CacheError> {
        if !(config.threshold > 0.0 && config.threshold <= 1.0) {
            return Err(CacheError::InvalidConfig(format!(
                "threshold must be above 0 and at most 1, got {}",
                config.threshold
            )));
        }
        if config.maxsize == 0 {
            return Err(CacheError::InvalidConfig(
                "maxsize must be at least 1, got 0".into(),
            ));
        }
        if config.candidates == 0 {
            return Err(CacheError::InvalidConfig(
                "candidates must be at least 1, got 0".into(),
            ));
        }
        if let Some(t) = config.surface_threshold {
            if !(t > 0.0 && t <= 1.0) {
                return Err(CacheError::InvalidConfig(format!(
                    "surface_threshold must be above 0 and at most 1, got {t}"
                )));
            }
        }
        let scopes: Arc<Scopes> = Arc::default();
        let surface_scopes: Arc<Scopes> = Arc::default();
        let listener_scopes = [Arc::clone(&scopes), Arc::clone(&surface_scopes)];
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(config.maxsize)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener({
                let scopes = listener_scopes;
                move |key: Arc<CacheKey>, entry: Arc<Entry>, cause| {
                    // A replaced entry keeps its key (same prompt, same vector): keep it
                    // indexed.
                    if cause != RemovalCause::Replaced {
                        forget(&scopes, *key, &entry);
                    }
                }
            });
        if let Some(ttl) = config.ttl {
            if ttl.is_zero() || ttl > Duration::from_secs(1000 * 365 * 24 * 3600) {
                return Err(CacheError::InvalidConfig(format!(
                    "ttl out of range: {ttl:?}"
                )));
            }
            builder = builder.time_to_live(ttl);
        }
        Ok(Self {
            entries: builder.build(),
            embeddings: moka::sync::Cache::new(config.embedding_cache.max(1)),
            scopes,
            surface_scopes,
            dim: AtomicUsize::new(0),
            embedder,
            surface: config.surface_threshold.map(|_| HashEmbedder::default()),
            exact_hits: AtomicU64::new(0),
            semantic_hits: AtomicU64::new(0),
            guard_rejections: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            l2_errors: AtomicU64::new(0),
            stamps: AtomicU64::new(0),
            config,
        })
    }

    pub fn config(&self) -> &SemanticConfig {
        &self.config
    }

    /// The embedding of `text` by this cache's own embedder, remembered by text hash.
    pub fn embed_builtin(&self, text: &str) -> Result<Arc<[f32]>, Arc<EmbedError>> {
        let hash = xxh3_64(text.as_bytes());
        self.embeddings
            .try_get_with(hash, || self.embedder.embed(text).map(Arc::from))
    }

    /// The embedder this cache calls for texts given without a vector.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// A remembered embedding of `text` (from any embedder), if there is one.
    pub fn remembered_embedding(&self, text: &str) -> Option<Arc<[f32]>> {
        self.embeddings.get(&xxh3_64(text.as_bytes()))
    }

    /// Remember an embedding computed elsewhere (a LangChain `Embeddings`) after checking it.
    pub fn remember_embedding(&self, text: &str, vector: &[f32]) -> Result<Arc<[f32]>, CacheError> {
        let vector = self.check_vector(vector)?;
        self.embeddings
            .insert(xxh3_64(text.as_bytes()), Arc::clone(&vector));
        Ok(vector)
    }

    /// A vector the index accepts: finite, the dimension of the first one seen, unit length.
    fn check_vector(&self, vector: &[f32]) -> Result<Arc<[f32]>, CacheError> {
        if vector.is_empty() {
            return Err(CacheError::InvalidConfig("embedding is empty".into()));
        }
        if let Some(bad) = vector.iter().find(|x| !x.is_finite()) {
            return Err(CacheError::InvalidConfig(format!(
                "embedding holds a non-finite value ({bad})"
            )));
        }
        let dim =
            match self
                .dim
                .compare_exchange(0, vector.len(), Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => vector.len(),
                Err(dim) => dim,
            };
        if vector.len() != dim {
            return Err(CacheError::InvalidConfig(format!(
                "embedding has {} dimensions, this cache holds {dim}",
                vector.len()
            )));
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Ok(vector.into());
        }
        Ok(vector.iter().map(|x| x / norm).collect())
    }

    /// The exact layer: the stored value for this very prompt.
    pub fn lookup_exact(&self, scoped: &Scoped) -> Option<Arc<[u8]>> {
        let entry = self.entries.get(&scoped.exact)?;
        if entry.is_expired() {
            self.entries.invalidate(&scoped.exact);
            return None;
        }
        self.exact_hits.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&entry.value))
    }

    /// Exact layer, then the nearest entries in the scope that pass the guard.
    pub fn lookup(&self, scoped: &Scoped, vector: Option<&[f32]>) -> Outcome {
        if let Some(value) = self.lookup_exact(scoped) {
            return Outcome::Exact(value);
        }
        let outcome = if vector.is_some() || self.surface.is_some() {
            self.search(scoped, vector)
        } else {
            Outcome::Miss {
                rejected: None,
                best_similarity: None,
            }
        };
        match &outcome {
            Outcome::Semantic { .. } => self.semantic_hits.fetch_add(1, Ordering::Relaxed),
            Outcome::Miss { rejected, .. } => {
                if rejected.is_some() {
                    self.guard_rejections.fetch_add(1, Ordering::Relaxed);
                }
                self.misses.fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Exact(_) => 0,
        };
        outcome
    }

    fn search(&self, scoped: &Scoped, vector: Option<&[f32]>) -> Outcome {
        let mut candidates = match vector.map(|v| self.check_vector(v)) {
            Some(Ok(query)) => {
                self.candidates(&self.scopes, scoped.scope, &query, self.config.threshold)
            }
            _ => Vec::new(),
        };
        if let (Some(surface), Some(threshold)) = (&self.surface, self.config.surface_threshold) {
            // Hybrid: the n-gram neighbours too, ranked with the model's by how far each
            // clears its own threshold.
            let query = surface.embed(&scoped.text);
            let mut found = self.candidates(&self.surface_scopes, scoped.scope, &query, threshold);
            let margin = |(_, s): &(CacheKey, f32), t: f32| s - t;
            candidates.sort_by(|a, b| {
                margin(b, self.config.threshold).total_cmp(&margin(a, self.config.threshold))
            });
            found.retain(|(key, _)| !candidates.iter().any(|(k, _)| k == key));
            let model = std::mem::take(&mut candidates);
            let (mut m, mut n) = (model.into_iter().peekable(), found.into_iter().peekable());
            while let (Some(a), Some(b)) = (m.peek(), n.peek()) {
                if margin(a, self.config.threshold) >= margin(b, threshold) {
                    candidates.extend(m.next());
                } else {
                    candidates.extend(n.next());
                }
            }
            candidates.extend(m);
            candidates.extend(n);
        }
        let best_similarity = candidates.first().map(|c| c.1);
        if candidates.is_empty() {
            return Outcome::Miss {
                rejected: None,
                best_similarity: None,
            };
        }
        let signature = self.config.guard.then(|| Signature::of(&scoped.text));
        let mut rejected = None;
        for (key, similarity) in candidates {
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.scope != scoped.scope || entry.is_expired() {
                continue;
            }
            if let Some(signature) = &signature {
                if let Some(conflict) = entry.signature.conflict(signature) {
                    rejected.get_or_insert(conflict);
                    continue;
                }
            }
            return Outcome::Semantic {
                value: Arc::clone(&entry.value),
                similarity,
                matched: entry.text.clone(),
                key,
            };
        }
        Outcome::Miss {
            rejected,
            best_similarity,
        }
    }

    /// The nearest entries of `scope`'s index at or above `threshold`.
    fn candidates(
        &self,
        scopes: &Scopes,
        scope: CacheKey,
        query: &[f32],
        threshold: f32,
    ) -> Vec<(CacheKey, f32)> {
        let Some(index) = read(scopes).get(&scope).cloned() else {
            return Vec::new();
        };
        // Search under the scope's read lock, then release it before touching `entries`,
        // whose eviction listener takes the scope's write lock.
        let found = read(&index).search(query, self.config.candidates, threshold);
        found
    }

    /// Store `value` for this prompt; `vector` is the embedding of `scoped.text` (None stores
    /// it for exact hits only).
    pub fn insert(
        &self,
        scoped: &Scoped,
        vector: Option<&[f32]>,
        value: Arc<[u8]>,
    ) -> Result<(), CacheError> {
        self.insert_until(scoped, vector, value, 0)
    }

    /// `insert` for an entry that expires at a wall-clock time (`expires_ms` since the epoch,
    /// 0 never) whatever this cache's own TTL: an entry another process stored keeps its TTL.
    pub fn insert_until(
        &self,
        scoped: &Scoped,
        vector: Option<&[f32]>,
        value: Arc<[u8]>,
        expires_ms: u64,
    ) -> Result<(), CacheError> {
        let vector = vector.map(|v| self.check_vector(v)).transpose()?;
        let entry = Entry {
            scope: scoped.scope,
            text: scoped.text.clone(),
            signature: Signature::of(&scoped.text),
            value,
            expires_ms,
            stamp: self.stamps.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let stamp = entry.stamp;
        self.entries.insert(scoped.exact, Arc::new(entry));
        if let Some(surface) = &self.surface {
            let surface_vector = surface.embed(&scoped.text);
            self.index(&self.surface_scopes, scoped, stamp, &surface_vector);
        }
        if let Some(vector) = vector {
            self.index(&self.scopes, scoped, stamp, &vector);
        }
        Ok(())
    }

    /// Index `vector` under the entry's key in its scope's index in `scopes`.
    fn index(&self, scopes: &Scopes, scoped: &Scoped, stamp: u64, vector: &[f32]) {
        // A scope emptied by evictions may be dropped between taking it and indexing into
        // it; then index into the scope the map holds now.
        loop {
            let scope = self.scope_for(scopes, scoped.scope, vector.len());
            write(&scope).insert_stamped(scoped.exact, stamp, vector);
            let current = read(scopes)
                .get(&scoped.scope)
                .is_some_and(|s| Arc::ptr_eq(s, &scope));
            if !self.entries.contains_key(&scoped.exact) {
                // Evicted (or expired) before it was indexed.
                write(&scope).remove_stamped(scoped.exact, stamp);
                break;
            }
            if current {
                break;
            }
        }
    }

    /// The index of `scope` in `scopes`, created if it does not exist.
    fn scope_for(&self, scopes: &Scopes, scope: CacheKey, dim: usize) -> Arc<RwLock<ScopeIndex>> {
        if let Some(existing) = read(scopes).get(&scope).cloned() {
            return existing;
        }
        let mut scopes = write(scopes);
        let (flat_max, graph) = (self.config.flat_max, self.config.graph);
        Arc::clone(
            scopes
                .entry(scope)
                .or_insert_with(|| Arc::new(RwLock::new(ScopeIndex::new(dim, flat_max, graph)))),
        )
    }

    /// A hit whose value the caller could not read (another process stored garbage): the
    /// entry goes, and the lookup is counted as a miss and an `l2_errors` instead.
    pub fn unreadable(&self, key: CacheKey, semantic: bool) {
        self.entries.invalidate(&key);
        let hits = if semantic {
            &self.semantic_hits
        } else {
            &self.exact_hits
        };
        // Only ever called after a counted hit; saturate anyway so a misuse cannot wrap.
        let _ = hits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.l2_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An entry from another process that could not be read at all.
    pub fn note_unreadable(&self) {
        self.l2_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
        write(&self.scopes).clear();
        write(&self.surface_scopes).clear();
    }

    pub fn stats(&self) -> SemanticStats {
        self.entries.run_pending_tasks();
        SemanticStats {
            exact_hits: self.exact_hits.load(Ordering::Relaxed),
            semantic_hits: self.semantic_hits.load(Ordering::Relaxed),
            guard_rejections: self.guard_rejections.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            l2_errors: self.l2_errors.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            scopes: read(&self.scopes).len() as u64,
        }
    }

    /// Entries in a scope's index (for tests and metrics).
    pub fn scope_len(&self, scope: CacheKey) -> usize {
        read(&self.scopes).get(&scope).map_or(0, |s| read(s).len())
    }
}

/// A question as this cache compares it (scope, exact key, guard signature, embeddings),
/// taken before it is stored: a question in flight is matched against others by
/// [`SemanticCache::answers`], the same rule a lookup applies to a stored entry. The
/// signature and embeddings are worked out when a comparison first needs them (most
/// questions never meet another in flight), once.
#[derive(Debug)]
pub struct Probe {
    scope: CacheKey,
    exact: CacheKey,
    text: String,
    /// Whether this cache's own embedder may embed the text (else only a given vector).
    own: bool,
    signature: std::sync::OnceLock<Arc<Signature>>,
    vector: std::sync::OnceLock<Option<Arc<[f32]>>>,
    surface: std::sync::OnceLock<Option<Vec<f32>>>,
}

impl Probe {
    /// The scope it may only be matched within.
    pub fn scope(&self) -> CacheKey {
        self.scope
    }

    /// The exact key of the whole prompt.
    pub fn exact(&self) -> CacheKey {
        self.exact
    }

    /// The text compared by similarity.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether its guard signature is still to be worked out.
    pub fn needs_signature(&self) -> bool {
        self.signature.get().is_none()
    }

    /// Its guard signature, worked out elsewhere (remembered for the same text).
    pub fn set_signature(&self, signature: Arc<Signature>) {
        let _ = self.signature.set(signature);
    }

    /// Whether comparing it by similarity still needs its embedding worked out (the signature
    /// and n-grams are cheap beside a model's embedding).
    pub fn needs_embedding(&self) -> bool {
        self.own && self.vector.get().is_none()
    }
}

impl SemanticCache {
    fn probe_of(&self, scoped: &Scoped, own: bool) -> Probe {
        Probe {
            scope: scoped.scope,
            exact: scoped.exact,
            text: scoped.text.clone(),
            own,
            signature: std::sync::OnceLock::new(),
            vector: std::sync::OnceLock::new(),
            surface: std::sync::OnceLock::new(),
        }
    }

    /// `scoped` as [`SemanticCache::answers`] compares it, with `vector` its embedding (None,
    /// or one this cache would refuse: it is compared as a lookup without a vector is).
    pub fn probe(&self, scoped: &Scoped, vector: Option<&[f32]>) -> Probe {
        let probe = self.probe_of(scoped, false);
        let _ = probe
            .vector
            .set(vector.and_then(|v| self.check_vector(v).ok()));
        probe
    }

    /// `scoped` as [`SemanticCache::answers`] compares it, embedded by this cache's own
    /// embedder (as [`SemanticCache::embed_builtin`]) when a comparison first needs it.
    pub fn probe_own(&self, scoped: &Scoped) -> Probe {
        self.probe_of(scoped, true)
    }

    /// Work out what comparing `probe` needs, now (outside any lock the caller holds).
    pub fn prepare(&self, probe: &Probe) {
        let _ = self.signature_of(probe);
        let _ = self.vector_of(probe);
        let _ = self.surface_of(probe);
    }

    fn signature_of<'p>(&self, probe: &'p Probe) -> &'p Signature {
        probe
            .signature
            .get_or_init(|| Arc::new(Signature::of(&probe.text)))
    }

    fn vector_of<'p>(&self, probe: &'p Probe) -> Option<&'p [f32]> {
        probe
            .vector
            .get_or_init(|| {
                // An embedder that fails on this text leaves it to exact matches, as a lookup.
                let own = probe.own.then(|| self.embed_builtin(&probe.text).ok());
                own.flatten()
            })
            .as_deref()
    }

    fn surface_of<'p>(&self, probe: &'p Probe) -> Option<&'p [f32]> {
        probe
            .surface
            .get_or_init(|| self.surface.as_ref().map(|s| s.embed(&probe.text)))
            .as_deref()
    }

    /// Whether a lookup of `query` would be answered by an entry stored for `stored`, by the
    /// rule [`SemanticCache::lookup`] applies (the same prompt; else the same scope, a
    /// similarity at or above the threshold, or the n-gram one for a hybrid cache, and the
    /// guard agreeing). Some(how far it clears its threshold, for ranking; `f32::INFINITY`
    /// for the same prompt), or None. Counts nothing.
    pub fn answers(&self, stored: &Probe, query: &Probe) -> Option<f32> {
        if stored.scope != query.scope {
            return None;
        }
        if stored.exact == query.exact {
            return Some(f32::INFINITY);
        }
        let margin = |a: &[f32], b: &[f32], threshold: f32| {
            if a.len() != b.len() {
                return None;
            }
            let similarity = super::index::dot(a, b);
            (similarity >= threshold).then_some(similarity - threshold)
        };
        let model = match (self.vector_of(stored), self.vector_of(query)) {
            (Some(a), Some(b)) => margin(a, b, self.config.threshold),
            _ => None,
        };
        let surface = match (
            self.surface_of(stored),
            self.surface_of(query),
            self.config.surface_threshold,
        ) {
            (Some(a), Some(b), Some(threshold)) => margin(a, b, threshold),
            _ => None,
        };
        let best = match (model, surface) {
            (Some(m), Some(s)) => m.max(s),
            (m, s) => m.or(s)?,
        };
        if self.config.guard
            && self
                .signature_of(stored)
                .conflict(self.signature_of(query))
                .is_some()
        {
            return None;
        }
        Some(best)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::scope::split_prompt;
    use super::*;

    fn cache(config: SemanticConfig) -> SemanticCache {
        SemanticCache::new(config).unwrap()
    }

    fn store(c: &SemanticCache, prompt: &str, value: &str) {
        let s = split_prompt("", "m", prompt);
        let v = c.embed_builtin(&s.text).unwrap();
        c.insert(&s, Some(&v), value.as_bytes().into()).unwrap();
    }

    fn find(c: &SemanticCache, prompt: &str) -> Outcome {
        let s = split_prompt("", "m", prompt);
        let v = c.embed_builtin(&s.text).unwrap();
        c.lookup(&s, Some(&v))
    }

    #[test]
    fn exact_then_semantic_then_miss() {
        let c = cache(SemanticConfig {
            threshold: 0.5,
            ..Default::default()
        });
        store(&c, "How do I reset my password?", "answer");
        assert!(matches!(
            find(&c, "How do I reset my password?"),
            Outcome::Exact(_)
        ));
        match find(&c, "how do i reset my password") {
            Outcome::Semantic {
                value,
                similarity,
                matched,
                key,
            } => {
                assert_eq!(
                    key,
                    split_prompt("", "m", "How do I reset my password?").exact
                );
                assert_eq!(&*value, b"answer");
                assert!((0.5..=1.0001).contains(&similarity));
                assert_eq!(matched, "How do I reset my password?");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            find(&c, "What is the capital of Peru?"),
            Outcome::Miss { .. }
        ));
        let s = c.stats();
        assert_eq!(
            (s.exact_hits, s.semantic_hits, s.misses, s.entries),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn the_guard_rejects_a_different_number() {
        let c = cache(SemanticConfig {
            threshold: 0.3,
            ..Default::default()
        });
        store(&c, "Convert 10 km to miles", "6.2");
        match find(&c, "Convert 12 km to miles") {
            Outcome::Miss { rejected, .. } => assert_eq!(rejected, Some(Conflict::Number)),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.stats().guard_rejections, 1);
        let off = cache(SemanticConfig {
            threshold: 0.3,
            guard: false,
            ..Default::default()
        });
        store(&off, "Convert 10 km to miles", "6.2");
        assert!(matches!(
            find(&off, "Convert 12 km to miles"),
            Outcome::Semantic { .. }
        ));
    }

    #[test]
    fn never_answers_across_scopes() {
        let c = cache(SemanticConfig {
            threshold: f32::MIN_POSITIVE,
            ..Default::default()
        });
        let s = split_prompt("", "model-a", "hello there");
        c.insert(
            &s,
            Some(&c.embed_builtin(&s.text).unwrap()),
            b"a".as_slice().into(),
        )
        .unwrap();
        let other = split_prompt("", "model-b", "hello there");
        assert!(matches!(
            c.lookup(&other, Some(&c.embed_builtin(&other.text).unwrap())),
            Outcome::Miss { .. }
        ));
    }

    #[test]
    fn eviction_and_ttl_remove_entries_from_the_index() {
        let c = cache(SemanticConfig {
            maxsize: 20,
            ..Default::default()
        });
        for i in 0..200 {
            store(&c, &format!("question number {i}"), "x");
        }
        let scope = split_prompt("", "m", "anything").scope;
        let stats = c.stats();
        assert!(stats.entries <= 20);
        assert_eq!(c.scope_len(scope) as u64, stats.entries);

        let c = cache(SemanticConfig {
            ttl: Some(Duration::from_millis(50)),
            ..Default::default()
        });
        store(&c, "what is the time in Oslo", "x");
        std::thread::sleep(Duration::from_millis(150));
        assert!(matches!(
            find(&c, "what is the time in Oslo"),
            Outcome::Miss { .. }
        ));
        c.stats();
        assert_eq!(c.scope_len(scope), 0);
    }

    #[test]
    fn bad_vectors_are_errors_and_bad_settings_rejected() {
        let c = cache(SemanticConfig::default());
        let s = split_prompt("", "m", "q");
        assert!(c
            .insert(&s, Some(&[1.0, 0.0, 0.0]), b"v".as_slice().into())
            .is_ok());
        assert!(
            c.insert(&s, Some(&[1.0, 0.0]), b"v".as_slice().into())
                .is_err(),
            "dimension"
        );
        assert!(c
            .insert(&s, Some(&[f32::NAN, 0.0, 0.0]), b"v".as_slice().into())
            .is_err());
        assert!(matches!(c.lookup(&s, Some(&[1.0, 2.0])), Outcome::Exact(_)));
        for threshold in [1.5, -1.1, 0.0, -0.0, f32::NAN, f32::INFINITY] {
            assert!(SemanticCache::new(SemanticConfig {
                threshold,
                ..Default::default()
            })
            .is_err());
        }
    }

    #[test]
    fn large_scopes_switch_to_the_graph_and_still_hit() {
        let c = cache(SemanticConfig {
            flat_max: 64,
            threshold: 0.5,
            ..Default::default()
        });
        for i in 0..300 {
            store(
                &c,
                &format!("tell me fact number {i} about the ocean"),
                &i.to_string(),
            );
        }
        match find(&c, "Tell me fact number 123 about the ocean!") {
            Outcome::Semantic { value, .. } => assert_eq!(&*value, b"123"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrent_inserts_and_lookups() {
        let c = Arc::new(cache(SemanticConfig {
            maxsize: 500,
            flat_max: 100,
            ..Default::default()
        }));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..300 {
                        store(&c, &format!("thread {t} question {i}"), "v");
                        let _ = find(&c, &format!("thread {t} question {}", i / 2));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = c.stats();
        assert!(s.entries <= 500);
        assert_eq!(s.exact_hits + s.semantic_hits + s.misses, 1200);
    }

    #[test]
    fn emptied_scopes_are_dropped() {
        let c = cache(SemanticConfig {
            maxsize: 10,
            ..Default::default()
        });
        for i in 0..300 {
            let s = split_prompt("", &format!("model-{i}"), "the same question");
            c.insert(
                &s,
                Some(&c.embed_builtin(&s.text).unwrap()),
                b"v".as_slice().into(),
            )
            .unwrap();
        }
        let stats = c.stats();
        assert!(stats.entries <= 10);
        assert!(
            stats.scopes <= 10,
            "{} scopes kept for {} entries",
            stats.scopes,
            stats.entries
        );
    }

    #[test]
    fn entries_expire_at_their_own_stamp() {
        let c = cache(SemanticConfig::default());
        let past = split_prompt("", "m", "What is the boiling point of water?");
        let v = c.embed_builtin(&past.text).unwrap();
        c.insert_until(&past, Some(&v), b"old".as_slice().into(), 1)
            .unwrap();
        assert!(c.lookup_exact(&past).is_none());
        assert!(matches!(
            find(&c, "what is the boiling point of water"),
            Outcome::Miss { .. }
        ));
        let later = shared::expiry_after(Some(Duration::from_secs(60)));
        c.insert_until(&past, Some(&v), b"new".as_slice().into(), later)
            .unwrap();
        assert!(matches!(
            find(&c, "what is the boiling point of water"),
            Outcome::Semantic { .. }
        ));
    }

    /// moka runs eviction listeners when it gets to them: a notice for an entry that
    /// `clear()` dropped may arrive after the same prompt was stored again, and must not
    /// unindex the new entry. The late notice is delivered by hand, so the test does not
    /// depend on when moka runs it.
    #[test]
    fn a_late_eviction_notice_after_clear_keeps_the_new_entry() {
        let c = cache(SemanticConfig {
            threshold: 0.5,
            ..Default::default()
        });
        let asked = split_prompt("", "m", "How tall is Mount Everest?");
        store(&c, "How tall is Mount Everest?", "old");
        let old = c.entries.get(&asked.exact).unwrap();
        c.clear();
        store(&c, "How tall is Mount Everest?", "new");
        let scopes = [Arc::clone(&c.scopes), Arc::clone(&c.surface_scopes)];
        forget(&scopes, asked.exact, &old);
        assert_eq!(c.scope_len(asked.scope), 1);
        match find(&c, "how tall is mount everest") {
            Outcome::Semantic { value, .. } => assert_eq!(&*value, b"new"),
            other => panic!("{other:?}"),
        }
        // The notice for the entry itself still unindexes it.
        let new = c.entries.get(&asked.exact).unwrap();
        forget(&scopes, asked.exact, &new);
        assert_eq!(c.scope_len(asked.scope), 0);
    }

    #[test]
    fn an_unreadable_hit_becomes_a_miss() {
        let c = cache(SemanticConfig::default());
        store(&c, "Who painted the Mona Lisa?", "garbage");
        let Outcome::Semantic { key, .. } = find(&c, "who painted the mona lisa") else {
            panic!("expected a semantic hit");
        };
        c.unreadable(key, true);
        let s = c.stats();
        assert_eq!((s.semantic_hits, s.misses, s.l2_errors), (0, 1, 1));
        assert!(matches!(
            find(&c, "Who painted the Mona Lisa?"),
            Outcome::Miss { .. }
        ));
        assert_eq!(c.stats().misses, 2);
    }
}
