//! Order: the same things in an order that changes the meaning ("is 5 greater than 7" /
//! "is 7 greater than 5"), possessors swapped ("Alice's manager" / "Bob's manager").

use super::words::{typo_of, GuardWord};
use crate::cache::text::{is_filler, is_function_word};

/// Words that join two things without ordering them ("Rome or Athens", "TCP and UDP").
pub(super) fn is_coordinator(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "vs" | "versus" | "v" | "nor" | "plus" | "a" | "an" | "the"
    )
}

/// The words of a short text in order for [`order_swapped`]: courtesy dropped, a possessive
/// followed by its own "'s" word.
pub(super) fn order_sequence(words: &[GuardWord]) -> Vec<String> {
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
pub(super) fn order_swapped(a: &[String], b: &[String]) -> bool {
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
pub(super) fn possessor_swapped(a: &[String], b: &[String]) -> bool {
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
