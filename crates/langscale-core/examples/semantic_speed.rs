//! Semantic-cache speed, embedding excluded: lookup p50/p99 at 1k, 10k and 100k entries in one
//! scope (384 dimensions), insert cost, recall of the index against an exact scan, memory per
//! entry. Run: `cargo run --release -p langscale-core --example semantic_speed [-- --quick]`.
//! Prints one JSON object per size on stdout (benches/bench_semantic.py reads them).

use std::sync::Arc;
use std::time::Instant;

use langscale_core::cache::index::{GraphParams, ScopeIndex};
use langscale_core::cache::{split_prompt, Outcome, SemanticCache, SemanticConfig};

mod common;
use common::{dataset, normalised, Rng, DIM};

/// The shipped HNSW settings, or LS_M / LS_EFC / LS_EFS from the environment when tuning.
fn params() -> GraphParams {
    let get = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let d = GraphParams::default();
    GraphParams {
        max_connections: get("LS_M", d.max_connections),
        ef_construction: get("LS_EFC", d.ef_construction),
        ef_search: get("LS_EFS", d.ef_search),
        binary_walk: get("LS_BIN", usize::from(d.binary_walk)) == 1,
        ef_floor: get("LS_FLOOR", d.ef_floor),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or(0.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let only: Option<usize> = std::env::var("LS_ONLY").ok().and_then(|v| v.parse().ok());
    for &n in sizes.iter().filter(|&&n| only.is_none_or(|o| o == n)) {
        let mut rng = Rng(n as u64);
        let data = dataset(n, &mut rng);
        let before = rss_bytes();
        let cache = Arc::new(
            SemanticCache::new(SemanticConfig {
                maxsize: n as u64 * 2,
                threshold: 0.9,
                guard: false,
                graph: params(),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let prompts: Vec<String> = (0..n).map(|i| format!("stored question {i}")).collect();
        let start = Instant::now();
        for (prompt, v) in prompts.iter().zip(&data) {
            let scoped = split_prompt("", "bench", prompt);
            let _ = cache.insert(&scoped, Some(v), Arc::from(&b"value"[..]));
        }
        let insert_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let memory = rss_bytes().saturating_sub(before) as f64 / n as f64;

        // Queries: near-duplicates of stored vectors (hits) and new vectors from the same
        // distribution (misses), as a stream of real questions would be.
        let fresh = dataset(n, &mut Rng(n as u64 + 1));
        let queries: Vec<Vec<f32>> = (0..2000)
            .map(|i| {
                if i % 2 == 0 {
                    let base = &data[(i * 7919) % n];
                    normalised(base.iter().map(|x| x + 0.02 * rng.next()).collect())
                } else {
                    fresh[(i * 104_729) % n].clone()
                }
            })
            .collect();
        let scoped = split_prompt("", "bench", "a question not stored");
        let mut times = Vec::with_capacity(queries.len());
        let mut hits = 0;
        for q in &queries {
            let t = Instant::now();
            let outcome = cache.lookup(&scoped, Some(q));
            times.push(t.elapsed().as_secs_f64() * 1e6);
            if matches!(outcome, Outcome::Semantic { .. }) {
                hits += 1;
            }
        }
        times.sort_by(f64::total_cmp);

        // Recall@1 of the index used at this size against an exact scan.
        let mut flat = ScopeIndex::new(DIM, usize::MAX, params());
        let mut live = ScopeIndex::new(DIM, SemanticConfig::default().flat_max, params());
        for (i, v) in data.iter().enumerate() {
            flat.insert(i as u128, v);
            live.insert(i as u128, v);
        }
        let sample: Vec<&Vec<f32>> = queries.iter().take(400).collect();
        let agree = sample
            .iter()
            .filter(|q| {
                flat.search(q, 1, -1.0).first().map(|h| h.0)
                    == live.search(q, 1, -1.0).first().map(|h| h.0)
            })
            .count();
        // The same within the lookup's threshold (what a cache asks the index for; the search
        // uses the bound to skip work far from it): of the queries whose nearest entry reaches
        // 0.9, how many the index answers with that entry.
        let (mut within, mut within_agree) = (0, 0);
        for q in &sample {
            if let Some(best) = flat.search(q, 1, 0.9).first() {
                within += 1;
                within_agree +=
                    usize::from(live.search(q, 1, 0.9).first().map(|h| h.0) == Some(best.0));
            }
        }
        let mut flat_times = Vec::new();
        for q in sample.iter().take(100) {
            let t = Instant::now();
            let _ = flat.search(q, 8, 0.9);
            flat_times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        flat_times.sort_by(f64::total_cmp);
        println!(
            "{{\"entries\": {n}, \"dim\": {DIM}, \"index\": \"{}\", \"lookup_p50_us\": {:.2}, \"lookup_p99_us\": {:.2}, \"exact_scan_p50_us\": {:.2}, \"insert_us\": {:.2}, \"recall_at_1\": {:.4}, \"recall_at_1_within_threshold\": {:.4}, \"queries_within_threshold\": {within}, \"memory_per_entry_bytes\": {:.0}, \"hit_queries\": {hits}}}",
            if live.is_graph() { "hnsw" } else { "flat" },
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&flat_times, 0.5),
            insert_us,
            agree as f64 / sample.len() as f64,
            within_agree as f64 / within.max(1) as f64,
            memory,
        );
    }
}
