//! Checked conversion of Python arguments: a wrong type or value becomes a `ConfigError` that
//! names the argument and the value, never a bare TypeError, UnicodeEncodeError, OverflowError
//! or a panic. Every argument the binding takes as text, flag, number or list goes through here.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::config_error;

/// The value's repr for a message, cut to 80 characters (a prompt may be megabytes).
pub fn describe(value: &Bound<'_, PyAny>) -> String {
    let repr = value
        .repr()
        .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string());
    let mut short: String = repr.chars().take(80).collect();
    if short.len() < repr.len() {
        short.push_str("...");
    }
    short
}

/// A str that is valid Unicode (a lone surrogate such as "\ud800" cannot be UTF-8).
pub fn text<'a>(name: &str, value: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    borrowed_text(name, value.as_borrowed())
}

/// `text` for an argument as PyO3 hands it to `FromPyObject` (see `text_arg!`).
pub fn borrowed_text<'a>(name: &str, value: Borrowed<'a, '_, PyAny>) -> PyResult<&'a str> {
    <&'a str as FromPyObject<'a, '_>>::extract(value).map_err(|_| {
        if value.is_instance_of::<PyString>() {
            config_error(format!(
                "{name} must be valid Unicode text (no lone surrogates), got {}",
                describe(&value)
            ))
        } else {
            let kind = value
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string());
            config_error(format!(
                "{name} must be a str, got {kind} {}",
                describe(&value)
            ))
        }
    })
}

/// A str argument named `$name`, checked by `text` as PyO3 extracts it: declare it once,
/// use the type in every signature taking it (a failed check names `$name`).
macro_rules! text_arg {
    ($($(#[$doc:meta])* $ty:ident = $name:literal;)+) => {$(
        $(#[$doc])*
        pub struct $ty<'a>(pub &'a str);

        impl<'a, 'py> pyo3::FromPyObject<'a, 'py> for $ty<'a> {
            type Error = pyo3::PyErr;

            fn extract(obj: pyo3::Borrowed<'a, 'py, pyo3::PyAny>) -> pyo3::PyResult<Self> {
                $crate::args::borrowed_text($name, obj).map(Self)
            }
        }
    )+};
}
pub(crate) use text_arg;

text_arg! {
    /// The prompt a LangChain cache is asked about.
    Prompt = "prompt";
    /// The model and parameters part of a LangChain cache key.
    LlmString = "llm_string";
    /// Text to embed.
    Text = "text";
    /// The name a shared rate limiter meets its peers under in Redis.
    Name = "name";
    /// The name shared breakers and the semantic cache's stream meet their peers under.
    SharedName = "shared_name";
}

/// A non-negative int argument named `$name`, checked by `required_count` as PyO3 extracts
/// it (a negative, huge or non-int value is a `ConfigError` naming it, not an OverflowError):
/// declare it once, use the type in every signature taking it.
macro_rules! count_arg {
    ($($(#[$doc:meta])* $ty:ident = $name:literal;)+) => {$(
        $(#[$doc])*
        pub struct $ty(pub u64);

        impl<'a, 'py> pyo3::FromPyObject<'a, 'py> for $ty {
            type Error = pyo3::PyErr;

            fn extract(obj: pyo3::Borrowed<'a, 'py, pyo3::PyAny>) -> pyo3::PyResult<Self> {
                $crate::args::required_count($name, &obj).map(Self)
            }
        }
    )+};
}

count_arg! {
    /// The tokens a limiter is asked for (None is refused, not read as 0).
    Tokens = "tokens";
    /// The output tokens a request's budget reservation holds (its `max_tokens`).
    OutputTokens = "output_tokens";
}

/// A mapping of tenant name to a positive weight (`{"acme": 2, "free": 0.5}`).
pub fn tenant_weights(
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<std::collections::HashMap<String, f64>> {
    let mut out = std::collections::HashMap::new();
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(out);
    };
    let mapping = value.cast::<pyo3::types::PyDict>().map_err(|_| {
        config_error(format!(
            "{name} must be a dict of tenant name to weight, got {}",
            describe(value)
        ))
    })?;
    for (tenant, weight) in mapping.iter() {
        let tenant = text(&format!("a tenant in {name}"), &tenant)?.to_owned();
        let weight = positive_number(&format!("{name}[{tenant:?}]"), Some(&weight))?.unwrap_or(1.0);
        out.insert(tenant, weight);
    }
    Ok(out)
}

/// `text` for a secret (an API key, a header value): a bad one is described, never shown.
pub fn secret_text<'a>(name: &str, value: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    text(name, value).map_err(|_| {
        config_error(format!(
            "{name} must be a str of valid Unicode (no lone surrogates); the value is not shown"
        ))
    })
}

/// `text`, or None.
pub fn optional_text<'a>(
    name: &str,
    value: Option<&'a Bound<'_, PyAny>>,
) -> PyResult<Option<&'a str>> {
    value
        .filter(|v| !v.is_none())
        .map(|v| text(name, v))
        .transpose()
}

/// The items of a list or tuple (not a str: a str is a sequence of letters, never meant).
pub fn items<'py>(name: &str, value: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(list) = value.cast::<PyList>() {
        return Ok(list.iter().collect());
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return Ok(tuple.iter().collect());
    }
    Err(config_error(format!(
        "{name} must be a list, got {}",
        describe(value)
    )))
}

/// A list or tuple of str, each checked as `text` and named by its index.
pub fn texts(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    items(name, value)
        .map_err(|_| {
            config_error(format!(
                "{name} must be a list of str, got {}",
                describe(value)
            ))
        })?
        .iter()
        .enumerate()
        .map(|(i, item)| text(&format!("{name}[{i}]"), item).map(str::to_owned))
        .collect()
}

/// True or False (not 0/1, not None).
pub fn flag(name: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value.cast::<PyBool>().map(|b| b.is_true()).map_err(|_| {
        config_error(format!(
            "{name} must be True or False, got {}",
            describe(value)
        ))
    })
}

/// bytes (or None).
pub fn optional_bytes(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<u8>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    value
        .cast::<PyBytes>()
        .map(|b| Some(b.as_bytes().to_vec()))
        .map_err(|_| config_error(format!("{name} must be bytes, got {}", describe(value))))
}

/// An int or float (not bool) as f64, if it is one.
fn as_number(value: &Bound<'_, PyAny>) -> Option<f64> {
    if value.is_instance_of::<PyBool>() {
        None
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        value.extract::<f64>().ok()
    } else {
        None
    }
}

/// A finite number (int or float, not bool), or None.
pub fn number(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    match as_number(value) {
        Some(n) if n.is_finite() => Ok(Some(n)),
        _ => Err(config_error(format!(
            "{name} must be a finite number, got {}",
            describe(value)
        ))),
    }
}

/// A positive finite number (int or float, not bool), or None.
pub fn positive_number(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    match as_number(value) {
        Some(n) if n.is_finite() && n > 0.0 => Ok(Some(n)),
        _ => Err(config_error(format!(
            "{name} must be a positive number, got {}",
            describe(value)
        ))),
    }
}

/// An int (not bool) that fits an i32, or None.
pub fn int32(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i32>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let number = if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        value.extract::<i32>().ok()
    } else {
        None
    };
    number.map(Some).ok_or_else(|| {
        config_error(format!(
            "{name} must be an integer between {} and {}, got {}",
            i32::MIN,
            i32::MAX,
            describe(value)
        ))
    })
}

/// A non-negative integer (not bool); None is refused.
pub fn required_count(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let number = if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        value.extract::<u64>().ok()
    } else {
        None
    };
    number.ok_or_else(|| {
        config_error(format!(
            "{name} must be a non-negative integer, got {}",
            describe(value)
        ))
    })
}

/// A non-negative integer (not bool), or None.
pub fn count(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    value
        .filter(|v| !v.is_none())
        .map(|v| required_count(name, v))
        .transpose()
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
