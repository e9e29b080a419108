//! End-to-end tests of the simulator over real loopback sockets, with a minimal HTTP/1.1
//! client (one request per connection, `Connection: close`).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = raw.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        raw = &rest[n + 2..];
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = if method == "GET" {
        String::new()
    } else {
        body.to_string()
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn chat_body(question: &str) -> Value {
    json!({"model": "sim-model", "messages": [{"role": "user", "content": question}]})
}

fn start(provider: ProviderConfig) -> (Simulator, SocketAddr) {
    let sim = Simulator::start(SimConfig {
        provider: vec![provider],
    })
    .unwrap();
    let addr = sim.addresses()[0].1;
    (sim, addr)
}

#[test]
fn chat_completion_is_deterministic_with_usage() {
    let (sim, addr) = start(ProviderConfig::default());
    let a = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("Weather in Paris?"),
        &[],
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let b = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("Weather in Paris?"),
        &[],
    )
    .unwrap();
    let (a, b) = (a.json(), b.json());
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    let usage = &a["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let stats = sim.stats("default").unwrap();
    assert_eq!((stats.requests, stats.ok, stats.chat_requests), (2, 2, 2));
    assert!(stats.completion_tokens > 0);
}

#[test]
fn streaming_sends_chunks_usage_and_done() {
    let (sim, addr) = start(ProviderConfig::default());
    let mut body = chat_body("Tell me about Oslo");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = send(addr, "POST", "/v1/chat/completions", &body, &[]).unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events: Vec<&str> = reply
        .body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let plain = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("Tell me about Oslo"),
        &[],
    )
    .unwrap();
    assert_eq!(
        text,
        plain.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(sim.stats("default").unwrap().stream_requests, 1);
}

#[test]
fn tool_calls_when_tools_are_sent() {
    let (_sim, addr) = start(ProviderConfig::default());
    let mut body = chat_body("What is the weather in Lima?");
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let reply = send(addr, "POST", "/v1/chat/completions", &body, &[])
        .unwrap()
        .json();
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Lima"}));
    body["stream"] = json!(true);
    let streamed = send(addr, "POST", "/v1/chat/completions", &body, &[]).unwrap();
    let mut arguments = String::new();
    for event in streamed
        .body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
    {
        if event == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(event).unwrap();
        if let Some(a) =
            chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            arguments.push_str(a);
        }
    }
    assert_eq!(arguments, call["function"]["arguments"].as_str().unwrap());
}

#[test]
fn requests_per_minute_answers_429_with_openai_headers() {
    let (sim, addr) = start(ProviderConfig {
        requests_per_minute: Some(3.0),
        ..ProviderConfig::default()
    });
    for _ in 0..3 {
        let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
    }
    let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
    assert_eq!(r.status, 429);
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&after), "{after}");
    assert!(r.header("retry-after-ms").is_some());
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(r.header("x-ratelimit-reset-requests").is_some());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let stats = sim.stats("default").unwrap();
    assert_eq!((stats.ok, stats.rate_limited), (3, 1));
    assert_eq!(sim.timeline("default").unwrap()[0], [4, 3, 1, 0]);
}

#[test]
fn scheduled_outage_then_recovery() {
    let (sim, addr) = start(ProviderConfig {
        faults: vec![Fault {
            start: 0.0,
            end: Some(1.0),
            kind: FaultKind::Down,
            rate: 1.0,
            factor: 1.0,
        }],
        ..ProviderConfig::default()
    });
    let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
    assert_eq!(r.status, 503);
    std::thread::sleep(Duration::from_secs_f64(
        (1.05 - sim.elapsed("default").unwrap()).max(0.0),
    ));
    let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
    assert_eq!(r.status, 200);
    sim.reset();
    let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
    assert_eq!(r.status, 503, "reset restarts the schedule");
    assert_eq!(sim.stats("default").unwrap().unavailable, 1);
}

#[test]
fn forced_faults_error_and_reset() {
    let (sim, addr) = start(ProviderConfig::default());
    let r = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("hi"),
        &[("x-sim-fault", "500")],
    )
    .unwrap();
    assert_eq!(r.status, 500);
    let reset = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("hi"),
        &[("x-sim-fault", "reset")],
    );
    match reset {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(r) => assert_eq!(r.status, 0, "no HTTP answer on a reset, got {}", r.status),
    }
    let stats = sim.stats("default").unwrap();
    assert_eq!((stats.server_errors, stats.resets), (1, 1));
}

#[test]
fn latency_model_delays_the_answer() {
    let (_sim, addr) = start(ProviderConfig {
        time_to_first_token: 0.1,
        tokens_per_second: Some(1000.0),
        ..ProviderConfig::default()
    });
    let start = Instant::now();
    let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
fn hang_answers_504_after_hang_seconds() {
    let (sim, addr) = start(ProviderConfig {
        hang_seconds: 0.05,
        ..ProviderConfig::default()
    });
    let r = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body("hi"),
        &[("x-sim-fault", "hang")],
    )
    .unwrap();
    assert_eq!(r.status, 504);
    let stats = sim.stats("default").unwrap();
    assert_eq!((stats.hangs, stats.timeouts), (1, 1));
}

#[test]
fn embeddings_models_auth_and_context_window() {
    let (_sim, addr) = start(ProviderConfig {
        api_key: Some("secret".into()),
        context_window: Some(20),
        ..ProviderConfig::default()
    });
    let auth = [("Authorization", "Bearer secret")];
    let r = send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).unwrap();
    assert_eq!(r.status, 401);
    let r = send(
        addr,
        "POST",
        "/v1/embeddings",
        &json!({"model": "e", "input": ["a b", "c"], "dimensions": 8}),
        &auth,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let data = &r.json()["data"];
    assert_eq!(data.as_array().unwrap().len(), 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    let r = send(
        addr,
        "POST",
        "/v1/embeddings",
        &json!({"model": "e", "input": "a", "encoding_format": "base64"}),
        &auth,
    )
    .unwrap();
    assert!(r.json()["data"][0]["embedding"].is_string());
    let r = send(addr, "GET", "/v1/models", &Value::Null, &auth).unwrap();
    assert_eq!(r.json()["data"][0]["id"], "sim-model");
    let long = "word ".repeat(100);
    let r = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat_body(&long),
        &auth,
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    let r = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &json!({"model": "m"}),
        &auth,
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn stop_frees_the_port_and_bind_errors_name_the_provider() {
    let (mut sim, addr) = start(ProviderConfig::default());
    let taken = Simulator::start(SimConfig {
        provider: vec![ProviderConfig {
            name: "second".into(),
            port: addr.port(),
            ..ProviderConfig::default()
        }],
    });
    let err = taken.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("second"), "{err}");
    sim.stop();
    sim.stop();
    assert!(!sim.is_running());
    assert!(send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn starts_and_stops_inside_another_runtime() {
    let (sim, addr) = start(ProviderConfig::default());
    let reply = tokio::task::spawn_blocking(move || {
        send(addr, "POST", "/v1/chat/completions", &chat_body("hi"), &[])
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.status, 200);
    drop(sim); // must not panic: shutdown in the background inside a runtime
}
