//! The guard of the semantic cache: the facts of a question that similarity alone would blur
//! (numbers and units, dates, quoted strings, names, negation). Two texts whose [`Signature`]s
//! conflict never share a cached answer, however close their vectors are.

mod actions;
mod attributes;
mod dates;
mod direction;
mod entities;
mod long;
mod numbers;
mod order;
mod person;
mod polarity;
mod quoted;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod words;

pub use long::{LONG_TEXT_SENTENCES, LONG_TEXT_WORDS};

use direction::reversed;
use long::{is_long, long_form};
use numbers::{operators, Quantity};
use order::{order_sequence, order_swapped, possessor_swapped};
use person::exclusive;

/// Each side has a bit the other lacks.
fn exclusive_bits(a: u32, b: u32) -> bool {
    a & !b != 0 && b & !a != 0
}
use polarity::{antonyms, opposite_prefix, switched};
use quoted::quoted_strings;
use words::guard_words;

/// Why a cached answer must not answer a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Different numbers, or the same number in different units.
    Number,
    /// A different month, weekday or relative day.
    Date,
    /// A quoted string of one text is not in the other.
    Quoted,
    /// A name (city, person, product, language...) of one text is not in the other.
    Entity,
    /// One text is negated or asks for the opposite direction ("enable" / "disable").
    Negation,
    /// The same things in an order that changes the meaning ("is 5 greater than 7" / "is 7
    /// greater than 5", "Arsenal beat Chelsea" / "Chelsea beat Arsenal").
    Order,
    /// Another person or modality: "my orders" / "your orders", "can I" / "must I".
    Person,
    /// A long text (a pasted document, code, logs) edited beyond whitespace, formatting, case
    /// and courtesy words: one changed word there may change the answer.
    Edit,
    /// Another attribute of the same thing: "capital" / "population of France", "shipping
    /// time" / "shipping cost"; or another thing by a qualifier ("express shipping").
    Attribute,
    /// Another action on the same thing: "track my order" / "return my order".
    Action,
}

impl Conflict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::Quoted => "quoted",
            Self::Entity => "entity",
            Self::Negation => "negation",
            Self::Order => "order",
            Self::Person => "person",
            Self::Edit => "edit",
            Self::Attribute => "attribute",
            Self::Action => "action",
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a text says that similarity alone must not blur: numbers with units,
/// dates/months/weekdays/relative days, quoted strings, named entities (capitalised words not
/// explained by sentence position, case-insensitive comparison so "berlin" == "Berlin"),
/// negation and opposite-direction cues.
///
/// [`Signature::conflict`] also rejects two texts that are the same words but one content
/// word ("how do i cook rice" / "how do i cook quinoa": a slot filled differently even when
/// nothing is capitalised) and a reversed direction ("from Lisbon to Madrid" / "from Madrid to
/// Lisbon"); both are reported as [`Conflict::Entity`]. One typo is tolerated in names, units
/// and month names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signature {
    /// Numbers (normalised decimal text) with the unit written next to them, if any, sorted.
    numbers: Vec<Quantity>,
    /// How many times "one" appears: it may stand for 1 or be a pronoun.
    soft_ones: u32,
    /// Measurement units named anywhere, canonical ("km", "mi"), with the word as written.
    units: Vec<(&'static str, String)>,
    /// Canonical dates ("m7", "d1", "today", "next week"), sorted, distinct, each with the
    /// word that said it (empty for phrases).
    dates: Vec<(String, String)>,
    /// Quoted strings as folded word sequences.
    quoted: Vec<Vec<String>>,
    /// Folded entity tokens: capitalised inside a sentence, or with inner capitals, digits or
    /// `+`/`#` ("Lisbon", "iPhone", "S24", "C++").
    entities: Vec<String>,
    /// Folded capitalised sentence openers that are not common words ("Lisbon travel tips",
    /// but also "Transfer files ..."): names only if the other text has a name in their place.
    weak_entities: Vec<String>,
    /// Every folded token in order (hyphenated words split), for "appears in the other text".
    tokens: Vec<String>,
    /// Base forms of every token, sorted, distinct: for opposite-prefix and antonym checks.
    forms: Vec<String>,
    /// Words in a direction, sorted by word: role bit 1 after "from" or before "to", bit 2
    /// after "to".
    roles: Vec<(String, u8)>,
    /// Odd number of negation cues.
    negated: bool,
    /// Antonym-pair memberships: (pair index, side bit mask 1 = first word, 2 = second).
    polarity: Vec<(u16, u8)>,
    /// Short texts only: the words in order, courtesy dropped, a possessive as its own "'s"
    /// word ("Bob's manager" / "Bob manager" differ), for [`Signature::order_swapped`].
    sequence: Vec<String>,
    /// Grammatical persons (bit 1 first, 2 second, 4 third) of subject pronouns and of
    /// possessives, apart: "can I" / "can you", "my orders" / "your orders".
    subjects: u8,
    possessives: u8,
    /// Modalities (bit 1 possibility "can", 2 necessity "must", 4 advice "should").
    modality: u8,
    /// Short texts only: operator symbols in order ("5 + 3" / "5 - 3", "x > 0" / "x < 0").
    operators: Vec<String>,
    /// A long text (see [`LONG_TEXT_WORDS`]): it shares an answer only with a text of the same
    /// `long_form`.
    long: bool,
    /// A hash of the text with whitespace, formatting, case and courtesy words removed.
    long_form: u64,
    /// Which way it switches something: bit 1 on ("enable", "turn on"), 2 off ("disable",
    /// "turn off", "cancel").
    direction: u8,
    /// Attribute classes asked about (a bit per class of data/attributes.txt).
    attributes: u32,
    /// Action classes asked for (a bit per class of data/actions.txt).
    actions: u32,
    /// Qualifiers named (a bit per class of data/qualifiers.txt).
    qualifiers: u32,
}

impl Signature {
    pub fn of(text: &str) -> Self {
        let words = guard_words(text);
        let mut sig = Signature {
            tokens: words.iter().map(|w| w.folded.clone()).collect(),
            ..Signature::default()
        };
        sig.read_numbers(&words);
        sig.read_dates(&words);
        sig.read_entities(&words);
        sig.read_polarity(&words);
        sig.read_roles(&words);
        sig.read_person(&words);
        sig.read_direction(&words);
        sig.read_attributes(&words);
        sig.read_actions(&words);
        sig.quoted = quoted_strings(text);
        sig.long_form = long_form(text);
        sig.long = is_long(text, &words);
        if !sig.long {
            sig.sequence = order_sequence(&words);
            sig.operators = operators(text);
        }
        sig
    }

    /// Why a cached answer for `self` must not answer `other`, or None if compatible. Symmetric.
    pub fn conflict(&self, other: &Signature) -> Option<Conflict> {
        if !self.numbers_match(other)
            || !self.units_appear_in(other)
            || !other.units_appear_in(self)
        {
            return Some(Conflict::Number);
        }
        if !self.dates_match(other) {
            return Some(Conflict::Date);
        }
        if !self.quotes_appear_in(other) || !other.quotes_appear_in(self) {
            return Some(Conflict::Quoted);
        }
        if self.negated != other.negated
            || opposite_prefix(self, other)
            || opposite_prefix(other, self)
            || antonyms(self, other)
            || switched(self, other)
        {
            return Some(Conflict::Negation);
        }
        if !self.names_appear_in(other) || self.one_word_swapped(other) || reversed(self, other) {
            return Some(Conflict::Entity);
        }
        if (self.long || other.long) && self.long_form != other.long_form {
            return Some(Conflict::Edit);
        }
        if self.operators != other.operators
            && !self.operators.is_empty()
            && !other.operators.is_empty()
        {
            return Some(Conflict::Number);
        }
        if exclusive(self.subjects, other.subjects)
            || exclusive(self.possessives, other.possessives)
            || exclusive(self.modality, other.modality)
        {
            return Some(Conflict::Person);
        }
        if order_swapped(&self.sequence, &other.sequence)
            || possessor_swapped(&self.sequence, &other.sequence)
        {
            return Some(Conflict::Order);
        }
        if self.relation_differs(other) {
            return Some(Conflict::Entity);
        }
        if exclusive_bits(self.attributes, other.attributes) || self.qualifiers != other.qualifiers
        {
            return Some(Conflict::Attribute);
        }
        if exclusive_bits(self.actions, other.actions) {
            return Some(Conflict::Action);
        }
        None
    }

    pub(super) fn has_form(&self, word: &str) -> bool {
        self.forms
            .binary_search_by(|f| f.as_str().cmp(word))
            .is_ok()
    }
}
