//! Input token counts for chat messages, used to reserve limiter tokens and budget before a
//! call: exact with OpenAI's `o200k_base` / `cl100k_base` encodings where the model's
//! tokenizer is known (the vocabularies are compiled into the binary by `tiktoken-rs`; nothing
//! is downloaded), and the chars/4 estimate otherwise.
//!
//! A chat's count follows OpenAI's cookbook (`num_tokens_from_messages`): 3 tokens per message,
//! plus the tokens of its role and content, plus 3 priming the reply. The estimate is the one
//! langscale used before exact counts: content characters / 4, plus 4 per message.
//!
//! Text is encoded in segments cut at whitespace other than a line break that follows a
//! non-whitespace character: the encodings' pre-tokenising regexes never put such a space in
//! the same piece as what precedes it (only line breaks join a piece of punctuation), so the sum
//! over segments equals the count of the whole text. A run of more than
//! [`MAX_RUN_BYTES`] with no such place (a base64 blob, a line of 10,000 spaces) is cut anyway,
//! which may shift the count by a token at each forced cut: the encoder takes superlinear time
//! on one long piece, and overflows the regex engine's stack (a panic) on a very long one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// Tokens OpenAI adds to every message of a chat (its cookbook's `tokens_per_message`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens priming the reply (`<|start|>assistant<|message|>`), once per chat.
pub const REPLY_PRIMING: u64 = 3;
/// Per message in the estimate used where no encoding is known.
pub const ESTIMATE_PER_MESSAGE: u64 = 4;
/// Longest stretch encoded in one go without a safe cut (see the module doc).
pub const MAX_RUN_BYTES: usize = 512;
/// Safe cuts are taken once a segment is at least this long (fewer, longer calls).
const SEGMENT_BYTES: usize = 4096;

/// A BPE encoding whose vocabulary ships inside the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1/o3/o4.
    O200kBase,
    /// GPT-4 and GPT-3.5.
    Cl100kBase,
}

/// Model-name prefixes and their encodings, first match wins (so `gpt-4o` before `gpt-4`).
const MODEL_PREFIXES: &[(&str, Encoding)] = &[
    ("gpt-4o", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4", Encoding::O200kBase),
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5", Encoding::Cl100kBase),
    // Azure's spelling of the deployment names.
    ("gpt-35", Encoding::Cl100kBase),
];

impl Encoding {
    /// The encoding of a model by name, or None where it is not known. Case is ignored, and so
    /// are a fine-tune's wrapping (`ft:gpt-4o-mini:org::id`) and a provider path
    /// (`openai/gpt-4o`). The o-series match only as a whole word (`o3`, `o3-mini`).
    pub fn for_model(model: &str) -> Option<Self> {
        let mut name = model.trim().to_ascii_lowercase();
        if let Some(rest) = name.strip_prefix("ft:") {
            name = rest.split(':').next().unwrap_or(rest).to_owned();
        }
        let base = name.rsplit('/').next().unwrap_or(&name);
        MODEL_PREFIXES.iter().find_map(|&(prefix, encoding)| {
            let rest = base.strip_prefix(prefix)?;
            let whole_word = !prefix.starts_with('o') || rest.is_empty() || rest.starts_with('-');
            whole_word.then_some(encoding)
        })
    }

    /// The encoding of this name as OpenAI and tiktoken spell it (`o200k_base`,
    /// `cl100k_base`), or None.
    pub fn from_name(name: &str) -> Option<Self> {
        [Encoding::O200kBase, Encoding::Cl100kBase]
            .into_iter()
            .find(|e| e.name() == name)
    }

    /// The encoding's name as OpenAI and tiktoken spell it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// Tokens in `text` (special-token names such as `<|endoftext|>` count as plain text), or
    /// None if the encoder could not be used. The first call for an encoding builds it (about
    /// 0.1 s, once per process, whichever thread gets there first).
    pub fn count(self, text: &str) -> Option<u64> {
        let bpe = self.encoder()?;
        // tiktoken-rs unwraps its regex engine's result; a failure we did not foresee must
        // not take the process down, so it becomes "unknown" and the caller estimates.
        catch_unwind(AssertUnwindSafe(|| {
            Segments::new(text, SEGMENT_BYTES)
                .map(|segment| bpe.encode_ordinary(segment).len() as u64)
                .sum()
        }))
        .ok()
    }

    fn encoder(self) -> Option<&'static CoreBPE> {
        static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
        static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
        match self {
            Encoding::O200kBase => O200K.get_or_init(|| tiktoken_rs::o200k_base().ok()),
            Encoding::Cl100kBase => CL100K.get_or_init(|| tiktoken_rs::cl100k_base().ok()),
        }
        .as_ref()
    }
}

/// Input tokens of a chat for `model`: exact where its encoding is known, else estimated.
/// Messages are `(role, content)`.
pub fn count_messages<R: AsRef<str>, C: AsRef<str>>(
    model: Option<&str>,
    messages: &[(R, C)],
) -> u64 {
    model
        .and_then(Encoding::for_model)
        .and_then(|encoding| count_exact(encoding, messages))
        .unwrap_or_else(|| estimate_messages(messages))
}

/// The cookbook's count with `encoding`; None if the encoder could not be used.
pub fn count_exact<R: AsRef<str>, C: AsRef<str>>(
    encoding: Encoding,
    messages: &[(R, C)],
) -> Option<u64> {
    let mut total = REPLY_PRIMING;
    for (role, content) in messages {
        total = total
            .saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(encoding.count(role.as_ref())?)
            .saturating_add(encoding.count(content.as_ref())?);
    }
    Some(total)
}

/// The estimate where no encoding is known: content characters / 4, plus 4 per message
/// (roles are not counted).
pub fn estimate_messages<R, C: AsRef<str>>(messages: &[(R, C)]) -> u64 {
    let chars: u64 = messages
        .iter()
        .map(|(_, content)| content.as_ref().chars().count() as u64)
        .sum();
    (chars / 4).saturating_add(ESTIMATE_PER_MESSAGE.saturating_mul(messages.len() as u64))
}

/// Cuts text into pieces whose counts add up to the whole's (see the module doc).
struct Segments<'a> {
    rest: &'a str,
    /// Safe cuts are taken once a segment is at least this long.
    target: usize,
}

impl<'a> Segments<'a> {
    fn new(text: &'a str, target: usize) -> Self {
        Self { rest: text, target }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (head, tail) = self.rest.split_at(cut_point(self.rest, self.target));
        self.rest = tail;
        Some(head)
    }
}

/// Where the first segment of a non-empty `text` ends: the first safe cut at or after
/// `target` bytes, or a forced one `MAX_RUN_BYTES` after the last safe one, or the end.
/// Always past the first character, so segmenting makes progress.
fn cut_point(text: &str, target: usize) -> usize {
    let mut run_start = 0;
    let mut after_whitespace = true;
    for (i, c) in text.char_indices() {
        let whitespace = c.is_whitespace();
        // Not before a line break: punctuation takes the line breaks after it into its piece.
        let cut_here = whitespace && !after_whitespace && c != '\n' && c != '\r';
        if i > 0 && cut_here {
            if i >= target {
                return i;
            }
            run_start = i;
        } else if i - run_start >= MAX_RUN_BYTES {
            return i;
        }
        after_whitespace = whitespace;
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chat(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn models_map_to_their_encodings() {
        use Encoding::{Cl100kBase as Cl, O200kBase as O};
        let cases = [
            ("gpt-4o", Some(O)),
            ("gpt-4o-mini-2024-07-18", Some(O)),
            ("chatgpt-4o-latest", Some(O)),
            ("gpt-4.1-nano", Some(O)),
            ("gpt-4.5-preview", Some(O)),
            ("gpt-5", Some(O)),
            ("gpt-5.1-codex", Some(O)),
            ("o1", Some(O)),
            ("o1-preview", Some(O)),
            ("o3-mini", Some(O)),
            ("o4-mini-2025-04-16", Some(O)),
            ("GPT-4O", Some(O)),
            ("  openai/gpt-4o  ", Some(O)),
            ("ft:gpt-4o-mini-2024-07-18:acme::abc123", Some(O)),
            ("gpt-4", Some(Cl)),
            ("gpt-4-turbo", Some(Cl)),
            ("gpt-4-0613", Some(Cl)),
            ("gpt-3.5-turbo", Some(Cl)),
            ("gpt-35-turbo", Some(Cl)),
            ("claude-3-5-sonnet", None),
            ("llama3", None),
            ("o3x", None),
            ("olmo-7b", None),
            ("", None),
            ("ft:", None),
            ("/", None),
        ];
        for (model, want) in cases {
            assert_eq!(Encoding::for_model(model), want, "{model:?}");
        }
    }

    // Reference counts from OpenAI's `tiktoken` package (computed once, by hand, with
    // `tiktoken.get_encoding(name).encode_ordinary(text)`; tiktoken is not a dependency).
    #[test]
    fn counts_match_tiktoken() {
        let cases = [
            (Encoding::O200kBase, "Hello, world!", 4),
            (Encoding::Cl100kBase, "Hello, world!", 4),
            (
                Encoding::O200kBase,
                "What is the weather in Paris today?",
                8,
            ),
            (
                Encoding::Cl100kBase,
                "What is the weather in Paris today?",
                8,
            ),
            (Encoding::O200kBase, "", 0),
            (Encoding::Cl100kBase, "<|endoftext|>", 7),
        ];
        for (encoding, text, want) in cases {
            assert_eq!(encoding.count(text), Some(want), "{encoding:?} {text:?}");
        }
    }

    #[test]
    fn a_chat_adds_the_cookbook_overhead() {
        let messages = chat(&[("system", "You are terse."), ("user", "Hello, world!")]);
        let enc = Encoding::O200kBase;
        let parts: u64 = ["system", "You are terse.", "user", "Hello, world!"]
            .iter()
            .map(|t| enc.count(t).unwrap_or(0))
            .sum();
        assert_eq!(count_messages(Some("gpt-4o"), &messages), parts + 2 * 3 + 3);
        assert_eq!(count_messages::<&str, &str>(Some("gpt-4o"), &[]), 3);
    }

    #[test]
    fn unknown_models_are_estimated() {
        let messages = chat(&[("user", "abcdefgh"), ("assistant", "é")]);
        // 9 content characters (not bytes) / 4 = 2, plus 4 per message.
        assert_eq!(count_messages(Some("claude-3"), &messages), 2 + 8);
        assert_eq!(count_messages(None, &messages), 2 + 8);
        assert_eq!(estimate_messages::<&str, &str>(&[]), 0);
    }

    #[test]
    fn long_unbroken_runs_do_not_overflow_the_regex_stack() {
        // A million spaces before a letter overflows fancy-regex's stack in one call.
        let text = format!("{}x", " ".repeat(1 << 20));
        let n = Encoding::O200kBase.count(&text).unwrap_or(0);
        // tiktoken counts 2,050 tokens for 2^18 spaces and an x; forced cuts shift that by a
        // token each at most.
        assert!(n > 7_000 && n < 10_000, "{n}");
        let letters = "a".repeat(1 << 20);
        let n = Encoding::Cl100kBase.count(&letters).unwrap_or(0);
        assert!(n > 100_000 && n < 180_000, "{n}");
    }

    #[test]
    fn segments_cover_the_text_and_cut_only_where_allowed() {
        let text = format!("{} {}", "word ".repeat(2000), "z".repeat(3000));
        let segments: Vec<&str> = Segments::new(&text, SEGMENT_BYTES).collect();
        assert_eq!(segments.concat(), text);
        assert!(segments.len() > 3);
        for s in &segments {
            assert!(s.len() <= SEGMENT_BYTES + MAX_RUN_BYTES, "{}", s.len());
        }
    }

    fn prose() -> impl Strategy<Value = String> {
        // Words, punctuation, digits, accents, line breaks and other whitespace: text with
        // places to cut and places that look like one but are not (a line break after "!?").
        let word = prop::sample::select(vec![
            "the",
            "Weather",
            "in",
            "Paris",
            "1234",
            "3.14",
            "naïve",
            "日本語",
            "don't",
            "it's",
            "!?",
            "tool_call",
            "{\"a\": 1}",
            "😀",
            "x/y",
            "'s",
            "\u{301}",
            "",
        ]);
        let gap = prop::sample::select(vec![" ", " ", " ", "\n", "\r\n", "\t", "  ", "\u{a0}", ""]);
        prop::collection::vec((word, gap), 0..3000)
            .prop_map(|parts| parts.into_iter().flat_map(|(w, g)| [w, g]).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn segmented_counts_equal_whole_counts(text in prose()) {
            for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
                let bpe = encoding.encoder().expect("embedded vocabulary loads");
                let whole = bpe.encode_ordinary(&text).len() as u64;
                prop_assert_eq!(encoding.count(&text), Some(whole));
                // Cut at every place the rule allows, not only past SEGMENT_BYTES.
                let finest: u64 = Segments::new(&text, 1)
                    .map(|segment| bpe.encode_ordinary(segment).len() as u64)
                    .sum();
                prop_assert_eq!(finest, whole);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_text_counts_without_panicking(
            model in prop::sample::select(vec!["gpt-4o", "gpt-4", "mystery", ""]),
            messages in prop::collection::vec((any::<String>(), any::<String>()), 0..6),
        ) {
            let n = count_messages(Some(model), &messages);
            prop_assert!(n >= 3 || model == "mystery" || model.is_empty());
        }

        #[test]
        fn appending_a_message_never_lowers_the_count(
            model in prop::sample::select(vec!["gpt-4o", "gpt-3.5-turbo", "mystery"]),
            mut messages in prop::collection::vec((any::<String>(), any::<String>()), 0..5),
            extra in (any::<String>(), any::<String>()),
        ) {
            let before = count_messages(Some(model), &messages);
            messages.push(extra);
            let after = count_messages(Some(model), &messages);
            prop_assert!(after > before, "{} then {}", before, after);
        }
    }
}
