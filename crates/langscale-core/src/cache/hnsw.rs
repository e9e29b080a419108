//! A small HNSW graph (Malkov & Yashunin) over unit vectors, similarity = dot product.
//! The graph is walked on 8-bit quantised copies of the vectors (a quarter of the memory
//! traffic, which is what bounds a walk); the final candidates are re-ranked exactly.
//!
//! Written here rather than taken from hnsw_rs because measurement said so: hnsw_rs took
//! 1.1 ms per lookup at 10k × 384 (slower than an exact scan, 0.55 ms), mostly in per-node
//! locks and heap churn. This graph needs no locks of its own (the scope's RwLock gives one
//! writer or many readers) and keeps vectors in one flat array. Removed points stay in the
//! graph as tombstones (still traversed, never returned) until the owner rebuilds.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::index::dot;

#[derive(Debug, Clone, Copy)]
struct Scored {
    sim: f32,
    id: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim.total_cmp(&other.sim).then(self.id.cmp(&other.id))
    }
}

/// Graph settings.
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    /// Links per node above layer 0 (layer 0 keeps twice as many).
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

#[derive(Debug)]
pub struct Hnsw {
    dim: usize,
    params: HnswParams,
    vectors: Vec<f32>,
    quantised: Vec<i8>,
    scales: Vec<f32>,
    /// links[node][layer] = neighbour ids (what construction edits).
    links: Vec<Vec<Vec<u32>>>,
    /// Layer 0 again, flat for the search: per node a count then `2m` slots, so expanding a
    /// node is one memory access instead of three pointer hops.
    layer0: Vec<u32>,
    deleted: Vec<bool>,
    entry: Option<u32>,
    top_layer: usize,
    rng: u64,
}

impl Hnsw {
    pub fn new(dim: usize, params: HnswParams) -> Self {
        Self {
            dim,
            params,
            vectors: Vec::new(),
            quantised: Vec::new(),
            scales: Vec::new(),
            links: Vec::new(),
            layer0: Vec::new(),
            deleted: Vec::new(),
            entry: None,
            top_layer: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The stored vector of a node (empty for an unknown id).
    pub fn vector_of(&self, id: u32) -> &[f32] {
        self.vector(id)
    }

    fn vector(&self, id: u32) -> &[f32] {
        let start = id as usize * self.dim;
        self.vectors.get(start..start + self.dim).unwrap_or(&[])
    }

    fn random_level(&mut self) -> usize {
        // xorshift64*; level ~ geometric with p = 1/m
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m.max(2) as f64).ln();
        ((-u.ln() * ml) as usize).min(16)
    }

    /// Mark a node removed: still a path through the graph, never a result.
    pub fn delete(&mut self, id: u32) {
        if let Some(d) = self.deleted.get_mut(id as usize) {
            *d = true;
        }
    }

    /// Add a vector of the graph's dimension; returns its id.
    pub fn insert(&mut self, vector: &[f32]) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { self.insert_avx2(vector) };
            }
        }
        self.insert_inner::<false>(vector)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn insert_avx2(&mut self, vector: &[f32]) -> u32 {
        self.insert_inner::<true>(vector)
    }

    #[inline(always)]
    fn insert_inner<const AVX2: bool>(&mut self, vector: &[f32]) -> u32 {
        let id = u32::try_from(self.links.len()).unwrap_or(u32::MAX);
        let level = self.random_level();
        let query = Query::new(vector);
        self.vectors.extend_from_slice(vector);
        self.quantised.extend_from_slice(&query.q);
        self.scales.push(query.scale);
        self.links.push(vec![Vec::new(); level + 1]);
        self.layer0.resize(self.layer0.len() + self.stride(), 0);
        self.deleted.push(false);
        let Some(mut entry) = self.entry else {
            self.entry = Some(id);
            self.top_layer = level;
            return id;
        };
        let mut visited = Visited::new(self.len());
        for layer in (level + 1..=self.top_layer).rev() {
            entry = self.greedy::<AVX2>(&query, entry, layer);
        }
        for layer in (0..=level.min(self.top_layer)).rev() {
            let found = self.search_layer::<AVX2>(
                &query,
                &[entry],
                self.params.ef_construction,
                layer,
                &mut visited,
            );
            let max_links = if layer == 0 {
                self.params.m * 2
            } else {
                self.params.m
            };
            let chosen: Vec<u32> = self.select::<AVX2>(&found, self.params.m);
            if let Some(best) = found.first() {
                entry = best.id;
            }
            for &n in &chosen {
                self.link::<AVX2>(n, id, layer, max_links);
            }
            self.set_links(id, layer, chosen);
        }
        if level > self.top_layer {
            self.top_layer = level;
            self.entry = Some(id);
        }
        id
    }

    /// Neighbour selection heuristic: keep a candidate only if it is closer to the new node
    /// than to any neighbour already kept (spreads links across directions).
    #[inline(always)]
    fn select<const AVX2: bool>(&self, found: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in found {
            if kept.len() >= m {
                break;
            }
            if kept
                .iter()
                .all(|&k| self.sim_nodes::<AVX2>(c.id, k) < c.sim)
            {
                kept.push(c.id);
            }
        }
        if kept.len() < m {
            for c in found {
                if kept.len() >= m {
                    break;
                }
                if !kept.contains(&c.id) {
                    kept.push(c.id);
                }
            }
        }
        kept
    }

    #[inline(always)]
    fn link<const AVX2: bool>(&mut self, from: u32, to: u32, layer: usize, max_links: usize) {
        let Some(list) = self.links.get(from as usize).and_then(|l| l.get(layer)) else {
            return;
        };
        let mut list = list.clone();
        list.push(to);
        if list.len() > max_links {
            let base = self.vector(from).to_vec();
            let mut scored: Vec<Scored> = list
                .iter()
                .map(|&n| Scored {
                    sim: dot(&base, self.vector(n)),
                    id: n,
                })
                .collect();
            scored.sort_by(|a, b| b.cmp(a));
            list = self.select::<AVX2>(&scored, max_links);
        }
        self.set_links(from, layer, list);
    }

    fn stride(&self) -> usize {
        self.params.m * 2 + 1
    }

    fn set_links(&mut self, node: u32, layer: usize, list: Vec<u32>) {
        if layer == 0 {
            let stride = self.stride();
            if let Some(row) = self
                .layer0
                .get_mut(node as usize * stride..(node as usize + 1) * stride)
            {
                let n = list.len().min(stride - 1);
                row[0] = n as u32;
                row[1..=n].copy_from_slice(&list[..n]);
            }
        }
        if let Some(slot) = self
            .links
            .get_mut(node as usize)
            .and_then(|l| l.get_mut(layer))
        {
            *slot = list;
        }
    }

    fn neighbours(&self, node: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let stride = self.stride();
            let start = node as usize * stride;
            let n = self.layer0.get(start).copied().unwrap_or(0) as usize;
            return self.layer0.get(start + 1..start + 1 + n).unwrap_or(&[]);
        }
        self.links
            .get(node as usize)
            .and_then(|l| l.get(layer))
            .map_or(&[][..], |v| v)
    }

    #[inline(always)]
    fn prefetch_links(&self, node: u32, layer: usize) {
        #[cfg(target_arch = "x86_64")]
        if layer == 0 {
            if let Some(row) = self.layer0.get(node as usize * self.stride()..) {
                for line in row.chunks(16).take(3) {
                    // SAFETY: a prefetch is only a hint and the pointer is in bounds.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            line.as_ptr().cast::<i8>(),
                        );
                    }
                }
            }
        }
    }

    /// Ask the CPU to start loading a node's quantised vector (the walk is bound by memory
    /// latency; overlapping the loads of all neighbours is most of its speed).
    #[inline(always)]
    fn prefetch(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let start = node as usize * self.dim;
            if let Some(bytes) = self.quantised.get(start..start + self.dim) {
                for line in bytes.chunks(64) {
                    // SAFETY: a prefetch is only a hint and the pointer is in bounds.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            line.as_ptr(),
                        );
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn greedy<const AVX2: bool>(&self, query: &Query, mut at: u32, layer: usize) -> u32 {
        let mut best = self.sim::<AVX2>(query, at);
        loop {
            let mut moved = false;
            for &n in self.neighbours(at, layer) {
                let sim = self.sim::<AVX2>(query, n);
                if sim > best {
                    best = sim;
                    at = n;
                    moved = true;
                }
            }
            if !moved {
                return at;
            }
        }
    }

    /// Best-first search of one layer; results most similar first.
    #[inline(always)]
    fn search_layer<const AVX2: bool>(
        &self,
        query: &Query,
        entries: &[u32],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        visited.reset(self.len());
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
        // min-heap of the ef best so far (Reverse ordering via negated comparison)
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            if visited.insert(e) {
                let s = Scored {
                    sim: self.sim::<AVX2>(query, e),
                    id: e,
                };
                candidates.push(s);
                best.push(std::cmp::Reverse(s));
            }
        }
        while let Some(c) = candidates.pop() {
            let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0.sim);
            if c.sim < worst && best.len() >= ef {
                break;
            }
            let neighbours = self.neighbours(c.id, layer);
            for &n in neighbours {
                if !visited.contains(n) {
                    self.prefetch(n);
                }
            }
            // The next node to expand is likely the current best candidate: start loading
            // its link list now, behind this node's work.
            if let Some(next) = candidates.peek() {
                self.prefetch_links(next.id, layer);
            }
            for &n in neighbours {
                if !visited.insert(n) {
                    continue;
                }
                let sim = self.sim::<AVX2>(query, n);
                let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0.sim);
                if best.len() < ef || sim > worst {
                    let s = Scored { sim, id: n };
                    candidates.push(s);
                    best.push(std::cmp::Reverse(s));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// Up to `k` live nodes most similar to `query`, as (id, similarity), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { self.search_avx2(query, k) };
            }
        }
        self.search_inner::<false>(query, k)
    }

    /// The whole walk compiled for AVX2, so the per-node dot product is inlined and
    /// vectorised instead of a call through a feature check for each of ~1,000 nodes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn search_avx2(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        self.search_inner::<true>(query, k)
    }

    #[inline(always)]
    fn search_inner<const AVX2: bool>(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let Some(mut entry) = self.entry else {
            return Vec::new();
        };
        if query.len() != self.dim {
            return Vec::new();
        }
        let q = Query::new(query);
        for layer in (1..=self.top_layer).rev() {
            entry = self.greedy::<AVX2>(&q, entry, layer);
        }
        let mut visited = Visited::new(self.len());
        let ef = self.params.ef_search.max(k);
        // Quantisation moves a similarity by well under 0.01, so only the best 2k approximate
        // candidates can be among the exact best k: re-rank just those (each exact dot reads
        // 1.5 KB that the walk never touched).
        let mut exact: Vec<(u32, f32)> = self
            .search_layer::<AVX2>(&q, &[entry], ef, 0, &mut visited)
            .into_iter()
            .filter(|s| !self.deleted.get(s.id as usize).copied().unwrap_or(true))
            .take(k.saturating_mul(2).max(16))
            .map(|s| (s.id, dot(query, self.vector(s.id))))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        exact.truncate(k);
        exact
    }

    /// Approximate similarity of a query and a node, on the quantised vectors.
    #[inline(always)]
    fn sim<const AVX2: bool>(&self, query: &Query, id: u32) -> f32 {
        let start = id as usize * self.dim;
        let Some(node) = self.quantised.get(start..start + self.dim) else {
            return f32::NEG_INFINITY;
        };
        let scale = self.scales.get(id as usize).copied().unwrap_or(0.0);
        #[cfg(target_arch = "x86_64")]
        let dot = if AVX2 {
            // SAFETY: AVX2 is true only inside `search_avx2`, entered after the CPU check.
            unsafe { dot_i8_avx2(&query.q, node) }
        } else {
            dot_i8_portable(&query.q, node)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let dot = dot_i8_portable(&query.q, node);
        dot as f32 * query.scale * scale
    }

    #[inline(always)]
    fn sim_nodes<const AVX2: bool>(&self, a: u32, b: u32) -> f32 {
        let start = a as usize * self.dim;
        match self.quantised.get(start..start + self.dim) {
            Some(q) => {
                let query = Query {
                    q: q.to_vec(),
                    scale: self.scales.get(a as usize).copied().unwrap_or(0.0),
                };
                self.sim::<AVX2>(&query, b)
            }
            None => f32::NEG_INFINITY,
        }
    }
}

/// A vector quantised to 8 bits with one scale: x ≈ q * scale.
struct Query {
    q: Vec<i8>,
    scale: f32,
}

impl Query {
    fn new(v: &[f32]) -> Self {
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let q = v
            .iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Self { q, scale }
    }
}

/// Integer dot product of two quantised vectors (AVX2 when available).
#[cfg(test)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    dot_i8_portable(a, b)
}

/// 32 bytes at a time: |a| × sign(a)·b with `maddubs` (pairs summed to i16: at most
/// 2 × 127 × 127, no saturation), then `madd` with ones into i32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_madd_epi16,
        _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_setzero_si256, _mm256_sign_epi8,
        _mm_add_epi32, _mm_cvtsi128_si32, _mm_hadd_epi32,
    };
    let n = a.len().min(b.len());
    let chunks = n / 32;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for i in 0..chunks {
        // SAFETY: i * 32 + 32 <= n, within both slices; unaligned loads are allowed.
        let (va, vb) = unsafe {
            (
                _mm256_loadu_si256(a.as_ptr().add(i * 32).cast::<__m256i>()),
                _mm256_loadu_si256(b.as_ptr().add(i * 32).cast::<__m256i>()),
            )
        };
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
    }
    let half = _mm_add_epi32(
        _mm256_extracti128_si256::<0>(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let quad = _mm_hadd_epi32(half, half);
    let sum = _mm_cvtsi128_si32(_mm_hadd_epi32(quad, quad));
    let tail = dot_i8_portable(
        a.get(chunks * 32..n).unwrap_or(&[]),
        b.get(chunks * 32..n).unwrap_or(&[]),
    );
    sum + tail
}

#[inline(always)]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// A visited set as a bitmap.
struct Visited {
    bits: Vec<u64>,
}

impl Visited {
    fn new(n: usize) -> Self {
        Self {
            bits: vec![0; n / 64 + 1],
        }
    }

    fn reset(&mut self, n: usize) {
        self.bits.clear();
        self.bits.resize(n / 64 + 1, 0);
    }

    fn contains(&self, id: u32) -> bool {
        self.bits
            .get(id as usize / 64)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    /// True when `id` was not yet visited.
    fn insert(&mut self, id: u32) -> bool {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        match self.bits.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn simd_i8_dot_matches_portable() {
        for len in [0usize, 5, 32, 33, 384, 385] {
            let a: Vec<i8> = (0..len)
                .map(|i| (((i * 37) % 255) as i32 - 127) as i8)
                .collect();
            let b: Vec<i8> = (0..len)
                .map(|i| (((i * 91 + 7) % 255) as i32 - 127) as i8)
                .collect();
            assert_eq!(
                super::dot_i8(&a, &b),
                super::dot_i8_portable(&a, &b),
                "len {len}"
            );
        }
    }
}
