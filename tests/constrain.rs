//! Structured outputs over llguidance (src/constrain.rs), no GPU: walks through JSON schemas and
//! Lark tool-call grammars on a small synthetic vocabulary, hostile schemas and grammars that
//! must fail cleanly and quickly, and the corpus of real-world schemas in tests/fixtures/schemas/
//! against a real vocabulary (Qwen2.5's when models/ has it, else SmolLM2's).
//! Set FLINT_SKIP_MODEL_TESTS=1 to skip the real-vocabulary test.

use flint::constrain::{lark_json, Compiled, Constraint, ConstraintVocab, GrammarSpec};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// A small vocabulary: every single byte, some JSON-ish words, and special tokens.

const WORDS: &[&str] = &[
    "{\"",
    "\"}",
    "\": ",
    "\", \"",
    ", \"",
    "\"name\"",
    "name",
    "true",
    "false",
    "null",
    "12",
    "345",
    "0.5",
    "-",
    "[\"",
    "\"]",
    "}}",
    "Paris",
    " the",
    "hello",
    "<tool_call>",
    "</tool_call>",
    "\n<tool_call>\n",
    "\n</tool_call>",
    "get_weather",
    "arguments",
    "city",
    "\\n",
    "<",
    "call",
    "tool",
];
/// End-of-generation specials, then other specials.
const SPECIALS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|python_tag|>",
    "<|im_start|>",
];

struct Small {
    vocab: ConstraintVocab,
    bytes: Vec<Vec<u8>>,
    /// Text tokens by bytes (greedy tokenization of test inputs).
    by_bytes: HashMap<Vec<u8>, u32>,
    specials: HashMap<String, u32>,
    eog: Vec<u32>,
}

/// The small vocabulary; with `special_marker`, `<tool_call>` is a special (control) token rather
/// than text.
fn small(special_marker: bool) -> Small {
    let mut bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for w in WORDS {
        if special_marker && *w == "<tool_call>" {
            continue;
        }
        bytes.push(w.as_bytes().to_vec());
    }
    let mut specials = HashMap::new();
    let mut special_list = Vec::new();
    let mut names: Vec<&str> = SPECIALS.to_vec();
    if special_marker {
        names.push("<tool_call>");
    }
    for name in names {
        let id = bytes.len() as u32;
        bytes.push(Vec::new());
        specials.insert(name.to_string(), id);
        special_list.push((id, name.to_string()));
    }
    let eog = vec![specials["<|im_end|>"], specials["<|endoftext|>"]];
    let vocab = ConstraintVocab::from_parts(bytes.clone(), &special_list, &eog).unwrap();
    let by_bytes = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| (b.clone(), i as u32))
        .collect();
    Small {
        vocab,
        bytes,
        by_bytes,
        specials,
        eog,
    }
}

impl Small {
    /// Greedy longest-match tokenization of `text`; `«name»` inserts the special token `name`.
    fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('«') {
                let end = r.find('»').unwrap();
                out.push(self.specials[&r[..end]]);
                rest = &r[end + '»'.len_utf8()..];
                continue;
            }
            let b = rest.as_bytes();
            let mut len = b.len().min(32);
            loop {
                if let Some(&id) = self.by_bytes.get(&b[..len]) {
                    // Never split a UTF-8 character across a string boundary we cannot slice.
                    if rest.is_char_boundary(len) {
                        out.push(id);
                        rest = &rest[len..];
                        break;
                    }
                }
                len -= 1;
                assert!(len > 0, "cannot tokenize {rest:?}");
            }
        }
        out
    }

    fn allowed(&self, c: &mut Constraint) -> (Vec<f32>, usize) {
        let mut logits = vec![0.0f32; self.bytes.len() + 7];
        let n = c.mask(&mut logits).unwrap();
        (logits, n)
    }

    /// Feeds `text` token by token, checking that each token is in the mask before accepting it.
    fn feed(&self, c: &mut Constraint, text: &str) {
        for t in self.tokenize(text) {
            let (logits, n) = self.allowed(c);
            assert!(n > 0, "empty mask inside {text:?}");
            assert!(
                logits[t as usize].is_finite(),
                "token {t} {:?} masked inside {text:?}",
                String::from_utf8_lossy(&self.bytes[t as usize])
            );
            c.accept(t)
                .unwrap_or_else(|e| panic!("accept {t} inside {text:?}: {e}"));
        }
    }

    fn end_allowed(&self, c: &mut Constraint) -> bool {
        let (logits, _) = self.allowed(c);
        let ends: Vec<bool> = self
            .eog
            .iter()
            .map(|&t| logits[t as usize].is_finite())
            .collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "all end ids agree");
        ends[0]
    }

    fn compile(&self, g: GrammarSpec) -> Compiled {
        self.vocab
            .compile(&g)
            .unwrap_or_else(|e| panic!("compile {g:?}: {e}"))
    }
}

/// A tiny LCG (no rand dependency in the assertions' path).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// A seeded random walk: picks allowed tokens, preferring the end and closing tokens half the
/// time so that it terminates. Returns the text produced (special tokens left out) and whether it
/// ended (end id picked or grammar finished) within `max_steps`.
fn walk(s: &Small, c: &Compiled, seed: u64, max_steps: usize) -> (String, bool) {
    let mut rng = Lcg(seed);
    let mut con = Constraint::new(c);
    let mut out = Vec::new();
    let closers: Vec<u32> = ["\"", "}", "]", "\"}", "}}", "\"]"]
        .iter()
        .map(|w| s.by_bytes[w.as_bytes()])
        .collect();
    for _ in 0..max_steps {
        if con.is_finished() {
            return (String::from_utf8(out).unwrap(), true);
        }
        let (logits, n) = s.allowed(&mut con);
        assert!(
            n > 0,
            "empty mask after {:?}",
            String::from_utf8_lossy(&out)
        );
        let allowed: Vec<u32> = (0..logits.len() as u32)
            .filter(|&i| logits[i as usize].is_finite())
            .collect();
        assert_eq!(allowed.len(), n, "count matches the mask");
        assert!(allowed.iter().all(|&i| (i as usize) < s.bytes.len()));
        let ends: Vec<u32> = allowed
            .iter()
            .copied()
            .filter(|t| s.eog.contains(t))
            .collect();
        let close: Vec<u32> = allowed
            .iter()
            .copied()
            .filter(|t| closers.contains(t))
            .collect();
        let t = if !ends.is_empty() && !rng.next().is_multiple_of(4) {
            rng.pick(&ends)
        } else if !close.is_empty() && rng.next().is_multiple_of(2) {
            rng.pick(&close)
        } else {
            rng.pick(&allowed)
        };
        // A forbidden token (if any) is refused and changes nothing.
        if let Some(bad) = (0..s.bytes.len() as u32).find(|&i| !logits[i as usize].is_finite()) {
            assert!(con.accept(bad).is_err(), "forbidden token {bad} accepted");
        }
        con.accept(t).unwrap();
        if s.eog.contains(&t) {
            return (String::from_utf8(out).unwrap(), true);
        }
        out.extend_from_slice(&s.bytes[t as usize]);
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

fn walk_json(s: &Small, schema: &Value, seeds: u64) -> Vec<Value> {
    let c = s.compile(GrammarSpec::JsonSchema(schema.clone()));
    (0..seeds)
        .map(|seed| {
            let (text, ended) = walk(s, &c, seed, 2000);
            assert!(ended, "walk {seed} did not end: {text:?}");
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("walk {seed} produced invalid JSON {text:?}: {e}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Walks over JSON schemas.

#[test]
fn json_object_walks_produce_objects() {
    let s = small(false);
    let c = s.compile(GrammarSpec::JsonObject);
    for seed in 0..10 {
        let (text, ended) = walk(&s, &c, seed, 2000);
        assert!(ended, "{text:?}");
        // Syntax only (IgnoredAny skips numbers unconverted: `1e999` is valid JSON, out of f64).
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .unwrap_or_else(|e| panic!("invalid JSON {text:?}: {e}"));
        assert!(text.starts_with('{'), "{text}");
    }
}

#[test]
fn json_schema_walks_respect_the_schema() {
    let s = small(false);
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "kind": {"const": "person"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
            "ok": {"type": "boolean"},
            "uniqueItems": {"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": true, "maxItems": 2}
        },
        "required": ["name", "age", "unit", "kind"],
        "additionalProperties": false
    });
    for v in walk_json(&s, &schema, 20) {
        let o = v.as_object().unwrap();
        for k in ["name", "age", "unit", "kind"] {
            assert!(o.contains_key(k), "{k} missing in {v}");
        }
        for k in o.keys() {
            assert!(
                schema["properties"].get(k).is_some(),
                "extra key {k} in {v}"
            );
        }
        assert!(o["name"].as_str().unwrap().chars().count() <= 12);
        let age = o["age"].as_i64().unwrap();
        assert!((18..=99).contains(&age), "{v}");
        assert!(["celsius", "fahrenheit"].contains(&o["unit"].as_str().unwrap()));
        assert_eq!(o["kind"], "person");
        if let Some(tags) = o.get("tags") {
            assert!(tags.as_array().unwrap().len() <= 3);
        }
        // A property named like the dropped keyword stays a property.
        if let Some(u) = o.get("uniqueItems") {
            assert!(
                u.as_array().unwrap().iter().all(|x| x == 1 || x == 2),
                "{v}"
            );
        }
        if let Some(ok) = o.get("ok") {
            assert!(ok.is_boolean());
        }
    }
}

#[test]
fn json_layout_is_compact_with_one_space() {
    let s = small(false);
    let c = s.compile(GrammarSpec::JsonSchema(json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "integer"}}},
        "required": ["a", "b"], "additionalProperties": false
    })));
    let mut con = Constraint::new(&c);
    s.feed(&mut con, "{\"a\": 12, \"b\": [1, 2]}");
    assert!(s.end_allowed(&mut con));
    assert!(con.is_finished());
    // Other layouts are refused.
    for bad in [
        "{ \"a\"",
        "{\"a\":1",
        "{\"a\": 1,\"b\"",
        "{\"a\": 1, \"b\": [1,2]",
    ] {
        let mut con = Constraint::new(&c);
        let toks = s.tokenize(bad);
        let ok = toks.iter().all(|&t| con.accept(t).is_ok());
        assert!(!ok, "{bad:?} accepted");
    }
}

#[test]
fn anyof_refs_and_formats() {
    let s = small(false);
    let schema = json!({
        "$defs": {
            "point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                      "required": ["x", "y"], "additionalProperties": false},
            "tree": {"type": "object", "properties": {"v": {"type": "integer"},
                     "kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}, "maxItems": 2}},
                     "required": ["v"], "additionalProperties": false}
        },
        "type": "object",
        "properties": {
            "shape": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "string", "format": "date"}]},
            "id": {"type": "string", "format": "uuid"},
            "tree": {"$ref": "#/$defs/tree"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}
        },
        "required": ["shape", "id", "tree", "code"],
        "additionalProperties": false
    });
    let re_uuid = |s: &str| {
        s.len() == 36
            && s.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    for v in walk_json(&s, &schema, 10) {
        let shape = &v["shape"];
        assert!(shape.is_object() || shape.is_string(), "{v}");
        if let Some(d) = shape.as_str() {
            assert_eq!(d.len(), 10, "date {d}");
        }
        assert!(re_uuid(v["id"].as_str().unwrap()), "{v}");
        let code = v["code"].as_str().unwrap();
        assert!(code.len() == 6 && code.as_bytes()[3] == b'-', "{code}");
        assert!(v["tree"]["v"].is_i64());
    }
}

#[test]
fn forbidden_tokens_and_the_end() {
    let s = small(false);
    let c = s.compile(GrammarSpec::JsonSchema(json!({
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]
    })));
    let mut con = Constraint::new(&c);
    // Before anything: no end, no text, no special token.
    assert!(!s.end_allowed(&mut con));
    assert!(con.accept(s.eog[0]).is_err());
    assert!(con.accept(s.by_bytes[&b"hello".to_vec()]).is_err());
    assert!(con.accept(s.specials["<|python_tag|>"]).is_err());
    assert!(con.accept(s.bytes.len() as u32).is_err(), "out of range");
    // Refusals left the state alone.
    s.feed(&mut con, "{\"name\": \"Paris\"");
    assert!(!s.end_allowed(&mut con));
    assert!(!con.is_finished());
    s.feed(&mut con, "}");
    assert!(con.is_finished());
    let (logits, n) = s.allowed(&mut con);
    assert_eq!(n, s.eog.len(), "only the end ids once complete");
    assert!(s.eog.iter().all(|&t| logits[t as usize].is_finite()));
    assert!(con.accept(s.by_bytes[&b"}".to_vec()]).is_err());
    // Either end id ends it.
    con.accept(s.eog[1]).unwrap();
    assert!(con.is_finished());
}

#[test]
fn logits_past_the_vocabulary_are_forbidden_and_short_rows_refused() {
    let s = small(false);
    let c = s.compile(GrammarSpec::JsonObject);
    let mut con = Constraint::new(&c);
    let mut logits = vec![1.0f32; s.bytes.len() + 100];
    let n = con.mask(&mut logits).unwrap();
    assert!(n > 0);
    assert!(logits[s.bytes.len()..]
        .iter()
        .all(|&l| l == f32::NEG_INFINITY));
    let mut short = vec![0.0f32; s.bytes.len() - 1];
    assert!(con.mask(&mut short).is_err());
}

#[test]
fn special_token_lookup() {
    let s = small(true);
    assert_eq!(
        s.vocab.special_token("<|python_tag|>"),
        Some(s.specials["<|python_tag|>"])
    );
    assert_eq!(
        s.vocab.special_token("<tool_call>"),
        Some(s.specials["<tool_call>"])
    );
    assert_eq!(s.vocab.special_token("<|nope|>"), None);
    assert!(ConstraintVocab::from_parts(vec![b"a".to_vec()], &[], &[]).is_err());
    assert!(ConstraintVocab::from_parts(vec![b"a".to_vec()], &[], &[5]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Lark: tool-call grammars.

fn weather_call_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": false}
        },
        "required": ["name", "arguments"],
        "additionalProperties": false
    })
}

const CALL: &str = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";

/// The text-marker shape that works: free text up to and including the first marker is one lazy
/// lexeme.
fn text_marker_grammar() -> String {
    format!(
        r#"
start: text_call call_rest (next_call call_rest)* "\n"?
text_call[lazy]: /(.|\n)*<tool_call>\n/
next_call: "\n<tool_call>\n"
call_rest: {} "\n</tool_call>"
"#,
        lark_json(&weather_call_schema())
    )
}

/// Checks a text-marker tool-call grammar: text before, then the call, end only after it.
fn check_text_marker(s: &Small, c: &Compiled) {
    let mut con = Constraint::new(c);
    s.feed(&mut con, "Let me check the weather < tool> for you.\n");
    assert!(!s.end_allowed(&mut con), "no end before a call");
    s.feed(&mut con, "<tool_call>\n");
    // After the marker only the JSON: `{`-starting tokens.
    let (logits, n) = s.allowed(&mut con);
    assert!(n > 0);
    for (i, b) in s.bytes.iter().enumerate() {
        if logits[i].is_finite() {
            assert!(
                b.starts_with(b"{"),
                "{:?} allowed after the marker",
                String::from_utf8_lossy(b)
            );
        }
    }
    assert!(con.accept(s.by_bytes[&b"hello".to_vec()]).is_err());
    s.feed(
        &mut con,
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par",
    );
    assert!(!s.end_allowed(&mut con));
    s.feed(&mut con, "is\"}}\n</tool_call>");
    assert!(s.end_allowed(&mut con), "end after a complete call");
    s.feed(&mut con, "\n<tool_call>\n");
    assert!(!s.end_allowed(&mut con));
    s.feed(&mut con, &format!("{CALL}\n</tool_call>\n"));
    assert!(s.end_allowed(&mut con));
    con.accept(s.eog[0]).unwrap();
    assert!(con.is_finished());

    // A call right away, with no text.
    let mut con = Constraint::new(c);
    s.feed(&mut con, &format!("<tool_call>\n{CALL}\n</tool_call>"));
    assert!(s.end_allowed(&mut con));

    // Wrong function name is refused.
    let mut con = Constraint::new(c);
    s.feed(&mut con, "<tool_call>\n{\"name\": \"");
    assert!(con.accept(s.by_bytes[&b"hello".to_vec()]).is_err());
}

#[test]
fn tool_call_text_marker() {
    let s = small(false);
    let c = s.compile(GrammarSpec::Lark(text_marker_grammar()));
    check_text_marker(&s, &c);
    // And random walks through it stay inside the grammar.
    for seed in 0..5 {
        walk(&s, &c, seed, 300);
    }
}

/// `tool_choice: auto`: plain text, or text then calls.
#[test]
fn tool_call_text_marker_optional() {
    let s = small(false);
    let g = format!(
        r#"
start: TEXT | text_call call_rest (next_call call_rest)* "\n"?
TEXT: /(.|\n)*/ & ~/(.|\n)*<tool_call>(.|\n)*/
text_call[lazy]: /(.|\n)*<tool_call>\n/
next_call: "\n<tool_call>\n"
call_rest: {} "\n</tool_call>"
"#,
        lark_json(&weather_call_schema())
    );
    let c = s.compile(GrammarSpec::Lark(g));
    let mut con = Constraint::new(&c);
    s.feed(&mut con, "Just text, < tool> and <tool_cal");
    assert!(s.end_allowed(&mut con), "text alone may end");
    s.feed(&mut con, "l>\n");
    assert!(!s.end_allowed(&mut con), "a started call must complete");
    assert!(con.accept(s.by_bytes[&b"hello".to_vec()]).is_err());
    s.feed(&mut con, &format!("{CALL}\n</tool_call>"));
    assert!(s.end_allowed(&mut con));
    s.feed(&mut con, &format!("\n<tool_call>\n{CALL}\n</tool_call>\n"));
    assert!(s.end_allowed(&mut con));
    con.accept(s.eog[0]).unwrap();
    assert!(con.is_finished());
}

/// The shape a reader writes first: free text that does not contain the marker, then the marker.
/// llguidance's lexer is greedy (a lexeme is never re-split), so after the text has read
/// `<tool_call` the `>` is refused: this shape cannot produce a call after text. Recorded so
/// that a future llguidance that handles it shows up here.
#[test]
fn tool_call_text_marker_naive_shape_is_greedy() {
    let s = small(false);
    let g = format!(
        r#"
start: TEXT? call+
TEXT: /(.|\n)*/ & ~/(.|\n)*<tool_call>(.|\n)*/
call: "<tool_call>\n" {} "\n</tool_call>" "\n"?
"#,
        lark_json(&weather_call_schema())
    );
    let c = s.compile(GrammarSpec::Lark(g));
    // Without text it works.
    let mut con = Constraint::new(&c);
    s.feed(&mut con, &format!("<tool_call>\n{CALL}\n</tool_call>"));
    assert!(s.end_allowed(&mut con));
    // After text, the marker cannot be completed.
    let mut con = Constraint::new(&c);
    let toks = s.tokenize("Sure.\n<tool_call>\n{");
    let ok = toks.iter().all(|&t| con.accept(t).is_ok());
    assert!(
        !ok,
        "llguidance now splits greedy lexemes: the naive shape works, update the docs"
    );
}

#[test]
fn tool_call_special_marker() {
    let s = small(true);
    let g = format!(
        r#"
start: TEXT? call+
TEXT: /(.|\n)+/
call: <tool_call> "\n" {} "\n</tool_call>" "\n"?
"#,
        lark_json(&weather_call_schema())
    );
    let c = s.compile(GrammarSpec::Lark(g));
    let mut con = Constraint::new(&c);
    s.feed(
        &mut con,
        "I will call <tool_call> now, the text form is just text.\n",
    );
    assert!(!s.end_allowed(&mut con), "no end before a call");
    s.feed(&mut con, "«<tool_call>»\n");
    assert!(con.accept(s.by_bytes[&b"hello".to_vec()]).is_err());
    s.feed(&mut con, &format!("{CALL}\n</tool_call>\n"));
    assert!(s.end_allowed(&mut con));
    s.feed(&mut con, &format!("«<tool_call>»\n{CALL}\n</tool_call>"));
    assert!(s.end_allowed(&mut con));
    con.accept(s.eog[1]).unwrap();
    assert!(con.is_finished());

    // By id too: <[id]>.
    let id = s.specials["<|python_tag|>"];
    let g = format!(
        "start: TEXT? <[{id}]> {}\nTEXT: /[^<]+/\n",
        lark_json(
            &json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
        )
    );
    let c = s.compile(GrammarSpec::Lark(g));
    let mut con = Constraint::new(&c);
    s.feed(&mut con, "hello«<|python_tag|>»{\"a\": 12}");
    assert!(con.is_finished());
}

#[test]
fn lark_errors_name_the_problem() {
    let s = small(false);
    let e = s
        .vocab
        .compile(&GrammarSpec::Lark("start: <|nope|>".into()))
        .err()
        .unwrap();
    assert!(
        e.starts_with("Lark grammar:") && e.contains("<|nope|>"),
        "{e}"
    );
    let e = s
        .vocab
        .compile(&GrammarSpec::Lark("root: \"a\"".into()))
        .err()
        .unwrap();
    assert!(e.contains("start"), "{e}");
    let e = s
        .vocab
        .compile(&GrammarSpec::Lark("start: /(/".into()))
        .err()
        .unwrap();
    assert!(e.starts_with("Lark grammar:"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 2. Hostile input: Err or Ok, never a panic or a hang.

/// Compiles on a thread, failing the test if it takes more than 20 s.
fn compile_bounded(vocab: &std::sync::Arc<ConstraintVocab>, g: GrammarSpec) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let v = vocab.clone();
    // Not `{g:?}`: Debug of a deeply nested Value recurses too.
    let label = match &g {
        GrammarSpec::JsonObject => "a JSON object".to_string(),
        GrammarSpec::JsonSchema(s) => format!(
            "a schema with keys {:?}",
            s.as_object().map(|o| o.keys().take(4).collect::<Vec<_>>())
        ),
        GrammarSpec::Lark(t) => format!("Lark {:?}", t.chars().take(60).collect::<String>()),
    };
    // A large stack: dropping a deeply nested Value recurses.
    let spawn = std::thread::Builder::new().stack_size(64 << 20);
    spawn
        .spawn(move || {
            let r = v.compile(&g).map(|c| {
                // A compiled hostile grammar still masks without panicking.
                let mut con = Constraint::new(&c);
                let mut logits = vec![0.0f32; v.vocab_size()];
                let _ = con.mask(&mut logits);
            });
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("compile of {label} hung or panicked"))
}

#[test]
fn hostile_schemas_fail_cleanly() {
    let s = small(false);
    let v = std::sync::Arc::new(s.vocab);
    let err = |g: GrammarSpec| compile_bounded(&v, g).err().unwrap_or_default();

    assert!(err(GrammarSpec::JsonSchema(json!([1, 2]))).contains("must be an object"));
    assert!(err(GrammarSpec::JsonSchema(json!("string"))).contains("must be an object"));
    assert!(err(GrammarSpec::JsonSchema(json!(false))).contains("false"));
    let e = err(GrammarSpec::JsonSchema(json!({"type": "bogus"})));
    assert!(e.contains("bogus"), "{e}");
    let e = err(GrammarSpec::JsonSchema(
        json!({"type": "object", "if": {"type": "object"}, "then": {}}),
    ));
    assert!(e.starts_with("JSON schema:") && e.contains("if"), "{e}");
    let e = err(GrammarSpec::JsonSchema(
        json!({"type": "string", "pattern": "^SELECT\\b"}),
    ));
    assert!(e.starts_with("JSON schema:") && e.contains("SELECT"), "{e}");
    let e = err(GrammarSpec::JsonSchema(json!({"not": {"type": "string"}})));
    assert!(e.contains("not"), "{e}");
    let e = err(GrammarSpec::JsonSchema(
        json!({"type": "string", "pattern": "(("}),
    ));
    assert!(e.starts_with("JSON schema:"), "{e}");
    let e = err(GrammarSpec::JsonSchema(json!({"$ref": "#/$defs/missing"})));
    assert!(e.starts_with("JSON schema:"), "{e}");
    let e = err(GrammarSpec::JsonSchema(
        json!({"type": "integer", "minimum": 10, "maximum": 1}),
    ));
    assert!(!e.is_empty());

    // Deep nesting, built as a Value (serde_json's parser would stop at 128 first) and as text.
    // (Not json!: it re-serializes an interpolated Value, recursively.)
    let nest = |inner: Value| {
        let mut props = serde_json::Map::new();
        props.insert("a".into(), inner);
        let mut o = serde_json::Map::new();
        o.insert("type".into(), "object".into());
        o.insert("properties".into(), Value::Object(props));
        Value::Object(o)
    };
    let mut deep = json!({"type": "string"});
    for _ in 0..2000 {
        deep = nest(deep);
    }
    let e = err(GrammarSpec::JsonSchema(deep));
    assert!(e.contains("nested deeper"), "{e}");
    let text = format!(
        "{}{{\"type\":\"null\"}}{}",
        "{\"type\":\"array\",\"items\":".repeat(2000),
        "}".repeat(2000)
    );
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "serde_json refuses depth 4000"
    );
    // Just under the guard: compiles or errs, within the bound.
    let mut deep = json!({"type": "integer"});
    for _ in 0..60 {
        deep = nest(deep);
    }
    let _ = compile_bounded(&v, GrammarSpec::JsonSchema(deep));

    // Recursive $ref (satisfiable and not).
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(json!({"$ref": "#", "type": "object"})),
    );
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        ),
    );
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(
            json!({"$defs": {"n": {"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}, "required": ["n"]}}, "$ref": "#/$defs/n"}),
        ),
    );

    // A huge enum, a huge set of properties, huge numbers.
    let values: Vec<String> = (0..100_000).map(|i| format!("value-{i}")).collect();
    let _ = compile_bounded(&v, GrammarSpec::JsonSchema(json!({"enum": values})));
    let props: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("p{i}"), json!({"type": "integer"})))
        .collect();
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(json!({"type": "object", "properties": props})),
    );
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(json!({"type": "integer", "minimum": -1e300, "maximum": 1e300})),
    );
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(
            json!({"type": "string", "pattern": "(a|aa)*b{1000}", "minLength": 100000}),
        ),
    );
    let _ = compile_bounded(
        &v,
        GrammarSpec::JsonSchema(
            json!({"type": "array", "minItems": 1000000, "items": {"type": "integer"}}),
        ),
    );

    // Hostile Lark.
    let e = err(GrammarSpec::Lark(format!(
        "start: {}\"a\"{}",
        "(".repeat(5000),
        ")".repeat(5000)
    )));
    assert!(e.contains("nested deeper"), "{e}");
    let _ = compile_bounded(&v, GrammarSpec::Lark(String::new()));
    let _ = compile_bounded(&v, GrammarSpec::Lark("start: start".into()));
    let _ = compile_bounded(&v, GrammarSpec::Lark("start: a\na: b\nb: a".into()));
    let _ = compile_bounded(&v, GrammarSpec::Lark("start: /(a*)*b/ & ~/a+/".into()));
    let _ = compile_bounded(&v, GrammarSpec::Lark("start: %json [1]".into()));
    let _ = compile_bounded(&v, GrammarSpec::Lark("start: <[99999999]>".into()));
    let _ = compile_bounded(
        &v,
        GrammarSpec::Lark(format!("start: {}", "\"a\" ".repeat(200_000))),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The corpus, against a real vocabulary.

fn corpus() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemas");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

const QWEN: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn corpus_compiles_and_walks_on_a_real_vocabulary() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let path = if std::path::Path::new(QWEN).exists() {
        QWEN
    } else {
        SMOLLM2
    };
    let gguf = flint::format::gguf::Gguf::open(path).unwrap();
    let tok = flint::tokenizer::Tokenizer::from_gguf(&gguf).unwrap();
    let vocab = ConstraintVocab::new(&tok).unwrap();
    assert_eq!(vocab.vocab_size(), tok.vocab_size());
    assert!(!vocab.eog().is_empty());
    assert_eq!(
        vocab.special_token("<|im_end|>"),
        tok.token_id("<|im_end|>")
    );
    let n = vocab.vocab_size();
    let corpus = corpus();
    assert!(corpus.len() >= 50, "{} schemas", corpus.len());
    let mut failed = Vec::new();
    for (name, schema) in &corpus {
        let c = match vocab.compile(&GrammarSpec::JsonSchema(schema.clone())) {
            Ok(c) => c,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        for seed in 0..2u64 {
            let mut rng = Lcg(seed * 7919 + name.len() as u64);
            let mut con = Constraint::new(&c);
            let mut logits = vec![0.0f32; n + 64];
            let mut text = Vec::new();
            for step in 0..64 {
                if con.is_finished() {
                    break;
                }
                logits.fill(0.0);
                let allowed = con.mask(&mut logits).unwrap();
                assert!(allowed > 0, "{name}: empty mask at step {step}");
                let ids: Vec<u32> = (0..n as u32)
                    .filter(|&i| logits[i as usize].is_finite())
                    .collect();
                assert_eq!(ids.len(), allowed, "{name}");
                let t = rng.pick(&ids);
                con.accept(t).unwrap();
                if vocab.eog().contains(&t) {
                    break;
                }
                text.extend_from_slice(&tok.token_bytes(t).unwrap());
            }
            assert!(
                text.first().is_none_or(|&b| b == b'{' || b == b'['),
                "{name}: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    println!(
        "{} of {} corpus schemas compile against {path} ({n} tokens)",
        corpus.len() - failed.len(),
        corpus.len()
    );
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}
