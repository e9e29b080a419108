//! Words as the embedder and the guard both see them: tokenising ([`spans`]), accent folding
//! ([`fold`]), contractions, a light stemmer, and the word lists they share (courtesy filler,
//! function words, request verbs), read from `data/*.txt` at compile time.

use std::collections::HashSet;
use std::sync::OnceLock;

/// A word list from a data file: one entry a line, `#` comments and blank lines ignored, each
/// entry at most once (checked by a test). Looked up through a set built on first use.
pub(crate) struct WordList {
    data: &'static str,
    set: OnceLock<HashSet<&'static str>>,
}

impl WordList {
    pub(crate) const fn new(data: &'static str) -> Self {
        Self {
            data,
            set: OnceLock::new(),
        }
    }

    /// The entries in file order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &'static str> {
        entries(self.data)
    }

    pub(crate) fn contains(&self, word: &str) -> bool {
        self.set
            .get_or_init(|| self.entries().collect())
            .contains(word)
    }
}

/// The non-empty, non-comment lines of a data file, trimmed.
pub(crate) fn entries(data: &'static str) -> impl Iterator<Item = &'static str> {
    data.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Courtesy that carries no question content ("please", "hey").
pub(crate) static FILLER: WordList = WordList::new(include_str!("../../data/filler.txt"));
/// Function words: they shape a question but rarely decide what it asks.
pub(crate) static STOPWORDS: WordList = WordList::new(include_str!("../../data/stopwords.txt"));
/// Verbs that frame a request ("tell me", "give me") rather than its subject.
pub(crate) static REQUEST_VERBS: WordList =
    WordList::new(include_str!("../../data/request-verbs.txt"));
/// Multi-word courtesy phrases ("can you tell me"), words separated by a space.
pub(crate) static FILLER_PHRASES: WordList =
    WordList::new(include_str!("../../data/filler-phrases.txt"));

/// [`FILLER_PHRASES`] as word sequences, in file order.
pub(crate) fn filler_phrases() -> &'static [Vec<&'static str>] {
    static PHRASES: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
    PHRASES.get_or_init(|| {
        FILLER_PHRASES
            .entries()
            .map(|p| p.split_whitespace().collect())
            .collect()
    })
}

/// Courtesy that carries no question content ("please", "hey").
pub(crate) fn is_filler(word: &str) -> bool {
    FILLER.contains(word)
}

/// Courtesy, function words and request verbs: what a question is framed with, not about.
pub(crate) fn is_function_word(word: &str) -> bool {
    FILLER.contains(word) || STOPWORDS.contains(word) || REQUEST_VERBS.contains(word)
}

/// Lowercase `c` and fold common Latin accents to ASCII ("É" -> "e", "ß" -> "ss"), appending to
/// `out`. Combining marks are dropped, so precomposed and decomposed text agree.
fn push_folded(c: char, out: &mut String) {
    if is_combining_mark(c) {
        return;
    }
    let folded: Option<&str> = match c {
        'À'..='Å' | 'à'..='å' | 'Ā' | 'ā' | 'Ă' | 'ă' | 'Ą' | 'ą' => Some("a"),
        'Æ' | 'æ' => Some("ae"),
        'Ç' | 'ç' | 'Ć' | 'ć' | 'Č' | 'č' => Some("c"),
        'È'..='Ë' | 'è'..='ë' | 'Ē' | 'ē' | 'Ė' | 'ė' | 'Ę' | 'ę' | 'Ě' | 'ě' => {
            Some("e")
        }
        'Ì'..='Ï' | 'ì'..='ï' | 'Ī' | 'ī' | 'Į' | 'į' | 'İ' | 'ı' => Some("i"),
        'Ð' | 'ð' | 'Ď' | 'ď' | 'Đ' | 'đ' => Some("d"),
        'Ñ' | 'ñ' | 'Ń' | 'ń' | 'Ň' | 'ň' => Some("n"),
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō' | 'ō' | 'Ő' | 'ő' => Some("o"),
        'Œ' | 'œ' => Some("oe"),
        'Ù'..='Ü' | 'ù'..='ü' | 'Ū' | 'ū' | 'Ů' | 'ů' | 'Ű' | 'ű' => Some("u"),
        'Ý' | 'ý' | 'ÿ' | 'Ÿ' => Some("y"),
        'ß' => Some("ss"),
        'Þ' | 'þ' => Some("th"),
        'Ł' | 'ł' => Some("l"),
        'Ś' | 'ś' | 'Š' | 'š' | 'Ş' | 'ş' => Some("s"),
        'Ź' | 'ź' | 'Ż' | 'ż' | 'Ž' | 'ž' => Some("z"),
        'Ř' | 'ř' => Some("r"),
        'Ť' | 'ť' => Some("t"),
        'Ğ' | 'ğ' => Some("g"),
        // Typographic apostrophes and dashes read as their ASCII forms.
        '\u{2019}' | '\u{2018}' | '\u{02bc}' => Some("'"),
        '\u{2010}' | '\u{2011}' => Some("-"),
        _ => None,
    };
    match folded {
        Some(s) => out.push_str(s),
        None => out.extend(c.to_lowercase()),
    }
}

fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036f}'
        | '\u{1ab0}'..='\u{1aff}'
        | '\u{1dc0}'..='\u{1dff}'
        | '\u{20d0}'..='\u{20ff}'
        | '\u{fe20}'..='\u{fe2f}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{200d}')
}

/// A character that can sit inside a word.
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// A token of the original text, before lowercasing, with what separated it from the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    /// The token as typed (digit-group commas removed): word characters joined by inner `-`,
    /// `.`, `'`, `_`, with a trailing `+`/`#` run kept ("C++", "F#").
    pub text: String,
    /// The characters between the previous token (or the start) and this one.
    pub lead: String,
}

/// Split `text` into [`Span`]s; text after the last word comes as a final span with empty text.
pub(crate) fn spans(text: &str) -> Vec<Span> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut lead = String::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_word_char(chars[i]) {
            lead.push(chars[i]);
            i += 1;
            continue;
        }
        let mut tok = String::new();
        while i < chars.len() {
            let c = chars[i];
            if is_word_char(c) {
                tok.push(c);
                i += 1;
                continue;
            }
            let next_is_word = chars.get(i + 1).is_some_and(|&n| is_word_char(n));
            let joiner = matches!(
                c,
                '-' | '.' | '\'' | '_' | '\u{2019}' | '\u{2010}' | '\u{2011}'
            );
            let digit_group = c == ','
                && tok.chars().last().is_some_and(|p| p.is_ascii_digit())
                && chars
                    .get(i + 1..i + 4)
                    .is_some_and(|g| g.iter().all(char::is_ascii_digit))
                && !chars.get(i + 4).is_some_and(char::is_ascii_digit);
            if (joiner && next_is_word) || digit_group {
                if c != ',' {
                    tok.push(c);
                }
                i += 1;
                continue;
            }
            if matches!(c, '+' | '#') {
                while i < chars.len() && matches!(chars[i], '+' | '#') {
                    tok.push(chars[i]);
                    i += 1;
                }
            }
            break;
        }
        out.push(Span {
            text: tok,
            lead: std::mem::take(&mut lead),
        });
    }
    if !lead.is_empty() {
        // What follows the last word ("5%", "Paris?") as a span without text.
        out.push(Span {
            text: String::new(),
            lead,
        });
    }
    out
}

/// Lowercase and accent-fold a whole token.
pub(crate) fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_folded(c, &mut out);
    }
    out
}

pub(crate) fn expand_contraction(tok: &str, out: &mut Vec<String>) {
    const SPELLED: &[(&str, &str, &str)] = &[
        ("can't", "can", "not"),
        ("cant", "can", "not"),
        ("cannot", "can", "not"),
        ("won't", "will", "not"),
        ("shan't", "shall", "not"),
        ("ain't", "is", "not"),
        ("dont", "do", "not"),
        ("doesnt", "does", "not"),
        ("didnt", "did", "not"),
        ("isnt", "is", "not"),
        ("arent", "are", "not"),
        ("wasnt", "was", "not"),
        ("werent", "were", "not"),
        ("shouldnt", "should", "not"),
        ("couldnt", "could", "not"),
        ("wouldnt", "would", "not"),
        ("havent", "have", "not"),
        ("hasnt", "has", "not"),
        ("hadnt", "had", "not"),
        ("whats", "what", ""),
        ("hows", "how", ""),
        ("wheres", "where", ""),
        ("thats", "that", ""),
        ("im", "i", "am"),
    ];
    if let Some(&(_, a, b)) = SPELLED.iter().find(|(t, _, _)| *t == tok) {
        out.push(a.to_owned());
        if !b.is_empty() {
            out.push(b.to_owned());
        }
        return;
    }
    if let Some(stem) = tok.strip_suffix("n't") {
        if !stem.is_empty() {
            out.push(stem.to_owned());
        }
        out.push("not".to_owned());
        return;
    }
    const SUFFIXES: &[(&str, &str)] = &[
        ("'s", ""),
        ("'re", "are"),
        ("'ve", "have"),
        ("'ll", "will"),
        ("'d", "would"),
        ("'m", "am"),
    ];
    for (suffix, expansion) in SUFFIXES {
        if let Some(stem) = tok.strip_suffix(suffix) {
            if !stem.is_empty() {
                out.push(stem.to_owned());
                if !expansion.is_empty() {
                    out.push((*expansion).to_owned());
                }
                return;
            }
        }
    }
    // Leftover apostrophes ("o'brien", "rock'n'roll") join the parts.
    if tok.contains('\'') {
        out.push(tok.replace('\'', ""));
    } else {
        out.push(tok.to_owned());
    }
}

/// A light English stemmer: plural, "-ing", "-ed" and a final "e", so "reverse", "reversing" and
/// "reversed" meet. Words with digits or symbols are left alone.
pub(crate) fn stem(word: &str) -> String {
    if !word.chars().all(char::is_alphabetic) || word.chars().count() <= 3 {
        return word.to_owned();
    }
    let mut w: Vec<char> = word.chars().collect();
    let ends = |w: &[char], s: &str| -> bool {
        let s: Vec<char> = s.chars().collect();
        w.len() > s.len() + 2 && w.ends_with(&s)
    };
    if ends(&w, "ies") {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if ends(&w, "sses") {
        w.truncate(w.len() - 2);
    } else if ends(&w, "s") && !ends(&w, "ss") && !ends(&w, "us") && !ends(&w, "is") {
        w.truncate(w.len() - 1);
    }
    let mut stripped = false;
    if ends(&w, "ing") && w.len() > 5 {
        w.truncate(w.len() - 3);
        stripped = true;
    } else if ends(&w, "ed") && w.len() > 5 {
        w.truncate(w.len() - 2);
        stripped = true;
    }
    if stripped {
        let n = w.len();
        if n >= 2 && w[n - 1] == w[n - 2] && !matches!(w[n - 1], 'l' | 's' | 'z') {
            w.pop();
        }
    }
    if w.len() > 4 && w.last() == Some(&'e') {
        w.pop();
    }
    w.into_iter().collect()
}
