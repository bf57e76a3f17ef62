//! The bytes of a model file: memory-mapped where the platform can (native), owned otherwise
//! (tests, fuzzing, wasm). Shared by the GGUF and safetensors readers.

use crate::error::{Error, Result};
use std::path::Path;

/// A model file's bytes, mapped or owned.
pub(crate) enum Storage {
    #[cfg(not(target_arch = "wasm32"))]
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Maps the file at `path` read-only (an empty file is read, since some platforms refuse to map
    /// one; the parsers then report it as truncated).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn open(path: &Path) -> Result<Storage> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Storage::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private to its reader. As with any mmap, another process
        // truncating or rewriting the file while it is mapped is undefined behaviour; model files
        // are treated as immutable while loaded (as llama.cpp does).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Storage::Mmap(map))
    }

    /// Reads the file at `path` (wasm has no mmap).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn open(path: &Path) -> Result<Storage> {
        std::fs::read(path)
            .map(Storage::Owned)
            .map_err(|e| Error::io(path, e))
    }
}
