//! `flint serve`: an OpenAI-compatible HTTP server (axum + tokio, native only).
//!
//! Endpoints: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`,
//! `POST /v1/completions`, `POST /v1/embeddings`. Responses and errors have OpenAI's shapes, so an
//! OpenAI client pointed at `http://HOST:PORT/v1` works.
//!
//! A server serves a chat model, an embedding model, or one of each ([`Models`]); each has its
//! own id, its own worker thread, GPU device and queue. The embedding worker ([`embed`]) runs
//! each request as one [`crate::embed::Embedder::embed`] call.
//!
//! One [`Engine`] runs on a dedicated worker thread ([`worker`]) fed by a bounded channel; the
//! worker steps the requests in its slot table one token at a time, all of them in one batched
//! forward pass (continuous batching). At most `max_concurrency` requests may be queued or running
//! (chat and embedding requests counted apart); more get 429 with `Retry-After`. A client that
//! disconnects frees its slot at the next step; a queued one that disconnects is skipped.
//! `response_format` json_object / json_schema and tool calls are enforced by a token mask from
//! [`crate::constrain`] at every step.
//!
//! Who may call it is checked first ([`access`]: loopback origins and hosts by default,
//! `--cors-origin`, `--allowed-host`), then the API key. The request side ([`api`]: OpenAI's
//! JSON read into checked requests and prompts, errors written back) and the worker side
//! ([`worker`]) depend in one direction: the worker takes the API's `Prompt` and reports
//! `ApiError`s; `api` knows nothing of the worker.
//!
//! `n` > 1 choices share the prompt's prefill (the worker copies its KV cache into a slot per
//! choice); whole responses list them by `index`, streams interleave their chunks, each
//! carrying its `index`, and end with one `[DONE]`.

pub mod access;
pub mod api;
pub mod embed;
pub mod metrics;
pub mod static_files;
pub mod worker;

use crate::constrain::ConstraintVocab;
use crate::embed::Embedder;
use crate::engine::Engine;
use crate::tools::{Delta, Syntax};
use crate::{Error, Result};
use api::{ApiError, EmbedRequest, GenRequest, Prompt};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use worker::{Counters, Event, Job, Slot, TokenLogprob};

/// Request bodies larger than this get 413 unless [`ServeConfig::max_body_bytes`] says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to bind (loopback by default).
    pub host: String,
    /// Port; 0 picks a free one (see [`ServerHandle::addr`]).
    pub port: u16,
    /// When set, every request must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Most requests queued or running at once; more get 429.
    pub max_concurrency: usize,
    /// Requests decoded together in one batched forward pass (each holds a KV cache); at most
    /// `max_concurrency`.
    pub parallel: usize,
    /// The chat model's id: what clients name (`model` field) and `/v1/models` lists.
    pub model_id: String,
    /// The embedding model's id (when one is served).
    pub embedding_model_id: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The tool-call syntax, instead of the one detected from the chat template.
    pub tool_syntax: Option<Syntax>,
    /// Web origins allowed besides the loopback ones (CORS, and requests that carry an
    /// `Origin`); `*` allows any ([`access::origin_allowed`]).
    pub cors_origins: Vec<String>,
    /// Host names accepted in `Host` besides loopback names and IP addresses (DNS rebinding);
    /// `*` accepts any ([`access::host_allowed`]).
    pub allowed_hosts: Vec<String>,
    /// After SIGTERM or Ctrl-C, how long running requests may take to finish before [`run`]
    /// returns anyway.
    pub shutdown_timeout: std::time::Duration,
    /// The chat model's GGUF file, offered to the demo page (and any other web page) at
    /// `/model.gguf` with HTTP Range support and described at `/served-model.json`
    /// ([`static_files`]); `None`: not offered.
    pub model_file: Option<std::path::PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_concurrency: 16,
            parallel: worker::DEFAULT_SLOTS,
            model_id: "flint".into(),
            embedding_model_id: "flint-embedding".into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tool_syntax: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            shutdown_timeout: std::time::Duration::from_secs(30),
            model_file: None,
        }
    }
}

/// What a server serves: a chat model, an embedding model, or both (at least one).
pub struct Models {
    /// Answers `/v1/chat/completions` and `/v1/completions` as [`ServeConfig::model_id`].
    pub chat: Option<Engine>,
    /// Answers `/v1/embeddings` as [`ServeConfig::embedding_model_id`].
    pub embedder: Option<Embedder>,
}

impl From<Engine> for Models {
    fn from(engine: Engine) -> Models {
        Models {
            chat: Some(engine),
            embedder: None,
        }
    }
}

impl From<Embedder> for Models {
    fn from(embedder: Embedder) -> Models {
        Models {
            chat: None,
            embedder: Some(embedder),
        }
    }
}

/// What the handlers share.
struct AppState {
    config: ServeConfig,
    created: u64,
    chat: Option<ChatState>,
    embed: Option<EmbedState>,
    /// What `/metrics` reports besides the workers' counters (shared with the chat worker).
    metrics: Arc<metrics::Metrics>,
}

/// The chat model's side: its worker's queue and what requests are checked against.
struct ChatState {
    jobs: std::sync::mpsc::SyncSender<Job>,
    counters: Arc<Counters>,
    ctx: usize,
    /// Requests decoded together (engine slots).
    slots: usize,
    /// The model's vocabulary for compiling grammars (tools, `response_format`).
    vocab: Arc<ConstraintVocab>,
    /// The syntax the model writes tool calls in.
    syntax: Syntax,
    /// The GPU adapter's name and driver (`/health`).
    adapter: (String, String),
}

/// The embedding model's side: its worker's queue and what `/health` reports.
struct EmbedState {
    jobs: std::sync::mpsc::SyncSender<embed::EmbedJob>,
    counters: Arc<Counters>,
    stats: Arc<embed::EmbedStats>,
    dims: usize,
    max_tokens: usize,
}

type Shared = Arc<AppState>;

/// A server running on background threads (see [`spawn`]).
pub struct ServerHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops accepting connections, lets open ones finish, and waits for the server thread.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts the workers and builds the router.
fn build(models: Models, config: ServeConfig) -> Result<Router> {
    build_with_state(models, config).map(|(router, _)| router)
}

/// [`build`], also returning the state the handlers share.
fn build_with_state(models: Models, config: ServeConfig) -> Result<(Router, Shared)> {
    if config.max_concurrency == 0 {
        return Err(Error::InvalidArgument(
            "--max-concurrency must be at least 1".into(),
        ));
    }
    if config.parallel == 0 {
        return Err(Error::InvalidArgument(
            "--parallel must be at least 1".into(),
        ));
    }
    match &models {
        Models {
            chat: None,
            embedder: None,
        } => {
            return Err(Error::InvalidArgument(
                "nothing to serve: give a chat model, an embedding model, or both".into(),
            ))
        }
        Models {
            chat: Some(_),
            embedder: Some(_),
        } if config.model_id == config.embedding_model_id => {
            return Err(Error::InvalidArgument(format!(
                "the chat model and the embedding model are both named `{}`: give one another id \
                 (--model-id, --embedding-model-id)",
                config.model_id
            )))
        }
        _ => {}
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let chat = models
        .chat
        .map(|engine| start_chat(engine, &config, metrics.clone()))
        .transpose()?;
    let embed = models
        .embedder
        .map(|e| start_embed(e, &config))
        .transpose()?;
    let state = Arc::new(AppState {
        config,
        created: now(),
        chat,
        embed,
        metrics,
    });
    Ok((router(state.clone()), state))
}

/// Starts the generation worker.
fn start_chat(
    mut engine: Engine,
    config: &ServeConfig,
    metrics: Arc<metrics::Metrics>,
) -> Result<ChatState> {
    engine.set_slots(config.parallel.min(config.max_concurrency))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(config.max_concurrency);
    let counters = Arc::new(Counters {
        metrics,
        ..Default::default()
    });
    let syntax = config
        .tool_syntax
        .unwrap_or_else(|| Syntax::detect(engine.chat_template.as_deref().unwrap_or("")));
    let vocab = Arc::new(ConstraintVocab::new(&engine.tokenizer)?);
    let state = ChatState {
        vocab,
        syntax,
        ctx: engine.ctx,
        slots: engine.slots(),
        adapter: (
            engine.gpu.info.name.clone(),
            engine.gpu.info.driver_info.clone(),
        ),
        jobs: tx,
        counters: counters.clone(),
    };
    std::thread::Builder::new()
        .name("flint-generate".into())
        .spawn(move || worker::run(engine, syntax, rx, counters))
        .map_err(|e| Error::io("generation thread", e))?;
    Ok(state)
}

/// Starts the embedding worker.
fn start_embed(embedder: Embedder, config: &ServeConfig) -> Result<EmbedState> {
    let (tx, rx) = std::sync::mpsc::sync_channel(config.max_concurrency);
    let counters = Arc::new(Counters::default());
    let stats = Arc::new(embed::EmbedStats::default());
    let state = EmbedState {
        jobs: tx,
        counters: counters.clone(),
        stats: stats.clone(),
        dims: embedder.cfg.dims,
        max_tokens: embedder.cfg.max_tokens,
    };
    std::thread::Builder::new()
        .name("flint-embed".into())
        .spawn(move || embed::run(embedder, rx, counters, stats))
        .map_err(|e| Error::io("embedding thread", e))?;
    Ok(state)
}

fn router(state: Shared) -> Router {
    use tower_http::cors::AllowOrigin;
    let origins = state.config.cors_origins.clone();
    let allow_origin = match origins.iter().any(|o| o == "*") {
        true => AllowOrigin::any(),
        false => AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| access::origin_allowed(o, &origins))
        }),
    };
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(3600));
    let limit = state.config.max_body_bytes;
    static_files::add(Router::new(), &state.config)
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/live", get(live))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(cors)
        .with_state(state)
}

/// Binds and serves until `shutdown` resolves.
async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("HTTP server", e))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flint-http")
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

async fn bind(config: &ServeConfig) -> Result<tokio::net::TcpListener> {
    let addr = format!("{}:{}", config.host, config.port);
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::io(&addr, e))
}

/// Serves `models` (an [`Engine`], an [`Embedder`], or [`Models`]) on the calling thread until
/// Ctrl-C (what `flint serve` runs).
pub fn run(models: impl Into<Models>, config: ServeConfig) -> Result<()> {
    let models = models.into();
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = bind(&config).await?;
        let addr = listener.local_addr().map_err(|e| Error::io("socket", e))?;
        let mut names = Vec::new();
        if models.chat.is_some() {
            names.push(config.model_id.clone());
        }
        if models.embedder.is_some() {
            names.push(format!("{} (embeddings)", config.embedding_model_id));
        }
        let model = names.join(" and ");
        let keyed = config.api_key.is_some();
        let timeout = config.shutdown_timeout;
        let app = build(models, config)?;
        eprintln!(
            "flint: serving {model} at http://{addr}/v1{}",
            if keyed { " (API key required)" } else { "" }
        );
        // Graceful shutdown: on SIGTERM or Ctrl-C the listener closes (new connections are
        // refused) and running requests, streams included, finish; after `timeout` the
        // server returns anyway.
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            stop_signal().await;
            eprintln!(
                "flint: shutting down: no new connections; running requests may finish (up to {} s)",
                timeout.as_secs_f64()
            );
            let _ = stopped_tx.send(());
        };
        let deadline = async move {
            if stopped_rx.await.is_ok() {
                tokio::time::sleep(timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = serve_on(listener, app, signal) => r,
            _ = deadline => {
                eprintln!("flint: shutdown timeout: stopping with requests still running");
                Ok(())
            }
        }
    })
}

/// SIGTERM (what Kubernetes and systemd send) or Ctrl-C / SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Starts a server on background threads and returns once it listens (tests, embedding).
pub fn spawn(models: impl Into<Models>, config: ServeConfig) -> Result<ServerHandle> {
    let rt = runtime()?;
    let listener = rt.block_on(bind(&config))?;
    let addr = listener.local_addr().map_err(|e| Error::io("socket", e))?;
    let (app, state) = build_with_state(models.into(), config)?;
    // ready when it returns: the chat worker's warm-up pass has run (or failed)
    let warmed = |s: &AppState| {
        s.chat
            .as_ref()
            .is_none_or(|c| c.counters.warmed.load(Ordering::SeqCst))
    };
    while !warmed(&state) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("flint-serve".into())
        .spawn(move || {
            let r = rt.block_on(serve_on(listener, app, async {
                let _ = rx.await;
            }));
            if let Err(e) = r {
                eprintln!("flint serve: {e}");
            }
        })
        .map_err(|e| Error::io("server thread", e))?;
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Counts every request that got past [`guard`] by endpoint and status, for `/metrics`.
async fn count_requests(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let r = next.run(req).await;
    state.metrics.request(&path, r.status().as_u16());
    r
}

/// `GET /metrics`: Prometheus' text format ([`metrics`]).
async fn metrics_text(State(s): State<Shared>) -> Response {
    let mut g = metrics::Gauges {
        queued: 0,
        running: 0,
        slots: 0,
        cached_prompt_tokens: 0,
    };
    if let Some(chat) = &s.chat {
        let c = &chat.counters;
        let in_flight = c.in_flight.load(Ordering::SeqCst) as u64;
        g.running = c.active.load(Ordering::SeqCst) as u64;
        g.queued = in_flight.saturating_sub(g.running);
        g.slots = chat.slots as u64;
        g.cached_prompt_tokens = c.cached_prompt_tokens.load(Ordering::Relaxed);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&g),
    )
        .into_response()
}

/// Checks who is asking (the `Host` and `Origin` headers, see [`access`]), the API key and the
/// declared body size before any handler runs.
async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let cfg = &state.config;
    let forbidden = |msg: String| {
        ApiError::new(StatusCode::FORBIDDEN, "invalid_request_error", msg)
            .with_code("forbidden")
            .into_response()
    };
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?").to_string())
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host.filter(|h| !access::host_allowed(h, &cfg.allowed_hosts)) {
        return forbidden(format!(
            "The Host `{host}` is neither a loopback name nor an IP address (a page on another \
             site may be reaching this server through DNS rebinding). Start flint serve with \
             --allowed-host NAME to serve it."
        ));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("?");
        if !access::origin_allowed(origin, &cfg.cors_origins) {
            return forbidden(format!(
                "Requests from the web origin `{origin}` are not allowed (only loopback origins \
                 by default). Start flint serve with --cors-origin {origin} to allow it."
            ));
        }
    }
    // probes and scrapers (Kubernetes, Prometheus) carry no key; these reveal no prompt or text
    let open = matches!(req.uri().path(), "/live" | "/health" | "/metrics");
    if let Some(key) = state.config.api_key.as_ref().filter(|_| !open) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| {
            // Length-independent comparison of the bytes.
            g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        });
        if !ok {
            let msg = if given.is_none() {
                "You didn't provide an API key. Provide it in an Authorization header: `Authorization: Bearer YOUR_KEY`."
            } else {
                "Incorrect API key provided."
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", msg)
                .with_code("invalid_api_key")
                .into_response();
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_body_bytes as u64) {
        return too_large(state.config.max_body_bytes).into_response();
    }
    next.run(req).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("The request body is larger than the limit of {limit} bytes."),
    )
    .with_code("request_too_large")
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "Unknown request URL: {} {}.",
            req.method(),
            req.uri().path()
        ),
    )
    .with_code("unknown_url")
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!(
            "Method {} is not allowed on {}.",
            req.method(),
            req.uri().path()
        ),
    )
    .with_code("method_not_allowed")
}

/// Liveness and load: `active` requests in the worker's slot table, `queued` ones admitted and
/// waiting, and counters since start; with an embedding model, its own under `embedding`. A
/// server with only an embedding model names it as `model`.
/// `GET /live`: the process answers (liveness: no model work, no key).
async fn live() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// Whether the chat worker's warm-up pass ran (an embedding-only server is ready at once).
fn ready(s: &AppState) -> bool {
    s.chat
        .as_ref()
        .is_none_or(|c| c.counters.ready.load(Ordering::SeqCst))
}

/// `GET /health` (readiness): 503 with `"status": "loading"` until the model's warm-up pass
/// ran, then 200 with the counters.
async fn health(State(s): State<Shared>) -> Response {
    let ok = ready(&s);
    let mut v = match &s.chat {
        Some(chat) => {
            let c = &chat.counters;
            let in_flight = c.in_flight.load(Ordering::SeqCst);
            let active = c.active.load(Ordering::SeqCst);
            let steps = c.steps.load(Ordering::Relaxed);
            json!({
                "status": if ok { "ok" } else { "loading" },
                "model": s.config.model_id,
                "context": chat.ctx,
                "active": active,
                "queued": in_flight.saturating_sub(active),
                "slots": chat.slots,
                "max_concurrency": s.config.max_concurrency,
                "cancelled": c.cancelled.load(Ordering::Relaxed),
                "decode_steps": steps,
                "decode_passes": c.passes.load(Ordering::Relaxed),
                "gpu_sampled_passes": c.gpu_sampled_passes.load(Ordering::Relaxed),
                "speculative": {
                    "checks": c.spec_checks.load(Ordering::Relaxed),
                    "drafted_tokens": c.spec_drafted.load(Ordering::Relaxed),
                    "accepted_tokens": c.spec_accepted.load(Ordering::Relaxed),
                },
                "grammar_mask_ms": c.mask_us.load(Ordering::Relaxed) as f64 / 1000.0,
                "cached_prompt_tokens": c.cached_prompt_tokens.load(Ordering::Relaxed),
                "gpu": {
                    "adapter": chat.adapter.0,
                    "driver": chat.adapter.1,
                    "dispatches": c.gpu_dispatches.load(Ordering::Relaxed),
                },
            })
        }
        None => json!({
            "status": "ok",
            "model": s.config.embedding_model_id,
            "max_concurrency": s.config.max_concurrency,
        }),
    };
    if let Some(e) = &s.embed {
        let c = &e.counters;
        let in_flight = c.in_flight.load(Ordering::SeqCst);
        let active = c.active.load(Ordering::SeqCst);
        v["embedding"] = json!({
            "model": s.config.embedding_model_id,
            "dimensions": e.dims,
            "max_tokens": e.max_tokens,
            "active": active,
            "queued": in_flight.saturating_sub(active),
            "cancelled": c.cancelled.load(Ordering::Relaxed),
            "requests": e.stats.requests.load(Ordering::Relaxed),
            "inputs": e.stats.inputs.load(Ordering::Relaxed),
            "prompt_tokens": e.stats.tokens.load(Ordering::Relaxed),
            "busy_ms": e.stats.busy_us.load(Ordering::Relaxed) as f64 / 1000.0,
        });
    }
    let status = match ok {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(v)).into_response()
}

/// The ids of the models served: the chat model's first.
fn model_ids(s: &AppState) -> Vec<&str> {
    let chat = s.chat.as_ref().map(|_| s.config.model_id.as_str());
    let embed = s
        .embed
        .as_ref()
        .map(|_| s.config.embedding_model_id.as_str());
    chat.into_iter().chain(embed).collect()
}

fn model_object(s: &AppState, id: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": s.created,
        "owned_by": "flint",
    })
}

async fn models(State(s): State<Shared>) -> Json<Value> {
    let data: Vec<Value> = model_ids(&s)
        .into_iter()
        .map(|id| model_object(&s, id))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn model(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    if model_ids(&s).contains(&id.as_str()) {
        Json(model_object(&s, &id)).into_response()
    } else {
        unknown_model(&id).into_response()
    }
}

fn unknown_model(id: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("The model `{id}` does not exist or you do not have access to it."),
    )
    .with_code("model_not_found");
    e.param = Some("model".into());
    e
}

/// The body as bytes, or the OpenAI-shaped error for a body that is too large or unreadable.
fn body_bytes(
    body: std::result::Result<Bytes, BytesRejection>,
    limit: usize,
) -> std::result::Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::new(r.status(), "invalid_request_error", r.body_text())
        }
    })
}

/// Which endpoint a generation answers, for the response shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn chat_completions(
    State(s): State<Shared>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let r = (|| {
        let body = body_bytes(body, s.config.max_body_bytes)?;
        let m = api::parse_object(&body)?;
        let chat = chat_state(&s)?;
        let mut req = api::parse_common(&m, true)?;
        let messages = api::parse_messages(&m)?;
        constrain(chat, &mut req)?;
        let tools = req.tools.take();
        Ok::<_, ApiError>((req, Prompt::Chat(messages, tools)))
    })();
    match r {
        Ok((req, prompt)) => generate(s, Kind::Chat, req, prompt).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(
    State(s): State<Shared>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let r = (|| {
        let body = body_bytes(body, s.config.max_body_bytes)?;
        let m = api::parse_object(&body)?;
        let chat = chat_state(&s)?;
        let mut req = api::parse_common(&m, false)?;
        let prompt = api::parse_prompt(&m)?;
        constrain(chat, &mut req)?;
        Ok::<_, ApiError>((req, prompt))
    })();
    match r {
        Ok((req, prompt)) => generate(s, Kind::Text, req, prompt).await,
        Err(e) => e.into_response(),
    }
}

/// The chat model's side, or the 400 of a server that has only an embedding model.
fn chat_state(s: &AppState) -> std::result::Result<&ChatState, ApiError> {
    s.chat.as_ref().ok_or_else(|| {
        ApiError::invalid(
            format!(
                "This server has no chat model: `{}` is an embedding model; use /v1/embeddings.",
                s.config.embedding_model_id
            ),
            Some("model"),
        )
        .with_code("model_not_supported")
    })
}

/// Compiles what the request constrains decoding with ([`crate::tools::constrain`]): a grammar
/// flint cannot compile is a 400 before the request is queued.
fn constrain(s: &ChatState, req: &mut GenRequest) -> std::result::Result<(), ApiError> {
    let c = crate::tools::constrain(
        &s.vocab,
        s.syntax,
        req.tools.as_ref(),
        req.response_format.as_ref(),
    )
    .map_err(api::field_error)?;
    req.opts.grammar = c.grammar;
    req.opts.tools = c.tools;
    Ok(())
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// A unique-enough response id.
fn response_id(kind: Kind) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    };
    format!("{prefix}-{t:x}{n:04x}")
}

/// Admits a request, queues it for the worker and answers it, whole or streamed.
async fn generate(s: Shared, kind: Kind, req: GenRequest, prompt: Prompt) -> Response {
    let Some(chat) = &s.chat else {
        return ApiError::server("no chat model").into_response(); // the handlers checked
    };
    if req.model != s.config.model_id {
        if s.embed.is_some() && req.model == s.config.embedding_model_id {
            return not_for(&req.model, "an embedding model", "/v1/embeddings").into_response();
        }
        return unknown_model(&req.model).into_response();
    }
    let Some(slot) = Slot::try_take(&chat.counters, s.config.max_concurrency) else {
        return busy();
    };
    let (tx, mut rx) = unbounded_channel();
    let job = Job {
        admitted: std::time::Instant::now(),
        prompt,
        max_tokens: req.max_tokens,
        opts: req.opts,
        n: req.n,
        logprobs: req.logprobs,
        events: tx,
        _slot: slot,
    };
    match chat.jobs.try_send(job) {
        Ok(()) => {}
        Err(std::sync::mpsc::TrySendError::Full(_)) => return busy(),
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
            return ApiError::server("the generation worker has stopped").into_response()
        }
    }
    // The first event says whether the prompt was accepted: errors before it are the client's.
    let (prompt_tokens, prompt_chars) = match rx.recv().await {
        Some(Event::Started {
            prompt_tokens,
            prompt_chars,
        }) => (prompt_tokens, prompt_chars),
        Some(Event::Error(e)) => return e.into_response(),
        _ => return ApiError::server("the generation worker dropped the request").into_response(),
    };
    let meta = Meta {
        id: response_id(kind),
        created: now(),
        model: s.config.model_id.clone(),
        kind,
        prompt_tokens,
        prompt_chars,
        n: req.n,
        logprobs: req.logprobs.is_some(),
    };
    if req.stream {
        stream_response(meta, req.include_usage, rx)
    } else {
        whole_response(meta, rx).await
    }
}

/// The 400 of a request naming a model served for another endpoint.
fn not_for(id: &str, what: &str, endpoint: &str) -> ApiError {
    ApiError::invalid(
        format!("The model `{id}` is {what}; use {endpoint}."),
        Some("model"),
    )
    .with_code("model_not_supported")
}

/// `POST /v1/embeddings`: the request's inputs in one call of the embedding worker.
async fn embeddings(
    State(s): State<Shared>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let r = (|| {
        let body = body_bytes(body, s.config.max_body_bytes)?;
        let m = api::parse_object(&body)?;
        let Some(e) = &s.embed else {
            return Err(ApiError::invalid(
                format!(
                    "This server has no embedding model (`{}` is a chat model); start flint \
                     serve with --embedding-model.",
                    s.config.model_id
                ),
                Some("model"),
            )
            .with_code("model_not_supported"));
        };
        let req = api::parse_embeddings(&m)?;
        if req.model != s.config.embedding_model_id {
            if s.chat.is_some() && req.model == s.config.model_id {
                return Err(not_for(
                    &req.model,
                    "a chat model, not an embedding model",
                    format!("`{}` for embeddings", s.config.embedding_model_id).as_str(),
                ));
            }
            return Err(unknown_model(&req.model));
        }
        Ok::<_, ApiError>((e, req))
    })();
    let (e, req) = match r {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let EmbedRequest {
        model,
        inputs,
        base64,
        opts,
    } = req;
    let Some(slot) = Slot::try_take(&e.counters, s.config.max_concurrency) else {
        return busy();
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = embed::EmbedJob {
        inputs,
        opts,
        reply: tx,
        slot,
    };
    match e.jobs.try_send(job) {
        Ok(()) => {}
        Err(std::sync::mpsc::TrySendError::Full(_)) => return busy(),
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
            return ApiError::server("the embedding worker has stopped").into_response()
        }
    }
    let out = match rx.await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => {
            return ApiError::server("the embedding worker dropped the request").into_response()
        }
    };
    embeddings_response(&model, out, base64)
}

/// OpenAI's embeddings list. Floats are written as f32s (the shortest text that reads back as the
/// same f32), not widened to f64 first.
fn embeddings_response(model: &str, out: crate::embed::Embeddings, base64: bool) -> Response {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Vector {
        Float(Vec<f32>),
        Base64(String),
    }
    #[derive(serde::Serialize)]
    struct Item {
        object: &'static str,
        index: usize,
        embedding: Vector,
    }
    #[derive(serde::Serialize)]
    struct Usage {
        prompt_tokens: usize,
        total_tokens: usize,
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item>,
        model: &'a str,
        usage: Usage,
    }
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Item {
            object: "embedding",
            index,
            embedding: if base64 {
                Vector::Base64(crate::web::embeddings::base64_f32(&v))
            } else {
                Vector::Float(v)
            },
        })
        .collect();
    let list = List {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens: out.prompt_tokens,
            total_tokens: out.prompt_tokens,
        },
    };
    match serde_json::to_vec(&list) {
        Ok(body) => {
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::server(e.to_string()).into_response(),
    }
}

fn busy() -> Response {
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "The server is at its --max-concurrency limit; retry shortly.",
    )
    .with_code("rate_limit_exceeded")
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// What every response object of one request repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    prompt_tokens: usize,
    /// Characters of the prompt's text (completions' `text_offset` starts there).
    prompt_chars: usize,
    /// Choices (`n`).
    n: usize,
    /// Whether the request asked for logprobs.
    logprobs: bool,
}

/// Completions' `text_offset` of one choice: each token's offset in characters from the start
/// of prompt + completion text, as OpenAI counts them (a character split over tokens counts at
/// the token that completes it).
struct TextOffset {
    /// Characters of the prompt and of the valid UTF-8 the choice's text begins with.
    chars: usize,
    /// The text's bytes after those (a character not yet complete).
    rest: Vec<u8>,
}

impl TextOffset {
    fn new(prompt_chars: usize) -> Self {
        TextOffset {
            chars: prompt_chars,
            rest: Vec::new(),
        }
    }

    /// The offset of the next token, then that token's bytes appended (each byte decoded once).
    fn next(&mut self, token: &[u8]) -> usize {
        let at = self.chars;
        self.rest.extend_from_slice(token);
        let valid = match std::str::from_utf8(&self.rest) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&self.rest[..e.valid_up_to()]).unwrap_or(""),
        };
        self.chars += valid.chars().count();
        let taken = valid.len();
        self.rest.drain(..taken);
        at
    }
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// OpenAI's `logprobs` object for some tokens (null when not asked for). Chat:
    /// `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}`;
    /// completions: `{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`,
    /// offsets counted by `offset` ([`TextOffset`]).
    fn logprobs(&self, lps: &[TokenLogprob], offset: &mut TextOffset) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        match self.kind {
            Kind::Chat => {
                let content: Vec<Value> = lps
                    .iter()
                    .map(|t| {
                        let top: Vec<Value> = t
                            .top
                            .iter()
                            .map(|(tok, b, lp)| json!({"token": tok, "logprob": lp, "bytes": b}))
                            .collect();
                        json!({
                            "token": t.token,
                            "logprob": t.logprob,
                            "bytes": t.bytes,
                            "top_logprobs": top,
                        })
                    })
                    .collect();
                json!({"content": content, "refusal": null})
            }
            Kind::Text => {
                let mut offsets = Vec::with_capacity(lps.len());
                for t in lps {
                    offsets.push(offset.next(&t.bytes));
                }
                let top: Vec<Value> = lps
                    .iter()
                    .map(|t| {
                        let m: serde_json::Map<String, Value> = t
                            .top
                            .iter()
                            .map(|(tok, _, lp)| (tok.clone(), json!(lp)))
                            .collect();
                        Value::Object(m)
                    })
                    .collect();
                json!({
                    "tokens": lps.iter().map(|t| t.token.clone()).collect::<Vec<_>>(),
                    "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }

    /// Choice `index` of a whole response.
    fn choice(&self, index: usize, deltas: &[Delta], finish: &str, logprobs: Value) -> Value {
        let (content, calls) = crate::tools::collect(deltas);
        let text = content.clone().unwrap_or_default();
        match self.kind {
            Kind::Chat => json!({
                "index": index,
                "message": crate::tools::message_json(content.as_deref(), &calls),
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
            Kind::Text => json!({
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
        }
    }

    /// One streamed chunk of choice `index` with `text` (or the role, for the first chat
    /// chunk), its tokens' `logprobs` and `finish`.
    fn chunk(
        &self,
        index: usize,
        delta: Value,
        logprobs: Value,
        finish: Option<&str>,
        with_usage: bool,
    ) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish,
            }),
            Kind::Text => json!({
                "index": index,
                "text": delta.get("content").cloned().unwrap_or(json!("")),
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
        };
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [choice],
        });
        if with_usage {
            v["usage"] = Value::Null;
        }
        v
    }
}

async fn whole_response(meta: Meta, mut rx: UnboundedReceiver<Event>) -> Response {
    let n = meta.n;
    let mut all: Vec<Vec<Delta>> = (0..n).map(|_| Vec::new()).collect();
    let mut lps: Vec<Vec<TokenLogprob>> = (0..n).map(|_| Vec::new()).collect();
    let mut choices: Vec<Value> = vec![Value::Null; n];
    let (mut done, mut completion) = (0, 0);
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta {
                index,
                deltas,
                logprobs,
            } if index < n => {
                all[index].extend(deltas);
                lps[index].extend(logprobs);
            }
            Event::Done {
                index,
                completion_tokens,
                finish,
            } if index < n => {
                let mut offset = TextOffset::new(meta.prompt_chars);
                let lp = meta.logprobs(&lps[index], &mut offset);
                choices[index] = meta.choice(index, &all[index], finish.as_openai(), lp);
                completion += completion_tokens;
                done += 1;
                if done == n {
                    return Json(json!({
                        "id": meta.id,
                        "object": meta.object(false),
                        "created": meta.created,
                        "model": meta.model,
                        "system_fingerprint": null,
                        "choices": choices,
                        "usage": usage(meta.prompt_tokens, completion),
                    }))
                    .into_response();
                }
            }
            Event::Error(e) => return e.into_response(),
            _ => {}
        }
    }
    ApiError::server("the generation worker dropped the request").into_response()
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Server-sent events: a role chunk per choice (chat), content chunks, a finish chunk per
/// choice, an optional usage chunk, `data: [DONE]`. Dropping the body (client gone) drops `rx`,
/// which stops the worker.
fn stream_response(meta: Meta, include_usage: bool, rx: UnboundedReceiver<Event>) -> Response {
    struct St {
        offsets: Vec<TextOffset>,
        meta: Meta,
        rx: UnboundedReceiver<Event>,
        include_usage: bool,
        started: bool,
        /// Choices finished, and their tokens.
        finished: usize,
        completion_tokens: usize,
        done: bool,
    }
    let st = St {
        offsets: (0..meta.n)
            .map(|_| TextOffset::new(meta.prompt_chars))
            .collect(),
        meta,
        rx,
        include_usage,
        started: false,
        finished: 0,
        completion_tokens: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if !st.started {
            st.started = true;
            if st.meta.kind == Kind::Chat {
                let mut out = Vec::new();
                for index in 0..st.meta.n {
                    let c = st.meta.chunk(
                        index,
                        json!({"role": "assistant", "content": ""}),
                        Value::Null,
                        None,
                        st.include_usage,
                    );
                    out.extend_from_slice(&sse(&c));
                }
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), st));
            }
        }
        let out = match st.rx.recv().await {
            Some(Event::Delta {
                index,
                deltas,
                logprobs,
            }) if index < st.meta.n => {
                let mut lp = st.meta.logprobs(&logprobs, &mut st.offsets[index]);
                let mut out = Vec::new();
                // tokens whose text was all held back still report their logprobs
                let empty = [Delta::Text(String::new())];
                let deltas = if deltas.is_empty() {
                    &empty[..]
                } else {
                    &deltas[..]
                };
                for d in deltas {
                    let delta = crate::tools::delta_json(d);
                    let lp = std::mem::take(&mut lp);
                    let c = st.meta.chunk(index, delta, lp, None, st.include_usage);
                    out.extend_from_slice(&sse(&c));
                }
                Bytes::from(out)
            }
            Some(Event::Done {
                index,
                completion_tokens,
                finish,
            }) if index < st.meta.n => {
                st.finished += 1;
                st.completion_tokens += completion_tokens;
                let mut out = sse(&st.meta.chunk(
                    index,
                    json!({}),
                    Value::Null,
                    Some(finish.as_openai()),
                    st.include_usage,
                ))
                .to_vec();
                if st.finished == st.meta.n {
                    st.done = true;
                    if st.include_usage {
                        let u = json!({
                            "id": st.meta.id,
                            "object": st.meta.object(true),
                            "created": st.meta.created,
                            "model": st.meta.model,
                            "system_fingerprint": null,
                            "choices": [],
                            "usage": usage(st.meta.prompt_tokens, st.completion_tokens),
                        });
                        out.extend_from_slice(&sse(&u));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                }
                Bytes::from(out)
            }
            Some(Event::Error(e)) => {
                st.done = true;
                let mut out = sse(&e.body()).to_vec();
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            Some(_) => Bytes::new(),
            None => {
                st.done = true;
                let e = ApiError::server("the generation worker dropped the request");
                let mut out = sse(&e.body()).to_vec();
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
        };
        Some((Ok(out), st))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
