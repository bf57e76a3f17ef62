//! Chat templates rendered by flint (minijinja) against the strings Python's jinja2 produces for
//! the same templates and conversations (tests/fixtures/chat/expected.json, written by
//! scripts/make-chat-fixtures.py).

use std::path::{Path, PathBuf};

use flint::chat::{ChatMessage, ChatTemplate, IncrementalRender};
use flint::Error;
use serde::Deserialize;

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
    conversation: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    expected: Option<String>,
    error: Option<String>,
}

/// Templates that need minijinja's `loop_controls` feature, checked by their own test.
const NEEDS_LOOP_CONTROLS: &str = "loop_controls.jinja";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixtures() -> Vec<Case> {
    let f: Fixtures = serde_json::from_str(&read("expected.json")).expect("expected.json parses");
    f.cases
}

fn check(case: &Case) -> Result<(), String> {
    let what = format!(
        "{} ({}), {}, add_generation_prompt={}",
        case.template, case.model, case.conversation, case.add_generation_prompt
    );
    let t = ChatTemplate::new(&read(&case.template), &case.bos_token, &case.eos_token)
        .map_err(|e| format!("{what}: does not compile: {e}"))?;
    let got = t.render(&case.messages, case.add_generation_prompt);
    match (&case.expected, &case.error, got) {
        (Some(want), _, Ok(got)) if *want == got => Ok(()),
        (Some(want), _, Ok(got)) => Err(format!("{what}:\n want {want:?}\n got  {got:?}")),
        (Some(_), _, Err(e)) => Err(format!("{what}: unexpected error {e}")),
        (None, Some(msg), Err(Error::Template(e))) if e.contains(msg.as_str()) => Ok(()),
        (None, Some(msg), Err(e)) => Err(format!("{what}: want error {msg:?}, got {e}")),
        (None, Some(msg), Ok(got)) => Err(format!("{what}: want error {msg:?}, got {got:?}")),
        (None, None, _) => Err(format!("{what}: fixture has neither expected nor error")),
    }
}

#[test]
fn renders_like_python_jinja2() {
    let cases = fixtures();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases.iter().filter(|c| c.template != NEEDS_LOOP_CONTROLS) {
        checked += 1;
        if let Err(e) = check(case) {
            failures.push(e);
        }
    }
    assert!(checked >= 28, "only {checked} cases");
    for name in [
        "smollm2", "llama3", "gemma2", "qwen2.5", "mistral", "phi3", "features",
    ] {
        let file = format!("{name}.jinja");
        assert!(
            cases.iter().any(|c| c.template == file),
            "no case for {file}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_template_is_the_models_own() {
    // Extracted from models/SmolLM2-135M-Instruct.Q4_1.gguf (tokenizer.chat_template).
    let src = read("smollm2.jinja");
    assert!(src.contains("You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
    let t = ChatTemplate::new(&src, "<|im_start|>", "<|im_end|>").unwrap();
    assert_eq!(t.source(), src);
    assert_eq!(
        t.render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")], true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn gemma_rejects_system_role_via_raise_exception() {
    let t = ChatTemplate::new(&read("gemma2.jinja"), "<bos>", "<eos>").unwrap();
    let e = t
        .render(&[ChatMessage::system("x"), ChatMessage::user("y")], true)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Template(m) if m.contains("System role not supported")),
        "{e}"
    );
}

#[test]
fn syntax_error_is_a_template_error_with_line() {
    let e = ChatTemplate::new(
        "{% for m in messages %}\n{{ m.content }}\n{% endif %}",
        "",
        "",
    )
    .unwrap_err();
    match e {
        Error::Template(m) => assert!(m.contains("line 3"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn incremental_rendering_over_two_turns_keeps_the_prefix() {
    // SmolLM2 (ChatML): the generated answer ends with <|im_end|>, and the template adds "\n".
    let t = ChatTemplate::new(&read("smollm2.jinja"), "<|im_start|>", "<|im_end|>").unwrap();
    let mut msgs = vec![ChatMessage::user("What is 2+2?")];
    let prompt1 = t.render(&msgs, true).unwrap();
    let fed = format!("{prompt1}4<|im_end|>");
    msgs.push(ChatMessage::assistant("4"));
    msgs.push(ChatMessage::user("And 3+3?"));
    match t.render_incremental(&fed, &msgs, true).unwrap() {
        IncrementalRender::Suffix(s) => {
            assert_eq!(
                s,
                "\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
            );
            assert_eq!(format!("{fed}{s}"), t.render(&msgs, true).unwrap());
        }
        other => panic!("{other:?}"),
    }

    // Llama 3 trims contents: an answer generated with a trailing space is rewritten, so the
    // previous text is not a prefix any more and the whole prompt comes back.
    let t = ChatTemplate::new(&read("llama3.jinja"), "<|begin_of_text|>", "<|eot_id|>").unwrap();
    let mut msgs = vec![ChatMessage::user("Hi")];
    let fed = format!("{}Hello <|eot_id|>", t.render(&msgs, true).unwrap());
    msgs.push(ChatMessage::assistant("Hello "));
    msgs.push(ChatMessage::user("Bye"));
    match t.render_incremental(&fed, &msgs, true).unwrap() {
        IncrementalRender::Full(s) => assert_eq!(s, t.render(&msgs, true).unwrap()),
        other => panic!("{other:?}"),
    }
}

/// `{% break %}` / `{% continue %}` (minijinja's `loop_controls` feature, enabled in Cargo.toml).
#[test]
fn loop_controls_like_python_jinja2() {
    let cases = fixtures();
    let mut n = 0;
    for case in cases.iter().filter(|c| c.template == NEEDS_LOOP_CONTROLS) {
        n += 1;
        check(case).unwrap();
    }
    assert!(n > 0);
}
