//! The Python exception hierarchy, declared once, and the mapping from core errors onto it.

use langscale_core::cache::CacheError;
use langscale_core::limit::LimitError;
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
        })
    }
}

impl From<CacheError> for CoreError {
    fn from(err: CacheError) -> Self {
        CoreError(ConfigError::new_err(err.to_string()))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LangscaleError", py.get_type::<LangscaleError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("RateLimitTimeout", py.get_type::<RateLimitTimeout>())?;
    Ok(())
}
