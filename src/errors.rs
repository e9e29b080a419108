//! The Python exception hierarchy, declared once, and the mapping from every core error onto
//! it. No other file declares an exception class.

use langscale_core::cache::CacheError;
use langscale_core::limit::LimitError;
use langscale_core::provider::{FailedAttempt, ProviderError as CoreProviderError, RoutedError};
use langscale_core::store::StoreError as CoreStoreError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    langscale,
    LangscaleError,
    PyException,
    "Base class of every langscale error."
);
create_exception!(
    langscale,
    ConfigError,
    LangscaleError,
    "A bad argument or setting; the message names the value."
);
create_exception!(
    langscale,
    RateLimitTimeout,
    LangscaleError,
    "A rate-limit wait exceeded its timeout."
);

create_exception!(
    langscale,
    ProviderError,
    LangscaleError,
    "A provider call failed. args: (message, kind, status, retry_after, code)."
);
create_exception!(
    langscale,
    RouteFailed,
    LangscaleError,
    "The router gave up without a provider error to show (e.g. every breaker open)."
);
create_exception!(
    langscale,
    StoreError,
    LangscaleError,
    "Redis could not serve a call: down, timed out, unreachable, or it answered an error."
);

create_exception!(
    langscale,
    BudgetExceeded,
    LangscaleError,
    "A tenant, user or global budget refused the call. Attributes: tenant, user, level, budget, spent, limit, resets_in (seconds, or None)."
);

fn budget_exceeded(e: &langscale_core::spend::Exceeded) -> PyErr {
    let err = BudgetExceeded::new_err(e.to_string());
    Python::attach(|py| {
        let value = err.value(py);
        let _ = value.setattr("tenant", e.tenant.clone());
        let _ = value.setattr("user", e.user.clone());
        let _ = value.setattr("level", e.level.as_str());
        let _ = value.setattr("budget", e.budget.clone());
        let _ = value.setattr("spent", e.spent);
        let _ = value.setattr("limit", e.limit);
        let _ = value.setattr("resets_in", e.resets_in.map(|d| d.as_secs_f64()));
    });
    err
}

pub fn config_error(message: impl Into<String>) -> PyErr {
    ConfigError::new_err(message.into())
}

pub struct CoreError(PyErr);

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> Self {
        err.0
    }
}

impl From<LimitError> for CoreError {
    fn from(err: LimitError) -> Self {
        CoreError(match err {
            LimitError::Config(_) => ConfigError::new_err(err.to_string()),
            LimitError::Timeout(_) => RateLimitTimeout::new_err(err.to_string()),
            LimitError::Budget(e) => budget_exceeded(&e),
        })
    }
}

impl From<CoreStoreError> for CoreError {
    fn from(err: CoreStoreError) -> Self {
        CoreError(match err {
            CoreStoreError::Config(_) => ConfigError::new_err(err.to_string()),
            _ => StoreError::new_err(err.to_string()),
        })
    }
}

impl From<CacheError> for CoreError {
    fn from(err: CacheError) -> Self {
        CoreError(ConfigError::new_err(err.to_string()))
    }
}

pub fn provider_error(e: &CoreProviderError) -> PyErr {
    let kind = match e.kind() {
        langscale_core::route::ErrorKind::Other { retryable: true } => "other_retryable",
        k => k.as_str(),
    };
    let message = match e {
        CoreProviderError::Invalid(m) => return config_error(m.clone()),
        _ => e.to_string(),
    };
    ProviderError::new_err((
        message,
        kind,
        e.status(),
        e.retry_after().map(|d| d.as_secs_f64()),
        e.code().map(str::to_owned),
    ))
}

pub fn routed_error(e: RoutedError) -> PyErr {
    let (err, attempts) = match e {
        RoutedError::Provider {
            error, attempts, ..
        } => (provider_error(&error), attempts),
        RoutedError::Failed { reason, attempts } => {
            (RouteFailed::new_err(reason.to_string()), attempts)
        }
        RoutedError::Limit(e) => return CoreError::from(e).into(),
        RoutedError::Config(m) => return config_error(m),
    };
    Python::attach(|py| with_attempts(py, err, &attempts))
}

/// `err` with an `attempts` attribute: `[(attempt, deployment, ProviderError), ...]`, every
/// failed attempt of the request in order, for `langscale.scaled` to name each one.
fn with_attempts(py: Python<'_>, err: PyErr, attempts: &[FailedAttempt]) -> PyErr {
    let listed: Vec<(u32, usize, PyErr)> = attempts
        .iter()
        .map(|a| (a.attempt.0, a.deployment, provider_error(&a.error)))
        .collect();
    if let Err(e) = err.value(py).setattr("attempts", listed) {
        return e;
    }
    err
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LangscaleError", py.get_type::<LangscaleError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("RateLimitTimeout", py.get_type::<RateLimitTimeout>())?;
    m.add("BudgetExceeded", py.get_type::<BudgetExceeded>())?;
    m.add("ProviderError", py.get_type::<ProviderError>())?;
    m.add("RouteFailed", py.get_type::<RouteFailed>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    Ok(())
}
