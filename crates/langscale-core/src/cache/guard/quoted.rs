//! Quoted strings: a quoted term of one text must appear, word for word, in the other.

use super::words::guard_words;
use super::Signature;
use crate::cache::text::is_word_char;

impl Signature {
    pub(super) fn quotes_appear_in(&self, other: &Signature) -> bool {
        self.quoted.iter().all(|q| {
            q.is_empty()
                || other
                    .tokens
                    .windows(q.len())
                    .any(|window| window.iter().zip(q).all(|(a, b)| a == b))
        })
    }
}

/// Strings inside "double", “curly”, `backtick` or 'single' quotes (a single quote opens and
/// closes only where the tokenizer would not join it to a word, so apostrophes in "what's"
/// are not quotes). Each is kept as folded words.
/// A quote longer than this is not a quoted term (and the bound keeps the scan linear).
const MAX_QUOTE_CHARS: usize = 400;
/// Quoted strings kept per text: enough for a question, bounded for pasted documents.
const MAX_QUOTES: usize = 32;

pub(super) fn quoted_strings(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let close = match c {
            '"' => Some('"'),
            '\u{201c}' => Some('\u{201d}'),
            '`' => Some('`'),
            '\u{ab}' => Some('\u{bb}'),
            '\'' | '\u{2018}' => {
                let opens = i == 0 || !is_word_char(chars[i - 1]);
                let next_ok = chars.get(i + 1).is_some_and(|n| !n.is_whitespace());
                (opens && next_ok).then_some(if c == '\'' { '\'' } else { '\u{2019}' })
            }
            _ => None,
        };
        let Some(close) = close else {
            i += 1;
            continue;
        };
        let single = matches!(c, '\'' | '\u{2018}');
        let window_end = chars.len().min(i + 1 + MAX_QUOTE_CHARS);
        let end = (i + 1..window_end).find(|&j| {
            chars[j] == close && (!single || !chars.get(j + 1).is_some_and(|&n| is_word_char(n)))
        });
        match end {
            Some(j) => {
                let inner: String = chars[i + 1..j].iter().collect();
                let words: Vec<String> =
                    guard_words(&inner).into_iter().map(|w| w.folded).collect();
                if !words.is_empty() && out.len() < MAX_QUOTES {
                    out.push(words);
                }
                i = j + 1;
            }
            None => i += 1,
        }
    }
    out.sort();
    out.dedup();
    out
}
