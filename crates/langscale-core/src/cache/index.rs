//! The vector index of one semantic-cache scope: an exact scan over a flat array while the
//! scope is small, an HNSW graph once it grows past `flat_max` entries. Vectors are
//! L2-normalised, so similarity is the dot product.

use std::collections::HashMap;

use super::hnsw::{Hnsw, HnswParams};
use super::key::CacheKey;

/// Dot product. Uses AVX2 when the CPU has it (checked once, cached by std), else the
/// portable loop; both are the same code, the first compiled for 256-bit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

/// Sixteen independent accumulators, which the compiler turns into SIMD lanes.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// HNSW settings, chosen by the recall measurement in the tests and `benches/`.
#[derive(Debug, Clone, Copy)]
pub struct GraphParams {
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Steer the walk by sign codes, then re-rank (see `HnswParams::binary_walk`).
    pub binary_walk: bool,
    /// Breadth of the walk far from the lookup's threshold (see `HnswParams::ef_floor`).
    pub ef_floor: usize,
}

impl Default for GraphParams {
    fn default() -> Self {
        Self {
            max_connections: 24,
            ef_construction: 400,
            ef_search: 48,
            binary_walk: true,
            ef_floor: 16,
        }
    }
}

struct Graph {
    hnsw: Hnsw,
    /// Node id → key; `None` once removed (a tombstone the search skips).
    keys: Vec<Option<CacheKey>>,
    node_of: HashMap<CacheKey, u32>,
    dead: usize,
}

enum Kind {
    Flat { keys: Vec<CacheKey>, data: Vec<f32> },
    Graph(Box<Graph>),
}

/// One scope's vectors.
pub struct ScopeIndex {
    dim: usize,
    flat_max: usize,
    params: GraphParams,
    kind: Kind,
}

impl std::fmt::Debug for ScopeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeIndex")
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("graph", &matches!(self.kind, Kind::Graph(_)))
            .finish()
    }
}

impl ScopeIndex {
    pub fn new(dim: usize, flat_max: usize, params: GraphParams) -> Self {
        Self {
            dim,
            flat_max,
            params,
            kind: Kind::Flat {
                keys: Vec::new(),
                data: Vec::new(),
            },
        }
    }

    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Flat { keys, .. } => keys.len(),
            Kind::Graph(g) => g.node_of.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_graph(&self) -> bool {
        matches!(self.kind, Kind::Graph(_))
    }

    pub fn contains(&self, key: CacheKey) -> bool {
        match &self.kind {
            Kind::Flat { keys, .. } => keys.contains(&key),
            Kind::Graph(g) => g.node_of.contains_key(&key),
        }
    }

    /// Add a vector (of this index's dimension; the caller checks) under `key`.
    pub fn insert(&mut self, key: CacheKey, vector: &[f32]) {
        if vector.len() != self.dim || self.contains(key) {
            return;
        }
        match &mut self.kind {
            Kind::Flat { keys, data } => {
                keys.push(key);
                data.extend_from_slice(vector);
                if keys.len() > self.flat_max {
                    self.promote();
                }
            }
            Kind::Graph(g) => g.insert(key, vector),
        }
    }

    pub fn remove(&mut self, key: CacheKey) {
        match &mut self.kind {
            Kind::Flat { keys, data } => {
                if let Some(pos) = keys.iter().position(|k| *k == key) {
                    keys.swap_remove(pos);
                    let last = keys.len();
                    if pos != last {
                        let (head, tail) = data.split_at_mut(last * self.dim);
                        head[pos * self.dim..(pos + 1) * self.dim]
                            .copy_from_slice(&tail[..self.dim]);
                    }
                    data.truncate(last * self.dim);
                }
            }
            Kind::Graph(g) => {
                if let Some(node) = g.node_of.remove(&key) {
                    if let Some(entry) = g.keys.get_mut(node as usize) {
                        *entry = None;
                    }
                    g.hnsw.delete(node);
                    g.dead += 1;
                }
                if g.dead > g.node_of.len().max(1024) {
                    self.rebuild();
                }
            }
        }
    }

    /// Up to `k` keys with similarity at least `min_similarity`, most similar first.
    pub fn search(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<(CacheKey, f32)> {
        if query.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let mut found: Vec<(CacheKey, f32)> = match &self.kind {
            Kind::Flat { keys, data } => {
                let mut best: Vec<(CacheKey, f32)> = Vec::with_capacity(k + 1);
                for (key, row) in keys.iter().zip(data.chunks_exact(self.dim)) {
                    let sim = dot(query, row);
                    if sim < min_similarity
                        || (best.len() == k && best.last().is_some_and(|b| sim <= b.1))
                    {
                        continue;
                    }
                    let at = best.partition_point(|b| b.1 >= sim);
                    best.insert(at, (*key, sim));
                    best.truncate(k);
                }
                best
            }
            Kind::Graph(g) => g
                .hnsw
                .search(query, k, min_similarity)
                .into_iter()
                .filter_map(|(node, sim)| Some(((*g.keys.get(node as usize)?)?, sim)))
                .collect(),
        };
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(k);
        found
    }

    fn promote(&mut self) {
        if let Kind::Flat { keys, data } = &self.kind {
            let entries: Vec<(CacheKey, &[f32])> = keys
                .iter()
                .copied()
                .zip(data.chunks_exact(self.dim))
                .collect();
            let graph = Graph::build(self.dim, self.params, &entries);
            self.kind = Kind::Graph(Box::new(graph));
        }
    }

    fn rebuild(&mut self) {
        if let Kind::Graph(g) = &self.kind {
            let entries: Vec<(CacheKey, &[f32])> = g
                .keys
                .iter()
                .enumerate()
                .filter_map(|(node, key)| Some(((*key)?, g.hnsw.vector_of(node as u32))))
                .collect();
            let graph = Graph::build(self.dim, self.params, &entries);
            self.kind = Kind::Graph(Box::new(graph));
        }
    }
}

impl Graph {
    fn build(dim: usize, params: GraphParams, entries: &[(CacheKey, &[f32])]) -> Self {
        let params = HnswParams {
            m: params.max_connections,
            ef_construction: params.ef_construction,
            ef_search: params.ef_search,
            binary_walk: params.binary_walk,
            ef_floor: params.ef_floor,
        };
        let mut graph = Self {
            hnsw: Hnsw::new(dim, params),
            keys: Vec::new(),
            node_of: HashMap::new(),
            dead: 0,
        };
        for (key, vector) in entries {
            graph.insert(*key, vector);
        }
        graph
    }

    fn insert(&mut self, key: CacheKey, vector: &[f32]) {
        let node = self.hnsw.insert(vector);
        self.keys.push(Some(key));
        self.node_of.insert(key, node);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors around `clusters` centres (closer to real
    /// embeddings than uniform noise).
    fn vectors(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % clusters];
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }

    #[test]
    fn flat_search_finds_the_nearest_and_respects_the_threshold() {
        let data = vectors(100, 32, 10, 1);
        let mut index = ScopeIndex::new(32, 1000, GraphParams::default());
        for (i, v) in data.iter().enumerate() {
            index.insert(i as u128, v);
        }
        let hits = index.search(&data[42], 3, 0.0);
        assert_eq!(hits[0].0, 42);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(index.search(&data[42], 3, 1.01).is_empty());
    }

    #[test]
    fn removal_works_in_both_kinds() {
        for flat_max in [1000, 10] {
            let data = vectors(50, 16, 5, 2);
            let mut index = ScopeIndex::new(16, flat_max, GraphParams::default());
            for (i, v) in data.iter().enumerate() {
                index.insert(i as u128, v);
            }
            assert_eq!(index.is_graph(), flat_max == 10);
            index.remove(7);
            index.remove(7);
            assert_eq!(index.len(), 49);
            assert!(!index.contains(7));
            let hits = index.search(&data[7], 5, -1.0);
            assert!(hits.iter().all(|h| h.0 != 7));
            assert!(index.search(&data[8], 1, 0.0)[0].0 == 8);
        }
    }

    #[test]
    fn wrong_dimension_is_ignored_not_a_panic() {
        let mut index = ScopeIndex::new(8, 10, GraphParams::default());
        index.insert(1, &[1.0; 4]);
        assert!(index.is_empty());
        assert!(index.search(&[1.0; 3], 1, 0.0).is_empty());
    }

    /// Unit vectors with a low intrinsic dimension (a random 16-dimensional latent space
    /// mapped into `dim`, plus noise), as sentence embeddings have. Near-uniform noise in many
    /// dimensions is the worst case of every graph index and not what a cache holds.
    fn embedding_like(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let basis = vectors(16, dim, 16, 99);
        let weights = vectors(n, 16, 8, seed);
        weights
            .iter()
            .map(|w| {
                let mut v: Vec<f32> = (0..dim)
                    .map(|d| basis.iter().zip(w).map(|(b, x)| b[d] * x).sum::<f32>())
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }

    /// 5,000 embedding-like vectors of 64 dimensions in an exact-scan index and a graph.
    fn flat_and_graph() -> (Vec<Vec<f32>>, ScopeIndex, ScopeIndex) {
        let (n, dim) = (5000, 64);
        let data = embedding_like(n, dim, 3);
        let mut flat = ScopeIndex::new(dim, usize::MAX, GraphParams::default());
        let mut graph = ScopeIndex::new(dim, 0, GraphParams::default());
        for (i, v) in data.iter().enumerate() {
            flat.insert(i as u128, v);
            graph.insert(i as u128, v);
        }
        (data, flat, graph)
    }

    #[test]
    fn graph_recall_against_exact_scan() {
        let (_, flat, graph) = flat_and_graph();
        let dim = 64;
        let queries = embedding_like(400, dim, 4);
        let agree = queries
            .iter()
            .filter(|q| flat.search(q, 1, -1.0)[0].0 == graph.search(q, 1, -1.0)[0].0)
            .count();
        let recall = agree as f64 / queries.len() as f64;
        assert!(recall >= 0.99, "recall@1 {recall}");
    }

    /// A cache searches with its threshold as the bound, and the walk is narrower far from
    /// it (`ef_floor`): whatever reaches the threshold must still be found. Queries are stored
    /// vectors moved by noise of several sizes, so their nearest similarities straddle each
    /// threshold.
    #[test]
    fn graph_recall_within_a_threshold() {
        let (data, flat, graph) = flat_and_graph();
        let (n, dim) = (data.len(), 64);
        let noise = vectors(600, dim, 600, 5);
        let queries: Vec<Vec<f32>> = noise
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let scale = [0.1, 0.3, 0.5, 0.8][i % 4];
                let base = &data[(i * 7919) % n];
                let mut v: Vec<f32> = base.iter().zip(e).map(|(b, x)| b + scale * x).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect();
        for threshold in [0.7f32, 0.8, 0.9, 0.95] {
            let (mut reachable, mut found_first, mut expected, mut found) = (0, 0, 0, 0);
            for q in &queries {
                let exact = flat.search(q, 8, threshold);
                let approx = graph.search(q, 8, threshold);
                // Recomputed, not the similarity the search reports: also catches a node
                // answered with another node's key.
                assert!(
                    approx
                        .iter()
                        .all(|h| dot(q, &data[h.0 as usize]) >= threshold - 1e-6),
                    "below {threshold}"
                );
                // The bound only saves work: the unbounded walk, filtered, finds no more.
                let unbounded = graph.search(q, 8, -1.0);
                let filtered = unbounded.iter().filter(|h| h.1 >= threshold).count();
                assert!(
                    approx.len() >= filtered.min(8),
                    "bound lost results at {threshold}"
                );
                if let Some(best) = exact.first() {
                    reachable += 1;
                    found_first += usize::from(approx.first().map(|h| h.0) == Some(best.0));
                }
                expected += exact.len();
                found += approx
                    .iter()
                    .filter(|h| exact.iter().any(|e| e.0 == h.0))
                    .count();
            }
            assert!(
                reachable >= 100,
                "too few queries reach {threshold}: {reachable}"
            );
            let recall = found_first as f64 / reachable as f64;
            assert!(recall >= 0.99, "recall@1 at {threshold}: {recall}");
            let recall = found as f64 / expected as f64;
            assert!(recall >= 0.97, "recall@8 at {threshold}: {recall}");
        }
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.01).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
