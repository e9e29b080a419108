//! Python face of the simulated provider: `_core.Simulator` starts providers from a JSON or
//! TOML configuration, reports their base URLs and counters, and stops them.

use std::sync::{Mutex, PoisonError};

use langscale_core::sim::{ProviderStats, SimConfig, SimError, Simulator as CoreSimulator};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::args;
use crate::errors::{config_error, LangscaleError};

args::text_arg! {
    /// A simulator configuration, JSON or TOML text.
    ConfigText = "config";
    /// A simulated provider's name.
    ProviderName = "name";
}

fn to_py(err: SimError) -> PyErr {
    match err {
        SimError::Config(_) | SimError::Bind { .. } => config_error(err.to_string()),
        SimError::Runtime(_) => LangscaleError::new_err(err.to_string()),
    }
}

fn stats_dict<'py>(py: Python<'py>, s: &ProviderStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (key, value) in [
        ("requests", s.requests),
        ("chat_requests", s.chat_requests),
        ("stream_requests", s.stream_requests),
        ("embedding_requests", s.embedding_requests),
        ("ok", s.ok),
        ("rate_limited", s.rate_limited),
        ("server_errors", s.server_errors),
        ("unavailable", s.unavailable),
        ("timeouts", s.timeouts),
        ("hangs", s.hangs),
        ("resets", s.resets),
        ("client_errors", s.client_errors),
        ("cancelled", s.cancelled),
        ("tool_calls", s.tool_calls),
        ("prompt_tokens", s.prompt_tokens),
        ("completion_tokens", s.completion_tokens),
        ("in_flight", s.in_flight),
    ] {
        d.set_item(key, value)?;
    }
    Ok(d)
}

/// Simulated OpenAI-compatible providers serving on loopback ports from a tokio runtime.
#[pyclass(frozen, module = "langscale._core")]
pub struct Simulator {
    inner: Mutex<CoreSimulator>,
    urls: Vec<(String, String)>,
}

impl Simulator {
    fn start(py: Python<'_>, config: SimConfig, threads: usize) -> PyResult<Self> {
        if !(1..=64).contains(&threads) {
            return Err(config_error(format!(
                "threads must be between 1 and 64, got {threads}"
            )));
        }
        let sim = py
            .detach(move || CoreSimulator::start_with_threads(config, threads))
            .map_err(to_py)?;
        let urls = sim.base_urls();
        Ok(Self {
            inner: Mutex::new(sim),
            urls,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&CoreSimulator) -> T) -> T {
        f(&self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[pymethods]
impl Simulator {
    /// Start the providers of a JSON configuration (`{"provider": [{...}, ...]}`).
    #[new]
    #[pyo3(signature = (config_json, threads=2))]
    fn new(py: Python<'_>, config_json: ConfigText<'_>, threads: usize) -> PyResult<Self> {
        let config = SimConfig::from_json(config_json.0).map_err(to_py)?;
        Self::start(py, config, threads)
    }

    /// Start the providers of a TOML configuration (`[[provider]]` tables).
    #[staticmethod]
    #[pyo3(signature = (text, threads=2))]
    fn from_toml(py: Python<'_>, text: ConfigText<'_>, threads: usize) -> PyResult<Self> {
        let config = SimConfig::from_toml(text.0).map_err(to_py)?;
        Self::start(py, config, threads)
    }

    /// `[(name, "http://127.0.0.1:PORT/v1"), ...]` in configuration order.
    fn base_urls(&self) -> Vec<(String, String)> {
        self.urls.clone()
    }

    /// Counters of one provider: requests, ok, rate_limited, server_errors, unavailable, ...
    fn stats<'py>(&self, py: Python<'py>, name: ProviderName<'_>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self
            .with(|s| s.stats(name.0))
            .ok_or_else(|| config_error(format!("no simulated provider named {:?}", name.0)))?;
        stats_dict(py, &stats)
    }

    /// Per second since start: `(requests, ok, rate_limited, errors)`.
    fn timeline(&self, name: ProviderName<'_>) -> PyResult<Vec<(u64, u64, u64, u64)>> {
        self.with(|s| s.timeline(name.0))
            .map(|t| t.into_iter().map(|[a, b, c, d]| (a, b, c, d)).collect())
            .ok_or_else(|| config_error(format!("no simulated provider named {:?}", name.0)))
    }

    /// Seconds since the provider started or was reset (the fault schedule's clock).
    fn elapsed(&self, name: ProviderName<'_>) -> PyResult<f64> {
        self.with(|s| s.elapsed(name.0))
            .ok_or_else(|| config_error(format!("no simulated provider named {:?}", name.0)))
    }

    /// Zero counters, refill quotas, restart fault schedules.
    fn reset(&self) {
        self.with(CoreSimulator::reset);
    }

    #[getter]
    fn running(&self) -> bool {
        self.with(CoreSimulator::is_running)
    }

    /// Stop serving and free the ports (waits up to 2 s for connections, GIL released).
    fn stop(&self, py: Python<'_>) {
        py.detach(|| {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stop();
        });
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Simulator>()?;
    Ok(())
}
