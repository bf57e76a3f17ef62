//! The llama model on a tiny synthetic GGUF: the GPU forward pass against a CPU forward pass built
//! from the ops' CPU references, and every malformed-model error (unknown architecture, missing key,
//! missing tensor, shape mismatch).

use flint::format::gguf::{Gguf, Value};
use flint::format::gguf_write::GgufWriter;
use flint::format::DType;
use flint::gpu::{Gpu, GpuOptions};
use flint::model::{Logits, Model, Scratch};
use flint::ops::attention::{attention_cpu, Attention};
use flint::ops::elementwise::swiglu_cpu;
use flint::ops::matmul::matmul_cpu;
use flint::ops::norm::rmsnorm_cpu;
use flint::ops::quant;
use flint::ops::rope::{rope_cpu, RopeConfig, RopeMode};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::OnceLock;

const H: usize = 64;
const HEADS: usize = 4;
const KV: usize = 2;
const HD: usize = H / HEADS;
const FFN: usize = 96;
const LAYERS: usize = 2;
const VOCAB: usize = 100;
const EPS: f32 = 1e-5;

fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        Gpu::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe: scripts/setup.sh)")
    })
}

/// Random tensors (name -> (rows, cols, f32 values)) of a tiny llama.
fn tensors() -> Vec<(String, usize, usize, Vec<f32>)> {
    let mut r = rand::rngs::StdRng::seed_from_u64(42);
    let mut t = |name: &str, rows: usize, cols: usize, scale: f32, offset: f32| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| offset + scale * r.random_range(-1.0f32..1.0))
            .collect();
        (name.to_string(), rows, cols, v)
    };
    let mut out = vec![t("token_embd.weight", VOCAB, H, 1.0, 0.0)];
    for l in 0..LAYERS {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        out.push(t(&n("attn_norm"), 1, H, 0.2, 1.0));
        out.push(t(&n("attn_q"), H, H, 0.3, 0.0));
        out.push(t(&n("attn_k"), KV * HD, H, 0.3, 0.0));
        out.push(t(&n("attn_v"), KV * HD, H, 0.3, 0.0));
        out.push(t(&n("attn_output"), H, H, 0.2, 0.0));
        out.push(t(&n("ffn_norm"), 1, H, 0.2, 1.0));
        out.push(t(&n("ffn_gate"), FFN, H, 0.2, 0.0));
        out.push(t(&n("ffn_up"), FFN, H, 0.2, 0.0));
        out.push(t(&n("ffn_down"), H, FFN, 0.2, 0.0));
    }
    out.push(t("output_norm.weight", 1, H, 0.2, 1.0));
    out.push(t("output.weight", VOCAB, H, 0.3, 0.0));
    out
}

fn metadata(arch: &str) -> Vec<(String, Value)> {
    let k = |s: &str| format!("{arch}.{s}");
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("block_count"), Value::U32(LAYERS as u32)),
        (k("embedding_length"), Value::U32(H as u32)),
        (k("feed_forward_length"), Value::U32(FFN as u32)),
        (k("attention.head_count"), Value::U32(HEADS as u32)),
        (k("attention.head_count_kv"), Value::U32(KV as u32)),
        (k("context_length"), Value::U32(256)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(EPS)),
        (k("rope.freq_base"), Value::F32(10000.0)),
    ]
}

/// A GGUF with `tensors`; matrices stored as `wtype`, norms as F32.
fn build(
    meta: &[(String, Value)],
    tensors: &[(String, usize, usize, Vec<f32>)],
    wtype: DType,
) -> Gguf {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.push_kv(k.clone(), v.clone());
    }
    for (name, rows, cols, v) in tensors {
        let dims: Vec<u64> = if *rows == 1 {
            vec![*cols as u64]
        } else {
            vec![*cols as u64, *rows as u64]
        };
        let ty = if *rows == 1 { DType::F32 } else { wtype };
        w.push_tensor(
            name.clone(),
            &dims,
            ty.ggml_id(),
            quant::quantize(ty, v).unwrap(),
        );
    }
    Gguf::from_bytes(w.to_bytes()).expect("parse synthetic GGUF")
}

/// The CPU forward pass of the whole model over `tokens` (all at once), from the ops' references.
fn cpu_forward(t: &HashMap<String, Vec<f32>>, tokens: &[u32]) -> Vec<f32> {
    let m = tokens.len();
    let mut x: Vec<f32> = tokens
        .iter()
        .flat_map(|&id| t["token_embd.weight"][id as usize * H..][..H].to_vec())
        .collect();
    let rope = RopeConfig::plain(RopeMode::Normal, HD, 10000.0);
    for l in 0..LAYERS {
        let w = |s: &str| &t[&format!("blk.{l}.{s}.weight")];
        let xn = rmsnorm_cpu(&x, w("attn_norm"), H, EPS);
        let mut q = matmul_cpu(w("attn_q"), H, H, &xn, m);
        let mut k = matmul_cpu(w("attn_k"), KV * HD, H, &xn, m);
        let v = matmul_cpu(w("attn_v"), KV * HD, H, &xn, m);
        rope_cpu(&mut q, &rope, HEADS, HD, 0, None);
        rope_cpu(&mut k, &rope, KV, HD, 0, None);
        let a = Attention {
            n_heads: HEADS,
            n_kv_heads: KV,
            head_dim: HD,
            tokens: m,
            pos0: 0,
            scale: 1.0 / (HD as f32).sqrt(),
            window: 0,
            softcap: 0.0,
            ring: 0,
            row0: 0,
            kv: flint::gpu::KvType::F32,
            bidirectional: false,
        };
        let att = attention_cpu(&q, &k, &v, &a);
        let o = matmul_cpu(w("attn_output"), H, H, &att, m);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        let xn = rmsnorm_cpu(&x, w("ffn_norm"), H, EPS);
        let g = matmul_cpu(w("ffn_gate"), FFN, H, &xn, m);
        let u = matmul_cpu(w("ffn_up"), FFN, H, &xn, m);
        let d = matmul_cpu(w("ffn_down"), H, FFN, &swiglu_cpu(&g, &u), m);
        x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
    }
    let xn = rmsnorm_cpu(&x, &t["output_norm.weight"], H, EPS);
    matmul_cpu(&t["output.weight"], VOCAB, H, &xn, m)
}

#[test]
fn gpu_forward_matches_cpu_forward_prefill_and_decode() {
    for wtype in [DType::F32, DType::Q8_0, DType::Q4_1] {
        let ts = tensors();
        let g = build(&metadata("llama"), &ts, wtype);
        // the CPU reference uses the same (quantized, then dequantized) weights
        let deq: HashMap<String, Vec<f32>> = ts
            .iter()
            .map(|(n, rows, _, v)| {
                let ty = if *rows == 1 { DType::F32 } else { wtype };
                let raw = quant::quantize(ty, v).unwrap();
                let mut out = vec![0.0; v.len()];
                quant::dequantize(ty, &raw, &mut out).unwrap();
                (n.clone(), out)
            })
            .collect();
        let model = Model::load(gpu(), &g, &mut |_, _| {}).unwrap();
        let mut cache = model.new_cache(gpu(), 64).unwrap();
        let mut scratch = Scratch::default();
        let tokens: Vec<u32> = vec![3, 17, 99, 0, 42, 42, 7, 58, 23];
        // prefill 7 tokens (tiled matmul path), then decode 2 one at a time (matvec path)
        let all = model
            .forward(gpu(), &mut cache, &mut scratch, &tokens[..7], Logits::All)
            .unwrap();
        let want = cpu_forward(&deq, &tokens[..7]);
        let err = all
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 2e-3, "{wtype}: prefill logits differ by {err}");
        for i in 7..tokens.len() {
            let last = model
                .forward(
                    gpu(),
                    &mut cache,
                    &mut scratch,
                    &tokens[i..i + 1],
                    Logits::Last,
                )
                .unwrap();
            let want = cpu_forward(&deq, &tokens[..=i]);
            let err = last
                .iter()
                .zip(&want[i * VOCAB..])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                err < 2e-3,
                "{wtype}: decode logits at position {i} differ by {err}"
            );
        }
        assert_eq!(cache.len, tokens.len());
    }
}

fn load_err(meta: &[(String, Value)], ts: &[(String, usize, usize, Vec<f32>)]) -> String {
    match Model::load(gpu(), &build(meta, ts, DType::F32), &mut |_, _| {}) {
        Ok(_) => panic!("a malformed model loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_architecture_is_named() {
    let err = load_err(&metadata("rwkv42"), &tensors());
    assert!(err.contains("unknown architecture `rwkv42`"), "{err}");
}

#[test]
fn missing_key_is_named() {
    let meta: Vec<_> = metadata("llama")
        .into_iter()
        .filter(|(k, _)| k != "llama.block_count")
        .collect();
    let err = load_err(&meta, &tensors());
    assert!(
        err.contains("missing required metadata key `llama.block_count`"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let ts: Vec<_> = tensors()
        .into_iter()
        .filter(|t| t.0 != "blk.1.ffn_up.weight")
        .collect();
    let err = load_err(&metadata("llama"), &ts);
    assert!(
        err.contains("missing tensor `blk.1.ffn_up.weight`"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_is_named() {
    let mut meta = metadata("llama");
    for (k, v) in meta.iter_mut() {
        if k == "llama.feed_forward_length" {
            *v = Value::U32(128);
        }
    }
    let err = load_err(&meta, &tensors());
    assert!(
        err.contains("blk.0.ffn_gate.weight") && err.contains("expected"),
        "{err}"
    );
}

#[test]
fn bad_head_counts_are_rejected() {
    let mut meta = metadata("llama");
    for (k, v) in meta.iter_mut() {
        if k == "llama.attention.head_count_kv" {
            *v = Value::U32(3);
        }
    }
    let err = load_err(&meta, &tensors());
    assert!(err.contains("not a multiple of 3 KV heads"), "{err}");
}
