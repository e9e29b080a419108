//! Person and modality: "my orders" / "your orders", "can I" / "must I"; a courtesy frame
//! ("can you tell me") asks nothing.

use super::words::GuardWord;
use super::Signature;

/// Grammatical person of a subject pronoun (bit 1 first, 2 second, 4 "he", 8 "she", 16
/// "they").
pub(super) fn subject_person(word: &str) -> u8 {
    match word {
        "i" | "i'm" | "i've" | "i'd" | "i'll" | "we" | "we're" | "we've" => 1,
        "you" | "you're" | "you've" => 2,
        "he" => 4,
        "she" => 8,
        "they" | "they're" => 16,
        _ => 0,
    }
}

/// Grammatical person of a possessive, bits as in [`subject_person`].
pub(super) fn possessive_person(word: &str) -> u8 {
    match word {
        "my" | "mine" | "our" | "ours" => 1,
        "your" | "yours" => 2,
        "his" => 4,
        "her" | "hers" => 8,
        "their" | "theirs" => 16,
        _ => 0,
    }
}

/// Verbs of a courtesy frame ("can you tell me", "could you help"): its modal asks nothing.
pub(super) fn is_request_frame_verb(word: &str) -> bool {
    matches!(
        word,
        "tell" | "show" | "give" | "help" | "explain" | "let" | "describe" | "recommend"
    )
}

impl Signature {
    pub(super) fn read_person(&mut self, words: &[GuardWord]) {
        let folded = |i: usize| words.get(i).map_or("", |w| w.folded.as_str());
        for (i, w) in words.iter().enumerate() {
            let t = w.folded.as_str();
            self.subjects |= subject_person(t);
            self.possessives |= possessive_person(t);
            let modal = match t {
                "can" | "could" | "able" | "allowed" | "possible" | "permitted" => 1,
                // "May" capitalised inside a sentence is the month.
                "may" | "might"
                    if w.sentence_start || !w.original.starts_with(char::is_uppercase) =>
                {
                    1
                }
                "must" | "required" | "require" | "mandatory" | "obliged" | "obligatory"
                | "necessary" => 2,
                "have" | "has" | "need" | "needs" if folded(i + 1) == "to" => 2,
                "should" | "ought" => 4,
                _ => 0,
            };
            // "Can you (please) tell me ...": a courtesy frame, not a question of ability.
            let past_please = if folded(i + 2) == "please" { 3 } else { 2 };
            let frame = folded(i + 1) == "you" && is_request_frame_verb(folded(i + past_please));
            if !frame {
                self.modality |= modal;
            }
        }
    }
}

/// Each side has something the other lacks: "my" / "your", "can" / "must" (but not "my" /
/// nothing: a question without a possessive or modal is compatible with one that has it).
pub(super) fn exclusive(a: u8, b: u8) -> bool {
    a & !b != 0 && b & !a != 0
}
