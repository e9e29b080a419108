//! Names: capitalised words that their place in the sentence does not explain, codes ("S24",
//! "C++"), one typo tolerated; the same template about another thing ("capital of canada" /
//! "population of canada"); two names related by other words.

use super::numbers::{canonical_unit, spelled_number};
use super::order::is_coordinator;
use super::polarity::is_negation_cue;
use super::words::{same_name, typo_of, GuardWord};
use super::Signature;
use crate::cache::text::{is_filler, is_function_word, stem, WordList};

impl Signature {
    pub(super) fn read_entities(&mut self, words: &[GuardWord]) {
        for (i, w) in words.iter().enumerate() {
            let prev = i.checked_sub(1).and_then(|p| words.get(p));
            match entity_kind(w, prev) {
                Some(EntityKind::Strong) => self.entities.push(w.folded.clone()),
                Some(EntityKind::Weak) => self.weak_entities.push(w.folded.clone()),
                None => {}
            }
        }
        self.entities.sort_unstable();
        self.entities.dedup();
        self.weak_entities.sort_unstable();
        self.weak_entities.dedup();
        let strong = &self.entities;
        self.weak_entities
            .retain(|w| strong.binary_search(w).is_err());
    }

    /// Every name of each text is in the other; a weak name may be missing when the other text
    /// names nothing in its place.
    pub(super) fn names_appear_in(&self, other: &Signature) -> bool {
        let all_in = |names: &[String], sig: &Signature| {
            names
                .iter()
                .all(|e| sig.has_form(e) || sig.tokens.iter().any(|t| same_name(e, t)))
        };
        all_in(&self.entities, other)
            && all_in(&other.entities, self)
            && (all_in(&self.weak_entities, other) || all_in(&other.weak_entities, self))
    }

    /// How many separate names or numbers the text holds ("MacBook Air" and "Pixel 8" are one
    /// each; "Lisbon ... Dublin" two).
    pub(super) fn name_groups(&self) -> usize {
        let mut groups = 0;
        let mut inside = false;
        for t in &self.sequence {
            let name = self.entities.contains(t)
                || t.starts_with(|c: char| c.is_ascii_digit())
                || spelled_number(t).is_some();
            if name && !inside {
                groups += 1;
            }
            inside = name;
        }
        groups
    }

    /// Two short texts about the same two or more names or numbers, each with a content word
    /// the other lacks: "Is Dublin bigger than Lisbon?" / "Is Lisbon the capital of Dublin?".
    /// With several names the names dominate the similarity, so the words relating them
    /// must agree.
    pub(super) fn relation_differs(&self, other: &Signature) -> bool {
        if self.sequence.is_empty() || other.sequence.is_empty() {
            return false;
        }
        if self.name_groups() < 2 || other.name_groups() < 2 {
            return false;
        }
        let content = |sig: &Signature| -> Vec<String> {
            sig.sequence
                .iter()
                .filter(|t| {
                    t.as_str() != "'s"
                        && !is_function_word(t)
                        && !is_coordinator(t)
                        && !is_negation_cue(t)
                        && !t.starts_with(|c: char| c.is_ascii_digit())
                        && spelled_number(t).is_none()
                        && !sig.entities.contains(t)
                        && !sig.weak_entities.contains(t)
                })
                .map(|t| stem(t))
                .collect()
        };
        let (a, b) = (content(self), content(other));
        let lacks = |x: &[String], y: &[String]| {
            x.iter().any(|w| !y.iter().any(|v| v == w || typo_of(v, w)))
        };
        lacks(&a, &b) && lacks(&b, &a)
    }

    /// The two texts are the same words but one, swapped for an unrelated content word
    /// ("capital of canada" / "population of canada", "cook rice" / "cook pasta"): the same
    /// template about another thing, even when nothing is capitalised.
    pub(super) fn one_word_swapped(&self, other: &Signature) -> bool {
        let a: Vec<&String> = self.tokens.iter().filter(|t| !is_filler(t)).collect();
        let b: Vec<&String> = other.tokens.iter().filter(|t| !is_filler(t)).collect();
        if a.len() != b.len() || a.len() < 2 {
            return false;
        }
        let diff: Vec<(&&String, &&String)> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
        if diff.is_empty() || diff.len() > 2 {
            return false;
        }
        // Two words trading places is an order question, not another slot filler.
        if let [(x1, y1), (x2, y2)] = diff[..] {
            if x1 == y2 && x2 == y1 {
                return false;
            }
        }
        let is_content = |t: &str| {
            let bare = t.split('\'').next().unwrap_or(t);
            !bare.is_empty()
                && !is_function_word(bare)
                && !is_negation_cue(t)
                && !t.starts_with(|c: char| c.is_ascii_digit())
        };
        let same_word = |x: &str, y: &str| {
            stem(x) == stem(y)
                || typo_of(x, y)
                || canonical_unit(x).is_some_and(|u| canonical_unit(y) == Some(u))
        };
        diff.iter().all(|(x, y)| is_content(x) && is_content(y))
            && diff.iter().any(|(x, y)| !same_word(x, y))
    }
}

/// Words that start sentences without naming anything: question words, auxiliaries, pronouns,
/// determiners, conjunctions, courtesy, the common imperatives of requests and the words that
/// often open a terse query.
pub(super) static SENTENCE_STARTERS: WordList =
    WordList::new(include_str!("../../../data/sentence-starters.txt"));

pub(super) fn is_sentence_starter(word: &str) -> bool {
    SENTENCE_STARTERS.contains(word)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntityKind {
    Strong,
    Weak,
}

/// Whether `w` names something: a capitalised word that its sentence position does not
/// explain, or a word with inner capitals, digits among letters, or `+`/`#` ("iPhone", "S24",
/// "C++"); a capitalised sentence opener that is not a common word is a weak name.
pub(super) fn entity_kind(w: &GuardWord, prev: Option<&GuardWord>) -> Option<EntityKind> {
    let t = w.original.as_str();
    let first = t.chars().next()?;
    if first.is_ascii_digit() {
        // Numbers are compared as numbers; a code like "4k60" is a name.
        let code = t
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
            .chars()
            .any(|c| c.is_ascii_digit());
        return code.then_some(EntityKind::Strong);
    }
    if matches!(w.folded.as_str(), "i" | "i'm" | "i've" | "i'd" | "i'll") {
        return None;
    }
    let has_alpha = t.chars().any(char::is_alphabetic);
    let has_digit = t.chars().any(|c| c.is_ascii_digit());
    if (has_alpha && has_digit) || t.contains(['+', '#']) {
        return Some(EntityKind::Strong);
    }
    let inner_upper = t.chars().skip(1).any(char::is_uppercase);
    let all_upper = t
        .chars()
        .filter(|c| c.is_alphabetic())
        .all(char::is_uppercase);
    if inner_upper && !all_upper {
        return Some(EntityKind::Strong); // "iPhone", "MacBook", "macOS"
    }
    if !first.is_uppercase() {
        return None;
    }
    // "Hey, What's ..." / "Please Tell me ...": courtesy before the real start.
    let starts_sentence = w.sentence_start
        || prev.is_some_and(|p| {
            p.sentence_start
                && matches!(
                    p.folded.as_str(),
                    "hey" | "hi" | "hello" | "please" | "ok" | "okay" | "so" | "well"
                )
        });
    if starts_sentence {
        let f = w.folded.as_str();
        let common = is_sentence_starter(f)
            || (f.len() >= 6 && (f.ends_with("ing") || f.ends_with("ly")))
            || (f.ends_with("'s") && is_sentence_starter(f.trim_end_matches("'s")));
        return (!common).then_some(EntityKind::Weak);
    }
    Some(EntityKind::Strong)
}
