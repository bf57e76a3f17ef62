//! OpenAI request parsing and error shapes.
//!
//! Requests are parsed from a [`serde_json::Value`] by hand rather than derived, so that every
//! wrong field type gets an error naming the field (`param`), as OpenAI's API does.

use crate::chat::{ChatMessage, FunctionCall, ToolCall};
use crate::constrain::GrammarSpec;
use crate::embed::{EmbedInput, EmbedOptions};
use crate::engine::GenerateOptions;
use crate::sampling::SamplingParams;
use crate::tools::{FieldError, ToolSpec};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// An error in OpenAI's shape: `{"error":{"message","type","param","code"}}` with a status.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request_error`, optionally naming the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// A 500 `server_error`.
    pub fn server(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// Any status and type.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// Sets the machine-readable `code`.
    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A parsed `/v1/chat/completions` or `/v1/completions` request.
#[derive(Debug)]
pub struct GenRequest {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    /// Choices to generate (`n`).
    pub n: usize,
    /// Log-probabilities with this many alternatives per token (`None`: off).
    pub logprobs: Option<usize>,
    /// The grammar `response_format` asks for.
    pub response_format: Option<GrammarSpec>,
    /// `tools`, `tool_choice`, `parallel_tool_calls`.
    pub tools: Option<ToolSpec>,
    pub opts: GenerateOptions,
}

/// Parses a body into a JSON object, or the error OpenAI gives for malformed JSON.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
        .with_code("invalid_json")
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(
            ApiError::invalid("the request body must be a JSON object", None)
                .with_code("invalid_json"),
        ),
    }
}

fn wrong_type(field: &str, want: &str, got: &Value) -> ApiError {
    let got = crate::error::json_kind(got);
    ApiError::invalid(
        format!("Invalid type for '{field}': expected {want}, but got {got}."),
        Some(field),
    )
    .with_code("invalid_type")
}

/// A field that is absent or `null`.
fn get<'a>(m: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    m.get(field).filter(|v| !v.is_null())
}

fn opt_bool(m: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match get(m, field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong_type(field, "a boolean", v)),
    }
}

/// A number within `[lo, hi]`.
fn opt_num(m: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match get(m, field) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::invalid(
                    format!("'{field}' = {n} is out of range: it must be between {lo} and {hi}."),
                    Some(field),
                )
                .with_code("invalid_value"));
            }
            Ok(Some(x as f32))
        }
        Some(v) => Err(wrong_type(field, "a number", v)),
    }
}

/// An integer (a JSON number with no fraction).
fn opt_int(m: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    match get(m, field) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(u)) => Ok(Some(u as i64)), // seeds above i64::MAX wrap, as u64 bits
            _ => Err(wrong_type(field, "an integer", &Value::Number(n.clone()))),
        },
        Some(v) => Err(wrong_type(field, "an integer", v)),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match get(m, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(wrong_type(field, "a string", v)),
    }
}

/// `model`, which every endpoint requires.
fn required_model(m: &Map<String, Value>) -> Result<String, ApiError> {
    match get(m, "model") {
        None => Err(ApiError::invalid(
            "you must provide a model parameter",
            Some("model"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(wrong_type("model", "a string", v)),
    }
}

/// The fields both endpoints share: model, sampling, stop, limits, streaming.
pub fn parse_common(m: &Map<String, Value>, chat: bool) -> Result<GenRequest, ApiError> {
    let model = required_model(m)?;
    let stream = opt_bool(m, "stream")?.unwrap_or(false);
    let include_usage = match get(m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => opt_bool(o, "include_usage")
            .map_err(|_| {
                wrong_type(
                    "stream_options.include_usage",
                    "a boolean",
                    o.get("include_usage").unwrap_or(&Value::Null),
                )
            })?
            .unwrap_or(false),
        Some(v) => return Err(wrong_type("stream_options", "an object", v)),
    };
    if get(m, "stream_options").is_some() && !stream {
        return Err(ApiError::invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
        ));
    }
    let mut max_tokens = None;
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = opt_int(m, field)? {
            if n < 1 {
                return Err(ApiError::invalid(
                    format!("'{field}' = {n}: it must be at least 1."),
                    Some(field),
                )
                .with_code("invalid_value"));
            }
            max_tokens = Some(n as usize);
        }
    }
    if !chat && max_tokens.is_none() {
        max_tokens = Some(16); // OpenAI's default for legacy completions
    }
    // choices: at most the server's slots (the worker says so with its --parallel)
    let n = match opt_int(m, "n")? {
        None => 1,
        Some(n) if (1..=128).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                format!("'n' = {n} is out of range: it must be between 1 and 128."),
                Some("n"),
            ))
        }
    };
    // flint's extension: speculative decoding (on unless `false` / "off"; src/spec.rs)
    let spec = crate::spec::SpecOptions::from_json(m.get("speculative"))
        .map_err(|e| ApiError::invalid(e.to_string(), Some("speculative")))?;
    if spec.mode == crate::spec::SpecMode::Draft {
        return Err(ApiError::invalid(
            "`speculative` mode \"draft\": flint serve drafts by prompt lookup (\"ngram\"); it \
             loads no draft model",
            Some("speculative"),
        ));
    }
    let mut logprobs = None;
    let mut response_format = None;
    let mut tools = None;
    if chat {
        let on = opt_bool(m, "logprobs")?.unwrap_or(false);
        let top = opt_int(m, "top_logprobs")?;
        if let Some(k) = top {
            if !(0..=20).contains(&k) {
                return Err(ApiError::invalid(
                    format!("'top_logprobs' = {k}: it must be between 0 and 20."),
                    Some("top_logprobs"),
                )
                .with_code("invalid_value"));
            }
            if !on {
                return Err(ApiError::invalid(
                    "'top_logprobs' requires 'logprobs' to be true.",
                    Some("top_logprobs"),
                ));
            }
        }
        if on {
            logprobs = Some(top.unwrap_or(0) as usize);
        }
        response_format =
            crate::tools::response_format(m.get("response_format")).map_err(field_error)?;
        tools = ToolSpec::parse(
            m.get("tools"),
            m.get("tool_choice"),
            m.get("parallel_tool_calls"),
        )
        .map_err(field_error)?;
    } else {
        if let Some(k) = opt_int(m, "logprobs")? {
            if !(0..=5).contains(&k) {
                return Err(ApiError::invalid(
                    format!("'logprobs' = {k}: it must be between 0 and 5."),
                    Some("logprobs"),
                )
                .with_code("invalid_value"));
            }
            logprobs = Some(k as usize);
        }
        if opt_bool(m, "echo")?.unwrap_or(false) {
            return Err(unsupported("echo", "echo is not supported yet"));
        }
        if opt_str(m, "suffix")?.is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "suffix is not supported"));
        }
        if opt_int(m, "best_of")?.is_some_and(|n| n != 1) {
            return Err(unsupported("best_of", "best_of must be 1"));
        }
    }
    let temperature = opt_num(m, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = opt_num(m, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    let presence_penalty = opt_num(m, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let frequency_penalty = opt_num(m, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let seed = opt_int(m, "seed")?.map(|s| s as u64);
    // Extensions llama.cpp's server and vLLM also accept (OpenAI has no top-k or min-p): off
    // unless given. A small top_k lets the GPU rank the candidates (`--sample-on`).
    let top_k = match opt_int(m, "top_k")? {
        None => 0,
        Some(k) if (0..=1_000_000).contains(&k) => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                format!("'top_k' = {k}: it must be between 0 (off) and 1000000."),
                Some("top_k"),
            )
            .with_code("invalid_value"))
        }
    };
    let min_p = opt_num(m, "min_p", 0.0, 1.0)?.unwrap_or(0.0);
    let stop = match get(m, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            if a.len() > 4 {
                return Err(ApiError::invalid(
                    "'stop' may hold at most 4 sequences.",
                    Some("stop"),
                ));
            }
            a.iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(wrong_type("stop", "a string or an array of strings", v)),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(v) => return Err(wrong_type("stop", "a string or an array of strings", v)),
    };
    let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
    let logit_bias = match get(m, "logit_bias") {
        None => Vec::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                let id: u32 = k.parse().map_err(|_| {
                    ApiError::invalid(
                        format!("'logit_bias' key '{k}' is not a token id."),
                        Some("logit_bias"),
                    )
                })?;
                match v.as_f64() {
                    Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                    _ => Err(ApiError::invalid(
                        format!(
                            "'logit_bias' value for token {k} must be a number in [-100, 100]."
                        ),
                        Some("logit_bias"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => return Err(wrong_type("logit_bias", "an object", v)),
    };
    // top_p = 0 keeps only the most likely token: greedy.
    let (temperature, top_p) = if top_p <= 0.0 {
        (0.0, 1.0)
    } else {
        (temperature, top_p)
    };
    Ok(GenRequest {
        model,
        stream,
        include_usage,
        max_tokens,
        n,
        logprobs,
        response_format,
        tools,
        opts: GenerateOptions {
            max_tokens: 0,
            sampling: SamplingParams {
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty: 1.0,
                repeat_last_n: 64,
                presence_penalty,
                frequency_penalty,
                logit_bias,
                seed,
            },
            stop,
            spec,
            ..Default::default()
        },
    })
}

/// A tool field's error as OpenAI's 400.
pub fn field_error(e: FieldError) -> ApiError {
    ApiError::invalid(e.message, Some(&e.param)).with_code(e.code)
}

fn unsupported(param: &str, what: &str) -> ApiError {
    ApiError::invalid(format!("{what} in flint serve."), Some(param)).with_code("unsupported_value")
}

/// `messages`: roles and string or text-part content.
pub fn parse_messages(m: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match get(m, "messages") {
        None => {
            return Err(ApiError::invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
            ))
        }
        Some(Value::Array(a)) => a,
        Some(v) => return Err(wrong_type("messages", "an array", v)),
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message.",
            Some("messages"),
        )
        .with_code("empty_array"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, msg) in list.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let o = match msg {
            Value::Object(o) => o,
            v => return Err(wrong_type(&format!("messages[{i}]"), "an object", v)),
        };
        let role = match get(o, "role") {
            Some(Value::String(r)) => r.as_str(),
            Some(v) => return Err(wrong_type(&at("role"), "a string", v)),
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{}'.", at("role")),
                    Some(&at("role")),
                ))
            }
        };
        let role = match role {
            "system" | "user" | "assistant" | "tool" => role,
            "developer" => "system",
            r => {
                return Err(ApiError::invalid(
                    format!(
                        "Invalid value '{r}' for '{}': expected one of system, developer, user, assistant, tool.",
                        at("role")
                    ),
                    Some(&at("role")),
                ))
            }
        };
        let tool_calls = parse_tool_calls(o, i)?;
        let content = match get(o, "content") {
            None if role == "assistant" => None,
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{}'.", at("content")),
                    Some(&at("content")),
                ))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    let pat = format!("messages[{i}].content[{j}]");
                    let p = match part {
                        Value::Object(p) => p,
                        v => return Err(wrong_type(&pat, "an object", v)),
                    };
                    match get(p, "type") {
                        Some(Value::String(t)) if t == "text" => {}
                        Some(Value::String(t)) => {
                            return Err(unsupported(
                                &format!("{pat}.type"),
                                &format!(
                                    "content parts of type '{t}' are not supported (only 'text')"
                                ),
                            ))
                        }
                        Some(v) => return Err(wrong_type(&format!("{pat}.type"), "a string", v)),
                        None => {
                            return Err(ApiError::invalid(
                                format!("Missing required parameter: '{pat}.type'."),
                                Some(&format!("{pat}.type")),
                            ))
                        }
                    }
                    match get(p, "text") {
                        Some(Value::String(s)) => text.push_str(s),
                        Some(v) => return Err(wrong_type(&format!("{pat}.text"), "a string", v)),
                        None => {
                            return Err(ApiError::invalid(
                                format!("Missing required parameter: '{pat}.text'."),
                                Some(&format!("{pat}.text")),
                            ))
                        }
                    }
                }
                Some(text)
            }
            Some(v) => {
                return Err(wrong_type(
                    &at("content"),
                    "a string or an array of content parts",
                    v,
                ))
            }
        };
        let tool_call_id = match get(o, "tool_call_id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(wrong_type(&at("tool_call_id"), "a string", v)),
        };
        let name = match get(o, "name") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(wrong_type(&at("name"), "a string", v)),
        };
        out.push(ChatMessage {
            role: role.to_string(),
            content,
            tool_calls,
            tool_call_id,
            name,
        });
    }
    crate::tools::check_messages(&out).map_err(field_error)?;
    Ok(out)
}

/// An assistant message's `tool_calls`: `[{"id", "type": "function", "function": {"name",
/// "arguments"}}]`, the arguments a JSON string (an object is accepted and written out).
fn parse_tool_calls(o: &Map<String, Value>, i: usize) -> Result<Vec<ToolCall>, ApiError> {
    let list = match get(o, "tool_calls") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(wrong_type(
                &format!("messages[{i}].tool_calls"),
                "an array",
                v,
            ))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, c) in list.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].tool_calls[{j}]{f}");
        let c = match c {
            Value::Object(c) => c,
            v => return Err(wrong_type(&at(""), "an object", v)),
        };
        let id = match get(c, "id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(wrong_type(&at(".id"), "a string", v)),
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{}'.", at(".id")),
                    Some(&at(".id")),
                ))
            }
        };
        let f = match get(c, "function") {
            Some(Value::Object(f)) => f,
            Some(v) => return Err(wrong_type(&at(".function"), "an object", v)),
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{}'.", at(".function")),
                    Some(&at(".function")),
                ))
            }
        };
        let name = match get(f, "name") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(wrong_type(&at(".function.name"), "a string", v)),
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{}'.", at(".function.name")),
                    Some(&at(".function.name")),
                ))
            }
        };
        let arguments = match get(f, "arguments") {
            None => "{}".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(v) => return Err(wrong_type(&at(".function.arguments"), "a string", v)),
        };
        out.push(ToolCall {
            id,
            kind: "function".into(),
            function: FunctionCall { name, arguments },
        });
    }
    Ok(out)
}

/// What to generate after: a chat rendered through the model's template, raw text, or token ids.
#[derive(Debug)]
pub enum Prompt {
    /// Messages for the model's chat template (a generation prompt is appended), with the
    /// request's tools.
    Chat(Vec<ChatMessage>, Option<ToolSpec>),
    /// Raw text, encoded with the model's BOS (like `flint run`).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// `prompt` of `/v1/completions`: a string, a list of one string, or a list of token ids.
pub fn parse_prompt(m: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let one = || {
        ApiError::invalid(
            "flint serve takes one prompt per request: a string, a list of one string, or a list of token ids.",
            Some("prompt"),
        )
        .with_code("unsupported_value")
    };
    match get(m, "prompt") {
        None => Err(ApiError::invalid(
            "Missing required parameter: 'prompt'.",
            Some("prompt"),
        )),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) => match a.as_slice() {
            [] => Err(ApiError::invalid(
                "'prompt' must not be empty.",
                Some("prompt"),
            )),
            [Value::String(s)] => Ok(Prompt::Text(s.clone())),
            [Value::Array(ids)] => token_ids(ids).map(Prompt::Tokens),
            [Value::Number(_), ..] => token_ids(a).map(Prompt::Tokens),
            [_] => Err(wrong_type(
                "prompt",
                "a string, an array of strings or an array of token ids",
                &a[0],
            )),
            _ => Err(one()),
        },
        Some(v) => Err(wrong_type(
            "prompt",
            "a string, an array of strings or an array of token ids",
            v,
        )),
    }
}

fn token_ids(a: &[Value]) -> Result<Vec<u32>, ApiError> {
    a.iter()
        .map(|v| {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| wrong_type("prompt", "an array of token ids", v))
        })
        .collect()
}

/// A parsed `/v1/embeddings` request.
#[derive(Debug)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    /// `encoding_format: "base64"` (else "float").
    pub base64: bool,
    /// `dimensions` and flint's `truncate` (default false: an over-long input is a 400).
    pub opts: EmbedOptions,
}

/// The `/v1/embeddings` fields: `model`, `input` (a string, an array of strings, an array of
/// token ids, or an array of token-id arrays: [`crate::web::embeddings::parse_input`], shared with
/// the npm package), `encoding_format`, `dimensions`, `user` (ignored) and `truncate`. Only the
/// JSON shapes are checked here; what the inputs hold (empty, too many, ids outside the
/// vocabulary, too long, `dimensions` out of range) the library checks.
pub fn parse_embeddings(m: &Map<String, Value>) -> Result<EmbedRequest, ApiError> {
    let model = required_model(m)?;
    let inputs = match get(m, "input") {
        None => {
            return Err(ApiError::invalid(
                "Missing required parameter: 'input'.",
                Some("input"),
            ))
        }
        // the npm package's reading of the shapes, so that both name a bad item alike
        Some(v) => crate::web::embeddings::parse_input(v).map_err(|e| {
            let msg = match e {
                crate::Error::InvalidArgument(m) => m,
                e => e.to_string(),
            };
            ApiError::invalid(msg, Some("input")).with_code("invalid_type")
        })?,
    };
    let base64 = match opt_str(m, "encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!(
                    "Invalid value '{other}' for 'encoding_format': expected 'float' or 'base64'."
                ),
                Some("encoding_format"),
            )
            .with_code("invalid_value"))
        }
    };
    let dimensions = match opt_int(m, "dimensions")? {
        None => None,
        Some(d) if d < 0 => {
            return Err(ApiError::invalid(
                format!("'dimensions' = {d}: it must be a positive integer."),
                Some("dimensions"),
            )
            .with_code("invalid_value"))
        }
        Some(d) => Some(usize::try_from(d).unwrap_or(usize::MAX)),
    };
    opt_str(m, "user")?;
    let truncate = opt_bool(m, "truncate")?.unwrap_or(false);
    Ok(EmbedRequest {
        model,
        inputs,
        base64,
        opts: EmbedOptions {
            dimensions,
            truncate,
        },
    })
}
