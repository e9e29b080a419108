//! What a simulated provider says: answers, tool calls and embeddings derived from the
//! request alone (a hash of its messages, tools and settings), so the same request always gets
//! the same answer, plus the token counts that go into `usage`.

use serde_json::{json, Map, Value};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::cache::embed::HashEmbedder;
use crate::tokens::{self, Encoding};

const WORDS: &[&str] = &[
    "the",
    "answer",
    "depends",
    "on",
    "context",
    "but",
    "in",
    "short",
    "it",
    "is",
    "a",
    "good",
    "idea",
    "to",
    "check",
    "current",
    "data",
    "first",
    "most",
    "people",
    "find",
    "that",
    "this",
    "works",
    "well",
    "when",
    "you",
    "plan",
    "ahead",
    "and",
    "keep",
    "things",
    "simple",
    "here",
    "are",
    "details",
    "worth",
    "knowing",
    "overall",
    "expect",
    "some",
    "variation",
    "by",
    "season",
    "time",
    "of",
    "day",
    "local",
    "conditions",
    "usually",
    "matter",
    "more",
    "than",
    "general",
    "rules",
    "so",
    "consider",
    "your",
    "own",
    "situation",
    "carefully",
];

/// Rough token count of a text (about four characters a token, at least one for non-empty).
pub fn estimate_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4)
}

/// Text of a message's `content`: a string, or the text parts of a list of parts.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Prompt tokens of a chat request: each message's text and tool calls, plus framing. With
/// an encoding, counted as OpenAI's cookbook does (3 a message, role and content encoded, 3
/// priming the reply; tool calls and tools as their JSON); else about four characters a
/// token and 4 a message.
pub fn prompt_tokens(messages: &[Value], tools: &[Value], encoding: Option<Encoding>) -> u64 {
    let count = |text: &str| {
        encoding
            .and_then(|e| e.count(text))
            .unwrap_or_else(|| estimate_tokens(text))
    };
    let exact = encoding.is_some();
    let mut total = if exact { tokens::REPLY_PRIMING } else { 3 };
    for m in messages {
        if exact {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            total += tokens::TOKENS_PER_MESSAGE + count(role);
        } else {
            total += 4;
        }
        total += m.get("content").map_or(0, |c| count(&content_text(c)));
        if let Some(calls) = m.get("tool_calls") {
            total += count(&calls.to_string());
        }
    }
    for t in tools {
        total += count(&t.to_string());
    }
    total
}

/// A deterministic stream of pseudo-random numbers (splitmix64).
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// One tool call of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The answer to one chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Text, one entry per token (leading space included), empty for a tool call.
    pub tokens: Vec<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: &'static str,
    pub completion_tokens: u64,
    /// Hash of the request, for ids.
    pub key: u64,
}

impl Answer {
    pub fn text(&self) -> String {
        self.tokens.concat()
    }
}

/// What the answer is derived from: the request's messages, tools and settings.
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Value],
    pub tools: &'a [Value],
    pub tool_choice: Option<&'a Value>,
    pub response_format: Option<&'a Value>,
    pub max_tokens: Option<u64>,
    pub seed: u64,
    pub min_tokens: u32,
    pub max_tokens_default: u32,
}

fn request_key(req: &ChatRequest<'_>) -> u64 {
    // Serialised from borrows (no copy of the messages); object keys come out sorted.
    let material = (
        req.model,
        req.messages,
        req.tools,
        req.tool_choice,
        req.response_format,
        req.max_tokens,
    );
    let bytes = serde_json::to_vec(&material).unwrap_or_default();
    xxh3_64_with_seed(&bytes, req.seed)
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// The tool to call, if this turn calls one: a named `tool_choice`, else `required`, else
/// (`auto`) when the conversation's last message is the user's, not a tool result.
fn chosen_tool<'a>(req: &ChatRequest<'a>, dice: &mut Dice) -> Option<&'a Value> {
    if req.tools.is_empty() {
        return None;
    }
    let function_name = |t: &Value| {
        t.get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match req.tool_choice {
        Some(Value::String(s)) if s == "none" => return None,
        Some(Value::Object(o)) => {
            let wanted = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            if let Some(wanted) = wanted {
                return req
                    .tools
                    .iter()
                    .find(|t| function_name(t).as_deref() == Some(wanted));
            }
        }
        Some(Value::String(s)) if s == "required" || s == "any" => {}
        _ => {
            let last_role = req
                .messages
                .last()
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str);
            if last_role != Some("user") {
                return None;
            }
        }
    }
    let index = dice.below(req.tools.len() as u64) as usize;
    req.tools.get(index)
}

/// Words of the user's text that look like names ("Paris") and numbers ("42").
fn salient(text: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut numbers = Vec::new();
    for (i, raw) in text.split_whitespace().enumerate() {
        let word: String = raw
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '.' && c != '-')
            .trim_end_matches('.')
            .to_owned();
        if word.is_empty() {
            continue;
        }
        if word.parse::<f64>().is_ok() {
            numbers.push(word);
        } else if i > 0 && word.chars().next().is_some_and(char::is_uppercase) {
            names.push(word);
        }
    }
    (names, numbers)
}

/// `{"$ref": "#/$defs/X"}` (or `#/definitions/X`) resolved against the root schema.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..8 {
        let Some(pointer) = current.get("$ref").and_then(Value::as_str) else {
            break;
        };
        match pointer.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(target) => current = target,
            None => break,
        }
    }
    current
}

/// A value of the JSON schema `schema`, taken from the user's text where it fits (a name for
/// a string, a number for a number), deterministic otherwise.
fn schema_value(
    name: &str,
    schema: &Value,
    root: &Value,
    text: &str,
    dice: &mut Dice,
    depth: u32,
) -> Value {
    let schema = resolve(schema, root);
    if depth > 6 {
        return Value::Null;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let chosen = options
                .iter()
                .find(|o| resolve(o, root).get("type").and_then(Value::as_str) != Some("null"))
                .or_else(|| options.first());
            if let Some(option) = chosen {
                return schema_value(name, option, root, text, dice, depth + 1);
            }
        }
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    let (names, numbers) = salient(text);
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let lowered = text.to_lowercase();
        return options
            .iter()
            .find(|o| {
                o.as_str()
                    .is_some_and(|s| lowered.contains(&s.to_lowercase()))
            })
            .or_else(|| options.first())
            .cloned()
            .unwrap_or(Value::Null);
    }
    let kind = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("string"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "integer" => numbers
            .iter()
            .find_map(|n| n.parse::<i64>().ok())
            .map_or_else(|| json!(dice.below(100) + 1), |n| json!(n)),
        "number" => numbers
            .iter()
            .find_map(|n| n.parse::<f64>().ok())
            .map_or_else(|| json!(dice.below(1000) as f64 / 10.0), |n| json!(n)),
        "boolean" => json!(true),
        "null" => Value::Null,
        "array" => match schema.get("items") {
            Some(items) => json!([schema_value(name, items, root, text, dice, depth + 1)]),
            None => json!([]),
        },
        "object" => object_value(schema, root, text, dice, depth + 1, false),
        _ => {
            let value = names.last().cloned().unwrap_or_else(|| {
                let words: Vec<&str> = text.split_whitespace().take(12).collect();
                if words.is_empty() {
                    name.to_owned()
                } else {
                    words.join(" ")
                }
            });
            json!(value)
        }
    }
}

/// An object of `schema`'s properties: the required ones, or all when `all` or none are
/// marked required.
fn object_value(
    schema: &Value,
    root: &Value,
    text: &str,
    dice: &mut Dice,
    depth: u32,
    all: bool,
) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, prop) in props {
            if all || required.is_empty() || required.contains(&name.as_str()) {
                out.insert(
                    name.clone(),
                    schema_value(name, prop, root, text, dice, depth),
                );
            }
        }
    }
    Value::Object(out)
}

fn tool_arguments(tool: &Value, text: &str, dice: &mut Dice) -> String {
    let parameters = tool
        .get("function")
        .and_then(|f| f.get("parameters"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    object_value(&parameters, &parameters, text, dice, 0, false).to_string()
}

/// The JSON text a `response_format` asks for, if it asks for JSON.
fn structured_text(format: Option<&Value>, text: &str, dice: &mut Dice) -> Option<String> {
    let format = format?;
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let schema = format
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            Some(object_value(&schema, &schema, text, dice, 0, true).to_string())
        }
        "json_object" => Some(json!({"answer": text}).to_string()),
        _ => None,
    }
}

/// The deterministic answer to a chat request.
pub fn answer(req: &ChatRequest<'_>) -> Answer {
    let key = request_key(req);
    let mut dice = Dice::new(key);
    let user = last_user_text(req.messages);
    if let Some(tool) = chosen_tool(req, &mut dice) {
        let name = tool
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned();
        let arguments = tool_arguments(tool, &user, &mut dice);
        let completion_tokens = estimate_tokens(&arguments) + estimate_tokens(&name) + 4;
        return Answer {
            tokens: Vec::new(),
            tool_calls: vec![ToolCall {
                id: format!("call_{:016x}", dice.next_u64()),
                name,
                arguments,
            }],
            finish_reason: "tool_calls",
            completion_tokens,
            key,
        };
    }
    if let Some(json_text) = structured_text(req.response_format, &user, &mut dice) {
        let chars: Vec<char> = json_text.chars().collect();
        let tokens: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
        return Answer {
            completion_tokens: tokens.len() as u64,
            tokens,
            tool_calls: Vec::new(),
            finish_reason: "stop",
            key,
        };
    }
    let span = u64::from(req.max_tokens_default - req.min_tokens.min(req.max_tokens_default));
    let wanted = u64::from(req.min_tokens) + dice.below(span + 1);
    let wanted = wanted.max(1);
    let cap = req.max_tokens.unwrap_or(u64::MAX);
    let mut tokens: Vec<String> = Vec::new();
    let topic: Vec<&str> = user.split_whitespace().take(12).collect();
    let mut opening = vec!["Simulated".to_owned(), " answer".to_owned()];
    if !topic.is_empty() {
        opening.push(" to:".to_owned());
        opening.extend(topic.iter().map(|w| format!(" {w}")));
        opening.push(" --".to_owned());
    }
    let target = wanted.max(opening.len() as u64 + 4);
    tokens.extend(opening);
    while (tokens.len() as u64) < target {
        let word = WORDS[dice.below(WORDS.len() as u64) as usize];
        tokens.push(format!(" {word}"));
    }
    if let Some(last) = tokens.last_mut() {
        last.push('.');
    }
    let finish_reason = if tokens.len() as u64 > cap {
        tokens.truncate(cap.max(1) as usize);
        "length"
    } else {
        "stop"
    };
    Answer {
        completion_tokens: tokens.len() as u64,
        tokens,
        tool_calls: Vec::new(),
        finish_reason,
        key,
    }
}

/// A unit vector of `dim` floats for `text`: the semantic cache's hashed n-gram embedding,
/// so similar texts get similar vectors.
pub fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let embedder = HashEmbedder::new(dim.max(HashEmbedder::MIN_DIM));
    let mut v = embedder.embed(text);
    v.truncate(dim);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_with_an_encoding_count_as_openai_does() {
        let messages = [
            json!({"role": "system", "content": "You are terse."}),
            json!({"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}),
        ];
        let exact = prompt_tokens(&messages, &[], Some(Encoding::O200kBase));
        let cookbook = tokens::count_exact(
            Encoding::O200kBase,
            &[("system", "You are terse."), ("user", "Weather in Paris?")],
        );
        assert_eq!(Some(exact), cookbook);
        // without one: chars/4 and 4 a message, as before
        let estimate = prompt_tokens(&messages, &[], None);
        assert_eq!(estimate, 3 + 4 + 4 + 4 + 5);
        // tools count either way
        let tools = [json!({"type": "function", "function": {"name": "get_weather"}})];
        assert!(prompt_tokens(&messages, &tools, Some(Encoding::O200kBase)) > exact);
    }

    fn request<'a>(messages: &'a [Value], tools: &'a [Value]) -> ChatRequest<'a> {
        ChatRequest {
            model: "m",
            messages,
            tools,
            tool_choice: None,
            response_format: None,
            max_tokens: None,
            seed: 0,
            min_tokens: 12,
            max_tokens_default: 48,
        }
    }

    #[test]
    fn same_request_same_answer_other_request_other_answer() {
        let a = [json!({"role": "user", "content": "What is the weather in Paris?"})];
        let b = [json!({"role": "user", "content": "What is the weather in Lima?"})];
        let first = answer(&request(&a, &[]));
        assert_eq!(first, answer(&request(&a, &[])));
        assert_ne!(first.text(), answer(&request(&b, &[])).text());
        assert!(first.text().contains("Paris"));
        assert_eq!(first.finish_reason, "stop");
        assert_eq!(first.completion_tokens, first.tokens.len() as u64);
        assert!((12..=48).contains(&first.completion_tokens));
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let a = [json!({"role": "user", "content": "Tell me a long story"})];
        let mut req = request(&a, &[]);
        req.max_tokens = Some(3);
        let out = answer(&req);
        assert_eq!(out.tokens.len(), 3);
        assert_eq!(out.finish_reason, "length");
    }

    #[test]
    fn tools_are_called_with_arguments_from_the_question_then_answered() {
        let tools = [json!({"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "days", "unit"]}}})];
        let asked =
            [json!({"role": "user", "content": "Weather in Oslo for 3 days in fahrenheit?"})];
        let out = answer(&request(&asked, &tools));
        assert_eq!(out.finish_reason, "tool_calls");
        let call = &out.tool_calls[0];
        assert_eq!(call.name, "get_weather");
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(
            args,
            json!({"city": "Oslo", "days": 3, "unit": "fahrenheit"})
        );
        let answered = [
            asked[0].clone(),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}]}),
            json!({"role": "tool", "tool_call_id": call.id, "content": "12 C"}),
        ];
        let out = answer(&request(&answered, &tools));
        assert!(out.tool_calls.is_empty());
        assert_eq!(out.finish_reason, "stop");
        let mut none = request(&asked, &tools);
        let choice = json!("none");
        none.tool_choice = Some(&choice);
        assert!(answer(&none).tool_calls.is_empty());
    }

    #[test]
    fn response_format_json_schema_gives_an_object_of_the_schema() {
        let asked = [json!({"role": "user", "content": "Plan 3 days in Rome"})];
        let format = json!({"type": "json_schema", "json_schema": {"name": "Plan", "schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "stops": {"type": "array", "items": {"$ref": "#/$defs/Stop"}},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "required": ["city", "days", "stops", "note"],
            "$defs": {"Stop": {"type": "object", "properties": {"name": {"type": "string"}},
                               "required": ["name"]}}}}});
        let mut req = request(&asked, &[]);
        req.response_format = Some(&format);
        let out = answer(&req);
        let value: Value = serde_json::from_str(&out.text()).unwrap();
        assert_eq!(value["city"], "Rome");
        assert_eq!(value["days"], 3);
        assert_eq!(value["stops"][0]["name"], "Rome");
        assert!(value["note"].is_string());
    }

    #[test]
    fn embeddings_are_unit_vectors_and_similar_for_similar_text() {
        let a = embedding("weather in Paris today", 64);
        let b = embedding("weather in paris today?", 64);
        let c = embedding("how to bake bread", 64);
        assert_eq!(a.len(), 64);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!((dot(&a, &a) - 1.0).abs() < 1e-4);
        assert!(dot(&a, &b) > dot(&a, &c));
        assert_eq!(embedding("", 4).len(), 4);
    }
}
