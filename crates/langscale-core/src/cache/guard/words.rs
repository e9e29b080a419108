//! Words as the guard sees them: the embedder's tokens (see `text`) with their sentence
//! position, what separates them, possessives split off and hyphenated words in parts; and
//! the typo tests names and words are compared with.

use crate::cache::text::{fold, spans};

#[derive(Debug, Clone)]
pub(super) struct GuardWord {
    /// As typed, possessive "'s" removed.
    pub(super) original: String,
    /// Lowercased and accent-folded.
    pub(super) folded: String,
    /// First word of a sentence (start of text, or after `.`, `!`, `?`, `:`, `;`, a newline).
    pub(super) sentence_start: bool,
    /// Text between the previous word and this one.
    pub(super) lead: String,
    /// The first character after this word, if not a word character (for "5%").
    pub(super) trail: Option<char>,
    /// Written with a possessive "'s" ("Bob's").
    pub(super) possessive: bool,
}

pub(super) fn guard_words(text: &str) -> Vec<GuardWord> {
    let spans = spans(text);
    let mut out: Vec<GuardWord> = Vec::with_capacity(spans.len() + 4);
    for (si, span) in spans.iter().enumerate() {
        if span.text.is_empty() {
            continue;
        }
        let trail = spans.get(si + 1).and_then(|n| n.lead.chars().next());
        let sentence_start = si == 0
            || span
                .lead
                .chars()
                .any(|c| matches!(c, '.' | '!' | '?' | ':' | ';' | '\n'));
        let mut text = span.text.replace('\u{2019}', "'");
        let mut possessive = false;
        for suffix in ["'s", "'S"] {
            if let Some(stem) = text.strip_suffix(suffix) {
                if !stem.is_empty() {
                    text = stem.to_owned();
                    possessive = true;
                }
            }
        }
        // Hyphenated words are compared part by part ("Wi-Fi", "2024-05-01", "non-blocking").
        let parts: Vec<&str> = text
            .split(['-', '\u{2010}', '\u{2011}'])
            .filter(|p| !p.is_empty())
            .collect();
        let n_parts = parts.len();
        for (pi, part) in parts.into_iter().enumerate() {
            let folded = fold(part);
            if folded.is_empty() {
                continue;
            }
            out.push(GuardWord {
                original: part.to_owned(),
                folded,
                sentence_start: sentence_start && pi == 0,
                // Inner parts of "2-5" follow a hyphen, not a minus sign.
                lead: if pi == 0 {
                    span.lead.clone()
                } else {
                    String::new()
                },
                trail: if pi + 1 == n_parts { trail } else { Some('-') },
                possessive: possessive && pi + 1 == n_parts,
            });
        }
    }
    out
}

/// `entity` is written as `token`: equal, or one typo away. Names of 6+ letters allow any
/// one edit but keep their first letter ("Gambia" is not a typo of "Zambia"); names of 4-5
/// letters allow only a swap of neighbouring letters ("Olso"), as one substituted letter
/// often makes another real name ("Iran" / "Iraq", "Rome" / "Rose").
pub(super) fn same_name(entity: &str, token: &str) -> bool {
    if entity == token {
        return true;
    }
    // One edit changes the length by at most one character (4 bytes); skip the rest cheaply.
    if entity.len().abs_diff(token.len()) > 4 {
        return false;
    }
    let e: Vec<char> = entity.chars().collect();
    let t: Vec<char> = token.chars().collect();
    if e.len() < 4 || !e.iter().all(|c| c.is_alphabetic()) || !t.iter().all(|c| c.is_alphabetic()) {
        return false;
    }
    if e.len() == t.len() && swapped_neighbours(&e, &t) {
        return true;
    }
    e.len() >= 6
        && t.len() >= 5
        && e.len().abs_diff(t.len()) <= 1
        && e.first() == t.first()
        && osa_distance_at_most_one(&e, &t)
}

/// `b` is `a` with two neighbouring letters swapped.
pub(super) fn swapped_neighbours(a: &[char], b: &[char]) -> bool {
    let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) else {
        return false;
    };
    i + 1 < a.len()
        && a.len() == b.len()
        && a[i] == b[i + 1]
        && a[i + 1] == b[i]
        && a[i + 2..] == b[i + 2..]
}

/// Two ordinary words one typo apart (4+ letters).
pub(super) fn typo_of(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    a.len().min(b.len()) >= 4 && a.len().abs_diff(b.len()) <= 1 && osa_distance_at_most_one(&a, &b)
}

/// Optimal-string-alignment distance <= 1, in linear time.
pub(super) fn osa_distance_at_most_one(a: &[char], b: &[char]) -> bool {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    match (a.len(), b.len()) {
        (0, 0) => true,
        (la, lb) if la == lb => {
            a[1..] == b[1..] || (la >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
        (la, lb) if la == lb + 1 => a[1..] == *b,
        (la, lb) if lb == la + 1 => b[1..] == *a,
        _ => false,
    }
}
