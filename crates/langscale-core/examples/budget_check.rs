//! The cost of a budget check in process: reserve then settle (what every routed call does),
//! at the three levels (global, tenant, user), each with a request rate and a spend budget.
//! `make bench` runs it (benches/bench_spend.py) and prints one JSON line per case.
//!
//! cargo run --release -q -p langscale-core --example budget_check [-- --quick]

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use langscale_core::spend::{Budgets, Cost, SpendConfig, Who};

const CONFIG: &str = r#"{
  "global": {"requests_per_minute": 1e12, "budgets": [{"usd": 1e12, "window": "day"}]},
  "tenant_default": {"requests_per_minute": 1e12, "tokens_per_minute": 1e15,
                     "budgets": [{"usd": 1e12, "window": "month", "calendar": true}]},
  "user_default": {"concurrency": 1000000, "budgets": [{"usd": 1e12, "window": "hour"}]}
}"#;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u32 = if quick { 20_000 } else { 400_000 };
    let budgets = match SpendConfig::from_json(CONFIG)
        .and_then(|c| langscale_core::spend::Ledger::system(c).map(|l| Budgets::Local(Arc::new(l))))
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("budget_check: {e}");
            std::process::exit(1);
        }
    };
    let cost = Cost {
        requests: 1,
        tokens: 600,
        usd: 0.0004,
    };
    let tenants: Vec<Who> = (0..50)
        .map(|i| Who::new(Some(&format!("tenant-{i}")), Some("user-1")))
        .collect();
    let check = |who: &Who| {
        let r = budgets.reserve(who, cost, false);
        if let Ok(r) = black_box(r) {
            r.settle(cost);
        }
    };
    for who in &tenants {
        check(who);
    }
    let started = Instant::now();
    for i in 0..n {
        check(&tenants[i as usize % tenants.len()]);
    }
    let one = started.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{{\"case\": \"reserve+settle, 1 thread\", \"ns\": {one:.0}}}");

    let threads = 4u32;
    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let check = &check;
            let tenants = &tenants;
            s.spawn(move || {
                for i in 0..n / threads {
                    check(&tenants[(i + t) as usize % tenants.len()]);
                }
            });
        }
    });
    let many = started.elapsed().as_nanos() as f64 / f64::from(n);
    println!(
        "{{\"case\": \"reserve+settle, {threads} threads (per call, wall)\", \"ns\": {many:.0}}}"
    );
}
