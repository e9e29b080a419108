//! What went wrong with a provider call, classified onto the router's error kinds, with the
//! provider's rate-limit headers kept. No variant ever holds the API key: messages are built
//! from the status, the provider's error text (with the key masked) and a URL without query.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::route::classify::{self, RateLimitReset};
use crate::route::ErrorKind;

/// The provider's rate-limit headers (`x-ratelimit-*`), where sent.
pub type RateLimitInfo = RateLimitReset;

/// A failed call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error status.
    #[error("{url} answered HTTP {status}{}: {message}", code_hint(.code))]
    Status {
        url: String,
        status: u16,
        kind: ErrorKind,
        message: String,
        /// The provider's error code (`context_length_exceeded`, `rate_limit_exceeded`, ...).
        code: Option<String>,
        retry_after: Option<Duration>,
        rate_limits: Box<RateLimitInfo>,
    },
    /// No answer within the timeout.
    #[error("{url} did not answer within {:.3} s", .after.as_secs_f64())]
    Timeout { url: String, after: Duration },
    /// Could not connect, or the connection broke.
    #[error("connection to {url} failed: {message}")]
    Connection { url: String, message: String },
    /// The answer was not a chat completion (or a stream broke off mid-event).
    #[error("{url} sent a response that is not a chat completion: {message}")]
    Decode { url: String, message: String },
    /// The request could not be built (bad messages, base URL or parameters).
    #[error("{0}")]
    Invalid(String),
}

fn code_hint(code: &Option<String>) -> String {
    code.as_ref()
        .map_or_else(String::new, |c| format!(" ({c})"))
}

impl ProviderError {
    /// The router's view of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Status { kind, .. } => *kind,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Connection { .. } => ErrorKind::Connection,
            Self::Decode { .. } => ErrorKind::Server,
            Self::Invalid(_) => ErrorKind::InvalidRequest,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// An error answer: status, headers and body, classified. `secret` is masked out of the
    /// provider's message (some providers echo part of a bad key).
    pub(crate) fn from_status(
        url: &str,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        secret: Option<&str>,
    ) -> Self {
        let (message, code) = error_text(body);
        let message = mask(&message, secret);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let rate_limits = Box::new(RateLimitReset::from_headers(&pairs));
        let retry_after = classify::retry_after(&pairs, Some(status), SystemTime::now());
        let kind = classify::from_status(status, code.as_deref(), &message, retry_after);
        Self::Status {
            url: url.to_owned(),
            status,
            kind,
            message,
            code,
            retry_after,
            rate_limits,
        }
    }

    pub(crate) fn from_reqwest(url: &str, err: &reqwest::Error, timeout: Duration) -> Self {
        if err.is_timeout() {
            return Self::Timeout {
                url: url.to_owned(),
                after: timeout,
            };
        }
        // Without the URL (ours is printed instead, without its query) and with the source
        // chain, which says what actually broke (refused, reset, ...).
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        if err.is_decode() {
            return Self::Decode {
                url: url.to_owned(),
                message,
            };
        }
        if err.is_builder() {
            return Self::Invalid(format!("cannot build a request to {url}: {message}"));
        }
        Self::Connection {
            url: url.to_owned(),
            message,
        }
    }
}

/// The provider's message and code from `{"error": {"message", "code", "type"}}`, else the
/// body's text (cut at 500 characters).
fn error_text(body: &[u8]) -> (String, Option<String>) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let error = value.get("error").unwrap_or(&value);
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| error.as_str())
            .map(str::to_owned);
        let code = ["code", "type"].iter().find_map(|k| {
            error.get(*k).and_then(|c| match c {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        });
        if let Some(message) = message {
            return (truncate(&message), code);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        ("(empty body)".to_owned(), None)
    } else {
        (truncate(text), None)
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX).collect();
    cut.push('…');
    cut
}

fn mask(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 4 && text.contains(s) => text.replace(s, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn statuses_are_classified_with_retry_after_and_limits() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-remaining-tokens", "100"),
            ("x-ratelimit-reset-tokens", "9s"),
            ("x-ratelimit-limit-requests", "60"),
        ]);
        let body = br#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#;
        let e = ProviderError::from_status("http://h/v1", 429, &h, body, None);
        assert_eq!(
            e.kind(),
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(e.code(), Some("rate_limit_exceeded"));
        let ProviderError::Status { rate_limits, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(rate_limits.limit_requests, Some(60));
        assert_eq!(rate_limits.remaining_tokens, Some(100));

        let none = HeaderMap::new();
        let overflow = br#"{"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}}"#;
        let cases: [(u16, &[u8], ErrorKind); 7] = [
            (400, overflow, ErrorKind::ContextOverflow),
            (
                400,
                b"{\"error\": {\"message\": \"bad role\"}}",
                ErrorKind::InvalidRequest,
            ),
            (404, b"no such model", ErrorKind::InvalidRequest),
            (422, b"", ErrorKind::InvalidRequest),
            (401, b"", ErrorKind::Auth),
            (403, b"", ErrorKind::Auth),
            (503, b"<html>down</html>", ErrorKind::Server),
        ];
        for (status, body, kind) in cases {
            let e = ProviderError::from_status("http://h/v1", status, &none, body, None);
            assert_eq!(e.kind(), kind, "{status} {e}");
            assert_eq!(e.status(), Some(status));
        }
    }

    #[test]
    fn the_key_never_shows_in_the_message() {
        let body = br#"{"error": {"message": "Incorrect API key provided: sk-secret-123"}}"#;
        let e = ProviderError::from_status(
            "http://h/v1",
            401,
            &HeaderMap::new(),
            body,
            Some("sk-secret-123"),
        );
        let text = format!("{e} {e:?}");
        assert!(!text.contains("sk-secret-123"), "{text}");
        assert!(text.contains("***"), "{text}");
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "x".repeat(10_000);
        let e = ProviderError::from_status("u", 500, &HeaderMap::new(), body.as_bytes(), None);
        assert!(e.to_string().len() < 700);
    }
}
