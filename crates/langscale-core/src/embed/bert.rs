//! The BERT encoder that all-MiniLM-L6-v2 is, for inference: token, position and type
//! embeddings, then per layer self-attention and a feed-forward block, each added to its input
//! and layer-normalised (HuggingFace's `BertModel` without pooler or dropout), on candle-nn's
//! layers and the checkpoint's own tensor names.
//!
//! Here rather than from candle-transformers: that crate is a zoo of a hundred models, and
//! compiling it (about 95 s on two cores, at the end of a cold build's longest chain) bought
//! this one encoder of a hundred lines. Its outputs are checked against sentence-transformers'
//! reference vectors (`tests/test_embeddings.py`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The feed-forward activation (`hidden_act` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    /// The exact GELU (erf), what BERT checkpoints call "gelu".
    Gelu,
    /// The tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluApproximate,
    Relu,
}

/// Only absolute positions are supported (every BERT sentence encoder uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbeddingType {
    #[default]
    Absolute,
}

/// What the encoder reads from `config.json` (other keys are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    head_size: usize,
}

impl Attention {
    fn load(vb: &VarBuilder, c: &Config) -> Result<Self> {
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let (h, me) = (c.hidden_size, vb.pp("self"));
        Ok(Self {
            query: linear(h, h, me.pp("query"))?,
            key: linear(h, h, me.pp("key"))?,
            value: linear(h, h, me.pp("value"))?,
            output: linear(h, h, vb.pp("output.dense"))?,
            norm: layer_norm(h, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
            heads: c.num_attention_heads,
            head_size: h / c.num_attention_heads,
        })
    }

    /// (batch, seq, hidden) -> (batch, heads, seq, head_size)
    fn split(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        xs.reshape((b, s, self.heads, self.head_size))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let q = self.split(&self.query.forward(xs)?)?;
        let k = self.split(&self.key.forward(xs)?)?;
        let v = self.split(&self.value.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_size as f64).sqrt())?;
        let probs = candle_nn::ops::softmax(&scores.broadcast_add(mask)?, D::Minus1)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(D::Minus2)?;
        self.norm.forward(&(self.output.forward(&context)? + xs)?)
    }
}

struct Layer {
    attention: Attention,
    intermediate: Linear,
    act: HiddenAct,
    output: Linear,
    norm: LayerNorm,
}

impl Layer {
    fn load(vb: &VarBuilder, c: &Config) -> Result<Self> {
        Ok(Self {
            attention: Attention::load(&vb.pp("attention"), c)?,
            intermediate: linear(
                c.hidden_size,
                c.intermediate_size,
                vb.pp("intermediate.dense"),
            )?,
            act: c.hidden_act,
            output: linear(c.intermediate_size, c.hidden_size, vb.pp("output.dense"))?,
            norm: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let attended = self.attention.forward(xs, mask)?;
        let inner = self.intermediate.forward(&attended)?;
        let inner = match self.act {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        self.norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}

/// The encoder: `forward` gives the last hidden state, (batch, seq, hidden).
pub struct BertModel {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
}

impl BertModel {
    /// From a checkpoint's tensors, named as HuggingFace names them (with or without the
    /// `bert.` prefix a model with heads puts before them).
    pub fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let e = vb.pp("embeddings");
        let h = c.hidden_size;
        Ok(Self {
            words: embedding(c.vocab_size, h, e.pp("word_embeddings"))?,
            positions: embedding(c.max_position_embeddings, h, e.pp("position_embeddings"))?,
            types: embedding(c.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            norm: layer_norm(h, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), c))
                .collect::<Result<_>>()?,
        })
    }

    /// `ids`, `types` and `mask` (1: a token, 0: padding) are (batch, seq) of u32.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let positions = Tensor::arange(0u32, u32::try_from(seq).unwrap_or(u32::MAX), ids.device())?;
        let xs = (self.words.forward(ids)? + self.types.forward(types)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        let mut xs = self.norm.forward(&xs)?;
        // Padding gets the lowest score there is: (1 - mask) * f32::MIN, per (batch, 1, 1, seq).
        let mask = mask.unsqueeze(1)?.unsqueeze(1)?.to_dtype(DType::F32)?;
        let mask = (mask.ones_like()? - &mask)?.affine(f64::from(f32::MIN), 0.0)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok(xs)
    }
}
