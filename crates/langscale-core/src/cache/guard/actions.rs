//! Actions: what a request asks to do to a thing ("track my order" / "return my order").
//! The object and the wording may agree while the action differs; synonyms ("follow up" aside,
//! "modify" / "change") share a class (data/actions.txt).

use std::collections::HashMap;
use std::sync::OnceLock;

use super::attributes::{class_bit, class_table};
use super::polarity::base_forms;
use super::words::GuardWord;
use super::Signature;

/// Action classes, `class: word ...` a line.
pub(super) const ACTIONS: &str = include_str!("../../../data/actions.txt");

fn action_table() -> &'static HashMap<&'static str, u32> {
    static TABLE: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    TABLE.get_or_init(|| class_table(ACTIONS))
}

impl Signature {
    pub(super) fn read_actions(&mut self, words: &[GuardWord]) {
        let table = action_table();
        let mut previous = "";
        for w in words {
            let t = w.folded.as_str();
            match (previous, t) {
                ("send" | "bring" | "take" | "give", "back") => {
                    self.actions |= class_bit(ACTIONS, "return");
                }
                ("money", "back") => self.actions |= class_bit(ACTIONS, "refund"),
                ("sign", "up") => self.actions |= class_bit(ACTIONS, "register"),
                _ => {
                    if let Some(bits) = base_forms(t).iter().find_map(|f| table.get(f.as_str())) {
                        self.actions |= bits;
                    }
                }
            }
            previous = t;
        }
    }
}
