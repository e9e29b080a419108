//! A simulated OpenAI-compatible provider (axum) for tests, benchmarks and the demo: chat
//! completions (plain and SSE, tool calls, usage), embeddings and models, with a latency model,
//! rpm/tpm quotas answered 429 like OpenAI, random and scheduled faults, and counters.
//! [`Simulator`] runs several providers on their own tokio runtime, each on its own port.

pub mod config;
pub mod content;
pub mod quota;
mod server;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Fault, FaultKind, ProviderConfig, SimConfig};
pub use stats::ProviderStats;

use server::ProviderState;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Config(String),
    #[error("provider {name:?} cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the simulator's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Several simulated providers serving on loopback ports from one tokio runtime; stopped on
/// [`Simulator::stop`] or drop.
pub struct Simulator {
    runtime: Option<tokio::runtime::Runtime>,
    providers: Vec<(Arc<ProviderState>, SocketAddr)>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Simulator {
    /// Start every provider of `config` on a runtime with two worker threads.
    pub fn start(config: SimConfig) -> Result<Self, SimError> {
        Self::start_with_threads(config, 2)
    }

    /// Start every provider on a runtime with `threads` worker threads (at least 1).
    pub fn start_with_threads(config: SimConfig, threads: usize) -> Result<Self, SimError> {
        let config = config.validated()?;
        // Bind first: a taken port fails before any runtime exists.
        let mut listeners = Vec::new();
        for p in config.provider {
            let addr = format!("{}:{}", p.host, p.port);
            let bind_error = |source| SimError::Bind {
                name: p.name.clone(),
                addr: addr.clone(),
                source,
            };
            let listener =
                std::net::TcpListener::bind((p.host.as_str(), p.port)).map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            listeners.push((Arc::new(ProviderState::new(p)), listener, local));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("langscale-sim")
            .enable_all()
            .build()
            .map_err(SimError::Runtime)?;
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        // From here an early return drops `sim`, whose `stop` shuts the runtime down in a way
        // that is allowed even inside another runtime.
        let mut sim = Self {
            runtime: Some(runtime),
            providers: Vec::new(),
            shutdown,
        };
        for (state, listener, local) in listeners {
            let Some(runtime) = &sim.runtime else {
                break;
            };
            let listener = {
                let _enter = runtime.enter();
                tokio::net::TcpListener::from_std(listener).map_err(|source| SimError::Bind {
                    name: state.config.name.clone(),
                    addr: local.to_string(),
                    source,
                })?
            };
            let app = server::router(Arc::clone(&state));
            runtime.spawn(server::accept_loop(listener, app, watch.clone()));
            sim.providers.push((state, local));
        }
        Ok(sim)
    }

    /// `(name, address)` of every provider, in configuration order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.providers
            .iter()
            .map(|(p, addr)| (p.config.name.clone(), *addr))
            .collect()
    }

    /// `http://HOST:PORT/v1` of every provider, in configuration order.
    pub fn base_urls(&self) -> Vec<(String, String)> {
        self.addresses()
            .into_iter()
            .map(|(name, addr)| (name, format!("http://{addr}/v1")))
            .collect()
    }

    fn find(&self, name: &str) -> Option<&Arc<ProviderState>> {
        self.providers
            .iter()
            .map(|(p, _)| p)
            .find(|p| p.config.name == name)
    }

    /// Counters of one provider.
    pub fn stats(&self, name: &str) -> Option<ProviderStats> {
        self.find(name).map(|p| p.counters.snapshot())
    }

    /// Per second since start: `[requests, ok, rate_limited, errors]`.
    pub fn timeline(&self, name: &str) -> Option<Vec<[u64; 4]>> {
        self.find(name).map(|p| p.counters.timeline())
    }

    /// Seconds since the provider started or was reset (the fault schedule's clock).
    pub fn elapsed(&self, name: &str) -> Option<f64> {
        self.find(name).map(|p| p.elapsed())
    }

    /// Zero the counters, refill the quotas and restart the fault schedules of all providers.
    pub fn reset(&self) {
        for (p, _) in &self.providers {
            p.reset();
        }
    }

    pub fn is_running(&self) -> bool {
        self.runtime.is_some()
    }

    /// Stop serving: open connections are dropped, ports are freed. Safe to call twice.
    pub fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
