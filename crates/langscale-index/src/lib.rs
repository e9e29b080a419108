//! The vector index of one semantic-cache scope: an exact scan over a flat array while the
//! scope is small, an HNSW graph once it grows past `flat_max` entries. Vectors are
//! L2-normalised, so similarity is the dot product.
//!
//! A crate of its own (re-exported as `langscale_core::cache::index` and `::hnsw`) so that
//! debug and test builds can compile it optimised: its recall tests build graphs of tens of
//! thousands of nodes, which unoptimised took a minute of every `cargo test`; the rest of
//! the core stays quick to compile.

use std::collections::HashMap;

pub mod hnsw;

use hnsw::{Hnsw, HnswParams};

/// A 128-bit cache key: what an entry is indexed under.
pub type CacheKey = u128;

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
    /// Inserts walk on the sign codes and trim full lists in batches (see
    /// `HnswParams::fast_construction`).
    pub fast_construction: bool,
    /// A removal takes the node out and repairs its neighbours' links, reusing its slot;
    /// false: it leaves a tombstone and the graph is rebuilt once tombstones outnumber the
    /// live nodes (a stall of seconds at 100k entries).
    pub repair: bool,
}

impl GraphParams {
    /// The settings before issue 17 (8-bit construction walk 400 wide, tombstones and
    /// rebuilds), for benches that compare them with the current ones in one run.
    pub fn previous() -> Self {
        Self {
            ef_construction: 400,
            fast_construction: false,
            repair: false,
            ..Self::default()
        }
    }
}

impl Default for GraphParams {
    fn default() -> Self {
        Self {
            max_connections: 24,
            ef_construction: 96,
            ef_search: 48,
            binary_walk: true,
            ef_floor: 16,
            fast_construction: true,
            repair: true,
        }
    }
}

struct Graph {
    hnsw: Hnsw,
    /// Node id → key; `None` once removed (a tombstone or a freed slot the search skips).
    keys: Vec<Option<CacheKey>>,
    /// Key → (node, stamp of the entry that indexed it).
    node_of: HashMap<CacheKey, (u32, u64)>,
    dead: usize,
    repair: bool,
}

enum Kind {
    Flat {
        keys: Vec<CacheKey>,
        stamps: Vec<u64>,
        data: Vec<f32>,
    },
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
                stamps: Vec::new(),
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
        self.insert_stamped(key, 0, vector);
    }

    /// `insert` for the entry stamped `stamp` (stamps grow with each stored entry): a key
    /// already indexed keeps its vector and the newer stamp (see `remove_stamped`).
    pub fn insert_stamped(&mut self, key: CacheKey, stamp: u64, vector: &[f32]) {
        if vector.len() != self.dim {
            return;
        }
        match &mut self.kind {
            Kind::Flat { keys, stamps, data } => {
                if let Some(pos) = keys.iter().position(|k| *k == key) {
                    if let Some(s) = stamps.get_mut(pos) {
                        *s = (*s).max(stamp);
                    }
                    return;
                }
                keys.push(key);
                stamps.push(stamp);
                data.extend_from_slice(vector);
                if keys.len() > self.flat_max {
                    self.promote();
                }
            }
            Kind::Graph(g) => {
                if let Some(at) = g.node_of.get_mut(&key) {
                    at.1 = at.1.max(stamp);
                    return;
                }
                g.insert(key, stamp, vector);
            }
        }
    }

    pub fn remove(&mut self, key: CacheKey) {
        self.remove_if(key, |_| true);
    }

    /// Remove `key` unless it is indexed for an entry newer than `stamp`: a late notice
    /// about an entry that was cleared and stored again must not unindex the new one.
    pub fn remove_stamped(&mut self, key: CacheKey, stamp: u64) {
        self.remove_if(key, |s| s <= stamp);
    }

    fn remove_if(&mut self, key: CacheKey, stamped: impl Fn(u64) -> bool) {
        match &mut self.kind {
            Kind::Flat { keys, stamps, data } => {
                if let Some(pos) = keys.iter().position(|k| *k == key) {
                    if !stamps.get(pos).copied().is_some_and(&stamped) {
                        return;
                    }
                    keys.swap_remove(pos);
                    stamps.swap_remove(pos);
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
                let Some(&(node, stamp)) = g.node_of.get(&key) else {
                    return;
                };
                if !stamped(stamp) {
                    return;
                }
                g.node_of.remove(&key);
                if let Some(entry) = g.keys.get_mut(node as usize) {
                    *entry = None;
                }
                if g.repair {
                    g.hnsw.remove(node);
                } else {
                    g.hnsw.delete(node);
                    g.dead += 1;
                    if g.dead > g.node_of.len().max(1024) {
                        self.rebuild();
                    }
                }
            }
        }
    }

    /// How many stranded nodes the graph's reachability sweeps have linked back (see
    /// `Hnsw::reconnected`); 0 for an exact-scan index.
    pub fn reconnected(&self) -> u64 {
        match &self.kind {
            Kind::Flat { .. } => 0,
            Kind::Graph(g) => g.hnsw.reconnected(),
        }
    }

    /// Whether the graph's links agree with themselves (see `Hnsw::check`); always true
    /// for an exact-scan index.
    pub fn check(&self) -> Result<(), String> {
        match &self.kind {
            Kind::Flat { .. } => Ok(()),
            Kind::Graph(g) => g.hnsw.check(),
        }
    }

    /// Up to `k` keys with similarity at least `min_similarity`, most similar first.
    pub fn search(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<(CacheKey, f32)> {
        if query.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let mut found: Vec<(CacheKey, f32)> = match &self.kind {
            Kind::Flat { keys, data, .. } => {
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
        if let Kind::Flat { keys, stamps, data } = &self.kind {
            let entries: Vec<(CacheKey, u64, &[f32])> = keys
                .iter()
                .zip(stamps)
                .zip(data.chunks_exact(self.dim))
                .map(|((k, s), v)| (*k, *s, v))
                .collect();
            let graph = Graph::build(self.dim, self.params, &entries);
            self.kind = Kind::Graph(Box::new(graph));
        }
    }

    fn rebuild(&mut self) {
        if let Kind::Graph(g) = &self.kind {
            let entries: Vec<(CacheKey, u64, &[f32])> = g
                .keys
                .iter()
                .filter_map(|key| {
                    let key = (*key)?;
                    let &(node, stamp) = g.node_of.get(&key)?;
                    Some((key, stamp, g.hnsw.vector_of(node)))
                })
                .collect();
            let graph = Graph::build(self.dim, self.params, &entries);
            self.kind = Kind::Graph(Box::new(graph));
        }
    }
}

impl Graph {
    fn build(dim: usize, params: GraphParams, entries: &[(CacheKey, u64, &[f32])]) -> Self {
        let repair = params.repair;
        let params = HnswParams {
            m: params.max_connections,
            ef_construction: params.ef_construction,
            ef_search: params.ef_search,
            binary_walk: params.binary_walk,
            ef_floor: params.ef_floor,
            fast_construction: params.fast_construction,
        };
        let mut graph = Self {
            hnsw: Hnsw::new(dim, params),
            keys: Vec::new(),
            node_of: HashMap::new(),
            dead: 0,
            repair,
        };
        for (key, stamp, vector) in entries {
            graph.insert(*key, *stamp, vector);
        }
        graph
    }

    fn insert(&mut self, key: CacheKey, stamp: u64, vector: &[f32]) {
        let node = self.hnsw.insert(vector);
        match self.keys.get_mut(node as usize) {
            Some(slot) => *slot = Some(key),
            None => self.keys.push(Some(key)),
        }
        self.node_of.insert(key, (node, stamp));
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
    /// 5,000 embedding-like vectors and an exact-scan index of them.
    fn data_and_flat() -> (Vec<Vec<f32>>, ScopeIndex) {
        let (n, dim) = (5000, 64);
        let data = embedding_like(n, dim, 3);
        let mut flat = ScopeIndex::new(dim, usize::MAX, GraphParams::default());
        for (i, v) in data.iter().enumerate() {
            flat.insert(i as u128, v);
        }
        (data, flat)
    }

    /// A graph of `data` (keys are positions) built with `params`.
    fn graph_of(data: &[Vec<f32>], params: GraphParams) -> ScopeIndex {
        let mut graph = ScopeIndex::new(64, 0, params);
        for (i, v) in data.iter().enumerate() {
            graph.insert(i as u128, v);
        }
        graph
    }

    /// Nearest neighbours with no bound, for queries drawn around other centres than the
    /// stored vectors (far from all of them: no cache answers at those similarities). Such
    /// queries need a graph built 400 wide: at the shipped 96 this set's recall@1 is 0.91
    /// (0.96 at 200), while recall within a threshold stays 1.0
    /// (`graph_recall_within_a_threshold`); the 400-wide build checks that the fast
    /// construction can still build a graph as good as the old one did.
    #[test]
    fn graph_recall_against_exact_scan() {
        let (data, flat) = data_and_flat();
        let dim = 64;
        let graph = graph_of(
            &data,
            GraphParams {
                ef_construction: 400,
                ..GraphParams::default()
            },
        );
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
        let (data, flat) = data_and_flat();
        let graph = graph_of(&data, GraphParams::default());
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

    /// A cache at its size bound evicts one entry for each one it stores: ten full
    /// turnovers of 1,500 entries through one graph (every node removed and its slot reused
    /// ten times over) must leave a graph as good as a fresh one.
    #[test]
    fn recall_holds_after_ten_turnovers() {
        let (n, dim) = (1500, 64);
        let mut graph = ScopeIndex::new(dim, 0, GraphParams::default());
        let mut latest: Vec<Vec<f32>> = Vec::new();
        for turn in 0..=10u64 {
            latest = embedding_like(n, dim, 100 + turn);
            for (i, v) in latest.iter().enumerate() {
                let key = u128::from(turn) * n as u128 + i as u128;
                graph.insert(key, v);
                if turn > 0 {
                    graph.remove(key - n as u128);
                }
            }
        }
        assert_eq!(graph.len(), n);
        graph.check().unwrap();
        let first = 10 * n as u128;
        let mut flat = ScopeIndex::new(dim, usize::MAX, GraphParams::default());
        for (i, v) in latest.iter().enumerate() {
            flat.insert(first + i as u128, v);
        }
        let noise = vectors(400, dim, 400, 7);
        let (mut reachable, mut agree, mut agree_any) = (0, 0, 0);
        for (i, e) in noise.iter().enumerate() {
            let scale = [0.1, 0.3, 0.5, 0.8][i % 4];
            let base = &latest[(i * 7919) % n];
            let mut q: Vec<f32> = base.iter().zip(e).map(|(b, x)| b + scale * x).collect();
            let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            q.iter_mut().for_each(|x| *x /= norm);
            let truth = flat.search(&q, 1, -1.0)[0];
            agree_any += usize::from(graph.search(&q, 1, -1.0).first() == Some(&truth));
            if truth.1 >= 0.9 {
                reachable += 1;
                agree +=
                    usize::from(graph.search(&q, 1, 0.9).first().map(|h| h.0) == Some(truth.0));
            }
        }
        assert!(reachable >= 100, "{reachable}");
        let recall = agree as f64 / reachable as f64;
        assert!(recall >= 0.99, "recall@1 within 0.9 after churn: {recall}");
        let recall = agree_any as f64 / noise.len() as f64;
        assert!(recall >= 0.97, "recall@1 after churn: {recall}");
    }

    #[test]
    fn a_stale_removal_keeps_a_newer_entry() {
        for flat_max in [usize::MAX, 0] {
            let mut index = ScopeIndex::new(4, flat_max, GraphParams::default());
            index.insert_stamped(1, 5, &[1.0, 0.0, 0.0, 0.0]);
            index.insert_stamped(1, 3, &[1.0, 0.0, 0.0, 0.0]);
            index.remove_stamped(1, 4);
            assert!(index.contains(1), "removed by an older entry's notice");
            index.remove_stamped(1, 5);
            assert!(!index.contains(1));
            assert!(index.search(&[1.0, 0.0, 0.0, 0.0], 1, -1.0).is_empty());
        }
    }

    mod churn {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(u64),
            Remove(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => any::<u64>().prop_map(Op::Insert),
                2 => any::<usize>().prop_map(Op::Remove),
            ]
        }

        proptest! {
            // Once a known gap (about one random sequence in a thousand stranded a small
            // cluster: see `Hnsw::keep_reachable`); its case is in proptest-regressions/.
            #![proptest_config(ProptestConfig {
                cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
                ..ProptestConfig::default()
            })]
            /// Random inserts and removals on a small, narrow graph (3 links a node, so lists
            /// overflow and get trimmed and repaired all the time): the links stay consistent,
            /// no link outlives its node, every live node stays reachable, and no removed key
            /// comes back from a search.
            #[test]
            fn random_churn_keeps_the_graph_whole(ops in proptest::collection::vec(op(), 1..200)) {
                let dim = 8;
                let params = GraphParams { max_connections: 3, ef_construction: 16, ..GraphParams::default() };
                let mut index = ScopeIndex::new(dim, 0, params);
                let mut live: Vec<(u128, Vec<f32>)> = Vec::new();
                let mut removed: Vec<(u128, Vec<f32>)> = Vec::new();
                for (step, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Insert(seed) => {
                            let v = vectors(1, dim, 1, seed).remove(0);
                            index.insert(step as u128, &v);
                            removed.retain(|(k, _)| *k != step as u128);
                            live.push((step as u128, v));
                        }
                        Op::Remove(at) if !live.is_empty() => {
                            let (key, v) = live.swap_remove(at % live.len());
                            index.remove(key);
                            removed.push((key, v));
                        }
                        Op::Remove(_) => {}
                    }
                    prop_assert_eq!(index.len(), live.len());
                    if let Err(e) = index.check() {
                        return Err(TestCaseError::fail(e));
                    }
                }
                for (key, v) in &removed {
                    let hits = index.search(v, 8, -1.0);
                    prop_assert!(hits.iter().all(|h| h.0 != *key), "removed {} returned", key);
                }
                for (key, v) in &live {
                    prop_assert!(index.contains(*key));
                    let hits = index.search(v, live.len(), -1.0);
                    prop_assert!(hits.iter().all(|h| live.iter().any(|(k, _)| *k == h.0)));
                }
            }
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
