//! Numbers and units: "10 km" is not "12 km" nor "10 mi"; "five" is 5, "3rd" is "third",
//! "1,000" is 1000; operators ("5 + 3" / "5 - 3") must agree.

use super::words::{same_name, GuardWord};
use super::Signature;
use crate::cache::text::{entries, spans};
use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Quantity {
    pub(super) value: String,
    pub(super) unit: Option<&'static str>,
}

impl Signature {
    pub(super) fn read_numbers(&mut self, words: &[GuardWord]) {
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            if w.folded == "one" {
                self.soft_ones += 1;
            }
            if let Some(mut q) = number_of(words, i) {
                // "twenty-five" / "twenty five": a tens word followed by a unit word.
                if let (Some(tens), Some(next)) = (spelled_tens(&w.folded), words.get(i + 1)) {
                    let ones = match next.folded.as_str() {
                        "one" => Some(1),
                        other => spelled_ones(other),
                    };
                    if let Some(ones) = ones {
                        q.value = (tens + ones).to_string();
                        i += 1;
                    }
                }
                if q.unit.is_none() {
                    q.unit = words.get(i + 1).and_then(|n| canonical_unit(&n.folded));
                }
                self.numbers.push(q);
            }
            if let Some(u) = canonical_unit(&w.folded) {
                if is_measure_unit(u) {
                    self.units.push((u, w.folded.clone()));
                }
            }
            i += 1;
        }
        self.numbers
            .sort_unstable_by(|x, y| (&x.value, x.unit).cmp(&(&y.value, y.unit)));
        self.units.sort_unstable();
        self.units.dedup_by(|x, y| x.0 == y.0);
    }

    /// Numbers match as multisets; a number may carry a unit in one text and none in the
    /// other, but not two different units.
    pub(super) fn numbers_match(&self, other: &Signature) -> bool {
        // `numbers` is sorted by value: pair them group by group, so a long text costs
        // O(n log n), not O(n^2).
        let (a, b) = (&self.numbers, &other.numbers);
        let (mut i, mut j) = (0, 0);
        let (mut left, mut right): (Vec<&Quantity>, Vec<&Quantity>) = (Vec::new(), Vec::new());
        while i < a.len() || j < b.len() {
            let value = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.value.as_str().min(y.value.as_str()),
                (Some(x), None) => x.value.as_str(),
                (None, Some(y)) => y.value.as_str(),
                (None, None) => break,
            };
            let ga = group(a, &mut i, value);
            let gb = group(b, &mut j, value);
            let (l, r) = pair_units(ga, gb);
            left.extend(l);
            right.extend(r);
        }
        // What is left unpaired may only be 1s that the other text says as "one".
        let unpaired_ones = |rest: &[&Quantity], soft: u32| {
            rest.iter().all(|q| q.value == "1") && rest.len() as u32 <= soft
        };
        unpaired_ones(&left, other.soft_ones) && unpaired_ones(&right, self.soft_ones)
    }

    /// Each unit of `self` is named by `other` too, perhaps with a typo ("kilmoetres").
    pub(super) fn units_appear_in(&self, other: &Signature) -> bool {
        self.units.iter().all(|(unit, word)| {
            other.units.iter().any(|(u, _)| u == unit)
                || other.tokens.iter().any(|t| same_name(word, t))
        })
    }
}

/// The quantities with `value` at `*at` in the value-sorted `list`, advancing `*at` past them.
pub(super) fn group<'a>(list: &'a [Quantity], at: &mut usize, value: &str) -> &'a [Quantity] {
    let start = *at;
    while list.get(*at).is_some_and(|q| q.value == value) {
        *at += 1;
    }
    list.get(start..*at).unwrap_or(&[])
}

/// Pair quantities of one value, equal units first, then a unit against none; returns those
/// left unpaired on each side.
pub(super) fn pair_units<'a>(
    a: &'a [Quantity],
    b: &'a [Quantity],
) -> (Vec<&'a Quantity>, Vec<&'a Quantity>) {
    let mut left: Vec<&Quantity> = a.iter().collect();
    let mut right: Vec<&Quantity> = b.iter().collect();
    for exact in [true, false] {
        left.retain(|q| {
            let found = right.iter().position(|r| {
                if exact {
                    r.unit == q.unit
                } else {
                    r.unit.is_none() || q.unit.is_none()
                }
            });
            match found {
                Some(k) => {
                    right.swap_remove(k);
                    false
                }
                None => true,
            }
        });
    }
    (left, right)
}

/// The number word `words[i]` says, if any: digits ("1,000", "5.0", "-3", "5km", "3rd") or a
/// spelled number ("twelve"; "one" is counted apart, as it is often a pronoun).
pub(super) fn number_of(words: &[GuardWord], i: usize) -> Option<Quantity> {
    let w = words.get(i)?;
    let t = w.folded.as_str();
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (digits, suffix) = t.split_at(split);
        if suffix.chars().any(|c| c.is_ascii_digit()) {
            return None; // a code like "3d2y": compared as a name, not a number
        }
        // "-5" is negative when the dash opens a word, not in a range like "2-5".
        let negative = w.lead.ends_with('-')
            && match w.lead.chars().rev().nth(1) {
                None => true,
                Some(c) => c.is_whitespace() || c == '(',
            };
        let mut value = normalise_number(digits);
        if negative && value != "0" {
            value.insert(0, '-');
        }
        let unit = if suffix.is_empty() {
            let currency = w.lead.chars().last().and_then(currency_symbol);
            let percent = (w.trail == Some('%')).then_some("%");
            currency.or(percent)
        } else if matches!(suffix, "st" | "nd" | "rd" | "th") {
            Some("ord")
        } else {
            canonical_unit(suffix).or(Some("?"))
        };
        // An unknown suffix ("5x") still fixes the number; keep it distinct from bare numbers.
        let unit = match unit {
            Some("?") => Some(suffix_unit(suffix)),
            u => u,
        };
        return Some(Quantity { value, unit });
    }
    if let Some(n) = spelled_number(t) {
        return Some(Quantity {
            value: n.to_string(),
            unit: None,
        });
    }
    if let Some(n) = spelled_ordinal(t) {
        // "second" after a number is a unit of time ("30 second timeout"), not an ordinal.
        let after_number = i
            .checked_sub(1)
            .and_then(|p| words.get(p))
            .is_some_and(|p| p.folded.starts_with(|c: char| c.is_ascii_digit()));
        if !(t == "second" && after_number) {
            return Some(Quantity {
                value: n.to_string(),
                unit: Some("ord"),
            });
        }
    }
    None
}

/// Interned unknown suffixes: the few that matter are short and ASCII; others collapse to "?".
pub(super) fn suffix_unit(suffix: &str) -> &'static str {
    const KNOWN: &[&str] = &["x", "k", "m", "b", "bn", "p", "v", "e"];
    KNOWN.iter().find(|k| **k == suffix).copied().unwrap_or("?")
}

pub(super) fn currency_symbol(c: char) -> Option<&'static str> {
    match c {
        '$' => Some("usd"),
        '€' => Some("eur"),
        '£' => Some("gbp"),
        '¥' => Some("jpy"),
        '₹' => Some("inr"),
        _ => None,
    }
}

/// "1,000" was joined by the tokeniser; here "007" -> "7", "5.0" -> "5", "5." -> "5".
/// A decimal part with any non-zero digit is kept as written ("3.10" stays, as in versions).
pub(super) fn normalise_number(digits: &str) -> String {
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if frac.is_empty() || frac.chars().all(|c| c == '0') {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    }
}

pub(super) fn spelled_number(t: &str) -> Option<u32> {
    spelled_ones(t).or_else(|| spelled_tens(t)).or(match t {
        "zero" => Some(0),
        "ten" => Some(10),
        "eleven" => Some(11),
        "twelve" => Some(12),
        "thirteen" => Some(13),
        "fourteen" => Some(14),
        "fifteen" => Some(15),
        "sixteen" => Some(16),
        "seventeen" => Some(17),
        "eighteen" => Some(18),
        "nineteen" => Some(19),
        "hundred" => Some(100),
        "thousand" => Some(1000),
        "million" => Some(1_000_000),
        "billion" => Some(1_000_000_000),
        _ => None,
    })
}

/// 2..9 ("one" is soft: see [`Signature::soft_ones`]).
pub(super) fn spelled_ones(t: &str) -> Option<u32> {
    match t {
        "two" => Some(2),
        "three" => Some(3),
        "four" => Some(4),
        "five" => Some(5),
        "six" => Some(6),
        "seven" => Some(7),
        "eight" => Some(8),
        "nine" => Some(9),
        _ => None,
    }
}

pub(super) fn spelled_tens(t: &str) -> Option<u32> {
    match t {
        "twenty" => Some(20),
        "thirty" => Some(30),
        "forty" => Some(40),
        "fifty" => Some(50),
        "sixty" => Some(60),
        "seventy" => Some(70),
        "eighty" => Some(80),
        "ninety" => Some(90),
        _ => None,
    }
}

pub(super) fn spelled_ordinal(t: &str) -> Option<u32> {
    match t {
        "first" => Some(1),
        "second" => Some(2),
        "third" => Some(3),
        "fourth" => Some(4),
        "fifth" => Some(5),
        "sixth" => Some(6),
        "seventh" => Some(7),
        "eighth" => Some(8),
        "ninth" => Some(9),
        "tenth" => Some(10),
        _ => None,
    }
}

/// Measurement units, `canonical: word word ...` a line.
const UNITS: &str = include_str!("../../../data/units.txt");

/// (canonical unit, the words naming it separated by spaces), in file order.
pub(super) fn unit_rows() -> impl Iterator<Item = (&'static str, &'static str)> {
    entries(UNITS)
        .filter_map(|line| line.split_once(':'))
        .map(|(unit, words)| (unit.trim(), words))
}

/// The canonical unit a word names ("kilometres" -> "km"), if it is one.
pub(crate) fn canonical_unit(word: &str) -> Option<&'static str> {
    static TABLE: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            unit_rows()
                .flat_map(|(unit, words)| words.split_whitespace().map(move |w| (w, unit)))
                .collect()
        })
        .get(word)
        .copied()
}

/// Units that say what is measured even without a number ("5 km in miles"). Time words are not
/// among them: "day", "week" and "second" are too often plain words.
pub(super) fn is_measure_unit(u: &str) -> bool {
    !matches!(
        u,
        "ms" | "s"
            | "min"
            | "h"
            | "day"
            | "week"
            | "month"
            | "year"
            | "am"
            | "pm"
            | "m"
            | "g"
            | "l"
            | "%"
            | "in"
    )
}

/// Runs of operator symbols between words, in order: "+", "-", "<=", "!=", "+=".
pub(super) fn operators(text: &str) -> Vec<String> {
    const OPERATOR: &[char] = &[
        '<', '>', '=', '+', '-', '*', '/', '%', '^', '&', '|', '~', '!',
    ];
    let mut out = Vec::new();
    for span in spans(text) {
        for run in span.lead.split(|c: char| !OPERATOR.contains(&c)) {
            // A lone "!" ends a sentence; it is not "not".
            if !run.is_empty() && run != "!" && run != "!!" {
                out.push(run.to_owned());
            }
        }
    }
    out
}
