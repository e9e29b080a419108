//! Negation and opposites: an odd number of negation cues, antonym pairs ("enable" /
//! "disable"), negating prefixes ("safe" / "unsafe").

use std::collections::HashMap;
use std::sync::OnceLock;

use super::words::GuardWord;
use super::Signature;
use crate::cache::text::{entries, WordList};

impl Signature {
    pub(super) fn read_polarity(&mut self, words: &[GuardWord]) {
        let mut cues = 0u32;
        let table = antonym_table();
        let mut polarity: HashMap<u16, u8> = HashMap::new();
        for w in words {
            if is_negation_cue(&w.folded) {
                cues += 1;
            }
            for form in base_forms(&w.folded) {
                if let Some(hits) = table.get(form.as_str()) {
                    for &(pair, side) in hits {
                        *polarity.entry(pair).or_insert(0) |= side;
                    }
                }
                self.forms.push(form);
            }
        }
        self.negated = cues % 2 == 1;
        self.forms.sort_unstable();
        self.forms.dedup();
        self.polarity = polarity.into_iter().collect();
        self.polarity.sort_unstable();
    }
}

/// Switching on against switching off, `on: word ...` / `off: word ...`.
const DIRECTIONS: &str = include_str!("../../../data/directions.txt");

/// (side bit: 1 on, 2 off; the words separated by spaces).
pub(super) fn direction_rows() -> impl Iterator<Item = (u8, &'static str)> {
    entries(DIRECTIONS)
        .filter_map(|line| line.split_once(':'))
        .filter_map(|(side, words)| match side.trim() {
            "on" => Some((1, words)),
            "off" => Some((2, words)),
            _ => None,
        })
}

fn direction_table() -> &'static HashMap<&'static str, u8> {
    static TABLE: OnceLock<HashMap<&'static str, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        direction_rows()
            .flat_map(|(side, words)| words.split_whitespace().map(move |w| (w, side)))
            .collect()
    })
}

/// The direction of "turn"/"switch" followed within three words by "on" or "off".
fn particle_direction(words: &[GuardWord], i: usize) -> u8 {
    let verb = words.get(i).map(|w| w.folded.as_str());
    if !matches!(
        verb,
        Some("turn" | "turned" | "turning" | "turns" | "switch" | "switched" | "switching")
    ) {
        return 0;
    }
    words
        .iter()
        .skip(i + 1)
        .take(3)
        .find_map(|w| match w.folded.as_str() {
            "on" => Some(1),
            "off" => Some(2),
            _ => None,
        })
        .unwrap_or(0)
}

impl Signature {
    /// Which way the text switches something: bit 1 on ("enable", "turn on"), bit 2 off
    /// ("disable", "turn off", "cancel").
    pub(super) fn read_direction(&mut self, words: &[GuardWord]) {
        let table = direction_table();
        for (i, w) in words.iter().enumerate() {
            self.direction |= particle_direction(words, i);
            if let Some(side) = base_forms(&w.folded)
                .iter()
                .find_map(|f| table.get(f.as_str()))
            {
                self.direction |= side;
            }
        }
    }
}

/// One text only switches on, the other only off.
pub(super) fn switched(a: &Signature, b: &Signature) -> bool {
    matches!((a.direction, b.direction), (1, 2) | (2, 1))
}

/// Words that negate what follows.
static NEGATION_CUES: WordList = WordList::new(include_str!("../../../data/negation-cues.txt"));

/// Pairs of words asking for opposite things, `first second` a line, each in its base form.
pub(super) const ANTONYMS: &str = include_str!("../../../data/antonyms.txt");

/// A word that negates what follows ("not", "never", "doesn't").
pub(super) fn is_negation_cue(t: &str) -> bool {
    NEGATION_CUES.contains(t) || t.ends_with("n't")
}

/// The negation cues in file order.
#[cfg(test)]
pub(super) fn negation_cues() -> impl Iterator<Item = &'static str> {
    NEGATION_CUES.entries()
}

/// The antonym pairs in file order.
pub(super) fn antonym_pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    entries(ANTONYMS).filter_map(|line| line.split_once(' '))
}

/// Base form of a word -> the antonym pairs it belongs to, with its side (1 or 2).
pub(super) fn antonym_table() -> &'static HashMap<String, Vec<(u16, u8)>> {
    static TABLE: OnceLock<HashMap<String, Vec<(u16, u8)>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: HashMap<String, Vec<(u16, u8)>> = HashMap::new();
        for (i, (a, b)) in antonym_pairs().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            table.entry(a.to_owned()).or_default().push((i, 1));
            table.entry(b.to_owned()).or_default().push((i, 2));
        }
        table
    })
}

/// only the other member.
pub(super) fn antonyms(a: &Signature, b: &Signature) -> bool {
    a.polarity.iter().any(|&(pair, side_a)| {
        side_a != 3
            && b.polarity
                .iter()
                .any(|&(p, side_b)| p == pair && side_b != 3 && side_b != side_a)
    })
}

/// The word itself and what it may be an inflection of ("enabled" -> "enable", "enabl").
pub(super) fn base_forms(word: &str) -> Vec<String> {
    let mut out = vec![word.to_owned()];
    if !word.chars().all(char::is_alphabetic) {
        return out;
    }
    let n = word.chars().count();
    let mut push = |s: String| {
        if s.chars().count() >= 2 && !out.contains(&s) {
            out.push(s);
        }
    };
    if n > 3 {
        if let Some(s) = word.strip_suffix("ies") {
            push(format!("{s}y"));
        }
        if let Some(s) = word.strip_suffix("es") {
            push(s.to_owned());
        }
        if let Some(s) = word.strip_suffix('s') {
            if !s.ends_with('s') {
                push(s.to_owned());
            }
        }
        if let Some(s) = word.strip_suffix("ed") {
            push(s.to_owned());
            push(format!("{s}e"));
            push(undouble(s));
        }
        if let Some(s) = word.strip_suffix('d') {
            if s.ends_with('e') {
                push(s.to_owned());
            }
        }
    }
    if n > 5 {
        if let Some(s) = word.strip_suffix("ing") {
            push(s.to_owned());
            push(format!("{s}e"));
            push(undouble(s));
        }
    }
    out
}

pub(super) fn undouble(s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    let n = c.len();
    if n >= 2 && c[n - 1] == c[n - 2] {
        c.pop();
    }
    c.into_iter().collect()
}

/// Negating prefixes and the shortest word they may negate ("unsafe", "disconnect",
/// "invalid", "nonblocking", "deactivate").
const OPPOSITE_PREFIXES: &[(&str, usize)] = &[
    ("un", 3),
    ("dis", 4),
    ("non", 3),
    ("in", 5),
    ("im", 5),
    ("il", 5),
    ("ir", 5),
    ("de", 5),
];

/// `a` has a word that `b` has only with a negating prefix ("safe" / "unsafe").
pub(super) fn opposite_prefix(a: &Signature, b: &Signature) -> bool {
    let has = Signature::has_form;
    b.forms.iter().any(|t| {
        OPPOSITE_PREFIXES.iter().any(|&(prefix, min)| {
            let Some(rest) = t.strip_prefix(prefix) else {
                return false;
            };
            rest.chars().count() >= min
                && rest.chars().all(char::is_alphabetic)
                && has(a, rest)
                && !has(b, rest)
                && !has(a, t)
        })
    })
}
