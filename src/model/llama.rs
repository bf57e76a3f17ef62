//! The llama architecture (Llama 2/3, TinyLlama, SmolLM, Mistral), configured from GGUF metadata or
//! a Hugging Face `config.json`; also the metadata readers the other families share.
//!
//! Tensor names and metadata keys follow llama.cpp's GGUF conventions (gguf-py/gguf/constants.py).
//! One decoder layer (see `transformer.rs` for the shared forward pass):
//!
//! ```text
//! h  = x + Wo · attention(rope(Wq · rmsnorm(x)), rope(Wk · rmsnorm(x)), Wv · rmsnorm(x))
//! x' = h + Wdown · (silu(Wgate · rmsnorm(h)) * (Wup · rmsnorm(h)))
//! ```
//! Mistral is the same with a sliding window on every layer (`sliding_window` in `config.json`;
//! `llama.attention.sliding_window` in a GGUF when the converter wrote it).

use super::transformer::Config;
use super::HfNames;
use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::format::hf::HfConfig;
use crate::ops::rope::{RopeConfig, RopeMode};

/// Typed access to `{arch}.*` metadata keys of a GGUF, with errors naming the missing key.
pub(crate) struct Keys<'a> {
    pub g: &'a Gguf,
    pub arch: &'a str,
}

impl Keys<'_> {
    pub fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    pub fn req(&self, k: &str) -> Result<usize> {
        let key = self.key(k);
        self.g
            .get_u64(&key)
            .map(|v| v as usize)
            .ok_or_else(|| Error::Model(format!("missing required metadata key `{key}`")))
    }
    pub fn opt(&self, k: &str) -> Option<usize> {
        self.g.get_u64(&self.key(k)).map(|v| v as usize)
    }
    pub fn optf(&self, k: &str) -> Option<f32> {
        self.g.get_f32(&self.key(k))
    }

    /// The shapes and attention settings every architecture stores under the same keys.
    pub fn base(&self) -> Result<Config> {
        let hidden = self.req("embedding_length")?;
        let n_heads = self.req("attention.head_count")?;
        let n_kv_heads = self.opt("attention.head_count_kv").unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::Model(format!(
                "{n_heads} attention heads is not a multiple of {n_kv_heads} KV heads"
            )));
        }
        let head_dim = self.opt("attention.key_length").unwrap_or(hidden / n_heads);
        let vocab = match self.opt("vocab_size") {
            Some(v) => v,
            None => self
                .g
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| Error::Model("missing tensor `token_embd.weight`".into()))?
                as usize,
        };
        let mut c = Config::base(
            self.arch,
            self.req("block_count")?,
            hidden,
            self.req("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            self.req("context_length")?,
        );
        c.eps = self
            .optf("attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-5);
        c.tied_output = self.g.tensor("output.weight").is_none();
        Ok(c)
    }

    /// RoPE from `rope.*` keys (`mode` is the architecture's rotation layout).
    pub fn rope(&self, mode: RopeMode, head_dim: usize) -> Result<RopeConfig> {
        let freq_base = self.optf("rope.freq_base").unwrap_or(10000.0);
        let n_rot = self.opt("rope.dimension_count").unwrap_or(head_dim);
        let mut rope = RopeConfig::plain(mode, n_rot, freq_base);
        let scaling = self
            .g
            .get_str(&self.key("rope.scaling.type"))
            .unwrap_or("none");
        let factor = self.optf("rope.scaling.factor").filter(|f| *f > 0.0);
        match (scaling, factor) {
            ("none", _) | (_, None) => {}
            ("linear", Some(f)) => rope.freq_scale = 1.0 / f,
            ("yarn", Some(f)) => {
                rope.freq_scale = 1.0 / f;
                rope.ext_factor = self.optf("rope.scaling.yarn_ext_factor").unwrap_or(1.0);
                rope.attn_factor = self.optf("rope.scaling.attn_factor").unwrap_or(1.0);
                rope.beta_fast = self.optf("rope.scaling.yarn_beta_fast").unwrap_or(32.0);
                rope.beta_slow = self.optf("rope.scaling.yarn_beta_slow").unwrap_or(1.0);
                rope.n_ctx_orig = match self.opt("rope.scaling.original_context_length") {
                    Some(n) => n,
                    None => self.req("context_length")?,
                };
            }
            (other, _) => {
                return Err(Error::Model(format!(
                    "unsupported rope scaling type `{other}`"
                )))
            }
        }
        Ok(rope)
    }
}

/// Reads the configuration of a llama-family GGUF (`arch` is its `general.architecture`).
pub fn from_gguf(g: &Gguf, arch: &str) -> Result<Config> {
    let k = Keys { g, arch };
    let mut c = k.base()?;
    c.rope = Some(k.rope(RopeMode::Normal, c.head_dim)?);
    c.slide_every_layer(k.opt("attention.sliding_window"));
    Ok(c)
}

/// The shared part of a Hugging Face `config.json` (transformers' configuration_llama.py and its
/// relatives, with their defaults for absent optional keys): shapes, eps, RoPE (NeoX layout, as HF
/// checkpoints keep Q/K), tied embeddings. `default_ctx` is the family's
/// `max_position_embeddings` default.
pub(crate) fn hf_base(c: &HfConfig, arch: &str, default_ctx: usize) -> Result<Config> {
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
    let ctx_train = c
        .opt_usize("max_position_embeddings")?
        .unwrap_or(default_ctx);
    let mut cfg = Config::base(
        arch,
        c.req_usize("num_hidden_layers")?,
        hidden,
        c.req_usize("intermediate_size")?,
        n_heads,
        n_kv_heads,
        head_dim,
        c.req_usize("vocab_size")?,
        ctx_train,
    );
    cfg.eps = c.opt_f32("rms_norm_eps")?.unwrap_or(1e-6);
    cfg.tied_output = c.opt_bool("tie_word_embeddings")?.unwrap_or(false);
    let freq_base = hf_rope_theta(c)?.unwrap_or(10000.0);
    let mut rope = RopeConfig::plain(RopeMode::Neox, head_dim, freq_base);
    let scaling = hf_rope_scaling(c);
    cfg.rope_freq_factors =
        apply_hf_rope_scaling(c, scaling.as_ref(), &mut rope, head_dim, ctx_train)?;
    cfg.rope = Some(rope);
    Ok(cfg)
}

/// `rope_theta`, top-level or (transformers >= 4.5x) nested under `rope_parameters`.
pub(crate) fn hf_rope_theta(c: &HfConfig) -> Result<Option<f32>> {
    if let Some(t) = c.opt_f32("rope_theta")? {
        return Ok(Some(t));
    }
    let params = c.get("rope_parameters").and_then(|v| v.as_object());
    let nested = |p: &serde_json::Map<String, serde_json::Value>| {
        p.get("rope_theta")
            .and_then(|v| v.as_f64())
            .map(|v| v as f32)
    };
    Ok(params.and_then(|p| {
        nested(p).or_else(|| {
            p.get("full_attention")
                .and_then(|v| v.as_object())
                .and_then(nested)
        })
    }))
}

/// The `rope_scaling` object (or `rope_parameters`, or its `full_attention` entry).
pub(crate) fn hf_rope_scaling(c: &HfConfig) -> Option<serde_json::Value> {
    let v = c.get("rope_scaling").or_else(|| c.get("rope_parameters"))?;
    match v.get("full_attention") {
        Some(full) if full.is_object() => Some(full.clone()),
        _ => Some(v.clone()),
    }
}

/// Reads a Hugging Face `LlamaForCausalLM` / `MistralForCausalLM` `config.json`.
///
/// HF checkpoints keep Q/K in the layout of `rotate_half` (pairs `i, i + head_dim/2`), which is
/// [`RopeMode::Neox`]; llama.cpp's converter permutes the Q/K rows of a GGUF for
/// [`RopeMode::Normal`] instead, so the same model needs a different mode in each format.
pub fn from_hf(c: &HfConfig) -> Result<Config> {
    let mistral = c.architecture()? == "MistralForCausalLM";
    let mut cfg = hf_base(
        c,
        if mistral { "mistral" } else { "llama" },
        if mistral { 4096 * 32 } else { 2048 },
    )?;
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
    cfg.slide_every_layer(c.opt_usize("sliding_window")?);
    Ok(cfg)
}

/// Hugging Face names of the llama family (also qwen2/qwen3, which add biases and Q/K norms
/// under the same scheme): llama.cpp's gguf-py/gguf/tensor_mapping.py, read backwards.
pub const HF_NAMES: HfNames = HfNames {
    name: hf_name,
    transposed: |_| false,
};

fn hf_name(gguf: &str) -> Option<Vec<String>> {
    let one = |s: &str| Some(vec![s.to_string()]);
    match gguf {
        "token_embd.weight" => return one("model.embed_tokens.weight"),
        "output_norm.weight" => return one("model.norm.weight"),
        "output.weight" => return one("lm_head.weight"),
        _ => {}
    }
    let (layer, base, suffix) = super::gguf_block_name(gguf)?;
    let hf = match base {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    one(&format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Applies a Hugging Face `rope_scaling` object (transformers' modeling_rope_utils.py) to `rope`;
/// returns per-frequency divisors for `llama3` scaling. Supported: `default`, `linear`, `yarn`,
/// `llama3`; anything else is an error naming it.
pub(crate) fn apply_hf_rope_scaling(
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
