//! Chat templates: the model's own Jinja `chat_template` (from GGUF metadata
//! `tokenizer.chat_template` or `tokenizer_config.json`), rendered with minijinja.
//!
//! No template is written per model here. The environment imitates the one Hugging Face
//! transformers renders chat templates in, so that the published templates produce the same
//! text they produce in Python:
//!
//! - `trim_blocks` and `lstrip_blocks` on, no trailing newline kept, no auto-escaping;
//! - variables `messages` (OpenAI's message shape, each tool call's `arguments` parsed from its
//!   JSON text into a map as llama.cpp and vLLM pass them), `add_generation_prompt`,
//!   `bos_token`, `eos_token`, `tools` (the request's tool objects, or `none`) and `documents`
//!   (`none`);
//! - functions `raise_exception(msg)` (fails the render with [`Error::Template`] carrying `msg`)
//!   and `strftime_now(fmt)` (the current time; UTC here, local time in transformers);
//! - Python string, list and dict methods (`.strip()`, `.startswith()`, `.items()`, ...) through
//!   `minijinja_contrib::pycompat`;
//! - a `tojson` filter that writes JSON the way Python's `json.dumps` does (`", "` and `": "`
//!   separators, no HTML escaping, `indent`, `ensure_ascii`, `sort_keys`), and messages whose
//!   keys keep the order `role`, `content` as Python dicts do.
//!
//! Known differences from Python's Jinja: `{{ true }}` prints `true` rather than `True`, dict
//! literals written in a template iterate (and serialize) in sorted key order, and `none`
//! iterates as an empty list (a template looping over `tools` renders without tools, where
//! jinja2 raises a TypeError).
//! `{% break %}` and `{% continue %}` need minijinja's `loop_controls` feature.

use std::fmt;

use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The name the template is stored under in its environment (no extension: no auto-escaping).
const NAME: &str = "chat_template";

/// One turn of a conversation, in OpenAI's message shape (`serde` reads and writes it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, or whatever else the template knows.
    pub role: String,
    /// The text of the turn; `None` (JSON `null`) for an assistant turn that only calls tools.
    #[serde(default)]
    pub content: Option<String>,
    /// The tools an assistant turn called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` turn answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's name on a `tool` turn (some templates print it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One tool call, as OpenAI writes it: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, the arguments a JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function half of a [`ToolCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text (OpenAI's `function.arguments` string).
    pub arguments: String,
}

fn function_type() -> String {
    "function".into()
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(content.into()),
            ..Default::default()
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// The text of the turn (`""` when it has none).
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }

    /// The message as the template sees it: a map whose keys keep the order `role`, `content`,
    /// `tool_calls`, `tool_call_id`, `name` as the Python dict transformers passes does, with
    /// each call's `arguments` parsed from its JSON text into an object (the templates index and
    /// `tojson` them as dicts; llama.cpp and vLLM convert them the same way). Arguments that are
    /// not valid JSON stay a string.
    fn template_value(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value as J};
        let mut m = Map::new();
        m.insert("role".into(), J::from(self.role.as_str()));
        m.insert(
            "content".into(),
            self.content.as_deref().map_or(J::Null, J::from),
        );
        if !self.tool_calls.is_empty() {
            let calls: Vec<J> = self
                .tool_calls
                .iter()
                .map(|c| {
                    let args = serde_json::from_str::<J>(&c.function.arguments)
                        .unwrap_or_else(|_| J::from(c.function.arguments.as_str()));
                    json!({
                        "id": c.id,
                        "type": c.kind,
                        "function": {"name": c.function.name, "arguments": args},
                    })
                })
                .collect();
            m.insert("tool_calls".into(), J::Array(calls));
        }
        if let Some(id) = &self.tool_call_id {
            m.insert("tool_call_id".into(), J::from(id.as_str()));
        }
        if let Some(name) = &self.name {
            m.insert("name".into(), J::from(name.as_str()));
        }
        J::Object(m)
    }
}

/// What [`ChatTemplate::render_incremental`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncrementalRender {
    /// The full render starts with the previous text: only this suffix is new, and the tokens
    /// already in the KV cache can stay.
    Suffix(String),
    /// The full render does not start with the previous text (the template rewrote history, for
    /// example by trimming the last answer or moving a system prompt): this is the whole
    /// prompt, to be fed from scratch.
    Full(String),
}

/// A compiled chat template, ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `template` once. `bos_token` and `eos_token` are the texts of the model's BOS and
    /// EOS tokens, which templates insert themselves (pass `""` when the model has none).
    ///
    /// A syntax error gives [`Error::Template`] naming the line.
    pub fn new(template: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, template.to_owned())
            .map_err(|e| template_error(&e))?;
        Ok(ChatTemplate {
            env,
            source: template.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` into the prompt text. With `add_generation_prompt` the template appends
    /// the header of an assistant turn, so that the model writes the answer next.
    ///
    /// Errors from the template, including its own `raise_exception(...)` calls (a template
    /// rejecting a system message, say), come back as [`Error::Template`].
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with `tools`: the OpenAI tool objects as the request gave them
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`), passed to
    /// the template as `tools` the way transformers' `apply_chat_template(tools=...)` does.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error(&e))?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_serialize(m.template_value()))
            .collect();
        let tools = match tools {
            Some(t) => Value::from_serialize(t),
            None => Value::from(()),
        };
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            tools => tools,
            documents => Value::from(()),
        };
        tmpl.render(ctx).map_err(|e| template_error(&e))
    }

    /// Renders `messages` and compares the result with `prev_rendered`, the text already fed to
    /// the model in this conversation (the previous prompt plus the answer as it was generated).
    ///
    /// When the new render starts with `prev_rendered` only the new suffix is returned, so a
    /// multi-turn chat can keep its KV cache and feed just the new turns. Otherwise the full
    /// render is returned as [`IncrementalRender::Full`]. Note that a suffix tokenized on its own
    /// can split differently from the same text tokenized as part of the whole; callers that need
    /// token-exact prompts should compare tokens.
    pub fn render_incremental(
        &self,
        prev_rendered: &str,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<IncrementalRender> {
        let full = self.render(messages, add_generation_prompt)?;
        Ok(match full.strip_prefix(prev_rendered) {
            Some(suffix) => IncrementalRender::Suffix(suffix.to_owned()),
            None => IncrementalRender::Full(full),
        })
    }
}

/// The message a template passed to `raise_exception`, carried as the source of the minijinja
/// error so that [`template_error`] can report it as is.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, "raise_exception")
            .with_source(Raised(message)),
    )
}

/// Turns a minijinja error into flint's, with the line and, for `raise_exception`, the template's
/// own message first.
fn template_error(e: &minijinja::Error) -> Error {
    let at = e
        .line()
        .map(|l| format!(" at line {l}"))
        .unwrap_or_default();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(Raised(msg)) = s.downcast_ref::<Raised>() {
            return Error::Template(format!("{msg} (raise_exception{at})"));
        }
        source = s.source();
    }
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    Error::Template(format!("{}{at}{detail}", e.kind()))
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`. `indent` may also be given positionally.
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        Some(v) => Some(v),
        None => indent,
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;

    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            (_, Some(s)) => Some(s.to_owned()),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        },
    };
    // Python's defaults: (", ", ": ") without indent, (",", ": ") with it.
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair of strings",
            ))
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };

    let json_err = |e: serde_json::Error| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
    };
    let mut out = Vec::new();
    let formatter = PyFormatter {
        indent,
        item_sep,
        key_sep,
        level: 0,
        has_value: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    if sort_keys {
        let mut v = serde_json::to_value(value).map_err(json_err)?;
        sort_all_keys(&mut v);
        v.serialize(&mut ser).map_err(json_err)?;
    } else {
        value.serialize(&mut ser).map_err(json_err)?;
    }
    let mut s = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    if ensure_ascii {
        s = escape_non_ascii(&s);
    }
    Ok(Value::from_safe_string(s))
}

fn sort_all_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_all_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_all_keys),
        _ => {}
    }
}

/// JSON output only has non-ASCII characters inside strings, so escaping them all afterwards is
/// what `ensure_ascii=True` does (UTF-16 escapes, surrogate pairs above the BMP).
fn escape_non_ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A serde_json formatter that lays JSON out like Python's `json.dumps`.
struct PyFormatter {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    level: usize,
    /// Whether the container being written has at least one element (for the closing newline).
    has_value: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(ind) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.level {
                w.write_all(ind.as_bytes())?;
            }
        }
        Ok(())
    }

    fn begin_item<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        self.newline(w)
    }

    fn end_container<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        close: &[u8],
    ) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        self.has_value = true;
        w.write_all(close)
    }
}

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end_container(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_item(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end_container(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_item(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(self.key_sep.as_bytes())
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// `strftime_now(fmt)`: the current time (UTC) formatted like Python's `datetime.strftime`.
fn strftime_now(fmt: String) -> String {
    let secs = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&fmt, secs as i64)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats a Unix time (seconds, UTC) with the common `strftime` directives: `%Y %y %m %B %b %h
/// %d %e %j %A %a %u %w %H %I %M %S %p %F %T %D %Z %z %%`, and glibc's `%-d` style (no padding).
/// Unknown directives are copied through.
fn strftime(fmt: &str, unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let sod = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (sod / 3600, sod / 60 % 60, sod % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday; 0 = Monday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |v: i64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let s = match d {
            'Y' => year.to_string(),
            'y' => num(year.rem_euclid(100), 2),
            'm' => num(month, 2),
            'B' => MONTHS[(month - 1) as usize].to_owned(),
            'b' | 'h' => MONTHS[(month - 1) as usize][..3].to_owned(),
            'd' => num(day, 2),
            'e' => format!("{day:2}"),
            'j' => num(yday, 3),
            'A' => DAYS[weekday].to_owned(),
            'a' => DAYS[weekday][..3].to_owned(),
            'u' => (weekday + 1).to_string(),
            'w' => ((weekday + 1) % 7).to_string(),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'M' => num(minute, 2),
            'S' => num(second, 2),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_owned(),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            'D' => format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'Z' => "UTC".to_owned(),
            'z' => "+0000".to_owned(),
            '%' => "%".to_owned(),
            other => format!("%{}{other}", if no_pad { "-" } else { "" }),
        };
        out.push_str(&s);
    }
    out
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, messages: &[ChatMessage]) -> Result<String> {
        ChatTemplate::new(src, "<s>", "</s>")?.render(messages, true)
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %-d, %H:%M:%S %p %I %j %y %%", t),
            "Friday July 26, 13:05:09 PM 01 208 24 %"
        );
        assert_eq!(strftime("%F %T %Z %Q", 0), "1970-01-01 00:00:00 UTC %Q");
        assert_eq!(strftime("%Y-%m-%d %a", 951_782_400), "2000-02-29 Tue");
        for days in [-1000i64, 0, 59, 11_016, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn strftime_now_is_available() {
        let out = render("{{ strftime_now('%Y') }}", &[]).unwrap();
        let year: i64 = out.parse().unwrap();
        assert!(year >= 2024, "{out}");
    }

    #[test]
    fn tojson_like_python() {
        let m = [ChatMessage::user("a \"b\" <c> é")];
        assert_eq!(
            render("{{ messages[0] | tojson }}", &m).unwrap(),
            r#"{"role": "user", "content": "a \"b\" <c> é"}"#
        );
        assert_eq!(
            render("{{ messages | tojson(indent=2) }}", &m).unwrap(),
            "[\n  {\n    \"role\": \"user\",\n    \"content\": \"a \\\"b\\\" <c> é\"\n  }\n]"
        );
        assert_eq!(
            render(
                "{{ [messages[0], [], {}] | tojson(ensure_ascii=true, sort_keys=true) }}",
                &m
            )
            .unwrap(),
            r#"[{"content": "a \"b\" <c> \u00e9", "role": "user"}, [], {}]"#
        );
        assert_eq!(
            render("{{ [1, {'a': 2}] | tojson(separators=[',', ':']) }}", &m).unwrap(),
            r#"[1,{"a":2}]"#
        );
        assert_eq!(
            render("{{ '😀' | tojson(ensure_ascii=true) }}", &m).unwrap(),
            r#""\ud83d\ude00""#
        );
    }

    #[test]
    fn raise_exception_message_and_line() {
        let e = render("line one\n{{ raise_exception('No system role!') }}", &[]).unwrap_err();
        assert!(matches!(e, Error::Template(_)));
        let s = e.to_string();
        assert!(s.contains("No system role!") && s.contains("line 2"), "{s}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e =
            ChatTemplate::new("ok\n{% for m in messages %}\n{{ m.content }", "", "").unwrap_err();
        assert!(matches!(e, Error::Template(_)));
        let s = e.to_string();
        assert!(s.contains("syntax error") && s.contains("line 3"), "{s}");
        let e = ChatTemplate::new("{% if x %}never closed", "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("syntax error"), "{e}");
    }

    #[test]
    fn incremental_across_two_turns() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
             {% if add_generation_prompt %}<|assistant|>{% endif %}",
            "",
            "",
        )
        .unwrap();
        let mut msgs = vec![ChatMessage::user("hi")];
        let p1 = t.render(&msgs, true).unwrap();
        assert_eq!(
            t.render_incremental("", &msgs, true).unwrap(),
            IncrementalRender::Suffix(p1.clone())
        );
        // The model answered "hello<|end|>"; all of it is in the KV cache.
        let fed = format!("{p1}hello<|end|>");
        msgs.push(ChatMessage::assistant("hello"));
        msgs.push(ChatMessage::user("how are you?"));
        assert_eq!(
            t.render_incremental(&fed, &msgs, true).unwrap(),
            IncrementalRender::Suffix("<|user|>how are you?<|end|><|assistant|>".into())
        );
        // History edited: no longer a prefix.
        msgs[0].content = Some("hey".into());
        match t.render_incremental(&fed, &msgs, true).unwrap() {
            IncrementalRender::Full(s) => assert!(s.starts_with("<|user|>hey")),
            other => panic!("{other:?}"),
        }
    }
}
