//! Long texts (a pasted document, code, logs): they share an answer only when equal up to
//! whitespace, formatting, case and courtesy words.

use super::words::GuardWord;
use crate::cache::text::{fold, is_filler, spans};

/// Texts of more words than this are "long" (a pasted document, code, logs): they share an
/// answer only when equal up to whitespace, formatting, case and courtesy words (chosen by
/// measurement on tests/data/guard-long.jsonl: see examples/guard_eval.rs and the README's quality
/// rows).
pub const LONG_TEXT_WORDS: usize = 32;
/// So are texts of this many sentences or more, and texts of several non-empty lines.
pub const LONG_TEXT_SENTENCES: usize = 2;

pub(super) fn is_long(text: &str, words: &[GuardWord]) -> bool {
    words.len() > LONG_TEXT_WORDS
        || 1 + words
            .iter()
            .filter(|w| w.lead.contains(['.', '!', '?']))
            .count()
            >= LONG_TEXT_SENTENCES
        || text.trim().lines().filter(|l| !l.trim().is_empty()).count() > 1
}
/// A hash of `text` with whitespace, markdown decoration ("**", "- " bullets, "#", "`", ">"),
/// sentence punctuation, case and courtesy words removed; symbols that may change meaning
/// (operators in code: "<", "+=", "!=") are kept.
pub(super) fn long_form(text: &str) -> u64 {
    let mut out = String::with_capacity(text.len());
    let mut line_start = true;
    let push_run = |run: &mut String, out: &mut String| {
        if !run.is_empty()
            && !run
                .chars()
                .all(|c| matches!(c, '.' | ',' | '!' | '?' | ';' | ':'))
        {
            out.push('\u{1}');
            out.push_str(run);
        }
        run.clear();
    };
    let mut previous = String::new();
    for span in spans(text) {
        let mut run = String::new();
        for c in span.lead.chars() {
            if c == '\n' {
                line_start = true;
            }
            let bullet = line_start && matches!(c, '-' | '+' | '\u{2022}');
            if c.is_whitespace() || bullet || matches!(c, '*' | '_' | '`' | '#' | '>' | '\u{2022}')
            {
                push_run(&mut run, &mut out);
            } else {
                run.push(c);
            }
            if !c.is_whitespace() {
                line_start = false;
            }
        }
        push_run(&mut run, &mut out);
        if span.text.is_empty() {
            continue;
        }
        line_start = false;
        let word = fold(&span.text);
        let courtesy = is_filler(&word) || (word == "you" && matches!(previous.as_str(), "thank"));
        if !courtesy {
            out.push('\u{2}');
            out.push_str(&word);
        }
        previous = word;
    }
    xxhash_rust::xxh3::xxh3_64(out.as_bytes())
}
