//! Python face of the core limiter: `_core.RateLimiter`, one class for a limit held in this
//! process or shared through Redis (the core's `AnyLimiter`), and the `Permit` or
//! `SharedPermit` it hands out.

use std::sync::Mutex;
use std::time::Duration;

use langscale_core::limit::{
    AnyLimiter, AnyPermit, Ask, Limiter, LimiterConfig, Permit as CorePermit, Priority,
    SharedLimiter, SharedLimiterConfig, SharedPermit as CoreSharedPermit,
};
use langscale_core::store::Store;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::args::{self, Tokens};
use crate::errors::{config_error, CoreError};
use crate::store::RedisStore;

/// `priority=`: "high", "standard" or "batch".
pub(crate) struct PriorityArg(pub Priority);

impl<'a, 'py> FromPyObject<'a, 'py> for PriorityArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        args::text("priority", &obj)?
            .parse::<Priority>()
            .map(Self)
            .map_err(|e| CoreError::from(e).into())
    }
}

/// GCRA rate limiter over requests, tokens and concurrency, with priority-ordered waiting:
/// held in this process, or, made with a `store`, in Redis for every process naming `name`
/// (`lease`, `local_share` and `slot_ttl` are the shared limit's settings).
#[pyclass(frozen, module = "langscale._core")]
pub struct RateLimiter {
    pub(crate) limiter: AnyLimiter,
    /// A shared limit's store: health changes it saw are logged after each wait.
    store: Option<Store>,
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(signature = (requests_per_second=None, requests_per_minute=None, tokens_per_minute=None, max_concurrency=None, burst=None, token_burst=None, priority_aging=None, tenant_weights=None, *, store=None, name=None, lease=None, local_share=None, slot_ttl=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        requests_per_second: Option<&Bound<'_, PyAny>>,
        requests_per_minute: Option<&Bound<'_, PyAny>>,
        tokens_per_minute: Option<&Bound<'_, PyAny>>,
        max_concurrency: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
        token_burst: Option<&Bound<'_, PyAny>>,
        priority_aging: Option<&Bound<'_, PyAny>>,
        tenant_weights: Option<&Bound<'_, PyAny>>,
        store: Option<&Bound<'_, RedisStore>>,
        name: Option<args::Name<'_>>,
        lease: Option<&Bound<'_, PyAny>>,
        local_share: Option<&Bound<'_, PyAny>>,
        slot_ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let max_concurrency = args::positive_count("max_concurrency", max_concurrency)?
            .map(|n| {
                u32::try_from(n)
                    .map_err(|_| config_error(format!("max_concurrency is too large: {n}")))
            })
            .transpose()?;
        let limits = LimiterConfig {
            requests_per_second: args::positive_number("requests_per_second", requests_per_second)?,
            requests_per_minute: args::positive_number("requests_per_minute", requests_per_minute)?,
            tokens_per_minute: args::positive_number("tokens_per_minute", tokens_per_minute)?,
            max_concurrency,
            burst: args::positive_count("burst", burst)?,
            token_burst: args::positive_count("token_burst", token_burst)?,
            priority_aging: args::seconds("priority_aging", priority_aging)?
                .unwrap_or(Duration::from_secs(5)),
            tenant_weights: args::tenant_weights("tenant_weights", tenant_weights)?,
        };
        let Some(store) = store else {
            let limiter = Limiter::new(&limits).map_err(CoreError::from)?;
            return Ok(Self {
                limiter: AnyLimiter::Local(limiter),
                store: None,
            });
        };
        let name = name.map_or("default", |n| n.0);
        if name.is_empty() || name.contains(['{', '}']) {
            return Err(config_error(format!(
                "name must be a non-empty string without braces, got {name:?}"
            )));
        }
        let defaults = SharedLimiterConfig::default();
        let config = SharedLimiterConfig {
            name: name.to_owned(),
            limits,
            lease: args::positive_count("lease", lease)?.unwrap_or(1),
            local_share: args::positive_number("local_share", local_share)?,
            slot_ttl: args::seconds("slot_ttl", slot_ttl)?.unwrap_or(defaults.slot_ttl),
        };
        let store = store.get().store.clone();
        let limiter = SharedLimiter::new(store.clone(), config).map_err(CoreError::from)?;
        Ok(Self {
            limiter: AnyLimiter::Shared(limiter),
            store: Some(store),
        })
    }

    /// Admit now if possible, else return None; never waits (a shared limit makes one round
    /// trip at most, without the GIL, and holds a `tenant` to its share while another
    /// tenant is starved, in every process).
    #[pyo3(
        signature = (tokens=Tokens(0), priority=PriorityArg(Priority::Standard), tenant=None),
        text_signature = "($self, tokens=0, priority='standard', tenant=None)"
    )]
    fn try_acquire(
        &self,
        py: Python<'_>,
        tokens: Tokens,
        priority: PriorityArg,
        tenant: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (tokens, priority) = (tokens.0, priority.0);
        let ask = Ask::new(priority, args::optional_text("tenant", tenant)?);
        let permit = match &self.limiter {
            // a few atomics: not worth giving the GIL up for
            AnyLimiter::Local(_) => self.limiter.try_acquire(tokens, ask),
            AnyLimiter::Shared(_) => py.detach(|| self.limiter.try_acquire(tokens, ask)),
        };
        permit
            .map_err(CoreError::from)?
            .map(|p| permit_object(py, p))
            .transpose()
    }

    /// Wait (releasing the GIL) until admitted; raises RateLimitTimeout after `timeout` seconds.
    /// Waiters naming a `tenant` share the limit fairly (by `tenant_weights`, on tokens).
    #[pyo3(
        signature = (tokens=Tokens(0), priority=PriorityArg(Priority::Standard), timeout=None, tenant=None),
        text_signature = "($self, tokens=0, priority='standard', timeout=None, tenant=None)"
    )]
    fn acquire(
        &self,
        py: Python<'_>,
        tokens: Tokens,
        priority: PriorityArg,
        timeout: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let (tokens, priority) = (tokens.0, priority.0);
        let timeout = args::seconds("timeout", timeout)?;
        let ask = Ask::new(priority, args::optional_text("tenant", tenant)?);
        if let AnyLimiter::Local(local) = &self.limiter {
            // admitted at once, the usual case, without giving the GIL up
            if let Some(permit) = local
                .try_acquire(tokens, priority)
                .map_err(CoreError::from)?
            {
                return permit_object(py, AnyPermit::Local(permit));
            }
        }
        let permit = py.detach(|| {
            let permit = self.limiter.acquire_blocking(tokens, ask, timeout);
            if let Some(store) = &self.store {
                store.flush_events();
            }
            permit
        });
        permit_object(py, permit.map_err(CoreError::from)?)
    }

    /// An awaitable of a permit; cancelling it gives the place in the queue back.
    #[pyo3(
        signature = (tokens=Tokens(0), priority=PriorityArg(Priority::Standard), timeout=None, tenant=None),
        text_signature = "($self, tokens=0, priority='standard', timeout=None, tenant=None)"
    )]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        tokens: Tokens,
        priority: PriorityArg,
        timeout: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (tokens, priority) = (tokens.0, priority.0);
        let timeout = args::seconds("timeout", timeout)?;
        let ask = Ask::new(priority, args::optional_text("tenant", tenant)?);
        let limiter = self.limiter.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let permit = limiter
                .acquire(tokens, ask, timeout)
                .await
                .map_err(CoreError::from)?;
            Python::attach(|py| permit_object(py, permit))
        })
    }

    /// Change a tenant's share of this limit while tenants wait (default weight 1); a shared
    /// limit's in this process only (set it alike in every process sharing it).
    fn set_tenant_weight(
        &self,
        tenant: &Bound<'_, PyAny>,
        weight: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let tenant = args::text("tenant", tenant)?;
        let weight = args::positive_number("weight", Some(weight))?.unwrap_or(1.0);
        self.limiter
            .set_tenant_weight(tenant, weight)
            .map_err(|e| CoreError::from(e).into())
    }

    /// The largest token count one request may ask for (None when tokens are not limited).
    #[getter]
    fn max_tokens(&self) -> Option<u64> {
        self.limiter.max_tokens()
    }

    /// Counters: acquired, waited, wait_seconds, timeouts, waiting, in_flight; a shared limit
    /// adds round_trips, leased, local, workers, local_share.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, shared) = match &self.limiter {
            AnyLimiter::Local(l) => (l.stats(), None),
            AnyLimiter::Shared(l) => {
                if let Some(store) = &self.store {
                    store.flush_events();
                }
                let s = l.stats();
                (s.counts, Some(s))
            }
        };
        let d = PyDict::new(py);
        d.set_item("acquired", s.acquired)?;
        d.set_item("waited", s.waited)?;
        d.set_item("wait_seconds", s.wait_nanos as f64 / 1e9)?;
        d.set_item("timeouts", s.timeouts)?;
        d.set_item("waiting", s.waiting)?;
        d.set_item("in_flight", s.in_flight)?;
        if let Some(s) = shared {
            d.set_item("round_trips", s.round_trips)?;
            d.set_item("leased", s.leased)?;
            d.set_item("local", s.local)?;
            d.set_item("workers", s.workers)?;
            d.set_item("local_share", s.local_share)?;
        }
        Ok(d)
    }
}

/// The Python object of a permit: a `Permit`, or a `SharedPermit` from a shared limit.
fn permit_object(py: Python<'_>, permit: AnyPermit) -> PyResult<Py<PyAny>> {
    Ok(match permit {
        AnyPermit::Local(p) => Py::new(py, Permit::new(p))?.into_any(),
        AnyPermit::Shared(p) => Py::new(py, SharedPermit::new(p))?.into_any(),
    })
}

/// A limiter of either kind (`_core.RateLimiter`, or a `langscale.RateLimiter` wrapping one).
pub(crate) fn any_limiter(name: &str, value: &Bound<'_, PyAny>) -> PyResult<AnyLimiter> {
    let inner = match value.getattr("_core") {
        Ok(core) => core,
        Err(_) => value.clone(),
    };
    match inner.cast::<RateLimiter>() {
        Ok(limiter) => Ok(limiter.get().limiter.clone()),
        Err(_) => Err(config_error(format!(
            "{name} must be a langscale.RateLimiter, got {}",
            args::describe(value)
        ))),
    }
}

/// `True` or `False`, as Python writes them.
pub(crate) fn py_bool(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// A permit class, the same for the local and the shared limiter's: it holds the core
/// permit `$core` (with `tokens()`, `priority()`, `settle(u64)` and `release()`) and offers
/// `settle`, `release`, `tokens`/`priority`/`released`, sync and async context management.
/// `$local` reads from the core permit whether its repr shows `local=` (Some: a shared
/// limit's); `$extra` adds the class's own methods.
macro_rules! permit_class {
    ($(#[$doc:meta])* $class:ident($core:ty, local = $local:expr) { $($extra:tt)* }) => {
        $(#[$doc])*
        #[pyclass(frozen, module = "langscale._core")]
        pub struct $class {
            /// Kept after release: the slot goes back at once, the token record stays so
            /// usage that arrives after the call can still be settled.
            permit: Mutex<$core>,
            released: std::sync::atomic::AtomicBool,
            tokens: std::sync::atomic::AtomicU64,
            priority: Priority,
            local: Option<bool>,
        }

        impl $class {
            fn new(permit: $core) -> Self {
                let local: fn(&$core) -> Option<bool> = $local;
                Self {
                    tokens: std::sync::atomic::AtomicU64::new(permit.tokens()),
                    priority: permit.priority(),
                    local: local(&permit),
                    permit: Mutex::new(permit),
                    released: std::sync::atomic::AtomicBool::new(false),
                }
            }

            fn describe(&self) -> String {
                let local = self
                    .local
                    .map_or_else(String::new, |l| format!(", local={}", py_bool(l)));
                format!(
                    "{}(tokens={}, priority='{}', released={}{local})",
                    stringify!($class),
                    self.tokens.load(std::sync::atomic::Ordering::Relaxed),
                    self.priority.as_str(),
                    py_bool(self.released.load(std::sync::atomic::Ordering::Relaxed)),
                )
            }

            fn release_now(&self) {
                self.permit
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .release();
                self.released
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }

        #[pymethods]
        impl $class {
            /// Reconcile with the tokens really used: refunds an overestimate, charges an
            /// underestimate.
            fn settle(&self, actual_tokens: &Bound<'_, PyAny>) -> PyResult<()> {
                let actual = $crate::args::required_count("actual_tokens", actual_tokens)?;
                self.permit
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .settle(actual);
                self.tokens
                    .store(actual, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }

            /// Give the concurrency slot back now. Safe to call more than once.
            fn release(&self) {
                self.release_now();
            }

            #[getter]
            fn tokens(&self) -> u64 {
                self.tokens.load(std::sync::atomic::Ordering::Relaxed)
            }

            #[getter]
            fn priority(&self) -> &'static str {
                self.priority.as_str()
            }

            #[getter]
            fn released(&self) -> bool {
                self.released.load(std::sync::atomic::Ordering::Relaxed)
            }

            fn __bool__(&self) -> bool {
                true
            }

            fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
                slf
            }

            #[pyo3(signature = (*_exc))]
            fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
                self.release_now();
                false
            }

            fn __aenter__(slf: Bound<'_, Self>) -> $crate::limit::Ready {
                $crate::limit::Ready::new(slf.into_any().unbind())
            }

            #[pyo3(signature = (*_exc))]
            fn __aexit__(
                &self,
                py: Python<'_>,
                _exc: &Bound<'_, pyo3::types::PyTuple>,
            ) -> $crate::limit::Ready {
                self.release_now();
                $crate::limit::Ready::new(py.None())
            }

            fn __repr__(&self) -> String {
                self.describe()
            }

            $($extra)*
        }
    };
}

permit_class!(
    /// Admission to make one call. Use as a (sync or async) context manager to release the
    /// concurrency slot on exit; `settle(actual_tokens)` reconciles the token estimate.
    Permit(CorePermit, local = |_| None) {}
);

permit_class!(
    /// Admission from a shared limit; same use as `Permit`.
    SharedPermit(CoreSharedPermit, local = |p| Some(p.is_local())) {
        /// True when admitted by this process's local share because Redis was down.
        #[getter]
        fn local(&self) -> bool {
            self.local.unwrap_or(false)
        }
    }
);

/// An awaitable that is already done: what `async with permit` awaits.
#[pyclass(frozen, module = "langscale._core")]
pub struct Ready {
    value: Py<PyAny>,
}

impl Ready {
    /// An awaitable already done with `value` (also used by the shared limiter's permit).
    pub(crate) fn new(value: Py<PyAny>) -> Self {
        Self { value }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RateLimiter>()?;
    m.add_class::<Permit>()?;
    m.add_class::<SharedPermit>()?;
    m.add_class::<Ready>()?;
    Ok(())
}
