//! flint on the web: the same engine, kernels and shaders, loaded from byte ranges and driven from
//! JavaScript through wasm-bindgen (browsers' WebGPU, or Node with the `webgpu` package).
//!
//! - [`loader`] streams a GGUF tensor by tensor from any [`loader::RangeReader`] to the GPU, so
//!   the whole file is never held in memory, and builds an engine or an embedder from it. It is
//!   plain async Rust, compiled and tested natively too.
//! - [`options`] checks the load options JavaScript passes (JSON) and turns them into
//!   [`LoadOptions`](crate::engine::LoadOptions); also compiled and tested natively.
//! - [`embeddings`] reads `embeddings.create`'s request JSON (OpenAI's `input` shapes) and writes
//!   OpenAI's response; also compiled and tested natively.
//! - `wasm` (wasm32 only) is the JavaScript-facing API that `pkg/` wraps: load (a generation or an
//!   embedding model), generate with a text callback, embed, info, unload. `pkg/` adds the
//!   fetch/cache reader, the Web Worker and the OpenAI-shaped API; `scripts/build-web.sh` builds it.

pub mod embeddings;
pub mod loader;
pub mod options;
#[cfg(target_arch = "wasm32")]
mod wasm;
