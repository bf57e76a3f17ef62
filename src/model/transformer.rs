//! The decoder-only transformer every supported family is an instance of. Each architecture file
//! (`llama.rs`, `qwen.rs`, `gemma.rs`, `phi3.rs`, `gpt2.rs`) only reads its metadata into a
//! [`Config`] and names its tensors; the differences between families are the options below, and
//! `forward` reads top to bottom with each option where it applies:
//!
//! ```text
//! x = embed(tokens) [* sqrt(hidden)] [+ pos_embed(positions)]
//! per layer:
//!   a = norm(x)
//!   q, k, v = Wq a [+ bq], Wk a [+ bk], Wv a [+ bv]           (fused QKV is split at load)
//!   [q, k = rmsnorm per head (q, k)]
//!   q, k = rope(q, k)                    (per-layer base: local for sliding layers; none for GPT-2)
//!   o = Wo attention(q, K, V; scale, sliding window, soft-cap) [+ bo]
//!   x = x + [post_norm](o)
//!   f = norm(x)
//!   x = x + [post_norm](Wdown act(Wgate f, Wup f) [+ bdown])   (act: SwiGLU, GeGLU, or GELU(Wup f))
//! logits = head(norm(x)) [soft-capped]
//! ```
//!
//! Tensor names are llama.cpp's GGUF names (gguf-py/gguf/constants.py); a Hugging Face folder is
//! read through its architecture's name map.

use super::{KvCache, Logits, ModelInfo, Scratch, ScratchBufs, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KvType, Recorder, Weight};
use crate::ops::attention::Attention;
use crate::ops::elementwise::{add, add_bias, geglu, swiglu, Unary};
use crate::ops::embed::Embed;
use crate::ops::kv::KvStore;
use crate::ops::matmul::{fused_rows_apply, Glu, GluRows, MatMul, QkvRope, QkvRows};
use crate::ops::norm::{LayerNorm, RmsNorm};
use crate::ops::pairs::{pairs_apply, GluPairs, QkvPairs, RmsIn};
use crate::ops::rope::{Rope, RopeConfig};
use crate::ops::top_k::{self, TopK};
use crate::ops::Positions;

/// Most tokens one forward pass takes: a sliding-window layer's ring cache holds its window plus
/// this many positions (the engine's batches stay at or below it).
pub const MAX_BATCH: usize = 512;

/// Which normalisation the layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// RMSNorm with a weight.
    Rms,
    /// LayerNorm with weight and bias (GPT-2).
    Layer,
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `silu(gate) * up` (llama, qwen, mistral, phi3).
    SwiGlu,
    /// `gelu_tanh(gate) * up` (gemma).
    GeGlu,
    /// `gelu_tanh(up)`, no gate (GPT-2).
    Gelu,
}

/// Phi-3's `longrope`: per-frequency divisors for short and long contexts. The long ones apply
/// once the sequence is longer than `orig_ctx` (transformers' rule).
#[derive(Clone, Debug)]
pub struct LongRope {
    pub short: Vec<f32>,
    pub long: Vec<f32>,
    pub orig_ctx: usize,
}

/// Everything `forward` needs to know about an architecture, read from metadata.
#[derive(Clone, Debug)]
pub struct Config {
    /// The GGUF architecture name (`llama`, `qwen2`, `gemma3`, ...).
    pub arch: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub ctx_train: usize,
    pub norm: Norm,
    pub eps: f32,
    /// RoPE of the global layers; `None`: learned absolute positions (`position_embd`).
    pub rope: Option<RopeConfig>,
    /// RoPE of the sliding-window layers where it differs (Gemma 3's local base).
    pub rope_local: Option<RopeConfig>,
    /// Per-frequency divisors from the configuration (Llama 3.1 scaling in a Hugging Face
    /// config; a GGUF carries them as the tensor `rope_freqs.weight`).
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Phi-3 longrope factors from a Hugging Face config (a GGUF carries the tensors
    /// `rope_factors_short.weight` / `rope_factors_long.weight`); `long_rope_ctx` is the context
    /// above which the long ones apply.
    pub long_rope: Option<LongRope>,
    pub long_rope_ctx: usize,
    pub act: Act,
    /// Biases on Q, K and V (qwen2, GPT-2).
    pub qkv_bias: bool,
    /// Biases on the attention output and both feed-forward projections (GPT-2).
    pub out_bias: bool,
    /// RMSNorm over each head of Q and K before RoPE (qwen3, gemma3).
    pub qk_norm: bool,
    /// Norms on the attention and feed-forward outputs before the residual add (gemma2/3).
    pub post_norms: bool,
    /// Multiplies the embeddings (gemma: sqrt(hidden)).
    pub embed_scale: Option<f32>,
    /// Multiplies the attention scores (1/sqrt(head_dim), or gemma's query_pre_attn_scalar^-0.5).
    pub attn_scale: f32,
    /// Attention logit soft-cap, 0 = off (gemma2).
    pub attn_softcap: f32,
    /// Final logit soft-cap, 0 = off (gemma2).
    pub final_softcap: f32,
    /// Sliding window of each layer, 0 = global attention.
    pub windows: Vec<usize>,
    /// The output head shares the embedding table.
    pub tied_output: bool,
    /// Q/K/V are one tensor `attn_qkv` (phi3, GPT-2), split by rows at load.
    pub fused_qkv: bool,
    /// Gate and up are one tensor `ffn_up` of 2*ffn rows, gate first (phi3), split at load.
    pub fused_gate_up: bool,
    /// Added to every norm weight read from a Hugging Face folder (gemma stores `w` and computes
    /// `1 + w`; llama.cpp's converter adds the 1 into the GGUF).
    pub hf_norm_shift: f32,
}

impl Config {
    /// The same sliding window on every layer (Mistral, Phi-3) when `window` is given and not 0.
    pub fn slide_every_layer(&mut self, window: Option<usize>) {
        if let Some(w) = window.filter(|&w| w > 0) {
            self.windows = vec![w; self.n_layers];
        }
    }

    /// A configuration with the llama defaults for everything but the shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn base(
        arch: &str,
        n_layers: usize,
        hidden: usize,
        ffn: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        vocab: usize,
        ctx_train: usize,
    ) -> Config {
        Config {
            arch: arch.to_string(),
            n_layers,
            hidden,
            ffn,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            ctx_train,
            norm: Norm::Rms,
            eps: 1e-5,
            rope: None,
            rope_local: None,
            rope_freq_factors: None,
            long_rope: None,
            long_rope_ctx: 0,
            act: Act::SwiGlu,
            qkv_bias: false,
            out_bias: false,
            qk_norm: false,
            post_norms: false,
            embed_scale: None,
            attn_scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            attn_softcap: 0.0,
            final_softcap: 0.0,
            windows: vec![0; n_layers],
            tied_output: false,
            fused_qkv: false,
            fused_gate_up: false,
            hf_norm_shift: 0.0,
        }
    }

    /// Checks the shape invariants every architecture shares.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Model(format!("{}: {msg}", self.arch)));
        for (name, v) in [
            ("block count", self.n_layers),
            ("embedding length", self.hidden),
            ("feed-forward length", self.ffn),
            ("head count", self.n_heads),
            ("KV head count", self.n_kv_heads),
            ("head dimension", self.head_dim),
            ("vocabulary size", self.vocab),
            ("context length", self.ctx_train),
        ] {
            if v == 0 {
                return bad(format!("{name} is 0"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} attention heads is not a multiple of {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim > crate::ops::attention::MAX_HEAD_DIM {
            return bad(format!(
                "head dimension {} is over the supported {}",
                self.head_dim,
                crate::ops::attention::MAX_HEAD_DIM
            ));
        }
        for rope in self.rope.iter().chain(&self.rope_local) {
            if rope.n_rot == 0 || rope.n_rot % 2 != 0 || rope.n_rot > self.head_dim {
                return bad(format!(
                    "{} rotary dimensions must be even and at most the head dimension {}",
                    rope.n_rot, self.head_dim
                ));
            }
        }
        if self.windows.len() != self.n_layers {
            return bad(format!(
                "{} sliding-window entries for {} layers",
                self.windows.len(),
                self.n_layers
            ));
        }
        if !(self.attn_softcap >= 0.0 && self.final_softcap >= 0.0) {
            return bad("soft-caps must be >= 0".into());
        }
        if self.fused_gate_up && self.act == Act::Gelu {
            return bad("a fused gate/up projection needs a gated activation".into());
        }
        Ok(())
    }

    /// Every option, for `flint info`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![
            ("layers".into(), self.n_layers.to_string()),
            ("hidden".into(), self.hidden.to_string()),
            ("ffn".into(), self.ffn.to_string()),
            ("heads".into(), self.n_heads.to_string()),
            ("kv_heads".into(), self.n_kv_heads.to_string()),
            ("head_dim".into(), self.head_dim.to_string()),
            ("vocab".into(), self.vocab.to_string()),
            ("context_train".into(), self.ctx_train.to_string()),
            ("norm".into(), format!("{:?} (eps {})", self.norm, self.eps)),
            ("activation".into(), format!("{:?}", self.act)),
            ("attention_scale".into(), self.attn_scale.to_string()),
        ];
        match &self.rope {
            Some(r) => v.push(("rope".into(), describe_rope(r))),
            None => v.push(("positions".into(), "learned (position_embd)".into())),
        }
        if let Some(r) = &self.rope_local {
            v.push(("rope_local".into(), describe_rope(r)));
        }
        if self.rope_freq_factors.is_some() {
            v.push(("rope_freq_factors".into(), "from config".into()));
        }
        if self.long_rope.is_some() || self.long_rope_ctx > 0 {
            v.push((
                "long_rope".into(),
                format!(
                    "short/long factors, long above {} tokens",
                    self.long_rope_ctx
                ),
            ));
        }
        let flags = [
            ("qkv_bias", self.qkv_bias),
            ("output_biases", self.out_bias),
            ("qk_norm", self.qk_norm),
            ("post_norms", self.post_norms),
            ("fused_qkv", self.fused_qkv),
            ("fused_gate_up", self.fused_gate_up),
            ("tied_output", self.tied_output),
        ];
        for (name, on) in flags {
            if on {
                v.push((name.into(), "yes".into()));
            }
        }
        if let Some(s) = self.embed_scale {
            v.push(("embedding_scale".into(), s.to_string()));
        }
        if self.attn_softcap > 0.0 {
            v.push(("attention_softcap".into(), self.attn_softcap.to_string()));
        }
        if self.final_softcap > 0.0 {
            v.push(("final_logit_softcap".into(), self.final_softcap.to_string()));
        }
        if self.windows.iter().any(|&w| w > 0) {
            let layers: Vec<String> = self
                .windows
                .iter()
                .enumerate()
                .filter(|(_, &w)| w > 0)
                .map(|(i, _)| i.to_string())
                .collect();
            let w = self.windows.iter().copied().max().unwrap_or(0);
            v.push((
                "sliding_window".into(),
                format!("{w} on layers {}", layers.join(",")),
            ));
        }
        v
    }
}

fn describe_rope(r: &RopeConfig) -> String {
    let mut s = format!("{:?}, {} dims, base {}", r.mode, r.n_rot, r.freq_base);
    if r.freq_scale != 1.0 {
        s += &format!(", freq_scale {}", r.freq_scale);
    }
    if r.ext_factor != 0.0 {
        s += &format!(", yarn (orig ctx {})", r.n_ctx_orig);
    }
    if r.attn_factor != 1.0 {
        s += &format!(", attn_factor {}", r.attn_factor);
    }
    s
}

/// A norm's weight and, for LayerNorm, its bias.
struct NormW {
    w: wgpu::Buffer,
    b: Option<wgpu::Buffer>,
}

struct Layer {
    attn_norm: NormW,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    bq: Option<wgpu::Buffer>,
    bk: Option<wgpu::Buffer>,
    bv: Option<wgpu::Buffer>,
    q_norm: Option<wgpu::Buffer>,
    k_norm: Option<wgpu::Buffer>,
    wo: Weight,
    bo: Option<wgpu::Buffer>,
    post_attn_norm: Option<NormW>,
    ffn_norm: NormW,
    w_gate: Option<Weight>,
    w_up: Weight,
    b_up: Option<wgpu::Buffer>,
    w_down: Weight,
    b_down: Option<wgpu::Buffer>,
    post_ffn_norm: Option<NormW>,
}

/// A model with its weights on the GPU.
pub struct Transformer {
    pub cfg: Config,
    tok_embd: Weight,
    pos_embd: Option<Weight>,
    layers: Vec<Layer>,
    out_norm: NormW,
    /// `None` when tied to the embedding table.
    output: Option<Weight>,
    rope_freqs: Option<wgpu::Buffer>,
    rope_short: Option<wgpu::Buffer>,
    rope_long: Option<wgpu::Buffer>,
    dummy: wgpu::Buffer,
}

impl Transformer {
    /// Uploads every weight, checking each tensor's shape against the configuration.
    pub fn load(gpu: &Gpu, src: &mut TensorSource, cfg: Config) -> Result<Transformer> {
        cfg.validate()?;
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let q_dim = cfg.n_heads * hd;
        let kv_dim = cfg.n_kv_heads * hd;
        let shift = if src.is_hf() { cfg.hf_norm_shift } else { 0.0 };
        let norm = |src: &mut TensorSource, name: &str| -> Result<NormW> {
            Ok(NormW {
                w: src.vector(gpu, &format!("{name}.weight"), h, shift)?,
                b: match cfg.norm {
                    Norm::Layer => Some(src.vector(gpu, &format!("{name}.bias"), h, 0.0)?),
                    Norm::Rms => None,
                },
            })
        };
        let tok_embd = src.weight(gpu, "token_embd.weight", cfg.vocab, h)?;
        let pos_embd = match cfg.rope {
            None => Some(src.weight(gpu, "position_embd.weight", cfg.ctx_train, h)?),
            Some(_) => None,
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let (mut wq, mut wk, mut wv, bq, bk, bv);
            if cfg.fused_qkv {
                let name = n("attn_qkv.weight");
                let rows = q_dim + 2 * kv_dim;
                wq = src.weight_rows(gpu, &name, rows, h, 0, q_dim)?;
                wk = src.weight_rows(gpu, &name, rows, h, q_dim, kv_dim)?;
                wv = src.weight_rows(gpu, &name, rows, h, q_dim + kv_dim, kv_dim)?;
                if cfg.qkv_bias {
                    let name = n("attn_qkv.bias");
                    bq = Some(src.vector_rows(gpu, &name, rows, 0, q_dim)?);
                    bk = Some(src.vector_rows(gpu, &name, rows, q_dim, kv_dim)?);
                    bv = Some(src.vector_rows(gpu, &name, rows, q_dim + kv_dim, kv_dim)?);
                } else {
                    (bq, bk, bv) = (None, None, None);
                }
            } else {
                wq = src.weight(gpu, &n("attn_q.weight"), q_dim, h)?;
                wk = src.weight(gpu, &n("attn_k.weight"), kv_dim, h)?;
                wv = src.weight(gpu, &n("attn_v.weight"), kv_dim, h)?;
                if cfg.qkv_bias {
                    bq = Some(src.vector(gpu, &n("attn_q.bias"), q_dim, 0.0)?);
                    bk = Some(src.vector(gpu, &n("attn_k.bias"), kv_dim, 0.0)?);
                    bv = Some(src.vector(gpu, &n("attn_v.bias"), kv_dim, 0.0)?);
                } else {
                    (bq, bk, bv) = (None, None, None);
                }
            }
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(src.vector(gpu, &n("attn_q_norm.weight"), hd, shift)?),
                    Some(src.vector(gpu, &n("attn_k_norm.weight"), hd, shift)?),
                )
            } else {
                (None, None)
            };
            let (mut w_gate, mut w_up) = if cfg.fused_gate_up {
                let name = n("ffn_up.weight");
                (
                    Some(src.weight_rows(gpu, &name, 2 * cfg.ffn, h, 0, cfg.ffn)?),
                    src.weight_rows(gpu, &name, 2 * cfg.ffn, h, cfg.ffn, cfg.ffn)?,
                )
            } else if cfg.act == Act::Gelu {
                (None, src.weight(gpu, &n("ffn_up.weight"), cfg.ffn, h)?)
            } else {
                (
                    Some(src.weight(gpu, &n("ffn_gate.weight"), cfg.ffn, h)?),
                    src.weight(gpu, &n("ffn_up.weight"), cfg.ffn, h)?,
                )
            };
            // One buffer each for Q/K/V and for gate/up (where types and shapes agree), so decode
            // on CPU-type adapters runs each set as one dispatch (qkv_rows.wgsl, glu_rows.wgsl).
            Weight::fuse(gpu, &mut [&mut wq, &mut wk, &mut wv])?;
            if let Some(g) = w_gate.as_mut() {
                Weight::fuse(gpu, &mut [g, &mut w_up])?;
            }
            let bias = |src: &mut TensorSource, s: &str, len: usize| -> Result<_> {
                match cfg.out_bias {
                    true => Ok(Some(src.vector(gpu, &n(s), len, 0.0)?)),
                    false => Ok(None),
                }
            };
            layers.push(Layer {
                attn_norm: norm(src, &n("attn_norm"))?,
                wq,
                wk,
                wv,
                bq,
                bk,
                bv,
                q_norm,
                k_norm,
                wo: src.weight(gpu, &n("attn_output.weight"), h, q_dim)?,
                bo: bias(src, "attn_output.bias", h)?,
                post_attn_norm: match cfg.post_norms {
                    true => Some(norm(src, &n("post_attention_norm"))?),
                    false => None,
                },
                ffn_norm: norm(src, &n("ffn_norm"))?,
                w_gate,
                w_up,
                b_up: bias(src, "ffn_up.bias", cfg.ffn)?,
                w_down: src.weight(gpu, &n("ffn_down.weight"), h, cfg.ffn)?,
                b_down: bias(src, "ffn_down.bias", h)?,
                post_ffn_norm: match cfg.post_norms {
                    true => Some(norm(src, &n("post_ffw_norm"))?),
                    false => None,
                },
            });
        }
        let out_norm = norm(src, "output_norm")?;
        let output = if cfg.tied_output {
            None
        } else {
            Some(src.weight(gpu, "output.weight", cfg.vocab, h)?)
        };
        let half_rot = cfg.rope.as_ref().map_or(0, |r| r.n_rot / 2);
        let rope_freqs = if src.has("rope_freqs.weight") {
            Some(src.vector(gpu, "rope_freqs.weight", half_rot, 0.0)?)
        } else {
            cfg.rope_freq_factors
                .as_ref()
                .map(|f| upload_factors(gpu, "rope_freqs", f, half_rot))
                .transpose()?
        };
        let (rope_short, rope_long) = if src.has("rope_factors_long.weight") {
            (
                Some(src.vector(gpu, "rope_factors_short.weight", half_rot, 0.0)?),
                Some(src.vector(gpu, "rope_factors_long.weight", half_rot, 0.0)?),
            )
        } else if let Some(lr) = &cfg.long_rope {
            (
                Some(upload_factors(gpu, "rope_short", &lr.short, half_rot)?),
                Some(upload_factors(gpu, "rope_long", &lr.long, half_rot)?),
            )
        } else {
            (None, None)
        };
        let dummy = gpu.zeros("dummy", 16)?;
        Ok(Transformer {
            cfg,
            tok_embd,
            pos_embd,
            layers,
            out_norm,
            output,
            rope_freqs,
            rope_short,
            rope_long,
            dummy,
        })
    }

    /// Summary for `flint info`.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: self.cfg.arch.clone(),
            params: self.cfg.describe(),
        }
    }

    /// A KV cache for `ctx` positions; a sliding-window layer gets a ring of `window +`
    /// [`MAX_BATCH`] positions when that is smaller than `ctx`.
    pub fn new_cache(&self, gpu: &Gpu, ctx: usize) -> Result<KvCache> {
        self.new_cache_with_slack(gpu, ctx, MAX_BATCH)
    }

    /// A KV cache whose sliding-window rings hold `window + slack` positions: forward passes on
    /// it then take at most `slack + 1` tokens at a time.
    pub fn new_cache_with_slack(&self, gpu: &Gpu, ctx: usize, slack: usize) -> Result<KvCache> {
        if self.cfg.rope.is_none() && ctx > self.cfg.ctx_train {
            return Err(Error::InvalidArgument(format!(
                "a context of {ctx} tokens is over the {} learned positions of this model",
                self.cfg.ctx_train
            )));
        }
        let rows = self
            .cfg
            .windows
            .iter()
            .map(|&w| if w > 0 { ctx.min(w + slack) } else { ctx })
            .collect();
        KvCache::new(gpu, ctx, self.cfg.n_kv_heads, self.cfg.head_dim, rows)
    }

    /// Runs `tokens` (positions `cache.len..`) through the model in one GPU submission, appends
    /// their keys/values to `cache`, and returns the logits asked for (blocking, native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_async(gpu, cache, scratch, tokens, want))
    }

    /// [`Transformer::forward`], awaiting the logits readback (the web's path).
    pub async fn forward_async(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        let mut seqs = [Seq { cache, tokens }];
        let mut out = self
            .forward_many_async(gpu, &mut seqs, scratch, want)
            .await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// [`Transformer::forward_many_async`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_many(
        &self,
        gpu: &Gpu,
        seqs: &mut [Seq],
        scratch: &mut Scratch,
        want: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.forward_many_async(gpu, seqs, scratch, want))
    }

    /// Runs several sequences through the model in one GPU submission: the tokens of all of them
    /// are rows of the same matrix products and norms; RoPE, the KV-cache append and attention
    /// run per sequence on its rows and its own cache. Returns each sequence's last-token logits
    /// (or, for a single sequence with [`Logits::All`], every token's).
    ///
    /// The kernel of each product is chosen by the most tokens any one sequence brings, so a
    /// sequence's rows are computed exactly as when it runs alone with the same tokens.
    pub async fn forward_many_async(
        &self,
        gpu: &Gpu,
        seqs: &mut [Seq<'_>],
        scratch: &mut Scratch,
        want: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        let (enc, spans, rows) = self.encode_many(gpu, seqs, scratch, want, None)?;
        gpu.submit(enc);
        let bufs = scratch.bufs()?;
        let (buf, width) = match want {
            Logits::Hidden => (&bufs.last, self.cfg.hidden),
            _ => (&bufs.logits, self.cfg.vocab),
        };
        let logits = gpu.read_f32_async(buf, 0, rows * width).await?;
        for (sq, span) in seqs.iter_mut().zip(&spans) {
            sq.cache.len = span.pos0 + span.tokens;
        }
        Ok(match want {
            Logits::All => vec![logits],
            Logits::Last | Logits::Hidden => logits.chunks(width).map(|r| r.to_vec()).collect(),
        })
    }

    /// [`Transformer::forward_many_async`] that ranks each sequence's last-token logits on the
    /// GPU and reads back only the `k` best of each, as (token id, logit), best first, in the
    /// CPU sampler's order ([`crate::ops::top_k`]): `8 k` bytes per sequence instead of the
    /// vocabulary's logits. `k = 1` is greedy argmax.
    pub async fn top_k_many_async(
        &self,
        gpu: &Gpu,
        seqs: &mut [Seq<'_>],
        scratch: &mut Scratch,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.top_k_rows_async(gpu, seqs, scratch, k, Logits::Last)
            .await
    }

    /// [`Transformer::top_k_many_async`] over the rows `want` asks for: each sequence's last
    /// token, or ([`Logits::All`], one sequence) every token (speculative decoding's check).
    pub async fn top_k_rows_async(
        &self,
        gpu: &Gpu,
        seqs: &mut [Seq<'_>],
        scratch: &mut Scratch,
        k: usize,
        want: Logits,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        if want == Logits::Hidden {
            return Err(Error::InvalidArgument(
                "top-k: hidden states have no logits to rank".into(),
            ));
        }
        let (mut enc, spans, rows) = self.encode_many(gpu, seqs, scratch, want, None)?;
        let (op, out) = self.encode_top_k(gpu, &mut enc, scratch, rows, k)?;
        gpu.submit(enc);
        let bytes = gpu.read_async(&out, 0, (op.out_words() * 4) as u64).await?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes[..op.out_words() * 4]);
        for (sq, span) in seqs.iter_mut().zip(&spans) {
            sq.cache.len = span.pos0 + span.tokens;
        }
        Ok(words.chunks(2 * k).map(top_k::decode).collect())
    }

    /// One greedy decode step of one sequence, recorded and submitted without waiting for
    /// anything (the overlapped decode loop, `Engine::generate_async`): `input` is fed at
    /// position `cache.len`, and the argmax of its logits, ranked on the GPU ([`TopK`], k = 1),
    /// is left in the scratch's top-k result, where the next step's embedding can read it
    /// ([`StepInput::Picked`]) before the host has seen it, and copied into `readback` (a
    /// [`Gpu::staging`] buffer of 8 bytes: one (key, id) pair, [`top_k::decode`]). The cache's
    /// length advances now; a caller that drops the step sets it back, and the step's keys and
    /// values are overwritten by the next pass at that position (queue order).
    pub fn submit_greedy_step(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        input: StepInput,
        readback: &wgpu::Buffer,
    ) -> Result<wgpu::SubmissionIndex> {
        let (token, picked) = match input {
            StepInput::Token(t) => (t, None),
            // any id in range: the ids buffer is filled on the GPU
            StepInput::Picked => (0, Some(scratch.picked()?.clone())),
        };
        let tokens = [token];
        let mut seqs = [Seq {
            cache,
            tokens: &tokens,
        }];
        let (mut enc, spans, rows) =
            self.encode_many(gpu, &mut seqs, scratch, Logits::Last, picked.as_ref())?;
        let (op, out) = self.encode_top_k(gpu, &mut enc, scratch, rows, 1)?;
        let bytes = (op.out_words() * 4) as u64;
        if readback.size() < bytes {
            return Err(Error::InvalidArgument(format!(
                "greedy step: a readback buffer of {} bytes, {bytes} needed",
                readback.size()
            )));
        }
        enc.copy_buffer_to_buffer(&out, 0, readback, 0, bytes);
        let index = gpu.submit(enc);
        seqs[0].cache.len = spans[0].pos0 + spans[0].tokens;
        Ok(index)
    }

    /// Records the ranking of the pass's `rows` logit rows ([`TopK`]): returns the op and its
    /// result buffer (`rows * k` (key, id) pairs).
    fn encode_top_k(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        scratch: &mut Scratch,
        rows: usize,
        k: usize,
    ) -> Result<(TopK, wgpu::Buffer)> {
        let op = TopK {
            n: self.cfg.vocab,
            k,
            rows,
        };
        let (logits, part, out) = scratch.top_k_bufs(gpu, op.part_words(), op.out_words())?;
        op.encode(gpu, enc, logits, part, out)?;
        Ok((op, out.clone()))
    }

    /// Records a forward pass over `seqs` up to the logits in `scratch` (not submitted): returns
    /// the recorder, each sequence's [`Span`], and the logit rows. The caller submits, reads
    /// back, then sets each cache's length. With `picked` (a single sequence of one token), the
    /// token id is not the host's but the one in word 1 of that buffer (the previous step's
    /// top-k result), copied on the GPU into the ids the embedding reads. The layer loop is the pseudocode at the top of this
    /// file, one block per line.
    fn encode_many(
        &self,
        gpu: &Gpu,
        seqs: &mut [Seq<'_>],
        scratch: &mut Scratch,
        want: Logits,
        picked: Option<&wgpu::Buffer>,
    ) -> Result<(Recorder, Vec<Span>, usize)> {
        let c = &self.cfg;
        let spans = self.spans(seqs, want)?;
        if picked.is_some() && (spans.len() != 1 || spans[0].tokens != 1) {
            return Err(Error::InvalidArgument(
                "forward: a GPU-picked token feeds one sequence of one token".into(),
            ));
        }
        let m: usize = spans.iter().map(|s| s.tokens).sum();
        let n_logit_rows = if want == Logits::All { m } else { seqs.len() };
        // split-K decode attention's partials (GPU layout only)
        let att_part = match gpu.caps.rows_kernels {
            true => None,
            false => Some(scratch.att_part(gpu, Attention::part_floats(c.n_heads, c.head_dim))?),
        };
        let widths = [
            c.hidden,
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.ffn,
        ];
        let s = scratch.ensure(gpu, m, &widths, n_logit_rows, n_logit_rows * c.vocab)?;
        let p = Pass {
            gpu,
            s,
            m,
            variant_m: spans.iter().map(|s| s.tokens).max().unwrap_or(1),
            att_part: att_part.as_ref(),
        };
        self.write_inputs(&p, seqs, &spans, picked.is_none());
        let mut enc = gpu.encoder();
        if let Some(picked) = picked {
            enc.copy_buffer_to_buffer(picked, 4, &s.ids, 0, 4);
        }
        self.embed(&p, &mut enc)?;
        for (l, layer) in self.layers.iter().enumerate() {
            // attention block: x += [post_norm](Wo attention(rope(Wqkv norm(x))) [+ bo])
            let rope_done = self.qkv(&p, &mut enc, l, layer, seqs, &spans)?;
            // per sequence: its positions, its cache
            for (i, (sq, &span)) in seqs.iter().zip(&spans).enumerate() {
                let pos = p.positions(i);
                if !rope_done {
                    self.rope(&p, &mut enc, l, span, pos)?;
                }
                self.kv_append(&p, &mut enc, l, sq.cache, span, pos, rope_done)?;
                self.attention(&p, &mut enc, l, sq.cache, span, pos)?;
            }
            let post_norm = layer.post_attn_norm.as_ref();
            self.residual(&p, &mut enc, &layer.wo, &layer.bo, post_norm, &s.att)?;
            // feed-forward block: x += [post_norm](Wdown act(Wgate f, Wup f) [+ bdown]), f = norm(x)
            let act = self.ffn_act(&p, &mut enc, layer)?;
            let post_norm = layer.post_ffn_norm.as_ref();
            self.residual(&p, &mut enc, &layer.w_down, &layer.b_down, post_norm, act)?;
        }
        self.head(&p, &mut enc, &spans, want, n_logit_rows)?;
        Ok((enc, spans, n_logit_rows))
    }

    /// The most of `tokens` tokens, from position `pos0`, that one pass computes exactly as it
    /// would one token at a time (speculative decoding's check must): all of them, except where
    /// Phi-3's longrope switches factors inside the span (a pass rotates every token with the
    /// factors its end calls for; one token at a time, each with its own).
    pub fn same_as_alone(&self, pos0: usize, tokens: usize) -> usize {
        let switch = self.cfg.long_rope_ctx;
        match self.rope_long.is_some() && pos0 < switch {
            true => tokens.min(switch - pos0),
            false => tokens,
        }
    }

    /// Checks the sequences of a pass and lays out their rows: each sequence's [`Span`].
    fn spans(&self, seqs: &[Seq<'_>], want: Logits) -> Result<Vec<Span>> {
        let c = &self.cfg;
        if seqs.is_empty() {
            return Err(Error::InvalidArgument("forward: no sequences".into()));
        }
        if want == Logits::All && seqs.len() > 1 {
            return Err(Error::InvalidArgument(
                "forward: all-token logits need a single sequence".into(),
            ));
        }
        let mut spans = Vec::with_capacity(seqs.len());
        let mut row0 = 0;
        for sq in seqs {
            let tokens = sq.tokens.len();
            let pos0 = sq.cache.len;
            if tokens == 0 {
                return Err(Error::InvalidArgument(
                    "forward: a sequence with no tokens".into(),
                ));
            }
            if pos0 + tokens > sq.cache.ctx {
                return Err(Error::ContextOverflow {
                    tokens: pos0 + tokens,
                    ctx: sq.cache.ctx,
                });
            }
            if sq.cache.k.len() != c.n_layers {
                return Err(Error::InvalidArgument(
                    "forward: a KV cache made for another model".into(),
                ));
            }
            if let Some(&bad) = sq.tokens.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(Error::InvalidArgument(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab
                )));
            }
            spans.push(Span { row0, tokens, pos0 });
            row0 += tokens;
        }
        if row0 > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "forward: {row0} tokens in one pass, over the {MAX_BATCH} the sliding-window caches allow"
            )));
        }
        Ok(spans)
    }

    /// Writes what changes from one pass to the next into the scratch buffers the kernels read
    /// it from (one `queue.write_buffer` each, before the pass's commands run): the token ids,
    /// each sequence's first position and, for learned position embeddings, each row's position.
    /// Every dispatch's parameters and buffers then repeat from one decode step to the next, and
    /// so do their bind groups. Without `ids` the token ids are left alone (the pass copies
    /// them on the GPU). A write lands after every earlier submission's commands (wgpu runs a
    /// submission's pending writes first, behind a barrier against earlier uses of the buffer),
    /// so it is safe while earlier steps still run.
    fn write_inputs(&self, p: &Pass, seqs: &[Seq<'_>], spans: &[Span], ids: bool) {
        let (queue, s) = (&p.gpu.queue, p.s);
        if ids {
            let tokens: Vec<u32> = seqs
                .iter()
                .flat_map(|sq| sq.tokens.iter().copied())
                .collect();
            queue.write_buffer(&s.ids, 0, bytemuck::cast_slice(&tokens));
        }
        let pos0: Vec<u32> = spans.iter().map(|s| s.pos0 as u32).collect();
        queue.write_buffer(&s.seq_pos0, 0, bytemuck::cast_slice(&pos0));
        if self.pos_embd.is_some() {
            let positions: Vec<u32> = spans
                .iter()
                .flat_map(|s| (s.pos0..s.pos0 + s.tokens).map(|p| p as u32))
                .collect();
            queue.write_buffer(&s.positions, 0, bytemuck::cast_slice(&positions));
        }
    }

    /// `x = embed(tokens) [* scale] [+ pos_embed(positions)]`: the tokens' rows of the table
    /// (dequantized), into `x`.
    fn embed(&self, p: &Pass, enc: &mut Recorder) -> Result<()> {
        let (gpu, s, n) = (p.gpu, p.s, p.m * self.cfg.hidden);
        Embed { w: &self.tok_embd }.encode_ids(gpu, enc, &s.ids, p.m, &s.x)?;
        if let Some(scale) = self.cfg.embed_scale {
            Unary::Scale(scale).encode(gpu, enc, n, &s.x)?;
        }
        if let Some(pe) = &self.pos_embd {
            Embed { w: pe }.encode_ids(gpu, enc, &s.positions, p.m, &s.xn)?;
            add(gpu, enc, n, &s.x, &s.xn)?;
        }
        Ok(())
    }

    /// `y = norm(x)` over every row of the pass (the model's RMSNorm or LayerNorm).
    fn norm(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        x: &wgpu::Buffer,
        nw: &NormW,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        let (n, rows, eps) = (self.cfg.hidden, p.m, self.cfg.eps);
        match &nw.b {
            Some(b) => LayerNorm { n, rows, eps }.encode(p.gpu, enc, x, &nw.w, b, y),
            None => RmsNorm { n, rows, eps }.encode(p.gpu, enc, x, &nw.w, y),
        }
    }

    /// A norm a fused kernel can apply in its prologue: RMSNorm (LayerNorm's mean and bias are
    /// not fused).
    fn rms_in<'a>(&self, nw: &'a NormW) -> Option<RmsIn<'a>> {
        match nw.b {
            Some(_) => None,
            None => Some(RmsIn {
                weight: &nw.w,
                eps: self.cfg.eps,
            }),
        }
    }

    /// Layer `l`'s RoPE, and whether it is the local (sliding-window) one; `None` for learned
    /// positions.
    fn rope_cfg(&self, l: usize) -> Option<(&RopeConfig, bool)> {
        let c = &self.cfg;
        let local = c.windows[l] > 0 && c.rope_local.is_some();
        let rc = if local { &c.rope_local } else { &c.rope };
        rc.as_ref().map(|rc| (rc, local))
    }

    /// The frequency divisors a span is rotated with. Phi-3 longrope: the long factors once the
    /// sequence outgrows the original context (transformers' rule; keys already cached keep the
    /// factors they were rotated with, as in transformers' generate with a cache).
    fn rope_factors(&self, local: bool, span: Span) -> Option<&wgpu::Buffer> {
        let long = self.rope_long.is_some() && span.pos0 + span.tokens > self.cfg.long_rope_ctx;
        match (local, long) {
            (true, _) => None,
            (false, true) => self.rope_long.as_ref(),
            (false, false) => self.rope_short.as_ref().or(self.rope_freqs.as_ref()),
        }
    }

    /// `a = norm(x)`, `q, k, v = Wq a [+ bq], Wk a [+ bk], Wv a [+ bv]` into `q`, `k`, `v`, then
    /// `[q, k = rmsnorm per head (q, k)]`. Returns whether RoPE ran in the projection's epilogue
    /// (one sequence, a fused kernel, no bias or head norm between projection and rotation),
    /// which then also wrote an f32 cache's keys and values. The GPU layout's decode runs the
    /// norm, the three products and the rotation as one dispatch (`QkvPairs`); the CPU layout's
    /// fuses the products and the rotation (`QkvRows`).
    fn qkv(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        l: usize,
        layer: &Layer,
        seqs: &[Seq<'_>],
        spans: &[Span],
    ) -> Result<bool> {
        let (c, gpu, s) = (&self.cfg, p.gpu, p.s);
        let hd = c.head_dim;
        let (q_dim, kv_dim) = (c.n_heads * hd, c.n_kv_heads * hd);
        let head_normed = layer.q_norm.is_some() && layer.k_norm.is_some();
        // with head norms, q and k are projected into spare buffers, then normalised into q, k
        let (q_out, k_out) = match head_normed {
            true => (&s.att, &s.spare),
            false => (&s.q, &s.k),
        };
        let qkv = [&layer.wq, &layer.wk, &layer.wv];
        let no_bias = layer.bq.is_none() && layer.bk.is_none() && layer.bv.is_none();
        let norm_in = self.rms_in(&layer.attn_norm);
        let pairs = norm_in.filter(|_| pairs_apply(gpu, p.variant_m, &qkv));
        let fused = pairs.is_some() || fused_rows_apply(gpu, p.variant_m, &qkv);
        if pairs.is_none() {
            self.norm(p, enc, &s.x, &layer.attn_norm, &s.xn)?;
        }
        if let (Some((rc, local)), [sq], &[span]) = (self.rope_cfg(l), seqs, spans) {
            if fused && no_bias && !head_normed {
                // keys and values straight into an f32 cache (its ring), else into k, v
                let cache = &*sq.cache;
                let (kv_ring, k_dst, v_dst) = match cache.kind {
                    KvType::F32 => (cache.rows[l], &cache.k[l], &cache.v[l]),
                    KvType::F16 | KvType::Q16 => (0, &s.k, &s.v),
                };
                let rope = QkvRope {
                    cfg: rc,
                    head_dim: hd,
                    pos0: span.pos0,
                    positions: Some(p.positions(0)),
                    factors: self.rope_factors(local, span),
                    dummy: &self.dummy,
                    kv_ring,
                };
                match pairs {
                    Some(norm) => QkvPairs {
                        w: qkv,
                        m: p.m,
                        norm,
                        rope: Some(rope),
                    }
                    .encode(gpu, enc, &s.x, [q_out, k_dst, v_dst])?,
                    None => QkvRows {
                        w: qkv,
                        m: p.m,
                        rope: Some(rope),
                    }
                    .encode(gpu, enc, &s.xn, [q_out, k_dst, v_dst])?,
                }
                return Ok(true);
            }
        }
        if let Some(norm) = pairs {
            QkvPairs {
                w: qkv,
                m: p.m,
                norm,
                rope: None,
            }
            .encode(gpu, enc, &s.x, [q_out, k_out, &s.v])?;
        } else if fused {
            QkvRows {
                w: qkv,
                m: p.m,
                rope: None,
            }
            .encode(gpu, enc, &s.xn, [q_out, k_out, &s.v])?;
        } else {
            p.mm(&layer.wq, false).encode(gpu, enc, &s.xn, q_out)?;
            p.mm(&layer.wk, false).encode(gpu, enc, &s.xn, k_out)?;
            p.mm(&layer.wv, false).encode(gpu, enc, &s.xn, &s.v)?;
        }
        p.bias(enc, &layer.bq, q_dim, q_out)?;
        p.bias(enc, &layer.bk, kv_dim, k_out)?;
        p.bias(enc, &layer.bv, kv_dim, &s.v)?;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            let head_norm = |heads: usize| RmsNorm {
                n: hd,
                rows: p.m * heads,
                eps: c.eps,
            };
            head_norm(c.n_heads).encode(gpu, enc, q_out, qn, &s.q)?;
            head_norm(c.n_kv_heads).encode(gpu, enc, k_out, kn, &s.k)?;
        }
        Ok(false)
    }

    /// `q, k = rope(q, k)` on one sequence's rows (nothing for learned positions).
    fn rope(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        l: usize,
        span: Span,
        pos: Positions,
    ) -> Result<()> {
        let Some((rc, local)) = self.rope_cfg(l) else {
            return Ok(());
        };
        let c = &self.cfg;
        let factors = self.rope_factors(local, span);
        for (buf, heads) in [(&p.s.q, c.n_heads), (&p.s.k, c.n_kv_heads)] {
            Rope {
                cfg: rc,
                n_heads: heads,
                head_dim: c.head_dim,
                tokens: span.tokens,
                pos0: span.pos0,
                row0: span.row0,
            }
            .encode_at(p.gpu, enc, buf, factors, &self.dummy, pos)?;
        }
        Ok(())
    }

    /// Appends one sequence's keys and values (rows of `k`, `v`) to layer `l` of its cache at
    /// positions `pos0..`, position `p` in row `p % rows` (a sliding-window layer's ring wraps
    /// around its end). A 16-bit cache's store kernel reads `pos0` from `pos` and wraps itself;
    /// an f32 cache takes buffer copies, in up to two runs. `rope_done`: the fused projection
    /// already wrote an f32 cache's rows.
    #[allow(clippy::too_many_arguments)]
    fn kv_append(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        l: usize,
        cache: &KvCache,
        span: Span,
        pos: Positions,
        rope_done: bool,
    ) -> Result<()> {
        let c = &self.cfg;
        let (s, kv_dim) = (p.s, c.n_kv_heads * c.head_dim);
        let rows = cache.rows[l];
        if cache.kind != KvType::F32 {
            return KvStore {
                kind: cache.kind,
                kv_dim,
                head_dim: c.head_dim,
                rows: span.tokens,
                src_row0: span.row0,
                dst_row0: span.pos0,
                // the sequence's first rows set the cache's base
                sets_base: span.pos0 == 0,
            }
            .encode_at(p.gpu, enc, [&s.k, &s.v], cache.layer(l), pos, rows);
        }
        if rope_done {
            return Ok(());
        }
        let start = span.pos0 % rows;
        let first = span.tokens.min(rows - start);
        let row = (kv_dim * 4) as u64;
        let runs = [
            (span.row0, start, first),
            (span.row0 + first, 0, span.tokens - first),
        ];
        for (from, to, n) in runs {
            if n > 0 {
                let (from, to, n) = (from as u64 * row, to as u64 * row, n as u64 * row);
                enc.copy_buffer_to_buffer(&s.k, from, &cache.k[l], to, n);
                enc.copy_buffer_to_buffer(&s.v, from, &cache.v[l], to, n);
            }
        }
        Ok(())
    }

    /// `att = attention(q, K, V)` for one sequence's queries over layer `l` of its cache, with
    /// the layer's sliding window (a ring cache where the layer keeps fewer rows than the
    /// context).
    fn attention(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        l: usize,
        cache: &KvCache,
        span: Span,
        pos: Positions,
    ) -> Result<()> {
        let c = &self.cfg;
        let rows = cache.rows[l];
        Attention {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            tokens: span.tokens,
            pos0: span.pos0,
            scale: c.attn_scale,
            window: c.windows[l],
            softcap: c.attn_softcap,
            ring: if rows < cache.ctx { rows } else { 0 },
            row0: span.row0,
            kv: cache.kind,
            bidirectional: false,
        }
        .encode_at(
            p.gpu,
            enc,
            &p.s.q,
            cache.layer(l),
            &p.s.att,
            p.att_part,
            pos,
        )
    }

    /// `x += [post_norm](W input [+ b])`: the attention output's and the feed-forward's
    /// residual add (accumulated into `x` by the projection itself without a post-norm).
    #[allow(clippy::too_many_arguments)]
    fn residual(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        w: &Weight,
        b: &Option<wgpu::Buffer>,
        post_norm: Option<&NormW>,
        input: &wgpu::Buffer,
    ) -> Result<()> {
        let (gpu, s, h) = (p.gpu, p.s, self.cfg.hidden);
        match post_norm {
            None => {
                p.mm(w, true).encode(gpu, enc, input, &s.x)?;
                p.bias(enc, b, h, &s.x)
            }
            Some(pn) => {
                p.mm(w, false).encode(gpu, enc, input, &s.xn)?;
                p.bias(enc, b, h, &s.xn)?;
                self.norm(p, enc, &s.xn, pn, &s.spare)?;
                add(gpu, enc, p.m * h, &s.x, &s.spare)
            }
        }
    }

    /// `f = norm(x)`, `act(Wgate f, Wup f)` (or `gelu(Wup f [+ bup])` without a gate); returns
    /// the buffer holding it. The GPU layout's decode runs it as one dispatch (`GluPairs`), the
    /// CPU layout's the products and the activation (`GluRows`).
    fn ffn_act<'s>(
        &self,
        p: &Pass<'s>,
        enc: &mut Recorder,
        layer: &Layer,
    ) -> Result<&'s wgpu::Buffer> {
        let (c, gpu, s) = (&self.cfg, p.gpu, p.s);
        let n = p.m * c.ffn;
        let act = match c.act {
            Act::GeGlu => Glu::GeGlu,
            _ => Glu::SwiGlu,
        };
        let norm_in = self.rms_in(&layer.ffn_norm);
        let pairs = layer.w_gate.as_ref().zip(norm_in).filter(|(wg, _)| {
            layer.b_up.is_none() && pairs_apply(gpu, p.variant_m, &[wg, &layer.w_up])
        });
        if let Some((wg, norm)) = pairs {
            GluPairs {
                gate: wg,
                up: &layer.w_up,
                m: p.m,
                act,
                norm,
            }
            .encode(gpu, enc, &s.x, &s.gate)?;
            return Ok(&s.gate);
        }
        self.norm(p, enc, &s.x, &layer.ffn_norm, &s.xn)?;
        let fused = layer.w_gate.as_ref().filter(|wg| {
            layer.b_up.is_none() && fused_rows_apply(gpu, p.variant_m, &[wg, &layer.w_up])
        });
        if let Some(wg) = fused {
            GluRows {
                gate: wg,
                up: &layer.w_up,
                m: p.m,
                act,
            }
            .encode(gpu, enc, &s.xn, &s.gate)?;
            return Ok(&s.gate);
        }
        p.mm(&layer.w_up, false).encode(gpu, enc, &s.xn, &s.up)?;
        p.bias(enc, &layer.b_up, c.ffn, &s.up)?;
        match &layer.w_gate {
            Some(wg) => {
                p.mm(wg, false).encode(gpu, enc, &s.xn, &s.gate)?;
                match c.act {
                    Act::GeGlu => geglu(gpu, enc, n, &s.gate, &s.up)?,
                    _ => swiglu(gpu, enc, n, &s.gate, &s.up)?,
                }
                Ok(&s.gate)
            }
            None => {
                Unary::Gelu.encode(gpu, enc, n, &s.up)?;
                Ok(&s.up)
            }
        }
    }

    /// `logits = head(norm(x)) [soft-capped]` over each sequence's last token (or every token),
    /// into `logits`; for [`Logits::Hidden`] only the normed last rows, into `last`.
    fn head(
        &self,
        p: &Pass,
        enc: &mut Recorder,
        spans: &[Span],
        want: Logits,
        n_logit_rows: usize,
    ) -> Result<()> {
        let (c, gpu, s) = (&self.cfg, p.gpu, p.s);
        self.norm(p, enc, &s.x, &self.out_norm, &s.xn)?;
        let rows_in = if want == Logits::All {
            &s.xn
        } else {
            let row = (c.hidden * 4) as u64;
            for (i, span) in spans.iter().enumerate() {
                let last = (span.row0 + span.tokens - 1) as u64;
                enc.copy_buffer_to_buffer(&s.xn, last * row, &s.last, i as u64 * row, row);
            }
            &s.last
        };
        if want == Logits::Hidden {
            return Ok(());
        }
        MatMul {
            w: self.output.as_ref().unwrap_or(&self.tok_embd),
            m: n_logit_rows,
            accumulate: false,
            variant_m: if want == Logits::All { p.m } else { 1 },
        }
        .encode(gpu, enc, rows_in, &s.logits)?;
        if c.final_softcap > 0.0 {
            Unary::SoftCap(c.final_softcap).encode(gpu, enc, n_logit_rows * c.vocab, &s.logits)?;
        }
        Ok(())
    }
}

/// Where one sequence of a batched pass sits: its rows of the activations and its positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Its first row in the pass's activations.
    pub row0: usize,
    /// Its tokens (rows).
    pub tokens: usize,
    /// The position of its first token (its cache's length before the pass).
    pub pos0: usize,
}

/// What every block of one forward pass reads: the device, the scratch buffers, the rows.
struct Pass<'a> {
    gpu: &'a Gpu,
    s: &'a ScratchBufs,
    /// Rows of the pass: every sequence's tokens.
    m: usize,
    /// The most tokens one sequence brings, which picks the matrix kernels.
    variant_m: usize,
    /// Split-K attention's partials (the GPU layout's).
    att_part: Option<&'a wgpu::Buffer>,
}

impl<'a> Pass<'a> {
    /// Where the kernels read the first position of the batch's sequence `i`.
    fn positions(&self, i: usize) -> Positions<'a> {
        Positions {
            buf: &self.s.seq_pos0,
            slot: i,
        }
    }

    /// `y [+]= W x` over the pass's rows.
    fn mm<'w>(&self, w: &'w Weight, accumulate: bool) -> MatMul<'w> {
        MatMul {
            w,
            m: self.m,
            accumulate,
            variant_m: self.variant_m,
        }
    }

    /// `y += b` on every row, where there is a bias.
    fn bias(
        &self,
        enc: &mut Recorder,
        b: &Option<wgpu::Buffer>,
        n: usize,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        match b {
            Some(b) => add_bias(self.gpu, enc, self.m, n, y, b),
            None => Ok(()),
        }
    }
}

/// What a [`Transformer::submit_greedy_step`] feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepInput {
    /// A token the host knows.
    Token(u32),
    /// The previous greedy step's pick, still on the GPU (in the scratch's top-k result).
    Picked,
}

/// One sequence of a batched forward pass: its cache and the tokens it adds.
pub struct Seq<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

/// Uploads per-frequency RoPE factors after checking their count.
fn upload_factors(gpu: &Gpu, name: &str, f: &[f32], half_rot: usize) -> Result<wgpu::Buffer> {
    if f.len() != half_rot {
        return Err(Error::Model(format!(
            "{name}: {} RoPE factors, expected {half_rot} (half the rotary dimensions)",
            f.len()
        )));
    }
    Ok(gpu.upload(name, bytemuck::cast_slice(f)))
}
