//! The JavaScript-facing API (wasm-bindgen), wrapped by `pkg/core.js`: [`load_model`] streams a
//! GGUF through a JavaScript `read(offset, length)` function and holds what it was, a generation
//! model or an embedding model; [`WebEngine::generate`] runs the engine's own token loop with a
//! text callback, [`WebEngine::embed`] the embedder. Every failure is a JavaScript `Error` whose
//! message names the problem.

use super::loader::{self, LoadStats, Loaded, RangeReader};
use super::options::parse_load_options;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::constrain::ConstraintVocab;
use crate::embed::Embedder;
use crate::engine::{Engine, FinishReason, GenerateOptions};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::sampling::SamplingParams;

use crate::tools::{Delta, FieldError, Syntax, ToolSpec};
use js_sys::{Function, Promise, Uint8Array};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

/// A request field's error, naming the field as the server's 400s do.
fn field_error(e: FieldError) -> Error {
    Error::InvalidArgument(format!("{} ({})", e.message, e.param))
}

fn js_error(e: Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// The message of a thrown JavaScript value.
fn message(v: &JsValue) -> String {
    match v.dyn_ref::<js_sys::Error>() {
        Some(e) => String::from(e.message()),
        None => v.as_string().unwrap_or_else(|| format!("{v:?}")),
    }
}

/// Byte ranges from a JavaScript `read(offset, length) => Promise<Uint8Array>` (pkg/core.js: fetch
/// with Range headers through the Cache API, or a file in Node).
struct JsReader {
    url: String,
    size: u64,
    read: Function,
}

impl RangeReader for JsReader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let fail = |what: String| Error::Io {
            path: self.url.clone(),
            source: std::io::Error::other(what),
        };
        let (o, l) = (
            JsValue::from_f64(offset as f64),
            JsValue::from_f64(len as f64),
        );
        let promise = self
            .read
            .call2(&JsValue::NULL, &o, &l)
            .map_err(|e| fail(message(&e)))?;
        let value = JsFuture::from(Promise::resolve(&promise))
            .await
            .map_err(|e| fail(message(&e)))?;
        let bytes = value
            .dyn_into::<Uint8Array>()
            .map_err(|_| fail(format!("read({offset}, {len}) did not give a Uint8Array")))?;
        if bytes.length() as usize != len {
            return Err(fail(format!(
                "read({offset}, {len}) gave {} bytes (the file changed or the server ignores Range)",
                bytes.length()
            )));
        }
        Ok(bytes.to_vec())
    }
}

/// What [`WebEngine::generate`] continues (JSON): chat messages through the model's template,
/// raw text, or token ids.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Prompt {
    Messages(Vec<ChatMessage>),
    Text(String),
    Tokens(Vec<u32>),
}

/// Options of [`WebEngine::generate`] (JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebGenerateOptions {
    max_tokens: usize,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    sampling: SamplingParams,
    /// OpenAI's `tools`, `tool_choice`, `parallel_tool_calls` and `response_format`, as the
    /// request gave them: read by the same code as the server's ([`crate::tools`]).
    #[serde(default)]
    tools: Option<serde_json::Value>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    parallel_tool_calls: Option<serde_json::Value>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
    /// Speculative decoding ([`SpecOptions::from_json`]).
    #[serde(default)]
    speculative: Option<serde_json::Value>,
}

/// Options of [`WebEngine::bench`] (JSON; llama-bench's -p, -n, -d, -r). The lengths are lists
/// (one test per value; pkg/core.js makes a single number a list).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WebBenchOptions {
    #[serde(default = "default_n_prompt")]
    n_prompt: Vec<usize>,
    #[serde(default = "default_n_gen")]
    n_gen: Vec<usize>,
    #[serde(default = "default_n_depth")]
    n_depth: Vec<usize>,
    #[serde(default = "default_reps")]
    repetitions: usize,
    #[serde(default = "default_warmup")]
    warmup: bool,
}

fn default_n_prompt() -> Vec<usize> {
    vec![512]
}
fn default_n_gen() -> Vec<usize> {
    vec![128]
}
fn default_n_depth() -> Vec<usize> {
    vec![0]
}
fn default_reps() -> usize {
    5
}
fn default_warmup() -> bool {
    true
}

impl WebBenchOptions {
    fn spec(&self) -> crate::bench::BenchSpec {
        crate::bench::BenchSpec {
            n_prompt: self.n_prompt.clone(),
            n_gen: self.n_gen.clone(),
            n_depth: self.n_depth.clone(),
            reps: self.repetitions,
            warmup: self.warmup,
        }
    }
}

/// A generation model and what its requests need besides the engine.
struct Chat {
    engine: Engine,
    template: Option<Result<ChatTemplate>>,
    /// The syntax the model writes tool calls in (detected from its template).
    syntax: Syntax,
    /// The vocabulary for grammars, built on first use.
    vocab: Option<ConstraintVocab>,
}

/// What the loaded file holds.
enum Kind {
    Chat(Box<Chat>),
    Embed(Box<Embedder>),
}

struct Inner {
    kind: Kind,
    /// Where the model came from (the report and the errors name it).
    url: String,
    stats: LoadStats,
}

/// A loaded model on the GPU. Calls are serialized by pkg/core.js; one made while another is
/// running fails with a clear error instead of waiting.
#[wasm_bindgen]
pub struct WebEngine {
    inner: Rc<RefCell<Option<Inner>>>,
}

/// Opens the WebGPU device and streams the GGUF at `url` (only used in messages) of `size` bytes
/// through `read(offset, length) => Promise<Uint8Array>` to it. `options` is a JSON object (see
/// [`parse_load_options`]); `progress(loadedBytes, totalBytes)` is called as tensors arrive.
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(
    url: String,
    size: f64,
    read: Function,
    options: String,
    progress: Function,
) -> std::result::Result<WebEngine, JsValue> {
    let load = parse_load_options(&options).map_err(js_error)?;
    let gpu = Gpu::new_async(&load.gpu).await.map_err(|e| match e {
        Error::NoAdapter(m) => JsError::new(&format!(
            "no WebGPU adapter: the browser (or Node's `webgpu` package) offers none ({m}); \
             WebGPU may be disabled or unsupported here"
        ))
        .into(),
        e => js_error(e),
    })?;
    let mut reader = JsReader {
        url: url.clone(),
        size: size as u64,
        read,
    };
    let mut on_progress = |done: u64, total: u64| {
        let _ = progress.call2(
            &JsValue::NULL,
            &JsValue::from_f64(done as f64),
            &JsValue::from_f64(total as f64),
        );
    };
    let (loaded, stats) = loader::load(&mut reader, gpu, &load, &mut on_progress)
        .await
        .map_err(js_error)?;
    let kind = match loaded {
        Loaded::Embedder(e) => Kind::Embed(e),
        Loaded::Engine(engine) => {
            let template = engine.chat_template.as_deref().map(|src| {
                let tok = &engine.tokenizer;
                let piece =
                    |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
                ChatTemplate::new(src, &piece(tok.bos_id()), &piece(tok.eos_id()))
            });
            let syntax = Syntax::detect(engine.chat_template.as_deref().unwrap_or(""));
            Kind::Chat(Box::new(Chat {
                engine: *engine,
                template,
                syntax,
                vocab: None,
            }))
        }
    };
    Ok(WebEngine {
        inner: Rc::new(RefCell::new(Some(Inner { kind, url, stats }))),
    })
}

fn busy() -> JsValue {
    JsError::new("the engine is unloaded or busy with another request").into()
}

impl Chat {
    fn tokens(&self, prompt: Prompt, tools: Option<&ToolSpec>) -> Result<Vec<u32>> {
        let tok = &self.engine.tokenizer;
        let ids = match prompt {
            Prompt::Messages(m) => {
                crate::tools::check_messages(&m).map_err(field_error)?;
                let text = match &self.template {
                    Some(Ok(t)) => crate::tools::render(t, self.syntax, &m, tools)?,
                    Some(Err(e)) => {
                        return Err(Error::Template(format!(
                            "the model's chat template does not compile: {e}"
                        )))
                    }
                    None => {
                        return Err(Error::InvalidArgument(
                            "the model has no chat template: use completions with a prompt".into(),
                        ))
                    }
                };
                tok.encode(&text, false)?
            }
            Prompt::Text(t) => tok.encode(&t, true)?,
            Prompt::Tokens(ids) => ids,
        };
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        Ok(ids)
    }
}

impl Inner {
    fn gpu(&self) -> &Gpu {
        match &self.kind {
            Kind::Chat(c) => &c.engine.gpu,
            Kind::Embed(e) => &e.gpu,
        }
    }

    /// The generation model, or an error saying this one embeds.
    fn chat(&mut self) -> Result<&mut Chat> {
        match &mut self.kind {
            Kind::Chat(c) => Ok(c),
            Kind::Embed(e) => Err(Error::InvalidArgument(format!(
                "{} is an embedding model ({}): it gives vectors, not text. Use \
                 embeddings.create; chat, completions and bench need a generation model",
                self.url,
                e.info().architecture
            ))),
        }
    }

    /// The embedding model, or an error saying this one generates.
    fn embedder(&mut self) -> Result<&mut Embedder> {
        match &mut self.kind {
            Kind::Embed(e) => Ok(e),
            Kind::Chat(c) => Err(Error::InvalidArgument(format!(
                "{} is a generation model ({}), not an embedding model: embeddings.create needs \
                 one (an encoder such as BERT, or a GGUF with `<arch>.pooling_type`)",
                self.url,
                c.engine.model.info().architecture
            ))),
        }
    }

    fn info(&self) -> serde_json::Value {
        let g = self.gpu();
        let params = |p: Vec<(String, String)>| {
            p.into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect::<serde_json::Map<_, _>>()
        };
        let (model, ctx) = match &self.kind {
            Kind::Chat(c) => {
                let info = c.engine.model.info();
                let model = json!({
                    "kind": "generation",
                    "architecture": info.architecture,
                    "params": params(info.params),
                    "vocab": c.engine.tokenizer.vocab_size(),
                    "hasChatTemplate": c.template.is_some(),
                });
                (model, c.engine.ctx)
            }
            Kind::Embed(e) => {
                let info = e.info();
                let model = json!({
                    "kind": "embedding",
                    "architecture": info.architecture,
                    "params": params(info.params),
                    "vocab": e.tokenizer.vocab_size(),
                    "hasChatTemplate": false,
                    "embedding": {
                        "dimensions": e.cfg.dims,
                        "pooling": e.cfg.pooling.name(),
                        "normalize": e.cfg.normalize,
                        "maxTokens": e.cfg.max_tokens,
                    },
                });
                (model, e.cfg.max_tokens)
            }
        };
        json!({
            "adapter": g.info.name,
            "backend": format!("{:?}", g.info.backend),
            "deviceType": format!("{:?}", g.info.device_type),
            "caps": {
                "shaderF16": g.caps.f16,
                "subgroups": g.caps.subgroups,
                "subgroupMatvec": g.caps.subgroup_matvec,
                "maxStorageBufferBindingSize": g.caps.max_binding,
                "maxBufferSize": g.caps.max_buffer,
                "maxComputeInvocationsPerWorkgroup": g.caps.max_invocations,
                // what the kernels/kvCache/matmul/sampleOn load options resolved to
                "kernelLayout": if g.caps.rows_kernels { "cpu" } else { "gpu" },
                "kvCache": g.caps.kv_cache_label(),
                "matmul": g.caps.matmul_label(),
                "sampleOn": if g.caps.gpu_sampling { "gpu" } else { "cpu" },
            },
            "kernels": g.compiled_kernels(),
            "model": model,
            "ctx": ctx,
            "loadMs": self.stats.load_time.as_secs_f64() * 1e3,
            "headerBytes": self.stats.header_bytes,
            "tensorBytes": self.stats.tensor_bytes,
            "largestReadBytes": self.stats.max_read,
            "gpuWeightBytes": self.stats.gpu_bytes,
        })
    }
}

#[wasm_bindgen]
impl WebEngine {
    /// Adapter, capabilities, the kernels compiled so far, model and load statistics (JSON).
    pub fn info(&self) -> std::result::Result<String, JsValue> {
        let slot = self.inner.try_borrow().map_err(|_| busy())?;
        let inner = slot.as_ref().ok_or_else(busy)?;
        Ok(inner.info().to_string())
    }

    /// Token ids of `prompt` (JSON, as for `generate`), e.g. to count tokens. An embedding
    /// model's are those `embed` runs (the model's special tokens around the text).
    pub fn tokenize(&self, prompt: String) -> std::result::Result<Vec<u32>, JsValue> {
        let slot = self.inner.try_borrow().map_err(|_| busy())?;
        let inner = slot.as_ref().ok_or_else(busy)?;
        let p: Prompt = serde_json::from_str(&prompt)
            .map_err(|e| js_error(Error::InvalidArgument(format!("prompt: {e}"))))?;
        match (&inner.kind, p) {
            (Kind::Chat(c), p) => c.tokens(p, None),
            (Kind::Embed(e), Prompt::Text(t)) => e.tokenizer.encode(&t, true),
            (Kind::Embed(_), Prompt::Tokens(ids)) => Ok(ids),
            (Kind::Embed(_), Prompt::Messages(_)) => Err(Error::InvalidArgument(
                "an embedding model has no chat template: tokenize a prompt".into(),
            )),
        }
        .map_err(js_error)
    }

    /// Generates after `prompt` (JSON `{"messages": [...]}`, `{"text": "..."}` or
    /// `{"tokens": [...]}`) with `options` (JSON `{"max_tokens", "stop", "sampling"}`).
    /// `on_text(piece)` gets the text as it is decoded; returning `false` stops (cancellation).
    /// Resolves to a JSON result: text, token ids, finish reason, counts and timings.
    pub fn generate(&self, prompt: String, options: String, on_text: Function) -> Promise {
        let slot = self.inner.clone();
        future_to_promise(async move {
            let parsed = serde_json::from_str::<Prompt>(&prompt)
                .map_err(|e| Error::InvalidArgument(format!("prompt: {e}")))
                .and_then(|p| {
                    let o = serde_json::from_str::<WebGenerateOptions>(&options)
                        .map_err(|e| Error::InvalidArgument(format!("options: {e}")))?;
                    Ok((p, o))
                });
            let (prompt, o) = parsed.map_err(js_error)?;
            // Taken out for the duration: a second call meanwhile is refused, never interleaved.
            let mut inner = slot
                .try_borrow_mut()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(busy)?;
            let result = match inner.chat() {
                Ok(chat) => {
                    let result = run(chat, prompt, o, &on_text).await;
                    if result.is_err() {
                        // The KV cache may hold a half-written step.
                        chat.engine.reset();
                    }
                    result
                }
                Err(e) => Err(js_error(e)),
            };
            if let Ok(mut s) = slot.try_borrow_mut() {
                *s = Some(inner);
            }
            result.map(|v| JsValue::from_str(&v.to_string()))
        })
    }

    /// Measures prefill and decode tokens/s as `flint bench` does ([`crate::bench`]) with
    /// `options` (JSON `{"nPrompt", "nGen", "nDepth", "repetitions", "warmup"}`, all optional:
    /// [512], [128], [0], 5, true); `on_run(test, run, runs, tokensPerSecond)` is called after each
    /// repetition. Resolves to the JSON report `flint bench --json` prints. The KV cache is
    /// emptied.
    pub fn bench(&self, options: String, on_run: Function) -> Promise {
        let slot = self.inner.clone();
        future_to_promise(async move {
            let spec = serde_json::from_str::<WebBenchOptions>(&options)
                .map_err(|e| Error::InvalidArgument(format!("bench options: {e}")))
                .and_then(|o| {
                    let spec = o.spec();
                    spec.check_named(&crate::bench::SpecNames::WEB)?;
                    Ok(spec)
                })
                .map_err(js_error)?;
            let mut inner = slot
                .try_borrow_mut()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(busy)?;
            let mut report_run = |test: &str, run: usize, runs: usize, tps: f64| {
                let args = js_sys::Array::of4(
                    &JsValue::from_str(test),
                    &JsValue::from_f64(run as f64),
                    &JsValue::from_f64(runs as f64),
                    &JsValue::from_f64(tps),
                );
                let _ = on_run.apply(&JsValue::NULL, &args);
            };
            let sizes = inner.stats.sizes.clone();
            let model = inner.url.clone();
            let result = match inner.chat() {
                Ok(chat) => {
                    let e = &mut chat.engine;
                    let result = crate::bench::run(e, &spec, &sizes, model, &mut report_run).await;
                    if result.is_err() {
                        e.reset();
                    }
                    result
                }
                Err(e) => Err(e),
            };
            if let Ok(mut s) = slot.try_borrow_mut() {
                *s = Some(inner);
            }
            let report = result.map_err(js_error)?;
            serde_json::to_string(&report)
                .map(|t| JsValue::from_str(&t))
                .map_err(|e| js_error(Error::InvalidArgument(format!("encoding the report: {e}"))))
        })
    }

    /// Embeds `request` (JSON `{"input", "encoding_format", "dimensions", "truncate"}`, read by
    /// [`super::embeddings::parse_request`]; the embedder checks the values). Resolves to OpenAI's
    /// embeddings list in JSON, without `model` (pkg/index.js adds it).
    pub fn embed(&self, request: String) -> Promise {
        let slot = self.inner.clone();
        future_to_promise(async move {
            let mut inner = slot
                .try_borrow_mut()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(busy)?;
            let result = match inner.embedder() {
                Ok(e) => match super::embeddings::parse_request(&request) {
                    Ok(req) => e
                        .embed_async(&req.inputs, &req.opts)
                        .await
                        .map(|out| super::embeddings::response_json(&out, req.encoding)),
                    Err(err) => Err(err),
                },
                Err(err) => Err(err),
            };
            if let Ok(mut s) = slot.try_borrow_mut() {
                *s = Some(inner);
            }
            result
                .map(|v| JsValue::from_str(&v.to_string()))
                .map_err(js_error)
        })
    }

    /// Empties the KV cache (an embedding model keeps nothing between calls).
    pub fn reset(&self) -> std::result::Result<(), JsValue> {
        let mut slot = self.inner.try_borrow_mut().map_err(|_| busy())?;
        if let Kind::Chat(c) = &mut slot.as_mut().ok_or_else(busy)?.kind {
            c.engine.reset();
        }
        Ok(())
    }

    /// Frees the GPU memory now (destroys the device); later calls fail with a clear error.
    pub fn unload(&self) -> std::result::Result<(), JsValue> {
        let mut slot = self.inner.try_borrow_mut().map_err(|_| busy())?;
        if let Some(inner) = slot.take() {
            inner.gpu().device.destroy();
        }
        Ok(())
    }
}

async fn run(
    chat: &mut Chat,
    prompt: Prompt,
    o: WebGenerateOptions,
    on_text: &Function,
) -> std::result::Result<serde_json::Value, JsValue> {
    let tools = ToolSpec::parse(
        o.tools.as_ref(),
        o.tool_choice.as_ref(),
        o.parallel_tool_calls.as_ref(),
    )
    .map_err(|e| js_error(field_error(e)))?;
    let format = crate::tools::response_format(o.response_format.as_ref())
        .map_err(|e| js_error(field_error(e)))?;
    if tools.is_some() && !matches!(prompt, Prompt::Messages(_)) {
        return Err(js_error(Error::InvalidArgument(
            "tools need chat messages (chat.completions), not a prompt (tools)".into(),
        )));
    }
    let ids = chat.tokens(prompt, tools.as_ref()).map_err(js_error)?;
    let spec = crate::spec::SpecOptions::from_json(o.speculative.as_ref()).map_err(js_error)?;
    let mut opts = GenerateOptions {
        max_tokens: o.max_tokens,
        sampling: o.sampling,
        stop: o.stop,
        spec,
        ..Default::default()
    };
    if tools.is_some() || format.is_some() {
        if chat.vocab.is_none() {
            chat.vocab = Some(ConstraintVocab::new(&chat.engine.tokenizer).map_err(js_error)?);
        }
        let vocab = chat.vocab.as_ref().expect("built above");
        let c = crate::tools::constrain(vocab, chat.syntax, tools.as_ref(), format.as_ref())
            .map_err(|e| js_error(field_error(e)))?;
        opts.grammar = c.grammar;
        opts.tools = c.tools;
    }
    // Each piece goes to JavaScript as OpenAI's delta object, in JSON.
    let mut callback = |d: &Delta| {
        let delta = crate::tools::delta_json(d).to_string();
        match on_text.call1(&JsValue::NULL, &JsValue::from_str(&delta)) {
            Ok(v) => v.as_bool() != Some(false),
            Err(_) => false,
        }
    };
    let g = chat
        .engine
        .generate_async(&ids, &opts, &mut callback)
        .await
        .map_err(js_error)?;
    let content = crate::tools::answer_content(g.text.clone(), !g.tool_calls.is_empty());
    Ok(json!({
        "text": g.text,
        "message": crate::tools::message_json(content.as_deref(), &g.tool_calls),
        "tokens": g.tokens,
        "finishReason": match g.finish {
            FinishReason::Cancelled => "cancelled",
            f => f.as_openai(),
        },
        "promptTokens": g.prompt_tokens,
        "prefilledTokens": g.prefilled_tokens,
        "prefillMs": g.prefill_time.as_secs_f64() * 1e3,
        "decodeMs": g.decode_time.as_secs_f64() * 1e3,
        "prefillTps": g.prefill_tps(),
        "decodeTps": g.decode_tps(),
        "draftTokens": g.spec.drafted,
        "draftAccepted": g.spec.accepted,
    }))
}
