//! Qwen2 and Qwen3: the llama layer with biases on Q/K/V (qwen2) or an RMSNorm over each head of
//! Q and K before RoPE (qwen3, whose `head_dim` is independent of the hidden size). Both rotate in
//! the NeoX layout in either format (llama.cpp's converter does not permute their Q/K).
//! References: transformers' modeling_qwen2.py / modeling_qwen3.py, llama.cpp's qwen2/qwen3 graphs.

use super::llama::{hf_base, Keys};
use super::transformer::Config;
use crate::error::Result;
use crate::format::gguf::Gguf;
use crate::format::hf::HfConfig;
use crate::ops::rope::RopeMode;

/// Reads a `qwen2` or `qwen3` GGUF.
pub fn from_gguf(g: &Gguf, arch: &str) -> Result<Config> {
    let k = Keys { g, arch };
    let mut c = k.base()?;
    c.eps = k.optf("attention.layer_norm_rms_epsilon").unwrap_or(1e-6);
    c.rope = Some(k.rope(RopeMode::Neox, c.head_dim)?);
    c.qkv_bias = arch == "qwen2";
    c.qk_norm = arch == "qwen3";
    Ok(c)
}

/// Reads a `Qwen2ForCausalLM` or `Qwen3ForCausalLM` `config.json`.
pub fn from_hf(c: &HfConfig) -> Result<Config> {
    let qwen3 = c.architecture()? == "Qwen3ForCausalLM";
    let mut cfg = hf_base(c, if qwen3 { "qwen3" } else { "qwen2" }, 32768)?;
    if let Some(act) = c.opt_str("hidden_act")? {
        if act != "silu" {
            return Err(c.key_error(
                "hidden_act",
                format!("`{act}` is not supported (only silu)"),
            ));
        }
    }
    if qwen3 {
        cfg.qk_norm = true;
        if c.opt_bool("attention_bias")? == Some(true) {
            return Err(c.key_error("attention_bias", "Qwen3 with biases is not supported"));
        }
    } else {
        cfg.qkv_bias = true;
    }
    // transformers: layers from `max_window_layers` on slide when `use_sliding_window` is set.
    if c.opt_bool("use_sliding_window")? == Some(true) {
        if let Some(w) = c.opt_usize("sliding_window")?.filter(|&w| w > 0) {
            let from = c.opt_usize("max_window_layers")?.unwrap_or(cfg.n_layers);
            for (i, win) in cfg.windows.iter_mut().enumerate() {
                if i >= from {
                    *win = w;
                }
            }
        }
    }
    hf_layer_types(c, &mut cfg)?;
    Ok(cfg)
}

/// Applies an explicit `layer_types` list (transformers >= 4.5x) over the windows: a
/// `sliding_attention` layer gets `sliding_window`, a `full_attention` layer none.
pub(crate) fn hf_layer_types(c: &HfConfig, cfg: &mut Config) -> Result<()> {
    let Some(types) = c.get("layer_types").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let types = types
        .as_array()
        .ok_or_else(|| c.key_error("layer_types", "is not a list"))?;
    if types.len() != cfg.n_layers {
        return Err(c.key_error(
            "layer_types",
            format!("{} entries for {} layers", types.len(), cfg.n_layers),
        ));
    }
    let window = c.opt_usize("sliding_window")?.unwrap_or(0);
    for (i, t) in types.iter().enumerate() {
        cfg.windows[i] = match t.as_str() {
            Some("full_attention") => 0,
            Some("sliding_attention") if window > 0 => window,
            Some("sliding_attention") => {
                return Err(c.key_error(
                    "sliding_window",
                    "is needed by the sliding_attention layers of `layer_types`",
                ))
            }
            _ => {
                return Err(c.key_error(
                    "layer_types",
                    format!("entry {i} is {t}, not full_attention or sliding_attention"),
                ))
            }
        };
    }
    Ok(())
}
