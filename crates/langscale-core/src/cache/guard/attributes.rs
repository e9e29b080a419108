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

/// (class, the words naming it separated by spaces), in file order, of a class file.
pub(super) fn class_rows(file: &'static str) -> impl Iterator<Item = (&'static str, &'static str)> {
    entries(file)
        .filter_map(|line| line.split_once(':'))
        .map(|(class, words)| (class.trim(), words))
}

/// Word -> bit of its class (the first 32 classes of the file).
pub(super) fn class_table(file: &'static str) -> HashMap<&'static str, u32> {
    class_rows(file)
        .enumerate()
        .take(32)
        .flat_map(|(i, (_, words))| words.split_whitespace().map(move |w| (w, 1u32 << i)))
        .collect()
}

/// The bit of `class` in a class file, 0 if it has none.
pub(super) fn class_bit(file: &'static str, class: &str) -> u32 {
    class_rows(file)
        .position(|(c, _)| c == class)
        .and_then(|i| u32::try_from(i).ok())
        .filter(|i| *i < 32)
        .map_or(0, |i| 1 << i)
}

/// Qualifier classes, `class: word ...` a line.
pub(super) const QUALIFIERS: &str = include_str!("../../../data/qualifiers.txt");

fn qualifier_table() -> &'static HashMap<&'static str, u32> {
    static TABLE: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    TABLE.get_or_init(|| class_table(QUALIFIERS))
}

/// Word -> bit of its attribute class.
fn attribute_table() -> &'static HashMap<&'static str, u32> {
    static TABLE: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    TABLE.get_or_init(|| class_table(ATTRIBUTES))
}

fn class_of(class: &str) -> u32 {
    class_bit(ATTRIBUTES, class)
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
        let qualifiers = qualifier_table();
        for w in words {
            let t = w.folded.as_str();
            if let Some(bits) = base_forms(t)
                .iter()
                .find_map(|f| qualifiers.get(f.as_str()))
            {
                self.qualifiers |= bits;
            }
        }
    }
}
