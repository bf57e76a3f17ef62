//! Chat templates with tool support (Qwen2.5, Qwen3, Llama 3.1/3.2, Mistral Nemo, Hermes 3,
//! Phi-4-mini) rendered by flint (minijinja) against the strings Python's jinja2 produces for
//! the same templates, conversations and tools (tests/fixtures/chat/tools/expected.json, written
//! by scripts/make-tool-fixtures.py; the templates' provenance is in that folder's README.md).
//!
//! Messages are in OpenAI's request shape (tool call arguments as JSON strings); the Python side
//! parses each `function.arguments` string into an object before rendering, and
//! `ChatTemplate::render_with_tools` must do the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flint::chat::{ChatMessage, ChatTemplate};
use flint::Error;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    model: String,
    bos_token: String,
    eos_token: String,
    case: String,
    /// OpenAI-shaped messages, read into `ChatMessage`s per case (so one bad case is one failure).
    messages: Value,
    tools: Option<Vec<Value>>,
    add_generation_prompt: bool,
    expected: Option<String>,
    /// jinja2 failed: the `raise_exception` message when `raised`, else Python's error text.
    error: Option<String>,
    #[serde(default)]
    raised: bool,
    /// `strftime_now(format)` calls the render made, with the fixed output used in `expected`.
    #[serde(default)]
    strftime_now: BTreeMap<String, String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/tools")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What flint's own `strftime_now(format)` gives now, to put in place of the fixture's fixed date.
fn flint_strftime_now(format: &str) -> Result<String, String> {
    let quoted = serde_json::to_string(format).unwrap();
    let src = format!("{{{{ strftime_now({quoted}) }}}}");
    let t = ChatTemplate::new(&src, "", "").map_err(|e| format!("strftime_now template: {e}"))?;
    t.render_with_tools(&[], None, false)
        .map_err(|e| format!("strftime_now({quoted}): {e}"))
}

/// Where `want` and `got` first differ, in chars, with some context on either side.
fn first_difference(want: &str, got: &str) -> String {
    let w: Vec<char> = want.chars().collect();
    let g: Vec<char> = got.chars().collect();
    let i = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    let ctx = |s: &[char]| -> String {
        let lo = i.saturating_sub(60);
        let hi = (i + 60).min(s.len());
        s[lo.min(s.len())..hi].iter().collect()
    };
    format!(
        "first difference at char {i} (want {} chars, got {}):\n   want …{:?}…\n   got  …{:?}…",
        w.len(),
        g.len(),
        ctx(&w),
        ctx(&g)
    )
}

fn check(case: &Case) -> Result<(), String> {
    let what = format!(
        "{} ({}), case {}, add_generation_prompt={}, tools={}",
        case.template,
        case.model,
        case.case,
        case.add_generation_prompt,
        case.tools.as_ref().map_or(0, Vec::len)
    );
    let messages: Vec<ChatMessage> = serde_json::from_value(case.messages.clone())
        .map_err(|e| format!("{what}: messages do not deserialize: {e}"))?;
    let t = ChatTemplate::new(&read(&case.template), &case.bos_token, &case.eos_token)
        .map_err(|e| format!("{what}: does not compile: {e}"))?;
    let got = t.render_with_tools(&messages, case.tools.as_deref(), case.add_generation_prompt);
    match (&case.expected, &case.error, got) {
        (Some(want), _, Ok(got)) => {
            let mut want = want.clone();
            for (format, fixed) in &case.strftime_now {
                let now = flint_strftime_now(format).map_err(|e| format!("{what}: {e}"))?;
                want = want.replace(fixed.as_str(), &now);
            }
            if want == got {
                Ok(())
            } else {
                Err(format!("{what}: {}", first_difference(&want, &got)))
            }
        }
        (Some(_), _, Err(e)) => Err(format!("{what}: unexpected error {e}")),
        (None, Some(msg), Err(Error::Template(e))) if !case.raised || e.contains(msg.as_str()) => {
            Ok(())
        }
        (None, Some(msg), Err(e)) if case.raised => Err(format!(
            "{what}: want Error::Template containing {msg:?}, got {e}"
        )),
        // jinja2 failed by itself (TypeError on None and the like): any error will do.
        (None, Some(_), Err(_)) => Ok(()),
        // A known difference (src/chat.rs): minijinja iterates `none` as an empty list, so a
        // template that loops over `tools` without checking them renders where jinja2 raises.
        (None, Some(msg), Ok(_))
            if !case.raised
                && case.tools.is_none()
                && msg.contains("'NoneType' object is not iterable") =>
        {
            Ok(())
        }
        (None, Some(msg), Ok(got)) => Err(format!(
            "{what}: want an error ({}{msg:?}), got {got:?}",
            if case.raised {
                "raise_exception "
            } else {
                "jinja2 failed with "
            }
        )),
        (None, None, _) => Err(format!("{what}: fixture has neither expected nor error")),
    }
}

#[test]
fn tool_templates_render_like_python_jinja2() {
    let f: Fixtures = serde_json::from_str(&read("expected.json")).expect("expected.json parses");
    let mut failures = Vec::new();
    for case in &f.cases {
        if let Err(e) = check(case) {
            failures.push(e);
        }
    }
    assert!(f.cases.len() >= 48, "only {} cases", f.cases.len());
    for name in [
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        "Qwen-Qwen3-0.6B.jinja",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "microsoft-Phi-4-mini-instruct.jinja",
        "llama-cpp-microsoft-Phi-4-mini-instruct.jinja",
    ] {
        assert!(
            f.cases
                .iter()
                .any(|c| c.template == name && c.expected.is_some()),
            "no rendered case for {name}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from jinja2:\n\n{}",
        failures.len(),
        f.cases.len(),
        failures.join("\n\n")
    );
}

/// The call syntax flint detects from each carried template (what `flint info` prints).
#[test]
fn syntaxes_are_detected_from_the_published_templates() {
    use flint::tools::Syntax;
    for (name, want) in [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", Syntax::Hermes),
        ("Qwen-Qwen3-0.6B.jinja", Syntax::Hermes),
        (
            "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
            Syntax::Hermes,
        ),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", Syntax::Llama3),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", Syntax::Llama3),
        (
            "mistralai-Mistral-Nemo-Instruct-2407.jinja",
            Syntax::Mistral,
        ),
        (
            "llama-cpp-microsoft-Phi-4-mini-instruct.jinja",
            Syntax::Phi4,
        ),
        // The published Phi-4-mini template never reads `tools` (only a system message's
        // `tools` string): the generic prompt shows the model its tools instead.
        ("microsoft-Phi-4-mini-instruct.jinja", Syntax::Generic),
    ] {
        assert_eq!(Syntax::detect(&read(name)), want, "{name}");
    }
}
