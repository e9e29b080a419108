//! The executor loop in Rust under open-loop load, with no Python in the way: requests are
//! offered at exact times (`start + i / rate`, whatever happened to the earlier ones), at most
//! `concurrency` in flight, to two zero-latency simulated providers in this process. Two paths,
//! side by side at each rate: `direct` (one `Endpoint::chat`, the bare HTTP client) and
//! `routed` (`RoutedEndpoints::chat` over both providers, round robin: the router's state
//! machine, breakers, retry budget and stats around the same client). Latency runs from a
//! request's scheduled time to its answer; "added" is routed minus direct at the same rate.
//! By default the client side (offering and calls) runs on one current-thread runtime and the
//! simulator on one thread of its own, so on a 2-core machine neither preempts the other.
//!
//! `cargo run --release -p langscale-core --example native_load -- \
//!     [rates=1000,2000,3000,5000] [seconds=3] [concurrency=256] [client_threads=0] [sim_threads=1] [rounds=5]`
//!
//! Prints a Markdown table, then one JSON object per run. To give client and simulator a core
//! each: `LS_SERVE=1 taskset -c 1 native_load` prints the simulator's URLs and serves;
//! `LS_URLS=<those URLs> taskset -c 0 native_load ...` drives them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use langscale_core::clock::SystemClock;
use langscale_core::provider::{
    ChatRequest, Endpoint, EndpointConfig, Message, NativeDeployment, RoutedEndpoints,
};
use langscale_core::route::{Deployment, RequestInfo, Router, RouterConfig, Strategy};
use langscale_core::sim::{ProviderConfig, SimConfig, Simulator};
use tokio::sync::Semaphore;

#[derive(Clone)]
struct Run {
    ok: usize,
    errors: usize,
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Every round's p99, for the record (set on the median of several rounds).
    p99_rounds: Vec<f64>,
}

/// Each figure's median over the rounds; counts are summed.
fn median_run(runs: &[Run]) -> Run {
    let median = |pick: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Run {
        ok: runs.iter().map(|r| r.ok).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        achieved: median(|r| r.achieved),
        p50_ms: median(|r| r.p50_ms),
        p99_ms: median(|r| r.p99_ms),
        p99_rounds: runs
            .iter()
            .map(|r| (r.p99_ms * 1e3).round() / 1e3)
            .collect(),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// Offer `rate` requests a second for `seconds`, at most `concurrency` in flight.
async fn drive<F, Fut>(call: F, rate: f64, concurrency: usize, seconds: f64) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let total = (rate * seconds).max(1.0) as usize;
    let gate = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let (gate, call) = (gate.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.ok()?;
            let ok = call().await;
            Some((ok, due.elapsed(), Instant::now()))
        }));
    }
    let (mut latencies, mut errors, mut last) = (Vec::with_capacity(total), 0, start);
    for task in tasks {
        match task.await.ok().flatten() {
            Some((true, latency, done)) => {
                latencies.push(latency.as_secs_f64() * 1e3);
                last = last.max(done);
            }
            _ => errors += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let elapsed = last.duration_since(start).as_secs_f64();
    Run {
        ok: latencies.len(),
        errors,
        achieved: if elapsed > 0.0 {
            latencies.len() as f64 / elapsed
        } else {
            0.0
        },
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        p99_rounds: Vec::new(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let rates: Vec<f64> = arg(0, "1000,2000,3000,5000")
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let seconds: f64 = arg(1, "3").parse()?;
    let concurrency: usize = arg(2, "256").parse()?;
    let client_threads: usize = arg(3, "0").parse()?;
    let sim_threads: usize = arg(4, "1").parse()?;
    let rounds: usize = arg(5, "5").parse::<usize>()?.max(1);

    let provider = |name: &str| ProviderConfig {
        name: name.into(),
        ..ProviderConfig::default()
    };
    // LS_URLS: base URLs of providers already running (for example this example with
    // LS_SERVE=1 in another process, each pinned to its own core with `taskset`); else a
    // simulator in this process.
    let external: Option<Vec<String>> = std::env::var("LS_URLS")
        .ok()
        .map(|v| v.split(',').map(|u| u.trim().to_string()).collect());
    let sim = match external {
        Some(_) => None,
        None => Some(Simulator::start_with_threads(
            SimConfig {
                provider: vec![provider("a"), provider("b")],
            },
            sim_threads,
        )?),
    };
    let urls: Vec<String> = match (external, &sim) {
        (Some(urls), _) => urls,
        (None, Some(sim)) => sim
            .addresses()
            .iter()
            .map(|(_, addr)| format!("http://{addr}/v1"))
            .collect(),
        (None, None) => Vec::new(),
    };
    if std::env::var("LS_SERVE").is_ok_and(|v| v == "1") {
        println!("{}", urls.join(","));
        loop {
            std::thread::park();
        }
    }
    if urls.len() < 2 {
        return Err("two provider URLs are needed".into());
    }
    let endpoint = |url: &str| -> Result<Arc<Endpoint>, Box<dyn std::error::Error>> {
        let mut config = EndpointConfig::new(url, "sim-model");
        config.timeout = Duration::from_secs(10);
        Ok(Arc::new(Endpoint::new(config)?))
    };
    let direct = endpoint(&urls[0])?;
    let deployments = (0..urls.len())
        .map(|i| Deployment::new(format!("d{i}")))
        .collect();
    let config = RouterConfig {
        strategy: Strategy::RoundRobin,
        ..RouterConfig::default()
    };
    let router = Arc::new(Router::new(deployments, config, Arc::new(SystemClock))?);
    let natives = urls
        .iter()
        .map(|u| {
            Ok(NativeDeployment {
                endpoint: endpoint(u)?,
                limiter: None,
            })
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let routed = Arc::new(RoutedEndpoints::new(router, natives, None)?);
    let request = Arc::new(ChatRequest::new(vec![Message::user(
        "What is the capital of France?",
    )]));

    // 0 client threads: everything client-side (offering, calls) on this one thread.
    let runtime = if client_threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(client_threads)
            .enable_all()
            .build()?
    };
    let direct_call = {
        let (direct, request) = (direct.clone(), request.clone());
        move || {
            let (direct, request) = (direct.clone(), request.clone());
            async move { direct.chat(&request, None).await.is_ok() }
        }
    };
    let routed_call = {
        let (routed, request) = (routed.clone(), request.clone());
        move || {
            let (routed, request) = (routed.clone(), request.clone());
            async move {
                routed
                    .chat(&request, RequestInfo::default(), 10, None)
                    .await
                    .is_ok()
            }
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let client = if client_threads == 0 {
        "the client on one current-thread runtime".to_string()
    } else {
        format!("{client_threads} client worker thread(s)")
    };
    println!(
        "open-loop load, median of {rounds} rounds of {seconds} s per path, at most \
         {concurrency} in flight, {client}, {sim_threads} simulator thread(s), {cores} CPU \
         cores in all\n"
    );
    println!(
        "| offered req/s | path | achieved req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |"
    );
    println!("|--:|---|--:|--:|--:|--:|--:|--:|");
    let mut lines = Vec::new();
    runtime.block_on(async {
        // Warm both paths: connections, first-call allocations.
        let _ = drive(direct_call.clone(), 500.0, concurrency, 0.2).await;
        let _ = drive(routed_call.clone(), 500.0, concurrency, 0.2).await;
        for &rate in &rates {
            // Short rounds, the two paths alternating (which goes first swaps each round),
            // and each side's median kept: a hiccup of a shared machine hits one round of
            // one side, not the whole comparison.
            let (mut base, mut run) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                if round % 2 == 0 {
                    base.push(drive(direct_call.clone(), rate, concurrency, seconds).await);
                    run.push(drive(routed_call.clone(), rate, concurrency, seconds).await);
                } else {
                    run.push(drive(routed_call.clone(), rate, concurrency, seconds).await);
                    base.push(drive(direct_call.clone(), rate, concurrency, seconds).await);
                }
            }
            let (base, run) = (median_run(&base), median_run(&run));
            for (path, r, added) in [
                ("direct", &base, None),
                ("routed", &run, Some((run.p50_ms - base.p50_ms, run.p99_ms - base.p99_ms))),
            ] {
                let (a50, a99) = added.map_or(("—".to_string(), "—".to_string()), |(a, b)| {
                    (format!("{a:+.3}"), format!("{b:+.3}"))
                });
                println!(
                    "| {rate:.0} | {path} | {:.0} | {:.3} | {:.3} | {a50} | {a99} | {} |",
                    r.achieved, r.p50_ms, r.p99_ms, r.errors
                );
                lines.push(format!(
                    "{{\"rate\": {rate}, \"path\": \"{path}\", \"concurrency\": {concurrency}, \
                     \"rounds\": {rounds}, \"ok\": {}, \"errors\": {}, \"achieved\": {:.1}, \
                     \"p50_ms\": {:.4}, \"p99_ms\": {:.4}, \"p99_ms_rounds\": {:?}, \"cores\": {cores}}}",
                    r.ok, r.errors, r.achieved, r.p50_ms, r.p99_ms, r.p99_rounds
                ));
            }
        }
    });
    println!();
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
