//! Tool-call grammars (`ToolSpec::grammar`) against a real vocabulary: for every syntax and
//! tool choice, the canonical output is accepted token by token and may end only where the
//! grammar says; and random walks through the mask (any allowed token, seeded) always parse back
//! into calls that name a declared tool, with arguments that are JSON objects carrying the
//! required keys. Qwen2.5's vocabulary (151,646 tokens) when scripts/setup.sh fetched it, else
//! SmolLM2's.

use flint::constrain::{Compiled, Constraint, ConstraintVocab, GrammarSpec};
use flint::tokenizer::Tokenizer;
use flint::tools::{parse_answer, Syntax, ToolChoice, ToolSpec};
use serde_json::{json, Value};
use std::sync::OnceLock;

const QWEN: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const SMOL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct Vocab {
    tok: Tokenizer,
    vocab: ConstraintVocab,
}

fn vocab() -> &'static Vocab {
    static V: OnceLock<Vocab> = OnceLock::new();
    V.get_or_init(|| {
        let path = if std::path::Path::new(QWEN).exists() {
            QWEN
        } else {
            SMOL
        };
        let gguf = flint::format::gguf::Gguf::open(path).expect("open the model");
        let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
        let vocab = ConstraintVocab::new(&tok).expect("vocabulary");
        Vocab { tok, vocab }
    })
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        }}},
        {"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        }}},
    ])
}

fn spec(choice: Value, parallel: bool) -> ToolSpec {
    ToolSpec::parse(Some(&tools()), Some(&choice), Some(&json!(parallel)))
        .expect("tools")
        .expect("some tools")
}

fn compile(spec: &ToolSpec, syntax: Syntax) -> Option<Compiled> {
    let v = vocab();
    let g = spec.grammar(syntax, &|t| v.vocab.special_token(t).is_some())?;
    Some(
        v.vocab
            .compile(&GrammarSpec::Lark(g.clone()))
            .unwrap_or_else(|e| panic!("{syntax:?} {:?}: {e}\n{g}", spec.choice)),
    )
}

/// Feeds `text` (tokenized as the model would write it); `Err(at)`: the byte offset of the
/// first token the grammar refused.
fn feed(c: &mut Constraint, text: &str) -> Result<(), String> {
    let v = vocab();
    let ids = v.tok.encode(text, false).expect("encode");
    let mut at = String::new();
    for id in ids {
        if let Err(e) = c.accept(id) {
            return Err(format!(
                "refused {:?} after {at:?}: {e}",
                v.tok.token_str(id)
            ));
        }
        at.push_str(&String::from_utf8_lossy(&v.tok.token_bytes(id).unwrap()));
    }
    Ok(())
}

fn end_allowed(c: &mut Constraint) -> bool {
    let v = vocab();
    let mut logits = vec![0.0f32; v.tok.vocab_size()];
    c.mask(&mut logits).unwrap();
    (0..v.tok.vocab_size() as u32)
        .filter(|&i| v.tok.is_eog(i))
        .any(|i| logits[i as usize].is_finite())
}

const CALL: &str = r#"{"name": "get_weather", "arguments": {"location": "Paris"}}"#;

#[test]
fn hermes_auto_text_then_calls() {
    let c = compile(&spec(json!("auto"), true), Syntax::Hermes).unwrap();
    // plain text may end
    let mut k = Constraint::new(&c);
    feed(&mut k, "It is sunny in Paris today.").unwrap();
    assert!(end_allowed(&mut k));
    // text, then two calls
    let mut k = Constraint::new(&c);
    let out = format!(
        "Let me check.\n<tool_call>\n{CALL}\n</tool_call>\n<tool_call>\n{}\n</tool_call>",
        r#"{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}"#
    );
    feed(&mut k, &out).unwrap();
    assert!(end_allowed(&mut k));
    let (content, calls) = parse_answer(Syntax::Hermes, &out);
    assert_eq!(content.as_deref(), Some("Let me check."));
    assert_eq!(calls.len(), 2);
    // an undeclared tool, or arguments missing a required key, are refused
    let mut k = Constraint::new(&c);
    assert!(feed(&mut k, "<tool_call>\n{\"name\": \"get_stock\"").is_err());
    let mut k = Constraint::new(&c);
    assert!(feed(
        &mut k,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}"
    )
    .is_err());
    // a half-open call may not end
    let mut k = Constraint::new(&c);
    feed(&mut k, "<tool_call>\n{\"name\": \"get_weather\"").unwrap();
    assert!(!end_allowed(&mut k));
    // Qwen2.5-Coder's fenced form is a call too
    let mut k = Constraint::new(&c);
    feed(
        &mut k,
        "```json\n{\n  \"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}\n}\n```",
    )
    .unwrap();
    assert!(end_allowed(&mut k));
}

#[test]
fn hermes_required_named_none_and_single() {
    let c = compile(&spec(json!("required"), true), Syntax::Hermes).unwrap();
    let mut k = Constraint::new(&c);
    assert!(feed(&mut k, "Sure").is_err(), "required: no text first");
    let mut k = Constraint::new(&c);
    feed(&mut k, &format!("<tool_call>\n{CALL}\n</tool_call>")).unwrap();
    assert!(end_allowed(&mut k));

    let named = json!({"type": "function", "function": {"name": "get_time"}});
    let c = compile(&spec(named, true), Syntax::Hermes).unwrap();
    let mut k = Constraint::new(&c);
    assert!(
        feed(&mut k, &format!("<tool_call>\n{CALL}")).is_err(),
        "only get_time"
    );

    let c = compile(&spec(json!("none"), true), Syntax::Hermes).unwrap();
    let mut k = Constraint::new(&c);
    feed(&mut k, "No tools needed.").unwrap();
    assert!(end_allowed(&mut k));
    let mut k = Constraint::new(&c);
    assert!(feed(&mut k, "<tool_call>\n").is_err(), "none: no marker");

    let c = compile(&spec(json!("required"), false), Syntax::Hermes).unwrap();
    let mut k = Constraint::new(&c);
    feed(&mut k, &format!("<tool_call>\n{CALL}\n</tool_call>")).unwrap();
    assert!(
        feed(&mut k, "\n<tool_call>").is_err(),
        "parallel_tool_calls false: one call"
    );
}

#[test]
fn other_syntaxes_accept_their_calls() {
    let cases = [
        (
            Syntax::Llama3,
            r#"{"name": "get_weather", "parameters": {"location": "Paris"}}"#.to_string(),
        ),
        (Syntax::Mistral, format!("[TOOL_CALLS][{CALL}, {CALL}]")),
        (Syntax::Phi4, format!("<|tool_call|>{CALL}<|/tool_call|>")),
        (Syntax::Generic, format!("{{\"tool_calls\": [{CALL}]}}")),
    ];
    for (syntax, out) in cases {
        for choice in [json!("auto"), json!("required")] {
            let c = compile(&spec(choice.clone(), true), syntax).unwrap();
            let mut k = Constraint::new(&c);
            feed(&mut k, &out).unwrap_or_else(|e| panic!("{syntax:?} {choice}: {e}"));
            assert!(end_allowed(&mut k), "{syntax:?} {choice}");
            let (_, calls) = parse_answer(syntax, &out);
            assert!(!calls.is_empty(), "{syntax:?}");
            assert!(calls.iter().all(|c| c.function.name == "get_weather"));
        }
    }
    // auto text for Llama 3 and generic
    let c = compile(&spec(json!("auto"), true), Syntax::Llama3).unwrap();
    let mut k = Constraint::new(&c);
    feed(&mut k, "It is sunny.").unwrap();
    assert!(end_allowed(&mut k));
    let c = compile(&spec(json!("auto"), true), Syntax::Generic).unwrap();
    let mut k = Constraint::new(&c);
    feed(&mut k, r#"{"response": "It is sunny."}"#).unwrap();
    assert!(end_allowed(&mut k));
}

/// A tiny seeded generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random walks with calls required: whatever allowed tokens are picked, the answer parses
/// into calls of declared tools whose arguments are JSON objects with the required keys.
#[test]
fn random_walks_always_give_valid_calls() {
    let v = vocab();
    let n = v.tok.vocab_size();
    for syntax in [
        Syntax::Hermes,
        Syntax::Mistral,
        Syntax::Generic,
        Syntax::Llama3,
    ] {
        let c = compile(&spec(json!("required"), true), syntax).unwrap();
        for seed in 1..=4u64 {
            let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
            let mut k = Constraint::new(&c);
            let mut bytes = Vec::new();
            let mut done = false;
            for _ in 0..400 {
                let mut logits = vec![0.0f32; n];
                let allowed = k.mask(&mut logits).unwrap();
                assert!(allowed > 0, "{syntax:?}: the mask allows nothing");
                let ok: Vec<u32> = (0..n as u32)
                    .filter(|&i| logits[i as usize].is_finite())
                    .collect();
                // prefer ending when allowed, and short strings: keeps walks finite
                let eog = ok.iter().copied().find(|&i| v.tok.is_eog(i));
                let tok = match eog {
                    Some(e) if rng.next().is_multiple_of(2) => e,
                    _ => {
                        let closing: Vec<u32> = ok
                            .iter()
                            .copied()
                            .filter(|&i| {
                                let b = v.tok.token_bytes(i).unwrap_or_default();
                                b.first().is_some_and(|c| b"\"}]".contains(c))
                            })
                            .collect();
                        if !closing.is_empty() && !rng.next().is_multiple_of(3) {
                            closing[(rng.next() % closing.len() as u64) as usize]
                        } else {
                            ok[(rng.next() % ok.len() as u64) as usize]
                        }
                    }
                };
                k.accept(tok).unwrap();
                if v.tok.is_eog(tok) {
                    done = true;
                    break;
                }
                bytes.extend(flint::decode::token_bytes(&v.tok, tok, Some(syntax)));
                if k.is_finished() {
                    done = true;
                    break;
                }
            }
            if !done {
                continue; // a walk that wandered in a long string: nothing to check
            }
            let text = String::from_utf8_lossy(&bytes);
            let (_, calls) = parse_answer(syntax, &text);
            assert!(
                !calls.is_empty(),
                "{syntax:?} seed {seed}: no call in {text:?}"
            );
            for call in calls {
                let args: Value = serde_json::from_str(&call.function.arguments)
                    .unwrap_or_else(|e| panic!("{syntax:?}: {e} in {text:?}"));
                let need = match call.function.name.as_str() {
                    "get_weather" => "location",
                    "get_time" => "timezone",
                    other => panic!("{syntax:?}: undeclared tool {other} in {text:?}"),
                };
                assert!(args.get(need).is_some_and(Value::is_string), "{text:?}");
            }
        }
    }
}

#[test]
fn tool_choice_none_without_text_marker_needs_no_grammar() {
    assert!(spec(json!("none"), true)
        .grammar(Syntax::Llama3, &|_| false)
        .is_none());
    assert_eq!(spec(json!("none"), true).choice, ToolChoice::None);
}
