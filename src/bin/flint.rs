//! `flint`: run, chat with, inspect and score GGUF language models on any wgpu GPU.

use clap::{Args, Parser, Subcommand};
use flint::chat::{ChatMessage, ChatTemplate};
use flint::engine::{Engine, GenerateOptions, LoadOptions};
use flint::format::ModelFile;
use flint::gpu::{Gpu, GpuOptions};
use flint::sampling::SamplingParams;
use flint::{Error, Result};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The model scripts/setup.sh fetches.
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Parser)]
#[command(
    name = "flint",
    version,
    about = "Portable LLM inference on WGSL compute shaders (wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Raw completion of a prompt (no chat template); streams only the generated text to stdout.
    Run(RunArgs),
    /// Multi-turn chat through the model's own chat template (reads lines from stdin).
    Chat(ChatArgs),
    /// Print the model's architecture, hyper-parameters, tensors, and the adapter and kernels chosen.
    Info(InfoArgs),
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity(PplArgs),
    /// OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models, /health).
    Serve(ServeArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// GGUF model file (default: the model scripts/setup.sh fetched).
    #[arg(short = 'm', long = "model", env = "FLINT_MODEL")]
    model: Option<PathBuf>,
    /// Context length (KV cache positions); default: the model's, at most 4096.
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    /// Most tokens per forward pass in prefill.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// GPU backend: vulkan, metal, dx12, gl (env FLINT_BACKEND).
    #[arg(long)]
    backend: Option<String>,
    /// Adapter index or name substring (env FLINT_ADAPTER; see `flint info --adapters`).
    #[arg(long)]
    adapter: Option<String>,
    /// Do not use subgroup kernels even where the adapter supports them.
    #[arg(long)]
    no_subgroups: bool,
    /// Do not show the loading progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct SampleArgs {
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    max_tokens: usize,
    /// Temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Random seed: the same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop at this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// List every adapter wgpu sees, with backend, features and limits, and exit.
    #[arg(long)]
    adapters: bool,
}

#[derive(Args)]
struct PplArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Stop after this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 exposes it to the network).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every request (env FLINT_API_KEY).
    #[arg(long, env = "FLINT_API_KEY")]
    api_key: Option<String>,
    /// Most requests queued or running at once; more get 429 with Retry-After.
    #[arg(long, default_value_t = 16)]
    max_concurrency: usize,
    /// Requests decoded together in one batched forward pass per token (continuous batching);
    /// each holds its own KV cache of the full context.
    #[arg(long, default_value_t = flint::serve::worker::DEFAULT_SLOTS)]
    parallel: usize,
    /// Model id clients name in `model` (default: the file name without .gguf).
    #[arg(long)]
    model_id: Option<String>,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = flint::serve::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Info(a) => info(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Serve(a) => serve(a),
    };
    if let Err(e) = result {
        eprintln!("flint: error: {e}");
        std::process::exit(1);
    }
}

impl ModelArgs {
    fn path(&self) -> Result<PathBuf> {
        let p = self
            .model
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
        if !p.exists() {
            let hint = if self.model.is_none() {
                " (run scripts/setup.sh to fetch the default model)"
            } else {
                ""
            };
            return Err(Error::InvalidArgument(format!(
                "model file {} not found{hint}",
                p.display()
            )));
        }
        Ok(p)
    }

    fn gpu_options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            no_subgroups: self.no_subgroups,
            ..Default::default()
        }
    }

    fn load(&self, ctx: Option<usize>) -> Result<Engine> {
        let path = self.path()?;
        let opts = LoadOptions {
            gpu: self.gpu_options(),
            ctx: ctx.or(self.ctx),
            batch: self.batch,
        };
        let bar = if self.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "loading {bar:30} {binary_bytes}/{binary_total_bytes} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        };
        let engine = Engine::load(&path, &opts, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        let engine = engine?;
        if !self.quiet {
            eprintln!(
                "flint: {} on {} in {:.2} s (context {})",
                path.display(),
                engine.gpu.describe(),
                engine.load_time.as_secs_f64(),
                engine.ctx
            );
        }
        Ok(engine)
    }
}

impl SampleArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
                ..SamplingParams::default()
            },
            stop: self.stop.clone(),
        }
    }
}

fn print_stats(g: &flint::engine::Generation) {
    eprintln!(
        "\nflint: prompt {} tokens ({} computed) at {:.1} tok/s, generated {} tokens at {:.1} tok/s",
        g.prompt_tokens,
        g.prefilled_tokens,
        g.prefill_tps(),
        g.tokens.len(),
        g.decode_tps()
    );
}

fn run(a: RunArgs) -> Result<()> {
    let mut engine = a.model.load(None)?;
    let prompt = engine.tokenizer.encode(&a.prompt, true)?;
    let opts = a.sample.options();
    let mut stdout = std::io::stdout();
    let g = engine.generate(&prompt, &opts, &mut |piece| {
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
        true
    })?;
    println!();
    if !a.model.quiet {
        eprintln!("flint: load {:.2} s", engine.load_time.as_secs_f64());
        print_stats(&g);
    }
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    let mut engine = a.model.load(None)?;
    let template = engine
        .chat_template
        .clone()
        .ok_or_else(|| Error::Template("the model has no `tokenizer.chat_template`".into()))?;
    let tok = &engine.tokenizer;
    let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
    let template = ChatTemplate::new(&template, &piece(tok.bos_id()), &piece(tok.eos_id()))?;
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let opts = a.sample.options();
    let stdin = std::io::stdin();
    let interactive = std::io::IsTerminal::is_terminal(&stdin);
    let mut stdout = std::io::stdout();
    loop {
        if interactive {
            eprint!("> ");
        }
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("stdin", e))?
            == 0
        {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            continue;
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.to_string(),
        });
        let rendered = template.render(&messages, true)?;
        let prompt = engine.tokenizer.encode(&rendered, false)?;
        let g = engine.generate(&prompt, &opts, &mut |p| {
            let _ = stdout.write_all(p.as_bytes());
            let _ = stdout.flush();
            true
        })?;
        println!();
        if !a.model.quiet {
            print_stats(&g);
        }
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: g.text.trim().to_string(),
        });
    }
    Ok(())
}

fn info(a: InfoArgs) -> Result<()> {
    if a.adapters {
        let adapters =
            pollster::block_on(flint::gpu::enumerate_adapters(a.model.backend.as_deref()))?;
        if adapters.is_empty() {
            return Err(Error::NoAdapter(
                "wgpu sees no adapter (install a Vulkan driver, e.g. mesa-vulkan-drivers)".into(),
            ));
        }
        for (i, ad) in adapters.iter().enumerate() {
            let info = ad.get_info();
            let l = ad.limits();
            println!(
                "[{i}] {} ({:?}, {:?}, driver {} {})",
                info.name, info.backend, info.device_type, info.driver, info.driver_info
            );
            println!("    features: {:?}", ad.features());
            println!(
                "    limits: max_storage_buffer_binding_size={} max_buffer_size={} workgroup_storage={} invocations={} workgroups_per_dim={}",
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.max_compute_workgroup_storage_size,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroups_per_dimension
            );
        }
        return Ok(());
    }
    let path = a.model.path()?;
    // (tensor type name -> count, bytes), from either format's directory
    let mut by_type: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    let mut count = |name: &str, bytes: u64| {
        let e = by_type.entry(name.to_string()).or_default();
        e.0 += 1;
        e.1 += bytes;
    };
    match ModelFile::open(&path)? {
        ModelFile::Gguf(g) => {
            println!(
                "file: {} (GGUF v{}, {} tensors, {} metadata keys)",
                path.display(),
                g.version,
                g.tensors.len(),
                g.metadata.len()
            );
            for key in [
                "general.name",
                "general.architecture",
                "tokenizer.ggml.model",
                "tokenizer.ggml.pre",
            ] {
                if let Some(v) = g.get_str(key) {
                    println!("{key}: {v}");
                }
            }
            for t in &g.tensors {
                let name = flint::format::dtype::ggml_type_layout(t.ggml_type)
                    .map(|l| l.name)
                    .unwrap_or("?");
                count(name, t.n_bytes);
            }
        }
        ModelFile::Hf(h) => {
            println!(
                "folder: {} (Hugging Face: config.json + safetensors, architecture {})",
                path.display(),
                h.config.architecture().unwrap_or("?")
            );
            for name in h.tensors.names() {
                if let Some((_, t)) = h.tensors.get(name) {
                    count(&t.dtype, t.n_bytes);
                }
            }
        }
    }
    println!("tensor types:");
    for (t, (n, bytes)) in &by_type {
        println!(
            "  {t:6} {n:4} tensors {:10.2} MiB",
            *bytes as f64 / (1 << 20) as f64
        );
    }
    let engine = a.model.load(None)?;
    let mi = engine.model.info();
    println!("architecture: {}", mi.architecture);
    for (k, v) in &mi.params {
        println!("  {k}: {v}");
    }
    println!(
        "tokenizer: {} tokens, bos {:?}, eos {:?}",
        engine.tokenizer.vocab_size(),
        engine.tokenizer.bos_id(),
        engine.tokenizer.eos_id()
    );
    println!(
        "chat template: {}",
        if engine.chat_template.is_some() {
            "yes (from the model)"
        } else {
            "none"
        }
    );
    let gpu: &Gpu = &engine.gpu;
    println!("adapter: {}", gpu.describe());
    println!("capabilities: {:?}", gpu.caps);
    // Run one token so the kernels a forward pass uses are compiled, then list them.
    let mut engine = engine;
    let bos = engine.tokenizer.bos_id().unwrap_or(0);
    engine.feed(&[bos])?;
    println!("kernels: {}", engine.gpu.compiled_kernels().join(", "));
    Ok(())
}

fn perplexity(a: PplArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| Error::io(&a.file, e))?;
    let n_ctx = a.model.ctx.unwrap_or(512);
    let mut engine = a.model.load(Some(n_ctx))?;
    let tokens = engine.tokenizer.encode(&text, true)?;
    eprintln!(
        "flint: {} tokens, {} chunks of {n_ctx}",
        tokens.len(),
        tokens.len() / n_ctx
    );
    let t0 = std::time::Instant::now();
    let p = engine.perplexity(&tokens, n_ctx, a.chunks)?;
    let line: Vec<String> = p
        .per_chunk
        .iter()
        .enumerate()
        .map(|(i, v)| format!("[{}]{v:.4}", i + 1))
        .collect();
    eprintln!("{}", line.join(","));
    eprintln!(
        "flint: scored {} tokens in {:.1} s ({:.1} tok/s)",
        p.tokens_scored,
        t0.elapsed().as_secs_f64(),
        (p.chunks * n_ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    println!("PPL = {:.4}", p.ppl);
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let path = a.model.path()?;
    let model_id = a.model_id.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "flint".into())
    });
    let engine = a.model.load(None)?;
    let config = flint::serve::ServeConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        max_concurrency: a.max_concurrency,
        parallel: a.parallel,
        model_id,
        max_body_bytes: a.max_body_bytes,
    };
    flint::serve::run(engine, config)
}
