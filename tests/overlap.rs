//! The overlapped greedy decode loop (`Engine::overlap`, off with `FLINT_NO_OVERLAP`): with the
//! pick made on the GPU, each step is submitted before the previous step's pick is read back.
//! Generation must give the same token ids, finish reason, history and cache length as the loop
//! without overlap, whatever ends it (max_tokens, an end-of-generation token, a stop string, the
//! caller cancelling, the end of the context), and a following turn that reuses the cached
//! prefix must too (a step dropped past the end must leave nothing behind).
//!
//! SmolLM2-135M (needs `models/SmolLM2-135M-Instruct.Q4_1.gguf`; FLINT_SKIP_MODEL_TESTS=1 skips
//! it), and the tiny random model of every family in tests/fixtures/arch on both kernel layouts.

use flint::engine::{Engine, FinishReason, GenerateOptions, LoadOptions};
use flint::gpu::{GpuCounters, GpuOptions};
use flint::sampling::SamplingParams;
use std::path::Path;

/// One turn: tokens appended to what the engine's history holds (the first turn starts from an
/// empty cache), what to generate, and after how many text pieces the caller cancels.
struct Turn {
    append: Vec<u32>,
    opts: GenerateOptions,
    cancel_after: Option<usize>,
}

/// What one turn gave.
#[derive(Debug, PartialEq)]
struct Outcome {
    tokens: Vec<u32>,
    text: String,
    finish: FinishReason,
    history: Vec<u32>,
    cache_len: usize,
}

fn greedy(max_tokens: usize, stop: &[&str]) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop: stop.iter().map(|s| s.to_string()).collect(),
        // the overlapped loop is the non-speculative one
        spec: flint::spec::SpecOptions::off(),
        ..Default::default()
    }
}

/// Runs `turns` from an empty cache with the overlap on or off; returns each turn's outcome and
/// the host's work for all of them.
fn run(e: &mut Engine, overlap: bool, turns: &[Turn]) -> (Vec<Outcome>, GpuCounters) {
    e.overlap = overlap;
    e.gpu.caps.gpu_sampling = true;
    e.reset();
    let before = e.gpu.counters();
    let mut out = Vec::new();
    for t in turns {
        let mut prompt = e.history().to_vec();
        prompt.extend_from_slice(&t.append);
        let mut pieces = 0;
        let g = e
            .generate(&prompt, &t.opts, &mut |_| {
                pieces += 1;
                t.cancel_after.is_none_or(|n| pieces < n)
            })
            .unwrap();
        assert_eq!(e.history().len(), e.cache_len(), "history vs cache length");
        out.push(Outcome {
            tokens: g.tokens,
            text: g.text,
            finish: g.finish,
            history: e.history().to_vec(),
            cache_len: e.cache_len(),
        });
    }
    (out, e.gpu.counters().since(before))
}

/// The same outcomes with and without overlap, and fewer submissions with it (one per decode
/// step instead of a step and a readback: the overlapped loop ran).
fn same_with_and_without_overlap(what: &str, e: &mut Engine, turns: &[Turn]) -> Vec<Outcome> {
    let (on, on_host) = run(e, true, turns);
    let (off, off_host) = run(e, false, turns);
    let (on_submits, off_submits) = (on_host.submits, off_host.submits);
    e.overlap = true;
    eprintln!("{what}: {on:?}\n  submissions: {on_submits} overlapped, {off_submits} not");
    assert_eq!(on, off, "{what}: overlapped vs not");
    assert!(
        on_submits < off_submits,
        "{what}: {on_submits} submissions overlapped, {off_submits} not"
    );
    on
}

#[test]
fn smollm2_overlapped_greedy_equals_the_plain_loop() {
    const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    assert!(
        Path::new(MODEL).exists(),
        "{MODEL} missing: run scripts/setup.sh"
    );
    let opts = LoadOptions {
        ctx: Some(96),
        ..Default::default()
    };
    let mut e = Engine::load(MODEL, &opts, &mut |_, _| {}).unwrap();
    let enc = |e: &Engine, s: &str, bos: bool| e.tokenizer.encode(s, bos).unwrap();
    let turn = |append, opts, cancel_after| Turn {
        append,
        opts,
        cancel_after,
    };

    // max_tokens, then a turn continuing the text (the cached prefix reused)
    let story = [
        turn(enc(&e, "Once upon a time", true), greedy(20, &[]), None),
        turn(enc(&e, " Then", false), greedy(12, &[]), None),
    ];
    let out = same_with_and_without_overlap("max_tokens", &mut e, &story);
    assert_eq!(out[0].tokens.len(), 20);
    assert_eq!(out[0].finish, FinishReason::Length);

    // an end-of-generation token (<|im_end|>), then the next chat turn
    let chat = |q: &str| format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
    let first = chat("What is the capital of France? Answer in one word.");
    let qa = [
        turn(enc(&e, &first, false), greedy(30, &[]), None),
        turn(
            enc(&e, &format!("<|im_end|>\n{}", chat("And of Italy?")), false),
            greedy(30, &[]),
            None,
        ),
    ];
    let out = same_with_and_without_overlap("end of generation", &mut e, &qa);
    assert_eq!(out[0].finish, FinishReason::Stop, "{:?}", out[0].text);
    assert!(out[0].tokens.len() < 30 && out[0].text.contains("Paris"));

    // a stop string, then the caller cancelling, then more text
    let stops = [
        turn(enc(&e, "Once upon a time", true), greedy(40, &["."]), None),
        turn(enc(&e, " and", false), greedy(40, &[]), Some(5)),
        turn(enc(&e, " so", false), greedy(8, &[]), None),
    ];
    let out = same_with_and_without_overlap("stop string and cancel", &mut e, &stops);
    assert_eq!(out[0].finish, FinishReason::Stop, "{:?}", out[0].text);
    assert_eq!(out[1].finish, FinishReason::Cancelled);

    // the end of the context (a long prompt, so that few steps reach it)
    let long = [turn(
        enc(
            &e,
            &"Once upon a time, in a land far away, ".repeat(7),
            true,
        ),
        greedy(200, &[]),
        None,
    )];
    let out = same_with_and_without_overlap("context end", &mut e, &long);
    assert_eq!(out[0].finish, FinishReason::Length);
    assert_eq!(out[0].cache_len, 96);
}

/// Every family's tiny random model (both kernel layouts): a turn stopped by max_tokens, then one
/// reusing its prefix, then one running into the end of a small context.
#[test]
fn every_family_overlapped_greedy_equals_the_plain_loop() {
    let dir = Path::new("tests/fixtures/arch");
    for arch in [
        "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mistral", "gpt2",
    ] {
        for rows in [false, true] {
            let opts = LoadOptions {
                gpu: GpuOptions {
                    rows_kernels: Some(rows),
                    fused_rows: Some(rows),
                    ..Default::default()
                },
                ctx: Some(40),
                ..Default::default()
            };
            let what = format!("{arch} ({} layout)", if rows { "cpu" } else { "gpu" });
            let mut e = Engine::load(dir.join(arch), &opts, &mut |_, _| {})
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            let turns = [
                Turn {
                    append: vec![1, 72, 101, 108, 9, 9],
                    opts: greedy(9, &[]),
                    cancel_after: None,
                },
                Turn {
                    append: vec![5, 29],
                    opts: greedy(7, &[]),
                    cancel_after: None,
                },
                Turn {
                    append: vec![150, 151],
                    opts: greedy(100, &[]),
                    cancel_after: None,
                },
            ];
            let out = same_with_and_without_overlap(&what, &mut e, &turns);
            assert_eq!(out[2].cache_len, 40, "{what}");
            // run again, the overlapped steps make no bind group: they repeat the same dispatches
            let (again, host) = run(&mut e, true, &turns);
            assert_eq!(again, out, "{what}: a second run");
            assert_eq!(
                host.bind_groups, 0,
                "{what}: bind groups made by a second run"
            );
        }
    }
}
