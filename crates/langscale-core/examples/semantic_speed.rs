//! Semantic-cache speed, embedding excluded: lookup p50/p99 at 1k, 10k and 100k entries in one
//! scope (384 dimensions), insert cost, recall of the index against an exact scan, memory per
//! entry. Run: `cargo run --release -p langscale-core --example semantic_speed [-- --quick]`.
//! Prints one JSON object per size and settings on stdout (benches/bench_semantic.py reads
//! them). `LS_PARAMS=current,previous` runs the shipped graph settings and the ones before
//! issue 17 (`GraphParams::previous`) side by side; `LS_CHURN=k` then also turns the index
//! over k times (each insert evicts the oldest entry) and reports the cost of each removal
//! and the recall after it. `LS_SIDE_BY_SIDE=1` instead builds one cache of each settings
//! per size and times their lookups interleaved, query by query, so that a busy machine
//! slows both alike (one JSON object per size with both p50s and their ratio).

use std::sync::Arc;
use std::time::Instant;

use langscale_core::cache::index::{GraphParams, ScopeIndex};
use langscale_core::cache::{split_prompt, Outcome, SemanticCache, SemanticConfig};

mod common;
use common::{dataset, normalised, Rng, DIM};

/// The shipped HNSW settings (or the previous ones), with LS_M / LS_EFC / LS_EFS from the
/// environment when tuning.
fn params(previous: bool) -> GraphParams {
    let get = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if previous {
        return GraphParams::previous();
    }
    let d = GraphParams::default();
    GraphParams {
        max_connections: get("LS_M", d.max_connections),
        ef_construction: get("LS_EFC", d.ef_construction),
        ef_search: get("LS_EFS", d.ef_search),
        binary_walk: get("LS_BIN", usize::from(d.binary_walk)) == 1,
        ef_floor: get("LS_FLOOR", d.ef_floor),
        fast_construction: get("LS_FAST", usize::from(d.fast_construction)) == 1,
        repair: get("LS_REPAIR", usize::from(d.repair)) == 1,
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
    let sets = std::env::var("LS_PARAMS").unwrap_or_else(|_| "current".into());
    let churn: usize = std::env::var("LS_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let side_by_side = std::env::var("LS_SIDE_BY_SIDE").is_ok_and(|v| v == "1");
    for &n in sizes.iter().filter(|&&n| only.is_none_or(|o| o == n)) {
        if side_by_side {
            lookups_side_by_side(n);
            continue;
        }
        for set in sets.split(',') {
            run(n, set.trim(), churn);
        }
    }
}

/// A cache of `n` entries built with the given settings.
fn filled(data: &[Vec<f32>], previous: bool) -> SemanticCache {
    let cache = SemanticCache::new(SemanticConfig {
        maxsize: data.len() as u64 * 2,
        threshold: 0.9,
        guard: false,
        graph: params(previous),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for (i, v) in data.iter().enumerate() {
        let scoped = split_prompt("", "bench", &format!("stored question {i}"));
        let _ = cache.insert(&scoped, Some(v), Arc::from(&b"value"[..]));
    }
    cache
}

/// Lookup p50 of the current and the previous settings on the same entries and queries,
/// timed alternately (which goes first alternates too).
fn lookups_side_by_side(n: usize) {
    let mut rng = Rng(n as u64);
    let data = dataset(n, &mut rng);
    let current = filled(&data, false);
    let previous = filled(&data, true);
    let fresh = dataset(n, &mut Rng(n as u64 + 1));
    let scoped = split_prompt("", "bench", "a question not stored");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..5 {
        for i in 0..2000 {
            let q = if i % 2 == 0 {
                let base = &data[(i * 7919 + round) % n];
                normalised(base.iter().map(|x| x + 0.02 * rng.next()).collect())
            } else {
                fresh[(i * 104_729 + round) % n].clone()
            };
            let order: [(&SemanticCache, &mut Vec<f64>); 2] = if i % 2 == 0 {
                [(&current, &mut a), (&previous, &mut b)]
            } else {
                [(&previous, &mut b), (&current, &mut a)]
            };
            for (cache, times) in order {
                let t = Instant::now();
                let _ = cache.lookup(&scoped, Some(&q));
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (pa, pb) = (percentile(&a, 0.5), percentile(&b, 0.5));
    println!(
        "{{\"entries\": {n}, \"side_by_side\": true, \"lookups\": {}, \"lookup_p50_us_current\": {pa:.2}, \"lookup_p50_us_previous\": {pb:.2}, \"lookup_p99_us_current\": {:.2}, \"lookup_p99_us_previous\": {:.2}, \"p50_ratio_current_over_previous\": {:.3}}}",
        a.len(),
        percentile(&a, 0.99),
        percentile(&b, 0.99),
        pa / pb,
    );
}

fn run(n: usize, set: &str, churn: usize) {
    let previous = set == "previous";
    let params = || params(previous);
    {
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
        let mut insert_times = Vec::with_capacity(n);
        for (prompt, v) in prompts.iter().zip(&data) {
            let scoped = split_prompt("", "bench", prompt);
            let t = Instant::now();
            let _ = cache.insert(&scoped, Some(v), Arc::from(&b"value"[..]));
            insert_times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let insert_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        // The cost of an insert into a full-size index: the last tenth of the build.
        let mut last: Vec<f64> = insert_times.split_off(n - n / 10);
        last.sort_by(f64::total_cmp);
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
        let churned = (churn > 0).then(|| turnover(&mut live, n, churn, &queries));
        println!(
            "{{\"entries\": {n}, \"dim\": {DIM}, \"params\": \"{set}\", \"ef_construction\": {}, \"index\": \"{}\", \"lookup_p50_us\": {:.2}, \"lookup_p99_us\": {:.2}, \"exact_scan_p50_us\": {:.2}, \"insert_us\": {:.2}, \"insert_p50_us\": {:.2}, \"insert_p99_us\": {:.2}, \"recall_at_1\": {:.4}, \"recall_at_1_within_threshold\": {:.4}, \"queries_within_threshold\": {within}, \"memory_per_entry_bytes\": {:.0}, \"hit_queries\": {hits}{}}}",
            params().ef_construction,
            if live.is_graph() { "hnsw" } else { "flat" },
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&flat_times, 0.5),
            insert_us,
            percentile(&last, 0.5),
            percentile(&last, 0.99),
            agree as f64 / sample.len() as f64,
            within_agree as f64 / within.max(1) as f64,
            memory,
            churned.unwrap_or_default(),
        );
    }
}

/// `turns` full turnovers of an index of `n` entries (keys 0..n): each insert of a new
/// vector evicts the oldest entry. Returns the JSON fields: removal p50/p99/max, insert p50
/// while churning and its p99 (the reachability sweeps land on inserts and removals), the
/// stranded nodes those sweeps linked back, and recall@1 within 0.9 afterwards on
/// near-duplicates of the last entries.
fn turnover(index: &mut ScopeIndex, n: usize, turns: usize, queries: &[Vec<f32>]) -> String {
    let mut removes = Vec::with_capacity(n * turns);
    let mut inserts = Vec::with_capacity(n * turns);
    let mut latest = Vec::new();
    for turn in 1..=turns {
        latest = dataset(n, &mut Rng((n * 1000 + turn) as u64));
        for (i, v) in latest.iter().enumerate() {
            let key = (turn * n + i) as u128;
            let t = Instant::now();
            index.insert(key, v);
            inserts.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            index.remove(key - n as u128);
            removes.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    removes.sort_by(f64::total_cmp);
    inserts.sort_by(f64::total_cmp);
    let mut flat = ScopeIndex::new(DIM, usize::MAX, GraphParams::default());
    for (i, v) in latest.iter().enumerate() {
        flat.insert((turns * n + i) as u128, v);
    }
    let mut rng = Rng(7);
    let (mut within, mut agree) = (0, 0);
    for i in 0..queries.len().min(1000) {
        let q = if i % 2 == 0 {
            let base = &latest[(i * 7919) % n];
            normalised(base.iter().map(|x| x + 0.02 * rng.next()).collect())
        } else {
            queries[i].clone()
        };
        if let Some(best) = flat.search(&q, 1, 0.9).first() {
            within += 1;
            agree += usize::from(index.search(&q, 1, 0.9).first().map(|h| h.0) == Some(best.0));
        }
    }
    format!(
        ", \"turnovers\": {turns}, \"remove_p50_us\": {:.2}, \"remove_p99_us\": {:.2}, \"remove_max_us\": {:.0}, \"churn_insert_p50_us\": {:.2}, \"churn_insert_p99_us\": {:.2}, \"reconnected\": {}, \"recall_at_1_within_threshold_after_churn\": {:.4}, \"queries_within_threshold_after_churn\": {within}",
        percentile(&removes, 0.5),
        percentile(&removes, 0.99),
        removes.last().copied().unwrap_or(0.0),
        percentile(&inserts, 0.5),
        percentile(&inserts, 0.99),
        index.reconnected(),
        agree as f64 / within.max(1) as f64,
    )
}
