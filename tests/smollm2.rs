//! End-to-end parity of SmolLM2-135M-Instruct (Q4_1 GGUF) on the GPU (lavapipe in CI) against
//! transformers' fp32 run of the same file (tests/fixtures/smollm2/reference.json, made by
//! scripts/make-fixtures.py) and llama.cpp (llamacpp.json, scripts/make-llamacpp-fixtures.sh).
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/setup.sh fetches it). Set
//! FLINT_SKIP_MODEL_TESTS=1 to skip these where the model cannot be had.

use flint::engine::{Engine, GenerateOptions, LoadOptions};
use flint::gpu::{KvType, TileType};
use flint::sampling::SamplingParams;
use serde_json::Value;
use std::sync::{Mutex, OnceLock};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const FIX: &str = "tests/fixtures/smollm2";

fn engine() -> Option<&'static Mutex<Engine>> {
    static E: OnceLock<Option<Mutex<Engine>>> = OnceLock::new();
    E.get_or_init(|| {
        if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
            return None;
        }
        assert!(
            std::path::Path::new(MODEL).exists(),
            "{MODEL} missing: run scripts/setup.sh"
        );
        let opts = LoadOptions {
            ctx: Some(512),
            ..Default::default()
        };
        Some(Mutex::new(
            Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2"),
        ))
    })
    .as_ref()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/reference.json")).unwrap())
        .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn prompt_token_ids_match_transformers() {
    let Some(e) = engine() else { return };
    let e = e.lock().unwrap();
    for p in reference()["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let got = e.tokenizer.encode(text, true).unwrap();
        assert_eq!(got, ids(&p["prompt_ids"]), "token ids of {text:?}");
    }
}

#[test]
fn last_position_logits_match_transformers() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    for p in reference()["prompts"].as_array().unwrap() {
        let prompt = ids(&p["prompt_ids"]);
        let bytes = std::fs::read(format!("{FIX}/{}", p["logits_file"].as_str().unwrap())).unwrap();
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        e.reset();
        let got = e.feed(&prompt).unwrap();
        assert_eq!(got.len(), want.len());
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{:?}: max-abs logit difference {max_abs:.5}",
            p["text"].as_str().unwrap()
        );
        // the bar is 2e-2; flint measures ~1e-4, so it is held to 1e-3 to catch regressions
        assert!(
            max_abs < 1e-3,
            "logits differ by {max_abs} (> 1e-3) for {:?}",
            p["text"]
        );
        assert_eq!(argmax(&got), argmax(&want));
    }
}

/// The first 32 greedy ids equal transformers'; where they part, transformers' own top two logits at
/// that step must be within 0.05 (a near tie that fp32 rounding may break either way).
#[test]
fn greedy_32_tokens_match_transformers() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    let r = reference();
    let mut exact = 0;
    // the three plain prompts (the chat one is covered by the logits test; decode is slow on lavapipe)
    for p in r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "plain")
    {
        let want = ids(&p["greedy_ids"]);
        e.reset();
        let mut logits = e.feed(&ids(&p["prompt_ids"])).unwrap();
        let mut got = Vec::new();
        for step in 0..want.len() {
            let t = argmax(&logits);
            got.push(t);
            if t != want[step] {
                let gap = p["step_top2"][step]["gap"].as_f64().unwrap();
                eprintln!(
                    "{:?}: parts at step {step} ({t} vs {}), transformers' top-2 gap {gap}",
                    p["text"], want[step]
                );
                assert!(
                    gap < 0.05,
                    "greedy parts from transformers at step {step} where its top-2 gap is {gap}"
                );
                break;
            }
            logits = e.feed(&[t]).unwrap();
        }
        if got == want {
            exact += 1;
        }
    }
    assert!(
        exact >= 3,
        "only {exact} prompts matched all 32 greedy tokens"
    );
}

#[test]
fn capital_of_france_is_paris() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    let prompt = e
        .tokenizer
        .encode("The capital of France is", true)
        .unwrap();
    let opts = GenerateOptions {
        max_tokens: 2,
        sampling: SamplingParams::greedy(),
        stop: vec![],
        ..Default::default()
    };
    let g = e.generate(&prompt, &opts, &mut |_| true).unwrap();
    assert_eq!(g.text, " Paris.");
}

#[test]
fn same_seed_same_text() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    let prompt = e.tokenizer.encode("Once upon a time", true).unwrap();
    let sampling = SamplingParams {
        temperature: 1.0,
        seed: Some(7),
        ..SamplingParams::default()
    };
    let opts = GenerateOptions {
        max_tokens: 12,
        sampling,
        stop: vec![],
        ..Default::default()
    };
    let a = e.generate(&prompt, &opts, &mut |_| true).unwrap();
    let b = e.generate(&prompt, &opts, &mut |_| true).unwrap();
    assert_eq!(a.tokens, b.tokens);
    let other = GenerateOptions {
        sampling: SamplingParams {
            seed: Some(8),
            ..opts.sampling.clone()
        },
        ..opts
    };
    let c = e.generate(&prompt, &other, &mut |_| true).unwrap();
    assert_ne!(
        a.tokens, c.tokens,
        "a different seed should (almost surely) give different text"
    );
}

#[test]
fn sampling_on_the_gpu_picks_what_the_cpu_picks() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    let prompt = e.tokenizer.encode("Once upon a time", true).unwrap();
    let settings = [
        SamplingParams::greedy(),
        SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 1.5,
            top_k: 100,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(3),
            ..SamplingParams::default()
        },
    ];
    for sampling in settings {
        let opts = GenerateOptions {
            max_tokens: 24,
            sampling,
            stop: vec![],
            ..Default::default()
        };
        let mut run = |on_gpu: bool| {
            e.gpu.caps.gpu_sampling = on_gpu;
            e.reset();
            e.generate(&prompt, &opts, &mut |_| true).unwrap().tokens
        };
        let (gpu, cpu) = (run(true), run(false));
        e.gpu.caps.gpu_sampling = true;
        assert_eq!(gpu.len(), 24, "{:?}", opts.sampling);
        assert_eq!(gpu, cpu, "{:?}", opts.sampling);
    }
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    let long = vec![504u32; e.ctx + 1];
    let err = e.feed(&long).unwrap_err().to_string();
    assert!(err.contains("does not fit the context"), "{err}");
    let bad = e.feed(&[1_000_000]).unwrap_err().to_string();
    assert!(bad.contains("outside the vocabulary"), "{bad}");
}

/// llama.cpp's perplexity definition on the same text and token ids, within 1% of llama-perplexity
/// (`-c 128 --chunks 4`, CPU backend; llamacpp.json). flint's token ids for the text equal
/// llama-tokenize's (checked exactly here too, since PPL depends on them).
#[test]
fn perplexity_matches_llama_cpp() {
    let Some(e) = engine() else { return };
    let mut e = e.lock().unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/llamacpp.json")).unwrap())
            .unwrap();
    let text = std::fs::read_to_string(format!("{FIX}/apache-2.0.txt")).unwrap();
    let tokens = e.tokenizer.encode(&text, true).unwrap();
    assert_eq!(
        tokens,
        ids(&r["tokens"]),
        "token ids of the text differ from llama-tokenize's"
    );
    let want = &r["perplexity"]["c128_chunks4"];
    let p = e.perplexity(&tokens, 128, Some(4)).unwrap();
    let ppl_ref = want["ppl"].as_f64().unwrap();
    eprintln!(
        "flint PPL {:.4} vs llama.cpp {ppl_ref} (chunks {:?})",
        p.ppl, p.per_chunk
    );
    assert_eq!(p.chunks, 4);
    assert!(
        (p.ppl / ppl_ref - 1.0).abs() < 0.01,
        "PPL {} vs llama.cpp {ppl_ref}",
        p.ppl
    );
}

/// Greedy decoding from the first reference prompt with an f32 and a `kind` KV cache side by side
/// (both fed the f32 run's tokens): per step, the largest logit difference. The two runs' greedy
/// ids must agree at every step.
fn kv_cache_logit_diffs(kind: KvType, steps: usize) -> Vec<f32> {
    let e32 = engine().unwrap();
    let opts = LoadOptions {
        ctx: Some(512),
        gpu: flint::gpu::GpuOptions {
            kv_cache: kind,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut e16 = Engine::load(MODEL, &opts, &mut |_, _| {}).expect("load SmolLM2");
    let mut e32 = e32.lock().unwrap();
    let prompt = ids(&reference()["prompts"][0]["prompt_ids"]);
    e32.reset();
    e16.reset();
    let (mut a, mut b) = (e32.feed(&prompt).unwrap(), e16.feed(&prompt).unwrap());
    let mut diffs = Vec::new();
    for step in 0..steps {
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        eprintln!("step {step}: max |{kind:?} KV - f32 KV| logit difference {diff:e}");
        diffs.push(diff);
        let next = argmax(&a);
        assert_eq!(argmax(&b), next, "step {step}: greedy ids part");
        a = e32.feed(&[next]).unwrap();
        b = e16.feed(&[next]).unwrap();
    }
    diffs
}

/// The q16 KV cache (`--kv-cache q16`, half the memory of f32) keeps logits within the issue's
/// 1e-2 of the exact f32 path, after a prompt and over 32 decode steps on top of the cached
/// positions, and greedy decoding agrees.
#[test]
fn q16_kv_cache_stays_within_1e_2_of_f32() {
    if engine().is_none() {
        return;
    }
    let diffs = kv_cache_logit_diffs(KvType::Q16, 32);
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    let max = diffs.iter().cloned().fold(0.0f32, f32::max);
    eprintln!(
        "q16 KV: mean {mean:e}, max {max:e} over {} steps",
        diffs.len()
    );
    // measured on lavapipe: mean 1.18e-3, max 2.12e-3 over these 32 steps (the f16 cache:
    // 6.7e-3 mean, 1.03e-2 max over the first 8). The scale per (position, KV head) stores the
    // large differences 16-32x finer than f16's mantissa.
    assert!(max < 1e-2, "q16 KV cache: logits differ by up to {max}");
}

/// The f16 KV cache (`--kv-cache f16`) keeps logits within 1.5e-2 of the exact f32 path, after a
/// prompt and after decoding on top of the cached positions, and greedy decoding agrees.
#[test]
fn f16_kv_cache_stays_within_1_5e_2_of_f32() {
    if engine().is_none() {
        return;
    }
    for (step, diff) in kv_cache_logit_diffs(KvType::F16, 8).into_iter().enumerate() {
        // measured 4.0e-3 .. 1.03e-2 (logits span about +-20): the f16 rounding of keys and
        // values, about equally (rounding only K: 8.9e-3, only V: 8.0e-3 from transformers'
        // logits, where the f32 cache is within 1e-4). Without the cache's base (f16 of the
        // values themselves, not of their difference from the first rows' mean) it was 5.4e-3 ..
        // 1.41e-2 over the same steps.
        assert!(diff < 1.5e-2, "step {step}: logits differ by {diff}");
    }
}

/// `--matmul q16` and `f16` (GPU kernel layout; f16 where the adapter has shader-f16): the
/// prompt's prefill stages its matmul operands in 16 bits; the logits stay close to the f32
/// tiles' (q16 within the 1e-2) and to transformers' reference, and greedy decoding on top
/// of that cache agrees.
#[test]
fn sixteen_bit_matmul_tiles_stay_close_to_f32() {
    if engine().is_none() {
        return;
    }
    let load = |matmul| {
        let opts = LoadOptions {
            ctx: Some(512),
            gpu: flint::gpu::GpuOptions {
                rows_kernels: Some(false),
                matmul,
                ..Default::default()
            },
            ..Default::default()
        };
        Engine::load(MODEL, &opts, &mut |_, _| {})
    };
    let r = reference();
    let p = &r["prompts"][0];
    let prompt = ids(&p["prompt_ids"]);
    assert!(
        prompt.len() > 4,
        "a prompt long enough for the tiled matmul"
    );
    let bytes = std::fs::read(format!("{FIX}/{}", p["logits_file"].as_str().unwrap())).unwrap();
    let want: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    // measured after the 5-token prompt, then over three decode steps (lavapipe): q16 4.9e-3,
    // then 3.9e-3 .. 2.4e-3; f16 1.87e-2, then 1.5e-2 .. 7.5e-3 (f16's 11-bit mantissa on every
    // operand; rounding only the activations measured 2.3e-2)
    for (tiles, bound) in [(TileType::Q16, 1e-2), (TileType::F16, 3e-2)] {
        let Ok(mut e16) = load(tiles) else {
            assert_eq!(tiles, TileType::F16, "q16 tiles need no optional feature");
            eprintln!("adapter has no shader-f16: f16 tiles cannot run here");
            continue;
        };
        let mut e32 = load(TileType::F32).expect("load SmolLM2");
        let name = tiles.name();
        let (mut a, mut b) = (e32.feed(&prompt).unwrap(), e16.feed(&prompt).unwrap());
        eprintln!(
            "prefill: {name} tiles vs f32 tiles {:e}, vs transformers {:e} (f32 tiles {:e})",
            max_diff(&a, &b),
            max_diff(&b, &want),
            max_diff(&a, &want)
        );
        for step in 0..4 {
            let diff = max_diff(&a, &b);
            eprintln!("step {step}: max |{name} tiles - f32 tiles| logit difference {diff:e}");
            assert!(diff < bound, "{name} step {step}: logits differ by {diff}");
            let next = argmax(&a);
            assert_eq!(argmax(&b), next, "{name} step {step}: greedy ids part");
            a = e32.feed(&[next]).unwrap();
            b = e16.feed(&[next]).unwrap();
        }
    }
}

/// Steady-state decode makes no bind group: the position-dependent kernels (RoPE, the fused
/// QKV+RoPE epilogue, the KV-cache store, attention) read each sequence's first position from a
/// scratch buffer written once per step, and the embedding its ids, so every dispatch's
/// (kernel, parameters, buffers) repeat from one step to the next and their bind groups come
/// from the cache. Both kernel layouts, each KV-cache type, and the GPU top-k path.
#[test]
fn decode_steps_reuse_every_bind_group() {
    if engine().is_none() {
        return;
    }
    use flint::format::ModelFile;
    use flint::gpu::{Gpu, GpuOptions};
    use flint::model::{Logits, Model, Scratch};
    let file = ModelFile::open(MODEL).unwrap();
    let prompt = ids(&reference()["prompts"][0]["prompt_ids"]);
    for (rows_kernels, kv_cache) in [
        (true, KvType::F32),
        (true, KvType::Q16),
        (false, KvType::F16),
        (false, KvType::F32),
    ] {
        let gpu = Gpu::new(&GpuOptions {
            rows_kernels: Some(rows_kernels),
            // the fused QKV(+RoPE) and gate/up kernels too (off by default on Mesa < 23)
            fused_rows: Some(true),
            kv_cache,
            ..Default::default()
        })
        .unwrap();
        let model = Model::load_file(&gpu, &file, &mut |_, _| {}).unwrap();
        let mut cache = model.new_cache(&gpu, 512).unwrap();
        let mut scratch = Scratch::default();
        let logits = model
            .forward(&gpu, &mut cache, &mut scratch, &prompt, Logits::Last)
            .unwrap();
        let mut next = argmax(&logits);
        let layout = if rows_kernels { "cpu" } else { "gpu" };
        let mut made = Vec::new();
        for step in 0..5 {
            let before = gpu.counters();
            let logits = model
                .forward(&gpu, &mut cache, &mut scratch, &[next], Logits::Last)
                .unwrap();
            let c = gpu.counters().since(before);
            eprintln!(
                "{layout} layout, {kv_cache:?} KV, decode step {step}: {} dispatches, {} bind groups made",
                c.dispatches, c.bind_groups
            );
            made.push(c.bind_groups);
            next = argmax(&logits);
        }
        // the GPU top-k path (greedy on the GPU)
        for step in 0..3 {
            let before = gpu.counters();
            let best =
                pollster::block_on(model.top_k_async(&gpu, &mut cache, &mut scratch, &[next], 1))
                    .unwrap();
            let c = gpu.counters().since(before);
            eprintln!(
                "{layout} layout, {kv_cache:?} KV, top-k decode step {step}: {} dispatches, {} bind groups made",
                c.dispatches, c.bind_groups
            );
            if step > 0 {
                made.push(c.bind_groups);
            }
            next = best[0].0;
        }
        // the first decode step makes the decode shapes' bind groups; none after it
        assert!(
            made[1..].iter().all(|&n| n == 0),
            "{layout} layout, {kv_cache:?} KV: bind groups made per decode step {made:?}"
        );
    }
}
