//! Speculative decoding (`--spec ngram`, `GenerateOptions::spec`): prompt-lookup drafts checked in
//! one batched pass. Greedy output must be the tokens decoding without speculation gives, id for
//! id, on every family (the tiny random models of tests/fixtures/arch, both kernel layouts),
//! through the sliding-window ring and into the end of the context; with sampling, the same
//! distribution (a chi-squared test over seeded runs). SmolLM2-135M (needs
//! `models/SmolLM2-135M-Instruct.Q4_1.gguf`; FLINT_SKIP_MODEL_TESTS=1 skips it) copies a
//! paragraph with most drafted tokens accepted and the same text.

use flint::engine::{Engine, FinishReason, GenerateOptions, Generation, LoadOptions};
use flint::gpu::GpuOptions;
use flint::sampling::SamplingParams;
use flint::spec::{SpecMode, SpecOptions};
use std::path::Path;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn opts(max_tokens: usize, sampling: SamplingParams, spec: SpecOptions) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling,
        spec,
        ..Default::default()
    }
}

fn ngram(draft_max: usize) -> SpecOptions {
    SpecOptions {
        mode: SpecMode::Ngram,
        draft_max,
        draft_min: 1,
    }
}

/// Generates from an empty cache; checks the cache holds exactly the history afterwards.
fn gen(e: &mut Engine, prompt: &[u32], o: &GenerateOptions) -> Generation {
    e.reset();
    let g = e.generate(prompt, o, &mut |_| true).unwrap();
    assert_eq!(e.history().len(), e.cache_len(), "history vs cache length");
    let mut want = prompt.to_vec();
    want.extend(g.tokens.iter().filter(|&&t| !e.tokenizer.is_eog(t)));
    assert_eq!(e.history(), &want[..want.len().min(e.history().len())]);
    g
}

/// Every family's tiny random model, both kernel layouts, the GPU pick and the CPU pick: greedy
/// generation with speculation gives the ids, finish reason and history of generation without,
/// in a context small enough that generation runs into its end (and through the sliding-window
/// layers' ring), and drafts were checked and some accepted on the way.
#[test]
fn greedy_speculation_gives_the_same_ids_on_every_family() {
    let dir = Path::new("tests/fixtures/arch");
    for arch in [
        "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mistral", "gpt2",
    ] {
        for rows in [false, true] {
            let load = LoadOptions {
                gpu: GpuOptions {
                    rows_kernels: Some(rows),
                    fused_rows: Some(rows),
                    ..Default::default()
                },
                ctx: Some(56),
                ..Default::default()
            };
            let what = format!("{arch} ({} layout)", if rows { "cpu" } else { "gpu" });
            let mut e = Engine::load(dir.join(arch), &load, &mut |_, _| {})
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            // a prompt, its greedy answer, and the prompt again: lookups propose that answer
            // (the first of a few prompts the model answers at some length)
            e.gpu.caps.gpu_sampling = true;
            let greedy_off = |n| opts(n, SamplingParams::greedy(), SpecOptions::off());
            let mut prompt = None;
            for p0 in [
                [1u32, 72, 101, 108, 9, 33, 72, 101],
                [7, 50, 60, 70, 80, 90, 100, 110],
            ] {
                let first = gen(&mut e, &p0, &greedy_off(12));
                let p: Vec<u32> = p0.iter().chain(&first.tokens).chain(&p0).copied().collect();
                if gen(&mut e, &p, &greedy_off(12)).tokens.len() >= 6 {
                    prompt = Some(p);
                    break;
                }
            }
            let prompt = prompt.unwrap_or_else(|| panic!("{what}: no prompt gets an answer"));
            let mut drafted = 0;
            let mut ends = 0;
            for gpu_pick in [true, false] {
                e.gpu.caps.gpu_sampling = gpu_pick;
                for (max_tokens, draft_max) in [(12, 3), (100, 8)] {
                    let plain = gen(
                        &mut e,
                        &prompt,
                        &opts(max_tokens, SamplingParams::greedy(), SpecOptions::off()),
                    );
                    let spec = gen(
                        &mut e,
                        &prompt,
                        &opts(max_tokens, SamplingParams::greedy(), ngram(draft_max)),
                    );
                    let how = format!("{what}, gpu pick {gpu_pick}, max_tokens {max_tokens}, draft_max {draft_max}");
                    assert_eq!(spec.tokens, plain.tokens, "{how}: ids");
                    assert_eq!(spec.finish, plain.finish, "{how}: finish");
                    assert_eq!(plain.spec.drafted, 0, "{how}: off drafts nothing");
                    if max_tokens == 100 && spec.finish == FinishReason::Length {
                        assert_eq!(e.cache_len(), 56, "{how}: the context's end");
                        ends += 1;
                    }
                    eprintln!(
                        "{how}: {:?} {:?} {:?}",
                        spec.spec,
                        spec.finish,
                        &spec.tokens[..spec.tokens.len().min(16)]
                    );
                    drafted += spec.spec.drafted;
                }
            }
            assert!(drafted > 0, "{what}: nothing was drafted");
            if arch != "gpt2" {
                // (the tiny GPT-2 ends its answers with its end-of-text token)
                assert_eq!(ends, 2, "{what}: generation reached the context's end");
            }
        }
    }
}

/// With sampling, speculation keeps the distribution: the tenth token of answers drawn over many
/// seeds with and without speculation (drafts are checked on the way), a two-sample chi-squared
/// test over its values.
#[test]
fn sampled_speculation_keeps_the_distribution() {
    let load = LoadOptions {
        ctx: Some(64),
        ..Default::default()
    };
    let mut e = Engine::load(
        Path::new("tests/fixtures/arch/qwen2"),
        &load,
        &mut |_, _| {},
    )
    .unwrap();
    // a high temperature over the 3 best tokens: a few outcomes per position, and answers that
    // repeat themselves, so drafts are proposed; the outcome compared is the last token's
    let prompt: Vec<u32> = vec![1, 72, 101, 108, 9, 33, 72, 101, 108, 9, 33, 72, 101];
    let runs = 300;
    let mut counts = std::collections::HashMap::<u32, [u64; 2]>::new();
    let mut checked = 0;
    for (side, spec) in [SpecOptions::off(), ngram(4)].into_iter().enumerate() {
        for seed in 0..runs {
            let sampling = SamplingParams {
                temperature: 1.5,
                top_k: 3,
                top_p: 1.0,
                min_p: 0.0,
                seed: Some(seed + 1000 * side as u64),
                ..SamplingParams::default()
            };
            let g = gen(&mut e, &prompt, &opts(10, sampling, spec));
            checked += g.spec.drafted;
            let last = g.tokens.last().copied().unwrap_or(u32::MAX);
            counts.entry(last).or_default()[side] += 1;
        }
    }
    assert!(
        checked > runs as usize / 4,
        "drafts were checked: {checked}"
    );
    // pool outcomes seen fewer than 10 times in all into one cell
    let mut cells: Vec<[u64; 2]> = Vec::new();
    let mut rare = [0u64; 2];
    for c in counts.values() {
        if c[0] + c[1] < 10 {
            rare[0] += c[0];
            rare[1] += c[1];
        } else {
            cells.push(*c);
        }
    }
    if rare[0] + rare[1] > 0 {
        cells.push(rare);
    }
    let n = runs as f64;
    let chi2: f64 = cells
        .iter()
        .map(|c| {
            let total = (c[0] + c[1]) as f64;
            let expect = total / 2.0; // equal sample sizes
            [c[0], c[1]]
                .iter()
                .map(|&o| (o as f64 - expect).powi(2) / expect)
                .sum::<f64>()
        })
        .sum();
    let dof = cells.len().saturating_sub(1).max(1) as f64;
    // the 0.999 quantile of chi-squared is below dof + 3.1 sqrt(2 dof) + 6 for these dof
    let limit = dof + 3.1 * (2.0 * dof).sqrt() + 6.0;
    eprintln!(
        "chi2 {chi2:.1} over {} cells (limit {limit:.1}), {n} runs each, {checked} drafted",
        cells.len()
    );
    assert!(
        cells.len() >= 3,
        "the draws spread over a few outcomes: {cells:?}"
    );
    assert!(
        chi2 < limit,
        "chi-squared {chi2:.1} over {dof} dof: the distributions differ"
    );
}

/// SmolLM2 asked to repeat a paragraph: the same greedy text with and without speculation, most
/// drafts accepted, and fewer passes than tokens.
#[test]
fn smollm2_copies_with_most_drafts_accepted() {
    if std::env::var_os("FLINT_SKIP_MODEL_TESTS").is_some() || !Path::new(MODEL).exists() {
        eprintln!("skipped: {MODEL} missing");
        return;
    }
    let mut e = Engine::load(MODEL, &LoadOptions::default(), &mut |_, _| {}).unwrap();
    let text = "The lighthouse keeper climbed the spiral stairs every evening at dusk, \
                carrying a can of oil and a cloth to polish the great lens.";
    let msgs = [flint::chat::ChatMessage::user(format!(
        "Repeat this sentence exactly: {text}"
    ))];
    let tok = &e.tokenizer;
    let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
    let template = e.chat_template.clone().expect("SmolLM2's chat template");
    let prompt_text =
        flint::chat::ChatTemplate::new(&template, &piece(tok.bos_id()), &piece(tok.eos_id()))
            .unwrap()
            .render(&msgs, true)
            .unwrap();
    let prompt = e.tokenizer.encode(&prompt_text, false).unwrap();
    let plain = gen(
        &mut e,
        &prompt,
        &opts(40, SamplingParams::greedy(), SpecOptions::off()),
    );
    let spec = gen(
        &mut e,
        &prompt,
        &opts(40, SamplingParams::greedy(), ngram(8)),
    );
    eprintln!("{:?}\n{:?}", plain.text, spec.spec);
    assert_eq!(spec.text, plain.text);
    assert!(plain.text.contains("spiral stairs"), "{:?}", plain.text);
    assert!(spec.spec.acceptance() > 0.5, "{:?}", spec.spec);
    assert!(spec.spec.passes < spec.tokens.len() / 2, "{:?}", spec.spec);
}

/// `--spec draft`: a second model with the same vocabulary drafts. The tiny qwen2 drafting for
/// itself (every draft accepted) and the tiny qwen3 drafting for it (another model, the same
/// tokens) give the ids decoding without speculation gives; a draft model with another
/// vocabulary is refused, and `draft` without one is a clear error.
#[test]
fn draft_model_gives_the_same_ids() {
    let dir = Path::new("tests/fixtures/arch");
    let load = LoadOptions {
        ctx: Some(64),
        ..Default::default()
    };
    let mut e = Engine::load(dir.join("qwen2"), &load, &mut |_, _| {}).unwrap();
    let prompt: Vec<u32> = vec![1, 72, 101, 108, 9, 33, 72];
    let draft = SpecOptions {
        mode: SpecMode::Draft,
        draft_max: 4,
        draft_min: 1,
    };
    let err = e
        .generate(
            &prompt,
            &opts(8, SamplingParams::greedy(), draft),
            &mut |_| true,
        )
        .unwrap_err();
    assert!(err.to_string().contains("needs a draft model"), "{err}");
    let plain = gen(
        &mut e,
        &prompt,
        &opts(40, SamplingParams::greedy(), SpecOptions::off()),
    );
    for (drafter, all_kept) in [("qwen2", true), ("qwen3", false)] {
        e.load_draft(dir.join(drafter), &mut |_, _| {}).unwrap();
        let spec = gen(&mut e, &prompt, &opts(40, SamplingParams::greedy(), draft));
        eprintln!("{drafter} drafting: {:?}", spec.spec);
        assert_eq!(spec.tokens, plain.tokens, "{drafter} drafting: ids");
        assert_eq!(spec.finish, plain.finish);
        assert!(spec.spec.drafted > 0, "{drafter}: nothing drafted");
        if all_kept {
            assert_eq!(spec.spec.accepted, spec.spec.drafted, "drafting for itself");
            assert!(spec.spec.passes * 3 < spec.tokens.len(), "{:?}", spec.spec);
        }
    }
    if Path::new(MODEL).exists() && std::env::var_os("FLINT_SKIP_MODEL_TESTS").is_none() {
        let err = e.load_draft(MODEL, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("vocabulary"), "{err}");
    }
}
