//! Grammar-constrained decoding for JSON: a JSON Schema compiled to a byte-level pushdown
//! automaton, and a per-step token mask over the vocabulary.
//!
//! ```text
//! schema (serde_json::Value) ─► Grammar::from_schema ─► nodes (object/array/string/number/literals/union)
//! Matcher: a stack of Frames; advance(byte) -> accepted?   can_end() -> may EOS come now?
//! TokenTable: every token's bytes, sorted once per model; mask() walks them through a Matcher,
//!             reusing the state of the common prefix with the previous token (a trie walk
//!             without a trie), so shared prefixes are fed once and a rejected prefix rejects
//!             every token that starts with it.
//! ```
//!
//! Ideas from llama.cpp's GBNF sampler (bounded whitespace, an end-of-generation token only where
//! the grammar is complete) and outlines/xgrammar (schema -> automaton, precomputed token bytes);
//! the code is ours.
//!
//! Guarantees, tested below: every byte string the matcher accepts is a prefix of a JSON text
//! that validates against the schema; every state it reaches can still be completed (so the mask
//! is never empty), and once the value is complete only an end-of-generation token is allowed.
//! Bounded whitespace runs ([`MAX_WS`]) and number lengths keep the model from looping there;
//! strings and arrays end when the model closes them or at `max_tokens`.
//!
//! Supported keywords: `type` (one or a list), `properties`, `required`, `additionalProperties`,
//! `items`, `minItems`, `maxItems`, `minLength`, `maxLength`, `enum`, `const`, `anyOf`/`oneOf`
//! whose alternatives start with different characters, `$ref` to `#/$defs/..` or
//! `#/definitions/..` (not recursive); annotations (`title`, `description`, `default`, ...) are
//! ignored. Anything else is an error naming the keyword and where it is.
//!
//! Objects with `properties` are generated with those properties only (each at most once, in any
//! order, every `required` one before `}`), even when `additionalProperties` allows more: the
//! output still validates. An object without `properties` takes any string keys with values of
//! the `additionalProperties` schema (any JSON when absent or `true`).

use serde_json::{Map, Value};
use std::fmt;

/// Most whitespace bytes in a row between tokens of the JSON text.
pub const MAX_WS: u8 = 20;
/// Most digits in the integer part, the fraction and the exponent of a number.
const MAX_INT_DIGITS: u8 = 16;
const MAX_FRAC_DIGITS: u8 = 16;
const MAX_EXP_DIGITS: u8 = 2;
/// Most properties an object schema may list (the seen-set is a u64).
const MAX_PROPERTIES: usize = 64;
/// Deepest nesting of free-form (`{"type":"object"}` without properties, or any) values.
const MAX_ANY_DEPTH: usize = 32;
/// Most nodes a schema may compile to.
const MAX_NODES: usize = 4096;

/// A schema the compiler does not accept: `path` is a JSON pointer into the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.path.is_empty() {
            "the schema root"
        } else {
            &self.path
        };
        write!(f, "{} (at {at})", self.message)
    }
}

impl std::error::Error for SchemaError {}

type NodeId = u32;

/// The free-form nodes every grammar starts with: any value, any object, any array, and the
/// literals `true`, `false`, `null`.
const ANY: NodeId = 0;
const ANY_OBJECT: NodeId = 1;
const ANY_ARRAY: NodeId = 2;
const ANY_LITERALS: NodeId = 3;

/// One compiled schema node.
#[derive(Clone, Debug)]
enum Node {
    /// Any JSON value (depth-limited).
    Any,
    /// An object with known properties (`keys` sorted; `props[i]` is the value node of key `i`)
    /// or, with no properties, free string keys with `free` values.
    Object {
        keys: u32,
        props: Vec<NodeId>,
        required: u64,
        free: Option<NodeId>,
    },
    Array {
        items: NodeId,
        min: u32,
        max: u32,
    },
    String {
        min: u32,
        max: u32,
    },
    Number,
    Integer,
    /// One of a set of literal JSON texts (`true`, `null`, enum values, const).
    Literals(u32),
    /// Alternatives that start with different bytes.
    Union(Vec<NodeId>),
}

/// A compiled JSON Schema (or the "any JSON object" grammar of `json_object`).
#[derive(Clone, Debug)]
pub struct Grammar {
    nodes: Vec<Node>,
    /// Sorted literal byte strings (object keys with their quotes, enum values).
    sets: Vec<Vec<Vec<u8>>>,
    root: NodeId,
}

impl Grammar {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    pub fn json_object() -> Grammar {
        Compiler::new(&Value::Null).finish(ANY_OBJECT)
    }

    /// Compiles a JSON Schema.
    pub fn from_schema(schema: &Value) -> Result<Grammar, SchemaError> {
        let mut c = Compiler::new(schema);
        let root = c.compile(schema, "", 0)?;
        Ok(c.finish(root))
    }

    /// A matcher at the start of the text.
    pub fn matcher(&self) -> Matcher {
        Matcher {
            stack: vec![Frame::Value {
                node: self.root,
                ws: 0,
            }],
        }
    }

    /// Whether a whole byte string is a complete text of this grammar.
    pub fn accepts(&self, text: &[u8]) -> bool {
        let mut m = self.matcher();
        text.iter().all(|&b| m.advance(self, b)) && m.can_end(self)
    }
}

struct Compiler<'a> {
    root_schema: &'a Value,
    nodes: Vec<Node>,
    sets: Vec<Vec<Vec<u8>>>,
    /// `$ref`s being compiled, to refuse recursion.
    refs: Vec<String>,
}

fn err(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Keywords that do not constrain the output and are ignored.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "readOnly",
    "writeOnly",
    "deprecated",
];

impl<'a> Compiler<'a> {
    /// A compiler whose first nodes are the free-form ones `Any` refers to.
    fn new(root_schema: &'a Value) -> Self {
        let mut c = Compiler {
            root_schema,
            nodes: Vec::new(),
            sets: Vec::new(),
            refs: Vec::new(),
        };
        let keys = c.set(Vec::new());
        c.push(Node::Any);
        c.push(Node::Object {
            keys,
            props: Vec::new(),
            required: 0,
            free: Some(ANY),
        });
        c.push(Node::Array {
            items: ANY,
            min: 0,
            max: u32::MAX,
        });
        let lits = c.set(vec![b"true".to_vec(), b"false".to_vec(), b"null".to_vec()]);
        c.push(Node::Literals(lits));
        c
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        (self.nodes.len() - 1) as NodeId
    }

    fn set(&mut self, mut lits: Vec<Vec<u8>>) -> u32 {
        lits.sort();
        lits.dedup();
        self.sets.push(lits);
        (self.sets.len() - 1) as u32
    }

    fn finish(self, root: NodeId) -> Grammar {
        Grammar {
            nodes: self.nodes,
            sets: self.sets,
            root,
        }
    }

    fn compile(&mut self, s: &Value, path: &str, depth: usize) -> Result<NodeId, SchemaError> {
        if self.nodes.len() >= MAX_NODES || depth > 64 {
            return Err(err(path, "the schema is too large or too deeply nested"));
        }
        let o = match s {
            Value::Bool(true) => return Ok(ANY),
            Value::Bool(false) => return Err(err(path, "a `false` schema accepts nothing")),
            Value::Object(o) => o,
            _ => return Err(err(path, "a schema must be an object or a boolean")),
        };
        if let Some(r) = o.get("$ref") {
            return self.reference(o, r, path, depth);
        }
        let known = [
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "minItems",
            "maxItems",
            "minLength",
            "maxLength",
            "enum",
            "const",
            "anyOf",
            "oneOf",
        ];
        if let Some(k) = o
            .keys()
            .find(|k| !known.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(err(
                path,
                format!("the keyword `{k}` is not supported by flint's constrained decoding"),
            ));
        }
        if let Some(v) = o.get("const") {
            let set = self.set(vec![literal(v)]);
            return Ok(self.push(Node::Literals(set)));
        }
        if let Some(v) = o.get("enum") {
            let Value::Array(vals) = v else {
                return Err(err(&format!("{path}/enum"), "`enum` must be an array"));
            };
            if vals.is_empty() {
                return Err(err(&format!("{path}/enum"), "`enum` must not be empty"));
            }
            let set = self.set(vals.iter().map(literal).collect());
            return Ok(self.push(Node::Literals(set)));
        }
        for kw in ["anyOf", "oneOf"] {
            if let Some(v) = o.get(kw) {
                let Value::Array(alts) = v else {
                    return Err(err(
                        &format!("{path}/{kw}"),
                        format!("`{kw}` must be an array"),
                    ));
                };
                if o.contains_key("type") {
                    return Err(err(
                        path,
                        format!("`{kw}` together with `type` is not supported"),
                    ));
                }
                let mut ids = Vec::with_capacity(alts.len());
                for (i, a) in alts.iter().enumerate() {
                    ids.push(self.compile(a, &format!("{path}/{kw}/{i}"), depth + 1)?);
                }
                return self.union(ids, &format!("{path}/{kw}"));
            }
        }
        let types: Vec<&str> = match o.get("type") {
            None => {
                // No type: infer from the structural keywords, else anything.
                if o.contains_key("properties") || o.contains_key("additionalProperties") {
                    vec!["object"]
                } else if o.contains_key("items") {
                    vec!["array"]
                } else {
                    return Ok(ANY);
                }
            }
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| {
                    t.as_str().ok_or_else(|| {
                        err(&format!("{path}/type"), "`type` entries must be strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(err(
                    &format!("{path}/type"),
                    "`type` must be a string or an array of strings",
                ))
            }
        };
        if types.is_empty() {
            return Err(err(&format!("{path}/type"), "`type` must not be empty"));
        }
        let mut ids = Vec::with_capacity(types.len());
        for t in types {
            let id = match t {
                "object" => self.object(o, path, depth)?,
                "array" => self.array(o, path, depth)?,
                "string" => {
                    let min = count(o, "minLength", path)?.unwrap_or(0);
                    let max = count(o, "maxLength", path)?.unwrap_or(u32::MAX);
                    if min > max {
                        return Err(err(path, "`minLength` is larger than `maxLength`"));
                    }
                    self.push(Node::String { min, max })
                }
                "number" => self.push(Node::Number),
                "integer" => self.push(Node::Integer),
                "boolean" => {
                    let set = self.set(vec![b"true".to_vec(), b"false".to_vec()]);
                    self.push(Node::Literals(set))
                }
                "null" => {
                    let set = self.set(vec![b"null".to_vec()]);
                    self.push(Node::Literals(set))
                }
                t => return Err(err(&format!("{path}/type"), format!("unknown type `{t}`"))),
            };
            ids.push(id);
        }
        if ids.len() == 1 {
            Ok(ids[0])
        } else {
            self.union(ids, &format!("{path}/type"))
        }
    }

    fn reference(
        &mut self,
        o: &Map<String, Value>,
        r: &Value,
        path: &str,
        depth: usize,
    ) -> Result<NodeId, SchemaError> {
        let at = format!("{path}/$ref");
        let Value::String(r) = r else {
            return Err(err(&at, "`$ref` must be a string"));
        };
        if let Some(k) = o
            .keys()
            .find(|k| k.as_str() != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(err(path, format!("`$ref` next to `{k}` is not supported")));
        }
        let target = r
            .strip_prefix('#')
            .and_then(|p| self.root_schema.pointer(p))
            .filter(|_| r.starts_with("#/"))
            .ok_or_else(|| {
                err(
                    &at,
                    format!("`$ref` {r:?} does not point into this schema (only `#/...` refs are supported)"),
                )
            })?;
        if self.refs.iter().any(|x| x == r) {
            return Err(err(&at, format!("recursive `$ref` {r:?} is not supported")));
        }
        self.refs.push(r.clone());
        let id = self.compile(target, r.trim_start_matches('#'), depth + 1);
        self.refs.pop();
        id
    }

    fn object(
        &mut self,
        o: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<NodeId, SchemaError> {
        let props = match o.get("properties") {
            None => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => {
                return Err(err(
                    &format!("{path}/properties"),
                    "`properties` must be an object",
                ))
            }
        };
        if props.len() > MAX_PROPERTIES {
            return Err(err(
                &format!("{path}/properties"),
                format!("at most {MAX_PROPERTIES} properties are supported"),
            ));
        }
        let required: Vec<&str> = match o.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        err(
                            &format!("{path}/required"),
                            "`required` entries must be strings",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(err(
                    &format!("{path}/required"),
                    "`required` must be an array",
                ))
            }
        };
        // Keys in the byte order of their JSON text, so that matching narrows a contiguous range.
        let mut entries: Vec<(Vec<u8>, &String, &Value)> = props
            .iter()
            .map(|(k, v)| (literal(&Value::String(k.clone())), k, v))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut req = 0u64;
        for r in &required {
            match entries.iter().position(|e| e.1 == r) {
                Some(i) => req |= 1 << i,
                None => {
                    return Err(err(
                        &format!("{path}/required"),
                        format!("required property `{r}` is not in `properties`"),
                    ))
                }
            }
        }
        let mut ids = Vec::with_capacity(entries.len());
        for (_, k, v) in &entries {
            ids.push(self.compile(v, &format!("{path}/properties/{k}"), depth + 1)?);
        }
        let free = if entries.is_empty() {
            match o.get("additionalProperties") {
                None | Some(Value::Bool(true)) => Some(ANY),
                Some(Value::Bool(false)) => None,
                Some(s) => {
                    Some(self.compile(s, &format!("{path}/additionalProperties"), depth + 1)?)
                }
            }
        } else {
            match o.get("additionalProperties") {
                None | Some(Value::Bool(_)) | Some(Value::Object(_)) => None,
                Some(_) => {
                    return Err(err(
                        &format!("{path}/additionalProperties"),
                        "`additionalProperties` must be a boolean or a schema",
                    ))
                }
            }
        };
        let keys = self.set(entries.into_iter().map(|e| e.0).collect());
        Ok(self.push(Node::Object {
            keys,
            props: ids,
            required: req,
            free,
        }))
    }

    fn array(
        &mut self,
        o: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<NodeId, SchemaError> {
        let items = match o.get("items") {
            None => ANY,
            Some(s @ (Value::Object(_) | Value::Bool(_))) => {
                self.compile(s, &format!("{path}/items"), depth + 1)?
            }
            Some(_) => {
                return Err(err(
                    &format!("{path}/items"),
                    "`items` must be a schema (tuple arrays are not supported)",
                ))
            }
        };
        let min = count(o, "minItems", path)?.unwrap_or(0);
        let max = count(o, "maxItems", path)?.unwrap_or(u32::MAX);
        if min > max {
            return Err(err(path, "`minItems` is larger than `maxItems`"));
        }
        Ok(self.push(Node::Array { items, min, max }))
    }

    /// A union, if its alternatives can be told apart by their first byte.
    fn union(&mut self, ids: Vec<NodeId>, path: &str) -> Result<NodeId, SchemaError> {
        if ids.is_empty() {
            return Err(err(path, "an empty list of alternatives accepts nothing"));
        }
        let mut seen = [false; 256];
        for &id in &ids {
            let firsts = self.first_bytes(id);
            for (b, &f) in firsts.iter().enumerate() {
                if f && seen[b] {
                    return Err(err(
                        path,
                        "alternatives that can start with the same character are not supported (e.g. two objects, or two strings)",
                    ));
                }
                seen[b] |= f;
            }
        }
        Ok(self.push(Node::Union(ids)))
    }

    /// Which bytes can start a value of `id`.
    fn first_bytes(&self, id: NodeId) -> [bool; 256] {
        let mut f = [false; 256];
        let num = |f: &mut [bool; 256]| {
            f[b'-' as usize] = true;
            (b'0'..=b'9').for_each(|d| f[d as usize] = true);
        };
        match &self.nodes[id as usize] {
            Node::Any => {
                for b in b"{[\"tfn" {
                    f[*b as usize] = true;
                }
                num(&mut f);
            }
            Node::Object { .. } => f[b'{' as usize] = true,
            Node::Array { .. } => f[b'[' as usize] = true,
            Node::String { .. } => f[b'"' as usize] = true,
            Node::Number | Node::Integer => num(&mut f),
            Node::Literals(s) => {
                for l in &self.sets[*s as usize] {
                    if let Some(&b) = l.first() {
                        f[b as usize] = true;
                    }
                }
            }
            Node::Union(alts) => {
                for &a in alts {
                    let g = self.first_bytes(a);
                    (0..256).for_each(|b| f[b] |= g[b]);
                }
            }
        }
        f
    }
}

/// The compact JSON text of a value.
fn literal(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn count(o: &Map<String, Value>, kw: &str, path: &str) -> Result<Option<u32>, SchemaError> {
    match o.get(kw) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n.min(u32::MAX as u64) as u32))
            .ok_or_else(|| {
                err(
                    &format!("{path}/{kw}"),
                    format!("`{kw}` must be a non-negative integer"),
                )
            }),
    }
}

/// Where a number is in JSON's number grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Start,
    Minus,
    /// A leading `0`: only `.`, `e` or the end may follow.
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

/// Where a string is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Str {
    /// Before the opening quote.
    Open,
    Chars,
    Escape,
    /// In `\uXXXX`: hex digits read so far, and whether the first was `d`/`D` (surrogates, which
    /// strict parsers refuse alone, are not generated).
    Unicode(u8, bool),
    /// In a multi-byte UTF-8 character: continuation bytes still needed, and the range allowed
    /// for the next one (RFC 3629, so no overlong forms or surrogates).
    Utf8(u8, u8, u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObjPhase {
    /// Before `{`.
    Start,
    /// After `{`: a key or `}`.
    Open,
    /// Matching a known key: candidates `lo..hi` of the key set, `pos` bytes matched.
    Key { lo: u16, hi: u16, pos: u16 },
    /// A free key string is on the stack above.
    FreeKey,
    /// After the key: `:` (with the property index, or `u8::MAX` for a free key).
    Colon(u8),
    /// The value is on the stack above.
    Value,
    /// After a value: `,` or `}`.
    AfterValue,
    /// After `,`: a key.
    Comma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrPhase {
    Start,
    Open,
    Value,
    AfterValue,
}

/// One level of the matcher's stack. Small and `Copy`, so that cloning a matcher is a memcpy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// Before a value of `node`: whitespace, then the first byte decides what it is.
    Value { node: NodeId, ws: u8 },
    Obj {
        node: NodeId,
        seen: u64,
        phase: ObjPhase,
        ws: u8,
    },
    Arr {
        node: NodeId,
        count: u32,
        phase: ArrPhase,
        ws: u8,
    },
    Str {
        phase: Str,
        len: u32,
        min: u32,
        max: u32,
    },
    Num {
        integer: bool,
        phase: Num,
        digits: u8,
    },
    /// Matching one of the literals `lo..hi` of a set, `pos` bytes in.
    Lit {
        set: u32,
        lo: u32,
        hi: u32,
        pos: u32,
    },
}

/// Deepest stack: schemas compile at most 64 levels deep, free-form values nest up to
/// [`MAX_ANY_DEPTH`] more.
const MAX_STACK: usize = 2 * (64 + MAX_ANY_DEPTH) + 8;

/// The state of a partial JSON text: feed it bytes with [`Matcher::advance`], always with the
/// [`Grammar`] that made it ([`Grammar::matcher`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Matcher {
    stack: Vec<Frame>,
}

impl Clone for Matcher {
    fn clone(&self) -> Self {
        Matcher {
            stack: self.stack.clone(),
        }
    }
    /// Reuses the allocation: the token mask clones a matcher for every byte it tries.
    fn clone_from(&mut self, source: &Self) {
        self.stack.clone_from(&source.stack);
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// What a frame did with a byte.
enum Step {
    /// Consumed.
    Took,
    /// Not consumed: the frame is complete; pop it and give the byte to its parent.
    Pop,
    /// Consumed, and the frame is now complete: pop it.
    TookPop,
    /// Not consumed: replace the frame and give the byte to the replacement.
    Replace(Frame),
    /// Consumed; push a child frame.
    Push(Frame),
    /// Not consumed; push a child frame and give it the byte.
    PushRefeed(Frame),
    Reject,
}

impl Matcher {
    /// Whether the value is complete (nothing more may follow; only the end).
    pub fn is_complete(&self) -> bool {
        self.stack.is_empty()
    }

    /// Whether the text may end here: the value is complete, or it is a top-level number or
    /// literal that could also go on (`12` of `123`).
    pub fn can_end(&self, g: &Grammar) -> bool {
        match self.stack.as_slice() {
            [] => true,
            [Frame::Num { phase, .. }] => num_accepting(*phase),
            [Frame::Lit { set, lo, pos, .. }] => {
                g.sets[*set as usize][*lo as usize].len() == *pos as usize
            }
            _ => false,
        }
    }

    /// Feeds one byte. Returns `false` if no valid text continues with it; the matcher must then
    /// be discarded (its state is unspecified).
    pub fn advance(&mut self, g: &Grammar, b: u8) -> bool {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return false; // complete: nothing may follow
            };
            match step(g, top, b) {
                Step::Took => return true,
                Step::Reject => return false,
                Step::Pop => self.pop(),
                Step::TookPop => {
                    self.pop();
                    return true;
                }
                Step::Replace(f) => *top = f,
                Step::Push(_) | Step::PushRefeed(_) if self.stack.len() >= MAX_STACK => {
                    return false
                }
                Step::Push(f) => {
                    self.stack.push(f);
                    return true;
                }
                Step::PushRefeed(f) => self.stack.push(f),
            }
        }
    }

    /// Feeds bytes; `false` if one is refused.
    pub fn advance_all(&mut self, g: &Grammar, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.advance(g, b))
    }

    /// Pops the finished top frame and moves its parent on.
    fn pop(&mut self) {
        self.stack.pop();
        match self.stack.last_mut() {
            Some(Frame::Obj { phase, ws, .. }) => {
                *ws = 0;
                *phase = match *phase {
                    ObjPhase::FreeKey => ObjPhase::Colon(u8::MAX),
                    _ => ObjPhase::AfterValue,
                };
            }
            Some(Frame::Arr {
                count, phase, ws, ..
            }) => {
                *ws = 0;
                *count = count.saturating_add(1);
                *phase = ArrPhase::AfterValue;
            }
            _ => {}
        }
    }
}

fn num_accepting(p: Num) -> bool {
    matches!(p, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
}

/// Whitespace while waiting for something: counts it, refusing runs over [`MAX_WS`].
fn take_ws(ws: &mut u8) -> Step {
    if *ws >= MAX_WS {
        Step::Reject
    } else {
        *ws += 1;
        Step::Took
    }
}

/// Narrows the sorted candidates `lo..hi` (which share their first `pos` bytes) to those whose
/// byte at `pos` is `b`; they form a contiguous run.
fn narrow(lits: &[Vec<u8>], lo: usize, hi: usize, pos: usize, b: u8) -> (usize, usize) {
    let mut nl = lo;
    while nl < hi && lits[nl].get(pos).is_none_or(|&x| x < b) {
        nl += 1;
    }
    let mut nh = nl;
    while nh < hi && lits[nh].get(pos) == Some(&b) {
        nh += 1;
    }
    (nl, nh)
}

fn step(g: &Grammar, top: &mut Frame, b: u8) -> Step {
    match top {
        Frame::Value { node, ws } => {
            if is_ws(b) {
                return take_ws(ws);
            }
            match start(g, *node, b) {
                Some(f) => Step::Replace(f),
                None => Step::Reject,
            }
        }
        Frame::Num {
            integer,
            phase,
            digits,
        } => step_num(*integer, phase, digits, b),
        Frame::Lit { set, lo, hi, pos } => {
            let lits = &g.sets[*set as usize];
            let p = *pos as usize;
            let complete = lits[*lo as usize].len() == p;
            let (nl, nh) = narrow(lits, *lo as usize, *hi as usize, p, b);
            if nl == nh {
                return if complete { Step::Pop } else { Step::Reject };
            }
            *pos += 1;
            if nh == nl + 1 && lits[nl].len() == p + 1 {
                return Step::TookPop; // exactly one literal, fully matched
            }
            *lo = nl as u32;
            *hi = nh as u32;
            Step::Took
        }
        Frame::Str {
            phase,
            len,
            min,
            max,
        } => step_str(phase, len, *min, *max, b),
        Frame::Arr {
            node,
            count,
            phase,
            ws,
        } => {
            let Node::Array { items, min, max } = g.nodes[*node as usize] else {
                return Step::Reject;
            };
            match phase {
                ArrPhase::Start if b == b'[' => {
                    *phase = ArrPhase::Open;
                    Step::Took
                }
                ArrPhase::Open | ArrPhase::AfterValue if is_ws(b) => take_ws(ws),
                ArrPhase::Open if b == b']' && min == 0 => Step::TookPop,
                ArrPhase::Open if max > 0 => {
                    *phase = ArrPhase::Value;
                    Step::PushRefeed(Frame::Value { node: items, ws: 0 })
                }
                ArrPhase::AfterValue if b == b']' && *count >= min => Step::TookPop,
                ArrPhase::AfterValue if b == b',' && *count < max => {
                    *phase = ArrPhase::Value;
                    Step::Push(Frame::Value { node: items, ws: 0 })
                }
                _ => Step::Reject,
            }
        }
        Frame::Obj {
            node,
            seen,
            phase,
            ws,
        } => {
            let Node::Object {
                keys,
                props,
                required,
                free,
            } = &g.nodes[*node as usize]
            else {
                return Step::Reject;
            };
            let lits = &g.sets[*keys as usize];
            let all = if props.len() >= 64 {
                u64::MAX
            } else {
                (1u64 << props.len()) - 1
            };
            let can_close = *seen & required == *required;
            let more_keys = free.is_some() || *seen != all;
            match *phase {
                ObjPhase::Start if b == b'{' => {
                    *phase = ObjPhase::Open;
                    Step::Took
                }
                ObjPhase::Open | ObjPhase::AfterValue | ObjPhase::Comma | ObjPhase::Colon(_)
                    if is_ws(b) =>
                {
                    take_ws(ws)
                }
                ObjPhase::Open | ObjPhase::AfterValue if b == b'}' && can_close => Step::TookPop,
                ObjPhase::AfterValue if b == b',' && more_keys => {
                    *phase = ObjPhase::Comma;
                    *ws = 0;
                    Step::Took
                }
                ObjPhase::Open | ObjPhase::Comma if b == b'"' && more_keys => {
                    *ws = 0;
                    if free.is_some() {
                        *phase = ObjPhase::FreeKey;
                        Step::PushRefeed(Frame::Str {
                            phase: Str::Open,
                            len: 0,
                            min: 0,
                            max: u32::MAX,
                        })
                    } else {
                        *phase = ObjPhase::Key {
                            lo: 0,
                            hi: lits.len() as u16,
                            pos: 1,
                        };
                        Step::Took
                    }
                }
                ObjPhase::Key { lo, hi, pos } => {
                    let p = pos as usize;
                    let (nl, nh) = narrow(lits, lo as usize, hi as usize, p, b);
                    // Some candidate must still be unused.
                    if !(nl..nh).any(|i| *seen & (1 << i) == 0) {
                        return Step::Reject;
                    }
                    if lits[nl].len() == p + 1 {
                        // Keys end with `"`, so a complete key is the only candidate left.
                        *seen |= 1 << nl;
                        *phase = ObjPhase::Colon(nl as u8);
                    } else {
                        *phase = ObjPhase::Key {
                            lo: nl as u16,
                            hi: nh as u16,
                            pos: pos + 1,
                        };
                    }
                    Step::Took
                }
                ObjPhase::Colon(i) if b == b':' => {
                    let node = if i == u8::MAX {
                        match free {
                            Some(f) => *f,
                            None => return Step::Reject,
                        }
                    } else {
                        props[i as usize]
                    };
                    *phase = ObjPhase::Value;
                    *ws = 0;
                    Step::Push(Frame::Value { node, ws: 0 })
                }
                _ => Step::Reject,
            }
        }
    }
}

/// The frame a value of `node` that starts with byte `b` becomes (it is then given `b`).
fn start(g: &Grammar, node: NodeId, b: u8) -> Option<Frame> {
    let num = |integer| Frame::Num {
        integer,
        phase: Num::Start,
        digits: 0,
    };
    let is_num = b == b'-' || b.is_ascii_digit();
    match &g.nodes[node as usize] {
        Node::Any => match b {
            b'{' => start(g, ANY_OBJECT, b),
            b'[' => start(g, ANY_ARRAY, b),
            b'"' => Some(Frame::Str {
                phase: Str::Open,
                len: 0,
                min: 0,
                max: u32::MAX,
            }),
            _ if is_num => Some(num(false)),
            _ => start(g, ANY_LITERALS, b),
        },
        Node::Object { .. } if b == b'{' => Some(Frame::Obj {
            node,
            seen: 0,
            phase: ObjPhase::Start,
            ws: 0,
        }),
        Node::Array { .. } if b == b'[' => Some(Frame::Arr {
            node,
            count: 0,
            phase: ArrPhase::Start,
            ws: 0,
        }),
        Node::String { min, max } if b == b'"' => Some(Frame::Str {
            phase: Str::Open,
            len: 0,
            min: *min,
            max: *max,
        }),
        Node::Number if is_num => Some(num(false)),
        Node::Integer if is_num => Some(num(true)),
        Node::Literals(set) => {
            let lits = &g.sets[*set as usize];
            lits.iter()
                .any(|l| l.first() == Some(&b))
                .then_some(Frame::Lit {
                    set: *set,
                    lo: 0,
                    hi: lits.len() as u32,
                    pos: 0,
                })
        }
        Node::Union(alts) => alts.iter().find_map(|&a| start(g, a, b)),
        _ => None,
    }
}

fn step_num(integer: bool, phase: &mut Num, digits: &mut u8, b: u8) -> Step {
    let digit = b.is_ascii_digit();
    let (next, count) = match *phase {
        Num::Start if b == b'-' => (Num::Minus, 0),
        // `-0` is an integer to JSON Schema but a float to many parsers: not generated.
        Num::Minus if b == b'0' && integer => return Step::Reject,
        Num::Start | Num::Minus if b == b'0' => (Num::Zero, 1),
        Num::Start | Num::Minus if digit => (Num::Int, 1),
        Num::Int if digit && *digits < MAX_INT_DIGITS => (Num::Int, *digits + 1),
        Num::Zero | Num::Int if b == b'.' && !integer => (Num::Dot, 0),
        Num::Zero | Num::Int | Num::Frac if (b == b'e' || b == b'E') && !integer => (Num::Exp, 0),
        Num::Dot if digit => (Num::Frac, 1),
        Num::Frac if digit && *digits < MAX_FRAC_DIGITS => (Num::Frac, *digits + 1),
        Num::Exp if b == b'+' || b == b'-' => (Num::ExpSign, 0),
        Num::Exp | Num::ExpSign if digit => (Num::ExpDigits, 1),
        Num::ExpDigits if digit && *digits < MAX_EXP_DIGITS => (Num::ExpDigits, *digits + 1),
        p if num_accepting(p) => return Step::Pop,
        _ => return Step::Reject,
    };
    *phase = next;
    *digits = count;
    Step::Took
}

fn step_str(phase: &mut Str, len: &mut u32, min: u32, max: u32, b: u8) -> Step {
    let room = *len < max;
    let next = match *phase {
        Str::Open if b == b'"' => Str::Chars,
        Str::Open => return Step::Reject,
        Str::Chars => match b {
            b'"' if *len >= min => return Step::TookPop,
            b'"' => return Step::Reject,
            _ if !room || b < 0x20 => return Step::Reject,
            b'\\' => Str::Escape,
            0x20..=0x7f => Str::Chars,
            0xc2..=0xdf => Str::Utf8(1, 0x80, 0xbf),
            0xe0 => Str::Utf8(2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee..=0xef => Str::Utf8(2, 0x80, 0xbf),
            0xed => Str::Utf8(2, 0x80, 0x9f),
            0xf0 => Str::Utf8(3, 0x90, 0xbf),
            0xf1..=0xf3 => Str::Utf8(3, 0x80, 0xbf),
            0xf4 => Str::Utf8(3, 0x80, 0x8f),
            _ => return Step::Reject,
        },
        Str::Utf8(n, lo, hi) if (lo..=hi).contains(&b) => {
            if n == 1 {
                Str::Chars
            } else {
                Str::Utf8(n - 1, 0x80, 0xbf)
            }
        }
        Str::Utf8(..) => return Step::Reject,
        Str::Escape => match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Str::Chars,
            b'u' => Str::Unicode(0, false),
            _ => return Step::Reject,
        },
        Str::Unicode(k, d) if b.is_ascii_hexdigit() => {
            if k == 1 && d && !(b'0'..=b'7').contains(&b) {
                return Step::Reject; // \uD800-\uDFFF: a surrogate
            }
            if k == 3 {
                Str::Chars
            } else {
                Str::Unicode(k + 1, if k == 0 { b == b'd' || b == b'D' } else { d })
            }
        }
        Str::Unicode(..) => return Step::Reject,
    };
    // A character is counted where it starts: any byte taken in `Chars` (ASCII, a UTF-8 lead
    // byte, or the backslash of an escape).
    if *phase == Str::Chars {
        *len += 1;
    }
    *phase = next;
    Step::Took
}

/// Every token's bytes, sorted once per model, for [`TokenTable::mask`].
#[derive(Clone, Debug)]
pub struct TokenTable {
    vocab: usize,
    /// Token ids with non-empty bytes, in byte order.
    order: Vec<u32>,
    /// `bytes[offsets[i]..offsets[i + 1]]` = bytes of `order[i]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// Length of the common prefix of `order[i]`'s bytes with `order[i - 1]`'s.
    lcp: Vec<usize>,
    max_len: usize,
    /// End-of-generation tokens: allowed exactly where the text may end.
    eog: Vec<u32>,
    /// Every token's bytes, by id.
    tokens: Vec<Vec<u8>>,
}

impl TokenTable {
    /// `tokens[id]` = the bytes token `id` decodes to (empty for control tokens, which are never
    /// allowed, except the end-of-generation ones in `eog`).
    pub fn new(tokens: &[Vec<u8>], eog: &[u32]) -> TokenTable {
        let mut order: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| !tokens[i as usize].is_empty() && !eog.contains(&i))
            .collect();
        order.sort_by(|&a, &b| tokens[a as usize].cmp(&tokens[b as usize]));
        let mut bytes = Vec::new();
        let mut offsets = vec![0];
        let mut lcp = Vec::with_capacity(order.len());
        let mut prev: &[u8] = &[];
        for &id in &order {
            let t = &tokens[id as usize];
            lcp.push(prev.iter().zip(t).take_while(|(a, b)| a == b).count());
            bytes.extend_from_slice(t);
            offsets.push(bytes.len());
            prev = t;
        }
        let max_len = tokens.iter().map(Vec::len).max().unwrap_or(0);
        TokenTable {
            vocab: tokens.len(),
            order,
            bytes,
            offsets,
            lcp,
            max_len,
            eog: eog.to_vec(),
            tokens: tokens.to_vec(),
        }
    }

    /// The bytes of a token (empty for control tokens and ids outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.tokens.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The number of token ids.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Sets `allowed[id]` for every token that may come next after `m`: one whose bytes keep the
    /// text valid, or an end-of-generation token where the text may end. Returns how many.
    ///
    /// Tokens are walked in byte order: the matcher states of the common prefix with the previous
    /// token are reused, and once a prefix is refused every token starting with it is skipped
    /// with one comparison.
    pub fn mask(&self, g: &Grammar, m: &Matcher, allowed: &mut Vec<bool>) -> usize {
        allowed.clear();
        allowed.resize(self.vocab, false);
        let mut n = 0;
        if m.can_end(g) {
            for &e in &self.eog {
                if let Some(a) = allowed.get_mut(e as usize) {
                    *a = true;
                    n += 1;
                }
            }
        }
        if m.is_complete() {
            return n;
        }
        // states[d] = the matcher after the first d bytes of the current token; valid up to `ok`.
        let mut states: Vec<Matcher> = vec![m.clone(); self.max_len + 1];
        let mut ok = 0usize;
        for (i, &id) in self.order.iter().enumerate() {
            let t = &self.bytes[self.offsets[i]..self.offsets[i + 1]];
            let shared = self.lcp[i];
            if shared > ok {
                continue; // starts with a prefix that was refused
            }
            let mut d = shared;
            while d < t.len() {
                let (done, rest) = states.split_at_mut(d + 1);
                rest[0].clone_from(&done[d]);
                if !rest[0].advance(g, t[d]) {
                    break;
                }
                d += 1;
            }
            ok = d;
            if d == t.len() {
                allowed[id as usize] = true;
                n += 1;
            }
        }
        n
    }

    /// Sets the logits of the tokens [`mask`](TokenTable::mask) refuses to `-inf`; returns how
    /// many tokens are allowed.
    pub fn apply(
        &self,
        g: &Grammar,
        m: &Matcher,
        logits: &mut [f32],
        scratch: &mut Vec<bool>,
    ) -> usize {
        let n = self.mask(g, m, scratch);
        for (l, &a) in logits.iter_mut().zip(scratch.iter()) {
            if !a {
                *l = f32::NEG_INFINITY;
            }
        }
        n
    }

    /// Feeds a chosen token's bytes to `m`; `false` if the grammar refuses them.
    pub fn accept(&self, g: &Grammar, m: &mut Matcher, token: u32) -> bool {
        if self.eog.contains(&token) {
            return m.can_end(g);
        }
        match self.tokens.get(token as usize) {
            Some(t) if !t.is_empty() => m.advance_all(g, t),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A validator for the keywords the compiler supports (the oracle of these tests).
    fn valid(s: &Value, v: &Value, root: &Value) -> bool {
        let o = match s {
            Value::Bool(b) => return *b,
            Value::Object(o) => o,
            _ => return false,
        };
        if let Some(Value::String(r)) = o.get("$ref") {
            return valid(
                &root.pointer(&r[1..]).cloned().unwrap_or(json!(false)),
                v,
                root,
            );
        }
        if let Some(c) = o.get("const") {
            return c == v;
        }
        if let Some(Value::Array(e)) = o.get("enum") {
            return e.contains(v);
        }
        for kw in ["anyOf", "oneOf"] {
            if let Some(Value::Array(alts)) = o.get(kw) {
                let n = alts.iter().filter(|a| valid(a, v, root)).count();
                return if kw == "anyOf" { n >= 1 } else { n == 1 };
            }
        }
        let types: Vec<&str> = match o.get("type") {
            Some(Value::String(t)) => vec![t],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec!["object", "array", "string", "number", "boolean", "null"],
        };
        let num = |k: &str| o.get(k).and_then(Value::as_u64);
        types.iter().any(|t| match (*t, v) {
            ("object", Value::Object(m)) => {
                let props = o.get("properties").and_then(Value::as_object);
                let req_ok = o
                    .get("required")
                    .and_then(Value::as_array)
                    .is_none_or(|r| r.iter().all(|k| m.contains_key(k.as_str().unwrap())));
                req_ok
                    && m.iter().all(|(k, x)| match props.and_then(|p| p.get(k)) {
                        Some(ps) => valid(ps, x, root),
                        None => match o.get("additionalProperties") {
                            None => true,
                            Some(a) => valid(a, x, root),
                        },
                    })
            }
            ("array", Value::Array(a)) => {
                num("minItems").is_none_or(|n| a.len() as u64 >= n)
                    && num("maxItems").is_none_or(|n| a.len() as u64 <= n)
                    && a.iter()
                        .all(|x| o.get("items").is_none_or(|i| valid(i, x, root)))
            }
            ("string", Value::String(x)) => {
                let n = x.chars().count() as u64;
                num("minLength").is_none_or(|m| n >= m) && num("maxLength").is_none_or(|m| n <= m)
            }
            ("number", Value::Number(_)) => true,
            ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
            ("boolean", Value::Bool(_)) | ("null", Value::Null) => true,
            _ => false,
        })
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn allowed_bytes(g: &Grammar, m: &Matcher) -> Vec<u8> {
        (0..=255u8).filter(|&b| m.clone().advance(g, b)).collect()
    }

    /// A random text of the grammar, walking byte by byte; after `wander` bytes it heads for the
    /// end. Checks on the way that every state reached can go on or end.
    fn random_text(g: &Grammar, rng: &mut Rng, wander: usize) -> Vec<u8> {
        let mut m = g.matcher();
        let mut out = Vec::new();
        for step in 0..20_000 {
            let allowed = allowed_bytes(g, &m);
            let can_end = m.can_end(g);
            assert!(
                can_end || !allowed.is_empty(),
                "dead state after {:?}",
                String::from_utf8_lossy(&out)
            );
            if can_end && (allowed.is_empty() || step > wander || rng.next().is_multiple_of(16)) {
                return out;
            }
            let b = if step > wander {
                closing_byte(&m, &allowed)
            } else {
                allowed[(rng.next() % allowed.len() as u64) as usize]
            };
            assert!(m.advance(g, b));
            out.push(b);
        }
        panic!("no end after 20000 bytes: {:?}", show(&out));
    }

    /// A byte that heads for the end of the text: close the string or container, or the
    /// shortest value.
    fn closing_byte(m: &Matcher, allowed: &[u8]) -> u8 {
        let pref: &[u8] = match m.stack.last() {
            Some(Frame::Str { .. }) => b"\"a",
            _ => b"}]0n,:\"a",
        };
        pref.iter()
            .copied()
            .find(|p| allowed.contains(p))
            .or_else(|| {
                allowed
                    .iter()
                    .copied()
                    .find(|&b| !is_ws(b) && b != b'{' && b != b'[')
            })
            .unwrap_or(allowed[0])
    }

    fn show(t: &[u8]) -> String {
        let s = String::from_utf8_lossy(t);
        s.chars().take(300).collect()
    }

    fn schemas() -> Vec<Value> {
        vec![
            json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 12},
                "age": {"type": "integer"},
                "alive": {"type": "boolean"},
                "nick": {"type": ["string", "null"]},
            }, "required": ["name", "age"], "additionalProperties": false}),
            json!({"type": "object", "properties": {
                "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 3},
                "color": {"enum": ["red", "green", "blue", 7, null]},
                "pos": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]},
                "kind": {"const": "point"},
                "a": {"type": "string"}, "ab": {"type": "string"}, "abc": {"type": "integer"},
            }, "required": ["pos", "kind", "ab"]}),
            json!({"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"$ref": "#/$defs/p"}]},
                   "$defs": {"p": {"type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"]}}}),
            json!({"type": "object", "additionalProperties": {"type": "integer"}}),
            json!({"type": "object"}),
            json!({"enum": [1, 12, 123]}),
            json!({"type": "number"}),
            json!(true),
        ]
    }

    #[test]
    fn random_texts_parse_and_validate() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for schema in schemas() {
            let g = Grammar::from_schema(&schema).unwrap();
            for i in 0..150 {
                let t = random_text(&g, &mut rng, [0, 5, 40, 300][i % 4]);
                let v: Value = serde_json::from_slice(&t).unwrap_or_else(|e| {
                    panic!(
                        "{schema}: {:?} does not parse: {e}",
                        String::from_utf8_lossy(&t)
                    )
                });
                assert!(
                    valid(&schema, &v, &schema),
                    "{schema}: {v} does not validate"
                );
                assert!(g.accepts(&t));
            }
        }
        let g = Grammar::json_object();
        for i in 0..150 {
            let t = random_text(&g, &mut rng, [0, 5, 40, 300][i % 4]);
            let v: Value = serde_json::from_slice(&t).expect("json_object output parses");
            assert!(v.is_object(), "{v}");
        }
    }

    #[test]
    fn accepts_and_refuses_exactly() {
        let s = &schemas()[0];
        let g = Grammar::from_schema(s).unwrap();
        for ok in [
            r#"{"name":"Ann","age":3}"#,
            "{ \"age\" : -10 ,\n \"name\": \"\\u00e9\\n\", \"nick\": null}",
            r#"{"alive":true,"name":"","age":12,"nick":"x"}"#,
            r#"{"name":"é😀","age":0}"#,
        ] {
            assert!(g.accepts(ok.as_bytes()), "{ok}");
        }
        for bad in [
            r#"{"name":"Ann"}"#,                   // age missing
            r#"{"name":"Ann","age":3,"age":4}"#,   // repeated key
            r#"{"name":"Ann","age":3.5}"#,         // not an integer
            r#"{"name":"Ann","age":03}"#,          // leading zero
            r#"{"name":"Ann","age":-0}"#,          // -0 (a float to serde_json)
            r#"{"name":"Ann","age":3,"x":1}"#,     // unknown key
            r#"{"name":"0123456789abc","age":3}"#, // maxLength 12
            r#"{"name":"a\qb","age":3}"#,          // bad escape
            r#"{"name":"\ud800","age":3}"#,        // lone surrogate
            r#"{"name":"Ann","age":3,}"#,          // trailing comma
            r#"{"name":"Ann","age":3} "#,          // anything after the end
            "{\"name\":\"a\nb\",\"age\":3}",       // raw control character
        ] {
            assert!(!g.accepts(bad.as_bytes()), "{bad}");
        }
        assert!(
            !g.accepts(b"{\"name\":\"\xc3\x28\",\"age\":1}"),
            "invalid UTF-8"
        );
        assert!(
            !g.accepts(b"{\"name\":\"\xed\xa0\x80\",\"age\":1}"),
            "UTF-8 surrogate"
        );
        // Bounded whitespace.
        let ws = format!(
            "{{{}\"name\":\"a\",\"age\":1}}",
            " ".repeat(MAX_WS as usize + 1)
        );
        assert!(!g.accepts(ws.as_bytes()));
        // Top-level numbers and literals may end wherever they are complete.
        let g = Grammar::from_schema(&json!({"enum": [1, 12, 123]})).unwrap();
        assert!(g.accepts(b"1") && g.accepts(b"12") && g.accepts(b"123"));
        assert!(!g.accepts(b"13") && !g.accepts(b"1234") && !g.accepts(b""));
        let g = Grammar::from_schema(&json!({"type": "number"})).unwrap();
        for ok in ["0", "-1.5e+3", "10E2", "0.25"] {
            assert!(g.accepts(ok.as_bytes()), "{ok}");
        }
        for bad in ["-", "1.", ".5", "1e", "+1", "01", "1.5.2"] {
            assert!(!g.accepts(bad.as_bytes()), "{bad}");
        }
        let g = Grammar::from_schema(
            &json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}),
        )
        .unwrap();
        assert!(g.accepts(b"[1, 2]") && g.accepts(b"[1,2,3]"));
        assert!(!g.accepts(b"[1]") && !g.accepts(b"[1,2,3,4]") && !g.accepts(b"[]"));
    }

    #[test]
    fn unsupported_schemas_are_named() {
        let cases = [
            (json!({"type": "string", "pattern": "a+"}), "pattern", ""),
            (
                json!({"type": "object", "properties": {"a": {"type": "number", "minimum": 0}}}),
                "minimum",
                "/properties/a",
            ),
            (
                json!({"anyOf": [{"type": "object"}, {"type": "object", "properties": {"b": true}}]}),
                "same character",
                "/anyOf",
            ),
            (
                json!({"$ref": "#/$defs/n", "$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}),
                "recursive",
                "/$defs/n/items/$ref",
            ),
            (
                json!({"$ref": "http://example.com/s.json"}),
                "does not point",
                "/$ref",
            ),
            (
                json!({"type": "object", "required": ["zz"], "properties": {"a": true}}),
                "zz",
                "/required",
            ),
            (json!({"type": "tuple"}), "unknown type", "/type"),
            (json!({"enum": []}), "empty", "/enum"),
            (json!(5), "must be an object", ""),
            (
                json!({"type": "string", "minLength": 3, "maxLength": 2}),
                "minLength",
                "",
            ),
        ];
        for (schema, needle, path) in cases {
            let e = Grammar::from_schema(&schema).expect_err(&schema.to_string());
            assert!(e.to_string().contains(needle), "{schema}: {e}");
            assert_eq!(e.path, path, "{schema}: {e}");
        }
    }

    /// A random schema-like value: schema keywords with values of every type.
    fn random_schema(rng: &mut Rng, depth: usize) -> Value {
        let kws = [
            "type",
            "properties",
            "required",
            "items",
            "enum",
            "const",
            "anyOf",
            "minItems",
            "maxItems",
            "maxLength",
            "additionalProperties",
            "$ref",
            "title",
        ];
        let leaf = |rng: &mut Rng| match rng.next() % 8 {
            0 => json!("object"),
            1 => json!(["string", "null"]),
            2 => json!(rng.next() % 4),
            3 => json!(["a", 1, null]),
            4 => json!("#/properties/a"),
            5 => json!(true),
            6 => json!("integer"),
            _ => json!({}),
        };
        let mut o = Map::new();
        for _ in 0..rng.next() % 4 {
            let k = kws[(rng.next() % kws.len() as u64) as usize];
            let v = if depth > 0 && rng.next().is_multiple_of(2) {
                match k {
                    "properties" => {
                        json!({"a": random_schema(rng, depth - 1), "b": random_schema(rng, depth - 1)})
                    }
                    "anyOf" => {
                        json!([random_schema(rng, depth - 1), random_schema(rng, depth - 1)])
                    }
                    _ => random_schema(rng, depth - 1),
                }
            } else {
                leaf(rng)
            };
            o.insert(k.to_string(), v);
        }
        Value::Object(o)
    }

    /// Random schemas either compile or are refused; the ones that compile only ever produce
    /// JSON that parses, and random bytes never upset a matcher.
    #[test]
    fn random_schemas_and_bytes_never_panic() {
        let mut rng = Rng(77);
        let mut compiled = 0;
        for _ in 0..3000 {
            let schema = random_schema(&mut rng, 3);
            let Ok(g) = Grammar::from_schema(&schema) else {
                continue;
            };
            compiled += 1;
            let t = random_text(&g, &mut rng, 20);
            assert!(
                serde_json::from_slice::<Value>(&t).is_ok(),
                "{schema}: {:?}",
                show(&t)
            );
            let mut m = g.matcher();
            for _ in 0..64 {
                if !m.advance(&g, rng.next() as u8) {
                    break;
                }
            }
        }
        assert!(compiled > 300, "only {compiled} random schemas compiled");
    }

    /// A small vocabulary of single bytes and JSON-ish pieces, with two control tokens.
    fn vocab() -> (Vec<Vec<u8>>, Vec<u32>) {
        let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for t in [
            "{\"", "\":", "\",", "\"}", " \"", "true", "false", "null", "12", "3.5", "\\u00", "é",
            "name", "\"name\"", ",\n", "  ", "\n}", "]}", "[]", "{}", "\"age\":", "ag", "e\"",
            "1,", "\"\"", "0.", "-", "e+", "\"]", "\\\"", "😀", ", ", "}\n",
        ] {
            toks.push(t.as_bytes().to_vec());
        }
        toks.push(vec![0xe2, 0x82]); // a partial UTF-8 character
        toks.push(Vec::new()); // EOS
        toks.push(Vec::new()); // another control token
        let eos = toks.len() as u32 - 2;
        (toks, vec![eos])
    }

    #[test]
    fn mask_equals_brute_force_and_generation_validates() {
        let (toks, eog) = vocab();
        let table = TokenTable::new(&toks, &eog);
        let mut rng = Rng(12345);
        let mut mask = Vec::new();
        for schema in schemas() {
            let g = Grammar::from_schema(&schema).unwrap();
            for round in 0..40 {
                let mut m = g.matcher();
                let mut out = Vec::new();
                let mut ended = false;
                for step in 0..3000 {
                    let n = table.mask(&g, &m, &mut mask);
                    // Brute force: each token's bytes fed to a copy of the matcher.
                    for (id, t) in toks.iter().enumerate() {
                        let want = if eog.contains(&(id as u32)) {
                            m.can_end(&g)
                        } else {
                            !t.is_empty() && m.clone().advance_all(&g, t)
                        };
                        assert_eq!(
                            mask[id],
                            want,
                            "token {id} {t:?} after {:?}",
                            String::from_utf8_lossy(&out)
                        );
                    }
                    assert_eq!(n, mask.iter().filter(|&&a| a).count());
                    assert!(
                        n > 0,
                        "empty mask after {:?}",
                        String::from_utf8_lossy(&out)
                    );
                    if m.is_complete() {
                        assert_eq!(n, 1, "only EOS once complete");
                    }
                    let ids: Vec<u32> = (0..toks.len() as u32)
                        .filter(|&i| mask[i as usize])
                        .collect();
                    let tok = if step > 20 + round * 5 {
                        // Head for the end: EOS if allowed, else a single byte that closes.
                        let bytes: Vec<u8> =
                            ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
                        ids.iter()
                            .copied()
                            .find(|i| eog.contains(i))
                            .unwrap_or_else(|| u32::from(closing_byte(&m, &bytes)))
                    } else {
                        ids[(rng.next() % ids.len() as u64) as usize]
                    };
                    if eog.contains(&tok) {
                        ended = true;
                        break;
                    }
                    assert!(table.accept(&g, &mut m, tok));
                    out.extend_from_slice(&toks[tok as usize]);
                }
                assert!(ended, "{schema}: no end: {:?}", show(&out));
                let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                    panic!("{schema}: {:?}: {e}", String::from_utf8_lossy(&out))
                });
                assert!(valid(&schema, &v, &schema), "{schema}: {v}");
            }
        }
    }
}
