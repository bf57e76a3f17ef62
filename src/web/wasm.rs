//! The JavaScript-facing API (wasm-bindgen), wrapped by `pkg/core.js`: [`load_model`] streams a
//! GGUF through a JavaScript `read(offset, length)` function, [`WebEngine::generate`] runs the
//! engine's own token loop with a text callback. Every failure is a JavaScript `Error` whose
//! message names the problem.

use super::loader::{self, LoadStats, RangeReader};
use super::options::parse_load_options;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::constrain::ConstraintVocab;
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

struct Inner {
    engine: Engine,
    /// Where the model came from (the report names it).
    url: String,
    template: Option<Result<ChatTemplate>>,
    /// The syntax the model writes tool calls in (detected from its template).
    syntax: Syntax,
    /// The vocabulary for grammars, built on first use.
    vocab: Option<ConstraintVocab>,
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
    let (engine, stats) = loader::load(&mut reader, gpu, &load, &mut on_progress)
        .await
        .map_err(js_error)?;
    let template = engine.chat_template.as_deref().map(|src| {
        let tok = &engine.tokenizer;
        let piece = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
        ChatTemplate::new(src, &piece(tok.bos_id()), &piece(tok.eos_id()))
    });
    let syntax = Syntax::detect(engine.chat_template.as_deref().unwrap_or(""));
    Ok(WebEngine {
        inner: Rc::new(RefCell::new(Some(Inner {
            engine,
            url,
            template,
            syntax,
            vocab: None,
            stats,
        }))),
    })
}

fn busy() -> JsValue {
    JsError::new("the engine is unloaded or busy with another request").into()
}

impl Inner {
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

    fn info(&self) -> serde_json::Value {
        let e = &self.engine;
        let g = &e.gpu;
        let info = e.model.info();
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
            "model": {
                "architecture": info.architecture,
                "params": info.params.into_iter().map(|(k, v)| (k, v.into())).collect::<serde_json::Map<_, _>>(),
                "vocab": e.tokenizer.vocab_size(),
                "hasChatTemplate": self.template.is_some(),
            },
            "ctx": e.ctx,
            "loadMs": e.load_time.as_secs_f64() * 1e3,
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

    /// Token ids of `prompt` (JSON, as for `generate`), e.g. to count tokens.
    pub fn tokenize(&self, prompt: String) -> std::result::Result<Vec<u32>, JsValue> {
        let slot = self.inner.try_borrow().map_err(|_| busy())?;
        let inner = slot.as_ref().ok_or_else(busy)?;
        let p: Prompt = serde_json::from_str(&prompt)
            .map_err(|e| js_error(Error::InvalidArgument(format!("prompt: {e}"))))?;
        inner.tokens(p, None).map_err(js_error)
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
            let result = run(&mut inner, prompt, o, &on_text).await;
            if result.is_err() {
                // The KV cache may hold a half-written step.
                inner.engine.reset();
            }
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
            let result =
                crate::bench::run(&mut inner.engine, &spec, &sizes, model, &mut report_run).await;
            if result.is_err() {
                inner.engine.reset();
            }
            if let Ok(mut s) = slot.try_borrow_mut() {
                *s = Some(inner);
            }
            let report = result.map_err(js_error)?;
            serde_json::to_string(&report)
                .map(|t| JsValue::from_str(&t))
                .map_err(|e| js_error(Error::InvalidArgument(format!("encoding the report: {e}"))))
        })
    }

    /// Empties the KV cache.
    pub fn reset(&self) -> std::result::Result<(), JsValue> {
        let mut slot = self.inner.try_borrow_mut().map_err(|_| busy())?;
        slot.as_mut().ok_or_else(busy)?.engine.reset();
        Ok(())
    }

    /// Frees the GPU memory now (destroys the device); later calls fail with a clear error.
    pub fn unload(&self) -> std::result::Result<(), JsValue> {
        let mut slot = self.inner.try_borrow_mut().map_err(|_| busy())?;
        if let Some(inner) = slot.take() {
            inner.engine.gpu.device.destroy();
        }
        Ok(())
    }
}

async fn run(
    inner: &mut Inner,
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
    let ids = inner.tokens(prompt, tools.as_ref()).map_err(js_error)?;
    let mut opts = GenerateOptions {
        max_tokens: o.max_tokens,
        sampling: o.sampling,
        stop: o.stop,
        ..Default::default()
    };
    if tools.is_some() || format.is_some() {
        if inner.vocab.is_none() {
            inner.vocab = Some(ConstraintVocab::new(&inner.engine.tokenizer).map_err(js_error)?);
        }
        let vocab = inner.vocab.as_ref().expect("built above");
        let c = crate::tools::constrain(vocab, inner.syntax, tools.as_ref(), format.as_ref())
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
    let g = inner
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
    }))
}
