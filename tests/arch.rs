//! Every supported architecture against transformers, in both formats: the tiny random models of
//! scripts/make-arch-fixtures.py (tests/fixtures/arch/<arch>/: a Hugging Face folder, and GGUF files
//! written by llama.cpp's own converter in F32 and Q8_0). For each prompt, flint's last-position
//! logits must be within 1e-3 max-abs of transformers' and the first 16 greedy tokens equal.
//!
//! The GGUF references are transformers' outputs for what the GGUF describes: where the converter
//! drops an option llama.cpp hard-codes (Gemma's query_pre_attn_scalar), the script records the
//! reference with that override (`config_overrides`); the Q8_0 reference runs transformers on the
//! GGUF's dequantized weights.

use flint::engine::{Engine, LoadOptions};
use flint::gpu::GpuOptions;
use std::path::Path;

const TOL: f32 = 1e-3;
const DIR: &str = "tests/fixtures/arch";

#[derive(serde::Deserialize)]
struct Reference {
    logits: Vec<Vec<f32>>,
    greedy: Vec<Vec<u32>>,
}

#[derive(serde::Deserialize)]
struct Expected {
    prompts: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<Vec<u32>>,
    gguf: std::collections::BTreeMap<String, Reference>,
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

/// Both kernel layouts: the one real GPUs run (`gpu`) and the one CPU-type adapters run (`cpu`),
/// the latter with decode's fused projections on whatever the Mesa version (`qkv_rows.wgsl` or,
/// where RoPE can follow the projection directly, `qkv_rope_rows.wgsl`; `glu_rows.wgsl`).
fn layouts() -> [(&'static str, LoadOptions); 2] {
    let with = |rows| LoadOptions {
        gpu: GpuOptions {
            rows_kernels: Some(rows),
            fused_rows: Some(rows),
            ..Default::default()
        },
        ..Default::default()
    };
    [("gpu layout", with(false)), ("cpu layout", with(true))]
}

/// Loads `path` (a folder or a GGUF) on both kernel layouts and checks its logits and greedy ids
/// on every prompt.
fn parity(arch: &str, path: &Path, prompts: &[Vec<u32>], logits: &[Vec<f32>], greedy: &[Vec<u32>]) {
    for (layout, opts) in layouts() {
        parity_on(arch, path, &opts, layout, prompts, logits, greedy);
    }
}

fn parity_on(
    arch: &str,
    path: &Path,
    opts: &LoadOptions,
    layout: &str,
    prompts: &[Vec<u32>],
    logits: &[Vec<f32>],
    greedy: &[Vec<u32>],
) {
    let what = format!("{} ({layout})", path.display());
    let mut e =
        Engine::load(path, opts, &mut |_, _| {}).unwrap_or_else(|err| panic!("{what}: {err}"));
    assert_eq!(e.model.info().architecture, arch, "{what}");
    for ((prompt, want), greedy) in prompts.iter().zip(logits).zip(greedy) {
        e.reset();
        let mut got_logits = e.feed(prompt).unwrap();
        assert_eq!(got_logits.len(), want.len(), "{what}: vocabulary size");
        let diff = got_logits
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{what} prompt of {} tokens: max |flint - transformers| = {diff:e}",
            prompt.len()
        );
        assert!(
            diff < TOL,
            "{what} prompt {prompt:?}: logits differ by {diff}"
        );
        let mut got = Vec::new();
        for _ in 0..greedy.len() {
            let id = argmax(&got_logits);
            got.push(id);
            got_logits = e.feed(&[id]).unwrap();
        }
        assert_eq!(&got, greedy, "{what} prompt {prompt:?}: greedy ids");
    }
}

/// The Hugging Face folder and every GGUF of one architecture.
fn check(arch: &str) {
    let dir = Path::new(DIR).join(arch);
    let exp: Expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    parity(arch, &dir, &exp.prompts, &exp.logits, &exp.greedy);
    assert!(
        exp.gguf.contains_key("f32") && exp.gguf.len() >= 2,
        "{arch}: an F32 and a quantized GGUF"
    );
    // llama.cpp's converter writes Mistral as `llama` and drops its sliding window (the GGUF
    // references are computed without it, `config_overrides`).
    let gguf_arch = if arch == "mistral" { "llama" } else { arch };
    for (kind, r) in &exp.gguf {
        let file = dir.join(format!("{arch}-{kind}.gguf"));
        parity(gguf_arch, &file, &exp.prompts, &r.logits, &r.greedy);
    }
}

#[test]
fn qwen2() {
    check("qwen2");
}

#[test]
fn qwen3() {
    check("qwen3");
}

#[test]
fn gemma2() {
    check("gemma2");
}

#[test]
fn gemma3() {
    check("gemma3");
}

#[test]
fn phi3() {
    check("phi3");
}

#[test]
fn mistral() {
    check("mistral");
}

#[test]
fn gpt2() {
    check("gpt2");
}

/// Rewrites a fixture GGUF with `edit` applied to its metadata and tensor list.
fn rewrite_gguf(
    src: &Path,
    dst: &Path,
    keep_key: impl Fn(&str) -> bool,
    edit_value: impl Fn(&str, &flint::format::gguf::Value) -> Option<flint::format::gguf::Value>,
    keep_tensor: impl Fn(&str) -> bool,
) {
    use flint::format::gguf::Gguf;
    use flint::format::gguf_write::GgufWriter;
    let g = Gguf::open(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &g.metadata {
        if keep_key(k) {
            w.push_kv(k.clone(), edit_value(k, v).unwrap_or_else(|| v.clone()));
        }
    }
    for t in &g.tensors {
        if keep_tensor(&t.name) {
            w.push_tensor(
                t.name.clone(),
                &t.dims,
                t.ggml_type,
                g.tensor_data(t).to_vec(),
            );
        }
    }
    w.write(dst).unwrap();
}

fn load_err(path: &Path) -> String {
    match Engine::load(path, &LoadOptions::default(), &mut |_, _| {}) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// GGUF files of the new families: unknown architecture, missing key, missing family-specific
/// tensor, shape mismatch, truncated file — each a clear error naming the problem.
#[test]
fn bad_gguf_files_are_named() {
    use flint::format::gguf::Value;
    let src = Path::new(DIR).join("qwen3/qwen3-f32.gguf");
    let tmp = std::env::temp_dir().join(format!("flint-arch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let dst = tmp.join("bad.gguf");
    let all = |_: &str| true;
    let same = |_: &str, _: &Value| None;

    rewrite_gguf(
        &src,
        &dst,
        all,
        |k, _| (k == "general.architecture").then(|| Value::String("qwen9".into())),
        all,
    );
    let e = load_err(&dst);
    assert!(
        e.contains("unknown architecture `qwen9`") && e.contains("gemma3") && e.contains("gpt2"),
        "{e}"
    );

    rewrite_gguf(&src, &dst, |k| k != "qwen3.block_count", same, all);
    let e = load_err(&dst);
    assert!(e.contains("`qwen3.block_count`"), "{e}");

    rewrite_gguf(&src, &dst, all, same, |t| t != "blk.1.attn_k_norm.weight");
    let e = load_err(&dst);
    assert!(
        e.contains("missing tensor `blk.1.attn_k_norm.weight`"),
        "{e}"
    );

    rewrite_gguf(
        &src,
        &dst,
        all,
        |k, _| (k == "qwen3.feed_forward_length").then_some(Value::U32(100)),
        all,
    );
    let e = load_err(&dst);
    assert!(e.contains("ffn_") && e.contains("shape"), "{e}");

    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&dst, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_err(&dst);
    assert!(e.contains("outside") || e.contains("truncated"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A copy of a fixture folder in a scratch directory, with `config.json` edited.
fn edited_folder(
    arch: &str,
    tag: &str,
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("flint-arch-{arch}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(Path::new(DIR).join(arch)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if !name.to_string_lossy().ends_with(".gguf") {
            std::fs::copy(e.path(), d.join(name)).unwrap();
        }
    }
    let p = d.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    d
}

/// Hugging Face folders of the new families: the same errors, named.
#[test]
fn bad_hf_folders_are_named() {
    use serde_json::json;
    let d = edited_folder("gemma3", "arch", |c| {
        c.insert("architectures".into(), json!(["Gemma9ForCausalLM"]));
    });
    let e = load_err(&d);
    assert!(
        e.contains("unknown architecture `Gemma9ForCausalLM`") && e.contains("Gemma3ForCausalLM"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);

    let d = edited_folder("gemma2", "key", |c| {
        c.remove("num_hidden_layers");
    });
    let e = load_err(&d);
    assert!(e.contains("num_hidden_layers"), "{e}");
    let _ = std::fs::remove_dir_all(&d);

    let d = edited_folder("qwen2", "shape", |c| {
        c.insert("intermediate_size".into(), json!(100));
    });
    let e = load_err(&d);
    assert!(e.contains("shape") && e.contains("mlp."), "{e}");
    let _ = std::fs::remove_dir_all(&d);

    let d = edited_folder("gemma3", "types", |c| {
        c.insert("layer_types".into(), json!(["full_attention"]));
    });
    let e = load_err(&d);
    assert!(e.contains("layer_types"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A sliding-window layer's KV cache is a ring of `window + slack` positions instead of the whole
/// context: over 100 positions (the ring of 7-8 rows wraps a dozen times), every step's logits
/// equal those of a full-length cache fed the same way, and the cache takes less memory. Over
/// each cache type (a 16-bit cache's store kernel wraps the ring itself, reading the position
/// from the step's positions buffer) and both kernel layouts.
#[test]
fn sliding_window_ring_cache_matches_a_full_cache() {
    use flint::gpu::{Gpu, GpuOptions, KvType};
    for (rows_kernels, kv_cache) in [
        (None, KvType::F32),
        (Some(false), KvType::F16),
        (Some(true), KvType::Q16),
    ] {
        let gpu = Gpu::new(&GpuOptions {
            rows_kernels,
            kv_cache,
            ..Default::default()
        })
        .unwrap();
        ring_cache_matches_a_full_cache(&gpu);
    }
}

fn ring_cache_matches_a_full_cache(gpu: &flint::gpu::Gpu) {
    use flint::format::hf::HfModel;
    use flint::model::{Logits, Model, Scratch};
    let kind = gpu.caps.kv_cache;
    for arch in ["gemma3", "mistral", "gemma2"] {
        let hf = HfModel::open(Path::new(DIR).join(arch)).unwrap();
        let model = Model::load_hf(gpu, &hf, &mut |_, _| {}).unwrap();
        let ctx = 256;
        let slack = 3;
        let mut full = model.new_cache(gpu, ctx).unwrap();
        let mut ring = model.new_cache_with_slack(gpu, ctx, slack).unwrap();
        assert!(
            full.rows.iter().all(|&r| r == ctx),
            "{arch}: {:?}",
            full.rows
        );
        assert!(ring.rows.iter().any(|&r| r < 10), "{arch}: {:?}", ring.rows);
        let cfg = model.config();
        for (l, (&rows, &w)) in ring.rows.iter().zip(&cfg.windows).enumerate() {
            let want = if w > 0 { w + slack } else { ctx };
            assert_eq!(rows, want, "{arch} layer {l}");
        }
        assert!(ring.gpu_bytes() < full.gpu_bytes(), "{arch}");
        let (mut s1, mut s2) = (Scratch::default(), Scratch::default());
        let tokens: Vec<u32> = (0..100u32).map(|i| (i * 37 + 11) % 300).collect();
        // chunks of 1..=slack+1 tokens, the same for both caches
        let mut at = 0;
        let mut step = 0;
        while at < tokens.len() {
            let n = (1 + step % (slack + 1)).min(tokens.len() - at);
            let chunk = &tokens[at..at + n];
            let a = model
                .forward(gpu, &mut full, &mut s1, chunk, Logits::Last)
                .unwrap();
            let b = model
                .forward(gpu, &mut ring, &mut s2, chunk, Logits::Last)
                .unwrap();
            let diff = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-6,
                "{arch} {kind:?} KV at position {at}: ring differs by {diff}"
            );
            at += n;
            step += 1;
        }
        // one token more than the ring's slack allows is refused, not computed wrongly
        let e = model
            .forward(gpu, &mut ring, &mut s2, &[1; 5], Logits::Last)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ring cache"), "{arch}: {e}");
    }
}

/// Continuous batching's forward pass: several sequences decoding one token each in one pass
/// give every sequence exactly (bit for bit) the logits it gets alone, for families with Q/K
/// norms, sliding windows, learned positions and fused projections.
#[test]
#[allow(clippy::needless_range_loop)]
fn batched_decode_equals_each_sequence_alone() {
    use flint::format::hf::HfModel;
    use flint::gpu::{Gpu, GpuOptions};
    use flint::model::transformer::Seq;
    use flint::model::{Logits, Model, Scratch};
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    let prompts: [&[u32]; 3] = [
        &[1, 72, 101, 108],
        &[1, 5, 29, 17, 42, 42, 42, 200, 3],
        &[1],
    ];
    for arch in ["qwen3", "gemma3", "gpt2", "phi3"] {
        let hf = HfModel::open(Path::new(DIR).join(arch)).unwrap();
        let model = Model::load_hf(&gpu, &hf, &mut |_, _| {}).unwrap();
        let steps = 5;
        // alone: prefill, then greedy decode one token per pass
        let mut alone = Vec::new();
        for p in prompts {
            let mut cache = model.new_cache(&gpu, 64).unwrap();
            let mut scratch = Scratch::default();
            let mut l = model
                .forward(&gpu, &mut cache, &mut scratch, p, Logits::Last)
                .unwrap();
            let mut seq = vec![l.clone()];
            for _ in 0..steps {
                let t = argmax(&l);
                l = model
                    .forward(&gpu, &mut cache, &mut scratch, &[t], Logits::Last)
                    .unwrap();
                seq.push(l.clone());
            }
            alone.push(seq);
        }
        // batched: each prefill alone, then every decode step for all three in one pass
        let mut caches: Vec<_> = (0..3).map(|_| model.new_cache(&gpu, 64).unwrap()).collect();
        let mut scratch = Scratch::default();
        let mut last: Vec<Vec<f32>> = prompts
            .iter()
            .zip(&mut caches)
            .map(|(p, c)| {
                model
                    .forward(&gpu, c, &mut scratch, p, Logits::Last)
                    .unwrap()
            })
            .collect();
        for step in 1..=steps {
            let next: Vec<[u32; 1]> = last.iter().map(|l| [argmax(l)]).collect();
            let mut seqs: Vec<Seq> = caches
                .iter_mut()
                .zip(&next)
                .map(|(cache, t)| Seq { cache, tokens: t })
                .collect();
            last = model
                .forward_many(&gpu, &mut seqs, &mut scratch, Logits::Last)
                .unwrap();
            for (i, l) in last.iter().enumerate() {
                assert!(
                    l == &alone[i][step],
                    "{arch}: sequence {i} step {step} differs from its run alone"
                );
            }
        }
    }
}

/// The engine's slots: three sequences prefilled into their own slots and decoded greedily with
/// one `feed_many` pass per step produce the ids each produces alone; a new prompt picks the slot
/// sharing its longest prefix; bad steps are errors.
#[test]
fn engine_slots_decode_together_as_alone() {
    let dir = Path::new(DIR).join("gemma2");
    let mut e = Engine::load(&dir, &LoadOptions::default(), &mut |_, _| {}).unwrap();
    let prompts: [&[u32]; 3] = [
        &[1, 72, 101, 108, 9, 9],
        &[1, 5, 29],
        &[1, 150, 151, 152, 153],
    ];
    let n = 8;
    let mut alone = Vec::new();
    for p in prompts {
        e.reset();
        let mut l = e.feed(p).unwrap();
        let mut ids = Vec::new();
        for _ in 0..n {
            let t = argmax(&l);
            ids.push(t);
            l = e.feed(&[t]).unwrap();
        }
        alone.push(ids);
    }
    e.set_slots(4).unwrap();
    assert_eq!(e.slots(), 4);
    let slots = [1usize, 2, 3];
    let mut last: Vec<Vec<f32>> = slots
        .iter()
        .zip(prompts)
        .map(|(&s, p)| e.prefill_slot(s, p).unwrap().0)
        .collect();
    let mut got = vec![Vec::new(); 3];
    for _ in 0..n {
        let steps: Vec<(usize, u32)> = slots
            .iter()
            .zip(&last)
            .map(|(&s, l)| (s, argmax(l)))
            .collect();
        for (i, &(_, t)) in steps.iter().enumerate() {
            got[i].push(t);
        }
        last = e.feed_many(&steps).unwrap();
    }
    assert_eq!(got, alone);
    assert_eq!(e.slot_history(2).len(), prompts[1].len() + n);
    // the slot holding prompt 3 is the best place for a prompt extending it
    let mut longer = prompts[2].to_vec();
    longer.push(7);
    assert_eq!(e.best_slot(&[0, 1, 2, 3], &longer), Some(3));
    let err = e.feed_many(&[(1, 5), (1, 6)]).unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    let err = e.feed_many(&[(9, 5)]).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
}

/// The top-k twins of the slot functions ([`Engine::prefill_slot_top_k`],
/// [`Engine::feed_many_top_k`]) return the k best, in the CPU reference's order, of exactly the
/// logits [`Engine::prefill_slot`] / [`Engine::feed_many`] return for the same tokens, reuse a
/// cached prefix the same way, keep the same history, and refuse the same bad steps without
/// touching any slot.
#[test]
fn engine_slot_top_k_twins_rank_the_logits() {
    use flint::ops::top_k::top_k_cpu;
    let dir = Path::new(DIR).join("gemma2");
    let mut e = Engine::load(&dir, &LoadOptions::default(), &mut |_, _| {}).unwrap();
    e.set_slots(4).unwrap();
    let prompts: [&[u32]; 2] = [&[1, 72, 101, 108, 9, 9], &[1, 150, 151, 152, 153]];
    // prompt i goes to slots 2i (logits) and 2i + 1 (candidates)
    let (mut rows, mut best) = (Vec::new(), Vec::new());
    for (i, p) in prompts.iter().enumerate() {
        let (row, n) = e.prefill_slot(2 * i, p).unwrap();
        let (top, m) = e.prefill_slot_top_k(2 * i + 1, p, 40).unwrap();
        assert_eq!((n, m), (p.len(), p.len()));
        assert_eq!(top_k_cpu(&row, 40), top, "prefill of prompt {i}");
        rows.push(row);
        best.push(top);
    }
    for (step, k) in [1, 128, 7, 40].into_iter().enumerate() {
        let toks: Vec<u32> = rows.iter().map(|r| argmax(r)).collect();
        rows = e.feed_many(&[(0, toks[0]), (2, toks[1])]).unwrap();
        best = e.feed_many_top_k(&[(1, toks[0]), (3, toks[1])], k).unwrap();
        for (i, (row, top)) in rows.iter().zip(&best).enumerate() {
            assert_eq!(top.len(), k, "step {step}, prompt {i}");
            assert_eq!(top_k_cpu(row, k), *top, "step {step}, prompt {i}, k {k}");
        }
        assert_eq!(e.slot_history(0), e.slot_history(1), "step {step}");
        assert_eq!(e.slot_history(2), e.slot_history(3), "step {step}");
    }
    // bad steps: the same errors as feed_many, and no slot moves
    let held: Vec<Vec<u32>> = (0..4).map(|s| e.slot_history(s).to_vec()).collect();
    let bad = [
        (vec![(1, 5), (1, 6)], 40, "twice"),
        (vec![(9, 5)], 40, "does not exist"),
        (vec![(1, 5), (3, 6)], 0, "k = 0"),
        (vec![(1, 5)], 129, "k = 129"),
    ];
    for (steps, k, want) in &bad {
        let (steps, k) = (&steps[..], *k);
        let err = e.feed_many_top_k(steps, k).unwrap_err().to_string();
        assert!(err.contains(want), "{steps:?} k {k}: {err}");
    }
    let err = e
        .prefill_slot_top_k(9, &[1, 2], 40)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = e.prefill_slot_top_k(1, &[], 40).unwrap_err().to_string();
    assert!(err.contains("empty prompt"), "{err}");
    for (s, h) in held.iter().enumerate() {
        assert_eq!(e.slot_history(s), &h[..], "slot {s} moved");
    }
    // after the refused steps the caches still agree, and a longer prompt reuses the cached prefix
    let mut longer = held[0].clone();
    longer.push(argmax(&rows[0]));
    let (row, n) = e.prefill_slot(0, &longer).unwrap();
    let (top, m) = e.prefill_slot_top_k(1, &longer, 40).unwrap();
    assert_eq!((n, m), (1, 1), "only the new token is computed");
    assert_eq!(top_k_cpu(&row, 40), top);
}

/// Stand-ins for real Q4_K_M checkpoints (scripts/make-arch-fixtures.py --q4km): per family a tiny
/// random model with hidden 256, converted by llama.cpp's converter and quantized by its own
/// `llama-quantize ... Q4_K_M`, so the file holds the mix real ones do (Q4_K, Q6_K, and
/// Q5_0/Q8_0 where a row length is not a multiple of 256). The reference is transformers on the
/// file's weights as gguf-py dequantizes them; same bars as above (1e-3, 16 greedy ids).
#[test]
fn q4_k_m_mixes_match_transformers() {
    #[derive(serde::Deserialize)]
    struct Q4km {
        prompts: Vec<Vec<u32>>,
        logits: Vec<Vec<f32>>,
        greedy: Vec<Vec<u32>>,
    }
    for arch in [
        "qwen2", "qwen3", "phi3", "mistral", "gpt2", "gemma2", "gemma3",
    ] {
        let dir = Path::new(DIR).join(arch);
        let file = dir.join(format!("{arch}-q4_k_m.gguf"));
        let r: Q4km =
            serde_json::from_str(&std::fs::read_to_string(dir.join("q4_k_m.json")).unwrap())
                .unwrap();
        // The file really is a K-quant mix.
        let g = flint::format::gguf::Gguf::open(&file).unwrap();
        let mut types: Vec<&str> = g.tensors.iter().map(|t| t.type_name()).collect();
        types.sort();
        types.dedup();
        eprintln!("{}: {types:?}", file.display());
        assert!(
            types.contains(&"Q4_K") && types.contains(&"Q6_K"),
            "{}: {types:?}",
            file.display()
        );
        drop(g);
        let gguf_arch = if arch == "mistral" { "llama" } else { arch };
        parity(gguf_arch, &file, &r.prompts, &r.logits, &r.greedy);
    }
}

/// Past 512 cached positions the GPU layout splits decode attention across workgroups (split-K,
/// attention.wgsl + attention_merge.wgsl); the CPU layout never does. Both must give the same
/// logits at every decode step of a 700-token context.
#[test]
fn long_context_decode_agrees_across_layouts() {
    let path = Path::new(DIR).join("qwen2").join("qwen2-f32.gguf");
    let prompt: Vec<u32> = (0..700u32).map(|i| (i * 37 + 11) % 300).collect();
    let mut engines = layouts().map(|(layout, opts)| {
        let opts = LoadOptions {
            ctx: Some(720),
            ..opts
        };
        (layout, Engine::load(&path, &opts, &mut |_, _| {}).unwrap())
    });
    let [(_, gpu), (_, cpu)] = &mut engines;
    let (mut a, mut b) = (gpu.feed(&prompt).unwrap(), cpu.feed(&prompt).unwrap());
    for step in 0..4 {
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "step {step}: layouts differ by {diff}");
        let next = argmax(&a);
        a = gpu.feed(&[next]).unwrap();
        b = cpu.feed(&[next]).unwrap();
    }
}
