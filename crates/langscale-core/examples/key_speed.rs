//! Cache-key speed: ns per `cache_key` and per `split_prompt` on one prompt, many times (for
//! profiling the key normalisation: `valgrind --tool=callgrind` on it counts instructions).
//! Run: `cargo run --release -p langscale-core --example key_speed -- PROMPT_FILE [CALLS]`;
//! without a file it uses a built-in ~2 KB tool-calling conversation.

use std::hint::black_box;
use std::time::Instant;

use langscale_core::cache::{cache_key, split_prompt};

const BUILT_IN: &str = r#"[{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "SystemMessage"], "kwargs": {"content": "You are the order-support assistant for an online hardware shop. Answer briefly, cite order numbers exactly, never invent tracking data, and call a tool whenever the answer depends on live data. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. Keep the tone friendly and concise. ", "type": "system"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"], "kwargs": {"content": "Where is my order A-1042? Ref 0.", "type": "human"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"], "kwargs": {"content": "", "response_metadata": {"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "tool_calls", "system_fingerprint": "fp_0ba0d124f1"}, "type": "ai", "tool_calls": [{"name": "lookup_order", "args": {"order_id": "A-1042"}, "id": "call_Xb3kQ9mZpL2vR7tY", "type": "tool_call"}], "usage_metadata": {"input_tokens": 412, "output_tokens": 18, "total_tokens": 430}, "invalid_tool_calls": []}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "ToolMessage"], "kwargs": {"content": "{\"order_id\": \"A-1042\", \"status\": \"shipped\", \"carrier\": \"DHL\", \"tracking_number\": \"JD014600003828410\", \"items\": [{\"sku\": \"KB-87-TKL\", \"qty\": 1}, {\"sku\": \"MS-PRO-2\", \"qty\": 2}]}", "type": "tool", "name": "lookup_order", "tool_call_id": "call_Xb3kQ9mZpL2vR7tY", "status": "success"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"], "kwargs": {"content": "And when will it arrive? ", "type": "human"}}]"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let prompt = match args.next() {
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}")),
        None => BUILT_IN.to_owned(),
    };
    let calls: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let llm = "gpt-4o-mini-2024-07-18 temperature=0";
    let started = Instant::now();
    for _ in 0..calls {
        black_box(cache_key("", black_box(llm), black_box(&prompt)));
    }
    let key_ns = started.elapsed().as_nanos() / u128::from(calls.max(1));
    let started = Instant::now();
    for _ in 0..calls / 4 {
        black_box(split_prompt("", black_box(llm), black_box(&prompt)));
    }
    let split_ns = started.elapsed().as_nanos() / u128::from((calls / 4).max(1));
    println!(
        "{{\"prompt_bytes\": {}, \"cache_key_ns\": {key_ns}, \"split_prompt_ns\": {split_ns}}}",
        prompt.len()
    );
}
