//! Phi-3 (and Phi-3.5 / Phi-4-mini): the llama layer with Q/K/V fused into one `qkv_proj` and gate
//! and up fused into one `gate_up_proj` (gate first), both split by rows at load; NeoX RoPE over a
//! `partial_rotary_factor` share of each head; `longrope` scaling with separate short and long
//! per-frequency factors and an attention factor on cos/sin; a sliding window on every layer when
//! the config has one.
//!
//! References: transformers' modeling_phi3.py and modeling_rope_utils.py
//! (`_compute_longrope_parameters`); llama.cpp's converter (conversion/phi.py: GGUF keys
//! `phi3.rope.scaling.*`, tensors `rope_factors_short/long.weight`). The long factors apply once
//! the sequence outgrows the original context (transformers' rule; llama.cpp decides once from the
//! context size instead, which agrees whenever the whole sequence fits in the original context).

use super::llama::{hf_rope_scaling, hf_rope_theta, Keys};
use super::transformer::{Config, LongRope};
use super::HfNames;
use crate::error::Result;
use crate::format::gguf::Gguf;
use crate::format::hf::HfConfig;
use crate::ops::rope::{RopeConfig, RopeMode};

/// Reads a `phi3` GGUF.
pub fn from_gguf(g: &Gguf) -> Result<Config> {
    let k = Keys { g, arch: "phi3" };
    let mut c = k.base()?;
    c.eps = k.optf("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
    c.fused_qkv = true;
    c.fused_gate_up = true;
    let mut rope = k.rope(RopeMode::Neox, c.head_dim)?;
    if let Some(f) = k.optf("rope.scaling.attn_factor") {
        rope.attn_factor = f;
    }
    c.rope = Some(rope);
    c.long_rope_ctx = k
        .opt("rope.scaling.original_context_length")
        .unwrap_or(c.ctx_train);
    c.slide_every_layer(k.opt("attention.sliding_window"));
    Ok(c)
}

/// Reads a `Phi3ForCausalLM` `config.json`.
pub fn from_hf(c: &HfConfig) -> Result<Config> {
    let hidden = c.req_usize("hidden_size")?;
    let n_heads = c.req_usize("num_attention_heads")?;
    let mut cfg = Config::base(
        "phi3",
        c.req_usize("num_hidden_layers")?,
        hidden,
        c.req_usize("intermediate_size")?,
        n_heads,
        c.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
        c.opt_usize("head_dim")?.unwrap_or(hidden / n_heads.max(1)),
        c.req_usize("vocab_size")?,
        c.opt_usize("max_position_embeddings")?.unwrap_or(4096),
    );
    if let Some(act) = c.opt_str("hidden_act")? {
        if act != "silu" {
            return Err(c.key_error(
                "hidden_act",
                format!("`{act}` is not supported (only silu)"),
            ));
        }
    }
    cfg.eps = c.opt_f32("rms_norm_eps")?.unwrap_or(1e-5);
    cfg.tied_output = c.opt_bool("tie_word_embeddings")?.unwrap_or(false);
    cfg.fused_qkv = true;
    cfg.fused_gate_up = true;
    let scaling = hf_rope_scaling(c);
    let num = |k: &str| {
        scaling
            .as_ref()
            .and_then(|s| s.get(k))
            .and_then(|v| v.as_f64())
    };
    let partial = match c.opt_f32("partial_rotary_factor")? {
        Some(p) => p as f64,
        None => num("partial_rotary_factor").unwrap_or(1.0),
    };
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(c.key_error("partial_rotary_factor", "must be in (0, 1]"));
    }
    let n_rot = (cfg.head_dim as f64 * partial) as usize;
    let base = hf_rope_theta(c)?.unwrap_or(10000.0);
    let mut rope = RopeConfig::plain(RopeMode::Neox, n_rot, base);
    let orig = c
        .opt_usize("original_max_position_embeddings")?
        .or(num("original_max_position_embeddings").map(|v| v as usize))
        .unwrap_or(cfg.ctx_train);
    cfg.long_rope_ctx = orig;
    let kind = scaling
        .as_ref()
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    match kind {
        "default" => {}
        "longrope" | "su" => {
            let factors = |key: &str| -> Result<Vec<f32>> {
                let v = scaling
                    .as_ref()
                    .and_then(|s| s.get(key))
                    .and_then(|v| v.as_array())
                    .ok_or_else(|| {
                        c.key_error("rope_scaling", format!("longrope needs `{key}`"))
                    })?;
                let f: Option<Vec<f32>> = v.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
                let f = f.ok_or_else(|| {
                    c.key_error("rope_scaling", format!("`{key}` is not a list of numbers"))
                })?;
                if f.len() != n_rot / 2 || f.iter().any(|x| x.is_nan() || *x <= 0.0) {
                    return Err(c.key_error(
                        "rope_scaling",
                        format!(
                            "`{key}` needs {} positive numbers (half the rotary dimensions), got {}",
                            n_rot / 2,
                            f.len()
                        ),
                    ));
                }
                Ok(f)
            };
            // transformers' _compute_longrope_parameters
            let factor = cfg.ctx_train as f64 / orig.max(1) as f64;
            rope.attn_factor = match num("attention_factor") {
                Some(a) => a as f32,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (orig as f64).ln()).sqrt() as f32,
            };
            cfg.long_rope = Some(LongRope {
                short: factors("short_factor")?,
                long: factors("long_factor")?,
                orig_ctx: orig,
            });
        }
        other => {
            return Err(c.key_error(
                "rope_scaling",
                format!("rope type `{other}` is not supported for Phi-3 (default, longrope)"),
            ))
        }
    }
    cfg.rope = Some(rope);
    cfg.slide_every_layer(c.opt_usize("sliding_window")?);
    Ok(cfg)
}

/// Hugging Face names of Phi-3 (llama.cpp's tensor_mapping.py, read backwards).
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
        "attn_qkv" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_up" => "mlp.gate_up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    one(&format!("model.layers.{layer}.{hf}.{suffix}"))
}
