//! The npm package's `engine.embeddings.create`, in and out of JSON: the request's shape (OpenAI's
//! `input` as a string, strings, token ids or lists of them; `encoding_format`, `dimensions`,
//! `truncate`) read into [`EmbedInput`]s and [`EmbedOptions`], and [`Embeddings`] written as
//! OpenAI's list. Only the JSON's shape is checked here: what the values mean (empty inputs, token
//! ids outside the vocabulary, inputs over the model's limit, `dimensions` out of range) is checked
//! by [`crate::embed`], as for every surface. Compiled and tested natively; `wasm.rs` calls it.

use crate::embed::{EmbedInput, EmbedOptions, Embeddings};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// How the vectors are written: OpenAI's `encoding_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// An array of numbers (each the vector's f32 exactly).
    Float,
    /// The vector's little-endian f32 bytes in standard base64 (what OpenAI's clients decode).
    Base64,
}

/// A checked request.
#[derive(Clone, Debug)]
pub struct EmbedRequest {
    pub inputs: Vec<EmbedInput>,
    pub opts: EmbedOptions,
    pub encoding: Encoding,
}

const INPUT_SHAPES: &str =
    "input must be a string, an array of strings, an array of token ids or an array of arrays of \
     token ids";

/// What a JSON value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// One token id: an integer in u32's range (the vocabulary is checked by the embedder).
fn token_id(v: &Value, at: &str) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(format!(
                "{at} is {v}, not a token id (an integer from 0 to {})",
                u32::MAX
            ))
        })
}

fn token_ids(items: &[Value], at: &str) -> Result<Vec<u32>> {
    items
        .iter()
        .enumerate()
        .map(|(j, v)| token_id(v, &format!("{at}[{j}]")))
        .collect()
}

/// OpenAI's `input`: a string, an array of strings, an array of token ids (one input) or an array
/// of arrays of token ids. The first item of an array says which; an item of another kind is an
/// error naming it.
pub fn parse_input(input: &Value) -> Result<Vec<EmbedInput>> {
    let items = match input {
        Value::String(s) => return Ok(vec![EmbedInput::Text(s.clone())]),
        Value::Array(items) => items,
        other => return Err(invalid(format!("{INPUT_SHAPES}, not {}", kind(other)))),
    };
    let Some(first) = items.first() else {
        // the embedder names an empty list
        return Ok(Vec::new());
    };
    if first.is_number() {
        return Ok(vec![EmbedInput::Tokens(token_ids(items, "input")?)]);
    }
    if !first.is_string() && !first.is_array() {
        return Err(invalid(format!(
            "{INPUT_SHAPES}; input[0] is {}",
            kind(first)
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match (first, v) {
            (Value::String(_), Value::String(s)) => Ok(EmbedInput::Text(s.clone())),
            (Value::Array(_), Value::Array(ids)) => {
                Ok(EmbedInput::Tokens(token_ids(ids, &format!("input[{i}]"))?))
            }
            _ => Err(invalid(format!(
                "{INPUT_SHAPES}: input[{i}] is {} but input[0] is {}",
                kind(v),
                kind(first)
            ))),
        })
        .collect()
}

/// Reads the request JSON that pkg/index.js builds from `embeddings.create`'s body:
/// `{"input", "encoding_format"?, "dimensions"?, "truncate"?}` (unknown fields are refused).
pub fn parse_request(text: &str) -> Result<EmbedRequest> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("embeddings request: {e}")))?;
    let Value::Object(map) = v else {
        return Err(invalid(format!(
            "embeddings request: an object expected, not {}",
            kind(&v)
        )));
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["input", "encoding_format", "dimensions", "truncate"].contains(&k.as_str()))
    {
        return Err(invalid(format!("embeddings request: unknown field `{k}`")));
    }
    let present = |k: &str| map.get(k).filter(|v| !v.is_null());
    let inputs = match present("input") {
        Some(input) => parse_input(input)?,
        None => return Err(invalid(format!("input is missing ({INPUT_SHAPES})"))),
    };
    let encoding = match present("encoding_format") {
        None => Encoding::Float,
        Some(v) => match v.as_str() {
            Some("float") => Encoding::Float,
            Some("base64") => Encoding::Base64,
            _ => {
                return Err(invalid(format!(
                    "encoding_format must be \"float\" or \"base64\", not {v}"
                )))
            }
        },
    };
    let dimensions = match present("dimensions") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| {
                    invalid(format!("dimensions must be a positive integer, not {v}"))
                })?,
        ),
    };
    let truncate = match present("truncate") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("truncate must be true or false, not {v}")))?,
    };
    Ok(EmbedRequest {
        inputs,
        opts: EmbedOptions {
            dimensions,
            truncate,
        },
        encoding,
    })
}

/// Standard base64 (RFC 4648, padded) of `v`'s little-endian f32 bytes.
pub fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(ABC[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// OpenAI's embeddings response without `model` (pkg/index.js names the loaded model):
/// `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "usage"}`.
pub fn response_json(e: &Embeddings, encoding: Encoding) -> Value {
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => json!(base64_f32(v)),
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_request(text).unwrap_err().to_string()
    }

    #[test]
    fn inputs_of_every_shape() {
        let inputs = |text: &str| parse_request(text).unwrap().inputs;
        let t = |s: &str| EmbedInput::Text(s.into());
        assert_eq!(inputs(r#"{"input": "hi"}"#), vec![t("hi")]);
        assert_eq!(inputs(r#"{"input": ["a", "b"]}"#), vec![t("a"), t("b")]);
        assert_eq!(
            inputs(r#"{"input": [5, 6]}"#),
            vec![EmbedInput::Tokens(vec![5, 6])]
        );
        assert_eq!(
            inputs(r#"{"input": [[5], [6, 7]]}"#),
            vec![EmbedInput::Tokens(vec![5]), EmbedInput::Tokens(vec![6, 7])]
        );
        // emptiness is the embedder's to name
        assert_eq!(inputs(r#"{"input": []}"#), vec![]);
        assert_eq!(inputs(r#"{"input": [""]}"#), vec![t("")]);
        assert_eq!(
            inputs(r#"{"input": [[]]}"#),
            vec![EmbedInput::Tokens(vec![])]
        );
        let r = parse_request(
            r#"{"input": "x", "dimensions": 8, "truncate": true, "encoding_format": "base64"}"#,
        )
        .unwrap();
        assert_eq!(
            (r.opts.dimensions, r.opts.truncate, r.encoding),
            (Some(8), true, Encoding::Base64)
        );
        let r = parse_request(r#"{"input": "x", "dimensions": null, "encoding_format": null}"#)
            .unwrap();
        assert_eq!(
            (r.opts.dimensions, r.opts.truncate, r.encoding),
            (None, false, Encoding::Float)
        );
    }

    #[test]
    fn bad_shapes_are_named() {
        for (text, want) in [
            (r#"{}"#, "input is missing"),
            (r#"{"input": 3}"#, "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids, not a number"),
            (r#"{"input": ["a", 3]}"#, "input[1] is a number but input[0] is a string"),
            (r#"{"input": [[1], "a"]}"#, "input[1] is a string but input[0] is an array"),
            (r#"{"input": [null]}"#, "input[0] is null"),
            (r#"{"input": [{"text": "a"}]}"#, "input[0] is an object"),
            (r#"{"input": [1, "a"]}"#, "input[1] is \"a\", not a token id"),
            (r#"{"input": [1, 2.5]}"#, "input[1] is 2.5, not a token id"),
            (r#"{"input": [-1]}"#, "input[0] is -1, not a token id"),
            (r#"{"input": [[1], [2, 4294967296]]}"#, "input[1][1] is 4294967296, not a token id"),
            (r#"{"input": "a", "encoding_format": "int8"}"#, "encoding_format must be \"float\" or \"base64\", not \"int8\""),
            (r#"{"input": "a", "dimensions": -2}"#, "dimensions must be a positive integer, not -2"),
            (r#"{"input": "a", "dimensions": 1.5}"#, "dimensions must be a positive integer, not 1.5"),
            (r#"{"input": "a", "truncate": "yes"}"#, "truncate must be true or false"),
            (r#"{"input": "a", "user": "me"}"#, "unknown field `user`"),
            (r#"[1]"#, "an object expected"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn base64_and_response() {
        // 1.0f32 = 00 00 80 3f; -2.0 = 00 00 00 c0
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[1.0, -2.0, 0.5]), "AACAPwAAAMAAAAA/");
        assert_eq!(base64_f32(&[]), "");
        let e = Embeddings {
            vectors: vec![vec![0.1, 0.2], vec![1.0, -2.0]],
            prompt_tokens: 7,
        };
        let r = response_json(&e, Encoding::Float);
        assert_eq!(r["object"], "list");
        assert_eq!(r["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
        assert_eq!(
            r["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [1.0, -2.0]})
        );
        // each number is the f32 exactly (as `flint embed --json` prints it)
        assert_eq!(r["data"][0]["embedding"][0].as_f64(), Some(0.1f32 as f64));
        let r = response_json(&e, Encoding::Base64);
        assert_eq!(r["data"][1]["embedding"], "AACAPwAAAMA=");
    }
}
