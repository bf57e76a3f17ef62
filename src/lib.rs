//! flint: portable LLM inference on WGSL compute shaders.
//!
//! The data path: file ([`format`]) -> tensors -> GPU buffers ([`gpu`]) -> layer ops ([`ops`]) ->
//! logits ([`model`]) -> sampler ([`sampling`]) -> tokens -> text ([`tokenizer`]); or, for embedding
//! models, hidden states ([`model::encoder`]) -> pooled vectors ([`embed`]).

pub mod bench;
pub mod chat;
pub mod constrain;
pub mod decode;
pub mod embed;
pub mod engine;
pub mod error;
pub mod format;
pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod hub;
pub mod model;
pub mod ops;
pub mod sampling;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
pub mod spec;
pub mod tokenizer;
pub mod tools;
pub mod web;

pub use error::{Error, Result};
