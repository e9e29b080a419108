//! all-MiniLM-L6-v2 (or any BERT sentence-transformers model with mean pooling) on candle's
//! CPU backend, tokenised by the `tokenizers` crate, read from a local directory: no network.
//! Output matches sentence-transformers: mean of the last hidden states over the attention
//! mask, then L2 normalisation, texts truncated to the model's `max_seq_length`.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use super::bert::{BertModel, Config as BertConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder};

/// Settings of a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniLmConfig {
    /// Texts per forward pass in `embed_batch` (texts are sorted by length first, so a batch
    /// pads little).
    pub batch_size: usize,
    /// Tokens kept per text (longer texts are truncated); None uses the model's own setting
    /// (`sentence_bert_config.json`, 256 for all-MiniLM-L6-v2).
    pub max_seq_length: Option<usize>,
}

impl Default for MiniLmConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_seq_length: None,
        }
    }
}

/// A sentence-embedding model loaded once and shared: `&self` everywhere, safe from many
/// threads (candle tensors are immutable, the tokenizer is read-only).
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    max_seq_length: usize,
    batch_size: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .field("max_seq_length", &self.max_seq_length)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

fn compute(err: impl std::fmt::Display) -> EmbedError {
    EmbedError::Compute(err.to_string())
}

fn read_file(dir: &Path, name: &str, what: &'static str) -> Result<Vec<u8>, EmbedError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => EmbedError::Missing {
            what,
            path: path.display().to_string(),
        },
        _ => EmbedError::Invalid(format!("cannot read {}: {err}", path.display())),
    })
}

fn read_json(dir: &Path, name: &str, what: &'static str) -> Result<serde_json::Value, EmbedError> {
    let bytes = read_file(dir, name, what)?;
    serde_json::from_slice(&bytes)
        .map_err(|err| EmbedError::Invalid(format!("{}: {err}", dir.join(name).display())))
}

/// Optional sentence-transformers settings; absent files mean the defaults.
fn optional_json(dir: &Path, name: &str) -> Result<Option<serde_json::Value>, EmbedError> {
    match read_json(dir, name, "settings") {
        Ok(value) => Ok(Some(value)),
        Err(EmbedError::Missing { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

impl MiniLm {
    /// The default threshold for this model in the semantic cache, chosen with
    /// `benches/bench_semantic.py` on the labelled pairs (guard on).
    pub const DEFAULT_THRESHOLD: f32 = 0.80;

    /// Load `config.json`, `tokenizer.json` and `model.safetensors` (plus the optional
    /// `sentence_bert_config.json` and `1_Pooling/config.json`) from `dir`.
    pub fn load(dir: &Path, config: MiniLmConfig) -> Result<Self, EmbedError> {
        if config.batch_size == 0 {
            return Err(EmbedError::Config(
                "batch_size must be at least 1, got 0".into(),
            ));
        }
        if !dir.is_dir() {
            return Err(EmbedError::Missing {
                what: "model directory",
                path: dir.display().to_string(),
            });
        }
        let bert: BertConfig =
            serde_json::from_value(read_json(dir, "config.json", "config.json")?).map_err(
                |err| EmbedError::Invalid(format!("{}: {err}", dir.join("config.json").display())),
            )?;
        check_pooling(dir)?;
        let model_limit = bert.max_position_embeddings;
        let own_limit = optional_json(dir, "sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .map_or(model_limit, |n| usize::try_from(n).unwrap_or(model_limit));
        let max_seq_length = config.max_seq_length.unwrap_or(own_limit);
        if max_seq_length < 2 || max_seq_length > model_limit {
            return Err(EmbedError::Config(format!(
                "max_seq_length must be between 2 and {model_limit} for this model, got {max_seq_length}"
            )));
        }

        let tokenizer_bytes = read_file(dir, "tokenizer.json", "tokenizer.json")?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes).map_err(|err| {
            EmbedError::Invalid(format!("{}: {err}", dir.join("tokenizer.json").display()))
        })?;
        // Padding is done per batch below; truncation as sentence-transformers does it.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(|err| EmbedError::Invalid(format!("tokenizer truncation: {err}")))?;

        let weights = read_file(dir, "model.safetensors", "model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|err| EmbedError::Invalid(format!("model.safetensors: {err}")))?;
        let model = BertModel::load(vb, &bert)
            .map_err(|err| EmbedError::Invalid(format!("model.safetensors: {err}")))?;
        Ok(Self {
            model,
            tokenizer,
            dim: bert.hidden_size,
            max_seq_length,
            batch_size: config.batch_size,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Token ids (special tokens included, truncated) of one text, as the model sees it.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        Ok(self.encode(text)?.get_ids().to_vec())
    }

    fn encode(&self, text: &str) -> Result<Encoding, EmbedError> {
        self.tokenizer.encode(text, true).map_err(compute)
    }

    /// One forward pass over encodings padded to the longest; mean-pooled, normalised rows.
    fn forward(&self, encodings: &[&Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = encodings.len();
        let width = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows * width];
        let mut mask = vec![0u32; rows * width];
        for (row, encoding) in encodings.iter().enumerate() {
            let start = row * width;
            let n = encoding.len().min(width);
            ids[start..start + n].copy_from_slice(&encoding.get_ids()[..n]);
            mask[start..start + n].copy_from_slice(&encoding.get_attention_mask()[..n]);
        }
        let device = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, width), device).map_err(compute)?;
        let mask = Tensor::from_vec(mask, (rows, width), device).map_err(compute)?;
        let type_ids = ids.zeros_like().map_err(compute)?;
        let hidden = self
            .model
            .forward(&ids, &type_ids, &mask)
            .map_err(compute)?;
        let weights = mask
            .to_dtype(DType::F32)
            .and_then(|m| m.unsqueeze(2))
            .map_err(compute)?;
        let summed = hidden
            .broadcast_mul(&weights)
            .and_then(|h| h.sum(1))
            .map_err(compute)?;
        let counts = weights
            .sum(1)
            .and_then(|c| c.clamp(1e-9f32, f32::MAX))
            .map_err(compute)?;
        let mean = summed.broadcast_div(&counts).map_err(compute)?;
        let mut vectors: Vec<Vec<f32>> = mean.to_vec2().map_err(compute)?;
        for v in &mut vectors {
            normalise(v);
        }
        Ok(vectors)
    }
}

/// sentence-transformers' `Normalize`: divide by the L2 norm (at least 1e-12).
fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v {
        *x /= norm;
    }
}

/// Only mean pooling is implemented; refuse a model configured for another one.
fn check_pooling(dir: &Path) -> Result<(), EmbedError> {
    let Some(pooling) = optional_json(&dir.join("1_Pooling"), "config.json")? else {
        return Ok(());
    };
    let on = |key: &str| pooling.get(key).and_then(serde_json::Value::as_bool) == Some(true);
    if on("pooling_mode_mean_tokens") {
        return Ok(());
    }
    let modes: Vec<&str> = [
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ]
    .into_iter()
    .filter(|k| on(k))
    .collect();
    Err(EmbedError::Invalid(format!(
        "only mean pooling is supported, {} asks for {}",
        dir.join("1_Pooling/config.json").display(),
        if modes.is_empty() {
            "no pooling".to_owned()
        } else {
            modes.join(", ")
        }
    )))
}

impl Embedder for MiniLm {
    fn dim(&self) -> usize {
        self.dim
    }

    fn default_threshold(&self) -> f32 {
        Self::DEFAULT_THRESHOLD
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let encoding = self.encode(text)?;
        self.forward(&[&encoding])?
            .pop()
            .ok_or_else(|| compute("the model returned no vector"))
    }

    /// Texts are tokenised, sorted by token count (longest first, as sentence-transformers
    /// does) and run at most `batch_size` at a time; a batch also ends before a text less
    /// than half as long as its first ([`batches`]), so no text pads to more than twice its
    /// length (one long text among short ones made every short one in its batch cost as
    /// much as the long one: 36 questions took 9x longer batched than one by one).
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| Reverse(encodings[i].len()));
        let lengths: Vec<usize> = order.iter().map(|&i| encodings[i].len()).collect();
        let mut out = vec![Vec::new(); texts.len()];
        for range in batches(&lengths, self.batch_size) {
            let chunk = &order[range];
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            for (&i, vector) in chunk.iter().zip(self.forward(&batch)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    }
}

/// Batches over token counts sorted longest first: consecutive ranges of at most `size`
/// texts, each ending before a text shorter than half its first (padding at most doubles a
/// text's work).
fn batches(lengths: &[usize], size: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < lengths.len() {
        let first = lengths[start];
        let mut end = start + 1;
        while end < lengths.len() && end - start < size && lengths[end] * 2 >= first {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cache::embed::cosine;

    const WORDS: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog",
        "ran", "far", "away", "##s", "how", "do", "i", "reset", "my", "password", "?",
    ];

    /// A tiny random BERT with a WordPiece tokenizer, written to a temporary directory.
    fn tiny_model(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("langscale-minilm-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        let (hidden, layers, inter, positions) = (16usize, 2usize, 32usize, 64usize);
        let config = serde_json::json!({
            "vocab_size": WORDS.len(), "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": 2, "intermediate_size": inter, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": positions,
            "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "model_type": "bert"
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 12, "do_lower_case": false}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension": 16, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        let vocab: serde_json::Map<String, serde_json::Value> = WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| ((*w).to_owned(), serde_json::json!(i)))
            .collect();
        let tokenizer = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                   "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
            "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}
        });
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();

        let dev = Device::Cpu;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        // Fixed pseudo-random weights (candle cannot seed its CPU generator): with fresh random
        // ones each run, a draw now and then made two texts' vectors all but identical and the
        // "different texts differ" check failed. Uniform in ±0.866: standard deviation 0.5.
        let mut put = |name: &str, shape: &[usize]| {
            let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            let values: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.732
                })
                .collect();
            let t = Tensor::from_vec(values, shape, &dev).unwrap();
            tensors.insert(name.to_owned(), t);
        };
        put("embeddings.word_embeddings.weight", &[WORDS.len(), hidden]);
        put(
            "embeddings.position_embeddings.weight",
            &[positions, hidden],
        );
        put("embeddings.token_type_embeddings.weight", &[2, hidden]);
        put("embeddings.LayerNorm.weight", &[hidden]);
        put("embeddings.LayerNorm.bias", &[hidden]);
        for l in 0..layers {
            let p = format!("encoder.layer.{l}");
            for m in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
            ] {
                put(&format!("{p}.{m}.weight"), &[hidden, hidden]);
                put(&format!("{p}.{m}.bias"), &[hidden]);
            }
            put(&format!("{p}.attention.output.LayerNorm.weight"), &[hidden]);
            put(&format!("{p}.attention.output.LayerNorm.bias"), &[hidden]);
            put(&format!("{p}.intermediate.dense.weight"), &[inter, hidden]);
            put(&format!("{p}.intermediate.dense.bias"), &[inter]);
            put(&format!("{p}.output.dense.weight"), &[hidden, inter]);
            put(&format!("{p}.output.dense.bias"), &[hidden]);
            put(&format!("{p}.output.LayerNorm.weight"), &[hidden]);
            put(&format!("{p}.output.LayerNorm.bias"), &[hidden]);
        }
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        dir
    }

    #[test]
    fn batches_never_pad_a_text_past_twice_its_length() {
        assert_eq!(batches(&[], 32), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(batches(&[256, 12, 11, 10], 32), vec![0..1, 1..4]);
        assert_eq!(batches(&[10, 9, 8, 7, 6, 5], 2), vec![0..2, 2..4, 4..6]);
        assert_eq!(batches(&[8, 4, 3], 0), vec![0..1, 1..2, 2..3]);
        let lengths: Vec<usize> = (1..=200).rev().collect();
        let ranges = batches(&lengths, 16);
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), lengths.len());
        for r in ranges {
            assert!(r.len() <= 16);
            assert!(lengths[r.clone()]
                .iter()
                .all(|&n| n * 2 >= lengths[r.start]));
        }
    }

    #[test]
    fn vectors_are_unit_length_and_padding_does_not_change_them() {
        let dir = tiny_model("pad");
        let m = MiniLm::load(
            &dir,
            MiniLmConfig {
                batch_size: 2,
                max_seq_length: None,
            },
        )
        .unwrap();
        assert_eq!(m.dim(), 16);
        assert_eq!(m.max_seq_length(), 12);
        let texts = [
            "the cat sat",
            "how do i reset my password ?",
            "a dog ran far away on the mat the cat sat",
            "cats",
        ];
        let batch = m.embed_batch(&texts).unwrap();
        assert_eq!(batch.len(), texts.len());
        for (text, v) in texts.iter().zip(&batch) {
            assert_eq!(v.len(), 16);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
            // Alone (no padding) and in a padded batch: the same vector.
            let alone = m.embed(text).unwrap();
            assert!(cosine(&alone, v) > 0.99999, "{text}");
        }
        assert!(
            cosine(&batch[0], &batch[1]) < 0.9999,
            "different texts differ"
        );
        assert!(m.embed_batch(&[]).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_encoder_saved_under_a_bert_prefix_loads_the_same_and_bad_shapes_are_named() {
        // Checkpoints of models with heads name the encoder's tensors `bert.…`.
        let dir = tiny_model("prefix");
        let plain = MiniLm::load(&dir, MiniLmConfig::default()).unwrap();
        let before = plain.embed("the cat sat on the mat").unwrap();
        let weights = dir.join("model.safetensors");
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(&weights, &Device::Cpu)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (format!("bert.{k}"), v))
                .collect();
        candle_core::safetensors::save(&tensors, &weights).unwrap();
        let prefixed = MiniLm::load(&dir, MiniLmConfig::default()).unwrap();
        let after = prefixed.embed("the cat sat on the mat").unwrap();
        assert!(cosine(&before, &after) > 0.99999);
        // 16 wide cannot split into 3 heads: named, not a panic.
        let config = dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        c["num_attention_heads"] = 3.into();
        std::fs::write(&config, c.to_string()).unwrap();
        let err = MiniLm::load(&dir, MiniLmConfig::default()).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads 3"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn long_texts_are_truncated_to_max_seq_length() {
        let dir = tiny_model("trunc");
        let m = MiniLm::load(&dir, MiniLmConfig::default()).unwrap();
        let long = "the cat sat on the mat ".repeat(50);
        assert_eq!(m.tokenize(&long).unwrap().len(), 12);
        assert_eq!(m.tokenize("the cat").unwrap(), vec![2, 5, 6, 3]);
        assert_eq!(m.embed(&long).unwrap().len(), 16);
        let short = MiniLm::load(
            &dir,
            MiniLmConfig {
                max_seq_length: Some(4),
                ..MiniLmConfig::default()
            },
        )
        .unwrap();
        assert_eq!(short.tokenize(&long).unwrap().len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_or_bad_files_are_clear_errors() {
        let err =
            MiniLm::load(Path::new("/nonexistent/minilm"), MiniLmConfig::default()).unwrap_err();
        assert!(
            matches!(
                err,
                EmbedError::Missing {
                    what: "model directory",
                    ..
                }
            ),
            "{err}"
        );

        let dir = tiny_model("bad");
        for bad in [0usize, 1, 65] {
            let config = MiniLmConfig {
                max_seq_length: Some(bad),
                ..MiniLmConfig::default()
            };
            assert!(
                matches!(MiniLm::load(&dir, config), Err(EmbedError::Config(_))),
                "{bad}"
            );
        }
        let config = MiniLmConfig {
            batch_size: 0,
            ..MiniLmConfig::default()
        };
        assert!(matches!(
            MiniLm::load(&dir, config),
            Err(EmbedError::Config(_))
        ));

        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        )
        .unwrap();
        let err = MiniLm::load(&dir, MiniLmConfig::default()).unwrap_err();
        assert!(err.to_string().contains("pooling_mode_cls_token"), "{err}");
        std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();

        std::fs::write(dir.join("model.safetensors"), b"not weights").unwrap();
        let err = MiniLm::load(&dir, MiniLmConfig::default()).unwrap_err();
        assert!(matches!(err, EmbedError::Invalid(_)), "{err}");
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        let err = MiniLm::load(&dir, MiniLmConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("model.safetensors not found"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shared_between_threads() {
        let dir = tiny_model("threads");
        let m = std::sync::Arc::new(MiniLm::load(&dir, MiniLmConfig::default()).unwrap());
        let expected = m.embed("the dog ran").unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || m.embed("the dog ran").unwrap())
            })
            .collect();
        for h in handles {
            assert!(cosine(&h.join().unwrap(), &expected) > 0.99999);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
