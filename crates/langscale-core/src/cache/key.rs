//! Cache keys for LangChain prompts. A chat prompt (`langchain_core.load.dumps(messages)`)
//! is canonicalised before hashing so that a repeated agent conversation hits: message ids,
//! response and usage metadata are dropped and tool-call ids are renumbered by first use.
//!
//! # Canonical form
//!
//! A prompt that is a JSON array whose elements are all objects is rewritten as compact JSON:
//!
//! - object members are sorted by their key (as written, escapes included), array order is kept;
//! - at each message's top level every member is kept as is (`lc`, `type`, the class path `id`);
//! - in the message's `kwargs` object the members `id`, `response_metadata` and
//!   `usage_metadata` are dropped;
//! - anywhere inside `kwargs`, a string under a key `id`, `tool_call_id` or `call_id` becomes
//!   `"#n"`, where `n` numbers the distinct id strings in their order of first appearance in
//!   the canonical (sorted-key) walk of the whole prompt. The same id gives the same number
//!   everywhere, so a tool call stays linked to its result; a `null` id stays `null`;
//! - strings and numbers are kept exactly as written, so any difference in content, tool
//!   names, arguments or results gives a different canonical text.
//!
//! Anything else — plain text, JSON of another shape, invalid JSON, nesting deeper than
//! [`MAX_DEPTH`] — is its own canonical form, byte for byte. The two cannot be confused: a
//! canonical rewrite is always a valid JSON array of objects at most [`MAX_DEPTH`] deep, and
//! a text of that shape is always rewritten.
//!
//! # Key
//!
//! `cache_key(namespace, llm_string, prompt)` is exactly
//! `xxh3_128(len(namespace) ‖ namespace ‖ len(llm_string) ‖ llm_string ‖ canonical_prompt(prompt))`
//! with each length a little-endian `u64` of the UTF-8 byte length, so no two different
//! `(namespace, llm_string, canonical prompt)` triples share their hashed bytes.
//!
//! The prompt is parsed by a small validating JSON reader that borrows from the input (no
//! per-string allocation, numbers kept as written) rather than into `serde_json::Value`,
//! which would allocate every string and round big integers through `f64`.

use std::borrow::Cow;
use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_128;

/// A 128-bit cache key (the vector index's key type too).
pub use langscale_index::CacheKey;

/// The deepest container nesting that is canonicalised; deeper prompts are hashed raw.
/// Matches `serde_json`'s default recursion limit.
pub const MAX_DEPTH: usize = 128;

/// Key of `(namespace, llm_string, prompt)` with the prompt canonicalised (see the module
/// documentation): equal to `xxh3_128` of the length-framed namespace and llm string followed
/// by [`canonical_prompt`]`(prompt)`.
pub fn cache_key(namespace: &str, llm_string: &str, prompt: &str) -> CacheKey {
    let mut bytes = Vec::with_capacity(16 + namespace.len() + llm_string.len() + prompt.len());
    put_framed(&mut bytes, namespace);
    put_framed(&mut bytes, llm_string);
    write_canonical(prompt, &mut bytes);
    xxh3_128(&bytes)
}

/// The canonical form of `prompt` (see the module documentation): compact JSON with sorted
/// keys and renumbered ids for a LangChain message list, the prompt itself otherwise.
pub fn canonical_prompt(prompt: &str) -> String {
    let mut bytes = Vec::with_capacity(prompt.len());
    write_canonical(prompt, &mut bytes);
    // Every byte written comes from a `&str` slice cut at ASCII boundaries or is ASCII.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn put_framed(out: &mut Vec<u8>, part: &str) {
    let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(part.as_bytes());
}

fn write_canonical<S: Sink>(prompt: &str, sink: &mut S) {
    match parse_messages(prompt) {
        Some((tree, messages)) => Canonicaliser::new(&tree, sink).messages(messages),
        None => sink.put(prompt.as_bytes()),
    }
}

/// Where canonical bytes go: a buffer for [`canonical_prompt`] and [`cache_key`], or a
/// streaming hasher.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
impl Sink for xxhash_rust::xxh3::Xxh3Default {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A parsed JSON value that borrows its tokens from the prompt. Containers point into
/// [`Tree::members`], so a whole prompt parses into two vectors instead of one per container.
#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    /// A number, `true`, `false` or `null`, as written.
    Atom(&'a str),
    /// A string token including its quotes, escapes as written.
    Str(&'a str),
    /// Items, with empty keys.
    Array(Span),
    /// Members sorted by key token (stable, so duplicate keys keep their order).
    Object(Span),
}

/// A run of [`Tree::members`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

#[derive(Debug, Default)]
struct Tree<'a> {
    /// Every container's children, each container's contiguous.
    members: Vec<(&'a str, Node<'a>)>,
}

impl<'a> Tree<'a> {
    fn children(&self, span: Span) -> &[(&'a str, Node<'a>)] {
        self.members
            .get(span.start..span.start.saturating_add(span.len))
            .unwrap_or_default()
    }
}

/// The parsed prompt and its messages when it is a JSON array of objects, `None` for
/// anything else.
fn parse_messages(prompt: &str) -> Option<(Tree<'_>, Span)> {
    let (tree, items) = parse_array(prompt)?;
    all_objects(&tree, items).then_some((tree, items))
}

fn all_objects(tree: &Tree<'_>, items: Span) -> bool {
    tree.children(items)
        .iter()
        .all(|(_, m)| matches!(m, Node::Object(_)))
}

/// The prompt parsed when it is a JSON array (of anything), `None` otherwise.
fn parse_array(prompt: &str) -> Option<(Tree<'_>, Span)> {
    let mut parser = Parser {
        text: prompt,
        pos: 0,
        tree: Tree::default(),
        pending: Vec::new(),
    };
    parser.skip_whitespace();
    // Fast exit for plain-text prompts.
    if parser.peek()? != b'[' {
        return None;
    }
    // About one member per 16 bytes in LangChain message lists.
    parser.tree.members.reserve(prompt.len() / 16);
    parser.pending.reserve(64);
    let root = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != prompt.len() {
        return None;
    }
    let Node::Array(items) = root else {
        return None;
    };
    Some((parser.tree, items))
}

// ---------------------------------------------------------------------------------------------
// One parse for the semantic cache: the exact key, the last user turn and the scope key.

/// A prompt read once for the semantic cache (see `scope.rs`).
pub(crate) struct ReadPrompt<'a> {
    prompt: &'a str,
    /// The parsed prompt if it is a JSON array.
    array: Option<(Tree<'a>, Span)>,
}

/// Where the last human turn's text is, and the text.
pub(crate) struct HumanTurn {
    /// Position of the message in the list.
    index: usize,
    pub(crate) text: String,
}

impl<'a> ReadPrompt<'a> {
    pub(crate) fn new(prompt: &'a str) -> Self {
        Self {
            prompt,
            array: parse_array(prompt),
        }
    }

    /// [`cache_key`] of this prompt, without parsing it again.
    pub(crate) fn key(&self, namespace: &str, llm_string: &str) -> CacheKey {
        self.key_blanking(namespace, llm_string, None)
    }

    /// The key of the prompt with `turn`'s text blanked (every non-text block kept).
    pub(crate) fn scope_key(
        &self,
        namespace: &str,
        llm_string: &str,
        turn: &HumanTurn,
    ) -> CacheKey {
        self.key_blanking(namespace, llm_string, Some(turn.index))
    }

    fn key_blanking(&self, namespace: &str, llm_string: &str, blank: Option<usize>) -> CacheKey {
        let mut bytes =
            Vec::with_capacity(16 + namespace.len() + llm_string.len() + self.prompt.len());
        put_framed(&mut bytes, namespace);
        put_framed(&mut bytes, llm_string);
        match &self.array {
            Some((tree, items)) if all_objects(tree, *items) => {
                let mut canonical = Canonicaliser::new(tree, &mut bytes);
                canonical.blank = blank;
                canonical.messages(*items);
            }
            _ => bytes.extend_from_slice(self.prompt.as_bytes()),
        }
        xxh3_128(&bytes)
    }

    /// A JSON list of LangChain-serialised messages (objects with "lc" and "kwargs").
    pub(crate) fn is_message_list(&self) -> bool {
        let Some((tree, items)) = &self.array else {
            return false;
        };
        let list = tree.children(*items);
        !list.is_empty()
            && list.iter().all(|(_, m)| {
                member(tree, *m, "\"lc\"").is_some() && member(tree, *m, "\"kwargs\"").is_some()
            })
    }

    /// The last human turn with its text (a string, or the text blocks of a list joined by
    /// newlines); None when there is none or its content is neither.
    pub(crate) fn last_human(&self) -> Option<HumanTurn> {
        let (tree, items) = self.array.as_ref()?;
        let list = tree.children(*items);
        let index = list.iter().rposition(|(_, m)| is_human(tree, *m))?;
        let (_, message) = list.get(index)?;
        let kwargs = member(tree, *message, "\"kwargs\"")?;
        let text = match member(tree, kwargs, "\"content\"")? {
            Node::Str(token) => decode(token)?,
            Node::Array(blocks) => {
                let mut parts = Vec::new();
                for (_, block) in tree.children(blocks) {
                    match *block {
                        Node::Str(token) => parts.push(decode(token)?),
                        Node::Object(_) if is_text_block(tree, *block) => {
                            if let Some(Node::Str(token)) = member(tree, *block, "\"text\"") {
                                parts.push(decode(token)?);
                            }
                        }
                        _ => {}
                    }
                }
                parts.join("\n")
            }
            _ => return None,
        };
        Some(HumanTurn { index, text })
    }
}

/// The value of an object's member `key` (a key token, quotes included; the last one if the
/// key is repeated, as a JSON object reader keeps it).
fn member<'a>(tree: &Tree<'a>, node: Node<'a>, key: &str) -> Option<Node<'a>> {
    let Node::Object(members) = node else {
        return None;
    };
    tree.children(members)
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

/// A string token's text, escapes decoded; None for an escape that does not decode.
fn decode(token: &str) -> Option<String> {
    if token.contains('\\') {
        return serde_json::from_str::<String>(token).ok();
    }
    token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .map(str::to_owned)
}

fn str_is(node: Option<Node<'_>>, text: &str) -> bool {
    matches!(node, Some(Node::Str(token)) if decode(token).is_some_and(|t| t == text))
}

fn is_human(tree: &Tree<'_>, message: Node<'_>) -> bool {
    let by_type = member(tree, message, "\"kwargs\"")
        .is_some_and(|kwargs| str_is(member(tree, kwargs, "\"type\""), "human"));
    let by_class = match member(tree, message, "\"id\"") {
        Some(Node::Array(path)) => tree.children(path).last().is_some_and(|(_, name)| {
            str_is(Some(*name), "HumanMessage") || str_is(Some(*name), "HumanMessageChunk")
        }),
        _ => false,
    };
    by_type || by_class
}

fn is_text_block(tree: &Tree<'_>, block: Node<'_>) -> bool {
    str_is(member(tree, block, "\"type\""), "text")
}

/// A strict (RFC 8259) JSON reader: any deviation makes the prompt "not JSON".
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    tree: Tree<'a>,
    /// Children of the containers still open, innermost last.
    pending: Vec<(&'a str, Node<'a>)>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// The text from `start` to the current position. Only ever cut next to ASCII bytes.
    fn token(&self, start: usize) -> Option<&'a str> {
        self.text.get(start..self.pos)
    }

    /// `depth` counts the containers around this value.
    fn value(&mut self, depth: usize) -> Option<Node<'a>> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Node::Str),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Moves the children pending since `mark` into the tree.
    fn close(&mut self, mark: usize) -> Span {
        let start = self.tree.members.len();
        self.tree.members.extend(self.pending.drain(mark..));
        Span {
            start,
            len: self.tree.members.len() - start,
        }
    }

    fn array(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1; // '['
        let mark = self.pending.len();
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(Node::Array(self.close(mark)));
        }
        loop {
            self.skip_whitespace();
            let item = self.value(depth)?;
            self.pending.push(("", item));
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(Node::Array(self.close(mark)));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1; // '{'
        let mark = self.pending.len();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(Node::Object(self.close(mark)));
        }
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            self.pending.push((key, value));
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    if let Some(members) = self.pending.get_mut(mark..) {
                        members.sort_by(|a, b| a.0.cmp(b.0));
                    }
                    return Some(Node::Object(self.close(mark)));
                }
                _ => return None,
            }
        }
    }

    /// A string token, quotes included. Called on the opening quote.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        self.pos = skip_plain(bytes, self.pos + 1);
        loop {
            match *bytes.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return self.token(start);
                }
                b'\\' => match *bytes.get(self.pos + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
                    b'u' => {
                        let hex = bytes.get(self.pos + 2..self.pos + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.pos += 6;
                    }
                    _ => return None,
                },
                // A control character; `skip_plain` stops at nothing else.
                _ => return None,
            }
            self.pos = skip_plain(bytes, self.pos);
        }
    }

    fn number(&mut self) -> Option<Node<'a>> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        self.token(start).map(Node::Atom)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }

    fn literal(&mut self, word: &'static str) -> Option<Node<'a>> {
        let end = self.pos + word.len();
        if self.text.as_bytes().get(self.pos..end)? != word.as_bytes() {
            return None;
        }
        self.pos = end;
        Some(Node::Atom(word))
    }
}

/// The index of the first byte from `from` on that ends a plain run inside a JSON string
/// (`"`, `\` or a control character), or `bytes.len()`. Eight bytes at a time: message
/// content is most of a prompt. (An SSE2 scan of 16 bytes at a time measured no better on
/// LangChain prompts, whose strings are mostly short keys: examples/key_speed.rs.)
fn skip_plain(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (first two) or below 0x20 (last). Borrows
        // can only mark bytes above a true match, so the lowest mark is exact.
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH_BITS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Canonical output

/// Members of a message's `kwargs` that change on every run and say nothing about the
/// conversation.
const VOLATILE_KWARGS: [&str; 3] = ["\"id\"", "\"response_metadata\"", "\"usage_metadata\""];

/// Keys whose string values inside `kwargs` are ids, renumbered by first appearance.
/// Members holding tool arguments or results, copied exactly (never renumbered).
const DATA_KEYS: &[&str] = &["\"args\"", "\"input\"", "\"artifact\"", "\"arguments\""];

const ID_KEYS: [&str; 3] = ["\"id\"", "\"tool_call_id\"", "\"call_id\""];

struct Canonicaliser<'a, 't, 's, S> {
    tree: &'t Tree<'a>,
    sink: &'s mut S,
    ids: IdNumbers<'a>,
    /// The message whose text content is written blank (the semantic cache's scope).
    blank: Option<usize>,
}

impl<'a, 't, 's, S: Sink> Canonicaliser<'a, 't, 's, S> {
    fn new(tree: &'t Tree<'a>, sink: &'s mut S) -> Self {
        Self {
            tree,
            sink,
            ids: IdNumbers::default(),
            blank: None,
        }
    }

    fn messages(&mut self, messages: Span) {
        let tree = self.tree;
        self.sink.put(b"[");
        for (i, (_, message)) in tree.children(messages).iter().enumerate() {
            if i > 0 {
                self.sink.put(b",");
            }
            self.message(*message, self.blank == Some(i));
        }
        self.sink.put(b"]");
    }

    fn message(&mut self, message: Node<'a>, blank: bool) {
        let Node::Object(members) = message else {
            self.value(message, false);
            return;
        };
        let tree = self.tree;
        self.sink.put(b"{");
        for (i, (key, value)) in tree.children(members).iter().enumerate() {
            if i > 0 {
                self.sink.put(b",");
            }
            self.key(key);
            if *key == "\"kwargs\"" {
                self.kwargs(*value, blank);
            } else {
                self.value(*value, false);
            }
        }
        self.sink.put(b"}");
    }

    fn kwargs(&mut self, kwargs: Node<'a>, blank: bool) {
        let Node::Object(members) = kwargs else {
            self.value(kwargs, true);
            return;
        };
        let tree = self.tree;
        self.sink.put(b"{");
        let mut first = true;
        for (key, value) in tree.children(members) {
            if VOLATILE_KWARGS.contains(key) {
                continue;
            }
            if !first {
                self.sink.put(b",");
            }
            first = false;
            if blank && *key == "\"content\"" {
                self.key(key);
                self.blank_content(*value);
            } else {
                self.member(key, *value, true);
            }
        }
        self.sink.put(b"}");
    }

    /// Writes `node`; inside `kwargs` (`renumber`) id strings become their first-use number.
    fn value(&mut self, node: Node<'a>, renumber: bool) {
        let tree = self.tree;
        match node {
            Node::Atom(token) | Node::Str(token) => self.sink.put(token.as_bytes()),
            Node::Array(items) => {
                self.sink.put(b"[");
                for (i, (_, item)) in tree.children(items).iter().enumerate() {
                    if i > 0 {
                        self.sink.put(b",");
                    }
                    self.value(*item, renumber);
                }
                self.sink.put(b"]");
            }
            Node::Object(members) => {
                self.sink.put(b"{");
                for (i, (key, value)) in tree.children(members).iter().enumerate() {
                    if i > 0 {
                        self.sink.put(b",");
                    }
                    self.member(key, *value, renumber);
                }
                self.sink.put(b"}");
            }
        }
    }

    fn member(&mut self, key: &'a str, value: Node<'a>, renumber: bool) {
        self.key(key);
        match value {
            Node::Str(id) if renumber && ID_KEYS.contains(&key) => {
                let number = self.ids.number(id);
                self.id(number);
            }
            // Tool arguments and results are the user's data: an argument that happens to be
            // named `id` must keep its value, or two different calls would share a key.
            _ if DATA_KEYS.contains(&key) => self.value(value, false),
            _ => self.value(value, renumber),
        }
    }

    /// Message content with its text taken out: strings and text blocks' `text` written as
    /// `""`, every other block kept.
    fn blank_content(&mut self, content: Node<'a>) {
        let tree = self.tree;
        match content {
            Node::Str(_) => self.sink.put(b"\"\""),
            Node::Array(blocks) => {
                self.sink.put(b"[");
                for (i, (_, block)) in tree.children(blocks).iter().enumerate() {
                    if i > 0 {
                        self.sink.put(b",");
                    }
                    match *block {
                        Node::Str(_) => self.sink.put(b"\"\""),
                        Node::Object(members) if is_text_block(tree, *block) => {
                            self.sink.put(b"{");
                            for (j, (key, value)) in tree.children(members).iter().enumerate() {
                                if j > 0 {
                                    self.sink.put(b",");
                                }
                                if *key == "\"text\"" && matches!(value, Node::Str(_)) {
                                    self.key(key);
                                    self.sink.put(b"\"\"");
                                } else {
                                    self.member(key, *value, true);
                                }
                            }
                            self.sink.put(b"}");
                        }
                        other => self.value(other, true),
                    }
                }
                self.sink.put(b"]");
            }
            other => self.value(other, true),
        }
    }

    fn key(&mut self, key: &str) {
        self.sink.put(key.as_bytes());
        self.sink.put(b":");
    }

    /// Writes `"#<number>"`.
    fn id(&mut self, number: u32) {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        let mut rest = number;
        loop {
            start -= 1;
            // `rest % 10` is a single digit, so the cast cannot truncate.
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.sink.put(b"\"#");
        self.sink.put(&digits[start..]);
        self.sink.put(b"\"");
    }
}

/// Below this many distinct ids a linear scan beats hashing.
const LINEAR_IDS: usize = 16;

/// An id string as compared for renumbering: its decoded text, or its raw token when the
/// escapes do not decode (a lone surrogate), kept apart so the two can never be equal.
#[derive(Debug, PartialEq, Eq, Hash)]
enum IdText<'a> {
    Decoded(Cow<'a, str>),
    Raw(&'a str),
}

impl<'a> IdText<'a> {
    fn of(token: &'a str) -> Self {
        if token.contains('\\') {
            return serde_json::from_str::<String>(token)
                .map_or(IdText::Raw(token), |s| IdText::Decoded(Cow::Owned(s)));
        }
        let inner = token
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(token);
        IdText::Decoded(Cow::Borrowed(inner))
    }
}

/// Numbers distinct id strings in order of first appearance.
#[derive(Debug, Default)]
struct IdNumbers<'a> {
    /// Ids in order of first appearance while there are few.
    seen: Vec<IdText<'a>>,
    /// Takes over from `seen` once it passes [`LINEAR_IDS`].
    index: HashMap<IdText<'a>, u32>,
}

impl<'a> IdNumbers<'a> {
    fn number(&mut self, token: &'a str) -> u32 {
        let id = IdText::of(token);
        if self.index.is_empty() {
            if let Some(pos) = self.seen.iter().position(|s| *s == id) {
                return to_u32(pos);
            }
            let number = to_u32(self.seen.len());
            self.seen.push(id);
            if self.seen.len() > LINEAR_IDS {
                self.index = self
                    .seen
                    .drain(..)
                    .enumerate()
                    .map(|(n, s)| (s, to_u32(n)))
                    .collect();
            }
            return number;
        }
        let next = to_u32(self.index.len());
        *self.index.entry(id).or_insert(next)
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn human(content: &str, id: &str) -> Value {
        json!({
            "lc": 1, "type": "constructor",
            "id": ["langchain", "schema", "messages", "HumanMessage"],
            "kwargs": {"content": content, "type": "human", "id": id}
        })
    }

    fn system(content: &str) -> Value {
        json!({
            "lc": 1, "type": "constructor",
            "id": ["langchain", "schema", "messages", "SystemMessage"],
            "kwargs": {"content": content, "type": "system"}
        })
    }

    /// An assistant turn calling `calls` = (tool name, JSON args, call id), with the volatile
    /// parts (`run`, `fingerprint`, `tokens`) set by the caller.
    fn ai_calls(calls: &[(&str, Value, &str)], run: &str, fingerprint: &str, tokens: u64) -> Value {
        let tool_calls: Vec<Value> = calls
            .iter()
            .map(|(name, args, id)| json!({"name": name, "args": args, "id": id, "type": "tool_call"}))
            .collect();
        let raw_calls: Vec<Value> = calls
            .iter()
            .map(|(name, args, id)| {
                json!({"id": id, "function": {"name": name, "arguments": args.to_string()}, "type": "function"})
            })
            .collect();
        json!({
            "lc": 1, "type": "constructor",
            "id": ["langchain", "schema", "messages", "AIMessage"],
            "kwargs": {
                "content": "", "type": "ai", "id": run,
                "tool_calls": tool_calls, "invalid_tool_calls": [],
                "additional_kwargs": {"tool_calls": raw_calls, "refusal": null},
                "response_metadata": {"model_name": "gpt-4o-mini-2024-07-18", "system_fingerprint": fingerprint, "finish_reason": "tool_calls"},
                "usage_metadata": {"input_tokens": tokens, "output_tokens": 17, "total_tokens": tokens + 17}
            }
        })
    }

    fn tool_result(content: &str, call_id: &str, name: &str, id: &str) -> Value {
        json!({
            "lc": 1, "type": "constructor",
            "id": ["langchain", "schema", "messages", "ToolMessage"],
            "kwargs": {"content": content, "type": "tool", "name": name, "id": id, "tool_call_id": call_id, "status": "success"}
        })
    }

    /// Everything that can vary in one weather-agent conversation.
    struct Conversation<'a> {
        question: &'a str,
        tool: &'a str,
        city: &'a str,
        result: &'a str,
        ids: [&'a str; 6],
        fingerprint: &'a str,
        tokens: u64,
    }

    impl Conversation<'_> {
        fn base() -> Self {
            Conversation {
                question: "What's the weather in Paris and London?",
                tool: "get_weather",
                city: "Paris",
                result: "18C, cloudy",
                ids: [
                    "msg-1", "call_abc", "call_def", "run-123", "tool-1", "tool-2",
                ],
                fingerprint: "fp_0ba0d124f1",
                tokens: 85,
            }
        }

        fn prompt(&self) -> String {
            let [human_id, call_a, call_b, run, tool_a, tool_b] = self.ids;
            json!([
                system("You are a helpful assistant."),
                human(self.question, human_id),
                ai_calls(
                    &[
                        (self.tool, json!({"city": self.city}), call_a),
                        (self.tool, json!({"city": "London"}), call_b)
                    ],
                    run,
                    self.fingerprint,
                    self.tokens,
                ),
                tool_result(self.result, call_a, self.tool, tool_a),
                tool_result("15C, rain", call_b, self.tool, tool_b),
            ])
            .to_string()
        }
    }

    fn key(prompt: &str) -> CacheKey {
        cache_key("ns", "gpt-4o-mini temperature=0", prompt)
    }

    #[test]
    fn volatile_ids_and_metadata_do_not_change_the_key() {
        let base = Conversation::base();
        let other = Conversation {
            ids: [
                "msg-9", "call_XYZ", "call_QRS", "run-777", "tool-8", "tool-9",
            ],
            fingerprint: "fp_ffffffffff",
            tokens: 9000,
            ..Conversation::base()
        };
        assert_ne!(base.prompt(), other.prompt());
        assert_eq!(
            canonical_prompt(&base.prompt()),
            canonical_prompt(&other.prompt())
        );
        assert_eq!(key(&base.prompt()), key(&other.prompt()));
    }

    #[test]
    fn canonical_form_renumbers_and_drops() {
        let canonical = canonical_prompt(&Conversation::base().prompt());
        for gone in [
            "call_abc",
            "call_def",
            "run-123",
            "msg-1",
            "tool-1",
            "fp_0ba0d124f1",
            "usage_metadata",
            "response_metadata",
        ] {
            assert!(!canonical.contains(gone), "{gone} survived in {canonical}");
        }
        // Call ids number 0 and 1 everywhere they appear, in tool_calls, raw calls and results.
        assert_eq!(canonical.matches("\"id\":\"#0\"").count(), 2);
        assert_eq!(canonical.matches("\"tool_call_id\":\"#0\"").count(), 1);
        assert_eq!(canonical.matches("\"tool_call_id\":\"#1\"").count(), 1);
        // The class path at the message's top level is kept.
        assert!(
            canonical.contains("\"id\":[\"langchain\",\"schema\",\"messages\",\"ToolMessage\"]")
        );
        // The canonical text is valid JSON and is its own canonical form.
        let _: Value = serde_json::from_str(&canonical).unwrap();
        assert_eq!(canonical_prompt(&canonical), canonical);
    }

    #[test]
    fn conversation_differences_change_the_key() {
        let base = key(&Conversation::base().prompt());
        let variants = [
            Conversation {
                question: "What's the weather in Rome and London?",
                ..Conversation::base()
            },
            Conversation {
                tool: "get_forecast",
                ..Conversation::base()
            },
            Conversation {
                city: "Lyon",
                ..Conversation::base()
            },
            Conversation {
                result: "30C, sunny",
                ..Conversation::base()
            },
        ];
        let mut keys: Vec<CacheKey> = variants.iter().map(|c| key(&c.prompt())).collect();
        keys.push(base);
        let count = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), count);
    }

    #[test]
    fn call_result_linkage_is_kept() {
        let linked = Conversation::base().prompt();
        // Same calls, same results, but each result now answers the other call.
        let crossed = linked
            .replace("\"tool_call_id\":\"call_abc\"", "\"tool_call_id\":\"TMP\"")
            .replace(
                "\"tool_call_id\":\"call_def\"",
                "\"tool_call_id\":\"call_abc\"",
            )
            .replace("\"tool_call_id\":\"TMP\"", "\"tool_call_id\":\"call_def\"");
        assert_ne!(crossed, linked);
        assert_ne!(key(&crossed), key(&linked));
        // Renaming ids consistently is not a difference.
        let renamed = Conversation {
            ids: [
                "msg-1", "call_def", "call_abc", "run-123", "tool-1", "tool-2",
            ],
            ..Conversation::base()
        };
        assert_eq!(key(&renamed.prompt()), key(&linked));
        // A result pointing at an id no call made differs from one pointing at a real call.
        let dangling = linked.replace(
            "\"tool_call_id\":\"call_def\"",
            "\"tool_call_id\":\"call_zzz\"",
        );
        assert_ne!(key(&dangling), key(&linked));
    }

    #[test]
    fn namespace_and_llm_string_are_part_of_the_key() {
        let prompt = Conversation::base().prompt();
        let k = cache_key("tenant-a", "llm", &prompt);
        assert_ne!(k, cache_key("tenant-b", "llm", &prompt));
        assert_ne!(k, cache_key("tenant-a", "llm2", &prompt));
        // Framing: moving a byte between parts changes the key.
        assert_ne!(cache_key("ab", "c", "p"), cache_key("a", "bc", "p"));
        assert_ne!(cache_key("a", "bc", "p"), cache_key("a", "b", "cp"));
        assert_ne!(cache_key("", "", "x"), cache_key("x", "", ""));
    }

    #[test]
    fn key_is_the_hash_of_the_framed_canonical_text() {
        let prompts = [
            Conversation::base().prompt(),
            "plain text".to_owned(),
            String::new(),
            "[]".to_owned(),
        ];
        for prompt in &prompts {
            let mut bytes = Vec::new();
            for part in ["ns", "llm"] {
                bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
                bytes.extend_from_slice(part.as_bytes());
            }
            bytes.extend_from_slice(canonical_prompt(prompt).as_bytes());
            assert_eq!(cache_key("ns", "llm", prompt), xxh3_128(&bytes));
            // The streaming sink sees the same bytes.
            let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
            put_framed_stream(&mut hasher, "ns");
            put_framed_stream(&mut hasher, "llm");
            write_canonical(prompt, &mut hasher);
            assert_eq!(hasher.digest128(), xxh3_128(&bytes));
        }
    }

    fn put_framed_stream(hasher: &mut xxhash_rust::xxh3::Xxh3Default, part: &str) {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }

    #[test]
    fn plain_prompts_are_hashed_raw() {
        for prompt in [
            "Tell me a joke",
            "",
            "  [not json",
            "{\"a\": 1}",
            "[1, 2]",
            "[{\"a\":1}, 2]",
            "\"str\"",
        ] {
            assert_eq!(canonical_prompt(prompt), prompt);
        }
        assert_ne!(key("Tell me a joke"), key("Tell me a joke "));
        assert_ne!(key("Tell me a joke"), key("Tell me a story"));
        assert_ne!(key(""), key(" "));
    }

    #[test]
    fn object_key_order_and_whitespace_do_not_matter() {
        let compact = json!([human("hi", "m1")]).to_string();
        let reordered = r#"[ {"kwargs": {"id": "m2", "type": "human", "content": "hi"},
            "id": ["langchain", "schema", "messages", "HumanMessage"], "type": "constructor", "lc": 1} ]"#;
        assert_eq!(canonical_prompt(&compact), canonical_prompt(reordered));
        assert_eq!(key(&compact), key(reordered));
        // Array order does matter.
        let swapped_path =
            reordered.replace(r#"["langchain", "schema""#, r#"["schema", "langchain""#);
        assert_ne!(key(&swapped_path), key(reordered));
    }

    #[test]
    fn renumbering_follows_sorted_keys_not_source_order() {
        // Two ids in one object: whichever key is written first, "a_call" sorts first.
        let one = r#"[{"kwargs": {"x": {"b": {"id": "second"}, "a": {"id": "first"}}, "y": {"id": "first"}}}]"#;
        let two = r#"[{"kwargs": {"y": {"id": "first"}, "x": {"a": {"id": "first"}, "b": {"id": "second"}}}}]"#;
        assert_eq!(canonical_prompt(one), canonical_prompt(two));
        assert_eq!(
            canonical_prompt(one),
            r##"[{"kwargs":{"x":{"a":{"id":"#0"},"b":{"id":"#1"}},"y":{"id":"#0"}}}]"##
        );
    }

    #[test]
    fn content_blocks_and_other_id_keys_are_renumbered() {
        let a = r#"[{"lc":1,"type":"constructor","id":["langchain","schema","messages","AIMessage"],
            "kwargs":{"content":[{"type":"text","text":"hi","id":"blk_1"},{"type":"function_call","call_id":"c_9","id":"fc_1"}],
            "tool_call_chunks":[{"id":"c_9","index":0,"name":null,"args":""}],"type":"ai","id":null}}]"#;
        let b = a
            .replace("blk_1", "blk_X")
            .replace("c_9", "c_Q")
            .replace("fc_1", "fc_Z");
        assert_eq!(key(a), key(&b));
        let canonical = canonical_prompt(a);
        assert!(canonical.contains(r##""call_id":"#1""##), "{canonical}");
        assert!(
            canonical.contains(r##"{"args":"","id":"#1","index":0,"name":null}"##),
            "{canonical}"
        );
        // Null ids stay null (the message-level one is dropped anyway).
        let with_null = a.replace(r#""id":"blk_1""#, r#""id":null"#);
        assert!(canonical_prompt(&with_null).contains(r#""id":null,"text":"hi""#));
        assert_ne!(key(&with_null), key(a));
    }

    #[test]
    fn ids_outside_kwargs_are_not_renumbered() {
        let a = r#"[{"lc":1,"type":"not_implemented","id":["x","Y"],"repr":"Y(id='abc')","extra":{"id":"abc"}}]"#;
        let b = a.replace(r#"{"id":"abc"}"#, r#"{"id":"abd"}"#);
        assert_ne!(key(a), key(&b));
    }

    #[test]
    fn escaped_ids_compare_by_their_text() {
        let plain =
            r#"[{"kwargs":{"tool_calls":[{"id":"call_a"}],"x":{"tool_call_id":"call_a"}}}]"#;
        let escaped =
            r#"[{"kwargs":{"tool_calls":[{"id":"call_a"}],"x":{"tool_call_id":"call\u005fa"}}}]"#;
        assert_eq!(canonical_prompt(plain), canonical_prompt(escaped));
        let lone =
            r#"[{"kwargs":{"tool_calls":[{"id":"\\ud800"}],"x":{"tool_call_id":"\ud800"}}}]"#;
        assert!(
            canonical_prompt(lone).contains(r##""tool_call_id":"#1""##),
            "{}",
            canonical_prompt(lone)
        );
    }

    #[test]
    fn numbers_are_kept_as_written() {
        let a = r#"[{"kwargs":{"args":{"n":12345678901234567890123}}}]"#;
        let b = r#"[{"kwargs":{"args":{"n":12345678901234567890124}}}]"#;
        assert_ne!(key(a), key(b));
        assert_eq!(canonical_prompt(a), a);
    }

    #[test]
    fn many_ids_switch_to_the_index_and_stay_consistent() {
        let calls: Vec<(String, String)> = (0..100)
            .map(|i| (format!("call_{i}"), format!("other_{i}")))
            .collect();
        let build = |pick: &dyn Fn(&(String, String)) -> String| {
            let msgs: Vec<Value> = calls
                .iter()
                .map(|c| json!({"kwargs": {"tool_calls": [{"id": pick(c)}], "r": {"tool_call_id": pick(c)}}}))
                .collect();
            Value::Array(msgs).to_string()
        };
        let a = build(&|c| c.0.clone());
        let b = build(&|c| c.1.clone());
        assert_eq!(canonical_prompt(&a), canonical_prompt(&b));
        let canonical = canonical_prompt(&a);
        assert!(canonical
            .contains(r##"{"kwargs":{"r":{"tool_call_id":"#99"},"tool_calls":[{"id":"#99"}]}}"##));
    }

    #[test]
    fn deep_and_garbage_input_never_panics() {
        let deep_ok = format!(
            "[{{\"kwargs\":{}1{}}}]",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert_eq!(canonical_prompt(&deep_ok), deep_ok);
        assert!(parse_messages(&deep_ok).is_some());
        let too_deep = format!(
            "[{{\"kwargs\":{}1{}}}]",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(parse_messages(&too_deep).is_none());
        assert_eq!(canonical_prompt(&too_deep), too_deep);
        let very_deep = "[".repeat(1_000_000);
        assert_eq!(canonical_prompt(&very_deep), very_deep);
        let _ = key(&very_deep);

        let garbage = [
            "[",
            "[{",
            "[{\"",
            "[{\"a\"",
            "[{\"a\":",
            "[{\"a\":1",
            "[{\"a\":1,",
            "[{\"a\":1}",
            "[{\"a\":1},]",
            "[{}",
            "[{\"a\":tru}]",
            "[{\"a\":nul}]",
            "[{\"a\":-}]",
            "[{\"a\":01}]",
            "[{\"a\":1.}]",
            "[{\"a\":1e}]",
            "[{\"a\":\"\\x\"}]",
            "[{\"a\":\"\\u12\"}]",
            "[{\"a\":\"\u{1}\"}]",
            "[{\"a\" 1}]",
            "[{1:1}]",
            "[{}] x",
            "[{}]]",
            "[{\"é\":\"日本\"}]",
            "[{\"a\":\"\\",
            "[{\"a\":\"\\u",
            "\u{feff}[{}]",
        ];
        for text in garbage {
            let canonical = canonical_prompt(text);
            if serde_json::from_str::<Vec<serde_json::Map<String, Value>>>(text).is_err() {
                assert_eq!(canonical, text, "{text:?} should be hashed raw");
            }
            let _ = key(text);
        }
        // Every prefix of a real prompt is handled.
        let prompt = Conversation::base().prompt();
        for (end, _) in prompt.char_indices() {
            let _ = key(&prompt[..end]);
        }
    }

    #[test]
    fn parser_agrees_with_serde_json_on_validity() {
        let texts = [
            r#"[{"a":[1,-2.5e+3,0.0,true,false,null,"s\n\"\u00e9"],"b":{}}]"#,
            r#"[ { "a" : 1 } , { } ]"#,
            "[{\"a\":1}]\n",
            r#"[{"a":1,"a":2}]"#,
            r#"[{"a":+1}]"#,
            r#"[{"a":1e5}]"#,
            r#"[{"a":-0}]"#,
            r#"[{"a":"\/"}]"#,
            "[{\"a\":\"\t\"}]",
        ];
        for text in texts {
            let serde_ok = serde_json::from_str::<Value>(text).is_ok();
            assert_eq!(parse_messages(text).is_some(), serde_ok, "{text}");
        }
    }

    /// Ad-hoc timing: `cargo test --release -p langscale-core cache::key -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand in release"]
    fn time_cache_key_on_a_2kb_prompt() {
        let conversation = Conversation::base();
        let mut prompt = conversation.prompt();
        let mut turns = 0;
        while prompt.len() < 2048 {
            turns += 1;
            let mut value: Value = serde_json::from_str(&prompt).unwrap();
            value
                .as_array_mut()
                .unwrap()
                .push(human(&format!("And tomorrow, turn {turns}?"), "m"));
            prompt = value.to_string();
        }
        let iterations = 200_000u32;
        let start = std::time::Instant::now();
        let mut sink = 0u128;
        for _ in 0..iterations {
            sink ^= cache_key("ns", "llm", std::hint::black_box(&prompt));
        }
        let buffered = start.elapsed() / iterations;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
            put_framed_stream(&mut hasher, "ns");
            put_framed_stream(&mut hasher, "llm");
            write_canonical(std::hint::black_box(&prompt), &mut hasher);
            sink ^= hasher.digest128();
        }
        let streamed = start.elapsed() / iterations;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            let value: Value = serde_json::from_str(std::hint::black_box(&prompt)).unwrap();
            sink ^= u128::from(value.is_array());
        }
        let serde_value = start.elapsed() / iterations;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            let (tree, _) = parse_messages(std::hint::black_box(&prompt)).unwrap();
            sink ^= tree.members.len() as u128;
        }
        let parse_only = start.elapsed() / iterations;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            sink ^= xxh3_128(std::hint::black_box(prompt.as_bytes()));
        }
        let raw = start.elapsed() / iterations;
        println!(
            "prompt {} bytes: cache_key {buffered:?} (parse alone {parse_only:?}), streaming hasher \
             {streamed:?}, serde_json::Value parse alone {serde_value:?}, raw xxh3 {raw:?} ({sink})",
            prompt.len()
        );
    }

    #[test]
    fn tool_arguments_named_id_are_data_not_renumbered() {
        let convo = |order: &str| {
            format!(
                r#"[{{"lc":1,"type":"constructor","id":["langchain","schema","messages","AIMessage"],"kwargs":{{"content":"","type":"ai","tool_calls":[{{"name":"get_order","args":{{"id":"{order}"}},"id":"call_1","type":"tool_call"}}]}}}}]"#
            )
        };
        assert_ne!(
            cache_key("", "m", &convo("ORD-111")),
            cache_key("", "m", &convo("ORD-999"))
        );
        assert!(canonical_prompt(&convo("ORD-111")).contains("ORD-111"));
    }

    fn is_stop(b: u8) -> bool {
        b == b'"' || b == b'\\' || b < 0x20
    }

    proptest::proptest! {
        /// The word-at-a-time scan stops exactly where a byte loop does, at any
        /// offset and in any tail length (stop bytes kept rare, so long runs are scanned).
        #[test]
        fn skip_plain_stops_where_a_byte_loop_does(
            raw in proptest::collection::vec((proptest::prelude::any::<u8>(), 0u8..24), 0..96),
            from in 0usize..96,
        ) {
            let bytes: Vec<u8> = raw
                .iter()
                .map(|&(b, keep)| if keep == 0 || !is_stop(b) { b } else { b'a' })
                .collect();
            let from = from.min(bytes.len());
            let expected = bytes[from..]
                .iter()
                .position(|&b| is_stop(b))
                .map_or(bytes.len(), |i| from + i);
            proptest::prop_assert_eq!(skip_plain(&bytes, from), expected);
        }
    }
}
