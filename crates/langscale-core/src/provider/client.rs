//! [`Endpoint`]: one OpenAI-compatible chat-completions endpoint on a pooled reqwest client
//! (rustls, keep-alive, HTTP/2 where the server offers it over TLS, gzip), plain calls and SSE
//! streams, each bounded by a timeout.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::error::ProviderError;
use super::sse::SseParser;
use super::types::{ChatRequest, ChatResponse, StreamDelta, WireCompletion};

/// How to reach an endpoint. `Debug` never shows the API key.
#[derive(Clone)]
pub struct EndpointConfig {
    /// e.g. `https://api.openai.com/v1` (`/chat/completions` is appended) or the full
    /// chat-completions URL.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Per call, unless the call gives a shorter one. For streams: until the first event,
    /// then between events.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Body parameters sent with every call (temperature, max_tokens, ...).
    pub defaults: Map<String, Value>,
    /// Extra headers sent with every call (e.g. `api-key`, `OpenAI-Organization`). Their
    /// values are treated as secrets: never shown.
    pub headers: Vec<(String, String)>,
}

impl EndpointConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            defaults: Map::new(),
            headers: Vec::new(),
        }
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("base_url", &display_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("defaults", &self.defaults)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One chat-completions endpoint and its connection pool. Cheap to share behind an `Arc`;
/// calls from many tasks at once share the pool. Must be used inside a tokio runtime (the
/// pool's connections live on the runtime that opened them).
pub struct Endpoint {
    url: reqwest::Url,
    /// The URL as messages show it: no credentials, no query.
    shown: String,
    model: String,
    secret: Option<String>,
    headers: HeaderMap,
    timeout: Duration,
    defaults: Map<String, Value>,
    client: reqwest::Client,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown)
            .field("model", &self.model)
            .field("api_key", &self.secret.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// (parameter, what it must be, the check).
type ParamCheck = (&'static str, &'static str, fn(&Value) -> bool);

/// The sampling parameters every OpenAI-compatible server reads. Checked once at
/// construction, so a bad one fails there and not as a 400 on every call. Other parameters
/// pass as given; null means unset.
const CHECKED_PARAMS: [ParamCheck; 7] = [
    ("temperature", "a number >= 0", |v| {
        v.as_f64().is_some_and(|t| t >= 0.0)
    }),
    ("top_p", "a number between 0 and 1", |v| {
        v.as_f64().is_some_and(|p| (0.0..=1.0).contains(&p))
    }),
    ("frequency_penalty", "a number", Value::is_number),
    ("presence_penalty", "a number", Value::is_number),
    ("max_tokens", "a positive integer", |v| {
        v.as_u64().is_some_and(|n| n > 0)
    }),
    ("max_completion_tokens", "a positive integer", |v| {
        v.as_u64().is_some_and(|n| n > 0)
    }),
    ("seed", "an integer", |v| v.is_i64() || v.is_u64()),
];

fn check_defaults(defaults: &Map<String, Value>) -> Result<(), ProviderError> {
    for (name, wanted, ok) in CHECKED_PARAMS {
        match defaults.get(name) {
            Some(value) if !value.is_null() && !ok(value) => {
                return Err(ProviderError::Invalid(format!(
                    "{name} must be {wanted}, got {value}"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Result<Self, ProviderError> {
        let base = config.base_url.trim();
        let mut url = reqwest::Url::parse(base).map_err(|e| {
            ProviderError::Invalid(format!(
                "base_url {:?} is not a URL: {e}",
                display_url(base)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ProviderError::Invalid(format!(
                "base_url {:?} must be an http:// or https:// URL with a host",
                display_url(base)
            )));
        }
        if !url
            .path()
            .trim_end_matches('/')
            .ends_with("/chat/completions")
        {
            let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        if config.model.is_empty() {
            return Err(ProviderError::Invalid("model must not be empty".into()));
        }
        for (name, d) in [
            ("timeout", config.timeout),
            ("connect_timeout", config.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ProviderError::Invalid(format!("{name} must be above 0 s")));
            }
        }
        check_defaults(&config.defaults)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ProviderError::Invalid(format!(
                    "header name {name:?} is not a valid HTTP header name"
                ))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                ProviderError::Invalid(format!(
                    "the value of header {name} holds characters an HTTP header cannot carry"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let secret = config.api_key.filter(|k| !k.is_empty());
        if let Some(key) = &secret {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ProviderError::Invalid(
                    "api_key holds characters an HTTP header cannot carry".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .gzip(true)
            .user_agent(concat!("langscale/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            shown: display_url(url.as_str()),
            url,
            model: config.model,
            secret,
            headers,
            timeout: config.timeout,
            defaults: config.defaults,
            client,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The chat-completions URL, without credentials or query.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn timeout_for(&self, timeout: Option<Duration>) -> Duration {
        timeout.map_or(self.timeout, |t| t.min(self.timeout))
    }

    fn request(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let body = serde_json::to_vec(&req.body(&self.model, &self.defaults, stream))
            .map_err(|e| ProviderError::Invalid(format!("cannot encode the request: {e}")))?;
        let mut builder = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body);
        if stream {
            builder = builder.header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        Ok(builder)
    }

    async fn send(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let builder = self.request(req, stream)?;
        let response = builder
            .send()
            .await
            .map_err(|e| self.error(&e, Duration::ZERO))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        Err(ProviderError::from_status(
            &self.shown,
            status.as_u16(),
            &headers,
            &body,
            self.secret.as_deref(),
        ))
    }

    fn error(&self, err: &reqwest::Error, timeout: Duration) -> ProviderError {
        ProviderError::from_reqwest(&self.shown, err, timeout)
    }

    fn timed_out(&self, after: Duration) -> ProviderError {
        ProviderError::Timeout {
            url: self.shown.clone(),
            after,
        }
    }

    /// One completion, within `timeout` (or the endpoint's, whichever is shorter).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        timeout: Option<Duration>,
    ) -> Result<ChatResponse, ProviderError> {
        let limit = self.timeout_for(timeout);
        let call = async {
            let response = self.send(req, false).await?;
            let body = response.bytes().await.map_err(|e| self.error(&e, limit))?;
            let wire: WireCompletion =
                serde_json::from_slice(&body).map_err(|e| ProviderError::Decode {
                    url: self.shown.clone(),
                    message: e.to_string(),
                })?;
            wire.into_response()
                .map_err(|message| ProviderError::Decode {
                    url: self.shown.clone(),
                    message,
                })
        };
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(self.timed_out(limit)))
    }

    /// Open a stream: returns once the provider accepted the request (an error status is
    /// returned here, classified); then read it with [`ChatStream::next`].
    pub async fn stream(
        &self,
        req: &ChatRequest,
        timeout: Option<Duration>,
    ) -> Result<ChatStream, ProviderError> {
        let limit = self.timeout_for(timeout);
        let response = tokio::time::timeout(limit, self.send(req, true))
            .await
            .unwrap_or_else(|_| Err(self.timed_out(limit)))?;
        Ok(ChatStream {
            url: self.shown.clone(),
            secret: self.secret.clone(),
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::default(),
            idle: limit,
            done: false,
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A streamed answer, read one delta at a time. Dropping it closes the connection.
pub struct ChatStream {
    url: String,
    secret: Option<String>,
    body: ByteStream,
    parser: SseParser,
    /// Longest wait for the next piece of the body.
    idle: Duration,
    done: bool,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("url", &self.url)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// The next delta; `None` once the stream ended (`[DONE]` or the end of the body).
    pub async fn next(&mut self) -> Option<Result<StreamDelta, ProviderError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(data) = self.parser.next_event() {
                if let Some(item) = self.event(&data) {
                    return Some(item);
                }
                continue;
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    self.done = true;
                    return Some(Err(ProviderError::Timeout {
                        url: self.url.clone(),
                        after: self.idle,
                    }));
                }
                Ok(None) => {
                    let last = self.parser.finish();
                    let item = last.and_then(|data| self.event(&data));
                    self.done = true;
                    return item;
                }
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(ProviderError::from_reqwest(&self.url, &e, self.idle)));
                }
                Ok(Some(Ok(bytes))) => self.parser.push(&bytes),
            }
        }
    }

    /// One event's data as a delta, the end of the stream, or an error event.
    fn event(&mut self, data: &str) -> Option<Result<StreamDelta, ProviderError>> {
        let data = data.trim();
        if data.is_empty() {
            return None;
        }
        if data == "[DONE]" {
            self.done = true;
            return None;
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                self.done = true;
                return Some(Err(ProviderError::Decode {
                    url: self.url.clone(),
                    message: format!("a stream event is not JSON: {e}"),
                }));
            }
        };
        if value.get("error").is_some_and(|e| !e.is_null()) {
            self.done = true;
            return Some(Err(ProviderError::from_status(
                &self.url,
                500,
                &HeaderMap::new(),
                data.as_bytes(),
                self.secret.as_deref(),
            )));
        }
        match serde_json::from_value::<WireCompletion>(value) {
            Ok(wire) => Some(Ok(wire.into_delta())),
            Err(e) => {
                self.done = true;
                Some(Err(ProviderError::Decode {
                    url: self.url.clone(),
                    message: format!("a stream event is not a chunk: {e}"),
                }))
            }
        }
    }
}
