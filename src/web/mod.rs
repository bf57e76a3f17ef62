//! flint on the web: the same engine, kernels and shaders, loaded from byte ranges and driven from
//! JavaScript through wasm-bindgen (browsers' WebGPU, or Node with the `webgpu` package).
//!
//! - [`loader`] streams a GGUF tensor by tensor from any [`loader::RangeReader`] to the GPU, so
//!   the whole file is never held in memory. It is plain async Rust, compiled and tested natively
//!   too.
//! - [`options`] checks the load options JavaScript passes (JSON) and turns them into
//!   [`LoadOptions`](crate::engine::LoadOptions); also compiled and tested natively.
//! - `wasm` (wasm32 only) is the JavaScript-facing API that `pkg/` wraps: load, generate with a
//!   text callback, info, unload. `pkg/` adds the fetch/cache reader, the Web Worker and the
//!   OpenAI-shaped API; `scripts/build-web.sh` builds it.

pub mod loader;
pub mod options;
#[cfg(target_arch = "wasm32")]
mod wasm;
