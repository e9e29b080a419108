//! The one error classifier: what a failed call means to the router, from whatever is known
//! about it — the exception's class names (most derived first), the HTTP status, the headers
//! (`retry-after-ms`, `Retry-After`, `x-ratelimit-reset-*`), the provider's error code and its
//! message. Native endpoints and Python chat models both end here.
//!
//! | status | kind |
//! | --- | --- |
//! | 400, 404, 405, 415, 422 | `invalid_request` (`context_overflow` when the code or message says the prompt is too long) |
//! | 401, 403 | `auth` |
//! | 408, 504 | `timeout` |
//! | 409, 425 | `other`, retryable |
//! | 413 | `context_overflow` |
//! | 429 | `rate_limited` (with Retry-After) |
//! | 500–503, 505–599 | `server` |
//! | any other | `other`, not retryable (fail over) |

use std::time::{Duration, SystemTime};

use super::ErrorKind;

/// What the caller knows about a failure.
#[derive(Debug, Clone, Default)]
pub struct ErrorFacts<'a> {
    /// Class names, most derived first (a Python exception's `__mro__`).
    pub classes: &'a [&'a str],
    pub status: Option<u16>,
    /// Header lookup by lower-case name.
    pub headers: &'a [(&'a str, &'a str)],
    /// Retry-After the caller already parsed (an exception's `retry_after` attribute).
    pub retry_after: Option<Duration>,
    /// The provider's error code (`context_length_exceeded`, ...).
    pub code: Option<&'a str>,
    pub message: &'a str,
    /// The exception says it may be retried (`is_retryable`).
    pub retryable: bool,
}

/// Exception classes by name, checked most derived first: the langchain-core `ModelError`
/// family, the provider SDKs' own classes (openai, anthropic, httpx), Python's builtins.
const CLASSES: &[(&str, Class)] = &[
    (
        "ContextOverflowError",
        Class::Is(ErrorKind::ContextOverflow),
    ),
    ("ModelRateLimitError", Class::RateLimited),
    ("RateLimitError", Class::RateLimited),
    ("ModelAuthenticationError", Class::Is(ErrorKind::Auth)),
    ("ModelPermissionDeniedError", Class::Is(ErrorKind::Auth)),
    ("AuthenticationError", Class::Is(ErrorKind::Auth)),
    ("PermissionDeniedError", Class::Is(ErrorKind::Auth)),
    ("ModelInvalidRequestError", Class::Invalid),
    ("ModelNotFoundError", Class::Invalid),
    ("BadRequestError", Class::Invalid),
    ("NotFoundError", Class::Invalid),
    ("UnprocessableEntityError", Class::Invalid),
    ("ModelTimeoutError", Class::Is(ErrorKind::Timeout)),
    ("APITimeoutError", Class::Is(ErrorKind::Timeout)),
    ("TimeoutException", Class::Is(ErrorKind::Timeout)),
    ("TimeoutError", Class::Is(ErrorKind::Timeout)),
    ("ModelConnectionError", Class::Is(ErrorKind::Connection)),
    ("APIConnectionError", Class::Is(ErrorKind::Connection)),
    ("ConnectError", Class::Is(ErrorKind::Connection)),
    ("RemoteProtocolError", Class::Is(ErrorKind::Connection)),
    ("ConnectionError", Class::Is(ErrorKind::Connection)),
    ("InternalServerError", Class::Is(ErrorKind::Server)),
    // A generic API error: its status decides, else it is a server error.
    ("ModelAPIError", Class::Status),
    ("APIStatusError", Class::Status),
];

#[derive(Debug, Clone, Copy)]
enum Class {
    Is(ErrorKind),
    RateLimited,
    Invalid,
    Status,
}

const CONTEXT_WORDS: [&str; 6] = [
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "context_length_exceeded",
    "prompt is too long",
];

const CONTEXT_CODES: [&str; 2] = ["context_length_exceeded", "string_above_max_length"];

/// The router's kind for a failure.
pub fn classify(facts: &ErrorFacts<'_>) -> ErrorKind {
    let retry_after = facts
        .retry_after
        .or_else(|| retry_after(facts.headers, facts.status, SystemTime::now()));
    let by_class = facts
        .classes
        .iter()
        .find_map(|name| CLASSES.iter().find(|(n, _)| n == name).map(|(_, c)| *c));
    match by_class {
        Some(Class::Is(kind)) => kind,
        Some(Class::RateLimited) => ErrorKind::RateLimited { retry_after },
        Some(Class::Invalid) => {
            if says_context_overflow(facts.code, facts.message) {
                ErrorKind::ContextOverflow
            } else {
                ErrorKind::InvalidRequest
            }
        }
        Some(Class::Status) => match facts.status {
            Some(status) => from_status(status, facts.code, facts.message, retry_after),
            None => ErrorKind::Server,
        },
        None => match facts.status {
            Some(status) => from_status(status, facts.code, facts.message, retry_after),
            None => ErrorKind::Other {
                retryable: facts.retryable,
            },
        },
    }
}

/// The table above: an HTTP status, with the code and message for context overflow.
pub fn from_status(
    status: u16,
    code: Option<&str>,
    message: &str,
    retry_after: Option<Duration>,
) -> ErrorKind {
    match status {
        429 => ErrorKind::RateLimited { retry_after },
        413 => ErrorKind::ContextOverflow,
        401 | 403 => ErrorKind::Auth,
        400..=499 if says_context_overflow(code, message) => ErrorKind::ContextOverflow,
        408 | 504 => ErrorKind::Timeout,
        409 | 425 => ErrorKind::Other { retryable: true },
        400 | 404 | 405 | 415 | 422 => ErrorKind::InvalidRequest,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::Other { retryable: false },
    }
}

fn says_context_overflow(code: Option<&str>, message: &str) -> bool {
    if code.is_some_and(|c| CONTEXT_CODES.contains(&c)) {
        return true;
    }
    let lower = message.to_lowercase();
    CONTEXT_WORDS.iter().any(|w| lower.contains(w))
}

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// When to try again: `retry-after-ms`, then `Retry-After` (seconds, fractions allowed, or an
/// HTTP date); for a 429 without either, when the exhausted `x-ratelimit-*` limit resets.
pub fn retry_after(
    headers: &[(&str, &str)],
    status: Option<u16>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Duration::try_from_secs_f64(ms / 1000.0).ok();
        }
    }
    if let Some(value) = header(headers, "retry-after").map(str::trim) {
        if let Ok(seconds) = value.parse::<f64>() {
            return (seconds.is_finite() && seconds >= 0.0)
                .then(|| Duration::try_from_secs_f64(seconds).ok())
                .flatten();
        }
        if let Ok(when) = httpdate::parse_http_date(value) {
            return Some(when.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    if status == Some(429) {
        return RateLimitReset::from_headers(headers).retry_after();
    }
    None
}

/// The provider's `x-ratelimit-*` headers, where sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitReset {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub reset_requests: Option<Duration>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens: Option<Duration>,
}

impl RateLimitReset {
    pub fn from_headers(headers: &[(&str, &str)]) -> Self {
        let number = |name: &str| header(headers, name).and_then(|v| v.trim().parse().ok());
        let reset = |name: &str| header(headers, name).and_then(parse_reset);
        Self {
            limit_requests: number("x-ratelimit-limit-requests"),
            remaining_requests: number("x-ratelimit-remaining-requests"),
            reset_requests: reset("x-ratelimit-reset-requests"),
            limit_tokens: number("x-ratelimit-limit-tokens"),
            remaining_tokens: number("x-ratelimit-remaining-tokens"),
            reset_tokens: reset("x-ratelimit-reset-tokens"),
        }
    }

    /// When the exhausted limit resets: the later of the two resets whose remaining is 0,
    /// else the later of any reset.
    pub fn retry_after(&self) -> Option<Duration> {
        let exhausted = [
            (self.remaining_requests, self.reset_requests),
            (self.remaining_tokens, self.reset_tokens),
        ];
        let at_zero = exhausted
            .iter()
            .filter(|(left, _)| *left == Some(0))
            .filter_map(|(_, reset)| *reset)
            .max();
        at_zero.or_else(|| exhausted.iter().filter_map(|(_, reset)| *reset).max())
    }
}

/// OpenAI's reset format: `1s`, `6m0s`, `20ms`, `1h2m3.5s`; also a bare number of seconds.
pub fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let mut total = 0.0f64;
    let mut rest = value;
    let mut any = false;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest.get(..end)?.parse().ok()?;
        rest = rest.get(end..)?;
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest.get(..unit_end)? {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = rest.get(unit_end..)?;
        total += number * scale;
        any = true;
    }
    if !any || !total.is_finite() {
        return None;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> ErrorKind {
        classify(&ErrorFacts {
            status: Some(s),
            ..ErrorFacts::default()
        })
    }

    #[test]
    fn the_status_table() {
        let cases = [
            (400, ErrorKind::InvalidRequest),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (404, ErrorKind::InvalidRequest),
            (408, ErrorKind::Timeout),
            (409, ErrorKind::Other { retryable: true }),
            (413, ErrorKind::ContextOverflow),
            (418, ErrorKind::Other { retryable: false }),
            (422, ErrorKind::InvalidRequest),
            (425, ErrorKind::Other { retryable: true }),
            (429, ErrorKind::RateLimited { retry_after: None }),
            (500, ErrorKind::Server),
            (502, ErrorKind::Server),
            (503, ErrorKind::Server),
            (504, ErrorKind::Timeout),
            (529, ErrorKind::Server),
        ];
        for (s, kind) in cases {
            assert_eq!(status(s), kind, "{s}");
        }
    }

    #[test]
    fn classes_win_most_derived_first_and_context_words_count() {
        fn facts<'a>(classes: &'a [&'a str], message: &'a str) -> ErrorFacts<'a> {
            ErrorFacts {
                classes,
                message,
                ..ErrorFacts::default()
            }
        }
        // openai's APITimeoutError derives from APIConnectionError.
        let timeout = [
            "APITimeoutError",
            "APIConnectionError",
            "APIError",
            "Exception",
        ];
        assert_eq!(classify(&facts(&timeout, "")), ErrorKind::Timeout);
        let bad = ["BadRequestError", "APIStatusError"];
        assert_eq!(
            classify(&facts(&bad, "This model's maximum context length is 8192")),
            ErrorKind::ContextOverflow
        );
        assert_eq!(
            classify(&facts(&bad, "bad role")),
            ErrorKind::InvalidRequest
        );
        let reset = ["ConnectionResetError", "ConnectionError", "OSError"];
        assert_eq!(classify(&facts(&reset, "")), ErrorKind::Connection);
        let api = ["ModelAPIError", "ModelError"];
        assert_eq!(classify(&facts(&api, "")), ErrorKind::Server);
        let unknown = ["ValueError", "Exception"];
        assert_eq!(
            classify(&facts(&unknown, "")),
            ErrorKind::Other { retryable: false }
        );
    }

    #[test]
    fn retry_after_from_every_header() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ra = |h: &[(&str, &str)]| retry_after(h, Some(429), now);
        assert_eq!(
            ra(&[("Retry-After", "2.5")]),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            ra(&[("retry-after", "7"), ("retry-after-ms", "120")]),
            Some(Duration::from_millis(120))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(ra(&[("retry-after", &date)]), Some(Duration::from_secs(30)));
        assert_eq!(
            ra(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1.5s"),
                ("x-ratelimit-reset-tokens", "9s"),
            ]),
            Some(Duration::from_millis(1500))
        );
        for bad in ["soon", "-3", "NaN", "1e400"] {
            assert_eq!(ra(&[("retry-after", bad)]), None, "{bad}");
        }
        assert_eq!(
            retry_after(&[("x-ratelimit-reset-requests", "1s")], Some(500), now),
            None
        );
    }
}
