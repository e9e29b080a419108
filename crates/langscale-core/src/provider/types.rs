//! The OpenAI chat-completions wire format: messages and tools going out, completions and
//! stream chunks coming back. Content stays JSON (a string or a list of parts) so images and
//! other parts pass through untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One message of a conversation, tagged by role as the API expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    System {
        content: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Developer {
        content: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    User {
        content: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Assistant {
        /// `null` when the turn is only tool calls.
        #[serde(default)]
        content: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Tool {
        content: Value,
        tool_call_id: String,
    },
}

impl Message {
    pub fn system(text: impl Into<String>) -> Self {
        Self::System {
            content: Value::String(text.into()),
            name: None,
        }
    }

    pub fn user(text: impl Into<String>) -> Self {
        Self::User {
            content: Value::String(text.into()),
            name: None,
        }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self::Assistant {
            content: Value::String(text.into()),
            tool_calls: Vec::new(),
            name: None,
        }
    }

    /// An assistant turn that called tools (and said nothing).
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Self::Assistant {
            content: Value::Null,
            tool_calls: calls,
            name: None,
        }
    }

    /// The result of the tool call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Tool {
            content: Value::String(text.into()),
            tool_call_id: tool_call_id.into(),
        }
    }
}

/// A tool call, as the model made it: `arguments` is the JSON text the model wrote, which
/// may not parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

impl ToolCall {
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// One call's request. `params` holds everything else the body carries (temperature,
/// max_tokens, response_format, ...); it may not override `model`, `messages` or `stream`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Tools in the OpenAI format (`{"type": "function", "function": {...}}`).
    pub tools: Vec<Value>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "function": {"name": ...}}`.
    pub tool_choice: Option<Value>,
    pub stop: Vec<String>,
    pub params: Map<String, Value>,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// A request from one JSON object: `messages` (required), `tools`, `tool_choice`, `stop`
    /// (a string or a list), and any other key as a body parameter.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the request is not JSON: {e}"))?;
        let Value::Object(mut params) = value else {
            return Err("the request must be a JSON object".into());
        };
        let messages = match params.remove("messages") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    serde_json::from_value::<Message>(m)
                        .map_err(|e| format!("message {i} is not a chat message: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("the request needs \"messages\", a list".into()),
        };
        let tools = match params.remove("tools") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tools)) => tools,
            Some(other) => return Err(format!("tools must be a list, got {other}")),
        };
        let tool_choice = params.remove("tool_choice").filter(|c| !c.is_null());
        let stop = match params.remove("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|s| match s {
                    Value::String(s) => Ok(s),
                    other => Err(format!("stop must hold strings, got {other}")),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("stop must be a string or a list, got {other}")),
        };
        for key in ["stream", "stream_options"] {
            params.remove(key);
        }
        Ok(Self {
            messages,
            tools,
            tool_choice,
            stop,
            params,
        })
    }

    /// The body for `model`: endpoint defaults, then this request's params (a string `model`
    /// among them replaces the endpoint's), then what only the request sets.
    pub(crate) fn body<'a>(
        &'a self,
        model: &'a str,
        defaults: &'a Map<String, Value>,
        stream: bool,
    ) -> Body<'a> {
        let model = self
            .params
            .get("model")
            .or_else(|| defaults.get("model"))
            .and_then(Value::as_str)
            .unwrap_or(model);
        Body {
            model,
            messages: &self.messages,
            tools: &self.tools,
            tool_choice: self.tool_choice.as_ref(),
            stop: &self.stop,
            stream: stream.then_some(true),
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            params: Params {
                request_stop: &self.stop,
                defaults,
                params: &self.params,
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    params: Params<'a>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Keys the request sets itself; a parameter of the same name is dropped.
const RESERVED: [&str; 7] = [
    "model",
    "messages",
    "tools",
    "tool_choice",
    "stop",
    "stream",
    "stream_options",
];

struct Params<'a> {
    request_stop: &'a [String],
    defaults: &'a Map<String, Value>,
    params: &'a Map<String, Value>,
}

impl Serialize for Params<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // An endpoint's default `stop` holds unless the request brings its own.
        let keep = |k: &String| {
            !RESERVED.contains(&k.as_str()) || (k == "stop" && self.request_stop.is_empty())
        };
        let defaults = self
            .defaults
            .iter()
            .filter(|(k, _)| keep(k) && !self.params.contains_key(*k));
        let params = self.params.iter().filter(|(k, _)| keep(k));
        serializer.collect_map(defaults.chain(params))
    }
}

/// Token counts the provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// The prompt tokens read from the provider's prompt cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`), priced apart where the deployment says so.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// The breakdown of `prompt_tokens` OpenAI reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// A completed (non-streaming) answer: the first choice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    pub id: Option<String>,
    pub model: Option<String>,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
pub(crate) struct WireCompletion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl WireCompletion {
    pub(crate) fn into_response(self) -> Result<ChatResponse, String> {
        let Some(choice) = self.choices.into_iter().next() else {
            return Err("the completion has no choices".into());
        };
        let message = choice
            .message
            .ok_or_else(|| "the completion's first choice has no message".to_owned())?;
        Ok(ChatResponse {
            id: self.id,
            model: self.model,
            content: message.content.or(message.refusal).unwrap_or_default(),
            tool_calls: message.tool_calls.unwrap_or_default(),
            finish_reason: choice.finish_reason,
            usage: self.usage,
        })
    }

    pub(crate) fn into_delta(self) -> StreamDelta {
        let mut delta = StreamDelta {
            id: self.id,
            model: self.model,
            usage: self.usage,
            ..StreamDelta::default()
        };
        if let Some(choice) = self.choices.into_iter().next() {
            delta.finish_reason = choice.finish_reason;
            if let Some(d) = choice.delta {
                delta.content = d.content.unwrap_or_default();
                delta.tool_calls = d
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let (name, arguments) =
                            t.function.map_or((None, None), |f| (f.name, f.arguments));
                        ToolCallDelta {
                            index: t.index.unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)),
                            id: t.id,
                            name,
                            arguments,
                        }
                    })
                    .collect();
            }
        }
        delta
    }
}

/// A piece of a tool call in a stream; pieces with the same `index` belong together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// One chunk of a streamed answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamDelta {
    pub id: Option<String>,
    pub model: Option<String>,
    pub content: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}
