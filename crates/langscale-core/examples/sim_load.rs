//! How many chat completions per second the simulator answers: `connections` keep-alive
//! HTTP/1.1 clients (raw tokio sockets, so the client costs little) each send requests back to
//! back for `seconds`, against one provider with no latency model.
//!
//! `cargo run --release -p langscale-core --example sim_load -- [connections] [seconds] [threads]`

use std::time::{Duration, Instant};

use langscale_core::sim::{ProviderConfig, SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn client(addr: std::net::SocketAddr, until: Instant) -> std::io::Result<(u64, Vec<u32>)> {
    let body = r#"{"model":"sim-model","messages":[{"role":"user","content":"What is the weather in Paris today?"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    let mut micros = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        stream.write_all(request.as_bytes()).await?;
        let mut have = 0;
        loop {
            let n = stream.read(&mut buf[have..]).await?;
            if n == 0 {
                return Ok((done, micros));
            }
            have += n;
            let text = String::from_utf8_lossy(&buf[..have]);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if have >= end + 4 + length {
                    break;
                }
            }
        }
        micros.push(started.elapsed().as_micros() as u32);
        done += 1;
    }
    Ok((done, micros))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (connections, seconds, threads) = (arg(1, 32), arg(2, 5), arg(3, 2));
    let sim = Simulator::start_with_threads(
        SimConfig {
            provider: vec![ProviderConfig::default()],
        },
        threads as usize,
    )?;
    let addr = sim.addresses()[0].1;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let results = client_rt.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(client(addr, until)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = 0;
    let mut latencies = Vec::new();
    for r in results.into_iter().flatten().flatten() {
        total += r.0;
        latencies.extend(r.1);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let stats = sim.stats("default").unwrap_or_default();
    println!(
        "{connections} connections, {threads} server threads, 1 client thread: {:.0} req/s, \
         latency p50 {} us, p99 {} us; server counted {} ok",
        total as f64 / elapsed,
        pick(0.5),
        pick(0.99),
        stats.ok
    );
    Ok(())
}
