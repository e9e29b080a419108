//! The built-in embedder of the semantic cache: hashed word and character n-grams, no model, no
//! network. Its words come from `text` (folding, contractions, stemming, word lists), the
//! same the guard reads.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::text::{
    expand_contraction, filler_phrases, fold, spans, stem, FILLER, REQUEST_VERBS, STOPWORDS,
};

/// Seed of the feature hash; changing it changes every stored vector.
const HASH_SEED: u64 = 0x6c61_6e67_7363_616c;

/// Weight of a word's unigram feature.
const W_WORD: f32 = 0.5;
/// L2 weight of all character n-grams of one word together (spread over its n-grams).
const W_CHARS: f32 = 1.0;
/// Weight of a bigram of two neighbouring kept words.
const W_BIGRAM: f32 = 0.5;
/// Weight multiplier of a word that looks like a name or a number.
const W_SALIENT: f32 = 1.5;
/// Weight of a word's sorted letters (typo tolerance for swapped neighbours).
const W_ANAGRAM: f32 = 1.5;
/// L2 weight of a word's one-letter deletions together (typo tolerance for any single edit).
const W_DELETIONS: f32 = 0.5;

/// Weight classes of words: filler is dropped, stopwords and request verbs count for little.
const W_STOP: f32 = 0.25;
const W_REQUEST: f32 = 0.5;
const W_CONTENT: f32 = 1.0;

/// Hashed word and character n-gram embedder: deterministic, offline, microseconds per text.
///
/// Words are lowercased, accent-folded and lightly stemmed; courtesy filler ("please", "hey",
/// "quick question") is dropped, function words count for little and words that look like names
/// or numbers (capitalised inside a sentence, or with digits) count for more. Each word gives
/// its stem, its sorted letters (a swap of neighbouring letters, the commonest typo, keeps
/// them), its one-letter deletions (any single edit keeps one) and its character 3–5-grams with
/// boundary marks; neighbouring words give bigrams. Features are hashed with xxh3 into `dim`
/// signed buckets, so that collisions cancel on average, with a sub-linear count for repeats,
/// then the vector is L2-normalised.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self::new(Self::DEFAULT_DIM)
    }
}

impl HashEmbedder {
    pub const DEFAULT_DIM: usize = 384;
    /// Cosine similarity from which a cached answer may be offered, tuned for this embedder with
    /// the guard (`guard.rs`) on: nearly all retyped questions score above it (most above 0.85),
    /// other questions about the same name stay below it, and the guard rejects the same
    /// question about another name, number, date or the opposite.
    pub const DEFAULT_THRESHOLD: f32 = 0.70;
    /// Smaller dimensions are raised to this: below it collisions swamp the signal.
    pub const MIN_DIM: usize = 16;

    /// An embedder producing vectors of `dim` floats (`dim` below [`Self::MIN_DIM`] is raised to it).
    pub fn new(dim: usize) -> Self {
        Self {
            dim: dim.max(Self::MIN_DIM),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// L2-normalised vector of length dim (all zeros only for text with no features, e.g. "" or "???").
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut features: Vec<(u64, f32)> = Vec::with_capacity(128);
        collect_features(text, &mut features);
        let mut v = vec![0.0f32; self.dim];
        add_features(&mut features, &mut v);
        normalise(&mut v);
        v
    }
}

/// Cosine similarity of two vectors (0 when either is all zeros); for the L2-normalised output
/// of [`HashEmbedder::embed`] this is their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

fn collect_features(text: &str, out: &mut Vec<(u64, f32)>) {
    let words = drop_filler_phrases(marked_words(text));
    let weighted: Vec<(String, f32)> = words
        .into_iter()
        .filter_map(|(w, salient)| {
            let mut weight = word_weight(&w);
            if salient && weight >= W_CONTENT {
                weight *= W_SALIENT;
            }
            (weight > 0.0).then_some((w, weight))
        })
        .collect();
    let mut prev: Option<(String, f32)> = None;
    for (word, weight) in &weighted {
        let stemmed = stem(word);
        let key = anagram_key(&stemmed);
        out.push((feature_hash(b'w', stemmed.as_bytes()), W_WORD * weight));
        out.push((feature_hash(b'a', key.as_bytes()), W_ANAGRAM * weight));
        push_char_ngrams(word, W_CHARS * weight, out);
        push_deletions(&stemmed, W_DELETIONS * weight, out);
        if let Some((p, pw)) = &prev {
            let mut bigram = Vec::with_capacity(p.len() + key.len() + 1);
            bigram.extend_from_slice(p.as_bytes());
            bigram.push(b' ');
            bigram.extend_from_slice(key.as_bytes());
            out.push((feature_hash(b'b', &bigram), W_BIGRAM * pw.min(*weight)));
        }
        prev = Some((key, *weight));
    }
}

/// The letters of `word` in sorted order: one swap of neighbouring letters, the commonest
/// typo, leaves it unchanged.
fn anagram_key(word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 4 {
        chars.sort_unstable();
    }
    chars.into_iter().collect()
}

/// The word with one letter deleted, each way: two words one edit apart share one of these.
fn push_deletions(word: &str, total: f32, out: &mut Vec<(u64, f32)>) {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < 4 || chars.len() > 24 {
        return;
    }
    let w = total / ((chars.len() + 1) as f32).sqrt();
    out.push((feature_hash(b'd', word.as_bytes()), w));
    let mut buf = String::with_capacity(word.len());
    for skip in 0..chars.len() {
        buf.clear();
        buf.extend(
            chars
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, c)| c),
        );
        out.push((feature_hash(b'd', buf.as_bytes()), w));
    }
}

fn word_weight(word: &str) -> f32 {
    if FILLER.contains(word) {
        0.0
    } else if STOPWORDS.contains(word) {
        W_STOP
    } else if REQUEST_VERBS.contains(word) {
        W_REQUEST
    } else {
        W_CONTENT
    }
}

/// Character 3–5-grams of `<word>`, together weighing `total` in L2 norm.
fn push_char_ngrams(word: &str, total: f32, out: &mut Vec<(u64, f32)>) {
    let mut chars: Vec<char> = Vec::with_capacity(word.len() + 2);
    chars.push('<');
    chars.extend(word.chars());
    chars.push('>');
    let count: usize = (3..=5).map(|n| chars.len().saturating_sub(n - 1)).sum();
    if count == 0 {
        return;
    }
    let w = total / (count as f32).sqrt();
    let mut buf = String::with_capacity(24);
    for n in 3..=5 {
        for gram in chars.windows(n) {
            buf.clear();
            buf.extend(gram);
            out.push((feature_hash(b'c', buf.as_bytes()), w));
        }
    }
}

fn feature_hash(kind: u8, bytes: &[u8]) -> u64 {
    // The kind byte keeps the word "ab" and the character gram "ab" apart.
    xxh3_64_with_seed(
        bytes,
        HASH_SEED ^ u64::from(kind).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    )
}

/// Merge repeated features with a sub-linear count (1 + ln n) and add them into `v` with a sign
/// taken from a hash bit independent of the bucket.
fn add_features(features: &mut [(u64, f32)], v: &mut [f32]) {
    features.sort_unstable_by_key(|&(h, _)| h);
    let dim = v.len() as u64;
    let mut i = 0;
    while i < features.len() {
        let (h, mut w) = features[i];
        let mut n = 1u32;
        let mut j = i + 1;
        while j < features.len() && features[j].0 == h {
            w = w.max(features[j].1);
            n += 1;
            j += 1;
        }
        let value = w * (1.0 + (n as f32).ln());
        let bucket = ((h >> 1) % dim) as usize;
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        if let Some(x) = v.get_mut(bucket) {
            *x += sign * value;
        }
        i = j;
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

fn drop_filler_phrases(words: Vec<(String, bool)>) -> Vec<(String, bool)> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    'outer: while i < words.len() {
        for phrase in filler_phrases() {
            let end = i + phrase.len();
            if end <= words.len()
                && words[i..end]
                    .iter()
                    .zip(phrase.iter())
                    .all(|((w, _), p)| w == p)
            {
                i = end;
                continue 'outer;
            }
        }
        out.push(words[i].clone());
        i += 1;
    }
    out
}

/// Lowercased, folded words of `text`, with contractions expanded ("don't" -> "do not",
/// "what's" -> "what") and programming names kept whole ("c++", "c#", "node.js", "two-factor"),
/// each marked when it looks like a name or a number: digits, or a capital that
/// sentence position does not explain ("Oslo" in "weather in Oslo", not "What").
fn marked_words(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut expanded = Vec::new();
    for (i, span) in spans(text).iter().enumerate() {
        let folded = fold(&span.text);
        if folded.is_empty() {
            continue;
        }
        let sentence_start = i == 0
            || span
                .lead
                .chars()
                .any(|c| matches!(c, '.' | '!' | '?' | ':' | ';' | '\n'));
        let capital = span
            .text
            .chars()
            .skip(usize::from(sentence_start))
            .any(char::is_uppercase);
        let salient = capital || span.text.chars().any(|c| c.is_ascii_digit());
        expanded.clear();
        expand_contraction(&folded, &mut expanded);
        out.extend(expanded.drain(..).map(|w| {
            let salient = salient && w != "i";
            (w, salient)
        }));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sim(a: &str, b: &str) -> f32 {
        let e = HashEmbedder::default();
        cosine(&e.embed(a), &e.embed(b))
    }

    #[test]
    fn deterministic_and_normalised() {
        let e = HashEmbedder::default();
        let a = e.embed("How do I reverse a list in Rust?");
        let b = e.embed("How do I reverse a list in Rust?");
        assert_eq!(a, b);
        assert_eq!(a.len(), HashEmbedder::DEFAULT_DIM);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        // A clone embeds identically.
        assert_eq!(e.clone().embed("abc def"), e.embed("abc def"));
    }

    #[test]
    fn dim_respected_and_clamped() {
        assert_eq!(HashEmbedder::new(1000).embed("hello world").len(), 1000);
        assert_eq!(HashEmbedder::new(64).dim(), 64);
        assert_eq!(HashEmbedder::new(0).dim(), HashEmbedder::MIN_DIM);
        assert_eq!(HashEmbedder::new(3).embed("some words").len(), 16);
    }

    #[test]
    fn empty_or_featureless_text_is_zero() {
        let e = HashEmbedder::default();
        assert!(e.embed("").iter().all(|&x| x == 0.0));
        assert!(e.embed("???  !!! ...").iter().all(|&x| x == 0.0));
        assert!(e.embed("please, thanks!").iter().all(|&x| x == 0.0));
        assert_eq!(cosine(&e.embed(""), &e.embed("")), 0.0);
    }

    #[test]
    fn retyped_text_is_very_similar() {
        let pairs = [
            (
                "How do I bake sourdough bread at home?",
                "how do i bake sourdough bread at home",
            ),
            (
                "How do I bake sourdough bread at home?",
                "hey, how do I bake sourdough bread at home please?",
            ),
            (
                "How do I bake sourdough bread at home?",
                "How do I bake sourdough braed at home?",
            ),
            (
                "What's the boiling point of water?",
                "whats the boiling point of water",
            ),
            (
                "Quick question: how tall is Mount Everest?",
                "how tall is mount everest?",
            ),
        ];
        for (a, b) in pairs {
            let s = sim(a, b);
            assert!(s > 0.9, "{a:?} vs {b:?}: {s}");
        }
    }

    #[test]
    fn unrelated_text_is_dissimilar() {
        let pairs = [
            (
                "How do I bake sourdough bread at home?",
                "What is the population of Canada?",
            ),
            (
                "Explain quantum entanglement simply.",
                "Best hiking trails near the coast",
            ),
            (
                "How do I sort a vector in C++?",
                "Who painted the Mona Lisa?",
            ),
        ];
        for (a, b) in pairs {
            let s = sim(a, b);
            assert!(s < 0.3, "{a:?} vs {b:?}: {s}");
        }
    }

    #[test]
    fn keeps_programming_names_and_compounds() {
        let w: Vec<String> = marked_words(
            "Is C++ or C# better? Use node.js, two-factor auth; 1,000 users don't care.",
        )
        .into_iter()
        .map(|(w, _)| w)
        .collect();
        for t in ["c++", "c#", "node.js", "two-factor", "1000", "do", "not"] {
            assert!(w.iter().any(|x| x == t), "{t} missing in {w:?}");
        }
        assert!(sim("sort a vector in C++", "sort a vector in C") < 0.95);
    }

    #[test]
    fn folds_accents_precomposed_and_decomposed() {
        let e = HashEmbedder::default();
        let composed = e.embed("Caf\u{e9} in Z\u{fc}rich");
        let decomposed = e.embed("Cafe\u{301} in Zu\u{308}rich");
        let plain = e.embed("Cafe in Zurich");
        assert_eq!(composed, decomposed);
        assert_eq!(composed, plain);
        assert!(cosine(&composed, &e.embed("cafe in zurich")) > 0.9);
    }

    #[test]
    fn stemmer_meets_inflections() {
        assert_eq!(stem("reversing"), stem("reverse"));
        assert_eq!(stem("reversed"), stem("reverse"));
        assert_eq!(stem("passwords"), stem("password"));
        assert_eq!(stem("resetting"), stem("reset"));
        assert_eq!(stem("cities"), stem("city"));
        assert_eq!(stem("c++"), "c++");
    }

    #[test]
    fn odd_input_does_not_panic() {
        let e = HashEmbedder::new(16);
        let long = "word ".repeat(20_000);
        let inputs = [
            "",
            " ",
            "\u{0}\u{1}\u{7f}\t\r\n",
            "😀🎉👍🏽 👨‍👩‍👧",
            "e\u{301}\u{302}\u{303}",
            "\u{301}\u{301}",
            "a-",
            "-a",
            "'s",
            "n't",
            "'",
            "1,",
            "1,00",
            "1,000,000.5",
            "+++###",
            "c++#",
            "日本語のテキスト",
            "مرحبا بالعالم",
            "İstanbul ǅ ß ﬁ",
            long.as_str(),
        ];
        for t in inputs {
            let v = e.embed(t);
            assert_eq!(v.len(), 16);
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }
}
