//! Python face of tenant budgets (`spend`): `_core.Budgets` holds them; a `Router` given one
//! reserves from it before every call of a run started for a tenant.

use langscale_core::spend::UnixClock;
use langscale_core::spend::{Budgets as CoreBudgets, Ledger, SpendConfig};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::Arc;

use crate::errors::{config_error, CoreError};
use crate::store::RedisStore;

/// Budgets held in this process, or with `store` in Redis and shared by every process using
/// that store's prefix; configured from JSON text (the Python layer turns a dict or TOML file
/// into it).
#[pyclass(frozen, module = "langscale._core")]
pub struct Budgets {
    pub(crate) budgets: CoreBudgets,
}

fn parse(config: &str) -> PyResult<SpendConfig> {
    SpendConfig::from_json(config).map_err(|e| CoreError::from(e).into())
}

#[pymethods]
impl Budgets {
    #[new]
    #[pyo3(signature = (config, store=None))]
    fn new(config: &str, store: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let config = parse(config)?;
        let budgets = match store.filter(|s| !s.is_none()) {
            None => CoreBudgets::Local(Arc::new(Ledger::system(config).map_err(CoreError::from)?)),
            Some(s) => {
                let store = s.cast::<RedisStore>().map_err(|_| {
                    config_error(format!(
                        "store must be a langscale.RedisStore or None, got {}",
                        s.repr().map_or_else(|_| "?".into(), |r| r.to_string())
                    ))
                })?;
                CoreBudgets::shared(config, store.get().store.clone(), Arc::new(UnixClock))
                    .map_err(CoreError::from)?
            }
        };
        Ok(Self { budgets })
    }

    /// Whether the budgets are held in Redis (a store was given).
    #[getter]
    fn shared(&self) -> bool {
        matches!(self.budgets, CoreBudgets::Shared(_))
    }

    /// Shared budgets only (else all zero): calls admitted and refused from the local share
    /// while Redis was down, settlements still to be written back, calls admitted from a
    /// lease, lease scripts run and leases held.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = match &self.budgets {
            CoreBudgets::Shared(s) => s.stats(),
            CoreBudgets::Local(_) => langscale_core::spend::SharedLedgerStats::default(),
        };
        let d = PyDict::new(py);
        d.set_item("local_admitted", s.local_admitted)?;
        d.set_item("local_refused", s.local_refused)?;
        d.set_item("pending", s.pending)?;
        d.set_item("leased", s.lease.leased)?;
        d.set_item("lease_operations", s.lease.operations)?;
        d.set_item("leases", s.lease.leases)?;
        Ok(d)
    }

    /// Write back spend settled while Redis was down or under a lease, and hand leases back,
    /// if Redis is up (shared budgets; else nothing): for a process about to exit.
    fn flush(&self, py: Python<'_>) {
        if let CoreBudgets::Shared(s) = &self.budgets {
            py.detach(|| s.hand_back());
        }
    }

    /// Replace the settings (spend so far is kept); a bad one raises ConfigError, the old
    /// settings stay.
    fn update(&self, config: &str) -> PyResult<()> {
        let config = parse(config)?;
        self.budgets
            .update(config)
            .map_err(|e| CoreError::from(e).into())
    }

    /// A call answered from a cache for this tenant: it cost nothing, and saved this much.
    #[pyo3(signature = (tenant=None, user=None, usd=0.0, tokens=0))]
    fn saved(
        &self,
        py: Python<'_>,
        tenant: Option<&str>,
        user: Option<&str>,
        usd: f64,
        tokens: u64,
    ) {
        let who = langscale_core::spend::Who::new(tenant, user);
        let cost = langscale_core::spend::Cost {
            requests: 1,
            tokens,
            usd: if usd.is_finite() { usd.max(0.0) } else { 0.0 },
        };
        py.detach(|| self.budgets.saved(&who, cost));
    }

    /// Per level seen ("global", "tenant:<t>", "user:<t>/<u>"): counters, and for each limit
    /// its use, limit, remaining and whether it is near (the configured fraction).
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = py.detach(|| self.budgets.report());
        let out = PyDict::new(py);
        out.set_item("shadow", r.shadow)?;
        out.set_item("in_flight", r.in_flight)?;
        let levels = PyDict::new(py);
        for l in &r.levels {
            let name = if l.key == "g" {
                "global".to_owned()
            } else if let Some(t) = l.key.strip_prefix("t:") {
                format!("tenant:{t}")
            } else if let Some(u) = l.key.strip_prefix("u:") {
                format!("user:{u}")
            } else {
                l.key.clone()
            };
            let d = PyDict::new(py);
            let c = &l.counters;
            d.set_item("requests", c.requests)?;
            d.set_item("refused", c.refused)?;
            d.set_item("would_refuse", c.would_refuse)?;
            d.set_item("usd", c.usd)?;
            d.set_item("tokens", c.tokens)?;
            d.set_item("cache_hits", c.cache_hits)?;
            d.set_item("saved_usd", c.saved_usd)?;
            d.set_item("saved_tokens", c.saved_tokens)?;
            let meters = PyList::empty(py);
            for m in &l.meters {
                let x = PyDict::new(py);
                x.set_item("budget", &m.budget)?;
                x.set_item("used", m.used)?;
                x.set_item("limit", m.limit)?;
                x.set_item("remaining", m.remaining)?;
                x.set_item("near", m.near)?;
                meters.append(x)?;
            }
            d.set_item("limits", meters)?;
            levels.set_item(name, d)?;
        }
        out.set_item("levels", levels)?;
        Ok(out)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Budgets>()
}
