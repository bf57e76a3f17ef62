//! The one error type of flint. Every variant names the input that was wrong.

use thiserror::Error;

/// Everything that can go wrong, from a bad model file to a missing GPU.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file is truncated, corrupt or hostile.
    #[error("GGUF: {0}")]
    Gguf(String),
    /// A tensor of a type flint cannot use (yet).
    #[error("tensor `{tensor}` has type {dtype}, which flint does not support")]
    UnsupportedType { tensor: String, dtype: String },
    /// Model metadata is missing or inconsistent.
    #[error("model: {0}")]
    Model(String),
    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// No usable GPU adapter.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// A GPU operation failed (device lost, out of memory, validation).
    #[error("GPU: {0}")]
    Gpu(String),
    /// The prompt does not fit the context window.
    #[error("prompt of {tokens} tokens does not fit the context of {ctx} tokens")]
    ContextOverflow { tokens: usize, ctx: usize },
    /// A caller passed an argument out of range (sampling parameters, sizes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Fetching a model file over HTTP failed (the message names the URL).
    #[error("download: {0}")]
    Download(String),
}

/// flint's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// How an error message names the kind of a JSON value that was not what a field needs ("got
/// a string"): for request fields, tool definitions and schemas alike.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
