//! Structured outputs: a JSON Schema or a Lark grammar turned into a per-token mask, over the
//! [llguidance](https://github.com/guidance-ai/llguidance) crate (an Earley parser over a lexer of
//! derivative-based regexes, walked against a trie of the vocabulary's token bytes).
//!
//! Three steps, three lifetimes:
//!
//! ```text
//!  Tokenizer ──ConstraintVocab::new──► ConstraintVocab   once per model (token trie, ~0.1-1 s)
//!  GrammarSpec ──vocab.compile(&spec)─► Compiled          once per request (cheap to clone)
//!  Compiled ──Constraint::new──► Constraint              once per sequence:
//!        loop { c.mask(&mut logits)?; tok = sample(&logits); c.accept(tok)?; if c.is_finished() { break } }
//! ```
//!
//! # The vocabulary
//!
//! Every token is its decoded bytes ([`Tokenizer::token_bytes`]). Control tokens (`<|im_end|>`,
//! `<|python_tag|>`, ...) become llguidance *special* tokens: the byte `0xFF` (never valid UTF-8)
//! followed by their text, so no string or regex of a grammar can produce them by accident, and a
//! Lark grammar names them `<|python_tag|>` (by text) or `<[128010]>` (by id). Tokens that are
//! merely *user-defined* (Qwen2.5's `<tool_call>`) stay ordinary text: the grammar's string
//! `"<tool_call>"` matches them, and also the same text spelled in smaller pieces.
//!
//! End of generation: every end-of-generation id (EOS, EOT, `<|im_end|>`, ...) is allowed by
//! [`Constraint::mask`] exactly when the grammar may end there, and [`Constraint::accept`] treats
//! each of them as the grammar's end.
//!
//! # JSON
//!
//! [`GrammarSpec::JsonSchema`] compiles with one fixed layout, the way models write JSON:
//! `{"a": 1, "b": [1, 2]}`, i.e. item separator `", "`, key separator `": "` and no other
//! whitespace (llguidance's `whitespace_flexible: false`; see [`json_options`]). Flexible
//! whitespace lets a model "think" in newlines and spaces forever; with one layout every byte
//! outside string contents is decided by the grammar. Supported: `type`, `properties`, `required`
//! (others optional), `additionalProperties`, `items`/`prefixItems`, `minItems`/`maxItems`, `enum`,
//! `const`, `minimum`/`maximum`/`exclusive*`, `multipleOf` on integers, `minLength`/`maxLength`,
//! `pattern`, `format` (`date-time`, `date`, `time`, `uuid`, `email`, `ipv4`, ... ), `anyOf`,
//! `oneOf` (as `anyOf`), `allOf`, `$ref`/`$defs`/`definitions` (recursive ones too);
//! `description`, `title`, `default`, `examples`, `$comment` are ignored; `uniqueItems` and
//! `deprecated` are dropped (not enforced). An unsupported keyword is a compile error naming it
//! (llguidance's message, e.g. `Unimplemented keys: ["if", "then"]`), and so is a `pattern` that
//! uses what llguidance's regexes lack (`\b`, lookarounds, backreferences).
//!
//! # Lark
//!
//! [`GrammarSpec::Lark`] takes llguidance's Lark dialect: rules (lower case) over terminals
//! (upper case) and literals; `"str"`, `/regex/`, `%json { schema }` inline, special tokens
//! `<|name|>` / `<[id]>`, terminal operators `&` (and) and `~` (not), `[lazy]`, `[stop="..."]`,
//! `[max_tokens=N]`. For the same JSON layout inside a Lark grammar write the schema with
//! [`lark_json`] (a plain `%json {...}` gets llguidance's default, flexible whitespace).
//!
//! Tool calls, the shapes that work (each one is a test in `tests/constrain.rs`; `{json}` stands
//! for `lark_json(&schema)`):
//!
//! 1. The marker is text (Qwen2.5's `<tool_call>` is a user-defined token, i.e. text). Free text
//!    up to and including the first marker is ONE lazy rule (a lazy lexeme ends at its first
//!    match), then the JSON:
//!
//!    ```text
//!    start: text_call call_rest (next_call call_rest)* "\n"?
//!    text_call[lazy]: /(.|\n)*<tool_call>\n/
//!    next_call: "\n<tool_call>\n"
//!    call_rest: {json} "\n</tool_call>"
//!    ```
//!
//!    Text before the call is optional (the regex matches the bare marker), the end is allowed
//!    only after a complete call, and after the marker only the JSON is. For "text, or text then
//!    calls" (`tool_choice: auto`) add the call-free alternative:
//!    `start: TEXT | text_call call_rest (next_call call_rest)* "\n"?` with
//!    `TEXT: /(.|\n)*/ & ~/(.|\n)*<tool_call>(.|\n)*/`.
//!
//!    The first shape one writes, `start: TEXT? call+` with that `TEXT` and
//!    `call: "<tool_call>\n" {json} ...`, does NOT work after text: llguidance's lexer is greedy
//!    and never re-splits a lexeme, so once `TEXT` has read `<tool_call` the `>` is refused (it
//!    only works when the output starts with the marker).
//! 2. The marker is a control token (Llama 3.1's `<|python_tag|>`, or a vocabulary whose
//!    `<tool_call>` is special): free text can never contain it, so the obvious grammar works:
//!
//!    ```text
//!    start: TEXT? call+
//!    TEXT: /(.|\n)+/
//!    call: <tool_call> "\n" {json} "\n</tool_call>" "\n"?
//!    ```
//!
//!    (`<[128010]>` names a token by id.) [`ConstraintVocab::special_token`] says whether the
//!    vocabulary has the marker as a special token.
//!
//! # Limits
//!
//! [`ConstraintVocab::compile`] never panics on hostile input: llguidance's own limits
//! ([`ParserLimits`]: grammar size, lexer fuel per compile and per step) bound the work, JSON
//! nesting deeper than [`MAX_NESTING`] and Lark brackets nested deeper than [`MAX_NESTING`] are
//! refused up front (the compilers recurse), native builds compile on a thread with a large stack,
//! and whatever still panics inside llguidance is caught and returned as an `Err`.

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Deepest JSON nesting of a schema, and deepest bracket nesting of a Lark grammar, that
/// [`ConstraintVocab::compile`] accepts (serde_json's own parser stops at 128 too). llguidance's
/// compilers recurse: 128 `items` levels took between 512 KiB and 1 MiB of stack (x86-64,
/// release), so wasm32, whose stack is 1 MiB and has no thread to get more, stops at 64.
pub const MAX_NESTING: usize = if cfg!(target_arch = "wasm32") {
    64
} else {
    128
};

/// Stack for the compiling thread (native): llguidance's schema and grammar compilers recurse.
#[cfg(not(target_arch = "wasm32"))]
const COMPILE_STACK: usize = 256 << 20;

/// Built once per model: the vocabulary as llguidance sees it (a token trie), and the parser
/// factory that compiles grammars against it. `Send + Sync`; share it behind an `Arc`.
pub struct ConstraintVocab {
    factory: Arc<ParserFactory>,
    /// Shared with every [`Compiled`] and [`Constraint`].
    ids: Arc<Ids>,
    special: HashMap<String, u32>,
}

/// Token ids every constraint needs.
struct Ids {
    vocab_size: usize,
    /// The trie's end token: what every end-of-generation id is fed to the parser as.
    eos: u32,
    /// Every end-of-generation id, sorted.
    eog: Vec<u32>,
}

impl Ids {
    fn is_eog(&self, tok: u32) -> bool {
        self.eog.binary_search(&tok).is_ok()
    }
}

/// What to constrain the output to.
#[derive(Clone, Debug)]
pub enum GrammarSpec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A value matching this JSON Schema.
    JsonSchema(Value),
    /// A grammar in llguidance's Lark dialect (see the module docs).
    Lark(String),
}

/// A compiled grammar, ready to start any number of sequences. Cheap to clone.
#[derive(Clone)]
pub struct Compiled {
    /// Started, never advanced; each [`Constraint`] clones it (the clone shares the lexer's
    /// cache of states, so sequences of one grammar warm it for each other).
    matcher: Arc<Matcher>,
    ids: Arc<Ids>,
}

/// One sequence's constraint state.
pub struct Constraint {
    matcher: Matcher,
    ids: Arc<Ids>,
}

/// The JSON layout of [`GrammarSpec::JsonSchema`] and [`lark_json`]: `", "` between items,
/// `": "` after keys, no other whitespace.
pub fn json_options() -> JsonCompileOptions {
    JsonCompileOptions {
        item_separator: ", ".to_string(),
        key_separator: ": ".to_string(),
        whitespace_flexible: false,
        // `oneOf` as `anyOf` (exact when the options are disjoint, as they usually are).
        coerce_one_of: true,
        ..JsonCompileOptions::default()
    }
}

/// A schema as a Lark `%json {...}` item with [`json_options`]'s layout, to splice into a Lark
/// grammar (`format!("call: \"<tool_call>\\n\" {} \"\\n</tool_call>\"", lark_json(&schema))`).
pub fn lark_json(schema: &Value) -> String {
    format!("%json {}", with_layout(schema))
}

/// The schema with llguidance's `x-guidance` options set to [`json_options`] (replacing any the
/// caller sent) and [`DROPPED_KEYWORDS`] removed. `true` (anything) becomes `{}`; other
/// non-objects are left for llguidance to refuse.
fn with_layout(schema: &Value) -> Value {
    let mut schema = match schema {
        Value::Bool(true) => Value::Object(Default::default()),
        s => s.clone(),
    };
    if json_depth(&schema) <= MAX_NESTING {
        drop_keywords(&mut schema);
    }
    if let Some(obj) = schema.as_object_mut() {
        let opts = serde_json::to_value(json_options()).unwrap_or(Value::Null);
        obj.insert("x-guidance".to_string(), opts);
    }
    schema
}

/// Keywords that only validate or annotate, which llguidance refuses and a grammar cannot (or
/// need not) enforce: dropped before compiling, so the output may break them (duplicate items).
const DROPPED_KEYWORDS: &[&str] = &["uniqueItems", "deprecated"];

/// Removes [`DROPPED_KEYWORDS`] from every subschema of `schema` (only where a schema is
/// expected: a property *named* `uniqueItems` stays). Recursion is bounded by [`MAX_NESTING`],
/// checked first.
fn drop_keywords(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.retain(|k, _| !DROPPED_KEYWORDS.contains(&k.as_str()));
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            // name -> schema maps
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Some(m) = v.as_object_mut() {
                    m.values_mut().for_each(drop_keywords);
                }
            }
            // lists of schemas
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Some(a) = v.as_array_mut() {
                    a.iter_mut().for_each(drop_keywords);
                }
            }
            // one schema (or, for draft-4 `items`, a list)
            "items"
            | "additionalItems"
            | "additionalProperties"
            | "contains"
            | "not"
            | "if"
            | "then"
            | "else"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => match v {
                Value::Array(a) => a.iter_mut().for_each(drop_keywords),
                v => drop_keywords(v),
            },
            _ => {}
        }
    }
}

/// Deepest nesting of arrays and objects in `v` (a scalar is 0), without recursion.
fn json_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        max = max.max(d + 1);
        if d + 1 > MAX_NESTING {
            break;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    max
}

/// Deepest bracket nesting of Lark text, counted crudely (brackets inside strings and regexes
/// count too): only a guard against pathological input.
fn lark_depth(s: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in s.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Runs `f` with panics caught (by llguidance's catcher, which keeps them off stderr), on a
/// thread with a large stack where there are threads.
fn guarded<R: Send>(
    f: impl FnOnce() -> std::result::Result<R, String> + Send,
) -> std::result::Result<R, String> {
    let run = || {
        llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| Ok(f())))
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::scope(|s| {
            match std::thread::Builder::new()
                .name("flint-grammar".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(s, run)
            {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("grammar compiler panicked".to_string())),
                Err(e) => Err(format!("cannot start the grammar compiler thread: {e}")),
            }
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        run()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

impl ConstraintVocab {
    /// Builds the token trie from a model's tokenizer (see the module docs for how control and
    /// end-of-generation tokens are treated).
    pub fn new(tok: &Tokenizer) -> Result<Self> {
        let n = tok.vocab_size();
        let mut tokens = Vec::with_capacity(n);
        let mut special = Vec::new();
        let mut eog = Vec::new();
        for id in 0..n as u32 {
            if tok.is_control(id) {
                let text = tok.token_str(id).unwrap_or_default();
                special.push((id, text.to_string()));
                tokens.push(Vec::new());
            } else {
                tokens.push(tok.token_bytes(id)?);
            }
            if tok.is_eog(id) {
                eog.push(id);
            }
        }
        // The tokenizer's EOS first: it becomes the trie's own end token.
        if let Some(e) = tok.eos_id().filter(|&e| (e as usize) < n) {
            eog.retain(|&t| t != e);
            eog.insert(0, e);
        }
        Self::from_parts(tokens, &special, &eog)
    }

    /// From raw parts (tests without a model): each token's bytes, which ids are special/control
    /// tokens (with their text, e.g. `"<|im_end|>"`; their bytes in `tokens` are ignored), and the
    /// end-of-generation ids (the first is the trie's end token; at least one is needed).
    pub fn from_parts(
        tokens: Vec<Vec<u8>>,
        special: &[(u32, String)],
        eog: &[u32],
    ) -> Result<Self> {
        let n = tokens.len();
        if n == 0 || n >= u32::MAX as usize {
            return Err(bad(format!("constraint vocabulary: {n} tokens")));
        }
        let Some(&eos) = eog.first() else {
            return Err(bad(
                "constraint vocabulary: no end-of-generation token (a grammar could never end)",
            ));
        };
        if let Some(&t) = eog.iter().find(|&&t| t as usize >= n) {
            return Err(bad(format!(
                "constraint vocabulary: end-of-generation id {t} >= vocabulary size {n}"
            )));
        }
        let mut words = tokens;
        let mut names = HashMap::new();
        for (id, text) in special {
            let Some(w) = words.get_mut(*id as usize) else {
                return Err(bad(format!(
                    "constraint vocabulary: special token id {id} >= vocabulary size {n}"
                )));
            };
            // Lark names special tokens `<...>`; one without text is still reachable as `<[id]>`.
            let name = if text.is_empty() {
                format!("<[{id}]>")
            } else {
                text.clone()
            };
            *w = std::iter::once(TokTrie::SPECIAL_TOKEN_MARKER)
                .chain(name.bytes())
                .collect();
            names.entry(name).or_insert(*id);
        }
        let mut eog_sorted = eog.to_vec();
        eog_sorted.sort_unstable();
        eog_sorted.dedup();

        let info = TokRxInfo::new(n as u32, eos);
        let factory = guarded(move || {
            let trie = TokTrie::from(&info, &words).with_eos_tokens(eog);
            let env = Arc::new(ApproximateTokEnv::new(trie));
            let mut factory = ParserFactory::new_simple(&(env as llguidance::toktrie::TokEnv))
                .map_err(|e| e.to_string())?;
            factory.quiet();
            *factory.limits_mut() = ParserLimits {
                // Errors name the problem, not the whole grammar and parser state.
                verbose_errors: false,
                ..ParserLimits::default()
            };
            Ok(factory)
        })
        .map_err(|e| bad(format!("constraint vocabulary: {e}")))?;
        Ok(ConstraintVocab {
            factory: Arc::new(factory),
            ids: Arc::new(Ids {
                vocab_size: n,
                eos,
                eog: eog_sorted,
            }),
            special: names,
        })
    }

    /// The id of a special (control) token by its text, e.g. `"<|python_tag|>"`, if the
    /// vocabulary has one.
    pub fn special_token(&self, text: &str) -> Option<u32> {
        self.special.get(text).copied()
    }

    /// Number of token ids (logits past it are always forbidden).
    pub fn vocab_size(&self) -> usize {
        self.ids.vocab_size
    }

    /// The end-of-generation ids, sorted.
    pub fn eog(&self) -> &[u32] {
        &self.ids.eog
    }

    /// Compiles a grammar (once per request). `Err` names what was being compiled and what is
    /// wrong or unsupported. Never panics; the work is bounded by llguidance's limits.
    pub fn compile(&self, g: &GrammarSpec) -> std::result::Result<Compiled, String> {
        let (what, grammar) = match g {
            GrammarSpec::JsonObject => (
                "JSON object",
                TopLevelGrammar::from_json_schema(with_layout(
                    &serde_json::json!({"type": "object"}),
                )),
            ),
            GrammarSpec::JsonSchema(schema) => {
                if json_depth(schema) > MAX_NESTING {
                    return Err(format!(
                        "JSON schema: nested deeper than {MAX_NESTING} levels"
                    ));
                }
                if *schema == Value::Bool(false) {
                    return Err("JSON schema: `false` matches nothing".to_string());
                }
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(format!(
                        "JSON schema: must be an object (or true), got {}",
                        crate::error::json_kind(schema)
                    ));
                }
                (
                    "JSON schema",
                    TopLevelGrammar::from_json_schema(with_layout(schema)),
                )
            }
            GrammarSpec::Lark(text) => {
                if lark_depth(text) > MAX_NESTING {
                    return Err(format!(
                        "Lark grammar: brackets nested deeper than {MAX_NESTING} levels"
                    ));
                }
                ("Lark grammar", TopLevelGrammar::from_lark(text.clone()))
            }
        };
        let factory = &self.factory;
        let matcher = guarded(move || {
            let parser = factory.create_parser(grammar).map_err(|e| e.to_string())?;
            let m = Matcher::new(Ok(parser));
            if let Some(e) = m.get_error() {
                return Err(e);
            }
            // One mask on a copy: a grammar that matches nothing fails here, not at the first
            // step of generation (and the lexer's first states are cached for every sequence).
            m.clone().compute_mask().map_err(|e| e.to_string())?;
            Ok(m)
        })
        .map_err(|e| format!("{what}: {}", first_line(&e)))?;
        Ok(Compiled {
            matcher: Arc::new(matcher),
            ids: self.ids.clone(),
        })
    }
}

/// llguidance's message without the trailing context lines it sometimes appends.
fn first_line(s: &str) -> String {
    let s = s.trim();
    let cut = s.len().min(2000);
    let mut end = cut;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Constraint {
    /// Starts a sequence at the grammar's beginning.
    pub fn new(c: &Compiled) -> Self {
        Constraint {
            matcher: (*c.matcher).clone(),
            ids: c.ids.clone(),
        }
    }

    /// Sets every logit the grammar forbids to `f32::NEG_INFINITY` (entries past the vocabulary
    /// too). Every end-of-generation id is allowed exactly when the grammar may end here. Returns
    /// how many tokens remain allowed (0: the grammar is stuck, the caller reports an error).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<usize> {
        let n = self.ids.vocab_size;
        if logits.len() < n {
            return Err(bad(format!(
                "grammar mask: {} logits for a vocabulary of {n}",
                logits.len()
            )));
        }
        let set = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| bad(format!("grammar: {}", first_line(&e.to_string()))))?;
        let end_ok = self.ids.eog.iter().any(|&t| set.is_allowed(t));
        // The end ids' own logits, to restore after the bit loop when the end is allowed.
        let saved: Vec<f32> = self.ids.eog.iter().map(|&t| logits[t as usize]).collect();

        let words = set.as_slice();
        let word = |i: usize| words.get(i).copied().unwrap_or(0);
        let (head, tail) = logits[..n].split_at_mut(n / 32 * 32);
        let mut allowed = 0usize;
        for (i, chunk) in head.chunks_exact_mut(32).enumerate() {
            let w = word(i);
            allowed += w.count_ones() as usize;
            mask_chunk(chunk, w);
        }
        let w = word(n / 32) & low_bits(tail.len());
        allowed += w.count_ones() as usize;
        mask_chunk(tail, w);
        logits[n..].fill(f32::NEG_INFINITY);
        for (&t, &v) in self.ids.eog.iter().zip(&saved) {
            let bit = set.is_allowed(t);
            allowed -= bit as usize;
            if end_ok {
                logits[t as usize] = v;
                allowed += 1;
            } else {
                logits[t as usize] = f32::NEG_INFINITY;
            }
        }
        Ok(allowed)
    }

    /// Advances by the token the sampler picked (an end-of-generation id counts as the grammar's
    /// end). `Err` when the grammar forbids it; the state is then unchanged.
    pub fn accept(&mut self, tok: u32) -> Result<()> {
        if tok as usize >= self.ids.vocab_size {
            return Err(bad(format!(
                "grammar: token {tok} is outside the vocabulary ({})",
                self.ids.vocab_size
            )));
        }
        let eog = self.ids.is_eog(tok);
        if self.is_finished() {
            return if eog {
                Ok(())
            } else {
                Err(bad(format!(
                    "grammar: token {tok} after the grammar's end (only the end may follow)"
                )))
            };
        }
        let t = if eog { self.ids.eos } else { tok };
        let ok = self
            .matcher
            .validate_tokens(&[t])
            .map_err(|e| bad(format!("grammar: {}", first_line(&e.to_string()))))?;
        if ok != 1 {
            return Err(bad(if eog {
                format!("grammar: end of generation (token {tok}) before the grammar is complete")
            } else {
                format!("grammar: token {tok} is not allowed here")
            }));
        }
        self.matcher
            .consume_token(t)
            .map_err(|e| bad(format!("grammar: {}", first_line(&e.to_string()))))
    }

    /// True when the grammar is complete and nothing but the end may follow (the caller then
    /// stops generating).
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }
}

/// Forbids the logits of `chunk` (at most 32) whose bit in `w` is clear.
#[inline]
fn mask_chunk(chunk: &mut [f32], w: u32) {
    match w {
        u32::MAX => {}
        0 => chunk.fill(f32::NEG_INFINITY),
        // Branch-free per bit, so the compiler can vectorise it (a JSON string's mask keeps about
        // half of a vocabulary, bit patterns that defeat branch prediction).
        _ => {
            for (j, l) in chunk.iter_mut().enumerate() {
                *l = if w >> j & 1 != 0 {
                    *l
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
    }
}

/// The low `n` bits set (`n` <= 32).
fn low_bits(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<ConstraintVocab>();
        assert_send_sync::<Compiled>();
        fn assert_send<T: Send>() {}
        assert_send::<Constraint>();
    }

    #[test]
    fn depth_guards() {
        let mut v = serde_json::json!(1);
        for _ in 0..200 {
            v = serde_json::json!([v]);
        }
        assert!(json_depth(&v) > MAX_NESTING);
        assert_eq!(json_depth(&serde_json::json!({"a": [1]})), 2);
        assert_eq!(lark_depth("start: ((a) [b])"), 2);
    }
}
