//! Python face of `tokens`: `_core.count_tokens(model, messages)`, the input tokens of a chat
//! (exact for OpenAI models, estimated otherwise).

use langscale_core::tokens::{self, Encoding};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::args;
use crate::errors::config_error;

/// Above this many bytes of text, even an estimate runs without the GIL.
const DETACH_BYTES: usize = 16 * 1024;

/// Input tokens of `messages`, a list of `(role, content)` str pairs, for `model` (None: not
/// known, estimated). A lone surrogate in a str is counted as U+FFFD, not refused: the count
/// of such a prompt is still wanted.
#[pyfunction]
#[pyo3(signature = (model, messages))]
fn count_tokens(
    py: Python<'_>,
    model: Option<&Bound<'_, PyAny>>,
    messages: &Bound<'_, PyAny>,
) -> PyResult<u64> {
    let model = args::optional_text("model", model)?;
    let items = args::items("messages", messages)?;
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(items.len());
    let mut bytes = 0usize;
    for (i, item) in items.iter().enumerate() {
        let (role, content) = pair(i, item)?;
        bytes = bytes.saturating_add(content.len());
        pairs.push((role, content));
    }
    // The exact count takes microseconds and its first call builds the encoder (a fraction of
    // a second): other Python threads run meanwhile.
    let exact = model.and_then(Encoding::for_model).is_some();
    let count = || tokens::count_messages(model, &pairs);
    if exact || bytes > DETACH_BYTES {
        Ok(py.detach(count))
    } else {
        Ok(count())
    }
}

/// `messages[i]` as (role, content).
fn pair(i: usize, item: &Bound<'_, PyAny>) -> PyResult<(String, String)> {
    let bad = || {
        config_error(format!(
            "messages[{i}] must be a (role, content) pair of str, got {}",
            args::describe(item)
        ))
    };
    let parts = args::items("messages", item).map_err(|_| bad())?;
    let [role, content] = parts.as_slice() else {
        return Err(bad());
    };
    let text = |v: &Bound<'_, PyAny>| -> PyResult<String> {
        v.cast::<PyString>()
            .map(|s| s.to_string_lossy().into_owned())
            .map_err(|_| bad())
    };
    Ok((text(role)?, text(content)?))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    Ok(())
}
