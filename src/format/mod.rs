//! Model file formats: GGUF files and Hugging Face folders (safetensors), read into tensor views
//! over a memory map.

pub mod dtype;
pub mod gguf;
pub mod gguf_write;
pub mod hf;
pub mod safetensors;
mod storage;

pub use dtype::DType;

use crate::error::Result;
use std::path::Path;

/// A model as found on disk: a GGUF file or a Hugging Face folder.
#[derive(Debug)]
pub enum ModelFile {
    Gguf(gguf::Gguf),
    Hf(hf::HfModel),
}

impl ModelFile {
    /// Opens `path`: a directory is read as a Hugging Face folder (`config.json`, safetensors,
    /// `tokenizer.json`), anything else as a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFile> {
        let path = path.as_ref();
        if path.is_dir() {
            Ok(ModelFile::Hf(hf::HfModel::open(path)?))
        } else {
            Ok(ModelFile::Gguf(gguf::Gguf::open(path)?))
        }
    }
}
