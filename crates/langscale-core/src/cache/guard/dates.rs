//! Dates: months, weekdays and relative days ("tomorrow", "next week"); "may" and "march"
//! only where a month fits.

use super::words::{same_name, GuardWord};
use super::Signature;

impl Signature {
    pub(super) fn read_dates(&mut self, words: &[GuardWord]) {
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

    /// Date sets must be equal, except that "today" alone may stand against no date at all (a
    /// question without a date is usually about now), and that a date word may appear in the
    /// other text unread as a date ("may" as a verb) or with a typo ("Octobre").
    pub(super) fn dates_match(&self, other: &Signature) -> bool {
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
}

pub(super) fn date_of(
    w: &GuardWord,
    prev: Option<&GuardWord>,
    next: Option<&GuardWord>,
) -> Option<String> {
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
        // Holidays change opening hours, prices and schedules: "opening hours" / "holiday
        // opening hours" are two questions.
        "holiday" | "holidays" => Some("holiday".to_owned()),
        "christmas" | "xmas" => Some("christmas".to_owned()),
        "easter" | "thanksgiving" => Some(t.to_owned()),
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

pub(super) fn relative_period(rel: Option<&str>, period: &str) -> String {
    let rel = match rel {
        Some("next" | "coming") => "next",
        Some("last" | "previous" | "past") => "last",
        _ => "this",
    };
    format!("{rel} {period}")
}

pub(super) fn month_context(
    w: &GuardWord,
    prev: Option<&GuardWord>,
    next: Option<&GuardWord>,
) -> bool {
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
