//! Hugging Face folders (llama): flint's logits and greedy tokens against transformers' on the tiny
//! fixtures of scripts/make-hf-fixtures.py, and every malformed-folder error (unknown architecture,
//! missing key, unsupported RoPE scaling, shape mismatch, missing tensor, tensor outside the file).

use flint::engine::{Engine, LoadOptions};
use flint::format::hf::HfModel;
use flint::format::safetensors::SafeTensors;
use flint::format::ModelFile;
use flint::gpu::{Gpu, GpuOptions};
use flint::model::Model;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const F32_DIR: &str = "tests/fixtures/hf/tiny-llama";
const BF16_DIR: &str = "tests/fixtures/hf/tiny-llama-bf16";
const TOL: f32 = 1e-3;

fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        Gpu::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe: scripts/setup.sh)")
    })
}

#[derive(serde::Deserialize)]
struct Expected {
    prompts: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<Vec<u32>>,
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

/// Loads `dir` through `Engine::load` and compares with transformers' numbers.
fn parity(dir: &str) {
    let exp: Expected = serde_json::from_str(
        &std::fs::read_to_string(Path::new(dir).join("expected.json")).unwrap(),
    )
    .unwrap();
    let mut e = Engine::load(dir, &LoadOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(e.model.info().architecture, "llama");
    for ((prompt, want), greedy) in exp.prompts.iter().zip(&exp.logits).zip(&exp.greedy) {
        e.reset();
        let mut logits = e.feed(prompt).unwrap();
        assert_eq!(logits.len(), want.len());
        let diff = logits
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{dir} prompt {prompt:?}: max |flint - transformers| = {diff:e}");
        assert!(
            diff < TOL,
            "{dir} prompt {prompt:?}: logits differ by {diff}"
        );
        let mut got = Vec::new();
        for _ in 0..greedy.len() {
            let id = argmax(&logits);
            got.push(id);
            logits = e.feed(&[id]).unwrap();
        }
        assert_eq!(&got, greedy, "{dir} prompt {prompt:?}: greedy ids");
    }
}

#[test]
fn f32_folder_matches_transformers() {
    parity(F32_DIR);
}

#[test]
fn bf16_sharded_tied_folder_matches_transformers() {
    parity(BF16_DIR);
}

#[test]
fn tokenizer_and_template_come_from_the_folder() {
    let hf = HfModel::open(F32_DIR).unwrap();
    assert!(hf
        .chat_template()
        .unwrap()
        .contains("add_generation_prompt"));
    let tok = hf.tokenizer().unwrap();
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(tok.adds_bos());
    let ids = tok.encode("Hello world", true).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids).unwrap(), "Hello world");
    assert!(tok.is_eog(2));
    match ModelFile::open(F32_DIR).unwrap() {
        ModelFile::Hf(_) => {}
        ModelFile::Gguf(_) => panic!("a folder opened as GGUF"),
    }
}

/// A copy of the F32 fixture in a scratch folder, for breaking.
fn copy_fixture(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flint-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for f in std::fs::read_dir(F32_DIR).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
    }
    d
}

/// Edits `config.json` of `dir`.
fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// The error of loading `dir` (open + upload on the shared GPU).
fn load_err(dir: &Path) -> String {
    let r = HfModel::open(dir).and_then(|hf| Model::load_hf(gpu(), &hf, &mut |_, _| {}));
    match r {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites `model.safetensors` of `dir` keeping the tensors `keep` accepts.
fn rewrite_weights(dir: &Path, keep: impl Fn(&str) -> bool) {
    let p = dir.join("model.safetensors");
    let st = SafeTensors::open(&p).unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in st.tensors.iter().filter(|t| keep(&t.name)) {
        let bytes = st.tensor_data(t);
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape,
                "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    drop(st);
    let h = serde_json::to_string(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(&p, out).unwrap();
}

#[test]
fn unknown_architecture_is_named() {
    let d = copy_fixture("arch");
    edit_config(&d, |c| {
        c.insert(
            "architectures".into(),
            serde_json::json!(["FooForCausalLM"]),
        );
    });
    let msg = load_err(&d);
    assert!(
        msg.contains("unknown architecture `FooForCausalLM`"),
        "{msg}"
    );
    edit_config(&d, |c| {
        c.remove("architectures");
    });
    assert!(load_err(&d).contains("`architectures`"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_required_key_is_named() {
    let d = copy_fixture("key");
    for key in [
        "num_hidden_layers",
        "hidden_size",
        "vocab_size",
        "intermediate_size",
    ] {
        let orig = std::fs::read_to_string(d.join("config.json")).unwrap();
        edit_config(&d, |c| {
            c.remove(key);
        });
        let msg = load_err(&d);
        assert!(
            msg.contains(&format!("missing required key `{key}`")) && msg.contains("config.json"),
            "{msg}"
        );
        std::fs::write(d.join("config.json"), orig).unwrap();
    }
    edit_config(&d, |c| {
        c.insert("num_attention_heads".into(), serde_json::json!("six"));
    });
    assert!(load_err(&d).contains("`num_attention_heads`"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unsupported_options_are_named() {
    let d = copy_fixture("rope");
    edit_config(&d, |c| {
        c.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "dynamic", "factor": 2.0}),
        );
    });
    let msg = load_err(&d);
    assert!(
        msg.contains("`dynamic`") && msg.contains("rope_scaling"),
        "{msg}"
    );
    edit_config(&d, |c| {
        c.remove("rope_scaling");
        c.insert("hidden_act".into(), serde_json::json!("gelu"));
    });
    assert!(load_err(&d).contains("`gelu`"));
    edit_config(&d, |c| {
        c.insert("hidden_act".into(), serde_json::json!("silu"));
        c.insert("attention_bias".into(), serde_json::json!(true));
    });
    assert!(load_err(&d).contains("attention_bias"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn shape_mismatch_is_named() {
    let d = copy_fixture("shape");
    edit_config(&d, |c| {
        c.insert("intermediate_size".into(), serde_json::json!(100));
    });
    let msg = load_err(&d);
    assert!(
        msg.contains("model.layers.0.mlp.gate_proj.weight")
            && msg.contains("[96, 72]")
            && msg.contains("[100, 72]"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_tensor_is_named() {
    let d = copy_fixture("missing");
    rewrite_weights(&d, |n| n != "model.layers.1.mlp.up_proj.weight");
    let msg = load_err(&d);
    assert!(
        msg.contains("missing tensor `model.layers.1.mlp.up_proj.weight`"),
        "{msg}"
    );
    // An untied model without its output head.
    let _ = std::fs::remove_dir_all(&d);
    let d = copy_fixture("missing-head");
    rewrite_weights(&d, |n| n != "lm_head.weight");
    assert!(load_err(&d).contains("`lm_head.weight`"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tensor_outside_the_file_is_named() {
    let d = copy_fixture("outside");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let msg = load_err(&d);
    assert!(
        msg.contains("model.safetensors") && msg.contains("outside the"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unsupported_weight_type_is_named() {
    let d = copy_fixture("dtype");
    // Relabel the F32 output head as I32 (same size): parses, but cannot be used.
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(header).unwrap();
    v["lm_head.weight"]["dtype"] = serde_json::json!("I32");
    let mut h = serde_json::to_string(&v).unwrap();
    while h.len() < n {
        h.push(' ');
    }
    assert_eq!(h.len(), n, "the header grew; pad the fixture differently");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, out).unwrap();
    let msg = load_err(&d);
    assert!(
        msg.contains("lm_head.weight") && msg.contains("I32"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// RoPE scaling read from `config.json`: linear, yarn and llama3 (whose per-frequency divisors
/// follow llama.cpp's converter: 1 for short wavelengths, `factor` for long ones, smooth between).
#[test]
fn rope_scaling_from_config() {
    use flint::format::hf::HfConfig;
    let cfg = |scaling: &str| {
        let text = format!(
            r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":14336,
            "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
            "vocab_size":128256,"rope_theta":500000.0,"max_position_embeddings":131072,
            "rope_scaling":{scaling}}}"#
        );
        flint::model::llama::from_hf(&HfConfig::from_str("config.json", &text).unwrap())
    };
    let c = cfg(r#"{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#).unwrap();
    let f = c.rope_freq_factors.unwrap();
    assert_eq!(f.len(), 64);
    assert_eq!(f[0], 1.0);
    assert_eq!(f[63], 8.0);
    assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
    assert!(f.iter().any(|&x| x > 1.0 && x < 8.0));
    assert_eq!(c.rope.as_ref().unwrap().freq_scale, 1.0);

    let c = cfg(r#"{"type":"linear","factor":2.0}"#).unwrap();
    assert_eq!(c.rope.as_ref().unwrap().freq_scale, 0.5);
    assert!(c.rope_freq_factors.is_none());

    let c = cfg(r#"{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}"#)
        .unwrap();
    assert_eq!(c.rope.as_ref().unwrap().freq_scale, 0.25);
    assert_eq!(c.rope.as_ref().unwrap().ext_factor, 1.0);
    assert!((c.rope.as_ref().unwrap().attn_factor - 1.0).abs() < 1e-6);
    assert_eq!(c.rope.as_ref().unwrap().n_ctx_orig, 32768);

    let msg = cfg(r#"{"rope_type":"longrope","factor":4.0}"#)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`longrope`"), "{msg}");
    let msg = cfg(r#"{"rope_type":"linear"}"#).unwrap_err().to_string();
    assert!(msg.contains("factor"), "{msg}");
}
