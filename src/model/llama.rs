//! The llama architecture (Llama 2/3, TinyLlama, SmolLM, Mistral), configured from GGUF metadata or
//! a Hugging Face `config.json`.
//!
//! Tensor names and metadata keys follow llama.cpp's GGUF conventions (gguf-py/gguf/constants.py).
//! One decoder layer, as `forward` encodes it:
//!
//! ```text
//! h  = x + Wo · attention(rope(Wq · rmsnorm(x)), rope(Wk · rmsnorm(x)), Wv · rmsnorm(x))
//! x' = h + Wdown · (silu(Wgate · rmsnorm(h)) * (Wup · rmsnorm(h)))
//! ```

use super::{KvCache, Logits, ModelInfo, Scratch, TensorSource};
use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::format::hf::HfConfig;
use crate::gpu::{Gpu, Weight};
use crate::ops::attention::Attention;
use crate::ops::elementwise::swiglu;
use crate::ops::embed::Embed;
use crate::ops::matmul::MatMul;
use crate::ops::norm::RmsNorm;
use crate::ops::rope::{Rope, RopeConfig, RopeMode};

/// Hyper-parameters, all read from metadata.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub ctx_train: usize,
    pub eps: f32,
    pub rope: RopeConfig,
    pub tied_output: bool,
    /// Per-frequency divisors computed from the configuration (Llama 3.1 `llama3` RoPE scaling in a
    /// Hugging Face config); a GGUF carries them as the tensor `rope_freqs.weight` instead.
    pub rope_freq_factors: Option<Vec<f32>>,
}

impl LlamaConfig {
    /// Reads the configuration of a llama-family GGUF (`arch` is its `general.architecture`).
    pub fn from_gguf(g: &Gguf, arch: &str) -> Result<LlamaConfig> {
        let req = |k: &str| -> Result<usize> {
            let key = format!("{arch}.{k}");
            g.get_u64(&key)
                .map(|v| v as usize)
                .ok_or_else(|| Error::Model(format!("missing required metadata key `{key}`")))
        };
        let opt = |k: &str| g.get_u64(&format!("{arch}.{k}")).map(|v| v as usize);
        let optf = |k: &str| g.get_f32(&format!("{arch}.{k}"));
        let hidden = req("embedding_length")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = opt("attention.head_count_kv").unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::Model(format!(
                "{n_heads} attention heads is not a multiple of {n_kv_heads} KV heads"
            )));
        }
        let head_dim = opt("attention.key_length").unwrap_or(hidden / n_heads);
        let vocab = match opt("vocab_size") {
            Some(v) => v,
            None => g
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| Error::Model("missing `token_embd.weight`".into()))?
                as usize,
        };
        let freq_base = optf("rope.freq_base").unwrap_or(10000.0);
        let n_rot = opt("rope.dimension_count").unwrap_or(head_dim);
        let mut rope = RopeConfig::plain(RopeMode::Normal, n_rot, freq_base);
        let scaling = g
            .get_str(&format!("{arch}.rope.scaling.type"))
            .unwrap_or("none");
        let factor = optf("rope.scaling.factor").filter(|f| *f > 0.0);
        match (scaling, factor) {
            ("none", _) | (_, None) => {}
            ("linear", Some(f)) => rope.freq_scale = 1.0 / f,
            ("yarn", Some(f)) => {
                rope.freq_scale = 1.0 / f;
                rope.ext_factor = optf("rope.scaling.yarn_ext_factor").unwrap_or(1.0);
                rope.attn_factor = optf("rope.scaling.attn_factor").unwrap_or(1.0);
                rope.beta_fast = optf("rope.scaling.yarn_beta_fast").unwrap_or(32.0);
                rope.beta_slow = optf("rope.scaling.yarn_beta_slow").unwrap_or(1.0);
                rope.n_ctx_orig =
                    opt("rope.scaling.original_context_length").unwrap_or(req("context_length")?);
            }
            (other, _) => {
                return Err(Error::Model(format!(
                    "unsupported rope scaling type `{other}`"
                )))
            }
        }
        Ok(LlamaConfig {
            n_layers: req("block_count")?,
            hidden,
            ffn: req("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            ctx_train: req("context_length")?,
            eps: optf("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope,
            tied_output: g.tensor("output.weight").is_none(),
            rope_freq_factors: None,
        })
    }

    /// Reads the configuration of a Hugging Face `LlamaForCausalLM` / `MistralForCausalLM`
    /// `config.json` (transformers' configuration_llama.py and configuration_mistral.py, with
    /// their defaults for absent optional keys).
    ///
    /// HF checkpoints keep Q/K in the layout of `rotate_half` (pairs `i, i + head_dim/2`), which is
    /// [`RopeMode::Neox`]; llama.cpp's converter permutes the Q/K rows of a GGUF for
    /// [`RopeMode::Normal`] instead, so the same model needs a different mode in each format.
    pub fn from_hf(c: &HfConfig) -> Result<LlamaConfig> {
        let arch = c.architecture()?;
        let mistral = arch == "MistralForCausalLM";
        let hidden = c.req_usize("hidden_size")?;
        let n_heads = c.req_usize("num_attention_heads")?;
        let n_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(c.key_error(
                "num_key_value_heads",
                format!("{n_heads} attention heads is not a multiple of {n_kv_heads} KV heads"),
            ));
        }
        let head_dim = c.opt_usize("head_dim")?.unwrap_or(hidden / n_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(c.key_error(
                "head_dim",
                format!("{head_dim} is not a positive even number"),
            ));
        }
        if let Some(act) = c.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(c.key_error(
                    "hidden_act",
                    format!("`{act}` is not supported (only silu)"),
                ));
            }
        }
        for key in ["attention_bias", "mlp_bias"] {
            if c.opt_bool(key)? == Some(true) {
                return Err(c.key_error(key, "biases are not supported for this architecture yet"));
            }
        }
        let mut ctx_train = c
            .opt_usize("max_position_embeddings")?
            .unwrap_or(if mistral { 4096 * 32 } else { 2048 });
        if mistral {
            // flint has no sliding-window attention yet: keep the default context inside the window.
            if let Some(w) = c.opt_usize("sliding_window")? {
                ctx_train = ctx_train.min(w.max(1));
            }
        }
        // transformers >= 4.5x also nests these under `rope_parameters`.
        let params = c.get("rope_parameters").and_then(|v| v.as_object());
        let freq_base = match c.opt_f32("rope_theta")? {
            Some(t) => t,
            None => params
                .and_then(|p| p.get("rope_theta"))
                .and_then(|v| v.as_f64())
                .map(|v| v as f32)
                .unwrap_or(10000.0),
        };
        let mut rope = RopeConfig::plain(RopeMode::Neox, head_dim, freq_base);
        let scaling = c
            .get("rope_scaling")
            .or_else(|| c.get("rope_parameters"))
            .cloned();
        let rope_freq_factors =
            apply_hf_rope_scaling(c, scaling.as_ref(), &mut rope, head_dim, ctx_train)?;
        Ok(LlamaConfig {
            n_layers: c.req_usize("num_hidden_layers")?,
            hidden,
            ffn: c.req_usize("intermediate_size")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab: c.req_usize("vocab_size")?,
            ctx_train,
            eps: c.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope,
            tied_output: c.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            rope_freq_factors,
        })
    }
}

/// Applies a Hugging Face `rope_scaling` object (transformers' modeling_rope_utils.py) to `rope`;
/// returns per-frequency divisors for `llama3` scaling. Supported: `default`, `linear`, `yarn`,
/// `llama3`; anything else is an error naming it.
fn apply_hf_rope_scaling(
    c: &HfConfig,
    scaling: Option<&serde_json::Value>,
    rope: &mut RopeConfig,
    head_dim: usize,
    ctx_train: usize,
) -> Result<Option<Vec<f32>>> {
    let Some(s) = scaling.filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let key = "rope_scaling";
    let obj = s
        .as_object()
        .ok_or_else(|| c.key_error(key, "is not an object"))?;
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let num = |k: &str| obj.get(k).filter(|v| !v.is_null()).and_then(|v| v.as_f64());
    let factor = || {
        num("factor")
            .filter(|f| *f > 0.0)
            .ok_or_else(|| c.key_error(key, format!("`{kind}` scaling needs a positive `factor`")))
    };
    let orig_ctx = || {
        num("original_max_position_embeddings")
            .map(|v| v as usize)
            .unwrap_or(ctx_train)
    };
    match kind {
        "default" => Ok(None),
        "linear" => {
            rope.freq_scale = 1.0 / factor()? as f32;
            Ok(None)
        }
        "yarn" => {
            let f = factor()?;
            if obj.get("truncate").and_then(|v| v.as_bool()) == Some(false) {
                return Err(c.key_error(key, "yarn with `truncate: false` is not supported"));
            }
            // transformers' get_mscale; flint's kernel (like ggml's) multiplies by
            // get_mscale(factor) itself, so attn_factor carries only the ratio to it.
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention = match (
                num("attention_factor"),
                num("mscale"),
                num("mscale_all_dim"),
            ) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) => mscale(f, m) / mscale(f, all),
                _ => mscale(f, 1.0),
            };
            rope.freq_scale = 1.0 / f as f32;
            rope.ext_factor = 1.0;
            rope.attn_factor = (attention / mscale(f, 1.0)) as f32;
            rope.beta_fast = num("beta_fast").unwrap_or(32.0) as f32;
            rope.beta_slow = num("beta_slow").unwrap_or(1.0) as f32;
            rope.n_ctx_orig = orig_ctx();
            Ok(None)
        }
        "llama3" => {
            // As llama.cpp's converter computes `rope_freqs` (convert_hf_to_gguf.py, LlamaModel):
            // the divisor of each frequency, from transformers' _compute_llama3_parameters.
            let f = factor()?;
            let low = num("low_freq_factor").unwrap_or(1.0);
            let high = num("high_freq_factor").unwrap_or(4.0);
            let old = num("original_max_position_embeddings").unwrap_or(8192.0);
            if high <= low {
                return Err(c.key_error(
                    key,
                    "llama3 scaling needs high_freq_factor > low_freq_factor",
                ));
            }
            let (low_wl, high_wl) = (old / low, old / high);
            let base = rope.freq_base as f64;
            let factors = (0..head_dim / 2)
                .map(|i| {
                    let freq = 1.0 / base.powf(2.0 * i as f64 / head_dim as f64);
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let d = if wavelen < high_wl {
                        1.0
                    } else if wavelen > low_wl {
                        f
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        1.0 / ((1.0 - smooth) / f + smooth)
                    };
                    d as f32
                })
                .collect();
            Ok(Some(factors))
        }
        other => Err(c.key_error(
            key,
            format!(
                "rope type `{other}` is not supported (supported: default, linear, yarn, llama3)"
            ),
        )),
    }
}

struct Layer {
    attn_norm: wgpu::Buffer,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    ffn_norm: wgpu::Buffer,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
}

/// A llama model with its weights on the GPU.
pub struct Llama {
    pub cfg: LlamaConfig,
    tok_embd: Weight,
    layers: Vec<Layer>,
    out_norm: wgpu::Buffer,
    /// `None` when tied to the embedding table.
    output: Option<Weight>,
    rope_freqs: Option<wgpu::Buffer>,
    dummy: wgpu::Buffer,
}

impl Llama {
    /// Uploads every weight, checking each tensor's shape against the configuration.
    pub fn load(gpu: &Gpu, src: &mut TensorSource, cfg: LlamaConfig) -> Result<Llama> {
        let (h, kv, hd) = (cfg.hidden, cfg.n_kv_heads, cfg.head_dim);
        let q_dim = cfg.n_heads * hd;
        let kv_dim = kv * hd;
        let tok_embd = src.weight(gpu, "token_embd.weight", cfg.vocab, h)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: src.vector(gpu, &n("attn_norm"), h)?,
                wq: src.weight(gpu, &n("attn_q"), q_dim, h)?,
                wk: src.weight(gpu, &n("attn_k"), kv_dim, h)?,
                wv: src.weight(gpu, &n("attn_v"), kv_dim, h)?,
                wo: src.weight(gpu, &n("attn_output"), h, q_dim)?,
                ffn_norm: src.vector(gpu, &n("ffn_norm"), h)?,
                w_gate: src.weight(gpu, &n("ffn_gate"), cfg.ffn, h)?,
                w_up: src.weight(gpu, &n("ffn_up"), cfg.ffn, h)?,
                w_down: src.weight(gpu, &n("ffn_down"), h, cfg.ffn)?,
            });
        }
        let out_norm = src.vector(gpu, "output_norm.weight", h)?;
        let output = if cfg.tied_output {
            None
        } else {
            Some(src.weight(gpu, "output.weight", cfg.vocab, h)?)
        };
        let rope_freqs = if src.has("rope_freqs.weight") {
            Some(src.vector(gpu, "rope_freqs.weight", cfg.rope.n_rot / 2)?)
        } else {
            cfg.rope_freq_factors
                .as_ref()
                .map(|f| gpu.upload("rope_freqs", bytemuck::cast_slice(f)))
        };
        let dummy = gpu.zeros("dummy", 16)?;
        Ok(Llama {
            cfg,
            tok_embd,
            layers,
            out_norm,
            output,
            rope_freqs,
            dummy,
        })
    }

    /// Summary for `flint info`.
    pub fn info(&self) -> ModelInfo {
        let c = &self.cfg;
        ModelInfo {
            architecture: "llama".into(),
            params: vec![
                ("layers".into(), c.n_layers.to_string()),
                ("hidden".into(), c.hidden.to_string()),
                ("ffn".into(), c.ffn.to_string()),
                ("heads".into(), c.n_heads.to_string()),
                ("kv_heads".into(), c.n_kv_heads.to_string()),
                ("head_dim".into(), c.head_dim.to_string()),
                ("vocab".into(), c.vocab.to_string()),
                ("context_train".into(), c.ctx_train.to_string()),
                ("rms_eps".into(), c.eps.to_string()),
                ("rope".into(), format!("{:?}", c.rope)),
                ("tied_output".into(), c.tied_output.to_string()),
            ],
        }
    }

    /// A KV cache for `ctx` positions.
    pub fn new_cache(&self, gpu: &Gpu, ctx: usize) -> Result<KvCache> {
        KvCache::new(
            gpu,
            self.cfg.n_layers,
            ctx,
            self.cfg.n_kv_heads * self.cfg.head_dim,
        )
    }

    /// Runs `tokens` (positions `cache.len..`) through the model in one GPU submission, appends
    /// their keys/values to `cache`, and returns the logits asked for (awaiting the readback:
    /// the web cannot block on the GPU; native callers use [`super::Model::forward`]).
    pub async fn forward_async(
        &self,
        gpu: &Gpu,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let m = tokens.len();
        let pos0 = cache.len;
        if m == 0 {
            return Err(Error::InvalidArgument("forward: no tokens".into()));
        }
        if pos0 + m > cache.ctx {
            return Err(Error::ContextOverflow {
                tokens: pos0 + m,
                ctx: cache.ctx,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab
            )));
        }
        let (h, hd) = (c.hidden, c.head_dim);
        let (q_dim, kv_dim) = (c.n_heads * hd, c.n_kv_heads * hd);
        let n_logit_rows = if want == Logits::All { m } else { 1 };
        let s = scratch.ensure(gpu, m, &[h, q_dim, kv_dim, c.ffn], n_logit_rows * c.vocab)?;
        let mut enc = gpu.encoder();

        // x = embedding rows of the tokens (dequantized from the table)
        Embed { w: &self.tok_embd }.encode(gpu, &mut enc, tokens, &s.x)?;

        let rope = |enc: &mut wgpu::CommandEncoder, buf: &wgpu::Buffer, heads: usize| {
            Rope {
                cfg: &c.rope,
                n_heads: heads,
                head_dim: hd,
                tokens: m,
                pos0,
            }
            .encode(gpu, enc, buf, self.rope_freqs.as_ref(), &self.dummy)
        };
        let norm = RmsNorm {
            n: h,
            rows: m,
            eps: c.eps,
        };
        let mm = |w, accumulate| MatMul { w, m, accumulate };
        for (l, layer) in self.layers.iter().enumerate() {
            // attention block
            norm.encode(gpu, &mut enc, &s.x, &layer.attn_norm, &s.xn)?;
            mm(&layer.wq, false).encode(gpu, &mut enc, &s.xn, &s.q)?;
            mm(&layer.wk, false).encode(gpu, &mut enc, &s.xn, &s.k)?;
            mm(&layer.wv, false).encode(gpu, &mut enc, &s.xn, &s.v)?;
            rope(&mut enc, &s.q, c.n_heads)?;
            rope(&mut enc, &s.k, c.n_kv_heads)?;
            let at = (pos0 * kv_dim * 4) as u64;
            let len = (m * kv_dim * 4) as u64;
            enc.copy_buffer_to_buffer(&s.k, 0, &cache.k[l], at, len);
            enc.copy_buffer_to_buffer(&s.v, 0, &cache.v[l], at, len);
            Attention {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
                tokens: m,
                pos0,
                scale: 1.0 / (hd as f32).sqrt(),
            }
            .encode(gpu, &mut enc, &s.q, &cache.k[l], &cache.v[l], &s.att)?;
            mm(&layer.wo, true).encode(gpu, &mut enc, &s.att, &s.x)?; // x += Wo att

            // feed-forward block
            norm.encode(gpu, &mut enc, &s.x, &layer.ffn_norm, &s.xn)?;
            mm(&layer.w_gate, false).encode(gpu, &mut enc, &s.xn, &s.gate)?;
            mm(&layer.w_up, false).encode(gpu, &mut enc, &s.xn, &s.up)?;
            swiglu(gpu, &mut enc, m * c.ffn, &s.gate, &s.up)?;
            mm(&layer.w_down, true).encode(gpu, &mut enc, &s.gate, &s.x)?; // x += Wdown ffn
        }

        // final norm and output head, over the last token or all of them
        norm.encode(gpu, &mut enc, &s.x, &self.out_norm, &s.xn)?;
        let head = self.output.as_ref().unwrap_or(&self.tok_embd);
        let rows_in = if want == Logits::All {
            &s.xn
        } else {
            enc.copy_buffer_to_buffer(&s.xn, ((m - 1) * h * 4) as u64, &s.last, 0, (h * 4) as u64);
            &s.last
        };
        MatMul {
            w: head,
            m: n_logit_rows,
            accumulate: false,
        }
        .encode(gpu, &mut enc, rows_in, &s.logits)?;
        gpu.submit(enc);
        let logits = gpu
            .read_f32_async(&s.logits, 0, n_logit_rows * c.vocab)
            .await?;
        cache.len = pos0 + m;
        Ok(logits)
    }
}
