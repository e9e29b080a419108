//! Attributes: what a question asks about a thing ("capital of France" / "population of
//! France", "shipping time" / "shipping cost"). Names and templates may agree while the
//! attribute differs; synonyms ("price" / "cost") share a class.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::polarity::base_forms;
use super::words::GuardWord;
use super::Signature;
use crate::cache::text::entries;

/// Attribute classes, `class: word ...` a line.
const ATTRIBUTES: &str = include_str!("../../../data/attributes.txt");

/// (class, the words naming it separated by spaces), in file order.
pub(super) fn attribute_rows() -> impl Iterator<Item = (&'static str, &'static str)> {
    entries(ATTRIBUTES)
        .filter_map(|line| line.split_once(':'))
        .map(|(class, words)| (class.trim(), words))
}

/// Word -> bit of its class.
fn attribute_table() -> &'static HashMap<&'static str, u32> {
    static TABLE: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        attribute_rows()
            .enumerate()
            .take(32)
            .flat_map(|(i, (_, words))| words.split_whitespace().map(move |w| (w, 1u32 << i)))
            .collect()
    })
}

fn class_of(class: &str) -> u32 {
    attribute_rows()
        .position(|(c, _)| c == class)
        .and_then(|i| u32::try_from(i).ok())
        .filter(|i| *i < 32)
        .map_or(0, |i| 1 << i)
}

impl Signature {
    pub(super) fn read_attributes(&mut self, words: &[GuardWord]) {
        let table = attribute_table();
        let mut previous = "";
        for w in words {
            let t = w.folded.as_str();
            match (previous, t) {
                ("how", "long") => self.attributes |= class_of("duration"),
                ("how", "much") => self.attributes |= class_of("price"),
                _ => {
                    if let Some(bits) = base_forms(t).iter().find_map(|f| table.get(f.as_str())) {
                        self.attributes |= bits;
                    }
                }
            }
            previous = t;
        }
    }
}
