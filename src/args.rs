//! Checked conversion of Python arguments: a wrong type or value becomes a `ConfigError` that
//! names the argument and the value, never a bare TypeError or a panic.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};

use crate::errors::config_error;

fn describe(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string())
}

/// A positive finite number (int or float, not bool), or None.
pub fn positive_number(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let number = if value.is_instance_of::<PyBool>() {
        None
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        value.extract::<f64>().ok()
    } else {
        None
    };
    match number {
        Some(n) if n.is_finite() && n > 0.0 => Ok(Some(n)),
        _ => Err(config_error(format!(
            "{name} must be a positive number, got {}",
            describe(value)
        ))),
    }
}

/// A non-negative integer (not bool), or None.
pub fn count(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let number = if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        value.extract::<u64>().ok()
    } else {
        None
    };
    number.map(Some).ok_or_else(|| {
        config_error(format!(
            "{name} must be a non-negative integer, got {}",
            describe(value)
        ))
    })
}

/// A positive integer (not bool), or None.
pub fn positive_count(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    match count(name, value) {
        Ok(Some(0)) => Err(config_error(format!(
            "{name} must be a positive integer, got 0"
        ))),
        Ok(Some(n)) if n > 0 => Ok(Some(n)),
        Ok(_) => Ok(None),
        Err(_) => Err(config_error(format!(
            "{name} must be a positive integer, got {}",
            value.map_or_else(|| "None".to_owned(), describe)
        ))),
    }
}

/// A duration in seconds (int or float > 0), or None.
pub fn seconds(
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<std::time::Duration>> {
    positive_number(name, value)?
        .map(|s| {
            std::time::Duration::try_from_secs_f64(s)
                .map_err(|_| config_error(format!("{name} is too large: {s} seconds")))
        })
        .transpose()
}
