//! Encoders: the BERT family (`bert`: all-MiniLM, bge, e5, gte; `nomic-bert`: RoPE and SwiGLU),
//! bidirectional transformers whose output is every token's hidden state, which `embed.rs` pools
//! into one vector per input. A model type of its own beside the decoder (`transformer.rs`), as
//! candle keeps `bert.rs` apart from its decoders; the two share the ops. Several inputs are packed
//! into one pass without padding: each attends only to its own tokens (the padding mask of a
//! packed batch, [`Attention::bidirectional`]).
//!
//! ```text
//! x = LayerNorm(tok_embd[ids] + [pos_embd[positions]] + token_types[0])
//! per layer (post-norm):
//!   q, k, v = Wq x [+ bq], Wk x [+ bk], Wv x [+ bv]      (nomic-bert: fused Wqkv, split at load)
//!   [q, k = rope(q, k)]                                   (nomic-bert)
//!   x = LayerNorm(x + Wo attention(q, K, V of this input) [+ bo])
//!   x = LayerNorm(x + Wdown act(...) [+ bdown])           (act: GELU(Wup x + b) | SwiGLU(gate, up))
//! hidden = x
//! ```
//!
//! Tensor names are llama.cpp's (gguf-py `MODEL_TENSORS[MODEL_ARCH.BERT / NOMIC_BERT]`); a
//! sentence-transformers / Hugging Face folder is read through [`BERT_HF_NAMES`] /
//! [`NOMIC_HF_NAMES`] (transformers' modeling_bert.py names; nomic-ai's modeling_hf_nomic_bert.py).
//! Token types are always 0: every input is one segment.

use super::llama::Keys;
use super::{HfNames, Scratch, TensorSource};
use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::format::hf::HfConfig;
use crate::gpu::{Gpu, KvType, Recorder, Weight};
use crate::ops::attention::Attention;
use crate::ops::elementwise::{add, add_bias, swiglu, Unary};
use crate::ops::embed::Embed;
use crate::ops::kv::LayerKv;
use crate::ops::matmul::MatMul;
use crate::ops::norm::LayerNorm;
use crate::ops::rope::{Rope, RopeConfig, RopeMode};
use crate::ops::Positions;

/// The feed-forward activation of an encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderAct {
    /// `gelu(up)`, the exact (erf) GELU (BERT).
    Gelu,
    /// `silu(gate) * up` (nomic-bert).
    SwiGlu,
}

/// Everything an encoder's forward pass needs, read from metadata.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    /// `bert` or `nomic-bert` (the GGUF architecture name).
    pub arch: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// Positions the model was trained with (learned positions: the table's rows).
    pub ctx_train: usize,
    /// Rows of the token-type table (0: the model has none).
    pub n_types: usize,
    pub eps: f32,
    /// RoPE (nomic-bert); `None`: learned absolute positions.
    pub rope: Option<RopeConfig>,
    pub act: EncoderAct,
    /// Biases on every projection (BERT; nomic-bert has none).
    pub biases: bool,
    /// Q/K/V are one tensor `attn_qkv`, split by rows at load (nomic-bert).
    pub fused_qkv: bool,
}

impl EncoderConfig {
    /// Checks the shapes.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Model(format!("{}: {msg}", self.arch)));
        for (name, v) in [
            ("block count", self.n_layers),
            ("embedding length", self.hidden),
            ("feed-forward length", self.ffn),
            ("head count", self.n_heads),
            ("vocabulary size", self.vocab),
            ("context length", self.ctx_train),
        ] {
            if v == 0 {
                return bad(format!("{name} is 0"));
            }
        }
        if !self.hidden.is_multiple_of(self.n_heads) {
            return bad(format!(
                "{} heads do not divide the embedding length {}",
                self.n_heads, self.hidden
            ));
        }
        if self.head_dim > crate::ops::attention::MAX_HEAD_DIM {
            return bad(format!("head dimension {} is too large", self.head_dim));
        }
        if let Some(r) = &self.rope {
            if r.n_rot == 0 || r.n_rot % 2 != 0 || r.n_rot > self.head_dim {
                return bad(format!("{} rotary dimensions", r.n_rot));
            }
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
            ("head_dim".into(), self.head_dim.to_string()),
            ("vocab".into(), self.vocab.to_string()),
            ("context_train".into(), self.ctx_train.to_string()),
            ("attention".into(), "bidirectional (encoder)".into()),
            ("norm".into(), format!("LayerNorm, post (eps {})", self.eps)),
            ("activation".into(), format!("{:?}", self.act)),
        ];
        v.push(match &self.rope {
            Some(r) => (
                "rope".into(),
                format!("{:?}, {} dims, base {}", r.mode, r.n_rot, r.freq_base),
            ),
            None => ("positions".into(), "learned (position_embd)".into()),
        });
        if self.n_types > 0 {
            v.push(("token_types".into(), self.n_types.to_string()));
        }
        v
    }
}

/// Reads a `bert` or `nomic-bert` GGUF (llama.cpp's keys: `{arch}.embedding_length`, ...,
/// `{arch}.attention.layer_norm_epsilon`, `{arch}.rope.freq_base`; the token-type count from
/// the `token_types` tensor).
pub fn from_gguf(g: &Gguf, arch: &str) -> Result<EncoderConfig> {
    let k = Keys { g, arch };
    let hidden = k.req("embedding_length")?;
    let n_heads = k.req("attention.head_count")?;
    let head_dim = hidden / n_heads.max(1);
    let rows = |name: &str| g.tensor(name).and_then(|t| t.dims.get(1).copied());
    let vocab = rows("token_embd.weight")
        .ok_or_else(|| Error::Model("missing tensor `token_embd.weight`".into()))?
        as usize;
    let nomic = arch == "nomic-bert";
    let c = EncoderConfig {
        arch: arch.into(),
        n_layers: k.req("block_count")?,
        hidden,
        ffn: k.req("feed_forward_length")?,
        n_heads,
        head_dim,
        vocab,
        ctx_train: k.req("context_length")?,
        n_types: rows("token_types.weight").unwrap_or(0) as usize,
        eps: k.optf("attention.layer_norm_epsilon").unwrap_or(1e-12),
        rope: match nomic {
            true => Some(RopeConfig::plain(
                RopeMode::Neox,
                head_dim,
                k.optf("rope.freq_base").unwrap_or(1000.0),
            )),
            false => None,
        },
        act: if nomic {
            EncoderAct::SwiGlu
        } else {
            EncoderAct::Gelu
        },
        biases: !nomic,
        fused_qkv: nomic,
    };
    c.validate()?;
    Ok(c)
}

/// Reads a `BertModel` (and relatives: `BertForMaskedLM`, ...) or `NomicBertModel` `config.json`.
pub fn from_hf(c: &HfConfig) -> Result<(EncoderConfig, HfNames)> {
    let arch = c.architecture()?;
    let cfg = if arch.starts_with("NomicBert") {
        let hidden = c.req_usize("n_embd")?;
        let n_heads = c.req_usize("n_head")?;
        let head_dim = hidden / n_heads.max(1);
        if let Some(act) = c.opt_str("activation_function")? {
            if act != "swiglu" {
                return Err(c.key_error(
                    "activation_function",
                    format!("`{act}` is not supported (only swiglu)"),
                ));
            }
        }
        for key in ["qkv_proj_bias", "mlp_fc1_bias", "mlp_fc2_bias", "prenorm"] {
            if c.opt_bool(key)? == Some(true) {
                return Err(c.key_error(key, "is not supported (nomic-embed has it false)"));
            }
        }
        let fraction = c.opt_f32("rotary_emb_fraction")?.unwrap_or(1.0);
        EncoderConfig {
            arch: "nomic-bert".into(),
            n_layers: c.req_usize("n_layer")?,
            hidden,
            ffn: c.req_usize("n_inner")?,
            n_heads,
            head_dim,
            vocab: c.req_usize("vocab_size")?,
            ctx_train: c.opt_usize("n_positions")?.unwrap_or(2048),
            n_types: c.opt_usize("type_vocab_size")?.unwrap_or(2),
            eps: c.opt_f32("layer_norm_epsilon")?.unwrap_or(1e-12),
            rope: Some(RopeConfig::plain(
                RopeMode::Neox,
                (head_dim as f32 * fraction) as usize,
                c.opt_f32("rotary_emb_base")?.unwrap_or(1000.0),
            )),
            act: EncoderAct::SwiGlu,
            biases: false,
            fused_qkv: true,
        }
    } else {
        let hidden = c.req_usize("hidden_size")?;
        let n_heads = c.req_usize("num_attention_heads")?;
        if let Some(act) = c.opt_str("hidden_act")? {
            if act != "gelu" {
                return Err(c.key_error(
                    "hidden_act",
                    format!("`{act}` is not supported (only gelu)"),
                ));
            }
        }
        if let Some(p) = c.opt_str("position_embedding_type")? {
            if p != "absolute" {
                return Err(c.key_error(
                    "position_embedding_type",
                    format!("`{p}` is not supported (only absolute)"),
                ));
            }
        }
        EncoderConfig {
            arch: "bert".into(),
            n_layers: c.req_usize("num_hidden_layers")?,
            hidden,
            ffn: c.req_usize("intermediate_size")?,
            n_heads,
            head_dim: hidden / n_heads.max(1),
            vocab: c.req_usize("vocab_size")?,
            ctx_train: c.opt_usize("max_position_embeddings")?.unwrap_or(512),
            n_types: c.opt_usize("type_vocab_size")?.unwrap_or(2),
            eps: c.opt_f32("layer_norm_eps")?.unwrap_or(1e-12),
            rope: None,
            act: EncoderAct::Gelu,
            biases: true,
            fused_qkv: false,
        }
    };
    cfg.validate()
        .map_err(|e| Error::Model(format!("{}: {e}", c.path.display())))?;
    let names = match cfg.arch.as_str() {
        "nomic-bert" => NOMIC_HF_NAMES,
        _ => BERT_HF_NAMES,
    };
    Ok((cfg, names))
}

/// Whether a `config.json` architecture is an encoder flint runs.
pub fn is_hf_encoder(arch: &str) -> bool {
    arch.starts_with("Bert") || arch.starts_with("NomicBert")
}

/// transformers' BertModel names (with or without the `bert.` prefix of task heads' checkpoints).
pub const BERT_HF_NAMES: HfNames = HfNames {
    name: bert_hf_name,
    transposed: |_| false,
};

fn bert_hf_name(gguf: &str) -> Option<Vec<String>> {
    let both = |s: String| Some(vec![s.clone(), format!("bert.{s}")]);
    match gguf {
        "token_embd.weight" => return both("embeddings.word_embeddings.weight".into()),
        "position_embd.weight" => return both("embeddings.position_embeddings.weight".into()),
        "token_types.weight" => return both("embeddings.token_type_embeddings.weight".into()),
        "token_embd_norm.weight" => return both("embeddings.LayerNorm.weight".into()),
        "token_embd_norm.bias" => return both("embeddings.LayerNorm.bias".into()),
        _ => {}
    }
    let (layer, base, suffix) = super::gguf_block_name(gguf)?;
    let hf = match base {
        "attn_q" => "attention.self.query",
        "attn_k" => "attention.self.key",
        "attn_v" => "attention.self.value",
        "attn_output" => "attention.output.dense",
        "attn_output_norm" => "attention.output.LayerNorm",
        "ffn_up" => "intermediate.dense",
        "ffn_down" => "output.dense",
        "layer_output_norm" => "output.LayerNorm",
        _ => return None,
    };
    both(format!("encoder.layer.{layer}.{hf}.{suffix}"))
}

/// nomic-ai's NomicBertModel names (fc11 is the up projection, fc12 the gate: its GatedMLP
/// computes `fc11(x) * silu(fc12(x))`, which llama.cpp's converter maps the same way).
pub const NOMIC_HF_NAMES: HfNames = HfNames {
    name: nomic_hf_name,
    transposed: |_| false,
};

fn nomic_hf_name(gguf: &str) -> Option<Vec<String>> {
    let one = |s: &str| Some(vec![s.to_string()]);
    match gguf {
        "token_embd.weight" => return one("embeddings.word_embeddings.weight"),
        "token_types.weight" => return one("embeddings.token_type_embeddings.weight"),
        "token_embd_norm.weight" => return one("emb_ln.weight"),
        "token_embd_norm.bias" => return one("emb_ln.bias"),
        _ => {}
    }
    let (layer, base, suffix) = super::gguf_block_name(gguf)?;
    let hf = match base {
        "attn_qkv" => "attn.Wqkv",
        "attn_output" => "attn.out_proj",
        "attn_output_norm" => "norm1",
        "ffn_up" => "mlp.fc11",
        "ffn_gate" => "mlp.fc12",
        "ffn_down" => "mlp.fc2",
        "layer_output_norm" => "norm2",
        _ => return None,
    };
    one(&format!("encoder.layers.{layer}.{hf}.{suffix}"))
}

/// A LayerNorm's weight and bias.
struct Ln {
    w: wgpu::Buffer,
    b: wgpu::Buffer,
}

struct EncoderLayer {
    wq: Weight,
    wk: Weight,
    wv: Weight,
    /// q, k, v, output, up and down biases (BERT).
    b: Option<[wgpu::Buffer; 6]>,
    wo: Weight,
    attn_norm: Ln,
    w_gate: Option<Weight>,
    w_up: Weight,
    w_down: Weight,
    out_norm: Ln,
}

/// An encoder with its weights on the GPU.
pub struct Encoder {
    pub cfg: EncoderConfig,
    tok_embd: Weight,
    pos_embd: Option<Weight>,
    types: Option<Weight>,
    embd_norm: Ln,
    layers: Vec<EncoderLayer>,
    dummy: wgpu::Buffer,
}

impl Encoder {
    /// Uploads every weight, checking each tensor's shape against the configuration.
    pub fn load(gpu: &Gpu, src: &mut TensorSource, cfg: EncoderConfig) -> Result<Encoder> {
        cfg.validate()?;
        let h = cfg.hidden;
        let ln = |src: &mut TensorSource, name: &str| -> Result<Ln> {
            Ok(Ln {
                w: src.vector(gpu, &format!("{name}.weight"), h, 0.0)?,
                b: src.vector(gpu, &format!("{name}.bias"), h, 0.0)?,
            })
        };
        let tok_embd = src.weight(gpu, "token_embd.weight", cfg.vocab, h)?;
        let pos_embd = match cfg.rope {
            None => Some(src.weight(gpu, "position_embd.weight", cfg.ctx_train, h)?),
            Some(_) => None,
        };
        let types = match cfg.n_types {
            0 => None,
            n => Some(src.weight(gpu, "token_types.weight", n, h)?),
        };
        let embd_norm = ln(src, "token_embd_norm")?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let (wq, wk, wv) = if cfg.fused_qkv {
                let name = n("attn_qkv.weight");
                (
                    src.weight_rows(gpu, &name, 3 * h, h, 0, h)?,
                    src.weight_rows(gpu, &name, 3 * h, h, h, h)?,
                    src.weight_rows(gpu, &name, 3 * h, h, 2 * h, h)?,
                )
            } else {
                (
                    src.weight(gpu, &n("attn_q.weight"), h, h)?,
                    src.weight(gpu, &n("attn_k.weight"), h, h)?,
                    src.weight(gpu, &n("attn_v.weight"), h, h)?,
                )
            };
            let b = match cfg.biases {
                true => Some([
                    src.vector(gpu, &n("attn_q.bias"), h, 0.0)?,
                    src.vector(gpu, &n("attn_k.bias"), h, 0.0)?,
                    src.vector(gpu, &n("attn_v.bias"), h, 0.0)?,
                    src.vector(gpu, &n("attn_output.bias"), h, 0.0)?,
                    src.vector(gpu, &n("ffn_up.bias"), cfg.ffn, 0.0)?,
                    src.vector(gpu, &n("ffn_down.bias"), h, 0.0)?,
                ]),
                false => None,
            };
            let w_gate = match cfg.act {
                EncoderAct::SwiGlu => Some(src.weight(gpu, &n("ffn_gate.weight"), cfg.ffn, h)?),
                EncoderAct::Gelu => None,
            };
            layers.push(EncoderLayer {
                wq,
                wk,
                wv,
                b,
                wo: src.weight(gpu, &n("attn_output.weight"), h, h)?,
                attn_norm: ln(src, &n("attn_output_norm"))?,
                w_gate,
                w_up: src.weight(gpu, &n("ffn_up.weight"), cfg.ffn, h)?,
                w_down: src.weight(gpu, &n("ffn_down.weight"), h, cfg.ffn)?,
                out_norm: ln(src, &n("layer_output_norm"))?,
            });
        }
        Ok(Encoder {
            cfg,
            tok_embd,
            pos_embd,
            types,
            embd_norm,
            layers,
            dummy: gpu.zeros("dummy", 16)?,
        })
    }

    /// Runs the inputs `seqs` (token ids, special tokens included) through the encoder in one GPU
    /// submission and returns every token's final hidden state, `hidden` floats per token, the
    /// inputs' tokens one after the other.
    pub async fn forward_async(
        &self,
        gpu: &Gpu,
        scratch: &mut Scratch,
        seqs: &[&[u32]],
    ) -> Result<Vec<f32>> {
        let (enc, m) = self.encode(gpu, scratch, seqs)?;
        gpu.submit(enc);
        // every layer leaves the residual stream in xn (see `encode`)
        let out = &scratch.bufs()?.xn;
        gpu.read_f32_async(out, 0, m * self.cfg.hidden).await
    }

    fn encode(
        &self,
        gpu: &Gpu,
        scratch: &mut Scratch,
        seqs: &[&[u32]],
    ) -> Result<(Recorder, usize)> {
        let c = &self.cfg;
        if seqs.is_empty() {
            return Err(Error::InvalidArgument("encoder: no inputs".into()));
        }
        let mut spans = Vec::with_capacity(seqs.len());
        let mut m = 0;
        for (i, sq) in seqs.iter().enumerate() {
            if sq.is_empty() {
                return Err(Error::InvalidArgument(format!("input {i} has no tokens")));
            }
            if sq.len() > c.ctx_train {
                return Err(Error::ContextOverflow {
                    tokens: sq.len(),
                    ctx: c.ctx_train,
                });
            }
            if let Some(&bad) = sq.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(Error::InvalidArgument(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab
                )));
            }
            spans.push((m, sq.len()));
            m += sq.len();
        }
        let h = c.hidden;
        let variant_m = spans.iter().map(|s| s.1).max().unwrap_or(1);
        let s = scratch.ensure(gpu, m, &[h, h, h, c.ffn], 1, 1)?;
        let mut enc = gpu.encoder();
        let tokens: Vec<u32> = seqs.iter().flat_map(|sq| sq.iter().copied()).collect();
        // The first positions the RoPE and attention kernels read, uploaded once for the pass:
        // slot 0 holds 0 (every input's RoPE starts there), slot 1 + i input i's first row (its
        // keys' and values' position in the packed k and v).
        let mut starts: Vec<u32> = std::iter::once(0)
            .chain(spans.iter().map(|&(row0, _)| row0 as u32))
            .collect();
        starts.resize(starts.len().next_multiple_of(4), 0); // (16-byte sized, as positions_or's)
        let starts = gpu.upload("encoder starts", bytemuck::cast_slice(&starts));
        let at = |slot| Positions { buf: &starts, slot };

        // x = token + position + type-0 embeddings, then the embeddings' LayerNorm
        Embed { w: &self.tok_embd }.encode(gpu, &mut enc, &tokens, &s.x)?;
        if let Some(pe) = &self.pos_embd {
            let positions: Vec<u32> = spans.iter().flat_map(|&(_, n)| 0..n as u32).collect();
            Embed { w: pe }.encode(gpu, &mut enc, &positions, &s.xn)?;
            add(gpu, &mut enc, m * h, &s.x, &s.xn)?;
        }
        if let Some(types) = &self.types {
            Embed { w: types }.encode(gpu, &mut enc, &vec![0; m], &s.xn)?;
            add(gpu, &mut enc, m * h, &s.x, &s.xn)?;
        }
        let norm = |enc: &mut Recorder, x, ln: &Ln, y| {
            LayerNorm {
                n: h,
                rows: m,
                eps: c.eps,
            }
            .encode(gpu, enc, x, &ln.w, &ln.b, y)
        };
        norm(&mut enc, &s.x, &self.embd_norm, &s.xn)?;
        let mm = |w, accumulate| MatMul {
            w,
            m,
            accumulate,
            variant_m,
        };
        let bias = |enc: &mut Recorder, b: Option<&wgpu::Buffer>, n, y| match b {
            Some(b) => add_bias(gpu, enc, m, n, y, b),
            None => Ok(()),
        };
        // the residual stream alternates: xn -> (attention, norm) -> x -> (ffn, norm) -> xn
        let (cur, other) = (&s.xn, &s.x);
        for layer in &self.layers {
            let b = |i: usize| layer.b.as_ref().map(|b| &b[i]);
            mm(&layer.wq, false).encode(gpu, &mut enc, cur, &s.q)?;
            mm(&layer.wk, false).encode(gpu, &mut enc, cur, &s.k)?;
            mm(&layer.wv, false).encode(gpu, &mut enc, cur, &s.v)?;
            bias(&mut enc, b(0), h, &s.q)?;
            bias(&mut enc, b(1), h, &s.k)?;
            bias(&mut enc, b(2), h, &s.v)?;
            for (i, &(row0, n)) in spans.iter().enumerate() {
                if let Some(rc) = &c.rope {
                    for buf in [&s.q, &s.k] {
                        Rope {
                            cfg: rc,
                            n_heads: c.n_heads,
                            head_dim: c.head_dim,
                            tokens: n,
                            pos0: 0,
                            row0,
                        }
                        .encode_at(
                            gpu,
                            &mut enc,
                            buf,
                            None,
                            &self.dummy,
                            at(0),
                        )?;
                    }
                }
                // the input's keys and values are rows row0.. of k and v: positions row0..
                Attention {
                    n_heads: c.n_heads,
                    n_kv_heads: c.n_heads,
                    head_dim: c.head_dim,
                    tokens: n,
                    pos0: row0,
                    scale: 1.0 / (c.head_dim as f32).sqrt(),
                    window: 0,
                    softcap: 0.0,
                    ring: 0,
                    row0,
                    kv: KvType::F32,
                    bidirectional: true,
                }
                .encode_at(
                    gpu,
                    &mut enc,
                    &s.q,
                    LayerKv {
                        k: &s.k,
                        v: &s.v,
                        base: None,
                        scale: None,
                    },
                    &s.att,
                    None,
                    at(1 + i),
                )?;
            }
            mm(&layer.wo, true).encode(gpu, &mut enc, &s.att, cur)?; // cur += Wo att
            bias(&mut enc, b(3), h, cur)?;
            norm(&mut enc, cur, &layer.attn_norm, other)?;

            mm(&layer.w_up, false).encode(gpu, &mut enc, other, &s.up)?;
            bias(&mut enc, b(4), c.ffn, &s.up)?;
            let act_out = match &layer.w_gate {
                Some(wg) => {
                    mm(wg, false).encode(gpu, &mut enc, other, &s.gate)?;
                    swiglu(gpu, &mut enc, m * c.ffn, &s.gate, &s.up)?;
                    &s.gate
                }
                None => {
                    Unary::GeluErf.encode(gpu, &mut enc, m * c.ffn, &s.up)?;
                    &s.up
                }
            };
            mm(&layer.w_down, true).encode(gpu, &mut enc, act_out, other)?; // other += Wdown f
            bias(&mut enc, b(5), h, other)?;
            norm(&mut enc, other, &layer.out_norm, cur)?;
        }
        Ok((enc, m))
    }
}
