//! Tool calling, OpenAI's way, for every family: the request's tools read and checked, the model's
//! call syntax (one row of [`SYNTAXES`] per syntax, detected from the chat template), the grammar
//! that keeps every call well-formed, and the parser that turns the model's text back into
//! OpenAI `tool_calls`, whole or as streamed deltas.
//!
//! ```text
//! tools + tool_choice ─► ToolSpec::parse ─► render (the model's template gets `tools`, or the
//!                                             generic prompt when it has no tool support)
//!                                        ─► ToolSpec::grammar (lark for llguidance: text, then
//!                                             calls that name a declared tool and validate)
//! model text ─► ToolParser::push ─► Delta::Text / CallStart / CallArgs ─► OpenAI shapes
//! ```
//!
//! Call syntaxes as the published templates and llama.cpp's `common/chat.cpp` write them:
//! Hermes / Qwen2.5 / Qwen3 `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`,
//! Llama 3.1-3.3 `{"name": .., "parameters": {..}}` (optionally after `<|python_tag|>`),
//! Mistral `[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]`, Phi-4-mini
//! `<|tool_call|>[{"name": .., "arguments": {..}}]<|/tool_call|>`, and the generic one for
//! templates without tool support (llama-server's: the whole answer is one JSON object,
//! `{"tool_calls": [{"name", "arguments"}, ..]}` or `{"response": "text"}`).

use crate::chat::{ChatMessage, ChatTemplate, FunctionCall, ToolCall};
use crate::constrain::GrammarSpec;
use serde_json::{json, Map, Value};
use std::fmt;

/// A request field that is wrong: `param` is its path (`tools[0].function.name`), as OpenAI's
/// 400s name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub param: String,
    pub message: String,
    /// OpenAI's machine-readable `code`.
    pub code: &'static str,
}

impl FieldError {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            param: param.into(),
            message: message.into(),
            code: "invalid_value",
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// One function tool.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema; `{"type": "object", "properties": {}}`
    /// when the request gave none).
    pub parameters: Value,
    pub strict: bool,
    /// The tool object as the request gave it: what the chat template receives.
    pub raw: Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model must not call a tool.
    None,
    /// The model writes text or calls tools (the default when tools are given).
    Auto,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// The tools of a request, with how they may be called.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): more than one call per answer.
    pub parallel: bool,
}

fn wrong_type(param: &str, want: &str, got: &Value) -> FieldError {
    FieldError::new(
        param,
        format!(
            "Invalid type for '{param}': expected {want}, but got {}.",
            crate::error::json_kind(got)
        ),
    )
}

fn present<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

/// Most tools one request may declare.
pub const MAX_TOOLS: usize = 128;

impl ToolSpec {
    /// Reads `tools`, `tool_choice` and `parallel_tool_calls` from a chat request. `Ok(None)`:
    /// no tools (an empty `tools` list counts as none; `tool_choice` is then only allowed as
    /// `"none"` or `"auto"`).
    pub fn parse(
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        parallel: Option<&Value>,
    ) -> Result<Option<ToolSpec>, FieldError> {
        let list = match tools {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(v) => return Err(wrong_type("tools", "an array", v)),
        };
        if list.len() > MAX_TOOLS {
            return Err(FieldError::new(
                "tools",
                format!(
                    "'tools' holds {} tools; at most {MAX_TOOLS} are allowed.",
                    list.len()
                ),
            ));
        }
        let mut parsed = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            let tool = parse_tool(i, t)?;
            if parsed.iter().any(|p: &Tool| p.name == tool.name) {
                return Err(FieldError::new(
                    format!("tools[{i}].function.name"),
                    format!("Duplicate tool name '{}' in 'tools'.", tool.name),
                ));
            }
            parsed.push(tool);
        }
        let parallel = match parallel {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(wrong_type("parallel_tool_calls", "a boolean", v)),
        };
        let choice = match tool_choice {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                s => {
                    return Err(FieldError::new(
                        "tool_choice",
                        format!("Invalid value '{s}' for 'tool_choice': expected one of none, auto, required, or an object naming a function."),
                    ))
                }
            }),
            Some(Value::Object(o)) => {
                match present(o, "type") {
                    Some(Value::String(t)) if t == "function" => {}
                    Some(Value::String(t)) => {
                        return Err(FieldError::new(
                            "tool_choice.type",
                            format!("Invalid value '{t}' for 'tool_choice.type': expected 'function'."),
                        ))
                    }
                    Some(v) => return Err(wrong_type("tool_choice.type", "a string", v)),
                    None => {
                        return Err(FieldError::new(
                            "tool_choice.type",
                            "Missing required parameter: 'tool_choice.type'.",
                        ))
                    }
                }
                let name = match present(o, "function") {
                    Some(Value::Object(f)) => match present(f, "name") {
                        Some(Value::String(n)) => n.clone(),
                        Some(v) => return Err(wrong_type("tool_choice.function.name", "a string", v)),
                        None => {
                            return Err(FieldError::new(
                                "tool_choice.function.name",
                                "Missing required parameter: 'tool_choice.function.name'.",
                            ))
                        }
                    },
                    Some(v) => return Err(wrong_type("tool_choice.function", "an object", v)),
                    None => {
                        return Err(FieldError::new(
                            "tool_choice.function",
                            "Missing required parameter: 'tool_choice.function'.",
                        ))
                    }
                };
                if !parsed.iter().any(|t| t.name == name) {
                    return Err(FieldError::new(
                        "tool_choice",
                        format!("Invalid 'tool_choice': the function '{name}' is not one of the declared 'tools'."),
                    ));
                }
                Some(ToolChoice::Named(name))
            }
            Some(v) => {
                return Err(wrong_type(
                    "tool_choice",
                    "a string or an object",
                    v,
                ))
            }
        };
        if parsed.is_empty() {
            return match choice {
                None | Some(ToolChoice::None) | Some(ToolChoice::Auto) => Ok(None),
                Some(_) => Err(FieldError::new(
                    "tool_choice",
                    "'tool_choice' is only allowed when 'tools' are specified.",
                )),
            };
        }
        Ok(Some(ToolSpec {
            tools: parsed,
            choice: choice.unwrap_or(ToolChoice::Auto),
            parallel,
        }))
    }

    /// The tool objects as the request gave them (for the chat template).
    pub fn raw(&self) -> Vec<Value> {
        self.tools.iter().map(|t| t.raw.clone()).collect()
    }

    /// The tools a call may name under the tool choice.
    fn callable(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            ToolChoice::None => Vec::new(),
            _ => self.tools.iter().collect(),
        }
    }
}

fn parse_tool(i: usize, t: &Value) -> Result<Tool, FieldError> {
    let at = |f: &str| format!("tools[{i}]{f}");
    let o = match t {
        Value::Object(o) => o,
        v => return Err(wrong_type(&at(""), "an object", v)),
    };
    match present(o, "type") {
        Some(Value::String(s)) if s == "function" => {}
        Some(Value::String(s)) => {
            return Err(FieldError::new(
                at(".type"),
                format!(
                    "Invalid value '{s}' for '{}': only 'function' tools are supported.",
                    at(".type")
                ),
            ))
        }
        Some(v) => return Err(wrong_type(&at(".type"), "a string", v)),
        None => {
            return Err(FieldError::new(
                at(".type"),
                format!("Missing required parameter: '{}'.", at(".type")),
            ))
        }
    }
    let f = match present(o, "function") {
        Some(Value::Object(f)) => f,
        Some(v) => return Err(wrong_type(&at(".function"), "an object", v)),
        None => {
            return Err(FieldError::new(
                at(".function"),
                format!("Missing required parameter: '{}'.", at(".function")),
            ))
        }
    };
    let name = match present(f, "name") {
        Some(Value::String(n)) => n.clone(),
        Some(v) => return Err(wrong_type(&at(".function.name"), "a string", v)),
        None => {
            return Err(FieldError::new(
                at(".function.name"),
                format!("Missing required parameter: '{}'.", at(".function.name")),
            ))
        }
    };
    // OpenAI's rule: a-z, A-Z, 0-9, underscores and dashes, at most 64.
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(FieldError::new(
            at(".function.name"),
            format!(
                "Invalid '{}': '{name}' must be 1 to 64 characters of a-z, A-Z, 0-9, underscores and dashes.",
                at(".function.name")
            ),
        ));
    }
    let description = match present(f, "description") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(wrong_type(&at(".function.description"), "a string", v)),
    };
    let parameters = match present(f, "parameters") {
        None => json!({"type": "object", "properties": {}}),
        Some(Value::Object(p)) => {
            if let Some(t) = p.get("type") {
                if t != "object" {
                    return Err(FieldError::new(
                        at(".function.parameters"),
                        format!(
                            "Invalid schema for function '{name}': the parameters' 'type' must be 'object', got {t}."
                        ),
                    ));
                }
            }
            Value::Object(p.clone())
        }
        Some(v) => {
            return Err(wrong_type(
                &at(".function.parameters"),
                "an object (a JSON Schema)",
                v,
            ))
        }
    };
    let strict = match present(f, "strict") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(wrong_type(&at(".function.strict"), "a boolean", v)),
    };
    Ok(Tool {
        name,
        description,
        parameters,
        strict,
        raw: t.clone(),
    })
}

/// What a request constrains decoding with, compiled: the grammar, and the syntax to parse calls
/// in (when tools may be called).
pub struct Constrained {
    pub grammar: Option<crate::constrain::Compiled>,
    pub tools: Option<Syntax>,
}

/// Compiles what a request constrains decoding with, for every surface (server, npm package,
/// CLI): the tools' call grammar (each tool's schema compiled on its own first, so an error
/// names the tool), else `response_format`. Tools take precedence over `response_format`.
pub fn constrain(
    vocab: &crate::constrain::ConstraintVocab,
    syntax: Syntax,
    tools: Option<&ToolSpec>,
    format: Option<&GrammarSpec>,
) -> Result<Constrained, FieldError> {
    if let Some(spec) = tools {
        for (i, t) in spec.tools.iter().enumerate() {
            vocab
                .compile(&GrammarSpec::JsonSchema(t.parameters.clone()))
                .map_err(|e| {
                    FieldError::new(
                        format!("tools[{i}].function.parameters"),
                        format!("Invalid schema for function '{}': {e}", t.name),
                    )
                    .with_code("invalid_function_parameters")
                })?;
        }
        let grammar = match spec.grammar(syntax, &|t| vocab.special_token(t).is_some()) {
            None => None,
            Some(g) => Some(vocab.compile(&GrammarSpec::Lark(g)).map_err(|e| {
                FieldError::new("tools", format!("The tools cannot be enforced: {e}"))
            })?),
        };
        return Ok(Constrained {
            grammar,
            tools: (spec.choice != ToolChoice::None).then_some(syntax),
        });
    }
    let grammar = match format {
        None => None,
        Some(f) => Some(vocab.compile(f).map_err(|e| {
            FieldError::new(
                "response_format.json_schema.schema",
                format!("Invalid schema for response_format: {e}."),
            )
            .with_code("invalid_json_schema")
        })?),
    };
    Ok(Constrained {
        grammar,
        tools: None,
    })
}

/// `response_format`: `text` (`None`), `json_object`, or `json_schema` with its `schema` (a
/// missing schema means any JSON object). The schema is compiled later, against the model's
/// vocabulary ([`crate::constrain::ConstraintVocab::compile`]).
pub fn response_format(v: Option<&Value>) -> Result<Option<GrammarSpec>, FieldError> {
    let o = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(v) => return Err(wrong_type("response_format", "an object", v)),
    };
    let t = match present(o, "type") {
        Some(Value::String(t)) => t.as_str(),
        Some(v) => return Err(wrong_type("response_format.type", "a string", v)),
        None => {
            return Err(FieldError::new(
                "response_format.type",
                "Missing required parameter: 'response_format.type'.",
            ))
        }
    };
    match t {
        "text" => Ok(None),
        "json_object" => Ok(Some(GrammarSpec::JsonObject)),
        "json_schema" => {
            let js = match present(o, "json_schema") {
                Some(Value::Object(js)) => js,
                Some(v) => return Err(wrong_type("response_format.json_schema", "an object", v)),
                None => {
                    return Err(FieldError::new(
                        "response_format.json_schema",
                        "Missing required parameter: 'response_format.json_schema'.",
                    ))
                }
            };
            match present(js, "name") {
                Some(Value::String(_)) => {}
                Some(v) => return Err(wrong_type("response_format.json_schema.name", "a string", v)),
                None => {
                    return Err(FieldError::new(
                        "response_format.json_schema.name",
                        "Missing required parameter: 'response_format.json_schema.name'.",
                    ))
                }
            }
            match present(js, "strict") {
                None | Some(Value::Bool(_)) => {}
                Some(v) => return Err(wrong_type("response_format.json_schema.strict", "a boolean", v)),
            }
            match present(js, "schema") {
                None => Ok(Some(GrammarSpec::JsonObject)),
                Some(s @ Value::Object(_)) => Ok(Some(GrammarSpec::JsonSchema(s.clone()))),
                Some(v) => Err(wrong_type("response_format.json_schema.schema", "an object", v)),
            }
        }
        t => Err(FieldError::new(
            "response_format.type",
            format!("Invalid value '{t}' for 'response_format.type': expected one of text, json_object, json_schema."),
        )),
    }
}

/// Checks a conversation's tool turns: every `tool` message answers a call an earlier assistant
/// message made (by `tool_call_id`), and every call has an id, a name and arguments.
pub fn check_messages(messages: &[ChatMessage]) -> Result<(), FieldError> {
    let mut ids: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        for (j, c) in m.tool_calls.iter().enumerate() {
            if m.role != "assistant" {
                return Err(FieldError::new(
                    format!("messages[{i}].tool_calls"),
                    format!("'messages[{i}].tool_calls' is only allowed on assistant messages."),
                ));
            }
            if c.function.name.is_empty() {
                return Err(FieldError::new(
                    format!("messages[{i}].tool_calls[{j}].function.name"),
                    format!("'messages[{i}].tool_calls[{j}].function.name' must not be empty."),
                ));
            }
            ids.push(&c.id);
        }
        if m.role == "tool" {
            let at = format!("messages[{i}].tool_call_id");
            match m.tool_call_id.as_deref() {
                None => {
                    return Err(FieldError::new(
                        &at,
                        format!("Missing required parameter: '{at}'."),
                    ))
                }
                Some(id) if !ids.contains(&id) => {
                    return Err(FieldError::new(
                        &at,
                        format!("Invalid '{at}': '{id}' does not answer any tool call of an earlier assistant message."),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// A tool-call syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Hermes,
    Llama3,
    Mistral,
    Phi4,
    Generic,
}

/// How a syntax writes calls: one row per syntax.
#[derive(Debug)]
pub struct Row {
    pub syntax: Syntax,
    /// The name `flint info` prints and `--tool-syntax` takes.
    pub name: &'static str,
    /// Which models write it.
    pub models: &'static str,
    /// Any of these in the template's source selects this syntax (checked in table order).
    detect: &'static [&'static str],
    /// What opens the calls (`""`: the answer starts with the call's JSON).
    pub open: &'static str,
    /// What closes the calls.
    pub close: &'static str,
    /// The calls are one JSON array between `open` and `close` (else each call is wrapped).
    array: bool,
    /// The key of the arguments in a call's JSON.
    args_key: &'static str,
    /// Most calls in one answer (the template's own limit).
    max_calls: Option<usize>,
    /// Between two wrapped calls.
    sep: &'static str,
    /// A fenced JSON block (```json {"name": ...}```) is also a call (Qwen2.5-Coder writes them).
    fence: bool,
}

/// The syntax table.
pub const SYNTAXES: &[Row] = &[
    Row {
        syntax: Syntax::Hermes,
        name: "hermes",
        models: "Hermes 2 Pro / 3, Qwen2.5, Qwen3 (and their Coder/instruct variants)",
        detect: &["<tool_call>"],
        open: "<tool_call>\n",
        close: "\n</tool_call>",
        array: false,
        args_key: "arguments",
        max_calls: None,
        sep: "\n",
        fence: true,
    },
    Row {
        syntax: Syntax::Mistral,
        name: "mistral",
        models: "Mistral 7B v0.3, Mistral Nemo, Mistral Small",
        detect: &["[TOOL_CALLS]"],
        open: "[TOOL_CALLS]",
        close: "",
        array: true,
        args_key: "arguments",
        max_calls: None,
        sep: "",
        fence: false,
    },
    Row {
        syntax: Syntax::Phi4,
        name: "phi4",
        models: "Phi-4-mini (llama.cpp PR #12288's tool template: one object per call)",
        detect: &["<|tool_call|>", "<|tool|>"],
        open: "<|tool_call|>",
        close: "<|/tool_call|>",
        array: false,
        args_key: "arguments",
        max_calls: None,
        sep: "",
        fence: false,
    },
    Row {
        syntax: Syntax::Llama3,
        name: "llama3",
        models: "Llama 3.1, 3.2, 3.3",
        detect: &[
            "<|start_header_id|>ipython<|end_header_id|>",
            "<|python_tag|>",
        ],
        open: "",
        close: "",
        array: false,
        args_key: "parameters",
        max_calls: Some(1),
        sep: "",
        fence: false,
    },
    Row {
        syntax: Syntax::Generic,
        name: "generic",
        models: "any model whose template has no tool support",
        detect: &[],
        open: "",
        close: "",
        array: false,
        args_key: "arguments",
        max_calls: None,
        sep: "",
        fence: false,
    },
];

impl Row {
    /// Whether `text` (a control token's) is markup of this syntax that the parser must see.
    pub fn is_marker(&self, text: &str) -> bool {
        let t = text.trim();
        !t.is_empty()
            && (t == self.open.trim()
                || t == self.close.trim()
                || (self.syntax == Syntax::Llama3 && t == "<|python_tag|>"))
    }
}

impl Syntax {
    /// This syntax's row.
    pub fn row(self) -> &'static Row {
        SYNTAXES
            .iter()
            .find(|r| r.syntax == self)
            .expect("every syntax has a row")
    }

    /// The syntax's name (`hermes`, `llama3`, `mistral`, `phi4`, `generic`).
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// A syntax by name, or an error listing the names.
    pub fn parse(name: &str) -> crate::Result<Syntax> {
        SYNTAXES
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.syntax)
            .ok_or_else(|| {
                let names: Vec<&str> = SYNTAXES.iter().map(|r| r.name).collect();
                crate::Error::InvalidArgument(format!(
                    "unknown tool-call syntax '{name}': expected one of {}",
                    names.join(", ")
                ))
            })
    }

    /// The syntax a chat template writes calls in: the first row whose marker the template
    /// mentions, else [`Syntax::Generic`] (also for templates that mention markers but never
    /// read `tools`, which could not show the model its tools).
    pub fn detect(template: &str) -> Syntax {
        if !reads_tools(template) {
            return Syntax::Generic;
        }
        SYNTAXES
            .iter()
            .find(|r| r.detect.iter().any(|d| template.contains(d)))
            .map_or(Syntax::Generic, |r| r.syntax)
    }
}

/// Whether a template reads the `tools` variable (`if tools`, `for tool in tools`, `tools |
/// length`), not merely a message field called so (the published Phi-4-mini template reads
/// `message['tools']`, a string the caller must format itself).
fn reads_tools(template: &str) -> bool {
    let b = template.as_bytes();
    template.match_indices("tools").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + 5).copied();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        matches!(
            before,
            Some(b' ' | b'(' | b'{' | b'\n' | b'\t' | b'[' | b',')
        ) && !after.is_some_and(|c| ident(c) || c == b'\'' || c == b'"')
    })
}

/// The generic prompt (llama-server's wording, `common/chat.cpp`): added to the system message
/// when the template cannot show tools itself.
fn generic_prompt(spec: &ToolSpec) -> String {
    let tools: Vec<Value> = spec
        .callable()
        .iter()
        .map(|t| {
            let mut f = Map::new();
            f.insert("name".into(), Value::from(t.name.as_str()));
            if let Some(d) = &t.description {
                f.insert("description".into(), Value::from(d.as_str()));
            }
            f.insert("parameters".into(), t.parameters.clone());
            Value::Object(f)
        })
        .collect();
    let tools = serde_json::to_string_pretty(&tools).unwrap_or_default();
    let how = match spec.choice {
        ToolChoice::Auto => "Respond in JSON format, either with `tool_calls` (a request to call tools) or with `response` (a reply to the user's request)",
        _ => "Respond in JSON format, with `tool_calls` (a request to call tools)",
    };
    format!(
        "You can call any of the following tools to satisfy the user's requests: {tools}\n\nExample tool call syntax:\n\n{{\n  \"tool_calls\": [\n    {{\n      \"name\": \"tool_name\",\n      \"arguments\": {{\n        \"arg1\": \"some_value\"\n      }},\n      \"id\": \"call_1___\"\n    }}\n  ]\n}}\n\n{how}"
    )
}

/// Renders a conversation with tools: through the template's own tool support, or, for the
/// generic syntax, with the tools described in the system message, earlier calls written as the
/// JSON the model is asked for, and tool results as user turns (what llama-server does).
pub fn render(
    template: &ChatTemplate,
    syntax: Syntax,
    messages: &[ChatMessage],
    spec: Option<&ToolSpec>,
) -> crate::Result<String> {
    let Some(spec) = spec else {
        return template.render(messages, true);
    };
    if syntax == Syntax::Mistral {
        // Mistral's templates refuse call ids that are not 9 characters ("Tool call IDs should
        // be alphanumeric strings with length 9!"); OpenAI's are `call_` + 24. Each id is shown
        // to the template as 9 characters derived from it, the same for the call and its answer.
        let fixed: Vec<ChatMessage> = messages
            .iter()
            .map(|m| {
                let mut m = m.clone();
                for c in &mut m.tool_calls {
                    c.id = nine_chars(&c.id);
                }
                m.tool_call_id = m.tool_call_id.as_deref().map(nine_chars);
                m
            })
            .collect();
        return template.render_with_tools(&fixed, Some(&spec.raw()), true);
    }
    if syntax != Syntax::Generic {
        return template.render_with_tools(messages, Some(&spec.raw()), true);
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if spec.choice != ToolChoice::None {
        let prompt = generic_prompt(spec);
        match messages.first() {
            Some(m) if m.role == "system" => {
                out.push(ChatMessage::system(format!("{}\n\n{prompt}", m.text())));
            }
            _ => out.push(ChatMessage::system(prompt)),
        }
    }
    let skip = usize::from(out.len() == 1 && messages.first().is_some_and(|m| m.role == "system"));
    for m in &messages[skip..] {
        if !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    let args = serde_json::from_str::<Value>(&c.function.arguments)
                        .unwrap_or_else(|_| Value::from(c.function.arguments.as_str()));
                    json!({"name": c.function.name, "arguments": args, "id": c.id})
                })
                .collect();
            let mut body = json!({"tool_calls": calls});
            if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
                body["response"] = Value::from(t);
            }
            out.push(ChatMessage::assistant(
                serde_json::to_string_pretty(&body).unwrap_or_default(),
            ));
        } else if m.role == "tool" {
            let body = json!({"tool_response": {
                "tool": m.name.clone().unwrap_or_default(),
                "content": m.text(),
                "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            }});
            out.push(ChatMessage::user(
                serde_json::to_string_pretty(&body).unwrap_or_default(),
            ));
        } else {
            out.push(m.clone());
        }
    }
    template.render(&out, true)
}

/// A call id as the 9 alphanumeric characters Mistral's templates require: itself when it is
/// such already, else an FNV-1a hash of it in base 62.
fn nine_chars(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_string();
    }
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let c = ABC[(h % 62) as usize] as char;
            h /= 62;
            c
        })
        .collect()
}

/// `schema` with `"additionalProperties": false` on every object schema that lists `properties`
/// and says nothing about others (not inside `allOf`, where it would change the meaning), as
/// OpenAI's strict mode and llama.cpp's schema converter generate: the model writes only the
/// declared keys, and what it writes still validates against the original schema.
pub fn closed(schema: &Value) -> Value {
    fn walk(v: &mut Value, depth: usize) {
        if depth > crate::constrain::MAX_NESTING {
            return;
        }
        let Value::Object(m) = v else { return };
        if m.contains_key("properties") && !m.contains_key("additionalProperties") {
            m.insert("additionalProperties".into(), Value::Bool(false));
        }
        for key in ["properties", "$defs", "definitions", "patternProperties"] {
            if let Some(Value::Object(children)) = m.get_mut(key) {
                children.values_mut().for_each(|c| walk(c, depth + 1));
            }
        }
        for key in ["items", "additionalProperties", "not"] {
            if let Some(c) = m.get_mut(key) {
                walk(c, depth + 1);
            }
        }
        for key in ["anyOf", "oneOf", "prefixItems"] {
            if let Some(Value::Array(children)) = m.get_mut(key) {
                children.iter_mut().for_each(|c| walk(c, depth + 1));
            }
        }
    }
    let mut s = schema.clone();
    walk(&mut s, 0);
    s
}

/// JSON text of `s` as a lark string literal.
fn lark_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The schema of one call to `tool`: `{"name": <const>, <args_key>: <parameters>}`, in that
/// order, nothing else. The parameters' own `$defs` / `definitions` move to the root (their
/// `$ref`s keep resolving), and a `$ref` to the parameters' root points at their new place.
pub fn call_schema(tool: &Tool, args_key: &str) -> Value {
    const ARGS: &str = "__flint_arguments";
    let mut params = closed(&tool.parameters);
    let (defs, definitions) = match &mut params {
        Value::Object(p) => (p.remove("$defs"), p.remove("definitions")),
        _ => (None, None),
    };
    let self_refs = rebase_refs(&mut params, &format!("#/$defs/{ARGS}"));
    let mut root = json!({
        "type": "object",
        "properties": {"name": {"const": tool.name}},
        "required": ["name", args_key],
        "additionalProperties": false,
    });
    let defs = match defs {
        Some(Value::Object(d)) if !d.is_empty() => Some(d),
        _ => None,
    };
    let definitions = definitions.filter(|d| d.as_object().is_some_and(|d| !d.is_empty()));
    if defs.is_none() && definitions.is_none() && !self_refs {
        root["properties"][args_key] = params;
        return root;
    }
    let mut d = defs.unwrap_or_default();
    d.insert(ARGS.into(), params);
    root["properties"][args_key] = json!({"$ref": format!("#/$defs/{ARGS}")});
    root["$defs"] = Value::Object(d);
    if let Some(definitions) = definitions {
        root["definitions"] = definitions;
    }
    root
}

/// Points every `$ref` into the parameters' own body (`#`, `#/properties/...`) at `at`, where
/// the parameters now live; refs into `$defs` / `definitions` stay. Whether any was moved.
fn rebase_refs(v: &mut Value, at: &str) -> bool {
    match v {
        Value::Object(m) => {
            let mut moved = false;
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if r == "#" {
                    *r = at.to_string();
                    moved = true;
                } else if let Some(rest) = r.strip_prefix("#/") {
                    if !rest.starts_with("$defs/") && !rest.starts_with("definitions/") {
                        *r = format!("{at}/{rest}");
                        moved = true;
                    }
                }
            }
            m.values_mut()
                .fold(moved, |any, c| rebase_refs(c, at) | any)
        }
        Value::Array(a) => a.iter_mut().fold(false, |any, c| rebase_refs(c, at) | any),
        _ => false,
    }
}

impl ToolSpec {
    /// The grammar (llguidance's Lark, [`crate::constrain`]) decoding follows with these tools in
    /// `syntax`; `None` when nothing needs constraining. `special(text)`: whether `text` is one
    /// special token of the vocabulary (a marker is then written as that token, which no text
    /// can spell).
    ///
    /// - `auto`: free text, or calls (after text, where the syntax allows it). Where the marker
    ///   is text (Qwen2.5's `<tool_call>`), the text and the marker are ONE lazy lexeme that ends
    ///   at the first marker (llguidance's lexer never re-splits a greedy lexeme: see
    ///   `crate::constrain`), beside a lexeme for text that never contains it.
    /// - `required` and a named tool: calls from the first token.
    /// - `none`: text that never opens a call.
    ///
    /// Every call is one JSON object `{"name": <a callable tool>, <args_key>: <its parameters>}`
    /// ([`call_schema`]), in the layout models write (`", "`, `": "`).
    pub fn grammar(&self, syntax: Syntax, special: &dyn Fn(&str) -> bool) -> Option<String> {
        let row = syntax.row();
        let tools = self.callable();
        let one_call = !self.parallel || row.max_calls == Some(1);
        let marker = row.open.trim();
        let marker_special = !marker.is_empty() && special(marker);
        let mut g = String::new();
        let mut alts = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let schema = call_schema(t, row.args_key);
            g.push_str(&format!(
                "tool_{i}: {}\n",
                crate::constrain::lark_json(&schema)
            ));
            alts.push(format!("tool_{i}"));
        }
        if !alts.is_empty() {
            g.push_str(&format!("call_json: {}\n", alts.join(" | ")));
        }
        // Text that never opens a call.
        let text_only = || -> String {
            let mut t = "TEXT: /(.|\\n)*/".to_string();
            if !marker.is_empty() && !marker_special {
                t.push_str(&format!(" & ~/(.|\\n)*{}(.|\\n)*/", regex_escape(marker)));
            }
            if row.fence {
                t.push_str(" & ~/(.|\\n)*```json\\s*\\{\\s*\"name\"(.|\\n)*/");
            }
            t.push('\n');
            t
        };
        if self.choice == ToolChoice::None {
            return (!marker.is_empty() && !marker_special)
                .then(|| format!("start: TEXT\n{}", text_only()));
        }
        if syntax == Syntax::Generic {
            // One JSON object; both branches start with the same `{` lexeme (llguidance's lexer
            // is greedy: a `{"tool_calls": ` literal beside a JSON `{` would never reach the other).
            let calls = if one_call {
                "call_json".to_string()
            } else {
                "call_json (\", \" call_json)*".to_string()
            };
            g.push_str(&format!(
                "tool_calls: \"\\\"tool_calls\\\": [\" {calls} \"]\"\n"
            ));
            if self.choice == ToolChoice::Auto {
                g.push_str(&format!(
                    "response: \"\\\"response\\\": \" {}\n",
                    crate::constrain::lark_json(&json!({"type": "string"}))
                ));
                g.push_str("start: \"{\" (tool_calls | response) \"}\"\n");
            } else {
                g.push_str("start: \"{\" tool_calls \"}\"\n");
            }
            return Some(g);
        }
        if marker.is_empty() {
            // Llama 3: the answer is one call's JSON, or text that does not start like one.
            g.push_str(if self.choice == ToolChoice::Auto {
                "start: call_json | TEXT\nTEXT: /[^{ \\t\\n](.|\\n)*/\n"
            } else {
                "start: call_json\n"
            });
            return Some(g);
        }
        // How the calls after the first marker continue: `rest` follows the opening marker.
        let after_open = &row.open[row.open.find(marker).unwrap_or(0) + marker.len()..];
        let lit = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                lark_str(s)
            }
        };
        let mark = if marker_special {
            marker.to_string()
        } else {
            lark_str(marker)
        };
        let close = if row.close.is_empty() {
            String::new()
        } else {
            let c = row.close.trim();
            let pre = &row.close[..row.close.find(c).unwrap_or(0)];
            let c = if special(c) {
                c.to_string()
            } else {
                lark_str(c)
            };
            format!("{} {c}", lit(pre))
        };
        let body = if row.array {
            let items = if one_call {
                "call_json"
            } else {
                "call_json (\", \" call_json)*"
            };
            format!("\"[\" {items} \"]\" {close}")
        } else {
            format!("call_json {close}")
        };
        g.push_str(&format!("body: {body}\n"));
        // Later calls (wrapped syntaxes only): separator, marker, what follows it.
        let more = if one_call || row.array {
            String::new()
        } else {
            "(next body)*".to_string()
        };
        if !more.is_empty() {
            g.push_str(&format!(
                "next: {} {mark} {}\n",
                lit(row.sep),
                lit(after_open)
            ));
        }
        let first = format!("{mark} {}", lit(after_open));
        match self.choice {
            ToolChoice::Auto if marker_special => {
                g.push_str(&format!(
                    "start: TEXT | TEXT? {first} body {more}\nTEXT: /(.|\\n)+/\n"
                ));
            }
            ToolChoice::Auto => {
                let esc = regex_escape(row.open);
                g.push_str(&format!("start: TEXT | text_call body {more}"));
                if row.fence {
                    for i in 0..tools.len() {
                        g.push_str(&format!(" | fence_{i} fenced_{i}"));
                    }
                }
                g.push('\n');
                g.push_str(&format!("text_call[lazy]: /(.|\\n)*{esc}/\n"));
                g.push_str(&text_only());
                if row.fence {
                    // Qwen2.5-Coder often writes its call as a fenced JSON block instead; llama.cpp
                    // takes ```json {"name": "<tool>" as a call's opening too (common/chat.cpp).
                    for (i, t) in tools.iter().enumerate() {
                        let name =
                            regex_escape(&serde_json::to_string(&t.name).unwrap_or_default());
                        g.push_str(&format!(
                            "fence_{i}[lazy]: /(.|\\n)*```json\\s*\\{{\\s*\"name\":\\s*{name}/\n"
                        ));
                        g.push_str(&format!(
                            "fenced_{i}: /\\s*,\\s*\"{}\":\\s*/ {} /\\s*\\}}\\s*```/\n",
                            row.args_key,
                            crate::constrain::lark_json(&closed(&t.parameters))
                        ));
                    }
                }
            }
            _ => g.push_str(&format!("start: {first} body {more}\n")),
        }
        Some(g)
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$/".contains(c) {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the text after a ```` ```json ```` fence opens a call (`{"name"`, any whitespace):
/// `None` while too little has come to tell.
fn fence_opens_call(rest: &str) -> Option<bool> {
    let r = rest.trim_start();
    if r.is_empty() {
        return None;
    }
    let Some(r) = r.strip_prefix('{') else {
        return Some(false);
    };
    let r = r.trim_start();
    if r.is_empty() {
        return None;
    }
    const NAME: &str = "\"name\"";
    if r.starts_with(NAME) {
        Some(true)
    } else if NAME.starts_with(r) {
        None
    } else {
        Some(false)
    }
}

/// A piece of an answer as it is parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// Text for `content`.
    Text(String),
    /// A call begins: OpenAI's first delta of a call.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a call's `arguments` text.
    CallArgs { index: usize, fragment: String },
}

/// A fresh call id: `call_` and 24 characters.
pub fn call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0x5eed);
    let t = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from("call_");
    for _ in 0..24 {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        s.push(ABC[(z % ABC.len() as u64) as usize] as char);
    }
    s
}

/// Where the parser is.
#[derive(Debug)]
enum State {
    /// Before anything (Llama 3 and generic decide on the first characters).
    Start,
    /// Writing `content`.
    Text,
    /// Inside the calls' markup (between or inside call objects).
    Calls,
    /// Generic syntax: the whole answer is one JSON object, parsed at the end.
    Generic,
}

/// One call object being scanned.
#[derive(Debug, Default)]
struct CallScan {
    text: String,
    depth: usize,
    in_str: bool,
    esc: bool,
    /// At depth 1: expecting a key (true) or a value (false).
    want_key: bool,
    key: Option<String>,
    str_start: usize,
    /// What the string now being read is: 0 other, 1 a key, 2 the name, 3 string arguments.
    str_kind: u8,
    name: Option<String>,
    args_start: Option<usize>,
    args_end: Option<usize>,
    args_is_str: bool,
    args_sent: usize,
    started: bool,
}

/// Turns the model's text into content and calls, as it streams.
#[derive(Debug)]
pub struct ToolParser {
    row: &'static Row,
    state: State,
    /// Text held back: it may be the start of the open marker (or all of a generic answer).
    held: String,
    scan: Option<CallScan>,
    calls: usize,
}

impl ToolParser {
    pub fn new(syntax: Syntax) -> Self {
        let row = syntax.row();
        ToolParser {
            row,
            state: if syntax == Syntax::Generic {
                State::Generic
            } else if row.open.is_empty() {
                State::Start
            } else {
                State::Text
            },
            held: String::new(),
            scan: None,
            calls: 0,
        }
    }

    /// How many calls have started.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds generated text; appends what it completes to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<Delta>) {
        match self.state {
            State::Generic => self.held.push_str(text),
            State::Start => {
                self.held.push_str(text);
                let t = self.held.trim_start();
                let t = t.strip_prefix("<|python_tag|>").unwrap_or(t).trim_start();
                if t.is_empty() || "<|python_tag|>".starts_with(self.held.trim_start()) {
                    return;
                }
                if t.starts_with('{') {
                    let rest = t.to_string();
                    self.held.clear();
                    self.state = State::Calls;
                    self.scan_calls(&rest, out);
                } else {
                    self.state = State::Text;
                    let all = std::mem::take(&mut self.held);
                    out.push(Delta::Text(all));
                }
            }
            State::Text => {
                if self.row.open.is_empty() {
                    out.push(Delta::Text(text.to_string()));
                    return;
                }
                self.held.push_str(text);
                self.split_text(out);
            }
            State::Calls => self.scan_calls(text, out),
        }
    }

    /// Emits the text before the first call's opening (the marker, or a fenced JSON block that
    /// starts like a call) and switches to the calls; holds back what may still become one.
    fn split_text(&mut self, out: &mut Vec<Delta>) {
        const FENCE: &str = "```json";
        let marker = self.row.open.trim_end();
        let mut from = 0; // fences before this offset were found not to be calls
        loop {
            let m_at = self.held.find(marker);
            let f_at = if self.row.fence {
                self.held[from..].find(FENCE).map(|f| f + from)
            } else {
                None
            };
            let marker_first = match (m_at, f_at) {
                (Some(m), Some(f)) => m < f,
                (m, _) => m.is_some(),
            };
            let (at, skip) = match (m_at, f_at) {
                (Some(m), _) if marker_first => (m, marker.len()),
                (_, Some(f)) => match fence_opens_call(&self.held[f + FENCE.len()..]) {
                    Some(true) => (f, FENCE.len()),
                    Some(false) => {
                        from = f + FENCE.len();
                        continue;
                    }
                    None => {
                        // undecided: emit up to the fence, hold the rest
                        let emit: String = self.held.drain(..f).collect();
                        if !emit.is_empty() {
                            out.push(Delta::Text(emit));
                        }
                        return;
                    }
                },
                _ => {
                    // keep the longest suffix that could begin an opening
                    let h = &self.held;
                    let could_open = |k: usize| {
                        h.is_char_boundary(h.len() - k)
                            && (marker.starts_with(&h[h.len() - k..])
                                || (self.row.fence && FENCE.starts_with(&h[h.len() - k..])))
                    };
                    let keep = (1..=marker.len().max(FENCE.len()).min(h.len()))
                        .rev()
                        .find(|&k| could_open(k))
                        .unwrap_or(0);
                    let emit: String = self.held.drain(..self.held.len() - keep).collect();
                    if !emit.is_empty() {
                        out.push(Delta::Text(emit));
                    }
                    return;
                }
            };
            let before = self.held[..at].to_string();
            let rest = self.held[at + skip..].to_string();
            self.held.clear();
            if !before.is_empty() {
                out.push(Delta::Text(before));
            }
            self.state = State::Calls;
            self.scan_calls(&rest, out);
            return;
        }
    }

    /// Scans text inside the calls' markup.
    fn scan_calls(&mut self, text: &str, out: &mut Vec<Delta>) {
        for c in text.chars() {
            match &mut self.scan {
                None => {
                    if c == '{' {
                        let mut s = CallScan {
                            want_key: true,
                            ..Default::default()
                        };
                        s.text.push('{');
                        s.depth = 1;
                        self.scan = Some(s);
                    }
                    // anything else between calls is markup: `[`, `,`, markers, newlines
                }
                Some(s) => {
                    let i = s.text.len();
                    s.text.push(c);
                    if s.in_str {
                        if s.esc {
                            s.esc = false;
                        } else if c == '\\' {
                            s.esc = true;
                        } else if c == '"' {
                            s.in_str = false;
                            let raw = &s.text[s.str_start..=i];
                            let val = serde_json::from_str::<String>(raw).unwrap_or_default();
                            match s.str_kind {
                                1 => s.key = Some(val),
                                2 => s.name = Some(val),
                                3 => s.args_end = Some(i + 1),
                                _ => {}
                            }
                            s.str_kind = 0;
                        }
                    } else {
                        match c {
                            '"' => {
                                s.in_str = true;
                                s.str_start = i;
                                s.str_kind = 0;
                                if s.depth == 1 {
                                    if s.want_key {
                                        s.str_kind = 1;
                                    } else if s.key.as_deref() == Some("name") {
                                        s.str_kind = 2;
                                    } else if s.key.as_deref() == Some(self.row.args_key)
                                        && s.args_start.is_none()
                                    {
                                        s.str_kind = 3;
                                        s.args_start = Some(i);
                                        s.args_is_str = true;
                                    }
                                }
                            }
                            ':' if s.depth == 1 => s.want_key = false,
                            ',' if s.depth == 1 => {
                                s.want_key = true;
                                s.key = None;
                            }
                            '{' | '[' => {
                                if s.depth == 1
                                    && !s.want_key
                                    && s.key.as_deref() == Some(self.row.args_key)
                                    && s.args_start.is_none()
                                {
                                    s.args_start = Some(i);
                                }
                                s.depth += 1;
                            }
                            '}' | ']' => {
                                s.depth -= 1;
                                if s.depth == 1
                                    && s.args_start.is_some()
                                    && s.args_end.is_none()
                                    && !s.args_is_str
                                {
                                    s.args_end = Some(i + 1);
                                }
                            }
                            _ => {}
                        }
                    }
                    let closed = s.depth == 0;
                    self.flush_call(closed, out);
                }
            }
        }
    }

    /// Emits what the current call has completed; ends it when `closed`.
    fn flush_call(&mut self, closed: bool, out: &mut Vec<Delta>) {
        let Some(s) = &mut self.scan else { return };
        if !s.started {
            if let Some(name) = &s.name {
                out.push(Delta::CallStart {
                    index: self.calls,
                    id: call_id(),
                    name: name.clone(),
                });
                self.calls += 1;
                s.started = true;
            } else if !closed {
                return;
            }
        }
        let index = self.calls.saturating_sub(1);
        if s.started && !s.args_is_str {
            if let Some(start) = s.args_start {
                let end = s.args_end.unwrap_or(s.text.len());
                let from = start.max(s.args_sent);
                if end > from {
                    out.push(Delta::CallArgs {
                        index,
                        fragment: s.text[from..end].to_string(),
                    });
                    s.args_sent = end;
                }
            }
        }
        if closed {
            let s = self.scan.take().expect("scanning a call");
            if !s.started {
                return; // an object without a name: not a call
            }
            // object arguments were streamed above; a string holds them as JSON text
            let rest = match (s.args_start, s.args_end) {
                (Some(a), Some(b)) if s.args_is_str => {
                    Some(serde_json::from_str::<String>(&s.text[a..b]).unwrap_or_default())
                }
                (Some(_), Some(_)) => None,
                _ => Some("{}".into()),
            };
            if let Some(fragment) = rest {
                out.push(Delta::CallArgs { index, fragment });
            }
        }
    }

    /// Ends the answer: flushes held-back text (and parses a generic answer).
    pub fn finish(&mut self, out: &mut Vec<Delta>) {
        match self.state {
            State::Generic => {
                let all = std::mem::take(&mut self.held);
                match serde_json::from_str::<Value>(all.trim()) {
                    Ok(Value::Object(o)) if o.contains_key("tool_calls") => {
                        if let Some(Value::String(r)) = o.get("response") {
                            out.push(Delta::Text(r.clone()));
                        }
                        if let Some(Value::Array(calls)) = o.get("tool_calls") {
                            for c in calls {
                                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                                let args = c.get("arguments").cloned().unwrap_or(json!({}));
                                let args = match args {
                                    Value::String(s) => s,
                                    v => v.to_string(),
                                };
                                out.push(Delta::CallStart {
                                    index: self.calls,
                                    id: call_id(),
                                    name: name.to_string(),
                                });
                                out.push(Delta::CallArgs {
                                    index: self.calls,
                                    fragment: args,
                                });
                                self.calls += 1;
                            }
                        }
                    }
                    Ok(Value::Object(o)) if o.get("response").is_some_and(Value::is_string) => {
                        out.push(Delta::Text(
                            o["response"].as_str().unwrap_or_default().to_string(),
                        ));
                    }
                    _ if !all.is_empty() => out.push(Delta::Text(all)),
                    _ => {}
                }
            }
            State::Start | State::Text => {
                let rest = std::mem::take(&mut self.held);
                if !rest.is_empty() {
                    out.push(Delta::Text(rest));
                }
            }
            State::Calls => {
                // a call cut short (max_tokens): report what it has
                if self.scan.as_ref().is_some_and(|s| s.started) {
                    self.flush_call(false, out);
                }
            }
        }
    }
}

/// OpenAI's streamed `delta` for one piece: `{"content"}`, or `{"tool_calls": [..]}` whose
/// first delta per call carries `index`, `id`, `type`, `function.name` and empty `arguments`,
/// and whose later deltas carry argument text.
pub fn delta_json(d: &Delta) -> Value {
    match d {
        Delta::Text(t) => json!({"content": t}),
        Delta::CallStart { index, id, name } => json!({"tool_calls": [{
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }]}),
        Delta::CallArgs { index, fragment } => json!({"tool_calls": [{
            "index": index,
            "function": {"arguments": fragment},
        }]}),
    }
}

/// OpenAI's assistant `message` of a whole answer (`tool_calls` only when there are some).
pub fn message_json(content: Option<&str>, calls: &[ToolCall]) -> Value {
    let mut m = json!({"role": "assistant", "content": content, "refusal": null});
    if !calls.is_empty() {
        m["tool_calls"] = serde_json::to_value(calls).unwrap_or(Value::Null);
    }
    m
}

/// Parses a whole answer: its content (`None` when only calls and whitespace) and its calls.
pub fn parse_answer(syntax: Syntax, text: &str) -> (Option<String>, Vec<ToolCall>) {
    let mut p = ToolParser::new(syntax);
    let mut out = Vec::new();
    p.push(text, &mut out);
    p.finish(&mut out);
    collect(&out)
}

/// Joins deltas into an answer's content and calls ([`answer_content`]).
pub fn collect(deltas: &[Delta]) -> (Option<String>, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    for d in deltas {
        match d {
            Delta::Text(t) => text.push_str(t),
            Delta::CallStart { id, name, .. } => calls.push(ToolCall {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: String::new(),
                },
            }),
            Delta::CallArgs { index, fragment } => {
                if let Some(c) = calls.get_mut(*index) {
                    c.function.arguments.push_str(fragment);
                }
            }
        }
    }
    (answer_content(text, !calls.is_empty()), calls)
}

/// An answer's `content`: its text, or, when it called tools, `None` for text that is only
/// whitespace and the text without trailing whitespace otherwise (what came before the calls).
pub fn answer_content(text: String, called: bool) -> Option<String> {
    if !called {
        Some(text)
    } else if text.trim().is_empty() {
        None
    } else {
        Some(text.trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        }}})
    }

    #[test]
    fn parses_tools_and_choice() {
        let tools = json!([tool("get_weather"), tool("get_time")]);
        let s = ToolSpec::parse(Some(&tools), None, None).unwrap().unwrap();
        assert_eq!(s.tools.len(), 2);
        assert_eq!(s.choice, ToolChoice::Auto);
        assert!(s.parallel);
        let named = json!({"type": "function", "function": {"name": "get_time"}});
        let s = ToolSpec::parse(Some(&tools), Some(&named), Some(&json!(false)))
            .unwrap()
            .unwrap();
        assert_eq!(s.choice, ToolChoice::Named("get_time".into()));
        assert!(!s.parallel);
        assert!(ToolSpec::parse(None, None, None).unwrap().is_none());
    }

    #[test]
    fn bad_tools_name_the_field() {
        let cases = [
            (
                json!([{"type": "function", "function": {}}]),
                None,
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([tool("a")]),
                Some(json!({"type": "function", "function": {"name": "b"}})),
                "tool_choice",
            ),
            (json!([tool("a")]), Some(json!("sometimes")), "tool_choice"),
            (json!({"a": 1}), None, "tools"),
            (
                json!([tool("a"), tool("a")]),
                None,
                "tools[1].function.name",
            ),
            (json!([]), Some(json!("required")), "tool_choice"),
        ];
        for (tools, choice, param) in cases {
            let e = ToolSpec::parse(Some(&tools), choice.as_ref(), None).unwrap_err();
            assert_eq!(e.param, param, "{e:?}");
        }
    }

    #[test]
    fn tool_messages_must_answer_a_call() {
        let call = ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "f".into(),
                    arguments: "{}".into(),
                },
            }],
            ..Default::default()
        };
        let mut answer = ChatMessage::new("tool", "42");
        answer.tool_call_id = Some("call_1".into());
        assert!(check_messages(&[ChatMessage::user("hi"), call.clone(), answer.clone()]).is_ok());
        answer.tool_call_id = Some("call_2".into());
        let e = check_messages(&[call, answer]).unwrap_err();
        assert_eq!(e.param, "messages[1].tool_call_id");
    }

    #[test]
    fn detects_syntaxes() {
        assert_eq!(
            Syntax::detect("{% for tool in tools %}<tool_call>{% endfor %}"),
            Syntax::Hermes
        );
        assert_eq!(
            Syntax::detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            Syntax::Mistral
        );
        assert_eq!(Syntax::detect("{{ tools }}<|python_tag|>"), Syntax::Llama3);
        assert_eq!(Syntax::detect("{{ tools }}<|tool_call|>"), Syntax::Phi4);
        assert_eq!(
            Syntax::detect("<|im_start|>{{ m.content }}"),
            Syntax::Generic
        );
        assert_eq!(Syntax::parse("phi4").unwrap(), Syntax::Phi4);
        assert!(Syntax::parse("qwen").is_err());
    }

    fn stream(syntax: Syntax, text: &str, step: usize) -> (String, Vec<(String, String, String)>) {
        let mut p = ToolParser::new(syntax);
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            p.push(&piece.iter().collect::<String>(), &mut out);
        }
        p.finish(&mut out);
        let mut content = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for d in out {
            match d {
                Delta::Text(t) => content.push_str(&t),
                Delta::CallStart { index, id, name } => {
                    assert_eq!(index, calls.len());
                    assert!(id.starts_with("call_") && id.len() == 29);
                    calls.push((id, name, String::new()));
                }
                Delta::CallArgs { index, fragment } => calls[index].2.push_str(&fragment),
            }
        }
        (content, calls)
    }

    #[test]
    fn parses_every_syntax_whole_and_streamed() {
        // (syntax, output, content, calls as (name, arguments))
        type Case<'a> = (Syntax, &'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                Syntax::Hermes,
                "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\", \"n\": [1, {\"a\": \"}\"}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
                "Let me check.\n",
                &[("get_weather", "{\"location\": \"Paris\", \"n\": [1, {\"a\": \"}\"}]}"), ("get_time", "{}")],
            ),
            (
                Syntax::Llama3,
                "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Paris\"}}",
                "",
                &[("get_weather", "{\"location\": \"Paris\"}")],
            ),
            (
                Syntax::Llama3,
                "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Paris\"}}",
                "",
                &[("get_weather", "{\"location\": \"Paris\"}")],
            ),
            (Syntax::Llama3, "It is sunny.", "It is sunny.", &[]),
            (
                Syntax::Mistral,
                "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": \"{\\\"y\\\": 2}\"}]",
                "",
                &[("a", "{\"x\": 1}"), ("b", "{\"y\": 2}")],
            ),
            (
                Syntax::Phi4,
                "<|tool_call|>[{\"name\": \"a\", \"arguments\": {\"x\": \"<|/tool_call|>\"}}]<|/tool_call|>",
                "",
                &[("a", "{\"x\": \"<|/tool_call|>\"}")],
            ),
            (
                Syntax::Generic,
                "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"x\": 1}}]}",
                "",
                &[("a", "{\"x\":1}")],
            ),
            (Syntax::Generic, "{\"response\": \"Hi there\"}", "Hi there", &[]),
            (Syntax::Hermes, "No <tool call here.", "No <tool call here.", &[]),
            (
                Syntax::Hermes,
                "Sure:\n```json\n{\n  \"name\": \"f\",\n  \"arguments\": {\"a\": 1}\n}\n```",
                "Sure:\n",
                &[("f", "{\"a\": 1}")],
            ),
            (
                Syntax::Hermes,
                "```json\n{\"x\": 1}\n```\ndone",
                "```json\n{\"x\": 1}\n```\ndone",
                &[],
            ),
            (
                Syntax::Phi4,
                "Calling.<|tool_call|>{\"name\": \"a\", \"arguments\": {}}<|/tool_call|><|tool_call|>{\"name\": \"b\", \"arguments\": {\"k\": [1]}}<|/tool_call|>",
                "Calling.",
                &[("a", "{}"), ("b", "{\"k\": [1]}")],
            ),
        ];
        for (syntax, text, content, want) in cases {
            for step in [1, 3, 1000] {
                let (c, calls) = stream(*syntax, text, step);
                assert_eq!(&c, content, "{syntax:?} step {step}: {text}");
                let got: Vec<(&str, &str)> = calls
                    .iter()
                    .map(|(_, n, a)| (n.as_str(), a.as_str()))
                    .collect();
                assert_eq!(&got, want, "{syntax:?} step {step}: {text}");
            }
            let (c, calls) = parse_answer(*syntax, text);
            assert_eq!(calls.len(), want.len());
            if want.is_empty() {
                assert_eq!(c.as_deref(), Some(*content));
            }
        }
    }

    #[test]
    fn closed_schemas_allow_only_declared_keys() {
        let s = closed(&json!({
            "type": "object",
            "properties": {"a": {"type": "object", "properties": {"b": {}}}, "free": {"type": "object"}},
            "allOf": [{"properties": {"c": {}}}],
            "$defs": {"d": {"properties": {"e": {}}, "additionalProperties": true}},
        }));
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert!(s["properties"]["free"]
            .get("additionalProperties")
            .is_none());
        assert!(s["allOf"][0].get("additionalProperties").is_none());
        assert_eq!(s["$defs"]["d"]["additionalProperties"], true);
    }

    #[test]
    fn mistral_ids_are_nine_characters() {
        let a = nine_chars("call_abcdefghijklmnopqrstuvwx");
        assert_eq!(a.len(), 9);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a, nine_chars("call_abcdefghijklmnopqrstuvwx"));
        assert_ne!(a, nine_chars("call_abcdefghijklmnopqrstuvwy"));
        assert_eq!(nine_chars("a1B2c3D4e"), "a1B2c3D4e");
    }

    #[test]
    fn call_schema_keeps_refs_resolvable() {
        let t = parse_tool(
            0,
            &json!({"type": "function", "function": {"name": "f", "parameters": {
                "type": "object",
                "properties": {"p": {"$ref": "#/$defs/P"}, "self": {"$ref": "#"}},
                "$defs": {"P": {"type": "string"}},
            }}}),
        )
        .unwrap();
        let s = call_schema(&t, "arguments");
        assert_eq!(
            s["properties"]["arguments"]["$ref"],
            "#/$defs/__flint_arguments"
        );
        assert_eq!(s["$defs"]["P"]["type"], "string");
        assert_eq!(
            s["$defs"]["__flint_arguments"]["properties"]["self"]["$ref"],
            "#/$defs/__flint_arguments"
        );
    }
}
