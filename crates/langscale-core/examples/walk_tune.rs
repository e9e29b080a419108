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

fn main() {
    let n = env_usize("LS_N", 100_000);
    let mut rng = Rng(n as u64);
    let data = dataset(n, &mut rng);
    let d = GraphParams::default();
    let mut graph = Hnsw::new(
        DIM,
        HnswParams {
            m: env_usize("LS_M", d.max_connections),
            ef_construction: env_usize("LS_EFC", d.ef_construction),
            ef_search: d.ef_search,
            binary_walk: d.binary_walk,
        },
    );
    let start = Instant::now();
    for v in &data {
        graph.insert(v);
    }
    eprintln!("built {n} in {:.1} s", start.elapsed().as_secs_f64());
    let fresh = dataset(1000, &mut Rng(n as u64 + 1));
    let queries: Vec<Vec<f32>> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                let base = &data[(i * 7919) % n];
                normalised(base.iter().map(|x| x + 0.02 * rng.next()).collect())
            } else {
                fresh[i].clone()
            }
        })
        .collect();
    let truth: Vec<u32> = queries
        .iter()
        .map(|q| {
            let mut best = (0u32, f32::NEG_INFINITY);
            for (i, v) in data.iter().enumerate() {
                let s = dot(q, v);
                if s > best.1 {
                    best = (i as u32, s);
                }
            }
            best.0
        })
        .collect();
    let env_list = |name: &str, default: &[usize]| -> Vec<usize> {
        std::env::var(name).map_or_else(
            |_| default.to_vec(),
            |v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        )
    };
    let rounds = env_list("LS_ROUNDS", &[3])[0];
    for binary in env_list("LS_BIN", &[0, 1]).into_iter().map(|b| b == 1) {
        for ef in env_list("LS_EFS", &[32, 48, 64, 96, 128]) {
            graph.set_search(ef, binary);
            let mut times = Vec::new();
            let mut agree = 0;
            for _ in 0..rounds {
                for (q, t) in queries.iter().zip(&truth) {
                    let start = Instant::now();
                    let found = graph.search(q, 8);
                    times.push(start.elapsed().as_secs_f64() * 1e6);
                    agree += usize::from(found.first().map(|h| h.0) == Some(*t));
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{{\"entries\": {n}, \"binary_walk\": {binary}, \"ef_search\": {ef}, \"recall_at_1\": {:.4}, \"p50_us\": {:.2}, \"min_us\": {:.2}}}",
                agree as f64 / times.len() as f64,
                times[times.len() / 2],
                times[0]
            );
        }
    }
}
