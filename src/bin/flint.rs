//! `flint`: run, chat with, inspect and score GGUF language models on any wgpu GPU.

use clap::{Args, Parser, Subcommand};
use flint::bench::{BenchReport, BenchSpec, ModelSizes, SpecNames};
use flint::chat::{ChatMessage, ChatTemplate};
use flint::engine::{Engine, GenerateOptions, LoadOptions};
use flint::format::ModelFile;
use flint::gpu::{Gpu, GpuOptions, KvType, TileType};
use flint::sampling::SamplingParams;
use flint::spec::{SpecMode, SpecOptions};
use flint::tools::{ToolChoice, ToolSpec};
use flint::{Error, Result};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The model scripts/setup.sh fetches.
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The embedding model scripts/setup.sh fetches (a sentence-transformers folder).
const DEFAULT_EMBED_MODEL: &str = "models/all-MiniLM-L6-v2";

/// Major version of wgpu that flint is built on (the `wgpu` requirement in Cargo.toml).
const WGPU_MAJOR: &str = "30";

/// `--version`: flint's version, wgpu's, and the wgpu backends compiled into this build (what
/// wgpu's cfg enables for the target platform, e.g. Vulkan and GL on Linux, Metal on macOS).
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (wgpu {WGPU_MAJOR}; backends: {})",
        env!("CARGO_PKG_VERSION"),
        compiled_backends().join(", ")
    )
});

/// Names (as `--backend` takes them) of the wgpu backends this build contains.
fn compiled_backends() -> Vec<&'static str> {
    let have = wgpu::Instance::enabled_backend_features();
    [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
        (wgpu::Backends::BROWSER_WEBGPU, "webgpu"),
        (wgpu::Backends::NOOP, "noop"),
    ]
    .into_iter()
    .filter(|(b, _)| have.contains(*b))
    .map(|(_, name)| name)
    .collect()
}

#[derive(Parser)]
#[command(
    name = "flint",
    version = VERSION.as_str(),
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
    /// OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/embeddings,
    /// /v1/models, /health).
    ///
    /// Serves the chat model -m; with --embedding-model also an embedding model beside it (its own
    /// GPU device and worker) at /v1/embeddings. When -m is itself an embedding model (an encoder
    /// such as all-MiniLM-L6-v2, a sentence-transformers folder, a GGUF with a pooling type), that
    /// model is served alone, for /v1/embeddings only.
    Serve(ServeArgs),
    /// Prefill and decode speed as llama-bench measures it, plus the decode's weight-streaming
    /// bandwidth against the adapter's copy bandwidth (the roofline ratio).
    Bench(BenchArgs),
    /// Download a model file into the cache (once; resumable) and print its local path; an hf:
    /// file already in the Hugging Face cache is not downloaded again.
    Pull(PullArgs),
    /// Embedding vectors of texts, one per line of output, from an embedding model (an encoder
    /// such as all-MiniLM-L6-v2, as a GGUF or a sentence-transformers folder, or a decoder GGUF
    /// with a pooling type).
    Embed(EmbedArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// GGUF model file or Hugging Face folder (default: the model scripts/setup.sh fetched), or
    /// a file to download into the cache first: hf:OWNER/REPO[@REVISION]/FILE or an http(s) URL.
    #[arg(short = 'm', long = "model", env = "FLINT_MODEL")]
    model: Option<PathBuf>,
    /// Context length (KV cache positions); default: the model's, at most 4096.
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    /// Most tokens per forward pass in prefill.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// GPU backend: vulkan, metal, dx12, gl (default: every backend compiled in; see `flint --version`),
    /// or noop: wgpu's backend that runs no kernels, for `flint bench` to measure the host's cost
    /// (pick the layout with --kernels; other commands refuse it).
    #[arg(long, env = "FLINT_BACKEND")]
    backend: Option<String>,
    /// Adapter index or name substring, as `flint info --adapters` lists them (default: wgpu's
    /// high-performance choice).
    #[arg(long, env = "FLINT_ADAPTER")]
    adapter: Option<String>,
    /// Do not use subgroup kernels even where the adapter supports them.
    #[arg(long)]
    no_subgroups: bool,
    /// Kernel layout: `gpu` (workgroups reduce across threads: real GPUs), `cpu` (one row or
    /// query per invocation: CPU-type adapters such as lavapipe), `auto` (by the adapter's type).
    #[arg(long, default_value = "auto", value_parser = ["auto", "gpu", "cpu"])]
    kernels: String,
    /// KV cache precision: `f32` (exact), or half the memory with `q16` (16-bit fixed point with
    /// a scale per position and KV head; logits within 2.1e-3 of f32 on SmolLM2) or `f16` (logits
    /// within about 2e-2, 9e-3 on average).
    #[arg(long, default_value = "f32", value_parser = parsed(KvType::parse))]
    kv_cache: KvType,
    /// How the tiled prefill matmul (the `gpu` kernel layout) stages activations and dequantized
    /// weights in workgroup memory, always multiplying in f32: `f32` (exact), or half the
    /// workgroup memory with `q16` (16-bit fractions of each 32-element slice's largest
    /// magnitude; logits within 4.9e-3 of f32 on SmolLM2, any adapter) or `f16` (needs
    /// shader-f16; logits within 1.9e-2).
    #[arg(long, default_value = "f32", value_parser = parsed(TileType::parse))]
    matmul: TileType,
    /// Where the logits are ranked for sampling: `gpu` (greedy and top-k without penalties or
    /// logit bias read back only the top-k candidates), `cpu` (the whole row every token), `auto`
    /// (gpu on real GPUs, cpu on CPU-type adapters such as lavapipe).
    #[arg(long, default_value = "auto", value_parser = ["auto", "gpu", "cpu"])]
    sample_on: String,
    /// Do not show the loading progress bar.
    #[arg(long)]
    quiet: bool,
    /// Time every kernel with timestamp queries (set by `flint bench --profile`).
    #[arg(skip)]
    profile: bool,
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
    /// Speculative decoding: `ngram` (propose what followed the latest earlier occurrence of the
    /// last tokens in the prompt and output, check the proposal in one pass; the same text as
    /// `off`, faster where the answer copies its input), `draft` (a smaller model with the same
    /// vocabulary proposes, `--draft`) or `off` (one token per pass). Default: `draft` with
    /// `--draft`, else `ngram`.
    #[arg(long = "spec", value_parser = parse_spec)]
    spec: Option<SpecMode>,
    /// A draft model for `--spec draft`: a GGUF file or Hugging Face folder with the model's
    /// vocabulary (e.g. SmolLM2-135M for a larger SmolLM2), loaded on the same GPU with its own
    /// KV cache.
    #[arg(long = "draft", value_name = "MODEL")]
    draft: Option<PathBuf>,
    /// Most tokens one speculative draft proposes.
    #[arg(long = "draft-max", default_value_t = 7)]
    draft_max: usize,
    /// Fewest tokens a draft must have to be checked.
    #[arg(long = "draft-min", default_value_t = 3)]
    draft_min: usize,
}

fn parse_spec(s: &str) -> std::result::Result<SpecMode, String> {
    s.parse().map_err(|e: Error| e.to_string())
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
    /// Offer the model these tools: a JSON file holding an array of OpenAI tool objects
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`). A call is
    /// printed as `<- name {arguments}`; each next input line is then that call's result.
    #[arg(long, value_name = "FILE")]
    tools: Option<PathBuf>,
    /// `auto` (default), `required`, `none`, or a tool's name.
    #[arg(long, requires = "tools")]
    tool_choice: Option<String>,
    /// Tool-call syntax instead of the one detected from the chat template.
    #[arg(long, value_parser = parsed(flint::tools::Syntax::parse))]
    tool_syntax: Option<flint::tools::Syntax>,
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
    /// Require `Authorization: Bearer KEY` on every request (env FLINT_API_KEY, which keeps it
    /// out of `ps`).
    #[arg(long, env = "FLINT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A web origin allowed to call the server (CORS, and any request carrying `Origin`), besides
    /// the loopback ones (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`), which
    /// are the only ones by default: repeatable; `*` allows every origin.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// A host name accepted in the `Host` header besides loopback names and IP addresses (which
    /// guards against DNS rebinding): repeatable; `*` accepts any.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_host: Vec<String>,
    /// On SIGTERM or Ctrl-C: stop accepting connections, let running requests finish for up to
    /// this many seconds, then exit 0.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    shutdown_timeout: f64,
    /// Most requests queued or running at once; more get 429 with Retry-After.
    #[arg(long, default_value_t = 16)]
    max_concurrency: usize,
    /// Requests decoded together in one batched forward pass per token (continuous batching);
    /// each holds its own KV cache of the full context.
    #[arg(long, default_value_t = flint::serve::worker::DEFAULT_SLOTS)]
    parallel: usize,
    /// Model id clients name in `model` (default: the file name without .gguf, or the folder's
    /// name).
    #[arg(long)]
    model_id: Option<String>,
    /// An embedding model (GGUF file or sentence-transformers / Hugging Face folder, or an
    /// hf:/URL spec of a file) served beside the chat model at /v1/embeddings.
    #[arg(long, value_name = "PATH")]
    embedding_model: Option<PathBuf>,
    /// Model id of --embedding-model (default: its file name without .gguf, or its folder's name).
    #[arg(long, requires = "embedding_model")]
    embedding_model_id: Option<String>,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = flint::serve::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Tool-call syntax (hermes, llama3, mistral, phi4, generic) instead of the one detected
    /// from the chat template (`flint info` shows it).
    #[arg(long, value_parser = parsed(flint::tools::Syntax::parse))]
    tool_syntax: Option<flint::tools::Syntax>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens of the prefill test (ppN): one prompt from an empty cache; 0 skips it. A
    /// comma-separated list runs one test per value, as llama-bench does (`-p 128,512`).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Tokens of the decode test (tgN): greedy steps of one token after a one-token prompt; 0
    /// skips it. A comma-separated list runs one test per value.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Tokens already in the KV cache when each test starts (llama-bench's -d): every repetition
    /// first fills the cache with this many (untimed), so attention reads a long context. The
    /// tests are then named `pp512 @ d4096`, `tg128 @ d4096`. A comma-separated list runs every
    /// test at each depth (`-d 0,1024,4096`).
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// Repetitions of each test; min, median and max are over these.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Do not run each test once untimed first (pipeline compilation, caches).
    #[arg(long)]
    no_warmup: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also time every kernel with GPU timestamp queries and print where each test's time goes
    /// (ms per token by kernel). Each submit then waits for the GPU, so t/s drop a little.
    #[arg(long)]
    profile: bool,
    /// Speculative decoding tests: every `*.txt` in this folder (benches/spec has input-grounded
    /// prompts and a free-form one) is a user message, answered greedily with `--spec off` and
    /// with `--spec ngram`; the table gives both decode rates, the speedup, the acceptance and
    /// whether the texts are the same. Combine with `-p 0 -n 0` to run only these.
    #[arg(long, value_name = "DIR")]
    spec_prompts: Option<PathBuf>,
    /// Most tokens each speculative test generates.
    #[arg(long, default_value_t = 128)]
    spec_tokens: usize,
    /// Most tokens one speculative draft proposes in those tests.
    #[arg(long = "draft-max", default_value_t = 7)]
    draft_max: usize,
}

#[derive(Args)]
struct PullArgs {
    /// hf:OWNER/REPO[@REVISION]/PATH/IN/REPO (from $HF_ENDPOINT, default https://huggingface.co;
    /// $HF_TOKEN for gated or private repositories) or an http(s) URL. hf: files go to the Hugging
    /// Face cache that huggingface_hub uses ($HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub), where files it downloaded are found too, as are hf: files earlier
    /// flint versions kept in flint's cache; URLs go to flint's cache, $FLINT_CACHE, else
    /// $XDG_CACHE_HOME/flint, else ~/.cache/flint.
    spec: String,
    /// The file's sha256 (64 hex digits): the download, or the cached file, must match it.
    #[arg(long)]
    sha256: Option<String>,
    /// Download again even if the file is cached.
    #[arg(long)]
    refresh: bool,
    /// No progress bar or messages on stderr; only the path on stdout.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to embed (each one input); or use -f.
    texts: Vec<String>,
    /// Embed every line of this file (`-` reads stdin): one vector per line.
    #[arg(short = 'f', long = "file", conflicts_with = "texts")]
    file: Option<PathBuf>,
    /// Print OpenAI's embeddings response (`{"object":"list","data":[...],"usage":...}`)
    /// instead of one line of space-separated numbers per input.
    #[arg(long)]
    json: bool,
    /// Keep the first N components, normalized again (Matryoshka models).
    #[arg(long)]
    dimensions: Option<usize>,
    /// Cut inputs over the model's token limit instead of refusing them.
    #[arg(long)]
    truncate: bool,
    /// Pool `mean`, `cls` or `last` instead of what the model says (also makes a decoder
    /// without a pooling type embed, with `last`).
    #[arg(long, value_parser = parsed(flint::embed::Pooling::parse))]
    pooling: Option<flint::embed::Pooling>,
    /// Time every kernel with timestamp queries and print the GPU time per kernel to stderr.
    #[arg(long)]
    profile: bool,
    /// Embed the first input once, untimed, before the timed run (pipeline compilation; what
    /// llama.cpp's warmup does; scripts/bench-embed-peers.sh uses it).
    #[arg(long)]
    warmup: bool,
}

fn main() {
    private_runtime_dir();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Info(a) => info(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Serve(a) => serve(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Pull(a) => pull(a),
        Cmd::Embed(a) => embed(a),
    };
    if let Err(e) = result {
        eprintln!("flint: error: {e}");
        std::process::exit(1);
    }
}

/// Mesa's Vulkan loader prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`
/// (twice) when that variable is unset, as in containers, CI and `sudo`: a newcomer reads "error"
/// and stops. flint draws nothing on screen, so when it is unset or not a directory it points it,
/// for this process only, at a private directory of its own (`$TMPDIR/flint-runtime-UID`, mode
/// 0700), before any thread or driver starts.
fn private_runtime_dir() {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let usable =
            std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
        if usable {
            return;
        }
        // the uid of a file this process just made: no libc call needed
        let tmp = std::env::temp_dir();
        let probe = tmp.join(format!("flint-uid-{}", std::process::id()));
        let uid = std::fs::create_dir(&probe)
            .ok()
            .and_then(|()| std::fs::metadata(&probe).ok())
            .map(|m| m.uid());
        let _ = std::fs::remove_dir(&probe);
        let Some(uid) = uid else { return };
        let dir = tmp.join(format!("flint-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // only a directory of ours that nobody else can write to
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
        if ours {
            // single-threaded still: nothing reads the environment concurrently
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

impl ModelArgs {
    /// The model's local path; a remote spec is fetched into the cache first (once).
    fn path(&self) -> Result<PathBuf> {
        let spec = self.model.as_deref().and_then(|p| p.to_str());
        if let Some(spec) = spec.filter(|s| flint::hub::is_remote(s)) {
            return fetch_model(spec, None, false, self.quiet);
        }
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

    /// Refuses `--backend noop` (its kernels do nothing, so what it would print is not text).
    fn refuse_noop(&self) -> Result<()> {
        if flint::gpu::is_noop(self.backend.as_deref()) {
            return Err(Error::InvalidArgument(flint::gpu::NOOP_REFUSAL.into()));
        }
        Ok(())
    }

    fn gpu_options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            no_subgroups: self.no_subgroups,
            rows_kernels: match self.kernels.as_str() {
                "gpu" => Some(false),
                "cpu" => Some(true),
                _ => None,
            },
            kv_cache: self.kv_cache,
            matmul: self.matmul,
            gpu_sampling: match self.sample_on.as_str() {
                "gpu" => Some(true),
                "cpu" => Some(false),
                _ => None,
            },
            profile: self.profile,
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
            if let Some(note) = engine.gpu.software_note() {
                eprintln!("flint: note: {note}");
            }
        }
        Ok(engine)
    }
}

/// The cached file of a remote model spec, downloaded first when it is not there, with a progress
/// bar on stderr (when that is a terminal) unless `quiet`.
fn fetch_model(spec: &str, sha256: Option<String>, refresh: bool, quiet: bool) -> Result<PathBuf> {
    use flint::hub::{self, Event, HubOptions, Source};
    let mut opts = HubOptions::from_env()?;
    opts.sha256 = sha256;
    opts.refresh = refresh;
    let remote = match hub::parse_spec(spec, &opts)? {
        Source::Remote(r) => r,
        Source::Local(p) => return Ok(p),
    };
    if remote.is_cached() && !refresh {
        return hub::download(&remote, &opts, &mut |_| {});
    }
    let say = |bar: &indicatif::ProgressBar, line: String| {
        if !quiet {
            bar.suspend(|| eprintln!("{line}"));
        }
    };
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    say(
        &bar,
        format!(
            "flint: downloading {} to {}",
            remote.url,
            remote.destination().display()
        ),
    );
    let style = |template: &str| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    };
    let path = hub::download(&remote, &opts, &mut |event| match event {
        Event::Waiting { lock } => say(
            &bar,
            format!(
                "flint: waiting for another process downloading this file ({} is locked)",
                lock.display()
            ),
        ),
        Event::Started { from, total, .. } => {
            if let Some(total) = total {
                bar.set_style(style(
                    "downloading {bar:30} {binary_bytes}/{binary_total_bytes} \
                     {binary_bytes_per_sec} eta {eta}",
                ));
                bar.set_length(total);
            } else {
                bar.set_style(style(
                    "downloading {spinner} {binary_bytes} {binary_bytes_per_sec}",
                ));
            }
            bar.set_position(from);
            if from > 0 {
                say(&bar, format!("flint: resuming at byte {from}"));
            }
        }
        Event::Bytes { done } => bar.set_position(done),
    });
    bar.finish_and_clear();
    path
}

fn pull(a: PullArgs) -> Result<()> {
    if !flint::hub::is_remote(&a.spec) {
        return Err(Error::InvalidArgument(format!(
            "`{}` is a local path; pull takes hf:OWNER/REPO[@REVISION]/FILE or an http(s) URL",
            a.spec
        )));
    }
    let path = fetch_model(&a.spec, a.sha256, a.refresh, a.quiet)?;
    println!("{}", path.display());
    Ok(())
}

impl SampleArgs {
    /// Loads `--draft` on the engine's device, if given.
    fn load_draft(&self, engine: &mut Engine) -> Result<()> {
        match &self.draft {
            Some(path) => engine.load_draft(path, &mut |_, _| {}),
            None => Ok(()),
        }
    }

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
            spec: SpecOptions {
                mode: self.spec.unwrap_or(match self.draft {
                    Some(_) => SpecMode::Draft,
                    None => SpecMode::Ngram,
                }),
                draft_max: self.draft_max,
                draft_min: self.draft_min,
            },
            ..Default::default()
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
    let s = g.spec;
    if s.passes > 0 {
        eprintln!(
            "flint: speculative: {} checks, {} of {} drafted tokens accepted ({:.0}%)",
            s.passes,
            s.accepted,
            s.drafted,
            100.0 * s.acceptance()
        );
    }
}

fn run(a: RunArgs) -> Result<()> {
    a.model.refuse_noop()?;
    let mut engine = a.model.load(None)?;
    a.sample.load_draft(&mut engine)?;
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
    a.model.refuse_noop()?;
    let mut engine = a.model.load(None)?;
    a.sample.load_draft(&mut engine)?;
    let template = engine
        .chat_template
        .clone()
        .ok_or_else(|| Error::Template("the model has no `tokenizer.chat_template`".into()))?;
    let tok = &engine.tokenizer;
    let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
    let syntax = a
        .tool_syntax
        .unwrap_or_else(|| flint::tools::Syntax::detect(&template));
    let template = ChatTemplate::new(&template, &piece(tok.bos_id()), &piece(tok.eos_id()))?;
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    let first = a.sample.options();
    // After tool results the model answers with `auto` (else `required` would call forever).
    let (mut opts, mut then) = (first.clone(), first);
    let tools = match &a.tools {
        None => None,
        Some(path) => {
            let spec = read_tools(path, a.tool_choice.as_deref())?;
            let vocab = flint::constrain::ConstraintVocab::new(&engine.tokenizer)?;
            tools_grammar(&vocab, &spec, syntax, &mut opts)?;
            if matches!(spec.choice, ToolChoice::Required | ToolChoice::Named(_)) {
                let auto = ToolSpec {
                    choice: ToolChoice::Auto,
                    ..spec.clone()
                };
                tools_grammar(&vocab, &auto, syntax, &mut then)?;
            } else {
                then = opts.clone();
            }
            Some(spec)
        }
    };
    let stdin = std::io::stdin();
    let interactive = std::io::IsTerminal::is_terminal(&stdin);
    let mut stdout = std::io::stdout();
    let read_line = |prompt: &str| -> Result<Option<String>> {
        loop {
            if interactive {
                eprint!("{prompt}");
            }
            let mut line = String::new();
            if stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::io("stdin", e))?
                == 0
            {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.is_empty() {
                return Ok(Some(line.to_string()));
            }
        }
    };
    while let Some(line) = read_line("> ")? {
        messages.push(ChatMessage::user(line));
        // Answer; while the answer calls tools, read each call's result and answer again.
        let mut opts = &opts;
        loop {
            let rendered = flint::tools::render(&template, syntax, &messages, tools.as_ref())?;
            let prompt = engine.tokenizer.encode(&rendered, false)?;
            let g = engine.generate(&prompt, opts, &mut |p| {
                let _ = stdout.write_all(p.as_bytes());
                let _ = stdout.flush();
                true
            })?;
            println!();
            if !a.model.quiet {
                print_stats(&g);
            }
            opts = &then;
            if g.tool_calls.is_empty() {
                messages.push(ChatMessage::assistant(g.text.trim()));
                break;
            }
            for c in &g.tool_calls {
                println!("<- {} {}", c.function.name, c.function.arguments);
            }
            let text = g.text.trim();
            messages.push(ChatMessage {
                role: "assistant".into(),
                content: (!text.is_empty()).then(|| text.to_string()),
                tool_calls: g.tool_calls.clone(),
                ..Default::default()
            });
            for c in &g.tool_calls {
                let Some(result) = read_line(&format!("{} result> ", c.function.name))? else {
                    return Ok(());
                };
                messages.push(ChatMessage {
                    role: "tool".into(),
                    content: Some(result),
                    tool_call_id: Some(c.id.clone()),
                    name: Some(c.function.name.clone()),
                    ..Default::default()
                });
            }
        }
    }
    Ok(())
}

/// Reads `flint chat --tools FILE` (an array of OpenAI tool objects) and `--tool-choice`.
fn read_tools(path: &std::path::Path, choice: Option<&str>) -> Result<ToolSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let tools: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("{}: not JSON: {e}", path.display())))?;
    let choice = choice.map(|c| match c {
        "auto" | "required" | "none" => serde_json::json!(c),
        name => serde_json::json!({"type": "function", "function": {"name": name}}),
    });
    let bad = |e: flint::tools::FieldError| {
        Error::InvalidArgument(format!("{}: {} ({})", path.display(), e.message, e.param))
    };
    ToolSpec::parse(Some(&tools), choice.as_ref(), None)
        .map_err(bad)?
        .ok_or_else(|| Error::InvalidArgument(format!("{}: no tools", path.display())))
}

/// Sets `opts` to parse and constrain calls of `spec`'s tools.
fn tools_grammar(
    vocab: &flint::constrain::ConstraintVocab,
    spec: &ToolSpec,
    syntax: flint::tools::Syntax,
    opts: &mut flint::engine::GenerateOptions,
) -> Result<()> {
    let c = flint::tools::constrain(vocab, syntax, Some(spec), None)
        .map_err(|e| Error::InvalidArgument(format!("{} ({})", e.message, e.param)))?;
    opts.grammar = c.grammar;
    opts.tools = c.tools;
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
        let adapters: Vec<(usize, wgpu::Adapter)> = match &a.model.adapter {
            Some(sel) => vec![flint::gpu::select_adapter(adapters, sel)?],
            None => adapters.into_iter().enumerate().collect(),
        };
        for (i, ad) in &adapters {
            let info = ad.get_info();
            let l = ad.limits();
            println!(
                "[{i}] {} ({:?}, {:?}, driver {} {})",
                info.name, info.backend, info.device_type, info.driver, info.driver_info
            );
            let f = ad.features();
            let yes = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
            println!(
                "    flint uses: shader-f16 {}, subgroups {} (sizes {}..{})",
                yes(wgpu::Features::SHADER_F16),
                yes(wgpu::Features::SUBGROUP),
                info.subgroup_min_size,
                info.subgroup_max_size
            );
            println!("    features: {f}");
            println!(
                "    limits: max_storage_buffer_binding_size={} max_buffer_size={} workgroup_storage={} invocations={} workgroups_per_dim={}",
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.max_compute_workgroup_storage_size,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroups_per_dimension
            );
            if info.device_type == wgpu::DeviceType::Cpu && info.backend != wgpu::Backend::Noop {
                println!("    note: {}", flint::gpu::software_note(&info.name));
            }
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
    if flint::embed::is_embedding_model(&path)? {
        let e = a.model.load_embedder(None)?;
        let mi = e.info();
        println!("architecture: {} (embedding model)", mi.architecture);
        for (k, v) in &mi.params {
            println!("  {k}: {v}");
        }
        println!("tokenizer: {} tokens", e.tokenizer.vocab_size());
        println!("adapter: {}", e.gpu.describe());
        if let Some(note) = e.gpu.software_note() {
            println!("note: {note}");
        }
        return Ok(());
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
    let syntax = flint::tools::Syntax::detect(engine.chat_template.as_deref().unwrap_or(""));
    println!(
        "tool calls: {} syntax ({}; --tool-syntax to override)",
        syntax.name(),
        syntax.row().models
    );
    let gpu: &Gpu = &engine.gpu;
    println!("adapter: {}", gpu.describe());
    if let Some(note) = gpu.software_note() {
        println!("note: {note}");
    }
    let c = &gpu.caps;
    println!(
        "kernel layout: {} (--kernels); fused decode projections: {}; KV cache: {} (--kv-cache); prefill matmul: {} (--matmul); sampling: {} (--sample-on)",
        if c.rows_kernels { "cpu" } else { "gpu" },
        if c.rows_kernels && c.fused_rows {
            "yes"
        } else {
            "no"
        },
        c.kv_cache_label(),
        c.matmul_label(),
        if c.gpu_sampling { "gpu" } else { "cpu" }
    );
    println!("capabilities: {:?}", gpu.caps);
    // Run one token so the kernels a forward pass uses are compiled, then list them.
    let mut engine = engine;
    let bos = engine.tokenizer.bos_id().unwrap_or(0);
    if engine.gpu.caps.gpu_sampling {
        engine.feed_top_k(&[bos], 1)?;
    } else {
        engine.feed(&[bos])?;
    }
    println!("kernels: {}", engine.gpu.compiled_kernels().join(", "));
    Ok(())
}

fn perplexity(a: PplArgs) -> Result<()> {
    a.model.refuse_noop()?;
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

impl ModelArgs {
    /// Loads an embedding model (default: the one scripts/setup.sh fetched).
    fn load_embedder(
        &self,
        pooling: Option<flint::embed::Pooling>,
    ) -> Result<flint::embed::Embedder> {
        let path = match &self.model {
            Some(_) => self.path()?,
            None => {
                let p = PathBuf::from(DEFAULT_EMBED_MODEL);
                if !p.exists() {
                    return Err(Error::InvalidArgument(format!(
                        "embedding model {} not found (run scripts/setup.sh, or pass -m)",
                        p.display()
                    )));
                }
                p
            }
        };
        let t0 = std::time::Instant::now();
        let e =
            flint::embed::Embedder::load_with(&path, &self.gpu_options(), pooling, &mut |_, _| {})?;
        if !self.quiet {
            eprintln!(
                "flint: {} on {} in {:.2} s ({} dimensions, {} pooling{}, at most {} tokens)",
                path.display(),
                e.gpu.describe(),
                t0.elapsed().as_secs_f64(),
                e.cfg.dims,
                e.cfg.pooling.name(),
                if e.cfg.normalize { ", normalized" } else { "" },
                e.cfg.max_tokens
            );
        }
        Ok(e)
    }
}

fn embed(a: EmbedArgs) -> Result<()> {
    a.model.refuse_noop()?;
    use flint::embed::{EmbedInput, EmbedOptions, MAX_INPUTS};
    let texts: Vec<String> = match &a.file {
        None if a.texts.is_empty() => {
            return Err(Error::InvalidArgument(
                "nothing to embed: give texts, or -f FILE (one text per line)".into(),
            ))
        }
        None => a.texts.clone(),
        Some(f) => {
            let text = if f.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| Error::io(f, e))?;
                s
            } else {
                std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?
            };
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if let Some(i) = lines.iter().position(|l| l.is_empty()) {
                return Err(Error::InvalidArgument(format!(
                    "{}: line {} is empty (one text per line)",
                    f.display(),
                    i + 1
                )));
            }
            if lines.is_empty() {
                return Err(Error::InvalidArgument(format!("{}: no lines", f.display())));
            }
            lines
        }
    };
    let mut model = a.model.clone();
    model.profile = a.profile;
    let mut e = model.load_embedder(a.pooling)?;
    let opts = EmbedOptions {
        dimensions: a.dimensions,
        truncate: a.truncate,
    };
    if a.warmup {
        e.embed(&[EmbedInput::Text(texts[0].clone())], &opts)?;
        e.gpu.take_profile();
    }
    let t0 = std::time::Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    let mut tokens = 0;
    for chunk in texts.chunks(MAX_INPUTS) {
        let inputs: Vec<EmbedInput> = chunk.iter().cloned().map(EmbedInput::Text).collect();
        let out = e.embed(&inputs, &opts)?;
        tokens += out.prompt_tokens;
        vectors.extend(out.vectors);
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("stdout", e);
    if a.json {
        let model = a
            .model
            .model
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| DEFAULT_EMBED_MODEL.into());
        let data: Vec<serde_json::Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}))
            .collect();
        let body = serde_json::json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        });
        writeln!(out, "{body}").map_err(io)?;
    } else {
        for v in &vectors {
            let line: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            writeln!(out, "{}", line.join(" ")).map_err(io)?;
        }
    }
    if a.profile {
        let times = e.gpu.take_profile();
        let total: f64 = times.iter().map(|t| t.seconds).sum();
        eprintln!(
            "flint: GPU time {:.1} ms over {tokens} tokens:",
            total * 1e3
        );
        for t in &times {
            eprintln!(
                "  {:>8.2} ms {:>5.1}% {:>6} calls  {}",
                t.seconds * 1e3,
                100.0 * t.seconds / total.max(1e-12),
                t.calls,
                t.kernel
            );
        }
    }
    if !a.model.quiet {
        eprintln!(
            "flint: {} inputs, {tokens} tokens in {secs:.2} s ({:.1} inputs/s)",
            vectors.len(),
            vectors.len() as f64 / secs
        );
    }
    Ok(())
}

/// The id a served model gets by default: a file's name without its extension, a folder's name.
fn default_model_id(path: &std::path::Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flint".into())
}

fn serve(a: ServeArgs) -> Result<()> {
    use flint::serve::Models;
    a.model.refuse_noop()?;
    let path = a.model.path()?;
    let mut config = flint::serve::ServeConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        max_concurrency: a.max_concurrency,
        parallel: a.parallel,
        model_id: a.model_id.unwrap_or_else(|| default_model_id(&path)),
        embedding_model_id: String::new(),
        max_body_bytes: a.max_body_bytes,
        tool_syntax: a.tool_syntax,
        cors_origins: a.cors_origin,
        allowed_hosts: a.allowed_host,
        shutdown_timeout: std::time::Duration::try_from_secs_f64(a.shutdown_timeout).map_err(
            |_| Error::InvalidArgument("--shutdown-timeout takes a number of seconds".into()),
        )?,
        // the demo page loads GGUF files only
        model_file: matches!(ModelFile::open(&path), Ok(ModelFile::Gguf(_))).then(|| path.clone()),
    };
    let models = if flint::embed::is_embedding_model(&path)? {
        if let Some(e) = &a.embedding_model {
            return Err(Error::InvalidArgument(format!(
                "-m {} is an embedding model, served alone; --embedding-model {} serves one \
                 beside a chat model",
                path.display(),
                e.display()
            )));
        }
        config.embedding_model_id = std::mem::take(&mut config.model_id);
        Models {
            chat: None,
            embedder: Some(serve_embedder(&a.model, &path)?),
        }
    } else {
        // the embedding model's path first: a wrong one fails before the chat model loads
        let embed_path = match &a.embedding_model {
            None => None,
            Some(p) => match p.to_str().filter(|s| flint::hub::is_remote(s)) {
                Some(spec) => Some(fetch_model(spec, None, false, a.model.quiet)?),
                None if p.exists() => Some(p.clone()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "embedding model {} not found",
                        p.display()
                    )))
                }
            },
        };
        let engine = a.model.load(None)?;
        let embedder = match embed_path {
            None => None,
            Some(p) => {
                config.embedding_model_id =
                    a.embedding_model_id.unwrap_or_else(|| default_model_id(&p));
                Some(serve_embedder(&a.model, &p)?)
            }
        };
        Models {
            chat: Some(engine),
            embedder,
        }
    };
    flint::serve::run(models, config)
}

/// Loads the embedding model `flint serve` serves, on its own GPU device (the same --backend and
/// --adapter as the chat model's).
fn serve_embedder(m: &ModelArgs, path: &std::path::Path) -> Result<flint::embed::Embedder> {
    let t0 = std::time::Instant::now();
    let e = flint::embed::Embedder::load(path, &m.gpu_options(), &mut |_, _| {})?;
    if !m.quiet {
        eprintln!(
            "flint: embedding model {} on {} in {:.2} s ({} dimensions, at most {} tokens)",
            path.display(),
            e.gpu.describe(),
            t0.elapsed().as_secs_f64(),
            e.cfg.dims,
            e.cfg.max_tokens
        );
    }
    Ok(e)
}

fn bench(mut a: BenchArgs) -> Result<()> {
    a.model.profile = a.profile;
    let spec = BenchSpec {
        n_prompt: a.n_prompt.clone(),
        n_gen: a.n_gen.clone(),
        n_depth: a.n_depth.clone(),
        reps: a.reps,
        warmup: !a.no_warmup,
    };
    // before the model loads, naming the flags
    let only_spec =
        a.spec_prompts.is_some() && spec.n_prompt.iter().chain(&spec.n_gen).all(|&n| n == 0);
    if !only_spec {
        spec.check_named(&SpecNames::CLI)?;
    }
    let noop = flint::gpu::is_noop(a.model.backend.as_deref());
    if noop {
        eprintln!("{NOOP_NOTE}");
    }
    let path = a.model.path()?;
    let sizes = ModelSizes::of(&ModelFile::open(&path)?);
    let mut ctx = spec.ctx_needed().max(a.model.ctx.unwrap_or(0));
    if a.spec_prompts.is_some() {
        // room for the prompt files (checked once they are tokenized)
        ctx = ctx.max(flint::engine::DEFAULT_CTX);
    }
    let mut engine = a.model.load(Some(ctx))?;
    let quiet = a.model.quiet;
    let mut on_run = |test: &str, run: usize, runs: usize, tps: f64| {
        if !quiet {
            eprintln!("flint: {test} run {run}/{runs}: {tps:.2} tok/s");
        }
    };
    let mut report = pollster::block_on(flint::bench::run(
        &mut engine,
        &spec,
        &sizes,
        path.display().to_string(),
        &mut on_run,
    ))?;
    report.flint_version = VERSION.clone();
    if !a.profile {
        report.profiles.clear();
    }
    if let Some(dir) = &a.spec_prompts {
        let spec = SpecOptions {
            mode: SpecMode::Ngram,
            draft_max: a.draft_max,
            draft_min: SpecOptions::default().draft_min,
        };
        spec.validate()?;
        for (name, prompt) in spec_prompts(&engine, dir)? {
            let r = pollster::block_on(flint::bench::run_spec(
                &mut engine,
                &name,
                &prompt,
                a.spec_tokens,
                spec,
                a.reps,
            ))?;
            on_run(&r.test, 1, 1, r.on_tps);
            report.spec.push(r);
        }
    }
    if a.json {
        if noop {
            eprintln!("{NOOP_NOTE}");
        }
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::InvalidArgument(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else {
        print_bench_table(&report);
    }
    Ok(())
}

/// The prompts of `flint bench --spec-prompts DIR`: each `*.txt` file (by name) as one user
/// message through the model's chat template (or as plain text without one), tokenized.
fn spec_prompts(engine: &Engine, dir: &Path) -> Result<Vec<(String, Vec<u32>)>> {
    let read = |e: std::io::Error| Error::InvalidArgument(format!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|f| f.ok().map(|f| f.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: no *.txt prompt files",
            dir.display()
        )));
    }
    let tok = &engine.tokenizer;
    let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
    let template = match &engine.chat_template {
        Some(t) => Some(ChatTemplate::new(
            t,
            &piece(tok.bos_id()),
            &piece(tok.eos_id()),
        )?),
        None => None,
    };
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.display())))?;
        let name = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let prompt = match &template {
            Some(t) => {
                let rendered = t.render(&[ChatMessage::user(text)], true)?;
                tok.encode(&rendered, false)?
            }
            None => tok.encode(&text, true)?,
        };
        out.push((name, prompt));
    }
    Ok(out)
}

/// What `flint bench --backend noop` says on stderr before and after it runs.
const NOOP_NOTE: &str = "flint: NOTE: --backend noop runs no kernels (wgpu's noop backend): these \
     figures measure the HOST's cost only (recording and submitting the GPU work, read-backs of \
     zeros), not a GPU's speed; its tok/s is the ceiling the host alone allows";

fn print_bench_table(r: &BenchReport) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    if r.backend == "Noop" {
        println!("{NOOP_NOTE}\n");
    }
    println!(
        "| model | size | params | backend | adapter | test | t/s min | t/s median | t/s max | host us/tok | submit us/tok | dispatches/tok | bind groups/tok |"
    );
    println!(
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for t in &r.tests {
        println!(
            "| {} {} | {:.2} MiB | {:.2} M | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.architecture,
            r.quant,
            mib(r.model_bytes),
            r.params as f64 / 1e6,
            r.backend,
            r.adapter,
            t.test,
            t.min_tps,
            t.median_tps,
            t.max_tps,
            t.host_us_per_token,
            t.submit_us_per_token,
            t.dispatches_per_token,
            t.bind_groups_per_token
        );
    }
    println!(
        "\nhost us/tok: host time recording and submitting the GPU work per token (waits for the \
         GPU excluded); submit us/tok: the part of it spent finishing command buffers and in \
         queue.submit (which lavapipe's returns only after running the work); dispatches/tok and \
         bind groups/tok: compute dispatches recorded and bind groups created per token"
    );
    println!(
        "\nbatch {}, context {}, {} repetitions, {} kernel layout, {} KV cache, {} prefill matmul, \
         sampling on the {}; {}",
        r.batch,
        r.ctx,
        r.repetitions,
        r.kernel_layout,
        r.kv_cache,
        r.matmul,
        r.sampling,
        r.flint_version
    );
    println!(
        "copy bandwidth (shaders/copy.wgsl, {:.0} MiB, read + write): {:.2} GB/s",
        mib(r.copy_bytes),
        r.copy_gbps
    );
    if let (Some(g), Some(ratio)) = (r.decode_weight_gbps, r.roofline_ratio) {
        println!(
            "decode weight streaming: {:.2} MiB/token x median tok/s = {g:.2} GB/s = {:.1}% of copy bandwidth (roofline ratio {ratio:.3})",
            mib(r.decode_weight_bytes_per_token),
            ratio * 100.0
        );
    }
    if !r.spec.is_empty() {
        println!(
            "\nspeculative decoding (--spec ngram, greedy; decode t/s medians over {} repetitions):",
            r.repetitions
        );
        println!("| test | prompt | generated | t/s off | t/s ngram | speedup | checks | drafted | accepted | acceptance | same text |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for t in &r.spec {
            println!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2}x | {} | {} | {} | {:.0}% | {} |",
                t.test,
                t.n_prompt,
                t.n_gen,
                t.off_tps,
                t.on_tps,
                t.speedup,
                t.passes,
                t.drafted,
                t.accepted,
                t.acceptance * 100.0,
                if t.same_text { "yes" } else { "NO" }
            );
        }
    }
    for p in &r.profiles {
        let total: f64 = p.kernels.iter().map(|k| k.ms_per_token).sum();
        println!(
            "\n{}: GPU time by kernel (timestamp queries), {total:.3} ms/token in all",
            p.test
        );
        println!("| kernel | ms/token | dispatches/token | share |");
        println!("| --- | ---: | ---: | ---: |");
        for k in &p.kernels {
            println!(
                "| {} | {:.3} | {:.1} | {:.1}% |",
                k.kernel,
                k.ms_per_token,
                k.dispatches_per_token,
                k.share * 100.0
            );
        }
    }
}

/// `--kv-cache`'s parser: a [`KvType`] name.
/// A clap value parser from one of flint's `parse` functions (`KvType::parse`, `TileType::parse`):
/// its error, which lists the accepted names, is what clap prints.
fn parsed<T: 'static>(
    parse: fn(&str) -> Result<T>,
) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync + 'static {
    move |name| parse(name).map_err(|e| e.to_string())
}
