//! Embeddings against their references (tests/fixtures/embed/README.md): the real
//! all-MiniLM-L6-v2 (sentence-transformers folder from scripts/setup.sh) against
//! sentence-transformers, a tiny random BERT (folder and llama.cpp's GGUFs) and a tiny qwen3 used
//! as a last-token embedder against transformers; and the checks every surface relies on.

use flint::embed::{EmbedInput, EmbedOptions, Embedder, Pooling, MAX_INPUTS};
use flint::gpu::GpuOptions;
use serde_json::Value;
use std::sync::{Mutex, MutexGuard, OnceLock};

const MINILM: &str = "models/all-MiniLM-L6-v2";
const FIXTURES: &str = "tests/fixtures/embed";

fn load(path: &str, pooling: Option<Pooling>) -> Embedder {
    Embedder::load_with(path, &GpuOptions::default(), pooling, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One MiniLM per test binary.
fn minilm() -> MutexGuard<'static, Embedder> {
    static E: OnceLock<Mutex<Embedder>> = OnceLock::new();
    E.get_or_init(|| {
        assert!(
            std::path::Path::new(MINILM).is_dir(),
            "{MINILM} missing: run scripts/setup.sh"
        );
        Mutex::new(load(MINILM, None))
    })
    .lock()
    .unwrap_or_else(|p| p.into_inner())
}

fn json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn texts(cases: &[Value]) -> Vec<EmbedInput> {
    cases
        .iter()
        .map(|c| EmbedInput::Text(c["text"].as_str().unwrap().to_string()))
        .collect()
}

/// Every case of minilm.json in one call (80 inputs, 2 packed passes): the tokenizer's ids equal
/// sentence-transformers', and every vector has cosine >= 0.9999 with its reference.
#[test]
fn minilm_matches_sentence_transformers() {
    let fx = json(&format!("{FIXTURES}/minilm.json"));
    let cases = fx["cases"].as_array().unwrap();
    let mut e = minilm();
    assert_eq!(e.cfg.dims, 384);
    assert_eq!(e.cfg.pooling, Pooling::Mean);
    assert!(e.cfg.normalize);
    assert_eq!(
        e.cfg.max_tokens,
        fx["max_seq_length"].as_u64().unwrap() as usize
    );
    let inputs = texts(cases);
    let tokens = e.tokenize(&inputs, false).unwrap();
    for (c, got) in cases.iter().zip(&tokens) {
        assert_eq!(got, &ids(&c["ids"]), "token ids of case {}", c["name"]);
    }
    let out = e.embed(&inputs, &EmbedOptions::default()).unwrap();
    assert_eq!(out.vectors.len(), cases.len());
    assert_eq!(
        out.prompt_tokens,
        tokens.iter().map(Vec::len).sum::<usize>()
    );
    let mut worst = (1.0f64, String::new());
    for (c, v) in cases.iter().zip(&out.vectors) {
        let cos = cosine(v, &floats(&c["embedding"]));
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{}: norm {norm}", c["name"]);
        if cos < worst.0 {
            worst = (cos, c["name"].to_string());
        }
    }
    eprintln!("minilm folder: min cosine {:.7} ({})", worst.0, worst.1);
    assert!(worst.0 >= 0.9999, "min cosine {worst:?}");

    // packing changes nothing: the first cases alone give the same vectors
    for (i, c) in cases.iter().enumerate().take(4) {
        let alone = e
            .embed(&inputs[i..i + 1], &EmbedOptions::default())
            .unwrap();
        let d = max_abs(&alone.vectors[0], &out.vectors[i]);
        assert!(d < 1e-5, "{}: alone vs batched {d}", c["name"]);
    }
}

/// CLS, last-token and mean pooling of the real model's hidden states (before normalization)
/// against sentence-transformers' `last_hidden_state` rows.
#[test]
fn minilm_every_pooling_mode_matches_hidden_states() {
    let fx = json(&format!("{FIXTURES}/minilm.json"));
    let cases: Vec<&Value> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("cls").is_some())
        .collect();
    assert!(cases.len() >= 8);
    let seqs: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    let mut e = minilm();
    let saved = e.cfg.pooling;
    for (pooling, key) in [
        (Pooling::Cls, "cls"),
        (Pooling::Last, "last"),
        (Pooling::Mean, "mean_raw"),
    ] {
        e.cfg.pooling = pooling;
        let got = pollster::block_on(e.embed_tokens_async(&seqs));
        e.cfg.pooling = saved;
        let got = got.unwrap();
        for (c, v) in cases.iter().zip(&got) {
            let want = floats(&c[key]);
            let (cos, d) = (cosine(v, &want), max_abs(v, &want));
            assert!(
                cos >= 0.9999 && d < 2e-3,
                "{key} {}: cos {cos} max abs {d}",
                c["name"]
            );
        }
    }
}

/// llama.cpp's GGUFs of the same model (made by scripts/make-embed-fixtures.sh; not in CI, where
/// the converter is not available): the same vectors.
#[test]
fn minilm_gguf_matches_sentence_transformers() {
    let fx = json(&format!("{FIXTURES}/minilm.json"));
    let cases = fx["cases"].as_array().unwrap();
    for (file, floor) in [
        ("models/all-MiniLM-L6-v2-f32.gguf", 0.9999),
        ("models/all-MiniLM-L6-v2-f16.gguf", 0.9999),
    ] {
        if !std::path::Path::new(file).is_file() {
            eprintln!("skipped: {file} is made by scripts/make-embed-fixtures.sh");
            continue;
        }
        let mut e = load(file, None);
        let out = e.embed(&texts(cases), &EmbedOptions::default()).unwrap();
        let min = cases
            .iter()
            .zip(&out.vectors)
            .map(|(c, v)| cosine(v, &floats(&c["embedding"])))
            .fold(1.0, f64::min);
        eprintln!("{file}: min cosine {min:.7}");
        assert!(min >= floor, "{file}: min cosine {min}");
    }
}

/// The tiny encoders against transformers: BERT (CLS pooling read from its 1_Pooling config) and
/// nomic-bert (RoPE, SwiGLU, fused QKV; mean pooling), each as a sentence-transformers folder and
/// llama.cpp's f32 GGUF (WordPiece rebuilt from the GGUF vocabulary gives transformers' ids),
/// to 1e-4 in the embeddings and the last token's hidden state; the q8_0 GGUFs against their own
/// dequantized references.
#[test]
fn tiny_encoders_folder_and_gguf_match_transformers() {
    for (name, pooling) in [("tiny-bert", Pooling::Cls), ("tiny-nomic", Pooling::Mean)] {
        tiny_encoder(name, pooling);
    }
}

fn tiny_encoder(name: &str, pooling: Pooling) {
    let dir = format!("{FIXTURES}/{name}");
    let fx = json(&format!("{dir}/expected.json"));
    let cases = fx["cases"].as_array().unwrap();
    let inputs = texts(cases);
    let seqs: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    let h = fx["dim"].as_u64().unwrap() as usize;
    let f32_gguf = format!("{dir}/{}", fx["gguf"]["f32"]["file"].as_str().unwrap());
    let q8_gguf = format!("{dir}/{}", fx["gguf"]["q8_0"]["file"].as_str().unwrap());
    for path in [dir.as_str(), f32_gguf.as_str(), q8_gguf.as_str()] {
        let mut e = load(path, None);
        assert_eq!(e.cfg.pooling, pooling, "{path}");
        assert_eq!(
            e.tokenize(&inputs, false).unwrap(),
            seqs,
            "{path}: token ids"
        );
        let q8 = path.ends_with("q8_0.gguf");
        let want: Vec<Vec<f32>> = if q8 {
            fx["gguf"]["q8_0"]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(floats)
                .collect()
        } else {
            cases.iter().map(|c| floats(&c["embedding"])).collect()
        };
        let out = e.embed(&inputs, &EmbedOptions::default()).unwrap();
        for ((c, v), w) in cases.iter().zip(&out.vectors).zip(&want) {
            let d = max_abs(v, w);
            assert!(d < 1e-4, "{path} {}: embedding max abs {d}", c["name"]);
        }
        // the last token's hidden state, unnormalized
        if !q8 {
            e.cfg.pooling = Pooling::Last;
            let last = pollster::block_on(e.embed_tokens_async(&seqs)).unwrap();
            for (c, v) in cases.iter().zip(&last) {
                let states = c["last_hidden_state"].as_array().unwrap();
                let want = floats(states.last().unwrap());
                assert_eq!(want.len(), h);
                let d = max_abs(v, &want);
                assert!(
                    d < 1e-4,
                    "{path} {}: last hidden state max abs {d}",
                    c["name"]
                );
            }
        }
    }
}

/// A decoder as an embedder (Qwen3-Embedding style): the tiny qwen3's final-norm hidden state
/// of the last token, normalized, from the HF folder and the GGUF, pooling given (neither file
/// says it embeds).
#[test]
fn qwen3_last_token_embedder_matches_transformers() {
    let fx = json(&format!("{FIXTURES}/qwen3-last.json"));
    for path in [
        "tests/fixtures/arch/qwen3",
        "tests/fixtures/arch/qwen3/qwen3-f32.gguf",
    ] {
        // without a pooling type it is a generation model
        let err = Embedder::load(path, &GpuOptions::default(), &mut |_, _| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not an embedding model"), "{err}");
        let mut e = load(path, Some(Pooling::Last));
        let inputs: Vec<EmbedInput> = fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| EmbedInput::Tokens(ids(&c["ids"])))
            .collect();
        let out = e.embed(&inputs, &EmbedOptions::default()).unwrap();
        for (c, v) in fx["cases"].as_array().unwrap().iter().zip(&out.vectors) {
            let d = max_abs(v, &floats(&c["last_normalized"]));
            assert!(d < 1e-4, "{path}: last-token embedding max abs {d}");
        }
        // mean pooling of a decoder's states is refused by name
        let err = Embedder::load_with(
            path,
            &GpuOptions::default(),
            Some(Pooling::Mean),
            &mut |_, _| {},
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("mean pooling of a decoder"), "{err}");
    }
}

#[test]
fn dimensions_truncation_and_bad_input() {
    let mut e = minilm();
    let one = |s: &str| vec![EmbedInput::Text(s.into())];
    let full = e
        .embed(&one("a small test"), &EmbedOptions::default())
        .unwrap();
    // Matryoshka: the first 64 components, normalized again
    let opts = EmbedOptions {
        dimensions: Some(64),
        ..Default::default()
    };
    let short = e.embed(&one("a small test"), &opts).unwrap();
    let mut want = full.vectors[0][..64].to_vec();
    flint::embed::l2_normalize(&mut want);
    assert!(max_abs(&short.vectors[0], &want) < 1e-6);

    let err = |e: &mut Embedder, inputs: &[EmbedInput], opts: &EmbedOptions| {
        e.embed(inputs, opts).expect_err("an error").to_string()
    };
    let none = EmbedOptions::default();
    assert!(err(&mut e, &[], &none).contains("no input"));
    assert!(err(&mut e, &one(""), &none).contains("input 0 is an empty string"));
    let many = vec![EmbedInput::Text("x".into()); MAX_INPUTS + 1];
    assert!(err(&mut e, &many, &none).contains("over the limit of 2048"));
    let bad_id = [
        EmbedInput::Text("ok".into()),
        EmbedInput::Tokens(vec![101, 99999]),
    ];
    let m = err(&mut e, &bad_id, &none);
    assert!(m.contains("input 1") && m.contains("99999"), "{m}");
    assert!(err(&mut e, &[EmbedInput::Tokens(vec![])], &none).contains("empty token array"));
    for d in [0, 385] {
        let o = EmbedOptions {
            dimensions: Some(d),
            ..Default::default()
        };
        assert!(err(&mut e, &one("x"), &o).contains("dimensions"));
    }
    // over the 256-token limit: refused, or cut keeping [SEP] when asked
    let long = one(&"word ".repeat(300));
    let m = err(&mut e, &long, &none);
    assert!(
        m.contains("302 tokens") && m.contains("limit of 256") && m.contains("truncate"),
        "{m}"
    );
    let cut = e.tokenize(&long, true).unwrap();
    assert_eq!(cut[0].len(), 256);
    assert_eq!(*cut[0].last().unwrap(), 102, "[SEP] kept");
    let o = EmbedOptions {
        truncate: true,
        ..Default::default()
    };
    assert_eq!(e.embed(&long, &o).unwrap().prompt_tokens, 256);
    drop(e);

    // a chat model does not embed, and an encoder does not chat
    let err = Embedder::load(
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        &GpuOptions::default(),
        &mut |_, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("not an embedding model"), "{err}");
    let err = flint::engine::Engine::load(MINILM, &Default::default(), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is an embedding model"), "{err}");
}
