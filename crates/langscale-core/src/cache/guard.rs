//! The guard of the semantic cache: the facts of a question that similarity alone would blur
//! (numbers and units, dates, quoted strings, names, negation). Two texts whose [`Signature`]s
//! conflict never share a cached answer, however close their vectors are.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::embed::{fold, is_filler, is_function_word, spans, stem};

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
}

#[derive(Debug, Clone, PartialEq)]
struct Quantity {
    value: String,
    unit: Option<&'static str>,
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
        None
    }

    /// How many separate names or numbers the text holds ("MacBook Air" and "Pixel 8" are one
    /// each; "Lisbon ... Dublin" two).
    fn name_groups(&self) -> usize {
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
    fn relation_differs(&self, other: &Signature) -> bool {
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

    fn read_numbers(&mut self, words: &[GuardWord]) {
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

    fn read_dates(&mut self, words: &[GuardWord]) {
        for (i, w) in words.iter().enumerate() {
            let prev = i.checked_sub(1).and_then(|p| words.get(p));
            let next = words.get(i + 1);
            if let Some(d) = date_of(w, prev, next) {
                // Single date words may be matched with a typo; "next week" only as a whole.
                let word = if d.contains(' ') {
                    String::new()
                } else {
                    w.folded.clone()
                };
                self.dates.push((d, word));
            }
        }
        self.dates.sort_unstable();
        self.dates.dedup_by(|x, y| x.0 == y.0);
    }

    fn read_entities(&mut self, words: &[GuardWord]) {
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

    fn read_polarity(&mut self, words: &[GuardWord]) {
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

    fn read_roles(&mut self, words: &[GuardWord]) {
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

    /// The two texts are the same words but one, swapped for an unrelated content word
    /// ("capital of canada" / "population of canada", "cook rice" / "cook pasta"): the same
    /// template about another thing, even when nothing is capitalised.
    fn one_word_swapped(&self, other: &Signature) -> bool {
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

    /// Numbers match as multisets; a number may carry a unit in one text and none in the
    /// other, but not two different units.
    fn numbers_match(&self, other: &Signature) -> bool {
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
    fn units_appear_in(&self, other: &Signature) -> bool {
        self.units.iter().all(|(unit, word)| {
            other.units.iter().any(|(u, _)| u == unit)
                || other.tokens.iter().any(|t| same_name(word, t))
        })
    }

    /// Date sets must be equal, except that "today" alone may stand against no date at all (a
    /// question without a date is usually about now), and that a date word may appear in the
    /// other text unread as a date ("may" as a verb) or with a typo ("Octobre").
    fn dates_match(&self, other: &Signature) -> bool {
        let implicit_now = |d: &[(String, String)]| d.iter().all(|(x, _)| x == "today");
        let (a, b) = (&self.dates, &other.dates);
        if (a.is_empty() && implicit_now(b)) || (b.is_empty() && implicit_now(a)) {
            return true;
        }
        // Each date of one text is a date of the other, or its word is there ("may" read as a
        // verb, "auugst" with a typo).
        let covered = |x: &Signature, y: &Signature| {
            x.dates.iter().all(|(d, word)| {
                y.dates.iter().any(|(e, _)| e == d)
                    || (!word.is_empty() && y.tokens.iter().any(|t| same_name(word, t)))
            })
        };
        covered(self, other) && covered(other, self)
    }

    fn quotes_appear_in(&self, other: &Signature) -> bool {
        self.quoted.iter().all(|q| {
            q.is_empty()
                || other
                    .tokens
                    .windows(q.len())
                    .any(|window| window.iter().zip(q).all(|(a, b)| a == b))
        })
    }

    fn has_form(&self, word: &str) -> bool {
        self.forms
            .binary_search_by(|f| f.as_str().cmp(word))
            .is_ok()
    }

    /// Every name of each text is in the other; a weak name may be missing when the other text
    /// names nothing in its place.
    fn names_appear_in(&self, other: &Signature) -> bool {
        let all_in = |names: &[String], sig: &Signature| {
            names
                .iter()
                .all(|e| sig.has_form(e) || sig.tokens.iter().any(|t| same_name(e, t)))
        };
        all_in(&self.entities, other)
            && all_in(&other.entities, self)
            && (all_in(&self.weak_entities, other) || all_in(&other.weak_entities, self))
    }
}

/// The quantities with `value` at `*at` in the value-sorted `list`, advancing `*at` past them.
fn group<'a>(list: &'a [Quantity], at: &mut usize, value: &str) -> &'a [Quantity] {
    let start = *at;
    while list.get(*at).is_some_and(|q| q.value == value) {
        *at += 1;
    }
    list.get(start..*at).unwrap_or(&[])
}

/// Pair quantities of one value, equal units first, then a unit against none; returns those
/// left unpaired on each side.
fn pair_units<'a>(a: &'a [Quantity], b: &'a [Quantity]) -> (Vec<&'a Quantity>, Vec<&'a Quantity>) {
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

// ---------------------------------------------------------------------------------------------
// Words as the guard sees them.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GuardWord {
    /// As typed, possessive "'s" removed.
    original: String,
    /// Lowercased and accent-folded.
    folded: String,
    /// First word of a sentence (start of text, or after `.`, `!`, `?`, `:`, `;`, a newline).
    sentence_start: bool,
    /// Text between the previous word and this one.
    lead: String,
    /// The first character after this word, if not a word character (for "5%").
    trail: Option<char>,
    /// Written with a possessive "'s" ("Bob's").
    possessive: bool,
}

fn guard_words(text: &str) -> Vec<GuardWord> {
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

// ---------------------------------------------------------------------------------------------
// Numbers and units.
// ---------------------------------------------------------------------------------------------

/// The number word `words[i]` says, if any: digits ("1,000", "5.0", "-3", "5km", "3rd") or a
/// spelled number ("twelve"; "one" is counted apart, as it is often a pronoun).
fn number_of(words: &[GuardWord], i: usize) -> Option<Quantity> {
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
fn suffix_unit(suffix: &str) -> &'static str {
    const KNOWN: &[&str] = &["x", "k", "m", "b", "bn", "p", "v", "e"];
    KNOWN.iter().find(|k| **k == suffix).copied().unwrap_or("?")
}

fn currency_symbol(c: char) -> Option<&'static str> {
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
fn normalise_number(digits: &str) -> String {
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

fn spelled_number(t: &str) -> Option<u32> {
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
fn spelled_ones(t: &str) -> Option<u32> {
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

fn spelled_tens(t: &str) -> Option<u32> {
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

fn spelled_ordinal(t: &str) -> Option<u32> {
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

/// The canonical unit a word names ("kilometres" -> "km"), if it is one.
pub(crate) fn canonical_unit(word: &str) -> Option<&'static str> {
    Some(match word {
        "km" | "kms" | "kilometer" | "kilometers" | "kilometre" | "kilometres" => "km",
        "m" | "meter" | "meters" | "metre" | "metres" => "m",
        "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => "cm",
        "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => "mm",
        "mi" | "mile" | "miles" => "mi",
        "ft" | "foot" | "feet" => "ft",
        "inch" | "inches" => "in",
        "yd" | "yard" | "yards" => "yd",
        "kg" | "kgs" | "kilo" | "kilos" | "kilogram" | "kilograms" => "kg",
        "g" | "gram" | "grams" => "g",
        "mg" | "milligram" | "milligrams" => "mg",
        "lb" | "lbs" | "pound" | "pounds" => "lb",
        "oz" | "ounce" | "ounces" => "oz",
        "l" | "liter" | "liters" | "litre" | "litres" => "l",
        "ml" | "milliliter" | "milliliters" | "millilitre" | "millilitres" => "ml",
        "gal" | "gallon" | "gallons" => "gal",
        "celsius" | "centigrade" | "°c" => "c",
        "fahrenheit" | "°f" => "f",
        "kelvin" => "kelvin",
        "mph" => "mph",
        "kph" | "kmh" => "kmh",
        "kb" | "kilobyte" | "kilobytes" => "kb",
        "mb" | "megabyte" | "megabytes" => "mb",
        "gb" | "gigabyte" | "gigabytes" => "gb",
        "tb" | "terabyte" | "terabytes" => "tb",
        "ms" | "millisecond" | "milliseconds" => "ms",
        "s" | "sec" | "secs" | "second" | "seconds" => "s",
        "min" | "mins" | "minute" | "minutes" => "min",
        "h" | "hr" | "hrs" | "hour" | "hours" => "h",
        "day" | "days" => "day",
        "week" | "weeks" => "week",
        "month" | "months" => "month",
        "year" | "years" | "yr" | "yrs" => "year",
        "am" | "a.m" => "am",
        "pm" | "p.m" => "pm",
        "usd" | "dollar" | "dollars" => "usd",
        "eur" | "euro" | "euros" => "eur",
        "gbp" => "gbp",
        "yen" | "jpy" => "jpy",
        "percent" | "pct" | "per cent" => "%",
        _ => return None,
    })
}

/// Units that say what is measured even without a number ("5 km in miles"). Time words are not
/// among them: "day", "week" and "second" are too often plain words.
fn is_measure_unit(u: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Dates.
// ---------------------------------------------------------------------------------------------

fn date_of(w: &GuardWord, prev: Option<&GuardWord>, next: Option<&GuardWord>) -> Option<String> {
    let t = w.folded.as_str();
    let month = match t {
        "january" | "jan" => Some(1),
        "february" | "feb" => Some(2),
        "march" => Some(3),
        "april" | "apr" => Some(4),
        "may" => Some(5),
        "june" | "jun" => Some(6),
        "july" | "jul" => Some(7),
        "august" | "aug" => Some(8),
        "september" | "sept" | "sep" => Some(9),
        "october" | "oct" => Some(10),
        "november" | "nov" => Some(11),
        "december" | "dec" => Some(12),
        _ => None,
    };
    if let Some(m) = month {
        // "may" and "march" are also verbs: take them as months only in a date-like place.
        if matches!(t, "may" | "march") && !month_context(w, prev, next) {
            return None;
        }
        return Some(format!("m{m}"));
    }
    let weekday = match t {
        "monday" | "mondays" | "mon" => Some(1),
        "tuesday" | "tuesdays" | "tue" | "tues" => Some(2),
        "wednesday" | "wednesdays" | "wed" => Some(3),
        "thursday" | "thursdays" | "thu" | "thur" | "thurs" => Some(4),
        "friday" | "fridays" | "fri" => Some(5),
        "saturday" | "saturdays" => Some(6),
        "sunday" | "sundays" => Some(7),
        _ => None,
    };
    if let Some(d) = weekday {
        return Some(format!("d{d}"));
    }
    match t {
        "today" | "tonight" | "tomorrow" | "yesterday" | "weekend" => {
            let rel = prev.map(|p| p.folded.as_str());
            if t == "weekend" {
                return Some(relative_period(rel, t));
            }
            Some(t.to_owned())
        }
        "week" | "month" | "year" => {
            let rel = prev.map(|p| p.folded.as_str());
            matches!(
                rel,
                Some("next" | "last" | "this" | "previous" | "coming" | "past")
            )
            .then(|| relative_period(rel, t))
        }
        _ => None,
    }
}

fn relative_period(rel: Option<&str>, period: &str) -> String {
    let rel = match rel {
        Some("next" | "coming") => "next",
        Some("last" | "previous" | "past") => "last",
        _ => "this",
    };
    format!("{rel} {period}")
}

fn month_context(w: &GuardWord, prev: Option<&GuardWord>, next: Option<&GuardWord>) -> bool {
    let capitalised_mid_sentence =
        !w.sentence_start && w.original.starts_with(|c: char| c.is_uppercase());
    let date_word_before = prev.is_some_and(|p| {
        matches!(
            p.folded.as_str(),
            "in" | "of"
                | "on"
                | "for"
                | "since"
                | "until"
                | "till"
                | "by"
                | "from"
                | "during"
                | "early"
                | "late"
                | "mid"
                | "next"
                | "last"
                | "this"
                | "every"
                | "before"
                | "after"
                | "through"
                | "to"
                | "between"
                | "and"
        ) || p.folded.starts_with(|c: char| c.is_ascii_digit())
    });
    let number_after = next.is_some_and(|n| n.folded.starts_with(|c: char| c.is_ascii_digit()));
    capitalised_mid_sentence || date_word_before || number_after
}

// ---------------------------------------------------------------------------------------------
// Quoted strings.
// ---------------------------------------------------------------------------------------------

/// Strings inside "double", “curly”, `backtick` or 'single' quotes (a single quote opens only
/// after a space or the start and closes only before a space, punctuation or the end, so
/// apostrophes in "what's" are not quotes). Each is kept as folded words.
/// A quote longer than this is not a quoted term (and the bound keeps the scan linear).
const MAX_QUOTE_CHARS: usize = 400;
/// Quoted strings kept per text: enough for a question, bounded for pasted documents.
const MAX_QUOTES: usize = 32;

fn quoted_strings(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let close = match c {
            '"' => Some('"'),
            '\u{201c}' => Some('\u{201d}'),
            '`' => Some('`'),
            '\u{ab}' => Some('\u{bb}'),
            '\'' | '\u{2018}' => {
                let opens = i == 0 || !chars[i - 1].is_alphanumeric();
                let next_ok = chars.get(i + 1).is_some_and(|n| !n.is_whitespace());
                (opens && next_ok).then_some(if c == '\'' { '\'' } else { '\u{2019}' })
            }
            _ => None,
        };
        let Some(close) = close else {
            i += 1;
            continue;
        };
        let single = matches!(c, '\'' | '\u{2018}');
        let window_end = chars.len().min(i + 1 + MAX_QUOTE_CHARS);
        let end = (i + 1..window_end).find(|&j| {
            chars[j] == close && (!single || !chars.get(j + 1).is_some_and(|n| n.is_alphanumeric()))
        });
        match end {
            Some(j) => {
                let inner: String = chars[i + 1..j].iter().collect();
                let words: Vec<String> =
                    guard_words(&inner).into_iter().map(|w| w.folded).collect();
                if !words.is_empty() && out.len() < MAX_QUOTES {
                    out.push(words);
                }
                i = j + 1;
            }
            None => i += 1,
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// Entities.
// ---------------------------------------------------------------------------------------------

/// Words that start sentences without naming anything: question words, auxiliaries, pronouns,
/// determiners, conjunctions, courtesy and the common imperatives of requests.
const SENTENCE_STARTERS: &[&[&str]] = &[
    QUESTION_WORDS,
    AUXILIARIES,
    PRONOUNS_AND_DETERMINERS,
    CONNECTIVES,
    COURTESY,
    IMPERATIVES,
    QUERY_OPENERS,
];

/// Sentence starters: question words.
const QUESTION_WORDS: &[&str] = &[
    "what", "what's", "whats", "which", "who", "who's", "whom", "whose", "when", "when's", "where",
    "where's", "why", "how", "how's", "whether",
];

/// Sentence starters: auxiliaries and modals.
const AUXILIARIES: &[&str] = &[
    "is",
    "are",
    "was",
    "were",
    "am",
    "be",
    "do",
    "does",
    "did",
    "can",
    "could",
    "will",
    "would",
    "shall",
    "should",
    "may",
    "might",
    "must",
    "have",
    "has",
    "had",
    "don't",
    "doesn't",
    "didn't",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "can't",
    "cannot",
    "won't",
    "shouldn't",
    "couldn't",
    "wouldn't",
    "haven't",
    "hasn't",
];

/// Sentence starters: pronouns and determiners.
const PRONOUNS_AND_DETERMINERS: &[&str] = &[
    "i", "i'm", "i've", "i'd", "i'll", "you", "your", "we", "our", "they", "their", "he", "she",
    "it", "it's", "its", "my", "me", "this", "that", "that's", "these", "those", "there",
    "there's", "here", "here's", "a", "an", "the", "any", "some", "all", "every", "each", "no",
    "not", "none", "one", "another", "other", "such", "both", "either", "neither", "many", "much",
    "most", "more", "few", "several", "let's", "let",
];

/// Sentence starters: prepositions and conjunctions.
const CONNECTIVES: &[&str] = &[
    "in",
    "on",
    "at",
    "for",
    "from",
    "to",
    "with",
    "without",
    "by",
    "about",
    "after",
    "before",
    "during",
    "since",
    "until",
    "if",
    "and",
    "but",
    "or",
    "so",
    "also",
    "then",
    "than",
    "because",
    "as",
    "of",
    "into",
    "over",
    "under",
    "between",
    "among",
    "per",
    "via",
    "vs",
    "versus",
    "regarding",
    "re",
    "like",
    "unlike",
    "besides",
    "except",
    "within",
    "while",
];

/// Sentence starters: courtesy and discourse.
const COURTESY: &[&str] = &[
    "please", "hey", "hi", "hello", "thanks", "thank", "ok", "okay", "yes", "yeah", "well", "now",
    "just", "quick", "question", "sorry", "dear", "kindly", "btw", "fyi",
];

/// Sentence starters: request verbs and common imperatives.
const IMPERATIVES: &[&str] = &[
    "tell",
    "give",
    "show",
    "list",
    "explain",
    "describe",
    "write",
    "make",
    "create",
    "find",
    "get",
    "help",
    "convert",
    "compare",
    "calculate",
    "compute",
    "translate",
    "summarize",
    "summarise",
    "define",
    "read",
    "open",
    "set",
    "use",
    "suggest",
    "recommend",
    "check",
    "generate",
    "provide",
    "name",
    "send",
    "add",
    "remove",
    "delete",
    "update",
    "fix",
    "change",
    "turn",
    "enable",
    "disable",
    "install",
    "uninstall",
    "run",
    "build",
    "start",
    "stop",
    "look",
    "search",
    "need",
    "want",
    "know",
    "say",
    "ask",
    "try",
    "keep",
    "put",
    "take",
    "go",
    "see",
    "learn",
    "teach",
    "plan",
    "draft",
    "rewrite",
    "edit",
    "format",
    "sort",
    "reverse",
    "print",
    "parse",
    "split",
    "join",
    "merge",
    "count",
    "estimate",
    "predict",
    "guess",
    "choose",
    "pick",
    "rank",
    "rate",
    "review",
    "evaluate",
    "analyze",
    "analyse",
    "outline",
    "identify",
    "reset",
    "restore",
    "backup",
    "book",
    "cancel",
    "order",
    "buy",
    "sell",
    "pay",
    "call",
    "email",
    "share",
    "download",
    "upload",
    "save",
    "load",
    "copy",
    "move",
    "rename",
    "clean",
    "clear",
    "configure",
    "setup",
    "connect",
    "test",
    "debug",
    "deploy",
    "implement",
    "solve",
    "answer",
    "prove",
    "simplify",
    "design",
    "draw",
    "recall",
    "remind",
    "schedule",
    "cook",
    "bake",
    "prepare",
    "lookup",
    "return",
    "visit",
    "travel",
];

/// Sentence starters: adjectives and nouns that often open a terse query.
const QUERY_OPENERS: &[&str] = &[
    "best",
    "good",
    "better",
    "top",
    "new",
    "latest",
    "current",
    "recent",
    "cheap",
    "cheapest",
    "easy",
    "easiest",
    "simple",
    "fast",
    "fastest",
    "short",
    "long",
    "full",
    "main",
    "common",
    "typical",
    "average",
    "total",
    "local",
    "nearest",
    "next",
    "last",
    "first",
    "today",
    "today's",
    "tomorrow",
    "tomorrow's",
    "yesterday",
    "tonight",
    "weather",
    "price",
    "cost",
    "time",
    "distance",
    "news",
    "info",
    "information",
    "details",
    "difference",
    "meaning",
    "definition",
    "example",
    "examples",
    "tips",
    "steps",
    "ways",
    "way",
    "reasons",
    "benefits",
    "pros",
    "cons",
    "history",
    "summary",
    "overview",
    "recipe",
];

fn is_sentence_starter(word: &str) -> bool {
    SENTENCE_STARTERS.iter().any(|list| list.contains(&word))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntityKind {
    Strong,
    Weak,
}

/// Whether `w` names something: a capitalised word that its sentence position does not
/// explain, or a word with inner capitals, digits among letters, or `+`/`#` ("iPhone", "S24",
/// "C++"); a capitalised sentence opener that is not a common word is a weak name.
fn entity_kind(w: &GuardWord, prev: Option<&GuardWord>) -> Option<EntityKind> {
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

/// `entity` is written as `token`: equal, or one typo away. Names of 6+ letters allow any
/// one edit but keep their first letter ("Gambia" is not a typo of "Zambia"); names of 4-5
/// letters allow only a swap of neighbouring letters ("Olso"), as one substituted letter
/// often makes another real name ("Iran" / "Iraq", "Rome" / "Rose").
fn same_name(entity: &str, token: &str) -> bool {
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
fn swapped_neighbours(a: &[char], b: &[char]) -> bool {
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
fn typo_of(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    a.len().min(b.len()) >= 4 && a.len().abs_diff(b.len()) <= 1 && osa_distance_at_most_one(&a, &b)
}

/// Optimal-string-alignment distance <= 1, in linear time.
fn osa_distance_at_most_one(a: &[char], b: &[char]) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Negation and opposite directions.
// ---------------------------------------------------------------------------------------------

fn is_negation_cue(t: &str) -> bool {
    matches!(
        t,
        "not"
            | "no"
            | "never"
            | "none"
            | "nothing"
            | "nobody"
            | "nowhere"
            | "neither"
            | "nor"
            | "without"
            | "cannot"
            | "non"
            | "dont"
            | "doesnt"
            | "didnt"
            | "isnt"
            | "arent"
            | "wasnt"
            | "werent"
            | "cant"
            | "wont"
            | "shouldnt"
            | "couldnt"
            | "wouldnt"
            | "havent"
            | "hasnt"
            | "hadnt"
            | "aint"
            | "mustnt"
            | "neednt"
    ) || t.ends_with("n't")
}

/// Pairs of words asking for opposite things; each side is written in its base form.
const ANTONYMS: &[(&str, &str)] = &[
    ("on", "off"),
    ("in", "out"),
    ("enable", "disable"),
    ("activate", "deactivate"),
    ("start", "stop"),
    ("start", "end"),
    ("start", "finish"),
    ("begin", "end"),
    ("open", "close"),
    ("open", "closed"),
    ("allow", "block"),
    ("allow", "deny"),
    ("allow", "forbid"),
    ("allowed", "forbidden"),
    ("accept", "reject"),
    ("approve", "reject"),
    ("add", "remove"),
    ("add", "subtract"),
    ("create", "delete"),
    ("create", "destroy"),
    ("insert", "delete"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("raise", "lower"),
    ("increment", "decrement"),
    ("include", "exclude"),
    ("show", "hide"),
    ("before", "after"),
    ("above", "below"),
    ("over", "under"),
    ("more", "less"),
    ("more", "fewer"),
    ("most", "least"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("minimize", "maximize"),
    ("true", "false"),
    ("import", "export"),
    ("upload", "download"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("compress", "decompress"),
    ("push", "pull"),
    ("input", "output"),
    ("left", "right"),
    ("up", "down"),
    ("buy", "sell"),
    ("win", "lose"),
    ("gain", "lose"),
    ("profit", "loss"),
    ("first", "last"),
    ("best", "worst"),
    ("good", "bad"),
    ("better", "worse"),
    ("cheap", "expensive"),
    ("cheapest", "priciest"),
    ("hot", "cold"),
    ("warm", "cold"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("fastest", "slowest"),
    ("high", "low"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("positive", "negative"),
    ("inside", "outside"),
    ("internal", "external"),
    ("plus", "minus"),
    ("success", "failure"),
    ("succeed", "fail"),
    ("pass", "fail"),
    ("send", "receive"),
    ("join", "leave"),
    ("ascending", "descending"),
    ("asc", "desc"),
    ("early", "late"),
    ("earlier", "later"),
    ("earliest", "latest"),
    ("long", "short"),
    ("longer", "shorter"),
    ("longest", "shortest"),
    ("big", "small"),
    ("large", "small"),
    ("bigger", "smaller"),
    ("larger", "smaller"),
    ("biggest", "smallest"),
    ("largest", "smallest"),
    ("old", "new"),
    ("older", "newer"),
    ("oldest", "newest"),
    ("light", "dark"),
    ("light", "heavy"),
    ("love", "hate"),
    ("pros", "cons"),
    ("forward", "backward"),
    ("uppercase", "lowercase"),
    ("upper", "lower"),
    ("inbound", "outbound"),
    ("multiply", "divide"),
    ("north", "south"),
    ("east", "west"),
    ("male", "female"),
    ("always", "never"),
    ("front", "back"),
    ("top", "bottom"),
    ("online", "offline"),
    ("public", "private"),
    ("login", "logout"),
    ("signin", "signout"),
    ("attach", "detach"),
    ("sync", "async"),
    ("synchronous", "asynchronous"),
    ("expand", "collapse"),
    ("grow", "shrink"),
    ("rise", "fall"),
    ("arrive", "depart"),
    ("arrival", "departure"),
    ("full", "empty"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("simple", "complex"),
    ("right", "wrong"),
    ("safe", "dangerous"),
    ("wet", "dry"),
    ("import", "export"),
];

/// Base form of a word -> the antonym pairs it belongs to, with its side (1 or 2).
fn antonym_table() -> &'static HashMap<String, Vec<(u16, u8)>> {
    static TABLE: OnceLock<HashMap<String, Vec<(u16, u8)>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: HashMap<String, Vec<(u16, u8)>> = HashMap::new();
        for (i, (a, b)) in ANTONYMS.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            table.entry((*a).to_owned()).or_default().push((i, 1));
            table.entry((*b).to_owned()).or_default().push((i, 2));
        }
        table
    })
}

// ---------------------------------------------------------------------------------------------
// Order, person and modality, long texts.
// ---------------------------------------------------------------------------------------------

/// Texts of more words than this are "long" (a pasted document, code, logs): they share an
/// answer only when equal up to whitespace, formatting, case and courtesy words (chosen by
/// measurement on tests/data/guard-long.jsonl: see `eval` below and the README's quality rows).
pub const LONG_TEXT_WORDS: usize = 32;
/// So are texts of this many sentences or more, and texts of several non-empty lines.
pub const LONG_TEXT_SENTENCES: usize = 2;

fn is_long(text: &str, words: &[GuardWord]) -> bool {
    words.len() > LONG_TEXT_WORDS
        || 1 + words
            .iter()
            .filter(|w| w.lead.contains(['.', '!', '?']))
            .count()
            >= LONG_TEXT_SENTENCES
        || text.trim().lines().filter(|l| !l.trim().is_empty()).count() > 1
}

/// Runs of operator symbols between words, in order: "+", "-", "<=", "!=", "+=".
fn operators(text: &str) -> Vec<String> {
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

/// Words that join two things without ordering them ("Rome or Athens", "TCP and UDP").
fn is_coordinator(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "vs" | "versus" | "v" | "nor" | "plus" | "a" | "an" | "the"
    )
}

/// The words of a short text in order for [`order_swapped`]: courtesy dropped, a possessive
/// followed by its own "'s" word.
fn order_sequence(words: &[GuardWord]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len() + 2);
    for w in words {
        if is_filler(&w.folded) {
            continue;
        }
        out.push(w.folded.clone());
        // "what's", "it's", "let's" are contractions, not possessives.
        let contraction = matches!(
            w.folded.as_str(),
            "what"
                | "that"
                | "it"
                | "he"
                | "she"
                | "there"
                | "here"
                | "who"
                | "where"
                | "how"
                | "let"
                | "when"
                | "why"
                | "which"
        );
        if w.possessive && !contraction {
            out.push("'s".to_owned());
        }
    }
    out
}

/// Two things that both texts hold once each, in opposite orders, with the same words
/// between them: "5 [greater than] 7" / "7 [greater than] 5", "Arsenal [beat] Chelsea" /
/// "Chelsea [beat] Arsenal", "Pay Alice [from] Bob" / "Pay Bob [from] Alice". Not a swap
/// across a coordinator ("Rome or Athens" / "Athens or Rome") nor a phrase moved elsewhere
/// ("In Paris, what's the weather?" / "What's the weather in Paris?": other words between).
fn order_swapped(a: &[String], b: &[String]) -> bool {
    if a.len() < 3 || b.len() < 3 {
        return false;
    }
    let once = |seq: &[String], t: &str| seq.iter().filter(|x| x.as_str() == t).count() == 1;
    // (position in a, position in b) of each content word both hold exactly once.
    let items: Vec<(usize, usize)> = a
        .iter()
        .enumerate()
        .filter(|(_, t)| t.as_str() != "'s" && !is_function_word(t) && !is_coordinator(t))
        .filter(|(_, t)| once(a, t) && once(b, t))
        .filter_map(|(i, t)| b.iter().position(|x| x == t).map(|j| (i, j)))
        .collect();
    let same_words = |x: &[String], y: &[String]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p == q || typo_of(p, q))
    };
    items.iter().enumerate().any(|(k, &(ia, ib))| {
        items[k + 1..].iter().any(|&(ja, jb)| {
            // Order the pair by its position in `a`; it is swapped when `b` has it reversed.
            let ((xa, xb), (ya, yb)) = if ia < ja {
                ((ia, ib), (ja, jb))
            } else {
                ((ja, jb), (ia, ib))
            };
            if xb < yb {
                return false;
            }
            let (Some(between_a), Some(between_b)) = (a.get(xa + 1..ya), b.get(yb + 1..xb)) else {
                return false;
            };
            !between_a.is_empty()
                && !between_a.iter().all(|t| is_coordinator(t))
                && same_words(between_a, between_b)
        })
    })
}

/// Each text makes a possessor ("Bob's") of a word that the other holds but not as a
/// possessor: "Is Alice Bob's manager?" / "Is Bob Alice's manager?".
fn possessor_swapped(a: &[String], b: &[String]) -> bool {
    let possessors = |seq: &[String]| -> Vec<String> {
        seq.windows(2)
            .filter(|w| w[1] == "'s")
            .map(|w| w[0].clone())
            .collect()
    };
    let (pa, pb) = (possessors(a), possessors(b));
    let moved = |from: &[String], to_seq: &[String], to_poss: &[String]| {
        from.iter()
            .any(|w| to_seq.contains(w) && !to_poss.contains(w))
    };
    moved(&pa, b, &pb) && moved(&pb, a, &pa)
}

/// Grammatical person of a subject pronoun (bit 1 first, 2 second, 4 "he", 8 "she", 16
/// "they").
fn subject_person(word: &str) -> u8 {
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
fn possessive_person(word: &str) -> u8 {
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
fn is_request_frame_verb(word: &str) -> bool {
    matches!(
        word,
        "tell" | "show" | "give" | "help" | "explain" | "let" | "describe" | "recommend"
    )
}

impl Signature {
    fn read_person(&mut self, words: &[GuardWord]) {
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
fn exclusive(a: u8, b: u8) -> bool {
    a & !b != 0 && b & !a != 0
}

/// A hash of `text` with whitespace, markdown decoration ("**", "- " bullets, "#", "`", ">"),
/// sentence punctuation, case and courtesy words removed; symbols that may change meaning
/// (operators in code: "<", "+=", "!=") are kept.
fn long_form(text: &str) -> u64 {
    let mut out = String::with_capacity(text.len());
    let mut line_start = true;
    let push_run = |run: &mut String, out: &mut String| {
        if !run.is_empty()
            && !run
                .chars()
                .all(|c| matches!(c, '.' | ',' | '!' | '?' | ';' | ':'))
        {
            out.push('\u{1}');
            out.push_str(run);
        }
        run.clear();
    };
    let mut previous = String::new();
    for span in spans(text) {
        let mut run = String::new();
        for c in span.lead.chars() {
            if c == '\n' {
                line_start = true;
            }
            let bullet = line_start && matches!(c, '-' | '+' | '\u{2022}');
            if c.is_whitespace() || bullet || matches!(c, '*' | '_' | '`' | '#' | '>' | '\u{2022}')
            {
                push_run(&mut run, &mut out);
            } else {
                run.push(c);
            }
            if !c.is_whitespace() {
                line_start = false;
            }
        }
        push_run(&mut run, &mut out);
        if span.text.is_empty() {
            continue;
        }
        line_start = false;
        let word = fold(&span.text);
        let courtesy = is_filler(&word) || (word == "you" && matches!(previous.as_str(), "thank"));
        if !courtesy {
            out.push('\u{2}');
            out.push_str(&word);
        }
        previous = word;
    }
    xxhash_rust::xxh3::xxh3_64(out.as_bytes())
}

/// A word that one text goes from, the other goes to ("from Lisbon to Madrid" / "from Madrid
/// to Lisbon", "km to miles" / "miles to km").
fn reversed(a: &Signature, b: &Signature) -> bool {
    a.roles.iter().any(|(w, ma)| {
        let mb = b
            .roles
            .binary_search_by(|(v, _)| v.as_str().cmp(w))
            .map_or(0, |i| b.roles[i].1);
        (*ma == 1 && mb == 2) || (*ma == 2 && mb == 1)
    })
}

/// One text has a member of an antonym pair (and not the other member), the other text has
/// only the other member.
fn antonyms(a: &Signature, b: &Signature) -> bool {
    a.polarity.iter().any(|&(pair, side_a)| {
        side_a != 3
            && b.polarity
                .iter()
                .any(|&(p, side_b)| p == pair && side_b != 3 && side_b != side_a)
    })
}

/// The word itself and what it may be an inflection of ("enabled" -> "enable", "enabl").
fn base_forms(word: &str) -> Vec<String> {
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

fn undouble(s: &str) -> String {
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
fn opposite_prefix(a: &Signature, b: &Signature) -> bool {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cache::embed::{cosine, HashEmbedder};

    fn conflict(a: &str, b: &str) -> Option<Conflict> {
        let (sa, sb) = (Signature::of(a), Signature::of(b));
        let ab = sa.conflict(&sb);
        assert_eq!(ab, sb.conflict(&sa), "not symmetric: {a:?} / {b:?}");
        ab
    }

    #[test]
    fn identical_and_retyped_texts_are_compatible() {
        let pairs = [
            ("How tall is Mount Everest?", "how tall is mount everest"),
            (
                "How tall is Mount Everest?",
                "hey, how tall is Mount Everest please?",
            ),
            ("Who founded Microsoft?", "who founded microsoft"),
            ("Who founded Microsoft?", "Who founded Mircosoft?"),
            (
                "Tell me about Johannes Kepler.",
                "tell me about johannes kelper",
            ),
            (
                "Why doesn't my Kubernetes pod start?",
                "why doesnt my kubernetes pod start",
            ),
            ("Sort a vector in C++", "sort a vector in c++"),
            ("Convert 1,000 meters to feet", "convert 1000 m to ft"),
            ("Is 5.0 bigger than 3?", "is 5 bigger than 3"),
        ];
        for (a, b) in pairs {
            assert_eq!(conflict(a, b), None, "{a:?} / {b:?}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(
            conflict("Convert 10 kg to pounds", "Convert 12 kg to pounds"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("A table for 4 people", "A table for four people"),
            None
        );
        assert_eq!(
            conflict(
                "How long is 3 days in hours?",
                "How long is 3 weeks in hours?"
            ),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("Convert 5 km to miles", "Convert 5 km to feet"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("Convert 5 km to miles", "How many miles is 5 kilometres?"),
            None
        );
        assert_eq!(conflict("What is 2 + 3?", "What is 3 + 2?"), None);
        assert_eq!(
            conflict("Sum of 2 and 2", "Sum of 2"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict(
                "Population growth of 1,000,000",
                "population growth of 1000000"
            ),
            None
        );
        assert_eq!(conflict("2-5 days", "2 to 5 days"), None);
        assert_eq!(
            conflict("It is -5 degrees", "It is 5 degrees"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("Python 3.10 features", "Python 3.1 features"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("Read a file one line at a time", "Read a file line by line"),
            None
        );
        assert_eq!(
            conflict("What is the 3rd planet?", "What is the third planet?"),
            None
        );
        assert_eq!(
            conflict("What is the 3rd planet?", "What is the fourth planet?"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("A twenty-five minute walk", "a 25 minute walk"),
            None
        );
        assert_eq!(
            conflict("Price is $5", "Price is 5%"),
            Some(Conflict::Number)
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            conflict("Concerts in Lisbon in June", "Concerts in Lisbon in August"),
            Some(Conflict::Date)
        );
        assert_eq!(
            conflict("Is the gym open on Monday?", "Is the gym open on Tuesday?"),
            Some(Conflict::Date)
        );
        assert_eq!(
            conflict("Will it rain tomorrow?", "Will it rain today?"),
            Some(Conflict::Date)
        );
        assert_eq!(conflict("Will it rain today?", "Will it rain?"), None);
        assert_eq!(
            conflict("Will it rain tomorrow?", "Will it rain?"),
            Some(Conflict::Date)
        );
        assert_eq!(
            conflict("Any deals next week?", "Any deals this week?"),
            Some(Conflict::Date)
        );
        assert_eq!(conflict("festivals in may", "Festivals in May"), None);
        assert_eq!(
            conflict("festivals in may", "festivals in june"),
            Some(Conflict::Date)
        );
        // The modal verb is no month.
        assert_eq!(conflict("How may I help?", "How can I help?"), None);
    }

    #[test]
    fn quoted() {
        assert_eq!(
            conflict(
                "Translate \"good morning\" to French",
                "Translate \"good night\" to French"
            ),
            Some(Conflict::Quoted)
        );
        assert_eq!(
            conflict(
                "What does 'idempotent' mean?",
                "What does `idempotent` mean?"
            ),
            None
        );
        assert_eq!(
            conflict(
                "What does \u{201c}idempotent\u{201d} mean?",
                "what does idempotent mean"
            ),
            None
        );
        assert_eq!(
            conflict(
                "What does 'ephemeral' mean?",
                "What does 'idempotent' mean?"
            ),
            Some(Conflict::Quoted)
        );
        // Apostrophes are no quotes.
        assert_eq!(
            conflict("What's the dog's name?", "whats the dogs name"),
            None
        );
    }

    #[test]
    fn entities() {
        assert_eq!(
            conflict("Best museums in Lisbon", "Best museums in Porto"),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("Who painted Guernica?", "Who painted Sunflowers?"),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict(
                "Is Kotlin faster than Scala?",
                "is kotlin faster than scala"
            ),
            None
        );
        assert_eq!(
            conflict("Sort a vector in C++", "Sort a vector in C#"),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict(
                "Battery life of the Galaxy S23",
                "Battery life of the Galaxy S24"
            ),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("Battery life of the iPhone", "battery life of the iphone"),
            None
        );
        // Sentence-initial common words are not names, sentence-initial names are.
        assert_eq!(
            conflict("Explain recursion simply", "Describe recursion simply"),
            None
        );
        assert_eq!(
            conflict("Lisbon travel tips?", "Porto travel tips?"),
            Some(Conflict::Entity)
        );
        // One typo in a name passes; a different name one letter away does not.
        assert_eq!(conflict("Hotels in Oslo", "hotels in olso"), None);
        assert_eq!(
            conflict("Visa for Iran", "Visa for Iraq"),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("Visa for Zambia", "Visa for Gambia"),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("Tell me about Copernicus", "tell me about copernicsu"),
            None
        );
        assert_eq!(
            conflict("Hotels in Rome", "Hotels in Roma"),
            Some(Conflict::Entity)
        );
        assert_eq!(conflict("Facts about Sweden", "Facts about Sweden's"), None);
        assert_eq!(
            conflict("Weather in Z\u{fc}rich", "weather in zurich"),
            None
        );
    }

    #[test]
    fn negation() {
        assert_eq!(
            conflict("Is coffee healthy?", "Is coffee not healthy?"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Why does my build fail?", "Why doesn't my build fail?"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Why doesn't my build fail?", "Why does my build not fail?"),
            None
        );
        assert_eq!(
            conflict(
                "Can I drink coffee while pregnant?",
                "Can I drink coffee without sugar while pregnant?"
            ),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("How do I lock the screen?", "How do I unlock the screen?"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("How do I install Docker?", "How do I uninstall Docker?"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Is this input valid?", "Is this input invalid?"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("How to show hidden files", "How to hide files"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Switch the lights on", "Switch the lights off"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("How do I increase volume?", "How do I decrease volume?"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Enabled features list", "Disabled features list"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Use non-blocking sockets", "Use blocking sockets"),
            Some(Conflict::Negation)
        );
        assert_eq!(
            conflict("Sort ascending", "Sort in descending order"),
            Some(Conflict::Negation)
        );
        // Both directions named in both texts: no conflict.
        assert_eq!(
            conflict(
                "Difference between import and export",
                "import vs export difference"
            ),
            None
        );
    }

    #[test]
    fn case_insensitive_entities_need_only_appear() {
        // The lowercase text has no entities of its own, but the names of the other appear in it.
        let a = Signature::of("What is the tallest building in Dubai?");
        let b = Signature::of("what is the tallest building in dubai");
        assert!(b.entities.is_empty());
        assert_eq!(a.conflict(&b), None);
        let c = Signature::of("what is the tallest building in doha");
        assert_eq!(a.conflict(&c), Some(Conflict::Entity));
    }

    #[test]
    fn weak_names_at_sentence_start() {
        // Two capitalised openers that are not common words: two different names.
        assert_eq!(
            conflict("Lisbon travel tips?", "Porto travel tips?"),
            Some(Conflict::Entity)
        );
        // An uncommon imperative is only a weak name: it need not appear in a rewording.
        assert_eq!(
            conflict(
                "Transfer files from a phone to a laptop",
                "How do I move files from my phone to my laptop?"
            ),
            None
        );
    }

    #[test]
    fn one_content_word_swapped() {
        assert_eq!(
            conflict(
                "what is the capital of canada",
                "what is the population of canada"
            ),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("how do i cook rice", "how do i cook quinoa"),
            Some(Conflict::Entity)
        );
        // A swapped function word, an inflection or a typo is no other question.
        assert_eq!(conflict("how do i cook rice", "how can i cook rice"), None);
        assert_eq!(
            conflict("how do i cook rice", "how do i cooking rice"),
            None
        );
        assert_eq!(conflict("how do i cook rice", "how do i cook rcie"), None);
    }

    #[test]
    fn order_that_changes_the_meaning_conflicts() {
        for (a, b) in [
            ("Is 7 greater than 5?", "Is 5 greater than 7?"),
            ("Is Rome older than Athens?", "Is Athens older than Rome?"),
            ("Did Arsenal beat Chelsea?", "Did Chelsea beat Arsenal?"),
            (
                "How much does Alice owe Bob?",
                "How much does Bob owe Alice?",
            ),
            (
                "Pay Alice from Bob's account",
                "Pay Bob from Alice's account",
            ),
            ("Is Alice Bob's manager?", "Is Bob Alice's manager?"),
            ("What is 10 divided by 4?", "What is 4 divided by 10?"),
            ("Subtract 3 from 8", "Subtract 8 from 3"),
            (
                "Does Dog inherit from Animal?",
                "Does Animal inherit from Dog?",
            ),
            ("Replace butter with oil", "Replace oil with butter"),
            ("does the dog chase the cat", "does the cat chase the dog"),
        ] {
            assert_eq!(conflict(a, b), Some(Conflict::Order), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn order_that_keeps_the_meaning_is_compatible() {
        for (a, b) in [
            (
                "Which is older, Rome or Athens?",
                "Which is older, Athens or Rome?",
            ),
            (
                "What is the difference between TCP and UDP?",
                "What is the difference between UDP and TCP?",
            ),
            (
                "In Paris, what's the weather?",
                "What's the weather in Paris?",
            ),
            (
                "Tomorrow, will it rain in Oslo?",
                "Will it rain in Oslo tomorrow?",
            ),
            (
                "Python vs Rust: which is faster?",
                "Rust vs Python: which is faster?",
            ),
            ("Is a cat or a dog smarter?", "Is a dog or a cat smarter?"),
        ] {
            assert_eq!(conflict(a, b), None, "{a:?} / {b:?}");
        }
    }

    #[test]
    fn person_and_modality_conflict() {
        for (a, b) in [
            ("show me my orders", "show me your orders"),
            (
                "Can I cancel my subscription?",
                "Can you cancel my subscription?",
            ),
            ("Can I cancel?", "Must I cancel?"),
            ("Can I cancel?", "Should I cancel?"),
            ("Do I have to pay the deposit?", "Can I pay the deposit?"),
        ] {
            assert_eq!(conflict(a, b), Some(Conflict::Person), "{a:?} / {b:?}");
        }
        // Caught earlier as another word in the same slot.
        assert!(conflict("Delete his comments", "Delete her comments").is_some());
        for (a, b) in [
            ("Can I bring a dog?", "Could I bring a dog?"),
            ("Must I pay the deposit?", "Do I have to pay the deposit?"),
            ("show me my orders", "please show me my orders"),
            (
                "Can you tell me how I reset my password?",
                "How do I reset my password?",
            ),
            ("Where is my package?", "where is the package"),
        ] {
            assert_eq!(conflict(a, b), None, "{a:?} / {b:?}");
        }
    }

    #[test]
    fn operators_must_agree() {
        assert_eq!(
            conflict("what is 5 + 3", "what is 5 - 3"),
            Some(Conflict::Number)
        );
        assert_eq!(
            conflict("is x > 0 here", "is x < 0 here"),
            Some(Conflict::Number)
        );
        assert_eq!(conflict("what is 5 + 3", "what is 5 plus 3"), None);
    }

    #[test]
    fn long_texts_hit_only_when_equal_up_to_formatting() {
        let doc = "Summarize this lease: The tenant shall pay the rent on the first day of each \
                   month. Pets are not allowed in the apartment without written consent. The \
                   landlord shall repair the heating within seven days of notice.";
        assert!(Signature::of(doc).long);
        for harmless in [
            doc.replace(". ", ".\n\n"),
            format!("Hi! {doc}"),
            format!("{doc}\nThanks!"),
            doc.replace("Summarize", "**Summarize**"),
            doc.to_lowercase(),
            format!("- {}", doc.replace(". ", ".\n- ")),
        ] {
            assert_eq!(conflict(doc, &harmless), None, "{harmless:?}");
        }
        for (old, new) in [
            ("Pets are not allowed", "Pets are allowed"),
            ("The tenant shall pay", "The landlord shall pay"),
            ("seven days", "ten days"),
            ("first day", "last day"),
        ] {
            let edited = doc.replace(old, new);
            assert!(conflict(doc, &edited).is_some(), "{old:?} -> {new:?}");
        }
        // Code: operators count.
        let code = "Review this:\nif price > 0:\n    total += price\nreturn total";
        for edited in [code.replace("> 0", "< 0"), code.replace("+=", "-=")] {
            assert!(conflict(code, &edited).is_some(), "{edited:?}");
        }
        // A long text and a short one are never the same question.
        assert!(conflict(doc, "Summarize this lease: the tenant shall pay the rent").is_some());
    }

    proptest::proptest! {
        /// The guard is symmetric and never panics, whatever the texts; a text never
        /// conflicts with itself.
        #[test]
        fn conflict_is_symmetric(a in "\\PC{0,80}", b in "\\PC{0,80}") {
            let (sa, sb) = (Signature::of(&a), Signature::of(&b));
            proptest::prop_assert_eq!(sa.conflict(&sb), sb.conflict(&sa));
            proptest::prop_assert_eq!(sa.conflict(&sa), None);
        }

        /// Word-level: texts built from a small vocabulary, so swaps and shared words are common.
        #[test]
        fn conflict_is_symmetric_on_word_salad(
            a in proptest::collection::vec(proptest::sample::select(WORDS), 0..12),
            b in proptest::collection::vec(proptest::sample::select(WORDS), 0..12),
        ) {
            let (a, b) = (a.join(" "), b.join(" "));
            let (sa, sb) = (Signature::of(&a), Signature::of(&b));
            proptest::prop_assert_eq!(sa.conflict(&sb), sb.conflict(&sa));
            proptest::prop_assert_eq!(sa.conflict(&sa), None);
        }
    }

    const WORDS: &[&str] = &[
        "Is", "Paris", "Rome", "bigger", "than", "or", "and", "5", "7", "my", "your", "can",
        "must", "I", "you", "Bob's", "from", "to", "+", "-", "not", "the", "?", ".", "\n",
    ];

    #[test]
    fn reversed_direction() {
        assert_eq!(
            conflict(
                "flights from Lisbon to Madrid",
                "flights from Madrid to Lisbon"
            ),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("translate english to french", "translate french to english"),
            Some(Conflict::Entity)
        );
        // With two names the words relating them must agree ("Is Dublin bigger than Lisbon?"
        // must not answer "Is Lisbon the capital of Dublin?"): this paraphrase is a miss.
        assert_eq!(
            conflict("How far is Paris from Lyon?", "Distance from Lyon to Paris"),
            Some(Conflict::Entity)
        );
        assert_eq!(
            conflict("How far is Paris from Lyon?", "how far is paris from lyon"),
            None
        );
        assert_eq!(
            conflict(
                "Do I need a visa to travel to Peru?",
                "do i need a visa to travel to peru please"
            ),
            None
        );
    }

    #[test]
    fn typos_in_unit_and_month_words() {
        assert_eq!(
            conflict("How many feet is 3 metres?", "how many feet is 3 mertes"),
            None
        );
        assert_eq!(
            conflict(
                "How many gallons in 4 litres?",
                "how many galolns in 4 litres"
            ),
            None
        );
        assert_eq!(
            conflict("Concerts scheduled for May.", "concerts scheduled for may"),
            None
        );
        assert_eq!(conflict("Holidays in August", "holidays in auugst"), None);
        assert_eq!(
            conflict("Holidays in June", "holidays in july"),
            Some(Conflict::Date)
        );
        assert_eq!(
            conflict("Deals next week", "deals this week"),
            Some(Conflict::Date)
        );
    }

    /// Embedder and guard together at the default threshold, on templates that are not in the
    /// tuning data: retyped questions hit, other questions do not.
    #[test]
    fn decisions_on_unseen_templates() {
        let e = HashEmbedder::default();
        let hit = |a: &str, b: &str| {
            let cos = cosine(&e.embed(a), &e.embed(b));
            cos >= HashEmbedder::DEFAULT_THRESHOLD
                && Signature::of(a).conflict(&Signature::of(b)).is_none()
        };
        let same = [
            (
                "How far is the Moon from Earth?",
                "how far is the moon from earth",
            ),
            (
                "Best pizza places in Naples?",
                "best pizza palces in naples please",
            ),
            (
                "Recommend a good book about Stoicism",
                "recommend a good book about stoicsim",
            ),
            (
                "How do I center a div in CSS?",
                "how do i cneter a div in css",
            ),
            (
                "Translate \"thank you\" into Japanese",
                "translate \"thank you\" into japanese",
            ),
            (
                "When does the Louvre open on Sunday?",
                "when does the louvre open on sunday?",
            ),
            (
                "Who wrote Pride and Prejudice?",
                "who wrote pride and prejduice",
            ),
            (
                "How tall is the Eiffel Tower?",
                "What is the height of the Eiffel Tower?",
            ),
            ("How do I center a div in CSS?", "Centering a div with CSS"),
        ];
        for (a, b) in same {
            assert!(hit(a, b), "should hit: {a:?} / {b:?}");
        }
        let different = [
            (
                "Best pizza places in Naples?",
                "Best pizza places in Chicago?",
            ),
            (
                "best pizza places in naples",
                "best pizza places in chicago",
            ),
            (
                "How far is Paris from Lyon?",
                "How far is Paris from Marseille?",
            ),
            (
                "flights from Lisbon to Madrid",
                "flights from Madrid to Lisbon",
            ),
            (
                "When was Albert Einstein born?",
                "When was Niels Bohr born?",
            ),
            ("albert einstein biography", "niels bohr biography"),
            ("How do I parse JSON in Go?", "How do I parse JSON in Rust?"),
            ("parse json in go", "parse json in rust"),
            (
                "Does the Xbox Series X support 4K?",
                "Does the PlayStation 5 support 4K?",
            ),
            ("kindle battery life", "kobo battery life"),
            (
                "Average temperature in Rome in April?",
                "Average temperature in Rome in October?",
            ),
            (
                "Is the museum open on Monday?",
                "Is the museum open on Friday?",
            ),
            (
                "How many calories are in 2 eggs?",
                "How many calories are in 3 eggs?",
            ),
            (
                "Split a bill of $120 among four people",
                "Split a bill of $120 among five people",
            ),
            ("Convert 5 pounds to kilograms", "Convert 5 pounds to grams"),
            (
                "Is it safe to eat raw eggs?",
                "Is it unsafe to eat raw eggs?",
            ),
            (
                "Why is my laptop charging?",
                "Why is my laptop not charging?",
            ),
            (
                "Foods that raise blood pressure",
                "Foods that lower blood pressure",
            ),
            (
                "What is the capital of Canada?",
                "What is the population of Canada?",
            ),
            (
                "How do I reverse a string in Python?",
                "How do I sort a string in Python?",
            ),
            ("Who founded Tesla?", "Where is Tesla headquartered?"),
            (
                "What's the weather in Tokyo today?",
                "What's the time in Tokyo?",
            ),
            (
                "What's a good name for a cat?",
                "What's a good name for a dog?",
            ),
        ];
        for (a, b) in different {
            assert!(!hit(a, b), "should not hit: {a:?} / {b:?}");
        }
    }

    #[test]
    fn signature_is_shareable() {
        fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
        shareable::<Signature>();
        shareable::<HashEmbedder>();
    }

    #[test]
    fn conflict_names() {
        let all = [
            (Conflict::Number, "number"),
            (Conflict::Date, "date"),
            (Conflict::Quoted, "quoted"),
            (Conflict::Entity, "entity"),
            (Conflict::Negation, "negation"),
        ];
        for (c, s) in all {
            assert_eq!(c.as_str(), s);
            assert_eq!(c.to_string(), s);
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        let long = "Berlin 12 km \"quoted\" not ".repeat(5_000);
        let inputs = [
            "",
            " ",
            "\u{0}\u{1}\u{7f}\t\r\n",
            "😀🎉👍🏽 👨‍👩‍👧",
            "e\u{301}\u{302}\u{303}",
            "\u{301}",
            "\"",
            "\"\"",
            "'",
            "''",
            "' '",
            "“unterminated",
            "`",
            "-",
            "--5",
            "-5-",
            "5.",
            ".5",
            "1,",
            "1,000,",
            "0000",
            "0.000",
            "99999999999999999999999999999999",
            "5km5",
            "n't",
            "'s",
            "İSTANBUL ǅemal ß",
            "日本語のテキスト 東京",
            "مرحبا بالعالم",
            "May",
            "march 5",
            long.as_str(),
        ];
        let sigs: Vec<Signature> = inputs.iter().map(|t| Signature::of(t)).collect();
        for a in &sigs {
            for b in &sigs {
                assert_eq!(a.conflict(b), b.conflict(a));
            }
            assert_eq!(a.conflict(a), None);
        }
    }

    #[test]
    fn osa_distance() {
        let d = |a: &str, b: &str| {
            osa_distance_at_most_one(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert!(d("nikola", "nikloa"));
        assert!(d("brazil", "brzail"));
        assert!(d("berlin", "berlni"));
        assert!(d("berlin", "berln"));
        assert!(d("berlin", "berlinn"));
        assert!(d("berlin", "bxrlin"));
        assert!(!d("berlin", "bxrlxn"));
        assert!(!d("berlin", "nilreb"));
    }
}

/// Quality of the default embedder + guard on the labelled pairs in `shared/data` (see its
/// README). Run with `cargo test --release -p langscale-core cache::guard -- --ignored --nocapture`;
/// `PAIRS_FILE=path` evaluates another file of the same format, and `EVAL_VERBOSE=per-pair:0.70`
/// (or `shared:`, `shared-no-dup:`, `no-guard:`, `xintent:` with a threshold) lists the misses
/// and false hits of that setting.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::print_stdout)]
mod eval {
    use super::*;
    use crate::cache::embed::{cosine, HashEmbedder};
    use std::collections::BTreeMap;
    use std::time::Instant;

    struct Pair {
        a: String,
        b: String,
        same: bool,
        kind: String,
        a_key: String,
        b_key: String,
    }

    fn load() -> Option<Vec<Pair>> {
        // PAIRS_FILE points the evaluation at another file of the same format.
        let path = std::env::var_os("PAIRS_FILE").map_or_else(
            || {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/data/pairs-generated.jsonl")
            },
            std::path::PathBuf::from,
        );
        let text = std::fs::read_to_string(path).ok()?;
        let mut pairs = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            pairs.push(Pair {
                a: s("a"),
                b: s("b"),
                same: v
                    .get("same")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
                kind: s("kind"),
                a_key: s("a_key"),
                b_key: s("b_key"),
            });
        }
        Some(pairs)
    }

    /// (hits, total) per kind.
    type Tally = BTreeMap<String, (usize, usize)>;

    fn bump(t: &mut Tally, kind: &str, hit: bool) {
        let e = t.entry(kind.to_owned()).or_insert((0, 0));
        e.0 += usize::from(hit);
        e.1 += 1;
    }

    fn pct(h: usize, n: usize) -> f64 {
        if n == 0 {
            0.0
        } else {
            100.0 * h as f64 / n as f64
        }
    }

    fn row(t: &Tally, kinds: &[String]) -> String {
        kinds
            .iter()
            .map(|k| {
                let (h, n) = t.get(k).copied().unwrap_or((0, 0));
                format!("{:>7.1}", pct(h, n))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    #[ignore = "evaluation on the shared data set; run with --ignored --nocapture"]
    fn eval_pairs() {
        let Some(pairs) = load() else {
            println!("pairs-generated.jsonl not found: skipped");
            return;
        };
        let verbose = std::env::var("EVAL_VERBOSE").ok();
        let embedder = HashEmbedder::default();
        let mut texts: Vec<&str> = pairs
            .iter()
            .flat_map(|p| [p.a.as_str(), p.b.as_str()])
            .collect();
        texts.sort_unstable();
        texts.dedup();
        let vecs: HashMap<&str, Vec<f32>> = texts.iter().map(|t| (*t, embedder.embed(t))).collect();
        let sigs: HashMap<&str, Signature> = texts.iter().map(|t| (*t, Signature::of(t))).collect();

        // Shared scope: every distinct `a` once, with its key.
        let mut store: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| (p.a.as_str(), p.a_key.as_str()))
            .collect();
        store.sort_unstable();
        store.dedup();

        let mut kinds: Vec<String> = pairs.iter().map(|p| p.kind.clone()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        // Same-intent kinds first.
        kinds.sort_by_key(|k| !pairs.iter().any(|p| &p.kind == k && p.same));
        println!(
            "{} pairs, {} distinct texts, {} stored in the shared scope",
            pairs.len(),
            texts.len(),
            store.len()
        );
        println!("columns: {}", kinds.join(" | "));
        println!("same-intent kinds: hit %; different kinds: false-hit %");

        // Guard alone, whatever the similarity.
        let mut breakdown: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
        for p in &pairs {
            let c = sigs[p.a.as_str()].conflict(&sigs[p.b.as_str()]);
            let name = c.map_or("none", Conflict::as_str);
            *breakdown.entry((p.kind.clone(), name)).or_insert(0) += 1;
            if p.same && c.is_some() {
                println!("  guard rejects {}: {:?} / {:?}: {name}", p.kind, p.a, p.b);
            }
        }
        println!("\nguard-only verdicts per kind:");
        for k in &kinds {
            let parts: Vec<String> = breakdown
                .iter()
                .filter(|((kind, _), _)| kind == k)
                .map(|((_, c), n)| format!("{c}={n}"))
                .collect();
            println!("  {k:<18} {}", parts.join(" "));
        }

        // per-pair: store a, look up b. shared: every a in one scope. shared-no-dup: the same,
        // without the stored entry whose text is b itself. no-guard: per-pair on similarity alone.
        for setting in ["per-pair", "shared", "shared-no-dup", "no-guard"] {
            println!("\n== {setting} ==");
            println!(
                "  t   {}  overall-false",
                kinds
                    .iter()
                    .map(|k| {
                        let short: String =
                            k.trim_start_matches("different-").chars().take(7).collect();
                        format!("{short:>7}")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            for step in 0..10 {
                let t = 0.50 + 0.05 * step as f32;
                let mut tally = Tally::new();
                let (mut false_hits, mut different) = (0, 0);
                for p in &pairs {
                    let vb = &vecs[p.b.as_str()];
                    let sb = &sigs[p.b.as_str()];
                    let per_pair = matches!(setting, "per-pair" | "no-guard");
                    let (hit, right) = if per_pair {
                        let cos = cosine(&vecs[p.a.as_str()], vb);
                        let ok = cos >= t
                            && (setting == "no-guard" || sigs[p.a.as_str()].conflict(sb).is_none());
                        (ok, ok == p.same)
                    } else {
                        let mut cands: Vec<(f32, &str, &str)> = store
                            .iter()
                            .filter(|(a, _)| setting == "shared" || *a != p.b)
                            .map(|(a, key)| (cosine(&vecs[a], vb), *a, *key))
                            .filter(|(c, _, _)| *c >= t)
                            .collect();
                        cands.sort_by(|x, y| y.0.total_cmp(&x.0));
                        let found = cands
                            .iter()
                            .take(8)
                            .find(|(_, a, _)| sigs[a].conflict(sb).is_none());
                        if let (Some((_, a, key)), true) = (found, verbose.is_some()) {
                            if *key != p.b_key {
                                println!("    (answered by {a:?}, key {key:?})");
                            }
                        }
                        match found {
                            Some((_, _, key)) => (true, *key == p.b_key),
                            None => (false, false),
                        }
                    };
                    if p.same {
                        let good = if per_pair { hit } else { hit && right };
                        bump(&mut tally, &p.kind, good);
                        if !good
                            && verbose.as_deref() == Some(&format!("{setting}:{t:.2}"))
                            && p.kind == "surface"
                        {
                            println!(
                                "    MISS {:?} / {:?} cos={:.3} {:?}",
                                p.a,
                                p.b,
                                cosine(&vecs[p.a.as_str()], vb),
                                sigs[p.a.as_str()].conflict(sb)
                            );
                        }
                    } else {
                        let wrong = if per_pair { hit } else { hit && !right };
                        bump(&mut tally, &p.kind, wrong);
                        different += 1;
                        false_hits += usize::from(wrong);
                        if wrong && verbose.as_deref() == Some(&format!("{setting}:{t:.2}")) {
                            println!(
                                "    FALSE {:?} / {:?} cos={:.3}",
                                p.a,
                                p.b,
                                cosine(&vecs[p.a.as_str()], vb)
                            );
                        }
                    }
                }
                println!(
                    "  {t:.2} {}  {:>6.2}",
                    row(&tally, &kinds),
                    pct(false_hits, different)
                );
            }
        }

        // Not in the data set's kinds but the risk of a strong weight on names: another
        // question about the same name ("weather in Tokyo" / "time in Tokyo").
        let mut keyed: Vec<(&str, &str)> = pairs
            .iter()
            .flat_map(|p| {
                [
                    (p.a.as_str(), p.a_key.as_str()),
                    (p.b.as_str(), p.b_key.as_str()),
                ]
            })
            .collect();
        keyed.sort_unstable();
        keyed.dedup();
        let split = |k: &str| -> (String, String) {
            let (i, v) = k.split_once(':').unwrap_or((k, ""));
            (i.to_owned(), v.to_owned())
        };
        println!("\nsame name, other intent (derived; false-hit % per threshold, count):");
        for step in 0..10 {
            let t = 0.50 + 0.05 * step as f32;
            let (mut n, mut hits, mut hits_no_guard) = (0usize, 0usize, 0usize);
            for (i, (ta, ka)) in keyed.iter().enumerate() {
                let (ia, va) = split(ka);
                for (tb, kb) in &keyed[i + 1..] {
                    let (ib, vb) = split(kb);
                    if ia == ib || va != vb || va.is_empty() {
                        continue;
                    }
                    n += 1;
                    let cos = cosine(&vecs[ta], &vecs[tb]);
                    if cos >= t {
                        hits_no_guard += 1;
                        if sigs[ta].conflict(&sigs[tb]).is_none() {
                            hits += 1;
                            if verbose.as_deref() == Some(&format!("xintent:{t:.2}")) {
                                println!("    XFALSE {ta:?} / {tb:?} cos={cos:.3}");
                            }
                        }
                    }
                }
            }
            println!(
                "  {t:.2} {:>6.2} (no guard {:>6.2}) of {n}",
                pct(hits, n),
                pct(hits_no_guard, n)
            );
        }

        // Timing.
        let n = texts.len();
        let rounds = 20;
        let start = Instant::now();
        let mut sink = 0.0f32;
        for _ in 0..rounds {
            for t in &texts {
                sink += embedder.embed(t)[0];
            }
        }
        let embed_us = start.elapsed().as_secs_f64() * 1e6 / (rounds * n) as f64;
        let start = Instant::now();
        let mut count = 0usize;
        for _ in 0..rounds {
            for t in &texts {
                let s = Signature::of(t);
                count += usize::from(s.conflict(&sigs[texts[0]]).is_some());
            }
        }
        let sig_us = start.elapsed().as_secs_f64() * 1e6 / (rounds * n) as f64;
        let start = Instant::now();
        for _ in 0..rounds {
            for t in &texts {
                count += usize::from(sigs[t].conflict(&sigs[texts[0]]).is_some());
            }
        }
        let conflict_us = start.elapsed().as_secs_f64() * 1e6 / (rounds * n) as f64;
        println!(
            "\ntiming: embed {embed_us:.2} us/text, Signature::of + conflict {sig_us:.2} us, conflict alone {conflict_us:.3} us ({sink:.1} {count})"
        );
    }
}
