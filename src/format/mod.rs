//! Model file formats: GGUF (and later safetensors), read into tensor views over a memory map.

pub mod dtype;
pub mod gguf;
pub mod gguf_write;

pub use dtype::DType;
