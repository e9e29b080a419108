//! Direction: a word that one text goes from and the other goes to ("from Lisbon to Madrid" /
//! "from Madrid to Lisbon", "km to miles" / "miles to km").

use super::numbers::canonical_unit;
use super::words::GuardWord;
use super::Signature;
use crate::cache::text::{is_function_word, stem};

impl Signature {
    pub(super) fn read_roles(&mut self, words: &[GuardWord]) {
        let item = |w: Option<&GuardWord>| -> Option<String> {
            let t = w?.folded.as_str();
            if is_function_word(t) || t.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            Some(canonical_unit(t).map_or_else(|| stem(t), str::to_owned))
        };
        // The word after a marker, past an article or possessive ("from my phone").
        let after = |i: usize| {
            let next = words.get(i + 1)?;
            let skip = matches!(
                next.folded.as_str(),
                "the" | "a" | "an" | "my" | "your" | "our" | "their" | "his" | "her" | "this"
            );
            item(words.get(i + 1 + usize::from(skip)))
        };
        for (i, w) in words.iter().enumerate() {
            match w.folded.as_str() {
                "from" => self.roles.extend(after(i).map(|t| (t, 1))),
                "to" | "into" | "towards" => {
                    self.roles.extend(after(i).map(|t| (t, 2)));
                    let before = i.checked_sub(1).and_then(|p| words.get(p));
                    self.roles.extend(item(before).map(|t| (t, 1)));
                }
                _ => {}
            }
        }
        // One entry per word with the union of its roles.
        self.roles.sort_unstable();
        self.roles.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 |= later.1;
            }
            same
        });
    }
}

/// A word that one text goes from, the other goes to ("from Lisbon to Madrid" / "from Madrid
/// to Lisbon", "km to miles" / "miles to km").
pub(super) fn reversed(a: &Signature, b: &Signature) -> bool {
    a.roles.iter().any(|(w, ma)| {
        let mb = b
            .roles
            .binary_search_by(|(v, _)| v.as_str().cmp(w))
            .map_or(0, |i| b.roles[i].1);
        (*ma == 1 && mb == 2) || (*ma == 2 && mb == 1)
    })
}
