//! A small HNSW graph (Malkov & Yashunin) over unit vectors, similarity = dot product.
//! It is built on 8-bit quantised copies of the vectors. A search walks it on 512-bit sign
//! codes of a randomly rotated copy (SimHash: one cache line a node, a sixth of the 8-bit
//! copy's memory traffic, which is what bounds a walk at 100k entries), then scores what the
//! walk found on the 8-bit copies and re-ranks the best exactly. `binary_walk: false` walks
//! on the 8-bit copies instead (`examples/walk_tune.rs` compares both). The walk on codes
//! keeps its candidates in one sorted array of packed integers and measures a node's
//! neighbours as a batch after prefetching them all; that, POPCNT, and 24 links a node
//! (fewer hops for the same recall) took a 100k lookup from ~110 to ~60-90 µs at the same
//! recall.
//!
//! An insert (`fast_construction`) walks layer 0 on the codes too, `ef_construction` (96)
//! wide, scores what it found on the 8-bit copies and picks links with the selection
//! heuristic; a neighbour whose list is full drops several links at once, farthest
//! redundant ones first (`trim`), so most back-links cost an append. That took an insert at
//! 100k from ~2 ms to the figures in `semantic_speed` at the same recall within a threshold.
//! The old construction (8-bit walk 400 wide, full heuristic at every overflow) stays
//! reachable for comparison; 400 wide is still what a graph needs to answer nearest-neighbour
//! queries far from every stored vector as well as an exact scan (`index.rs` tests).
//!
//! A cache asks for neighbours above its threshold, and the search uses that bound: the
//! Hamming distance of two codes is Binomial(512, angle/π), so a node whose distance lies
//! five standard errors past the bound's angle is taken not to reach it (a node within the
//! bound lies that far out about 3 times in 10 million at thresholds up to 0.95). Such nodes
//! are never scored on their 8-bit copies, and beyond its `ef_floor` (16) nearest
//! candidates the walk only expands nodes that may reach the bound. That narrower walk is a
//! heuristic like `ef` itself: what it may miss is measured (recall within the threshold,
//! `index.rs`'s tests, `semantic_speed`, `walk_tune`), not bounded. A lookup far from every
//! stored entry (a miss) is a 16-wide walk, one near an entry walks `ef_search` (48) wide where it
//! matters. With the bound at 0.9, that took a 100k lookup from ~57 to ~30 µs (index
//! alone) at recall@1 1.0 on the entries within the bound; with no bound (-1) the search
//! is the plain `ef_search` walk.
//!
//! Written here rather than taken from hnsw_rs because measurement said so: hnsw_rs took
//! 1.1 ms per lookup at 10k × 384 (slower than an exact scan, 0.55 ms), mostly in per-node
//! locks and heap churn. This graph needs no locks of its own (the scope's RwLock gives one
//! writer or many readers) and keeps vectors in one flat array.
//!
//! `remove` takes a node out for good: each node that linked to it (kept in `rev`) takes the
//! removed node's out-neighbour most similar to it in its place, a node left
//! with no in-link is adopted by its nearest neighbour, and the slot is reused by the next
//! insert. `delete` (a tombstone,
//! still traversed, never returned, until the owner rebuilds) is the old way, kept for
//! comparison. `check` states the invariants the tests hold the graph to.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::dot;

/// How many standard errors past the bound a node's Hamming distance may lie and still
/// count as possibly within it. A distance over `b` bits is Binomial(b, θ/π) for two
/// vectors at angle θ, so beyond 5 standard errors a node within the bound is missed less
/// than once in a million comparisons.
const HAMMING_SIGMAS: f32 = 5.0;

/// The largest Hamming distance (over `bits` bits) a node at similarity `min_similarity` or
/// more may show, up to `HAMMING_SIGMAS` standard errors; `u32::MAX` for no bound (-1).
fn hamming_bound(min_similarity: f32, bits: u32) -> u32 {
    if min_similarity.is_nan() || min_similarity <= -1.0 {
        return u32::MAX;
    }
    let p = min_similarity.min(1.0).acos() / std::f32::consts::PI;
    let bits = bits as f32;
    let bound = bits * p + HAMMING_SIGMAS * (bits * p * (1.0 - p)).sqrt();
    (bound.ceil() as u32).saturating_add(1)
}

/// How far below the bound a node's 8-bit similarity may lie and still be re-ranked
/// exactly: quantisation moves a similarity by well under 0.01.
const QUANTISED_MARGIN: f32 = 0.03;

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
    /// Walk the graph on 1-bit sign codes of a rotated copy (one cache line a node at 384
    /// dimensions) and re-rank on the 8-bit copies, instead of walking on the 8-bit copies.
    pub binary_walk: bool,
    /// With a similarity bound, the walk expands its `ef_floor` nearest candidates and
    /// beyond them only the ones that may lie within the bound (see `walk_codes`).
    pub ef_floor: usize,
    /// How an insert finds and trims links. True: layer 0 is walked on the sign codes (as a
    /// search walks it), what the walk found is scored on the 8-bit copies, and a full
    /// neighbour list is trimmed in batches, dropping its farthest redundant links first
    /// (see `trim`). False: the walk on the 8-bit copies and the full selection heuristic
    /// at every overflow, as before (kept so that benches can compare both in one run).
    pub fast_construction: bool,
}

#[derive(Debug)]
pub struct Hnsw {
    dim: usize,
    params: HnswParams,
    vectors: Vec<f32>,
    quantised: Vec<i8>,
    scales: Vec<f32>,
    rotation: Rotation,
    /// Per node `code_lines` cache lines of sign bits (see `Rotation`).
    codes: Vec<CodeLine>,
    code_lines: usize,
    /// Layer 0, flat for the search: per node a count then `2m` slots, so expanding a node
    /// is one memory access instead of three pointer hops.
    layer0: Vec<u32>,
    /// The layers above 0, flat the same way: a node of level L > 0 owns L rows of `m + 1`
    /// slots (a count, then links); `upper_at[node]` = (its first row, L). The greedy descent
    /// then costs one memory access a step, not three.
    upper: Vec<u32>,
    upper_at: Vec<(u32, u32)>,
    /// rev[node][layer] = the nodes whose list at `layer` holds `node`: a removal repairs
    /// exactly the lists that pointed at the removed node, and no link outlives its target.
    rev: Vec<Vec<Vec<u32>>>,
    /// Removed: a tombstone (`delete`, still traversed) or a freed slot (`remove`).
    deleted: Vec<bool>,
    /// Slots freed by `remove`, reused by the next inserts.
    free: Vec<u32>,
    /// free_rows[L] = first rows of freed blocks of L upper rows, reused by nodes of level L.
    free_rows: Vec<Vec<u32>>,
    entry: Option<u32>,
    top_layer: usize,
    rng: u64,
    /// Changes since the last reachability sweep, in quarters: a removal counts 4, a trim
    /// 1 (an insert trims about four lists). See `keep_reachable`.
    unswept: usize,
    /// Live nodes that sweeps found stranded and linked back, in all (for benches and tests:
    /// how often the local repairs fall short).
    reconnected: u64,
}

/// Up to this many live nodes, the graph checks after every change that all of them can be
/// reached (a walk of at most 256 nodes' links); above it, once the removals since the last
/// check reach an eighth of the live nodes (or the trims half of them, see `unswept`).
const SWEEP_SMALL: usize = 256;
/// A node no walk from the entry reached (see `Hnsw::tree`).
const UNREACHED: u32 = u32::MAX;
/// What a removal and a trim add to `unswept`.
const REMOVAL: usize = 4;
const TRIM: usize = 1;

/// How many links a trim drops beyond the one that overflowed: trimming a full list (49
/// similarities, a few coverage tests) then happens once per `slack` new links instead of
/// at each one.
fn slack(max_links: usize) -> usize {
    (max_links / 8).max(1)
}

impl Hnsw {
    pub fn new(dim: usize, params: HnswParams) -> Self {
        let rotation = Rotation::new(dim);
        let code_lines = rotation.padded.div_ceil(512);
        Self {
            dim,
            params,
            vectors: Vec::new(),
            quantised: Vec::new(),
            scales: Vec::new(),
            rotation,
            codes: Vec::new(),
            code_lines,
            layer0: Vec::new(),
            upper: Vec::new(),
            upper_at: Vec::new(),
            rev: Vec::new(),
            deleted: Vec::new(),
            free: Vec::new(),
            free_rows: Vec::new(),
            entry: None,
            top_layer: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            unswept: 0,
            reconnected: 0,
        }
    }

    /// Slots, live or removed (node ids are below it).
    pub fn len(&self) -> usize {
        self.upper_at.len()
    }

    /// Change the search settings of a built graph (for tuning; construction is unchanged).
    pub fn set_search(&mut self, ef_search: usize, binary_walk: bool, ef_floor: usize) {
        self.params.ef_search = ef_search;
        self.params.ef_floor = ef_floor;
        self.params.binary_walk = binary_walk;
    }

    pub fn is_empty(&self) -> bool {
        self.upper_at.is_empty()
    }

    /// The stored vector of a node (empty for an unknown id).
    pub fn vector_of(&self, id: u32) -> &[f32] {
        self.vector(id)
    }

    fn vector(&self, id: u32) -> &[f32] {
        let start = id as usize * self.dim;
        self.vectors.get(start..start + self.dim).unwrap_or(&[])
    }

    fn level_of(&self, id: u32) -> usize {
        self.upper_at
            .get(id as usize)
            .map_or(0, |&(_, l)| l as usize)
    }

    fn is_live(&self, id: u32) -> bool {
        !self.deleted.get(id as usize).copied().unwrap_or(true)
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            self.params.m * 2
        } else {
            self.params.m
        }
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

    /// The graph's links (`links[node][layer]`), entry point and top layer: with the vectors,
    /// everything `from_parts` needs to rebuild the same graph without searching (the tuning
    /// examples keep a built 100k graph on disk this way). For a graph without removals.
    pub fn parts(&self) -> (Vec<Vec<Vec<u32>>>, Option<u32>, usize) {
        let links = (0..self.len() as u32)
            .map(|node| {
                (0..=self.level_of(node))
                    .map(|layer| self.neighbours(node, layer).to_vec())
                    .collect()
            })
            .collect();
        (links, self.entry, self.top_layer)
    }

    /// A graph from `parts()` and its vectors (in id order); `None` when they disagree.
    pub fn from_parts(
        dim: usize,
        params: HnswParams,
        vectors: &[Vec<f32>],
        links: Vec<Vec<Vec<u32>>>,
        entry: Option<u32>,
        top_layer: usize,
    ) -> Option<Self> {
        let n = vectors.len();
        let too_long = |layers: &Vec<Vec<u32>>| {
            layers
                .iter()
                .enumerate()
                .any(|(layer, list)| list.len() > if layer == 0 { params.m * 2 } else { params.m })
        };
        let entry_level = entry.and_then(|e| links.get(e as usize)).map(Vec::len);
        let reaches =
            |list: &u32, layer: usize| links.get(*list as usize).map(Vec::len) > Some(layer);
        if links.len() != n
            || vectors.iter().any(|v| v.len() != dim)
            || entry.is_some() != (n > 0)
            || entry.is_some() && entry_level != Some(top_layer + 1)
            || links.iter().any(too_long)
            || links.iter().any(Vec::is_empty)
            || links.iter().any(|layers| {
                layers
                    .iter()
                    .enumerate()
                    .any(|(layer, list)| !list.iter().all(|l| reaches(l, layer)))
            })
        {
            return None;
        }
        let mut graph = Self::new(dim, params);
        for (v, layers) in vectors.iter().zip(&links) {
            let query = Query::new(v, &graph.rotation);
            graph.push_slot(v, &query, layers.len() - 1);
        }
        for (node, layers) in links.into_iter().enumerate() {
            for (layer, list) in layers.into_iter().enumerate() {
                graph.set_links(node as u32, layer, &list);
            }
        }
        graph.entry = entry;
        graph.top_layer = top_layer;
        Some(graph)
    }

    /// Mark a node removed: still a path through the graph, never a result (a tombstone,
    /// until the owner rebuilds; `remove` takes the node out instead).
    pub fn delete(&mut self, id: u32) {
        if let Some(d) = self.deleted.get_mut(id as usize) {
            *d = true;
        }
    }

    /// Add a vector of the graph's dimension; returns its id (a slot freed by `remove`
    /// when there is one).
    pub fn insert(&mut self, vector: &[f32]) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                // SAFETY: the CPU supports AVX2 and POPCNT, checked just above.
                return unsafe { self.insert_avx2(vector) };
            }
        }
        self.insert_inner::<false>(vector)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn insert_avx2(&mut self, vector: &[f32]) -> u32 {
        self.insert_inner::<true>(vector)
    }

    /// A fresh slot at the end for a node of `level`, holding its vector and copies.
    fn push_slot(&mut self, vector: &[f32], query: &Query, level: usize) -> u32 {
        let id = u32::try_from(self.len()).unwrap_or(u32::MAX);
        self.vectors.extend_from_slice(vector);
        self.quantised.extend_from_slice(&query.q);
        self.codes.extend_from_slice(&query.code);
        self.scales.push(query.scale);
        self.layer0.resize(self.layer0.len() + self.stride(), 0);
        let first = self.take_rows(level);
        self.upper_at.push((first, level as u32));
        self.rev.push(vec![Vec::new(); level + 1]);
        self.deleted.push(false);
        id
    }

    /// A slot for a new node: a freed one refilled, or a fresh one.
    fn allocate(&mut self, vector: &[f32], query: &Query, level: usize) -> u32 {
        let Some(id) = self.free.pop() else {
            return self.push_slot(vector, query, level);
        };
        let i = id as usize;
        let (dim, lines) = (self.dim, self.code_lines);
        if let Some(slot) = self.vectors.get_mut(i * dim..(i + 1) * dim) {
            slot.copy_from_slice(vector);
        }
        if let Some(slot) = self.quantised.get_mut(i * dim..(i + 1) * dim) {
            slot.copy_from_slice(&query.q);
        }
        if let Some(slot) = self.codes.get_mut(i * lines..(i + 1) * lines) {
            slot.copy_from_slice(&query.code);
        }
        if let Some(scale) = self.scales.get_mut(i) {
            *scale = query.scale;
        }
        let first = self.take_rows(level);
        if let Some(at) = self.upper_at.get_mut(i) {
            *at = (first, level as u32);
        }
        if let Some(rev) = self.rev.get_mut(i) {
            *rev = vec![Vec::new(); level + 1];
        }
        if let Some(d) = self.deleted.get_mut(i) {
            *d = false;
        }
        id
    }

    /// The first of `level` empty upper rows: a freed block of that size, or new rows.
    fn take_rows(&mut self, level: usize) -> u32 {
        if level == 0 {
            return 0;
        }
        if let Some(first) = self.free_rows.get_mut(level).and_then(Vec::pop) {
            return first;
        }
        let width = self.params.m + 1;
        let first = u32::try_from(self.upper.len() / width).unwrap_or(u32::MAX);
        self.upper.resize(self.upper.len() + level * width, 0);
        first
    }

    #[inline(always)]
    fn insert_inner<const AVX2: bool>(&mut self, vector: &[f32]) -> u32 {
        let level = self.random_level();
        let query = Query::new(vector, &self.rotation);
        let id = self.allocate(vector, &query, level);
        let Some(mut entry) = self.entry else {
            self.entry = Some(id);
            self.top_layer = level;
            return id;
        };
        let fast = self.params.fast_construction;
        for layer in (level + 1..=self.top_layer).rev() {
            entry = if fast {
                self.greedy::<AVX2, true>(&query, entry, layer)
            } else {
                self.greedy::<AVX2, false>(&query, entry, layer)
            };
        }
        let mut visited = Visited::new(self.len());
        for layer in (0..=level.min(self.top_layer)).rev() {
            let found = if fast && layer == 0 {
                self.construction_walk::<AVX2>(&query, entry)
            } else {
                self.search_layer::<AVX2>(
                    &query,
                    &[entry],
                    self.params.ef_construction,
                    layer,
                    &mut visited,
                )
            };
            let max_links = self.max_links(layer);
            let chosen: Vec<u32> = if fast {
                self.select_fast::<AVX2>(&found, self.params.m)
            } else {
                self.select::<AVX2>(&found, self.params.m)
            };
            if let Some(best) = found.first() {
                entry = best.id;
            }
            for &n in &chosen {
                if fast {
                    self.link_fast::<AVX2>(n, id, layer);
                } else {
                    self.link::<AVX2>(n, id, layer, max_links);
                }
            }
            self.set_links(id, layer, &chosen);
        }
        if level > self.top_layer {
            self.top_layer = level;
            self.entry = Some(id);
        }
        self.keep_reachable::<AVX2>();
        id
    }

    /// Layer 0 of an insert: the `ef_construction` nodes nearest by sign code, scored on
    /// their 8-bit copies, most similar first (removed nodes left out).
    #[inline(always)]
    fn construction_walk<const AVX2: bool>(&self, query: &Query, entry: u32) -> Vec<Scored> {
        let ef = self.params.ef_construction.max(1);
        let ids = self.walk_codes(&query.code, entry, ef, ef, u32::MAX);
        for &(id, _) in &ids {
            self.prefetch::<false>(id);
        }
        let mut found: Vec<Scored> = ids
            .into_iter()
            .filter(|&(id, _)| self.is_live(id))
            .map(|(id, _)| Scored {
                sim: self.sim::<AVX2>(query, id),
                id,
            })
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        found
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

    /// `select` without a copy of the candidate's vector per comparison.
    #[inline(always)]
    fn select_fast<const AVX2: bool>(&self, found: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in found {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|&k| self.sim_pair::<AVX2>(c.id, k) < c.sim) {
                kept.push(c.id);
            }
        }
        for c in found {
            if kept.len() >= m {
                break;
            }
            if !kept.contains(&c.id) {
                kept.push(c.id);
            }
        }
        kept
    }

    #[inline(always)]
    fn link<const AVX2: bool>(&mut self, from: u32, to: u32, layer: usize, max_links: usize) {
        if self.row_span(from, layer).is_none() {
            return;
        }
        let mut list = self.neighbours(from, layer).to_vec();
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
            self.unswept += TRIM;
        }
        self.set_links(from, layer, &list);
    }

    /// Add `to` to `from`'s list at `layer`; a full list is trimmed by `slack` more links
    /// than needed, so the next few additions cost an append.
    #[inline(always)]
    fn link_fast<const AVX2: bool>(&mut self, from: u32, to: u32, layer: usize) {
        let Some((upper, start, width)) = self.row_span(from, layer) else {
            return;
        };
        let max_links = self.max_links(layer);
        let current = self.neighbours(from, layer);
        if current.contains(&to) || from == to {
            return;
        }
        if current.len() < max_links.min(width - 1) {
            let rows = if upper {
                &mut self.upper
            } else {
                &mut self.layer0
            };
            if let Some(count) = rows.get(start).copied() {
                if let Some(slot) = rows.get_mut(start + 1 + count as usize) {
                    *slot = to;
                }
                if let Some(c) = rows.get_mut(start) {
                    *c = count + 1;
                }
            }
            if let Some(rev) = self.rev.get_mut(to as usize).and_then(|r| r.get_mut(layer)) {
                rev.push(from);
            }
            return;
        }
        let mut list = current.to_vec();
        list.push(to);
        let kept = self.trim::<AVX2>(
            from,
            layer,
            &list,
            max_links.saturating_sub(slack(max_links)),
        );
        self.set_links(from, layer, &kept);
        self.unswept += TRIM;
    }

    /// Shrink `owner`'s candidate links at `layer` to `target` (or at least to the row's
    /// width): the farthest links that a nearer kept one covers go first (the selection
    /// heuristic read from the far end: a covered node is reached through its coverer), then
    /// the farthest. A node that no other list links to at this layer is kept while any
    /// other can go, so a trim never strands a node.
    #[inline(always)]
    fn trim<const AVX2: bool>(
        &self,
        owner: u32,
        layer: usize,
        candidates: &[u32],
        target: usize,
    ) -> Vec<u32> {
        let hard = self.max_links(layer);
        let mut scored: Vec<Scored> = candidates
            .iter()
            .map(|&id| Scored {
                sim: self.sim_pair::<AVX2>(owner, id),
                id,
            })
            .collect();
        scored.sort_by(|a, b| b.cmp(a));
        let n = scored.len();
        let mut keep = vec![true; n];
        let mut count = n;
        let sole = |id: u32| {
            self.rev
                .get(id as usize)
                .and_then(|r| r.get(layer))
                .is_none_or(|r| r.iter().all(|&from| from == owner))
        };
        for i in (0..n).rev() {
            if count <= target {
                break;
            }
            let c = scored[i];
            if sole(c.id) {
                continue;
            }
            let covered =
                (0..i).any(|j| keep[j] && self.sim_pair::<AVX2>(c.id, scored[j].id) > c.sim);
            if covered {
                keep[i] = false;
                count -= 1;
            }
        }
        for pass in 0..2 {
            for i in (0..n).rev() {
                let bound = if pass == 0 { target } else { hard };
                if count <= bound {
                    break;
                }
                if keep[i] && (pass == 1 || !sole(scored[i].id)) {
                    keep[i] = false;
                    count -= 1;
                }
            }
        }
        scored
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(s, _)| s.id)
            .collect()
    }

    /// Take a node out of the graph and repair around it: each node that linked to it takes
    /// its out-neighbour most similar to it in its place, so paths through it survive; its
    /// slot is reused by a later insert.
    pub fn remove(&mut self, id: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                // SAFETY: the CPU supports AVX2 and POPCNT, checked just above.
                return unsafe { self.remove_avx2(id) };
            }
        }
        self.remove_inner::<false>(id);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn remove_avx2(&mut self, id: u32) {
        self.remove_inner::<true>(id);
    }

    #[inline(always)]
    fn remove_inner<const AVX2: bool>(&mut self, x: u32) {
        if !self.is_live(x) {
            return;
        }
        if let Some(d) = self.deleted.get_mut(x as usize) {
            *d = true;
        }
        let level = self.level_of(x);
        for layer in 0..=level {
            let outs: Vec<u32> = self.neighbours(x, layer).to_vec();
            self.set_links(x, layer, &[]);
            let ins: Vec<u32> = self
                .rev
                .get(x as usize)
                .and_then(|r| r.get(layer))
                .cloned()
                .unwrap_or_default();
            let max_links = self.max_links(layer);
            for y in ins {
                let mut list: Vec<u32> = self
                    .neighbours(y, layer)
                    .iter()
                    .copied()
                    .filter(|&n| n != x)
                    .collect();
                // `x`'s place goes to its out-neighbour most similar to `y`. A trim would
                // weigh every candidate against every other; this costs one similarity per
                // out-neighbour, and filling more places would leave lists full, so that
                // later inserts trim them more often (insert p50 at 100k after a turnover:
                // 307 µs with every free place filled).
                let room = max_links.saturating_sub(list.len()).min(1);
                let mut offered: Vec<Scored> = outs
                    .iter()
                    .copied()
                    .filter(|&z| z != y && !list.contains(&z) && self.is_live(z))
                    .map(|z| Scored {
                        sim: self.sim_pair::<AVX2>(y, z),
                        id: z,
                    })
                    .collect();
                offered.sort_by(|a, b| b.cmp(a));
                list.extend(offered.iter().take(room).map(|s| s.id));
                self.set_links(y, layer, &list);
            }
            // A node only `x` linked to, with no in-neighbour of `x` to take it over: its
            // most similar out-neighbour links to it instead.
            for &z in &outs {
                let stranded = self
                    .rev
                    .get(z as usize)
                    .and_then(|r| r.get(layer))
                    .is_some_and(Vec::is_empty);
                if !stranded || !self.is_live(z) || self.entry == Some(z) {
                    continue;
                }
                let adopter = self
                    .neighbours(z, layer)
                    .iter()
                    .copied()
                    .filter(|&p| self.is_live(p))
                    .max_by(|&a, &b| {
                        self.sim_pair::<AVX2>(z, a)
                            .total_cmp(&self.sim_pair::<AVX2>(z, b))
                    });
                if let Some(p) = adopter {
                    self.link_fast::<AVX2>(p, z, layer);
                }
            }
        }
        if let Some((first, levels)) = self.upper_at.get(x as usize).copied() {
            if levels > 0 {
                if self.free_rows.len() <= levels as usize {
                    self.free_rows.resize(levels as usize + 1, Vec::new());
                }
                if let Some(rows) = self.free_rows.get_mut(levels as usize) {
                    rows.push(first);
                }
            }
        }
        if let Some(at) = self.upper_at.get_mut(x as usize) {
            *at = (0, 0);
        }
        if let Some(rev) = self.rev.get_mut(x as usize) {
            *rev = vec![Vec::new()];
        }
        self.free.push(x);
        if self.entry == Some(x) {
            // The live node of the highest level takes over (a scan, once per removal of
            // the entry point).
            let next = (0..self.len() as u32)
                .filter(|&n| self.is_live(n))
                .max_by_key(|&n| (self.level_of(n), std::cmp::Reverse(n)));
            self.entry = next;
            self.top_layer = next.map_or(0, |n| self.level_of(n));
        }
        self.unswept += REMOVAL;
        self.keep_reachable::<AVX2>();
    }

    /// How many live nodes reachability sweeps have linked back so far.
    pub fn reconnected(&self) -> u64 {
        self.reconnected
    }

    /// The local repairs (a removed node's in-neighbours take its place, a trim keeps a
    /// node's last in-link) make stranded nodes rare, not impossible: a removal can take the
    /// only path into a small cluster whose nodes link only each other (its in-neighbours
    /// each take one replacement link, which may lead elsewhere), and a trim can drop the
    /// only link into such a cluster. So the graph checks itself and links back what it
    /// finds stranded: after every change while it is small, else once the removals since
    /// the last check reach an eighth of its live nodes (a trim counts a quarter of a
    /// removal), so a check (a walk of every link: 36-180 ms at 100k nodes of 48 links,
    /// by the machine's load) costs
    /// each removal the links of 8 nodes, amortised.
    #[inline(always)]
    fn keep_reachable<const AVX2: bool>(&mut self) {
        let live = self.len().saturating_sub(self.free.len());
        if self.unswept == 0 || (live > SWEEP_SMALL && self.unswept * 8 < live * REMOVAL) {
            return;
        }
        self.unswept = 0;
        self.reconnected += self.reconnect::<AVX2>() as u64;
    }

    /// Link every live node that the entry cannot reach on layer 0 from the most similar
    /// node it can reach; returns how many there were. The walk from the entry records the
    /// link that first reached each node (a tree of links); a new link never displaces a
    /// tree link, so what was reached stays reached, and each stranded node linked back
    /// brings whatever it reaches with it.
    #[cold]
    #[inline(never)]
    fn reconnect<const AVX2: bool>(&mut self) -> usize {
        let Some(entry) = self.entry else {
            return 0;
        };
        let n = self.len();
        let mut parent = self.tree(entry);
        let mut stack = Vec::new();
        let mut stranded = 0;
        let mut visited = Visited::new(n);
        let max_links = self.max_links(0);
        let ef = self.params.ef_construction.clamp(8, 64);
        for u in 0..n as u32 {
            if parent.get(u as usize) != Some(&UNREACHED) || !self.is_live(u) {
                continue;
            }
            stranded += 1;
            let query = Query::new(self.vector(u), &self.rotation);
            // A walk from the entry follows links only: everything it finds is reached.
            let found = self.search_layer::<AVX2>(&query, &[entry], ef, 0, &mut visited);
            for p in found.iter().map(|s| s.id) {
                if p == u || !self.is_live(p) {
                    continue;
                }
                let mut list = self.neighbours(p, 0).to_vec();
                if list.len() < max_links {
                    list.push(u);
                } else {
                    // In place of `p`'s least similar link that is not a tree link.
                    let spare = list
                        .iter()
                        .enumerate()
                        .filter(|&(_, &t)| parent.get(t as usize) != Some(&p))
                        .min_by(|a, b| {
                            self.sim_pair::<AVX2>(p, *a.1)
                                .total_cmp(&self.sim_pair::<AVX2>(p, *b.1))
                        })
                        .map(|(at, _)| at);
                    let Some(at) = spare else {
                        continue;
                    };
                    list[at] = u;
                }
                self.set_links(p, 0, &list);
                if let Some(slot) = parent.get_mut(u as usize) {
                    *slot = p;
                }
                stack.push(u);
                self.spread(&mut parent, &mut stack);
                break;
            }
        }
        stranded
    }

    /// The walk of layer 0 from `entry`: for each node the node it was first reached from
    /// (`entry` for itself), or `UNREACHED`.
    fn tree(&self, entry: u32) -> Vec<u32> {
        let mut parent = vec![UNREACHED; self.len()];
        if let Some(p) = parent.get_mut(entry as usize) {
            *p = entry;
        }
        self.spread(&mut parent, &mut vec![entry]);
        parent
    }

    /// Walk layer 0 from the nodes on `stack`, recording for each newly reached node the node
    /// it was reached from.
    fn spread(&self, parent: &mut [u32], stack: &mut Vec<u32>) {
        while let Some(node) = stack.pop() {
            for &next in self.neighbours(node, 0) {
                if let Some(slot) = parent.get_mut(next as usize) {
                    if *slot == UNREACHED {
                        *slot = node;
                        stack.push(next);
                    }
                }
            }
        }
    }

    /// Whether the graph's links agree with themselves (for tests): every link is to a live
    /// node that has the layer, lists hold no repeats nor the node itself and fit their row,
    /// `rev` mirrors the lists, the entry is live at the top layer, and every live node can
    /// be reached from the entry on layer 0. Returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len() as u32;
        for node in 0..n {
            let live = self.is_live(node);
            for layer in 0..=self.level_of(node) {
                let list = self.neighbours(node, layer);
                if !live && !list.is_empty() {
                    return Err(format!("removed {node} keeps links at {layer}"));
                }
                for (i, &t) in list.iter().enumerate() {
                    if t == node || list[..i].contains(&t) {
                        return Err(format!("{node} lists {t} twice or itself"));
                    }
                    if !self.is_live(t) || self.level_of(t) < layer {
                        return Err(format!("{node} links to removed {t} at {layer}"));
                    }
                    let back = self.rev.get(t as usize).and_then(|r| r.get(layer));
                    if !back.is_some_and(|b| b.contains(&node)) {
                        return Err(format!("rev of {t} misses {node} at {layer}"));
                    }
                }
                let back = self.rev.get(node as usize).and_then(|r| r.get(layer));
                for &from in back.map_or(&[][..], Vec::as_slice) {
                    if !self.neighbours(from, layer).contains(&node) {
                        return Err(format!("rev of {node} holds {from}, which has no link"));
                    }
                }
            }
        }
        let live = (0..n).filter(|&id| self.is_live(id)).count();
        let Some(entry) = self.entry else {
            return if live == 0 {
                Ok(())
            } else {
                Err("no entry".into())
            };
        };
        if !self.is_live(entry) || self.level_of(entry) != self.top_layer {
            return Err(format!("entry {entry} removed or not at the top layer"));
        }
        if (0..n).any(|id| self.is_live(id) && self.level_of(id) > self.top_layer) {
            return Err("a node above the top layer".into());
        }
        let reached = self.tree(entry).iter().filter(|&&p| p != UNREACHED).count();
        if reached != live {
            return Err(format!("{reached} of {live} live nodes reachable"));
        }
        Ok(())
    }

    fn stride(&self) -> usize {
        self.params.m * 2 + 1
    }

    /// Where a node's row of `layer` lies: (the flat array, its start, its width).
    #[inline(always)]
    fn row_span(&self, node: u32, layer: usize) -> Option<(bool, usize, usize)> {
        if layer == 0 {
            let width = self.stride();
            return Some((false, node as usize * width, width));
        }
        let width = self.params.m + 1;
        let &(first, levels) = self.upper_at.get(node as usize)?;
        (layer <= levels as usize).then(|| (true, (first as usize + layer - 1) * width, width))
    }

    /// Replace a node's list at `layer` (cut to its row), keeping `rev` in step.
    fn set_links(&mut self, node: u32, layer: usize, list: &[u32]) {
        let Some((upper, start, width)) = self.row_span(node, layer) else {
            return;
        };
        let list = list.get(..list.len().min(width - 1)).unwrap_or(&[]);
        let old: Vec<u32> = self.neighbours(node, layer).to_vec();
        for (i, &t) in old.iter().enumerate() {
            if !list.contains(&t) && !old[..i].contains(&t) {
                if let Some(rev) = self.rev.get_mut(t as usize).and_then(|r| r.get_mut(layer)) {
                    if let Some(at) = rev.iter().position(|&f| f == node) {
                        rev.swap_remove(at);
                    }
                }
            }
        }
        for (i, &t) in list.iter().enumerate() {
            if !old.contains(&t) && !list[..i].contains(&t) {
                if let Some(rev) = self.rev.get_mut(t as usize).and_then(|r| r.get_mut(layer)) {
                    rev.push(node);
                }
            }
        }
        let rows = if upper {
            &mut self.upper
        } else {
            &mut self.layer0
        };
        if let Some(row) = rows.get_mut(start..start + width) {
            row[0] = list.len() as u32;
            row[1..=list.len()].copy_from_slice(list);
        }
    }

    #[inline(always)]
    fn neighbours(&self, node: u32, layer: usize) -> &[u32] {
        let Some((upper, start, _)) = self.row_span(node, layer) else {
            return &[];
        };
        let rows = if upper { &self.upper } else { &self.layer0 };
        let n = rows.get(start).copied().unwrap_or(0) as usize;
        rows.get(start + 1..start + 1 + n).unwrap_or(&[])
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
    fn prefetch<const BIN: bool>(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        if BIN {
            let start = node as usize * self.code_lines;
            if let Some(lines) = self.codes.get(start..start + self.code_lines) {
                for line in lines {
                    // SAFETY: a prefetch is only a hint and the pointer is in bounds.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            (line as *const CodeLine).cast::<i8>(),
                        );
                    }
                }
            }
        } else {
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
    fn greedy<const AVX2: bool, const BIN: bool>(
        &self,
        query: &Query,
        mut at: u32,
        layer: usize,
    ) -> u32 {
        let mut best = self.walk_sim::<AVX2, BIN>(query, at);
        loop {
            let mut moved = false;
            let neighbours = self.neighbours(at, layer);
            for &n in neighbours {
                self.prefetch::<BIN>(n);
            }
            for &n in neighbours {
                let sim = self.walk_sim::<AVX2, BIN>(query, n);
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

    /// Best-first search of one layer on the 8-bit copies (construction, and searches with
    /// `binary_walk` off; the walk on sign codes is `walk_codes`); results most similar first.
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
                    self.prefetch::<false>(n);
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

    /// Up to `k` live nodes most similar to `query` with a similarity of at least
    /// `min_similarity`, as (id, similarity), best first. The bound lets the search skip the
    /// work of scoring nodes that cannot reach it (see `search_inner`); -1 skips nothing.
    pub fn search(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<(u32, f32)> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                // SAFETY: the CPU supports AVX2 and POPCNT, checked just above.
                return unsafe { self.search_avx2(query, k, min_similarity) };
            }
        }
        self.search_inner::<false>(query, k, min_similarity)
    }

    /// The whole walk compiled for AVX2 and POPCNT, so the per-node distance is inlined and
    /// vectorised instead of a call through a feature check for each of ~1,000 nodes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn search_avx2(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<(u32, f32)> {
        self.search_inner::<true>(query, k, min_similarity)
    }

    /// After the walk, each stage reads more memory per node than the one before (sign code
    /// 64 bytes, 8-bit copy 384, exact vector 1,536), and each one only passes on the nodes
    /// that can still reach `min_similarity`: a node whose Hamming distance puts its angle
    /// far past the bound is not scored on its 8-bit copy, and one whose 8-bit similarity
    /// is clearly below it is not re-ranked exactly. Most lookups in a cache are misses, so
    /// most of them end after the walk; reading less also keeps the codes and links in the
    /// CPU cache for the next lookup.
    #[inline(always)]
    fn search_inner<const AVX2: bool>(
        &self,
        query: &[f32],
        k: usize,
        min_similarity: f32,
    ) -> Vec<(u32, f32)> {
        let Some(mut entry) = self.entry else {
            return Vec::new();
        };
        if query.len() != self.dim {
            return Vec::new();
        }
        let q = Query::new(query, &self.rotation);
        let ef = self.params.ef_search.max(k);
        let live = |id: &u32| !self.deleted.get(*id as usize).copied().unwrap_or(true);
        let mut found: Vec<Scored> = if self.params.binary_walk {
            for layer in (1..=self.top_layer).rev() {
                entry = self.greedy::<AVX2, true>(&q, entry, layer);
            }
            // The sign codes only steer the walk: score what it found on the 8-bit copies.
            let bound = hamming_bound(min_similarity, self.code_bits());
            let floor = self.params.ef_floor.max(k);
            let ids: Vec<u32> = self
                .walk_codes(&q.code, entry, ef, floor, bound)
                .into_iter()
                .take_while(|&(_, distance)| distance <= bound)
                .map(|(id, _)| id)
                .filter(live)
                .collect();
            for &id in &ids {
                self.prefetch::<false>(id);
            }
            ids.into_iter()
                .map(|id| Scored {
                    sim: self.sim::<AVX2>(&q, id),
                    id,
                })
                .collect()
        } else {
            for layer in (1..=self.top_layer).rev() {
                entry = self.greedy::<AVX2, false>(&q, entry, layer);
            }
            let mut visited = Visited::new(self.len());
            self.search_layer::<AVX2>(&q, &[entry], ef, 0, &mut visited)
                .into_iter()
                .filter(|s| live(&s.id))
                .collect()
        };
        found.sort_by(|a, b| b.cmp(a));
        // Quantisation moves a similarity by well under 0.01, so only the best 2k approximate
        // candidates can be among the exact best k: re-rank just those (each exact dot reads
        // 1.5 KB that the walk never touched).
        let mut exact: Vec<(u32, f32)> = found
            .into_iter()
            .take(k.saturating_mul(2).max(16))
            .take_while(|s| s.sim >= min_similarity - QUANTISED_MARGIN)
            .map(|s| (s.id, dot(query, self.vector(s.id))))
            .filter(|(_, sim)| *sim >= min_similarity)
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        exact.truncate(k);
        exact
    }

    /// Best-first search of layer 0 by Hamming distance between sign codes: the `ef` nodes
    /// nearest the query's code. A node at rank `floor` or beyond is only expanded when its
    /// distance is within `bound` (a node that may reach the caller's similarity bound):
    /// far from the bound, the walk is an `floor`-wide beam that finds where the query
    /// lies; near it, `ef` wide, for the recall of the nodes that can be returned. The candidates live in one sorted array of at most `ef`
    /// entries packed as `distance << 33 | id << 1 | expanded`, so comparisons are integer
    /// ones and an insertion is a binary search and a short move; the walk expands the
    /// nearest entry not yet expanded until none is left. A node's unvisited neighbours are
    /// gathered (without branching on the visited bit) and prefetched first, then measured
    /// together, so their loads overlap.
    #[inline(always)]
    fn walk_codes(
        &self,
        code: &[CodeLine],
        entry: u32,
        ef: usize,
        floor: usize,
        bound: u32,
    ) -> Vec<(u32, u32)> {
        const EXPANDED: u64 = 1;
        let pack = |distance: u32, id: u32| (u64::from(distance) << 33) | (u64::from(id) << 1);
        let mut visited = Visited::new(self.len());
        visited.insert(entry);
        let ef = ef.max(1);
        let floor = floor.clamp(1, ef);
        let bound = u64::from(bound);
        let mut pool: Vec<u64> = Vec::with_capacity(ef + 1);
        pool.push(pack(self.hamming(code, entry), entry));
        let mut batch: Vec<u32> = vec![0; self.stride()];
        let mut distances: Vec<u32> = Vec::with_capacity(self.stride());
        let mut cursor = 0;
        while let Some(current) = pool.get_mut(cursor) {
            // Sorted: once the nearest unexpanded entry is past both the floor and the
            // bound, so is every other one. (The pool's trim below drops such entries, so
            // this is a guard, not the usual way out.)
            if cursor >= floor && (*current >> 33) > bound {
                break;
            }
            *current |= EXPANDED;
            let node = (*current >> 1) as u32;
            // Test every bit first and set them after: setting as we go makes each test wait
            // for the store before it when two neighbours share a word of the bitmap.
            let mut count = 0;
            for &n in self.neighbours(node, 0) {
                if let Some(slot) = batch.get_mut(count) {
                    *slot = n;
                }
                count += usize::from(!visited.contains(n));
            }
            // Set the bits, keeping only the first of any id listed twice (a list loaded by
            // `from_parts` may repeat one; a repeated key would unsort the pool).
            let mut unique = 0;
            for at in 0..count {
                let n = batch.get(at).copied().unwrap_or(0);
                if let Some(slot) = batch.get_mut(unique) {
                    *slot = n;
                }
                unique += usize::from(visited.insert(n));
            }
            let batch = batch.get(..unique).unwrap_or(&[]);
            for &n in batch {
                self.prefetch::<true>(n);
            }
            // The next node to expand is likely the next unexpanded entry: start loading its
            // link list now, behind this node's work.
            if let Some(next) = pool
                .get(cursor + 1..)
                .and_then(|rest| rest.iter().find(|k| *k & EXPANDED == 0))
            {
                self.prefetch_links((next >> 1) as u32, 0);
            }
            distances.clear();
            // A plain loop, not `extend`: it stays inside this function's target features.
            for &n in batch {
                distances.push(self.hamming(code, n));
            }
            let mut lowest = usize::MAX;
            for (&n, &distance) in batch.iter().zip(&distances) {
                let key = pack(distance, n);
                // Past the floor, an entry beyond the bound is never expanded nor returned:
                // the pool keeps `floor` entries whatever their distance and up to `ef`
                // within the bound.
                let keep = if u64::from(distance) > bound {
                    floor
                } else {
                    ef
                };
                if pool.len() >= keep && pool.get(keep - 1).is_some_and(|&w| key >= w) {
                    continue;
                }
                let at = pool.partition_point(|&k| k < key);
                pool.insert(at, key);
                while pool.len() > ef
                    || (pool.len() > floor && pool.last().is_some_and(|&w| (w >> 33) > bound))
                {
                    pool.pop();
                }
                lowest = lowest.min(at);
            }
            cursor = cursor.min(lowest);
            while pool.get(cursor).is_some_and(|k| k & EXPANDED != 0) {
                cursor += 1;
            }
        }
        pool.into_iter()
            .map(|k| ((k >> 1) as u32, (k >> 33) as u32))
            .collect()
    }

    /// Bits in a node's sign code.
    fn code_bits(&self) -> u32 {
        u32::try_from(self.code_lines * 512).unwrap_or(u32::MAX / 2)
    }

    /// Hamming distance between the query's sign code and a node's (one more than the code's
    /// bits for an unknown id: farther than any node, and small enough to pack).
    #[inline(always)]
    fn hamming(&self, code: &[CodeLine], id: u32) -> u32 {
        let start = id as usize * self.code_lines;
        let Some(node) = self.codes.get(start..start + self.code_lines) else {
            return self.code_bits() + 1;
        };
        node.iter()
            .zip(code)
            .map(|(a, b)| {
                a.0.iter()
                    .zip(&b.0)
                    .map(|(x, y)| (x ^ y).count_ones())
                    .sum::<u32>()
            })
            .sum()
    }

    /// The similarity the walk steers by: sign-code agreement or the 8-bit dot product.
    #[inline(always)]
    fn walk_sim<const AVX2: bool, const BIN: bool>(&self, query: &Query, id: u32) -> f32 {
        if BIN {
            -(self.hamming(&query.code, id) as f32)
        } else {
            self.sim::<AVX2>(query, id)
        }
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

    /// 8-bit similarity of two nodes.
    #[inline(always)]
    fn sim_pair<const AVX2: bool>(&self, a: u32, b: u32) -> f32 {
        let (sa, sb) = (a as usize * self.dim, b as usize * self.dim);
        let (Some(qa), Some(qb)) = (
            self.quantised.get(sa..sa + self.dim),
            self.quantised.get(sb..sb + self.dim),
        ) else {
            return f32::NEG_INFINITY;
        };
        #[cfg(target_arch = "x86_64")]
        let dot = if AVX2 {
            // SAFETY: AVX2 is true only inside the `_avx2` entries, after the CPU check.
            unsafe { dot_i8_avx2(qa, qb) }
        } else {
            dot_i8_portable(qa, qb)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let dot = dot_i8_portable(qa, qb);
        let scale = |id: u32| self.scales.get(id as usize).copied().unwrap_or(0.0);
        dot as f32 * scale(a) * scale(b)
    }

    #[inline(always)]
    fn sim_nodes<const AVX2: bool>(&self, a: u32, b: u32) -> f32 {
        let start = a as usize * self.dim;
        match self.quantised.get(start..start + self.dim) {
            Some(q) => {
                let query = Query {
                    q: q.to_vec(),
                    scale: self.scales.get(a as usize).copied().unwrap_or(0.0),
                    code: Vec::new(),
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
    code: Vec<CodeLine>,
}

impl Query {
    /// Inlined so that, in a search, it compiles with the search's target features.
    #[inline(always)]
    fn new(v: &[f32], rotation: &Rotation) -> Self {
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let inv = 1.0 / scale;
        // Round half away from zero without a libm call per element (this vectorises).
        let q = v
            .iter()
            .map(|x| ((x * inv + 0.5f32.copysign(*x)) as i32).clamp(-127, 127) as i8)
            .collect();
        Self {
            q,
            scale,
            code: rotation.code(v),
        }
    }
}

/// 512 sign bits, aligned so that one node's code is exactly one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct CodeLine([u64; 8]);

/// A fixed pseudo-random rotation (two rounds of random signs and a Walsh–Hadamard
/// transform over the dimension padded to a power of two): the signs of a rotated vector
/// are a SimHash, whose Hamming distances estimate angles even for sparse inputs.
#[derive(Debug)]
struct Rotation {
    padded: usize,
    signs: Vec<[f32; 2]>,
}

impl Rotation {
    fn new(dim: usize) -> Self {
        let padded = dim.max(512).next_power_of_two();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut bit = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state & 1 == 0 {
                1.0
            } else {
                -1.0
            }
        };
        let signs = (0..padded).map(|_| [bit(), bit()]).collect();
        Self { padded, signs }
    }

    #[inline(always)]
    fn code(&self, v: &[f32]) -> Vec<CodeLine> {
        let mut x = vec![0.0f32; self.padded];
        for (slot, value) in x.iter_mut().zip(v) {
            *slot = *value;
        }
        for round in 0..2 {
            for (slot, s) in x.iter_mut().zip(&self.signs) {
                *slot *= s[round];
            }
            fwht(&mut x);
        }
        let mut lines = vec![CodeLine::default(); self.padded.div_ceil(512)];
        let words = lines.iter_mut().flat_map(|l| l.0.iter_mut());
        for (word, values) in words.zip(x.chunks(64)) {
            *word = values
                .iter()
                .enumerate()
                .fold(0u64, |w, (bit, v)| w | (u64::from(*v > 0.0) << bit));
        }
        lines
    }
}

/// In-place fast Walsh–Hadamard transform (length a power of two; unnormalised).
#[inline(always)]
fn fwht(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (u, v) = (*a, *b);
                *a = u + v;
                *b = u - v;
            }
        }
        h *= 2;
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
        // No branch on the bit itself: whether a neighbour was seen is a coin toss the
        // branch predictor would lose.
        match self.bits.get_mut(word) {
            Some(w) => {
                let fresh = *w & bit == 0;
                *w |= bit;
                fresh
            }
            None => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn hamming_bound_grows_as_the_similarity_bound_falls() {
        use super::hamming_bound;
        assert_eq!(hamming_bound(-1.0, 512), u32::MAX);
        assert_eq!(hamming_bound(f32::NAN, 512), u32::MAX);
        let bounds: Vec<u32> = [1.0f32, 0.95, 0.9, 0.8, 0.5, 0.0, -0.5]
            .iter()
            .map(|&s| hamming_bound(s, 512))
            .collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        // Identical vectors differ in no bit: the bound at similarity 1 is tiny.
        assert!(bounds[0] <= 2, "{bounds:?}");
        // At 0.9 (25.8 degrees, 14.4% of bits expected to differ) the bound sits five
        // standard errors (~7.9 bits each) above the expected 73.5 bits.
        assert!((110..=116).contains(&bounds[2]), "{bounds:?}");
        assert!(hamming_bound(1.5, 512) <= 2);
    }

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

    fn params(m: usize) -> super::HnswParams {
        super::HnswParams {
            m,
            ef_construction: 32,
            ef_search: 32,
            binary_walk: true,
            ef_floor: 8,
            fast_construction: true,
        }
    }

    /// `n` unit vectors of dimension 16 from a fixed xorshift.
    fn unit_vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..16)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % 2001) as f32 / 1000.0 - 1.0
                    })
                    .collect();
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
                v.into_iter().map(|a| a / norm).collect()
            })
            .collect()
    }

    /// Cut every layer-0 link into `cut` from outside it (a cluster only reachable through
    /// links the repairs lost), as `check` then reports.
    fn strand(graph: &mut super::Hnsw, cut: &[u32]) {
        for node in 0..graph.len() as u32 {
            if cut.contains(&node) {
                continue;
            }
            let kept: Vec<u32> = graph
                .neighbours(node, 0)
                .iter()
                .copied()
                .filter(|t| !cut.contains(t))
                .collect();
            graph.set_links(node, 0, &kept);
        }
    }

    #[test]
    fn a_sweep_links_a_stranded_cluster_back_and_keeps_what_was_reached() {
        let mut graph = super::Hnsw::new(16, params(3));
        for v in unit_vectors(120, 7) {
            graph.insert(&v);
        }
        graph.check().unwrap();
        let entry = graph.entry.unwrap();
        let cut: Vec<u32> = (0..120u32).filter(|&n| n != entry).take(5).collect();
        strand(&mut graph, &cut);
        let err = graph.check().unwrap_err();
        assert!(err.contains("live nodes reachable"), "{err}");
        let before = graph.reconnected();
        let linked = graph.reconnect::<false>();
        assert!((1..=5).contains(&linked), "{linked}");
        assert_eq!(
            graph.reconnected(),
            before,
            "reconnect alone does not count"
        );
        graph.check().unwrap();
        // Nothing is left to link back.
        assert_eq!(graph.reconnect::<false>(), 0);
    }

    #[test]
    fn a_large_graph_sweeps_once_its_removals_reach_an_eighth() {
        let n = super::SWEEP_SMALL * 2;
        let vectors = unit_vectors(n, 11);
        let mut graph = super::Hnsw::new(16, params(4));
        let ids: Vec<u32> = vectors.iter().map(|v| graph.insert(v)).collect();
        graph.check().unwrap();
        let entry = graph.entry.unwrap();
        let cut: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&i| i != entry)
            .take(3)
            .collect();
        strand(&mut graph, &cut);
        graph.unswept = 0;
        assert!(graph.check().is_err());
        let before = graph.reconnected();
        // Removals of nodes outside the cut: the sweep comes within n/8 of them.
        let mut removed = 0;
        for &id in ids.iter().rev() {
            if graph.check().is_ok() {
                break;
            }
            if cut.contains(&id) || Some(id) == graph.entry {
                continue;
            }
            graph.remove(id);
            removed += 1;
        }
        graph.check().unwrap();
        assert!(removed <= n / 8 + 1, "{removed} removals before a sweep");
        assert!(graph.reconnected() > before);
    }
}
