//! Structured-output mask cost (src/constrain.rs): every schema of tests/fixtures/schemas/ compiled
//! against a real vocabulary (Qwen2.5's 151,936 ids when models/ has it, else SmolLM2's 49,152),
//! then seeded random walks timing each `Constraint::mask` call.
//!
//! `cargo bench --bench constrain` (plain main, no harness). Prints schemas compiled / total,
//! compile time (mean, max), mask time (mean, p50, p99, max) in µs, and the vocabulary size.
//! `FLINT_CONSTRAIN_WALKS` (default 4) walks of up to `FLINT_CONSTRAIN_STEPS` (default 96) tokens
//! per schema.

use flint::constrain::{Constraint, ConstraintVocab, GrammarSpec};
use flint::tools::{Syntax, ToolSpec};
use std::time::Instant;

const QWEN: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: seeded, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn main() {
    let walks = env_usize("FLINT_CONSTRAIN_WALKS", 4);
    let steps = env_usize("FLINT_CONSTRAIN_STEPS", 96);
    let path = if std::path::Path::new(QWEN).exists() {
        QWEN
    } else {
        eprintln!("note: {QWEN} missing (scripts/setup.sh fetches it); using SmolLM2's vocabulary");
        SMOLLM2
    };
    let gguf = flint::format::gguf::Gguf::open(path).expect("open GGUF");
    let tok = flint::tokenizer::Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let t0 = Instant::now();
    let vocab = ConstraintVocab::new(&tok).expect("constraint vocabulary");
    let build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let n = vocab.vocab_size();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemas");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/schemas")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();

    let mut compile_us = Vec::new();
    let mut mask_us = Vec::new();
    // The first mask of each sequence, apart: it walks lexer states no sequence has cached yet.
    let mut first_us = Vec::new();
    let mut failed = Vec::new();
    let mut logits = vec![0.0f32; n];
    let mut allowed_ids = Vec::with_capacity(n);
    for (k, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).expect("read schema"))
                .expect("schema JSON");
        let t = Instant::now();
        let compiled = match vocab.compile(&GrammarSpec::JsonSchema(schema)) {
            Ok(c) => c,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        compile_us.push(t.elapsed().as_secs_f64() * 1e6);
        for w in 0..walks {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((k * 131 + w) as u64 + 1));
            let mut c = Constraint::new(&compiled);
            for step in 0..steps {
                if c.is_finished() {
                    break;
                }
                logits.fill(0.0);
                let t = Instant::now();
                let allowed = c.mask(&mut logits).expect("mask");
                let us = t.elapsed().as_secs_f64() * 1e6;
                mask_us.push(us);
                if step == 0 {
                    first_us.push(us);
                }
                assert!(allowed > 0, "{name}: empty mask");
                allowed_ids.clear();
                allowed_ids.extend((0..n as u32).filter(|&i| logits[i as usize].is_finite()));
                // Prefer short tokens half the time: walks then reach deeper states (keys,
                // values, closing brackets) instead of one long string.
                let pick = allowed_ids[(rng.next() % allowed_ids.len() as u64) as usize];
                let tok_id = if rng.next().is_multiple_of(2) {
                    let short: Vec<u32> = allowed_ids
                        .iter()
                        .copied()
                        .filter(|&i| tok.token_bytes(i).map(|b| b.len() <= 2).unwrap_or(false))
                        .collect();
                    if short.is_empty() {
                        pick
                    } else {
                        short[(rng.next() % short.len() as u64) as usize]
                    }
                } else {
                    pick
                };
                c.accept(tok_id).expect("accept an allowed token");
                if vocab.eog().contains(&tok_id) {
                    break;
                }
            }
        }
    }

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let pct = |v: &[f64], p: f64| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!("vocabulary: {path}, {n} ids (trie + factory built in {build_ms:.0} ms)");
    println!(
        "schemas compiled: {} / {}",
        files.len() - failed.len(),
        files.len()
    );
    for f in &failed {
        println!("  failed: {f}");
    }
    println!(
        "compile: mean {:.0} µs, max {:.0} µs",
        mean(&compile_us),
        compile_us.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "mask: {} calls, mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        mask_us.len(),
        mean(&mask_us),
        pct(&mask_us, 0.50),
        pct(&mask_us, 0.99),
        pct(&mask_us, 1.0)
    );
    println!(
        "first mask of a sequence: {} calls, mean {:.1} µs, p99 {:.1} µs",
        first_us.len(),
        mean(&first_us),
        pct(&first_us, 0.99)
    );

    // Tool-call grammars (flint::tools): the corpus's object schemas as 8 tools, per syntax and
    // choice; seeded walks over any allowed token (in `auto` mostly free text, what serving sees
    // before a call).
    let tools: Vec<serde_json::Value> = files
        .iter()
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(f).ok()?).ok())
        .filter(|s| s["type"] == "object")
        .take(8)
        .enumerate()
        .map(|(i, p)| serde_json::json!({"type": "function", "function": {"name": format!("tool_{i}"), "parameters": p}}))
        .collect();
    let tools = serde_json::Value::Array(tools);
    for syntax in [
        Syntax::Hermes,
        Syntax::Llama3,
        Syntax::Mistral,
        Syntax::Generic,
    ] {
        for choice in ["auto", "required"] {
            let spec = ToolSpec::parse(Some(&tools), Some(&serde_json::json!(choice)), None)
                .expect("tools")
                .expect("some tools");
            let t = Instant::now();
            let c = match flint::tools::constrain(&vocab, syntax, Some(&spec), None) {
                Ok(c) => c,
                Err(e) => {
                    println!("tools {} {choice}: {}", syntax.name(), e.message);
                    continue;
                }
            };
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            let Some(compiled) = c.grammar else { continue };
            let mut us = Vec::new();
            for w in 0..walks {
                let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ (w as u64 + 1));
                let mut k = Constraint::new(&compiled);
                for _ in 0..steps {
                    if k.is_finished() {
                        break;
                    }
                    logits.fill(0.0);
                    let t = Instant::now();
                    k.mask(&mut logits).expect("mask");
                    us.push(t.elapsed().as_secs_f64() * 1e6);
                    allowed_ids.clear();
                    allowed_ids.extend((0..n as u32).filter(|&i| logits[i as usize].is_finite()));
                    let tok_id = allowed_ids[(rng.next() % allowed_ids.len() as u64) as usize];
                    k.accept(tok_id).expect("accept an allowed token");
                    if vocab.eog().contains(&tok_id) {
                        break;
                    }
                }
            }
            println!(
                "tools {} {choice} (8 tools): compile {compile_ms:.1} ms, mask {} calls, mean {:.1} µs, p99 {:.1} µs",
                syntax.name(),
                us.len(),
                mean(&us),
                pct(&us, 0.99)
            );
        }
    }
}
