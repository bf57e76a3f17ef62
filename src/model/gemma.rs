//! Gemma 2 and Gemma 3 (text). Differences from llama, all options of the shared decoder:
//! embeddings scaled by sqrt(hidden); RMSNorm computing `x * (1 + w)` (a Hugging Face checkpoint
//! stores `w`, llama.cpp's converter stores `1 + w`); GeGLU with tanh-GELU; norms after attention
//! and after the MLP as well as before; sliding-window layers interleaved with global ones; the
//! query scaled by `query_pre_attn_scalar^-0.5`; gemma2 soft-caps attention logits and final
//! logits; gemma3 normalises each Q/K head and gives its sliding layers their own RoPE base.
//!
//! References: transformers' modeling_gemma2.py / modeling_gemma3.py and configuration files;
//! llama.cpp's src/llama-model.cpp (what a GGUF leaves implicit: gemma2 slides on every other
//! layer starting with layer 0, gemma3 on five of every six with a local RoPE base of 10000, and
//! the attention scale is 1/sqrt(head_dim) except for the 27B models, which use
//! 1/sqrt(hidden/heads)).

use super::llama::{hf_base, hf_rope_theta, Keys};
use super::qwen::hf_layer_types;
use super::transformer::{Act, Config};
use super::HfNames;
use crate::error::Result;
use crate::format::gguf::{Gguf, Value};
use crate::format::hf::HfConfig;
use crate::ops::rope::{RopeConfig, RopeMode};

/// Sliding windows for `n_layers` layers where layer `i` slides unless `(i + 1) % pattern == 0`.
fn pattern_windows(n_layers: usize, pattern: usize, window: usize) -> Vec<usize> {
    (0..n_layers)
        .map(|i| {
            if pattern == 0 || (pattern > 1 && (i + 1) % pattern != 0) {
                window
            } else {
                0
            }
        })
        .collect()
}

/// Reads a `gemma2` or `gemma3` GGUF.
pub fn from_gguf(g: &Gguf, arch: &str) -> Result<Config> {
    let k = Keys { g, arch };
    let gemma3 = arch == "gemma3";
    let mut c = k.base()?;
    c.eps = k.optf("attention.layer_norm_rms_epsilon").unwrap_or(1e-6);
    c.act = Act::GeGlu;
    c.post_norms = true;
    c.qk_norm = gemma3;
    c.embed_scale = Some((c.hidden as f32).sqrt());
    // llama.cpp: 27B models (46 layers for gemma2, 62 for gemma3) scale by hidden/heads.
    let big = (!gemma3 && c.n_layers == 46) || (gemma3 && c.n_layers == 62);
    let scale_dim = if big {
        c.hidden / c.n_heads
    } else {
        c.head_dim
    };
    c.attn_scale = 1.0 / (scale_dim as f32).sqrt();
    c.attn_softcap = k.optf("attn_logit_softcapping").unwrap_or(0.0);
    c.final_softcap = k.optf("final_logit_softcapping").unwrap_or(0.0);
    let rope = k.rope(RopeMode::Neox, c.head_dim)?;
    let window = k.opt("attention.sliding_window").unwrap_or(0);
    let pattern_key = k.key("attention.sliding_window_pattern");
    c.windows = match g.get(&pattern_key) {
        Some(Value::Array(items)) => {
            if items.len() != c.n_layers {
                return Err(crate::error::Error::Model(format!(
                    "`{pattern_key}` has {} entries for {} layers",
                    items.len(),
                    c.n_layers
                )));
            }
            items
                .iter()
                .map(|v| match v {
                    Value::Bool(true) => window,
                    _ => 0,
                })
                .collect()
        }
        Some(v) => pattern_windows(c.n_layers, v.as_u64().unwrap_or(6) as usize, window),
        None => pattern_windows(c.n_layers, if gemma3 { 6 } else { 2 }, window),
    };
    if window == 0 {
        c.windows = vec![0; c.n_layers];
    }
    if gemma3 {
        let local_base = k.optf("rope.freq_base_swa").unwrap_or(10000.0);
        c.rope_local = Some(RopeConfig::plain(RopeMode::Neox, rope.n_rot, local_base));
    }
    c.rope = Some(rope);
    Ok(c)
}

/// Reads a `Gemma2ForCausalLM` or `Gemma3ForCausalLM` `config.json`.
pub fn from_hf(c: &HfConfig) -> Result<Config> {
    let gemma3 = c.architecture()? == "Gemma3ForCausalLM";
    let mut cfg = hf_base(
        c,
        if gemma3 { "gemma3" } else { "gemma2" },
        if gemma3 { 131072 } else { 8192 },
    )?;
    let act = match c.opt_str("hidden_activation")? {
        Some(a) => Some(a),
        None => c.opt_str("hidden_act")?,
    };
    if let Some(act) = act {
        if act != "gelu_pytorch_tanh" && act != "gelu_new" {
            return Err(c.key_error(
                "hidden_activation",
                format!("`{act}` is not supported (only gelu_pytorch_tanh)"),
            ));
        }
    }
    if c.opt_bool("attention_bias")? == Some(true) {
        return Err(c.key_error("attention_bias", "Gemma with biases is not supported"));
    }
    cfg.act = Act::GeGlu;
    cfg.post_norms = true;
    cfg.qk_norm = gemma3;
    cfg.hf_norm_shift = 1.0;
    cfg.tied_output = c.opt_bool("tie_word_embeddings")?.unwrap_or(true);
    cfg.embed_scale = Some((cfg.hidden as f32).sqrt());
    let scalar = c
        .opt_f32("query_pre_attn_scalar")?
        .unwrap_or(if gemma3 { 256.0 } else { 224.0 });
    if scalar <= 0.0 {
        return Err(c.key_error("query_pre_attn_scalar", "must be positive"));
    }
    cfg.attn_scale = 1.0 / scalar.sqrt();
    let soft = |key: &str, default: Option<f32>| -> Result<f32> {
        match c.get(key) {
            Some(v) if v.is_null() => Ok(0.0),
            Some(_) => Ok(c.opt_f32(key)?.unwrap_or(0.0)),
            None => Ok(default.unwrap_or(0.0)),
        }
    };
    cfg.attn_softcap = soft("attn_logit_softcapping", (!gemma3).then_some(50.0))?;
    cfg.final_softcap = soft("final_logit_softcapping", (!gemma3).then_some(30.0))?;
    let window = c.opt_usize("sliding_window")?.unwrap_or(4096);
    let pattern = c
        .opt_usize("sliding_window_pattern")?
        .unwrap_or(if gemma3 { 6 } else { 2 });
    cfg.windows = pattern_windows(cfg.n_layers, pattern, window);
    hf_layer_types(c, &mut cfg)?;
    if gemma3 {
        let rope = cfg.rope.as_ref().map_or(cfg.head_dim, |r| r.n_rot);
        let local_base = match c.opt_f32("rope_local_base_freq")? {
            Some(b) => b,
            None => c
                .get("rope_parameters")
                .and_then(|p| p.get("sliding_attention"))
                .and_then(|s| s.get("rope_theta"))
                .and_then(|v| v.as_f64())
                .map(|v| v as f32)
                .unwrap_or(10000.0),
        };
        cfg.rope_local = Some(RopeConfig::plain(RopeMode::Neox, rope, local_base));
        if hf_rope_theta(c)?.is_none() {
            if let Some(r) = cfg.rope.as_mut() {
                r.freq_base = 1_000_000.0;
            }
        }
    }
    Ok(cfg)
}

/// Hugging Face names of the gemma families (llama.cpp's tensor_mapping.py, read backwards).
pub const HF_NAMES: HfNames = HfNames {
    name: hf_name,
    transposed: |_| false,
};

fn hf_name(gguf: &str) -> Option<Vec<String>> {
    // Gemma3ForConditionalGeneration checkpoints nest the text model one level deeper.
    let both = |s: String| {
        Some(vec![
            s.clone(),
            s.replacen("model.", "model.language_model.", 1),
        ])
    };
    match gguf {
        "token_embd.weight" => return both("model.embed_tokens.weight".into()),
        "output_norm.weight" => return both("model.norm.weight".into()),
        "output.weight" => return Some(vec!["lm_head.weight".into()]),
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
        "post_attention_norm" => "post_attention_layernorm",
        "ffn_norm" => "pre_feedforward_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    both(format!("model.layers.{layer}.{hf}.{suffix}"))
}
