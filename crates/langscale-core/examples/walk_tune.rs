//! Tuning the graph walk: builds one HNSW graph of `LS_N` (default 100,000) embedding-like
//! vectors, then for each search setting reports recall@1 against an exact scan and the
//! per-query wall-clock time (p50 and minimum). `LS_M` and `LS_EFC` change the graph's links
//! per node and construction breadth; `LS_EFS` (a list) and `LS_BIN` (0, 1 or both) the search.
//! Run: `cargo run --release -p langscale-core --example walk_tune`.

use std::time::Instant;

use langscale_core::cache::hnsw::{Hnsw, HnswParams};
use langscale_core::cache::index::{dot, GraphParams};

mod common;
use common::{dataset, normalised, Rng, DIM};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The graph for these settings: read from `LS_GRAPH_DIR` when an earlier run left it there
/// (a 100k build takes minutes; searches are what is being tuned), else built (and saved).
fn build(n: usize, params: HnswParams, data: &[Vec<f32>]) -> Hnsw {
    let file = std::env::var("LS_GRAPH_DIR").ok().map(|dir| {
        std::path::Path::new(&dir).join(format!(
            "graph-{n}-m{}-efc{}.bin",
            params.m, params.ef_construction
        ))
    });
    if let Some(graph) = file.as_ref().and_then(|f| load(f, params, data)) {
        eprintln!(
            "loaded {n} from {}",
            file.as_ref()
                .map_or(String::new(), |f| f.display().to_string())
        );
        return graph;
    }
    let mut graph = Hnsw::new(DIM, params);
    let start = Instant::now();
    for v in data {
        graph.insert(v);
    }
    eprintln!("built {n} in {:.1} s", start.elapsed().as_secs_f64());
    if let Some(f) = file {
        let (links, entry, top) = graph.parts();
        let mut words = vec![entry.unwrap_or(u32::MAX), top as u32];
        for layers in &links {
            words.push(layers.len() as u32);
            for list in layers {
                words.push(list.len() as u32);
                words.extend_from_slice(list);
            }
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(&f, bytes) {
            eprintln!("could not save {}: {e}", f.display());
        }
    }
    graph
}

fn load(file: &std::path::Path, params: HnswParams, data: &[Vec<f32>]) -> Option<Hnsw> {
    let bytes = std::fs::read(file).ok()?;
    let mut words = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let entry = words.next().filter(|&e| e != u32::MAX);
    let top = words.next()? as usize;
    let mut links = Vec::with_capacity(data.len());
    for _ in 0..data.len() {
        let layers = words.next()?;
        let mut node = Vec::new();
        for _ in 0..layers {
            let len = words.next()? as usize;
            node.push(words.by_ref().take(len).collect::<Vec<u32>>());
        }
        links.push(node);
    }
    Hnsw::from_parts(DIM, params, data, links, entry, top)
}

fn main() {
    let n = env_usize("LS_N", 100_000);
    let mut rng = Rng(n as u64);
    let data = dataset(n, &mut rng);
    let d = GraphParams::default();
    let params = HnswParams {
        m: env_usize("LS_M", d.max_connections),
        ef_construction: env_usize("LS_EFC", d.ef_construction),
        ef_search: d.ef_search,
        binary_walk: d.binary_walk,
        ef_floor: d.ef_floor,
        fast_construction: env_usize("LS_FAST", usize::from(d.fast_construction)) == 1,
    };
    let mut graph = build(n, params, &data);
    // LS_NOISE: how far the near-duplicate queries move from their stored vector (0.02:
    // similarity ~0.99; 0.075: ~0.92).
    let noise: f32 = std::env::var("LS_NOISE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.02);
    let fresh = dataset(1000, &mut Rng(n as u64 + 1));
    let queries: Vec<Vec<f32>> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                let base = &data[(i * 7919) % n];
                normalised(base.iter().map(|x| x + noise * rng.next()).collect())
            } else {
                fresh[i].clone()
            }
        })
        .collect();
    let truth: Vec<(u32, f32)> = queries
        .iter()
        .map(|q| {
            let mut best = (0u32, f32::NEG_INFINITY);
            for (i, v) in data.iter().enumerate() {
                let s = dot(q, v);
                if s > best.1 {
                    best = (i as u32, s);
                }
            }
            best
        })
        .collect();
    // LS_MIN: the similarity bound a cache lookup passes (its threshold); recall counts the
    // queries whose true nearest reaches it.
    let min: f32 = std::env::var("LS_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0);
    let reachable = truth.iter().filter(|t| t.1 >= min).count();
    let env_list = |name: &str, default: &[usize]| -> Vec<usize> {
        std::env::var(name).map_or_else(
            |_| default.to_vec(),
            |v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        )
    };
    let rounds = env_list("LS_ROUNDS", &[3])[0];
    for binary in env_list("LS_BIN", &[0, 1]).into_iter().map(|b| b == 1) {
        for (ef, floor) in env_list("LS_EFS", &[32, 48, 64, 96, 128])
            .into_iter()
            .flat_map(|ef| {
                env_list("LS_FLOORS", &[16])
                    .into_iter()
                    .map(move |f| (ef, f))
            })
        {
            graph.set_search(ef, binary, floor);
            let mut times = Vec::new();
            let (mut hit_times, mut miss_times) = (Vec::new(), Vec::new());
            let mut agree = 0;
            let mut wrong = 0;
            for _ in 0..rounds {
                for (q, t) in queries.iter().zip(&truth) {
                    let start = Instant::now();
                    let found = graph.search(q, 8, min);
                    let took = start.elapsed().as_secs_f64() * 1e6;
                    times.push(took);
                    let first = found.first().map(|h| h.0);
                    if t.1 >= min {
                        hit_times.push(took);
                        agree += usize::from(first == Some(t.0));
                    } else {
                        miss_times.push(took);
                        wrong += usize::from(first.is_some());
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            hit_times.sort_by(f64::total_cmp);
            miss_times.sort_by(f64::total_cmp);
            let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
            println!(
                "{{\"entries\": {n}, \"binary_walk\": {binary}, \"ef_search\": {ef}, \"ef_floor\": {floor}, \"min_similarity\": {min}, \"reachable\": {reachable}, \"recall_at_1\": {:.4}, \"found_below_bound\": {wrong}, \"p50_us\": {:.2}, \"reachable_p50_us\": {:.2}, \"unreachable_p50_us\": {:.2}, \"min_us\": {:.2}}}",
                agree as f64 / (reachable * rounds).max(1) as f64,
                times[times.len() / 2],
                median(&hit_times),
                median(&miss_times),
                times[0]
            );
        }
    }
}
