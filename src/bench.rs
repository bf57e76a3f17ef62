//! Throughput measurement shaped like llama.cpp's `llama-bench`: a prefill test (`pp512`: one
//! prompt of random token ids) and a decode test (`tg128`: greedy steps of one token; with the
//! pick made on the GPU, overlapped as generation runs them unless `FLINT_NO_OVERLAP` is set),
//! each repeated, optionally after filling the cache with `n_depth` tokens, plus the adapter's copy
//! bandwidth and the decode's weight streaming rate as a fraction of it (the roofline ratio).
//!
//! One implementation for both targets: `flint bench` (native, blocking on it) and the web
//! package's `engine.bench()` (wasm, awaiting the GPU) run [`run`] and print or return the same
//! [`BenchReport`], so a browser tab's figures line up with the native binary's.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use crate::format::hf::HfModel;
use crate::format::{DType, ModelFile};
use crate::gpu::{Gpu, GpuCounters, KernelTime};
use crate::ops::copy::BufferCopy;
use web_time::Instant;

/// What to measure: like llama-bench, every prefill length and every decode length, each at
/// every depth (depth first: `pp512`, `tg128`, `pp512 @ d1024`, `tg128 @ d1024`).
#[derive(Clone, Debug)]
pub struct BenchSpec {
    /// Prompt tokens of each prefill test `ppN` (0 is skipped).
    pub n_prompt: Vec<usize>,
    /// Greedy decode steps of each decode test `tgN` (0 is skipped).
    pub n_gen: Vec<usize>,
    /// Tokens put in the KV cache (untimed) before every repetition of each test.
    pub n_depth: Vec<usize>,
    /// Timed repetitions of each test.
    pub reps: usize,
    /// Run each test once untimed first (pipeline compilation, first-touch of buffers).
    pub warmup: bool,
}

impl BenchSpec {
    /// Positions the tests need: the deepest depth, then the longest prompt, or the one-token
    /// prompt and the most decoded tokens.
    pub fn ctx_needed(&self) -> usize {
        let most = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
        most(&self.n_depth) + most(&self.n_prompt).max(most(&self.n_gen) + 1)
    }

    /// Refuses a spec that measures nothing, naming the fields as Rust does.
    pub fn check(&self) -> Result<()> {
        self.check_named(&SpecNames::RUST)
    }

    /// Refuses a spec that measures nothing, naming the fields as `names` says (the CLI's flags,
    /// the web's options).
    pub fn check_named(&self, names: &SpecNames) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(format!("bench: {msg}")));
        if self.reps == 0 {
            return bad(format!("{} must be at least 1", names.reps));
        }
        if self.n_prompt.iter().chain(&self.n_gen).all(|&n| n == 0) {
            return bad(format!(
                "nothing to measure: {} and {} are all 0",
                names.n_prompt, names.n_gen
            ));
        }
        if self.n_depth.is_empty() {
            return bad(format!("no {} given (0 for an empty cache)", names.n_depth));
        }
        Ok(())
    }
}

/// What [`BenchSpec`]'s fields are called where a spec came from, for its error messages.
pub struct SpecNames {
    pub n_prompt: &'static str,
    pub n_gen: &'static str,
    pub n_depth: &'static str,
    pub reps: &'static str,
}

impl SpecNames {
    /// The fields' own names.
    pub const RUST: SpecNames = SpecNames {
        n_prompt: "n_prompt",
        n_gen: "n_gen",
        n_depth: "n_depth",
        reps: "reps",
    };
    /// `flint bench`'s flags.
    pub const CLI: SpecNames = SpecNames {
        n_prompt: "-p",
        n_gen: "-n",
        n_depth: "-d",
        reps: "-r/--repetitions",
    };
    /// The web `engine.bench()` options.
    pub const WEB: SpecNames = SpecNames {
        n_prompt: "nPrompt",
        n_gen: "nGen",
        n_depth: "nDepth",
        reps: "repetitions",
    };
}

/// Sizes of a model file that the benchmark reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ModelSizes {
    /// Bytes of every tensor in the file.
    pub file_bytes: u64,
    /// Parameters (elements of every tensor).
    pub params: u64,
    /// The weight type holding the most bytes (what llama-bench calls the model's type).
    pub quant: String,
    /// Bytes one decode step streams from the weights in flint's GPU layout: every matrix once
    /// (the output head, which is the embedding table when tied), every norm vector, and one row
    /// of an untied embedding table. The KV cache and activations are not counted.
    pub decode_weight_bytes: u64,
}

/// Tensor facts [`ModelSizes`] needs, from either format's directory.
struct TensorFacts {
    name: String,
    dtype: Option<DType>,
    type_name: String,
    /// Row length first (ggml order).
    dims: Vec<u64>,
    file_bytes: u64,
}

impl ModelSizes {
    /// Sizes of an opened model file.
    pub fn of(file: &ModelFile) -> ModelSizes {
        match file {
            ModelFile::Gguf(g) => Self::of_gguf(g),
            ModelFile::Hf(h) => Self::of_hf(h),
        }
    }

    /// Sizes from a GGUF header (the web loader has only the header in memory).
    pub fn of_gguf(g: &Gguf) -> ModelSizes {
        let tensors = g.tensors.iter().map(|t| TensorFacts {
            name: t.name.clone(),
            dtype: DType::from_ggml_id(t.ggml_type),
            type_name: crate::format::dtype::ggml_type_layout(t.ggml_type)
                .map(|l| l.name.to_string())
                .unwrap_or_else(|| format!("type{}", t.ggml_type)),
            dims: t.dims.clone(),
            file_bytes: t.n_bytes,
        });
        Self::from_facts(tensors, "token_embd.weight", "output.weight")
    }

    /// Sizes of a Hugging Face folder's safetensors.
    pub fn of_hf(h: &HfModel) -> ModelSizes {
        let tensors = h
            .tensors
            .names()
            .filter_map(|n| h.tensors.get(n))
            .map(|(_, t)| TensorFacts {
                name: t.name.clone(),
                dtype: t.flint_dtype().ok(),
                type_name: t.dtype.clone(),
                dims: t.shape.iter().rev().copied().collect(),
                file_bytes: t.n_bytes,
            });
        Self::from_facts(tensors, "model.embed_tokens.weight", "lm_head.weight")
    }

    fn from_facts(
        tensors: impl Iterator<Item = TensorFacts>,
        embd: &str,
        head: &str,
    ) -> ModelSizes {
        let tensors: Vec<TensorFacts> = tensors.collect();
        let tied = !tensors.iter().any(|t| t.name == head);
        let mut by_type: std::collections::BTreeMap<&str, u64> = Default::default();
        let (mut file_bytes, mut params, mut decode) = (0u64, 0u64, 0u64);
        for t in &tensors {
            file_bytes += t.file_bytes;
            let elems: u64 = t.dims.iter().product();
            params += elems;
            let cols = t.dims.first().copied().unwrap_or(1) as usize;
            let rows = elems / (cols.max(1) as u64);
            let gpu_row_bytes = match (t.dims.len(), t.dtype) {
                (2.., Some(d)) => {
                    *by_type.entry(&t.type_name).or_default() += t.file_bytes;
                    // the words the kernels read (row padding is not read)
                    crate::ops::quant::gpu_row_data_words(d, cols) as u64 * 4
                }
                // vectors are uploaded as f32
                _ => cols as u64 * 4,
            };
            decode += if t.name == embd && !tied {
                gpu_row_bytes
            } else {
                gpu_row_bytes * rows
            };
        }
        let quant = by_type
            .iter()
            .max_by_key(|(_, b)| **b)
            .map(|(t, _)| t.to_string())
            .unwrap_or_else(|| "?".into());
        ModelSizes {
            file_bytes,
            params,
            quant,
            decode_weight_bytes: decode,
        }
    }
}

/// Tokens per second of each repetition, and their min / median / max.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TestResult {
    /// llama-bench's name: `pp512`, `tg128`, `tg128 @ d4096`.
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens in the KV cache before the test.
    pub n_depth: usize,
    pub min_tps: f64,
    pub median_tps: f64,
    pub max_tps: f64,
    pub samples_tps: Vec<f64>,
    /// Host microseconds per token spent recording and submitting GPU work (from each command
    /// encoder's creation to its submit, readbacks' copies included, waits excluded), over the
    /// timed runs. On `--backend noop` it is nearly all of a token's time.
    pub host_us_per_token: f64,
    /// The part of `host_us_per_token` spent submitting: finishing the command buffers (wgpu
    /// validates and encodes the recorded passes there) and `queue.submit`, which on some
    /// drivers (lavapipe) runs the work before it returns, making both figures the token's time.
    pub submit_us_per_token: f64,
    /// Compute dispatches recorded per token over the timed runs.
    pub dispatches_per_token: f64,
    /// Bind groups created per token (misses of the bind-group cache) over the timed runs.
    pub bind_groups_per_token: f64,
}

impl TestResult {
    fn new(
        test: String,
        (n_prompt, n_gen, n_depth): (usize, usize, usize),
        samples_tps: Vec<f64>,
        host: GpuCounters,
        tokens: usize,
    ) -> TestResult {
        let per = |x: f64| x / tokens.max(1) as f64;
        let mut s = samples_tps.clone();
        s.sort_by(f64::total_cmp);
        let median = if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        TestResult {
            test,
            n_prompt,
            n_gen,
            n_depth,
            min_tps: s[0],
            median_tps: median,
            max_tps: s[s.len() - 1],
            samples_tps,
            host_us_per_token: per(host.record_ns as f64 / 1e3),
            submit_us_per_token: per(host.submit_ns as f64 / 1e3),
            dispatches_per_token: per(host.dispatches as f64),
            bind_groups_per_token: per(host.bind_groups as f64),
        }
    }
}

/// The whole measurement: the model, the adapter and how flint ran on it, the tests, and the
/// roofline figures. `flint bench --json` prints it; the web `engine.bench()` returns it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub flint_version: String,
    pub model: String,
    pub architecture: String,
    pub quant: String,
    pub model_bytes: u64,
    pub params: u64,
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub batch: usize,
    pub ctx: usize,
    pub repetitions: usize,
    /// `cpu` (the rows kernels) or `gpu` (see `GpuOptions::rows_kernels`).
    pub kernel_layout: String,
    /// Where decode's greedy pick runs: `gpu` (top-k with k = 1, 8 bytes read back per token)
    /// or `cpu` (the whole row of logits read back).
    pub sampling: String,
    /// KV cache precision ([`crate::gpu::Caps::kv_cache_label`]).
    pub kv_cache: String,
    /// Prefill matmul operands ([`crate::gpu::Caps::matmul_label`]).
    pub matmul: String,
    pub tests: Vec<TestResult>,
    /// Weight bytes one decode step reads (flint's GPU layout).
    pub decode_weight_bytes_per_token: u64,
    /// decode_weight_bytes_per_token x median tok/s of the (first) decode test at the smallest
    /// depth.
    pub decode_weight_gbps: Option<f64>,
    /// Best of the copy kernel's runs, counting bytes read + bytes written.
    pub copy_gbps: f64,
    pub copy_bytes: u64,
    /// decode_weight_gbps / copy_gbps.
    pub roofline_ratio: Option<f64>,
    /// GPU time per kernel in each test, where the device was made with a profiler (native
    /// `--profile`); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<TestProfile>,
    /// Speculative decoding's tests ([`run_spec`]), where prompts were given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spec: Vec<SpecResult>,
}

/// One speculative-decoding test: the greedy answer to one prompt with speculation off and on
/// (each the median of the repetitions, after a warm-up of each).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpecResult {
    /// `spec <name>` (a prompt file's stem in `benches/spec/`).
    pub test: String,
    pub n_prompt: usize,
    /// Tokens generated (the same with and without speculation when `same_text`).
    pub n_gen: usize,
    /// Decode tokens per second without speculation (the `generated N tokens at X tok/s` figure).
    pub off_tps: f64,
    /// The same with speculation: the effective decode rate.
    pub on_tps: f64,
    /// on_tps / off_tps.
    pub speedup: f64,
    /// Checking passes, drafted tokens and accepted tokens of one run with speculation.
    pub passes: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// accepted / drafted.
    pub acceptance: f64,
    /// Whether both answers are the same text.
    pub same_text: bool,
}

/// `reps` timed generations after a warm-up: the median decode rate and the last generation.
async fn spec_runs(
    engine: &mut Engine,
    prompt: &[u32],
    o: &crate::engine::GenerateOptions,
    reps: usize,
) -> Result<(f64, crate::engine::Generation)> {
    let mut tps = Vec::new();
    let mut last = None;
    for _ in 0..=reps.max(1) {
        engine.reset();
        let g = engine.generate_async(prompt, o, &mut |_| true).await?;
        tps.push(g.decode_tps());
        last = Some(g);
    }
    tps.remove(0); // the warm-up
    tps.sort_by(f64::total_cmp);
    let g = last.ok_or_else(|| Error::InvalidArgument("no run".into()))?;
    Ok((tps[tps.len() / 2], g))
}

/// Runs one speculative test: `prompt` (token ids) answered greedily, up to `max_tokens`,
/// without speculation and with `spec`, `reps` times each after a warm-up; the decode rates are
/// medians.
pub async fn run_spec(
    engine: &mut Engine,
    name: &str,
    prompt: &[u32],
    max_tokens: usize,
    spec: crate::spec::SpecOptions,
    reps: usize,
) -> Result<SpecResult> {
    use crate::engine::GenerateOptions;
    use crate::sampling::SamplingParams;
    let opts = |spec| GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        spec,
        ..Default::default()
    };
    let off_opts = opts(crate::spec::SpecOptions::off());
    let (off_tps, off) = spec_runs(engine, prompt, &off_opts, reps).await?;
    let (on_tps, on) = spec_runs(engine, prompt, &opts(spec), reps).await?;
    engine.reset();
    let s = on.spec;
    Ok(SpecResult {
        test: format!("spec {name}"),
        n_prompt: prompt.len(),
        n_gen: on.tokens.len(),
        off_tps,
        on_tps,
        speedup: on_tps / off_tps.max(1e-9),
        passes: s.passes,
        drafted: s.drafted,
        accepted: s.accepted,
        acceptance: s.acceptance(),
        same_text: on.text == off.text && on.tokens == off.tokens,
    })
}

/// Where one test's GPU time went, per token over the timed runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TestProfile {
    pub test: String,
    pub tokens: usize,
    /// Slowest kernel first.
    pub kernels: Vec<KernelShare>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelShare {
    pub kernel: String,
    pub ms_per_token: f64,
    pub dispatches_per_token: f64,
    pub share: f64,
}

impl TestProfile {
    fn new(test: String, tokens: usize, times: Vec<KernelTime>) -> Option<TestProfile> {
        if times.is_empty() {
            return None;
        }
        let total: f64 = times.iter().map(|t| t.seconds).sum();
        let per = tokens.max(1) as f64;
        let kernels = times
            .into_iter()
            .map(|t| KernelShare {
                ms_per_token: t.seconds * 1e3 / per,
                dispatches_per_token: t.calls as f64 / per,
                share: if total > 0.0 { t.seconds / total } else { 0.0 },
                kernel: t.kernel,
            })
            .collect();
        Some(TestProfile {
            test,
            tokens,
            kernels,
        })
    }
}

/// One finished repetition, for progress output: test name, run (1-based), runs, tokens/s.
pub type RunDone<'a> = &'a mut dyn FnMut(&str, usize, usize, f64);

/// Runs `spec` on `engine` (whose context must hold [`BenchSpec::ctx_needed`] positions) and the
/// copy bandwidth measurement; `model` names the file in the report. The cache is left empty.
pub async fn run(
    engine: &mut Engine,
    spec: &BenchSpec,
    sizes: &ModelSizes,
    model: String,
    on_run: RunDone<'_>,
) -> Result<BenchReport> {
    // (no tests at all is the caller's to refuse: `flint bench --spec-prompts` runs none)
    if spec.reps == 0 || spec.n_depth.is_empty() {
        spec.check()?;
    }
    if spec.ctx_needed() > engine.ctx {
        return Err(Error::InvalidArgument(format!(
            "bench: the tests need a context of {} tokens, the engine has {}: load it with a \
             larger context",
            spec.ctx_needed(),
            engine.ctx
        )));
    }
    let vocab = engine.tokenizer.vocab_size().max(1) as u32;
    let bos = engine.tokenizer.bos_id().unwrap_or(0);
    // llama-bench's prompts and depths: random token ids (fixed seed, so runs compare); a depth
    // of d is the first d of one sequence
    let most = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let (prompt, depth): (Vec<u32>, Vec<u32>) = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
        let mut ids = |n| (0..n).map(|_| rng.random_range(0..vocab)).collect();
        (ids(most(&spec.n_prompt)), ids(most(&spec.n_depth)))
    };
    let runs = spec.reps + usize::from(spec.warmup);
    // the timed runs are the last `reps`
    let timed = |run: usize| run + spec.reps >= runs;
    let mut tests = Vec::new();
    let mut profiles = Vec::new();
    for &d in &spec.n_depth {
        let depth = &depth[..d];
        let name = |test: String| match d {
            0 => test,
            d => format!("{test} @ d{d}"),
        };
        let prefills = spec.n_prompt.iter().map(|&n| (n, 0));
        let decodes = spec.n_gen.iter().map(|&n| (0, n));
        for (n_prompt, n_gen) in prefills.chain(decodes).filter(|&(p, g)| p + g > 0) {
            let test = name(match n_gen {
                0 => format!("pp{n_prompt}"),
                n => format!("tg{n}"),
            });
            let mut tps = Vec::new();
            // the host's work over the timed runs' timed stretches
            let mut host = GpuCounters::default();
            for run in 0..runs {
                fill(engine, depth).await?;
                // a decode test starts from a one-token prompt, untimed
                let mut tok = match n_gen {
                    0 => bos,
                    _ => greedy_step(engine, bos).await?,
                };
                if run + spec.reps == runs {
                    engine.gpu.take_profile(); // the warm-up run's kernels are not counted
                }
                let c0 = engine.gpu.counters();
                let t0 = Instant::now();
                if n_prompt > 0 {
                    engine.feed_async(&prompt[..n_prompt]).await?; // the logits: the GPU is done
                }
                if engine.gpu.caps.gpu_sampling {
                    // as generation runs them: overlapped unless `Engine::overlap` is off
                    engine.greedy_steps_async(tok, n_gen).await?;
                } else {
                    for _ in 0..n_gen {
                        tok = greedy_step(engine, tok).await?;
                    }
                }
                let r = (n_prompt + n_gen) as f64 / t0.elapsed().as_secs_f64();
                if timed(run) {
                    tps.push(r);
                    let c = engine.gpu.counters().since(c0);
                    host.record_ns += c.record_ns;
                    host.submit_ns += c.submit_ns;
                    host.dispatches += c.dispatches;
                    host.bind_groups += c.bind_groups;
                    host.submits += c.submits;
                }
                on_run(&test, run + 1, runs, r);
            }
            let times = engine.gpu.take_profile();
            let tokens = (n_prompt + n_gen) * spec.reps;
            profiles.extend(TestProfile::new(test.clone(), tokens, times));
            tests.push(TestResult::new(
                test,
                (n_prompt, n_gen, d),
                tps,
                host,
                tokens,
            ));
        }
    }
    engine.reset();
    let (copy_gbps, copy_bytes) = copy_bandwidth(&engine.gpu, spec.reps).await?;
    // weight streaming of the decode test whose cache is the emptiest (its time is the weights')
    let decode_weight_gbps = tests
        .iter()
        .filter(|t| t.n_gen > 0)
        .min_by_key(|t| t.n_depth)
        .map(|t| sizes.decode_weight_bytes as f64 * t.median_tps / 1e9);
    let caps = &engine.gpu.caps;
    let info = &engine.gpu.info;
    Ok(BenchReport {
        flint_version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        architecture: engine.model.info().architecture,
        quant: sizes.quant.clone(),
        model_bytes: sizes.file_bytes,
        params: sizes.params,
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        batch: engine.batch,
        ctx: engine.ctx,
        repetitions: spec.reps,
        kernel_layout: if caps.rows_kernels { "cpu" } else { "gpu" }.to_string(),
        sampling: if caps.gpu_sampling { "gpu" } else { "cpu" }.to_string(),
        kv_cache: caps.kv_cache_label().to_string(),
        matmul: caps.matmul_label(),
        tests,
        decode_weight_bytes_per_token: sizes.decode_weight_bytes,
        decode_weight_gbps,
        copy_gbps,
        copy_bytes,
        roofline_ratio: decode_weight_gbps.map(|g| g / copy_gbps),
        profiles,
        spec: Vec::new(),
    })
}

/// Empties the cache and puts the depth's tokens in it.
async fn fill(engine: &mut Engine, depth: &[u32]) -> Result<()> {
    engine.reset();
    if !depth.is_empty() {
        engine.feed_async(depth).await?;
    }
    Ok(())
}

/// One greedy decode step, picking the token where the engine's sampling runs (as generation
/// does): on the GPU (top-1, 8 bytes read back) or on the CPU (the whole row read back).
async fn greedy_step(engine: &mut Engine, tok: u32) -> Result<u32> {
    Ok(if engine.gpu.caps.gpu_sampling {
        let best = engine.feed_top_k_async(&[tok], 1).await?;
        best.first().map_or(0, |c| c.0)
    } else {
        argmax(&engine.feed_async(&[tok]).await?)
    })
}

/// Largest element's index (greedy decoding).
fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0 as u32
}

/// Copy bandwidth of the adapter in GB/s (read + written bytes) and the bytes copied: the best of
/// `reps` timings of `shaders/copy.wgsl` over the largest buffer one binding allows (at most
/// 256 MiB natively, 64 MiB in a browser tab), for a few launch shapes (one word per invocation,
/// or a grid-stride loop over 1024 or 64 workgroups: CPU adapters run few workgroups much
/// faster), best shape wins. Each timing ends with a 4-byte readback, which waits for the GPU.
pub async fn copy_bandwidth(gpu: &Gpu, reps: usize) -> Result<(f64, u64)> {
    let most: u64 = if cfg!(target_arch = "wasm32") {
        64 << 20
    } else {
        256 << 20
    };
    let bytes = most.min(gpu.caps.max_binding).min(gpu.caps.max_buffer) & !15;
    let src = gpu.zeros("copy.src", bytes)?;
    // Not zeros: some GPUs compress uniform memory. Written in pieces, not held whole.
    const PIECE: u64 = 4 << 20;
    for at in (0..bytes).step_by(PIECE as usize) {
        let words: Vec<u32> = (at / 4..(at + PIECE).min(bytes) / 4)
            .map(|i| (i as u32).wrapping_mul(2654435761))
            .collect();
        gpu.queue
            .write_buffer(&src, at, bytemuck::cast_slice(&words));
    }
    let dst = gpu.zeros("copy.dst", bytes)?;
    const PER_SUBMIT: usize = 2;
    let mut best = f64::MAX;
    for max_workgroups in [None, Some(1024), Some(64)] {
        let op = BufferCopy {
            bytes,
            max_workgroups,
        };
        for rep in 0..=reps {
            let mut enc = gpu.encoder();
            for _ in 0..PER_SUBMIT {
                op.encode(gpu, &mut enc, &src, &dst)?;
            }
            let t0 = Instant::now();
            gpu.submit(enc);
            gpu.read_async(&dst, 0, 4).await?;
            // the first submission also compiles and first-touches: untimed
            if rep > 0 {
                best = best.min(t0.elapsed().as_secs_f64() / PER_SUBMIT as f64);
            }
        }
    }
    gpu.check("copy bandwidth")?;
    Ok((2.0 * bytes as f64 / best / 1e9, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        let host = GpuCounters {
            dispatches: 300,
            bind_groups: 6,
            record_ns: 9_000_000,
            submit_ns: 2_400_000,
            submits: 3,
        };
        let t = TestResult::new("pp8".into(), (8, 0, 0), vec![3.0, 1.0, 2.0], host, 24);
        assert_eq!((t.min_tps, t.median_tps, t.max_tps), (1.0, 2.0, 3.0));
        assert_eq!(
            (
                t.host_us_per_token,
                t.submit_us_per_token,
                t.dispatches_per_token,
                t.bind_groups_per_token
            ),
            (375.0, 100.0, 12.5, 0.25)
        );
        let t = TestResult::new("tg2".into(), (0, 2, 0), vec![4.0, 1.0, 2.0, 3.0], host, 8);
        assert_eq!((t.min_tps, t.median_tps, t.max_tps), (1.0, 2.5, 4.0));
        assert_eq!(t.samples_tps, [4.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn spec_is_checked() {
        let s = BenchSpec {
            n_prompt: vec![0],
            n_gen: vec![0, 0],
            n_depth: vec![0],
            reps: 1,
            warmup: true,
        };
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("nothing to measure"));
        let s = BenchSpec {
            n_prompt: vec![8],
            reps: 0,
            ..s
        };
        assert!(s.check().unwrap_err().to_string().contains("reps must be"));
        let web = s.check_named(&SpecNames::WEB).unwrap_err().to_string();
        assert_eq!(
            web,
            "invalid argument: bench: repetitions must be at least 1"
        );
        let s = BenchSpec { reps: 1, ..s };
        s.check().unwrap();
        let s = BenchSpec {
            n_depth: vec![],
            ..s
        };
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("no n_depth given"));
        let s = BenchSpec {
            n_depth: vec![0, 100, 50],
            n_prompt: vec![8, 0],
            n_gen: vec![16, 4],
            ..s
        };
        assert_eq!(s.ctx_needed(), 117);
    }
}
