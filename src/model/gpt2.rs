//! GPT-2: learned absolute positions instead of RoPE, LayerNorm with bias, a fused `c_attn`
//! (Q/K/V split by rows at load) and biases on every projection, a plain MLP with the tanh GELU
//! (`gelu_new`), and the output head tied to the embeddings. Hugging Face checkpoints store the
//! projections as Conv1D weights `[in, out]`, transposed on load; llama.cpp's converter already
//! writes them `[out, in]`.
//!
//! References: transformers' modeling_gpt2.py / configuration_gpt2.py; llama.cpp's gpt2 graph and
//! conversion/gpt2.py.

use super::llama::Keys;
use super::transformer::{Act, Config, Norm};
use super::HfNames;
use crate::error::Result;
use crate::format::gguf::Gguf;
use crate::format::hf::HfConfig;

/// Common settings of both formats.
fn gpt2_options(c: &mut Config) {
    c.norm = Norm::Layer;
    c.act = Act::Gelu;
    c.rope = None;
    c.fused_qkv = true;
    c.qkv_bias = true;
    c.out_bias = true;
}

/// Reads a `gpt2` GGUF.
pub fn from_gguf(g: &Gguf) -> Result<Config> {
    let k = Keys { g, arch: "gpt2" };
    let mut c = k.base()?;
    gpt2_options(&mut c);
    c.eps = k.optf("attention.layer_norm_epsilon").unwrap_or(1e-5);
    Ok(c)
}

/// Reads a `GPT2LMHeadModel` `config.json`.
pub fn from_hf(c: &HfConfig) -> Result<Config> {
    let hidden = c.req_usize("n_embd")?;
    let n_heads = c.req_usize("n_head")?;
    if n_heads == 0 || hidden % n_heads != 0 {
        return Err(c.key_error(
            "n_head",
            format!("{n_heads} heads do not divide n_embd {hidden}"),
        ));
    }
    let ffn = match c.get("n_inner") {
        Some(v) if !v.is_null() => c.req_usize("n_inner")?,
        _ => 4 * hidden,
    };
    let mut cfg = Config::base(
        "gpt2",
        c.req_usize("n_layer")?,
        hidden,
        ffn,
        n_heads,
        n_heads,
        hidden / n_heads,
        c.req_usize("vocab_size")?,
        c.opt_usize("n_positions")?.unwrap_or(1024),
    );
    gpt2_options(&mut cfg);
    cfg.eps = c.opt_f32("layer_norm_epsilon")?.unwrap_or(1e-5);
    cfg.tied_output = c.opt_bool("tie_word_embeddings")?.unwrap_or(true);
    if let Some(act) = c.opt_str("activation_function")? {
        if act != "gelu_new" && act != "gelu_pytorch_tanh" {
            return Err(c.key_error(
                "activation_function",
                format!("`{act}` is not supported (only gelu_new)"),
            ));
        }
    }
    for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if c.opt_bool(key)? == Some(true) {
            return Err(c.key_error(key, "is not supported"));
        }
    }
    if c.opt_bool("scale_attn_weights")? == Some(false) {
        cfg.attn_scale = 1.0;
    }
    Ok(cfg)
}

/// Hugging Face names of GPT-2; checkpoints saved from `GPT2LMHeadModel` prefix them with
/// `transformer.`, the original ones do not, so both are tried.
pub const HF_NAMES: HfNames = HfNames {
    name: hf_name,
    transposed: |gguf| {
        gguf.ends_with(".weight")
            && ["attn_qkv", "attn_output", "ffn_up", "ffn_down"]
                .iter()
                .any(|t| gguf.contains(&format!(".{t}.")))
    },
};

fn hf_name(gguf: &str) -> Option<Vec<String>> {
    let both = |s: String| Some(vec![format!("transformer.{s}"), s]);
    match gguf {
        "token_embd.weight" => return both("wte.weight".into()),
        "position_embd.weight" => return both("wpe.weight".into()),
        "output_norm.weight" => return both("ln_f.weight".into()),
        "output_norm.bias" => return both("ln_f.bias".into()),
        "output.weight" => return Some(vec!["lm_head.weight".into()]),
        _ => {}
    }
    let (layer, base, suffix) = super::gguf_block_name(gguf)?;
    let hf = match base {
        "attn_norm" => "ln_1",
        "attn_qkv" => "attn.c_attn",
        "attn_output" => "attn.c_proj",
        "ffn_norm" => "ln_2",
        "ffn_up" => "mlp.c_fc",
        "ffn_down" => "mlp.c_proj",
        _ => return None,
    };
    both(format!("h.{layer}.{hf}.{suffix}"))
}
