//! The HTTP side of a simulated provider: axum routes for `/v1/chat/completions` (plain and
//! SSE), `/v1/embeddings` and `/v1/models`, the order in which faults, quotas and latency
//! apply to a request, and an accept loop that can reset a connection on purpose.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tower::ServiceExt as _;

use super::config::{FaultKind, ProviderConfig};
use super::content::{self, Answer, ChatRequest, Dice};
use super::quota::{format_duration, Quota, QuotaDecision};
use super::stats::{Counters, Kind, Outcome};

/// Shared state of one provider.
pub struct ProviderState {
    pub config: ProviderConfig,
    /// The fault schedule's clock: `base` plus `reset_nanos` (moved forward by `reset`).
    base: Instant,
    reset_nanos: AtomicU64,
    quota: Mutex<Quota>,
    pub counters: Counters,
    rolls: AtomicU64,
    ids: AtomicU64,
}

impl ProviderState {
    pub fn new(config: ProviderConfig) -> Self {
        let quota = Quota::new(
            config.requests_per_minute,
            config.tokens_per_minute,
            config.quota_burst_seconds,
        );
        Self {
            config,
            base: Instant::now(),
            reset_nanos: AtomicU64::new(0),
            quota: Mutex::new(quota),
            counters: Counters::default(),
            rolls: AtomicU64::new(0),
            ids: AtomicU64::new(0),
        }
    }

    /// Seconds since the provider started (or was last reset): the fault schedule's clock.
    pub fn elapsed(&self) -> f64 {
        let since_base = self.base.elapsed().as_nanos() as u64;
        since_base.saturating_sub(self.reset_nanos.load(Relaxed)) as f64 / 1e9
    }

    /// Counters to zero, quotas full, the fault schedule from its start.
    pub fn reset(&self) {
        self.reset_nanos
            .store(self.base.elapsed().as_nanos() as u64, Relaxed);
        *self.quota.lock().unwrap_or_else(PoisonError::into_inner) = Quota::new(
            self.config.requests_per_minute,
            self.config.tokens_per_minute,
            self.config.quota_burst_seconds,
        );
        self.counters.reset();
    }

    fn second(&self) -> usize {
        self.elapsed() as usize
    }

    /// A uniform number in [0, 1), a fresh one per call, reproducible for a given seed and order.
    fn roll(&self) -> f64 {
        let n = self.rolls.fetch_add(1, Relaxed);
        Dice::new(
            self.config
                .seed
                .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        )
        .unit()
    }

    /// `seconds` with the configured jitter applied.
    fn jittered(&self, seconds: f64) -> f64 {
        let j = self.config.jitter;
        if j == 0.0 || seconds == 0.0 {
            seconds
        } else {
            seconds * (1.0 + j * (2.0 * self.roll() - 1.0))
        }
    }

    fn begin(self: &Arc<Self>, kind: Kind) -> Call {
        self.counters.start(kind, self.second());
        Call {
            provider: Arc::clone(self),
            done: false,
        }
    }

    fn request_id(&self) -> String {
        let n = self.ids.fetch_add(1, Relaxed);
        format!("req_{:016x}", Dice::new(n ^ self.config.seed).next_u64())
    }
}

/// One request in flight; records its outcome once (dropped unfinished: the client went away).
struct Call {
    provider: Arc<ProviderState>,
    done: bool,
}

impl Call {
    fn end(&mut self, outcome: Outcome) {
        if !self.done {
            self.done = true;
            let second = self.provider.second();
            self.provider.counters.finish(outcome, second);
        }
    }

    fn reply(mut self, outcome: Outcome, response: Response) -> Response {
        self.end(outcome);
        response
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(Outcome::Cancelled);
    }
}

/// Handle that lets a handler drop its own connection (a reset, as a crashed server would).
#[derive(Clone)]
pub struct ConnAbort(Arc<Notify>);

/// What a request runs into before it is answered.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Down,
    Error,
    RateLimit { retry_after: f64 },
    Hang,
    Reset,
}

fn error_body(status: StatusCode, kind: &str, message: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

fn add_quota_headers(response: &mut Response, d: &QuotaDecision) {
    let pairs: [(&'static str, Option<String>); 6] = [
        (
            "x-ratelimit-limit-requests",
            d.limit_requests.map(|v| v.to_string()),
        ),
        (
            "x-ratelimit-remaining-requests",
            d.remaining_requests.map(|v| v.to_string()),
        ),
        (
            "x-ratelimit-reset-requests",
            d.reset_requests.map(format_duration),
        ),
        (
            "x-ratelimit-limit-tokens",
            d.limit_tokens.map(|v| v.to_string()),
        ),
        (
            "x-ratelimit-remaining-tokens",
            d.remaining_tokens.map(|v| v.to_string()),
        ),
        (
            "x-ratelimit-reset-tokens",
            d.reset_tokens.map(format_duration),
        ),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            set_header(response, name, &value);
        }
    }
}

fn too_many_requests(retry_after: f64, message: &str, kind: &str) -> Response {
    let mut response = error_body(
        StatusCode::TOO_MANY_REQUESTS,
        kind,
        message,
        Some("rate_limit_exceeded"),
    );
    let seconds = retry_after.max(0.001);
    set_header(
        &mut response,
        "retry-after",
        &(seconds.ceil() as u64).to_string(),
    );
    set_header(
        &mut response,
        "retry-after-ms",
        &((seconds * 1000.0).ceil() as u64).to_string(),
    );
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bearer_ok(config: &ProviderConfig, headers: &HeaderMap) -> bool {
    let Some(expected) = &config.api_key else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key == expected)
}

fn unauthorized() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Incorrect API key provided.",
        Some("invalid_api_key"),
    )
}

fn bad_request(message: &str, code: Option<&str>) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        code,
    )
}

/// A scheduled fault active now, or one forced by the `x-sim-fault` request header.
fn scheduled_fault(p: &ProviderState, headers: &HeaderMap) -> (Fault, f64) {
    if let Some(forced) = headers.get("x-sim-fault").and_then(|v| v.to_str().ok()) {
        let fault = match forced {
            "down" | "503" => Fault::Down,
            "error" | "500" => Fault::Error,
            "rate_limit" | "429" => Fault::RateLimit { retry_after: 1.0 },
            "hang" => Fault::Hang,
            "reset" => Fault::Reset,
            _ => Fault::None,
        };
        if fault != Fault::None {
            return (fault, 1.0);
        }
    }
    let elapsed = p.elapsed();
    let mut slow = 1.0;
    for f in p.config.faults.iter().filter(|f| f.active(elapsed)) {
        if f.rate < 1.0 && p.roll() >= f.rate {
            continue;
        }
        let fault = match f.kind {
            FaultKind::Down => Fault::Down,
            FaultKind::Error => Fault::Error,
            FaultKind::RateLimit => Fault::RateLimit {
                retry_after: f.end.map_or(1.0, |end| (end - elapsed).clamp(0.001, 60.0)),
            },
            FaultKind::Hang => Fault::Hang,
            FaultKind::Reset => Fault::Reset,
            FaultKind::Slow => {
                slow *= f.factor;
                Fault::None
            }
        };
        if fault != Fault::None {
            return (fault, slow);
        }
    }
    (Fault::None, slow)
}

/// A random fault at the configured rates.
fn random_fault(p: &ProviderState) -> Fault {
    let c = &p.config;
    if c.error_rate + c.unavailable_rate + c.hang_rate + c.reset_rate == 0.0 {
        return Fault::None;
    }
    let u = p.roll();
    let mut edge = c.error_rate;
    if u < edge {
        return Fault::Error;
    }
    edge += c.unavailable_rate;
    if u < edge {
        return Fault::Down;
    }
    edge += c.hang_rate;
    if u < edge {
        return Fault::Hang;
    }
    edge += c.reset_rate;
    if u < edge {
        return Fault::Reset;
    }
    Fault::None
}

/// Answer a fault, or `None` when there is none. A reset never returns.
async fn suffer(
    p: &ProviderState,
    fault: Fault,
    call: &mut Call,
    abort: &ConnAbort,
) -> Option<Response> {
    match fault {
        Fault::None => None,
        Fault::Down => {
            call.end(Outcome::Unavailable);
            Some(error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The server is overloaded or not ready yet.",
                None,
            ))
        }
        Fault::Error => {
            call.end(Outcome::ServerError);
            Some(error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server had an error while processing your request.",
                None,
            ))
        }
        Fault::RateLimit { retry_after } => {
            call.end(Outcome::RateLimited);
            Some(too_many_requests(
                retry_after,
                &format!(
                    "Rate limit reached (simulated outage). Please try again in {}.",
                    format_duration(retry_after)
                ),
                "requests",
            ))
        }
        Fault::Hang => {
            p.counters.hang();
            tokio::time::sleep(Duration::from_secs_f64(p.config.hang_seconds)).await;
            call.end(Outcome::Timeout);
            Some(error_body(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "The server did not answer in time.",
                None,
            ))
        }
        Fault::Reset => {
            call.end(Outcome::Reset);
            abort.0.notify_one();
            std::future::pending::<()>().await;
            None
        }
    }
}

fn admit(p: &ProviderState, tokens: u64) -> Option<QuotaDecision> {
    let mut quota = p.quota.lock().unwrap_or_else(PoisonError::into_inner);
    if !quota.is_limited() {
        return None;
    }
    Some(quota.admit(p.elapsed(), tokens))
}

fn refused(d: &QuotaDecision, model: &str) -> Option<Response> {
    let after = d.retry_after?;
    let (limit, kind) = match d.exceeded {
        Some("tokens") => (d.limit_tokens.unwrap_or(0), "tokens"),
        _ => (d.limit_requests.unwrap_or(0), "requests"),
    };
    let unit = if kind == "tokens" {
        "tokens"
    } else {
        "requests"
    };
    let message = format!(
        "Rate limit reached for {model} (simulated) on {unit} per min (RPM/TPM): Limit {limit}. \
         Please try again in {}.",
        format_duration(after)
    );
    let mut response = too_many_requests(after, &message, kind);
    add_quota_headers(&mut response, d);
    Some(response)
}

async fn sleep_secs(seconds: f64) {
    if seconds > 0.0 && seconds.is_finite() {
        tokio::time::sleep(Duration::from_secs_f64(seconds.min(86_400.0))).await;
    }
}

fn usage_json(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

fn tool_calls_json(answer: &Answer) -> Value {
    Value::Array(
        answer
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"index": i, "id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect(),
    )
}

struct Parsed {
    model: String,
    messages: Vec<Value>,
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    response_format: Option<Value>,
    max_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(body: Value) -> Result<Parsed, (&'static str, Option<&'static str>)> {
    let Value::Object(mut obj) = body else {
        return Err(("The request body must be a JSON object.", None));
    };
    let model = match obj.remove("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(("you must provide a model parameter", None)),
    };
    let messages = match obj.remove("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => {
            return Err((
                "'messages' must be a non-empty array",
                Some("invalid_value"),
            ))
        }
    };
    if messages
        .iter()
        .any(|m| !m.get("role").is_some_and(Value::is_string))
    {
        return Err(("every message needs a 'role'", Some("invalid_value")));
    }
    let tools = match obj.remove("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(("'tools' must be an array", Some("invalid_value"))),
    };
    let max_tokens = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64);
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed {
        model,
        messages,
        tools,
        tool_choice: obj.remove("tool_choice"),
        response_format: obj.remove("response_format"),
        max_tokens,
        stream,
        include_usage,
    })
}

async fn chat(
    State(p): State<Arc<ProviderState>>,
    Extension(abort): Extension<ConnAbort>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed_json = serde_json::from_slice::<Value>(&body);
    let wants_stream = parsed_json
        .as_ref()
        .ok()
        .and_then(|v| v.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut call = p.begin(if wants_stream {
        Kind::Stream
    } else {
        Kind::Chat
    });
    if !bearer_ok(&p.config, &headers) {
        return call.reply(Outcome::ClientError, unauthorized());
    }
    let (fault, slow) = scheduled_fault(&p, &headers);
    if let Some(response) = suffer(&p, fault, &mut call, &abort).await {
        return response;
    }
    let Ok(json_body) = parsed_json else {
        return call.reply(
            Outcome::ClientError,
            bad_request("We could not parse the JSON body of your request.", None),
        );
    };
    let req = match parse_chat(json_body) {
        Ok(req) => req,
        Err((message, code)) => {
            return call.reply(Outcome::ClientError, bad_request(message, code))
        }
    };
    let prompt = content::prompt_tokens(&req.messages, &req.tools, p.config.encoding());
    if let Some(window) = p.config.context_window {
        if prompt > window {
            let message = format!(
                "This model's maximum context length is {window} tokens. However, your \
                 messages resulted in {prompt} tokens. Please reduce the length of the messages."
            );
            return call.reply(
                Outcome::ClientError,
                bad_request(&message, Some("context_length_exceeded")),
            );
        }
    }
    let answer = content::answer(&ChatRequest {
        model: &req.model,
        messages: &req.messages,
        tools: &req.tools,
        tool_choice: req.tool_choice.as_ref(),
        response_format: req.response_format.as_ref(),
        max_tokens: req.max_tokens,
        seed: p.config.seed,
        min_tokens: p.config.min_completion_tokens,
        max_tokens_default: p.config.max_completion_tokens,
    });
    let decision = admit(&p, prompt + answer.completion_tokens);
    if let Some(response) = decision.as_ref().and_then(|d| refused(d, &req.model)) {
        return call.reply(Outcome::RateLimited, response);
    }
    if let Some(response) = suffer(&p, random_fault(&p), &mut call, &abort).await {
        return response;
    }
    p.counters.tokens(
        prompt,
        answer.completion_tokens,
        answer.tool_calls.len() as u64,
    );
    let ttft = p.jittered(p.config.time_to_first_token) * slow;
    let per_token = p
        .config
        .tokens_per_second
        .map_or(0.0, |tps| p.jittered(1.0 / tps) * slow);
    let id = format!("chatcmpl-{:016x}", answer.key);
    let mut response = if req.stream {
        sleep_secs(ttft).await;
        stream_response(call, answer, &req, &id, prompt, per_token)
    } else {
        sleep_secs(ttft + per_token * answer.completion_tokens as f64).await;
        let message = if answer.tool_calls.is_empty() {
            json!({"role": "assistant", "content": answer.text(), "refusal": null})
        } else {
            json!({"role": "assistant", "content": null, "refusal": null,
                   "tool_calls": tool_calls_json(&answer)})
        };
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": unix_now(),
            "model": req.model,
            "system_fingerprint": "fp_langscale_sim",
            "choices": [{"index": 0, "message": message, "logprobs": null,
                         "finish_reason": answer.finish_reason}],
            "usage": usage_json(prompt, answer.completion_tokens),
        });
        call.reply(Outcome::Ok, json_response(StatusCode::OK, &body))
    };
    if let Some(d) = &decision {
        add_quota_headers(&mut response, d);
    }
    set_header(&mut response, "x-request-id", &p.request_id());
    response
}

fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn stream_response(
    mut call: Call,
    answer: Answer,
    req: &Parsed,
    id: &str,
    prompt: u64,
    per_token: f64,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let created = unix_now();
    let model = req.model.clone();
    let id = id.to_owned();
    let include_usage = req.include_usage;
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut c = json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_langscale_sim",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            sse(&c)
        };
        let start = tokio::time::Instant::now();
        let mut events: Vec<Bytes> = Vec::new();
        if answer.tool_calls.is_empty() {
            events.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ));
            for token in &answer.tokens {
                events.push(chunk(json!({"content": token}), None));
            }
        } else {
            for (i, c) in answer.tool_calls.iter().enumerate() {
                let head = json!({"role": "assistant", "content": null, "tool_calls": [
                    {"index": i, "id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": ""}}]});
                events.push(chunk(head, None));
                let chars: Vec<char> = c.arguments.chars().collect();
                for piece in chars.chunks(8) {
                    let text: String = piece.iter().collect();
                    events.push(chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": text}}]}),
                        None,
                    ));
                }
            }
        }
        events.push(chunk(json!({}), Some(answer.finish_reason)));
        let paced = events.len();
        if include_usage {
            events.push(sse(&json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_langscale_sim", "choices": [],
                "usage": usage_json(prompt, answer.completion_tokens),
            })));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let step = if paced > 2 {
            per_token * answer.completion_tokens as f64 / (paced - 2) as f64
        } else {
            0.0
        };
        for (i, event) in events.into_iter().enumerate() {
            if step > 0.0 && i > 0 && i < paced {
                let due = start + Duration::from_secs_f64((step * i as f64).min(86_400.0));
                tokio::time::sleep_until(due).await;
            }
            if tx.send(event).await.is_err() {
                return; // the client went away: counted as cancelled
            }
        }
        call.end(Outcome::Ok);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn embedding_inputs(input: &Value) -> Option<Vec<String>> {
    let token_text = |tokens: &[Value]| -> Option<String> {
        let ids: Option<Vec<u64>> = tokens.iter().map(Value::as_u64).collect();
        ids.map(|ids| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))
    };
    match input {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(Value::is_string) {
                Some(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                )
            } else if items.iter().all(Value::is_u64) {
                token_text(items).map(|t| vec![t])
            } else {
                items
                    .iter()
                    .map(|i| i.as_array().and_then(|t| token_text(t)))
                    .collect()
            }
        }
        _ => None,
    }
}

async fn embeddings(
    State(p): State<Arc<ProviderState>>,
    Extension(abort): Extension<ConnAbort>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = p.begin(Kind::Embedding);
    if !bearer_ok(&p.config, &headers) {
        return call.reply(Outcome::ClientError, unauthorized());
    }
    let (fault, slow) = scheduled_fault(&p, &headers);
    if let Some(response) = suffer(&p, fault, &mut call, &abort).await {
        return response;
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return call.reply(
            Outcome::ClientError,
            bad_request("We could not parse the JSON body of your request.", None),
        );
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("sim-embedding")
        .to_owned();
    let Some(inputs) = req.get("input").and_then(embedding_inputs) else {
        return call.reply(
            Outcome::ClientError,
            bad_request(
                "'input' must be a string, a list of strings or of token lists",
                None,
            ),
        );
    };
    let dim = match req.get("dimensions") {
        None | Some(Value::Null) => p.config.embedding_dimensions,
        Some(d) => match d.as_u64().filter(|d| (1..=16_384).contains(d)) {
            Some(d) => d as usize,
            None => {
                return call.reply(
                    Outcome::ClientError,
                    bad_request("'dimensions' must be an integer from 1 to 16384", None),
                )
            }
        },
    };
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let tokens: u64 = inputs
        .iter()
        .map(|t| content::estimate_tokens(t).max(1))
        .sum();
    let decision = admit(&p, tokens);
    if let Some(response) = decision.as_ref().and_then(|d| refused(d, &model)) {
        return call.reply(Outcome::RateLimited, response);
    }
    if let Some(response) = suffer(&p, random_fault(&p), &mut call, &abort).await {
        return response;
    }
    p.counters.tokens(tokens, 0, 0);
    sleep_secs(p.jittered(p.config.time_to_first_token) * slow).await;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let vector = content::embedding(text, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let mut response = call.reply(Outcome::Ok, json_response(StatusCode::OK, &body));
    if let Some(d) = &decision {
        add_quota_headers(&mut response, d);
    }
    response
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "langscale-sim"})
}

async fn models(State(p): State<Arc<ProviderState>>, headers: HeaderMap) -> Response {
    if !bearer_ok(&p.config, &headers) {
        return unauthorized();
    }
    let data: Vec<Value> = p.config.models.iter().map(|m| model_json(m)).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn model(
    State(p): State<Arc<ProviderState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !bearer_ok(&p.config, &headers) {
        return unauthorized();
    }
    if p.config.models.contains(&id) {
        json_response(StatusCode::OK, &model_json(&id))
    } else {
        error_body(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("The model '{id}' does not exist"),
            Some("model_not_found"),
        )
    }
}

async fn not_found() -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "Unknown path; this simulator serves /v1/chat/completions, /v1/embeddings and /v1/models.",
        None,
    )
}

/// The routes of one provider, with and without the `/v1` prefix.
pub fn router(state: Arc<ProviderState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/models/{id}", get(model))
        .fallback(not_found)
        .with_state(state)
}

/// Accept connections until shutdown. Each connection gets an abort handle so a handler can
/// drop it; linger 0 makes that drop a TCP reset, as a crashed upstream would.
pub async fn accept_loop(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        let abort = ConnAbort(Arc::new(Notify::new()));
        let app = app.clone();
        let handle = abort.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(handle.clone());
            app.clone().oneshot(req)
        });
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = abort.0.notified() => {}
                _ = stop.changed() => {}
            }
        });
    }
}
