//! The client against a tiny HTTP/1.1 server on loopback that answers what each test says.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::clock::SystemClock;
use crate::route::{self, ErrorKind, RequestInfo, RetryPolicy, RouterConfig};

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub headers: String,
    pub body: Value,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    /// Pieces written with a pause before each; a streamed reply closes the connection.
    pieces: Vec<(Duration, Vec<u8>)>,
    stream: bool,
    /// Close the connection without answering.
    reset: bool,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            pieces: vec![(Duration::ZERO, body.to_string().into_bytes())],
            ..Self::default()
        }
    }

    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    fn delayed(mut self, d: Duration) -> Self {
        if let Some(p) = self.pieces.first_mut() {
            p.0 = d;
        }
        self
    }

    fn sse(events: &[Value], done: bool) -> Self {
        let mut pieces: Vec<(Duration, Vec<u8>)> = events
            .iter()
            .map(|e| (Duration::ZERO, format!("data: {e}\n\n").into_bytes()))
            .collect();
        if done {
            pieces.push((Duration::ZERO, b"data: [DONE]\n\n".to_vec()));
        }
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            pieces,
            stream: true,
            reset: false,
        }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub(crate) struct Server {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Server {
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let (r, c) = (Arc::clone(&requests), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, Arc::clone(&handler), Arc::clone(&r)));
            }
        });
        Self {
            url,
            requests,
            connections,
        }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }
}

async fn serve(mut socket: TcpStream, handler: Handler, log: Arc<Mutex<Vec<Request>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let headers = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
        buf.drain(..head_end + length);
        let request = Request { headers, body };
        log.lock().unwrap().push(request.clone());
        let reply = handler(&request);
        if reply.reset {
            return;
        }
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if reply.stream {
            head.push_str("connection: close\r\n\r\n");
        } else {
            let total: usize = reply.pieces.iter().map(|p| p.1.len()).sum();
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {total}\r\n\r\n"
            ));
        }
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for (pause, bytes) in &reply.pieces {
            if !pause.is_zero() {
                tokio::time::sleep(*pause).await;
            }
            if socket.write_all(bytes).await.is_err() {
                return;
            }
        }
        if reply.stream {
            return;
        }
    }
}

pub(crate) fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "model": "m-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    })
}

fn endpoint(url: &str) -> Endpoint {
    let mut config = EndpointConfig::new(url, "m");
    config.api_key = Some("sk-test-key-1234".into());
    config.timeout = Duration::from_secs(5);
    config.defaults.insert("temperature".into(), json!(0.2));
    Endpoint::new(config).unwrap()
}

fn conversation() -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::system("be brief"),
            Message::user("weather in Paris?"),
            Message::tool_calls(vec![ToolCall::new(
                "call_1",
                "weather",
                r#"{"city":"Paris"}"#,
            )]),
            Message::tool_result("call_1", "sunny"),
        ],
        tools: vec![
            json!({"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}),
        ],
        tool_choice: Some(json!("auto")),
        stop: vec!["END".into()],
        params: serde_json::from_value(json!({"max_tokens": 50, "temperature": 0.7})).unwrap(),
    }
}

#[tokio::test]
async fn a_completion_round_trips_with_tools_usage_and_auth() {
    let server = Server::start(|_| {
        Reply::json(
            200,
            &json!({
                "id": "chatcmpl-9", "model": "m-2024",
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}
                ]}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
            }),
        )
    })
    .await;
    let response = endpoint(&server.url)
        .chat(&conversation(), None)
        .await
        .unwrap();
    assert_eq!(response.content, "");
    assert_eq!(
        response.tool_calls,
        vec![ToolCall::new("call_a", "weather", "{\"city\": \"Rome\"}")]
    );
    assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(response.model.as_deref(), Some("m-2024"));
    assert_eq!(response.usage.unwrap().total_tokens, 25);

    let sent = server.requests.lock().unwrap()[0].clone();
    assert!(
        sent.headers.starts_with("POST /v1/chat/completions "),
        "{}",
        sent.headers
    );
    assert!(sent
        .headers
        .to_lowercase()
        .contains("authorization: bearer sk-test-key-1234"));
    let body = sent.body;
    assert_eq!(body["model"], "m");
    assert_eq!(
        body["temperature"], 0.7,
        "the request's params win over the endpoint's"
    );
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["stop"], json!(["END"]));
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["tools"][0]["function"]["name"], "weather");
    assert!(body.get("stream").is_none());
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
        ])
    );
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let server = Server::start(|_| Reply::json(200, &completion("hi"))).await;
    let ep = endpoint(&server.url);
    for _ in 0..20 {
        assert_eq!(ep.chat(&conversation(), None).await.unwrap().content, "hi");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn errors_are_classified_and_never_show_the_key() {
    let server = Server::start(|r| {
        let which = r.body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
        match which.as_str() {
            "429" => Reply::json(429, &json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}))
                .header("retry-after", "3")
                .header("x-ratelimit-remaining-requests", "0"),
            "500" => Reply::json(500, &json!({"error": {"message": "boom"}})),
            "401" => Reply::json(401, &json!({"error": {"message": "Incorrect API key provided: sk-test-key-1234"}})),
            "400" => Reply::json(400, &json!({"error": {"message": "maximum context length is 10 tokens", "code": "context_length_exceeded"}})),
            "reset" => Reply { reset: true, ..Reply::default() },
            "junk" => Reply { status: 200, pieces: vec![(Duration::ZERO, b"<html>".to_vec())], ..Reply::default() },
            _ => Reply::json(200, &completion("ok")).delayed(Duration::from_secs(8)),
        }
    })
    .await;
    let ep = endpoint(&server.url);
    let ask = |what: &str| ChatRequest::new(vec![Message::user(what)]);
    let e = ep.chat(&ask("429"), None).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert_eq!(e.status(), Some(429));
    assert_eq!(
        ep.chat(&ask("500"), None).await.unwrap_err().kind(),
        ErrorKind::Server
    );
    assert_eq!(
        ep.chat(&ask("400"), None).await.unwrap_err().kind(),
        ErrorKind::ContextOverflow
    );
    let auth = ep.chat(&ask("401"), None).await.unwrap_err();
    assert_eq!(auth.kind(), ErrorKind::Auth);
    let shown = format!("{auth} {auth:?} {ep:?}");
    assert!(!shown.contains("sk-test-key-1234"), "{shown}");
    assert_eq!(
        ep.chat(&ask("reset"), None).await.unwrap_err().kind(),
        ErrorKind::Connection
    );
    assert!(matches!(
        ep.chat(&ask("junk"), None).await.unwrap_err(),
        ProviderError::Decode { .. }
    ));
    let started = std::time::Instant::now();
    let slow = ep
        .chat(&ask("slow"), Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(slow.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let e = endpoint(&url)
        .chat(&conversation(), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
}

#[test]
fn bad_settings_are_named() {
    for (url, model) in [("not a url", "m"), ("ftp://h/v1", "m"), ("http://h/v1", "")] {
        let e = Endpoint::new(EndpointConfig::new(url, model)).unwrap_err();
        assert!(matches!(e, ProviderError::Invalid(_)), "{e}");
    }
    let mut config = EndpointConfig::new("http://user:pw@h/v1?key=abc", "m");
    config.api_key = Some("sk-zzz".into());
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("sk-zzz") && !shown.contains("abc") && !shown.contains("pw"),
        "{shown}"
    );
    let ep = Endpoint::new(config).unwrap();
    assert_eq!(ep.url(), "http://h/v1/chat/completions");
}

#[test]
fn requests_parse_from_json_and_name_what_is_wrong() {
    let req = ChatRequest::from_json(
        r#"{"messages": [{"role": "user", "content": "hi"}], "stop": "X", "tools": [], "temperature": 0, "stream": true}"#,
    )
    .unwrap();
    assert_eq!(req.messages, vec![Message::user("hi")]);
    assert_eq!(req.stop, vec!["X".to_owned()]);
    assert!(req.params.contains_key("temperature") && !req.params.contains_key("stream"));
    for (bad, says) in [
        ("[]", "JSON object"),
        ("{}", "messages"),
        (
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            "message 0",
        ),
        (r#"{"messages": [], "stop": 3}"#, "stop"),
        ("{", "not JSON"),
    ] {
        let e = ChatRequest::from_json(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

fn chunk(delta: &Value, finish: Option<&str>) -> Value {
    json!({"id": "c1", "model": "m-2024", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

#[tokio::test]
async fn streams_give_deltas_tool_call_pieces_and_usage() {
    let server = Server::start(|_| {
        Reply::sse(
            &[
                chunk(&json!({"role": "assistant", "content": "Hel"}), None),
                chunk(&json!({"content": "lo"}), None),
                chunk(&json!({"tool_calls": [{"index": 0, "id": "call_z", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}), None),
                chunk(&json!({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}), None),
                chunk(&json!({}), Some("tool_calls")),
                json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}),
            ],
            true,
        )
    })
    .await;
    let ep = endpoint(&server.url);
    let mut stream = ep.stream(&conversation(), None).await.unwrap();
    let mut deltas = Vec::new();
    while let Some(d) = stream.next().await {
        deltas.push(d.unwrap());
    }
    let text: String = deltas.iter().map(|d| d.content.as_str()).collect();
    assert_eq!(text, "Hello");
    let args: String = deltas
        .iter()
        .flat_map(|d| &d.tool_calls)
        .filter_map(|t| t.arguments.as_deref())
        .collect();
    assert_eq!(args, "{\"a\": 1}");
    assert_eq!(deltas[2].tool_calls[0].id.as_deref(), Some("call_z"));
    assert_eq!(deltas[2].tool_calls[0].name.as_deref(), Some("f"));
    assert_eq!(deltas[4].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(deltas[5].usage.unwrap().total_tokens, 10);
    let body = &server.bodies()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_stream_that_stalls_times_out_and_an_error_event_is_an_error() {
    let server = Server::start(|r| {
        if r.body["messages"][0]["content"] == "stall" {
            let mut reply = Reply::sse(&[chunk(&json!({"content": "a"}), None)], true);
            reply.pieces[1].0 = Duration::from_secs(8);
            reply
        } else {
            Reply::sse(
                &[json!({"error": {"message": "overloaded", "code": "server_error"}})],
                false,
            )
        }
    })
    .await;
    let ep = endpoint(&server.url);
    let mut stream = ep
        .stream(
            &ChatRequest::new(vec![Message::user("stall")]),
            Some(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().content, "a");
    assert_eq!(
        stream.next().await.unwrap().unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert!(stream.next().await.is_none());
    let mut stream = ep
        .stream(&ChatRequest::new(vec![Message::user("x")]), None)
        .await
        .unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap_err().kind(),
        ErrorKind::Server
    );
}

#[tokio::test]
async fn retries_honour_retry_after_then_succeed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let server = Server::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::json(429, &json!({"error": {"message": "later"}})).header("retry-after-ms", "50")
        } else {
            Reply::json(200, &completion("finally"))
        }
    })
    .await;
    let ep = Arc::new(endpoint(&server.url));
    let once = RoutedEndpoints::retrying(Arc::clone(&ep), 1).unwrap();
    let info = RequestInfo::default;
    assert!(once.chat(&conversation(), info(), 0, None).await.is_err());
    calls.store(0, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let twice = RoutedEndpoints::retrying(ep, 2).unwrap();
    let ok = twice
        .chat(&conversation(), info(), 0, None)
        .await
        .unwrap()
        .value;
    assert_eq!(ok.content, "finally");
    assert!(started.elapsed() >= Duration::from_millis(100));
}

// --- the executor loop in Rust ------------------------------------------------------------

fn routed(urls: &[&str], config: RouterConfig) -> RoutedEndpoints {
    let deployments = urls
        .iter()
        .enumerate()
        .map(|(i, _)| route::Deployment {
            priority: i32::try_from(i).unwrap(),
            ..route::Deployment::new(format!("d{i}"))
        })
        .collect();
    let router = Arc::new(route::Router::new(deployments, config, Arc::new(SystemClock)).unwrap());
    let endpoints = urls
        .iter()
        .map(|u| NativeDeployment {
            endpoint: Arc::new(endpoint(u)),
            limiter: None,
        })
        .collect();
    RoutedEndpoints::new(router, endpoints, None).unwrap()
}

fn fast_retries() -> RouterConfig {
    RouterConfig {
        retry: RetryPolicy {
            max_attempts_per_deployment: 2,
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(20),
        },
        seed: Some(7),
        ..RouterConfig::default()
    }
}

#[tokio::test]
async fn routed_fails_over_on_429_and_500_and_cools_the_limited_one_down() {
    let limited = Server::start(|_| {
        Reply::json(429, &json!({"error": {"message": "quota"}})).header("retry-after", "30")
    })
    .await;
    let broken = Server::start(|_| Reply::json(500, &json!({"error": {"message": "down"}}))).await;
    let healthy = Server::start(|_| Reply::json(200, &completion("from the third"))).await;
    let r = routed(&[&limited.url, &broken.url, &healthy.url], fast_retries());
    let out = r
        .chat(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(out.value.content, "from the third");
    assert_eq!(out.deployment, 2);
    assert_eq!(
        out.attempts, 4,
        "429 once (cooled), 500 twice (retried), then the third"
    );
    // The limited deployment is cooling down for 30 s: the next request skips it.
    let out = r
        .chat(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(out.deployment, 2);
    assert_eq!(limited.requests.lock().unwrap().len(), 1);
    let snap = r.router().snapshot();
    assert_eq!(snap.deployments[0].errors.rate_limited, 1);
    assert_eq!(snap.deployments[1].errors.server, 4);
    assert_eq!(snap.deployments[2].successes, 2);
    assert_eq!(snap.deployments[2].input_tokens, 22);
}

#[tokio::test]
async fn routed_gives_the_fatal_error_of_the_provider() {
    let auth = Server::start(|_| Reply::json(401, &json!({"error": {"message": "no"}}))).await;
    let healthy = Server::start(|_| Reply::json(200, &completion("unused"))).await;
    let r = routed(&[&auth.url, &healthy.url], fast_retries());
    let e = r
        .chat(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap_err();
    let RoutedError::Provider {
        deployment,
        error,
        attempts,
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!((deployment, error.kind()), (0, ErrorKind::Auth));
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].error, *error);
    assert!(healthy.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn routed_failure_lists_every_attempt_of_every_deployment() {
    let broken = Server::start(|_| Reply::json(500, &json!({"error": {"message": "down"}}))).await;
    let limited =
        Server::start(|_| Reply::json(429, &json!({"error": {"message": "quota"}}))).await;
    let r = routed(&[&broken.url, &limited.url], fast_retries());
    let e = r
        .chat(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap_err();
    let chat_attempts = match e {
        RoutedError::Provider { attempts, .. } | RoutedError::Failed { attempts, .. } => attempts,
        other => panic!("{other}"),
    };
    let seen: Vec<(usize, ErrorKind)> = chat_attempts
        .iter()
        .map(|a| (a.deployment, a.error.kind()))
        .collect();
    let limited = ErrorKind::RateLimited { retry_after: None };
    assert_eq!(
        seen,
        [
            (0, ErrorKind::Server),
            (0, ErrorKind::Server),
            (1, limited),
            (1, limited)
        ],
        "each deployment twice (retried)"
    );
    assert!(chat_attempts
        .windows(2)
        .all(|w| w[0].attempt < w[1].attempt));
    // The same for a stream that never opens.
    let broken = Server::start(|_| Reply::json(503, &json!({"error": {"message": "x"}}))).await;
    let r = routed(&[&broken.url, &broken.url], fast_retries());
    let Err(e) = r
        .stream(&conversation(), RequestInfo::default(), 10, None)
        .await
    else {
        panic!("a stream from broken deployments opened")
    };
    let RoutedError::Provider { attempts, .. } = e else {
        panic!("{e}")
    };
    let deployments: Vec<usize> = attempts.iter().map(|a| a.deployment).collect();
    assert_eq!(deployments, [0, 0, 1, 1]);
}

#[tokio::test]
async fn routed_attempt_timeouts_move_on() {
    let slow =
        Server::start(|_| Reply::json(200, &completion("late")).delayed(Duration::from_secs(8)))
            .await;
    let fast = Server::start(|_| Reply::json(200, &completion("fast"))).await;
    let config = RouterConfig {
        attempt_timeout: Some(Duration::from_millis(100)),
        retry: RetryPolicy {
            max_attempts_per_deployment: 1,
            ..RetryPolicy::default()
        },
        ..RouterConfig::default()
    };
    let r = routed(&[&slow.url, &fast.url], config);
    let started = std::time::Instant::now();
    let out = r
        .chat(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap();
    assert_eq!((out.deployment, out.value.content.as_str()), (1, "fast"));
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(r.router().snapshot().deployments[0].errors.timeout, 1);
}

#[tokio::test]
async fn routed_streams_fail_over_until_the_first_delta() {
    let broken = Server::start(|_| Reply::json(503, &json!({"error": {"message": "x"}}))).await;
    let good = Server::start(|_| {
        Reply::sse(
            &[
                chunk(&json!({"content": "a"}), None),
                chunk(&json!({"content": "b"}), Some("stop")),
            ],
            true,
        )
    })
    .await;
    let config = RouterConfig {
        retry: RetryPolicy {
            max_attempts_per_deployment: 1,
            ..RetryPolicy::default()
        },
        ..RouterConfig::default()
    };
    let r = routed(&[&broken.url, &good.url], config);
    let mut out = r
        .stream(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(out.deployment, 1);
    let mut text = String::new();
    while let Some(d) = out.value.next().await {
        text.push_str(&d.unwrap().content);
    }
    assert_eq!(text, "ab");
}

#[tokio::test]
async fn routed_hedges_a_slow_call() {
    let slow =
        Server::start(|_| Reply::json(200, &completion("slow")).delayed(Duration::from_secs(8)))
            .await;
    let fast = Server::start(|_| Reply::json(200, &completion("hedge"))).await;
    let config = RouterConfig {
        hedge_delay: Some(Duration::from_millis(50)),
        ..RouterConfig::default()
    };
    let r = routed(&[&slow.url, &fast.url], config);
    let started = std::time::Instant::now();
    let out = r
        .chat(&conversation(), RequestInfo::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(out.value.content, "hedge");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(r.router().snapshot().deployments[1].hedges, 1);
}

// --- input from Python: refused with a message, never a panic ---------------------------------

#[test]
fn bad_sampling_parameters_are_refused_at_construction() {
    for (key, value) in [
        ("temperature", json!(-1)),
        ("temperature", json!("hot")),
        ("top_p", json!(2)),
        ("max_tokens", json!(-5)),
        ("max_tokens", json!(0)),
        ("max_completion_tokens", json!(1.5)),
        ("seed", json!(1.5)),
        ("presence_penalty", json!("x")),
    ] {
        let mut config = EndpointConfig::new("http://127.0.0.1:1/v1", "m");
        config.defaults.insert(key.to_owned(), value.clone());
        let err = Endpoint::new(config).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains(key) && err.contains(&value.to_string()),
            "{err}"
        );
    }
    let mut config = EndpointConfig::new("http://127.0.0.1:1/v1", "m");
    for (key, value) in [
        ("temperature", json!(0.7)),
        ("top_p", json!(1)),
        ("max_tokens", json!(5)),
        ("seed", json!(-3)),
        ("frequency_penalty", json!(-1.5)),
        ("response_format", json!({"type": "json_object"})),
        ("stop", Value::Null),
    ] {
        config.defaults.insert(key.to_owned(), value);
    }
    assert!(Endpoint::new(config).is_ok());
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn endpoint_settings(
            base_url in prop_oneof![".{0,40}", Just("http://127.0.0.1:1/v1".to_owned())],
            model in ".{0,12}",
            key in ".{0,12}",
            header in (".{0,8}", ".{0,8}"),
            params in proptest::collection::vec(
                (prop_oneof![
                    Just("temperature".to_owned()),
                    Just("top_p".to_owned()),
                    Just("max_tokens".to_owned()),
                    Just("seed".to_owned()),
                    ".{0,6}",
                ], value()),
                0..4,
            ),
        ) {
            let mut config = EndpointConfig::new(base_url, model);
            config.api_key = Some(key);
            config.headers = vec![header];
            config.defaults = params.into_iter().collect();
            let _ = Endpoint::new(config);
        }

        #[test]
        fn request_json(text in ".{0,200}") {
            let _ = ChatRequest::from_json(&text);
            let _ = ChatRequest::from_json(&format!("{{\"messages\": {text}}}"));
        }

        #[test]
        fn deployment_settings(
            name in ".{0,8}",
            weight in any::<f64>(),
            priority in any::<i32>(),
            price_in in any::<f64>(),
            price_out in any::<f64>(),
            context_window in proptest::option::of(any::<u64>()),
        ) {
            let d = route::Deployment {
                name,
                weight,
                priority,
                price_in,
                price_out,
                context_window,
                tags: Vec::new(),
                ..route::Deployment::new("m")
            };
            let valid = d.validate().is_ok();
            prop_assert_eq!(
                valid,
                !d.name.is_empty()
                    && weight.is_finite() && weight > 0.0
                    && price_in.is_finite() && price_in >= 0.0
                    && price_out.is_finite() && price_out >= 0.0
                    && context_window != Some(0)
            );
        }
    }
}

// --- tenant budgets on the native loop ------------------------------------------------------

/// Priced routed endpoints ($10 per 1k tokens in and out) and budgets of `usd` a day for
/// tenant "acme".
fn priced_with_budgets(url: &str, usd: f64) -> (RoutedEndpoints, crate::spend::Budgets) {
    use crate::spend::{BudgetCap, Budgets, LevelConfig, SpendConfig, Window};
    let deployment = route::Deployment {
        price_in: 10.0,
        price_out: 10.0,
        ..route::Deployment::new("d0")
    };
    let router = Arc::new(
        route::Router::new(vec![deployment], fast_retries(), Arc::new(SystemClock)).unwrap(),
    );
    let native = NativeDeployment {
        endpoint: Arc::new(endpoint(url)),
        limiter: None,
    };
    let routed = RoutedEndpoints::new(router, vec![native], None).unwrap();
    let level = LevelConfig {
        budgets: vec![BudgetCap {
            usd: Some(usd),
            tokens: None,
            window: Window::Day,
            calendar: false,
        }],
        ..LevelConfig::default()
    };
    let config = SpendConfig {
        tenant_default: Some(level),
        ..SpendConfig::default()
    };
    (
        routed,
        Budgets::local(config, Arc::new(SystemClock)).unwrap(),
    )
}

fn acme(
    budgets: &crate::spend::Budgets,
    output_tokens: u64,
) -> (RequestInfo, Option<route::Spend>) {
    let info = RequestInfo {
        tenant: Some(Arc::from("acme")),
        ..RequestInfo::default()
    };
    let spend = route::Spend {
        budgets: budgets.clone(),
        who: crate::spend::Who::new(Some("acme"), None),
        output_tokens: Some(output_tokens),
    };
    (info, Some(spend))
}

fn acme_usd(budgets: &crate::spend::Budgets) -> f64 {
    let report = budgets.report();
    assert_eq!(report.in_flight, 0, "every reservation settled or released");
    report
        .levels
        .iter()
        .find(|l| l.key == "t:acme")
        .map_or(0.0, |l| l.counters.usd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_chat_reserves_then_settles_real_usage_and_refuses_over_budget() {
    let server = Server::start(|_| Reply::json(200, &completion("ok"))).await;
    // Each call reserves 11 + 100 tokens ($1.11) and uses 11 + 3 ($0.14).
    let (r, budgets) = priced_with_budgets(&server.url, 1.2);
    let (info, spend) = acme(&budgets, 100);
    let out = r.chat(&conversation(), info, 11, spend).await.unwrap();
    assert_eq!(out.value.content, "ok");
    assert!((acme_usd(&budgets) - 0.14).abs() < 1e-9);
    // $0.14 spent + $1.11 reserved is over $1.20: refused before any call goes out.
    let (info, spend) = acme(&budgets, 100);
    let err = r.chat(&conversation(), info, 11, spend).await.unwrap_err();
    let RoutedError::Limit(crate::limit::LimitError::Budget(exceeded)) = err else {
        panic!("expected the budget's refusal, got {err:?}");
    };
    assert_eq!(exceeded.tenant.as_deref(), Some("acme"));
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_streams_settle_from_the_final_chunk_or_pay_what_they_got() {
    let server = Server::start(|_| {
        Reply::sse(
            &[
                chunk(&json!({"role": "assistant", "content": "abcdefgh"}), None),
                chunk(&json!({"content": "ijkl"}), Some("stop")),
                json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100}}),
            ],
            true,
        )
    })
    .await;
    let (r, budgets) = priced_with_budgets(&server.url, 100.0);
    let (info, spend) = acme(&budgets, 500);
    let mut out = r.stream(&conversation(), info, 40, spend).await.unwrap();
    while let Some(d) = out.value.next().await {
        d.unwrap();
    }
    // The final chunk's 100 tokens at $10 per 1k, not the 540 reserved.
    assert!((acme_usd(&budgets) - 1.0).abs() < 1e-9);
    // Cut after the first delta: the input estimate (40) plus 8 characters (2 tokens).
    let (info, spend) = acme(&budgets, 500);
    let mut out = r.stream(&conversation(), info, 40, spend).await.unwrap();
    assert_eq!(out.value.next().await.unwrap().unwrap().content, "abcdefgh");
    drop(out);
    assert!((acme_usd(&budgets) - 1.42).abs() < 1e-9);
}
