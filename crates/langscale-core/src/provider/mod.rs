//! OpenAI-compatible chat completions over HTTP: the wire format ([`Message`],
//! [`ChatRequest`], [`ChatResponse`], [`StreamDelta`]), one [`Endpoint`] with its pooled
//! client, errors classified onto the router's kinds ([`ProviderError`]), and
//! [`RoutedEndpoints`], the executor loop in Rust for models whose deployments are all
//! endpoints.

mod client;
mod error;
mod routed;
mod sse;
mod types;

#[cfg(test)]
mod tests;

pub use client::{ChatStream, Endpoint, EndpointConfig};
pub use error::{ProviderError, RateLimitInfo};
pub use routed::{
    FailedAttempt, NativeDeployment, Routed, RoutedEndpoints, RoutedError, RoutedStream,
};
pub use types::{
    ChatRequest, ChatResponse, FunctionCall, Message, StreamDelta, ToolCall, ToolCallDelta, Usage,
};
