//! A small GGUF writer, for tests and tools (tiny synthetic models, crafted files).
//!
//! Writes GGUF v3, little-endian, as ggml/docs/gguf.md lays it out: header, metadata KVs in the
//! order given, tensor infos in the order given, padding to the alignment, then each tensor's data
//! at the next multiple of the alignment (no padding after the last tensor).
//!
//! The writer does not validate: it writes whatever it is given (a tensor whose data does not
//! match its dims, a `general.alignment` that is not a power of two), so tests can craft bad files.
//!
//! ```
//! use flint::format::gguf::{Gguf, Value};
//! use flint::format::gguf_write::GgufWriter;
//!
//! let bytes = GgufWriter::new()
//!     .kv("general.architecture", Value::String("llama".into()))
//!     .tensor_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])
//!     .to_bytes();
//! let g = Gguf::from_bytes(bytes).unwrap();
//! assert_eq!(g.get_str("general.architecture"), Some("llama"));
//! assert_eq!(g.tensor("w").unwrap().n_bytes, 16);
//! ```

use crate::error::{Error, Result};
use crate::format::gguf::{value_type, Value, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use std::path::Path;

/// One tensor to write.
#[derive(Clone, Debug)]
struct TensorEntry {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory. Consuming builder methods chain; `push_*` variants suit loops.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    kvs: Vec<(String, Value)>,
    tensors: Vec<TensorEntry>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty GGUF v3 file with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a metadata key/value (written in the order added; duplicates are written as given).
    pub fn kv(mut self, key: impl Into<String>, value: Value) -> Self {
        self.push_kv(key, value);
        self
    }

    /// Adds a tensor with raw data in the ggml layout of `ggml_type` (`dims[0]` is the row length).
    pub fn tensor(
        mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: u32,
        data: Vec<u8>,
    ) -> Self {
        self.push_tensor(name, dims, ggml_type, data);
        self
    }

    /// Adds an F32 tensor from values.
    pub fn tensor_f32(self, name: impl Into<String>, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, 0, data)
    }

    /// Sets the data alignment. Unless a `general.alignment` key was added explicitly, a value
    /// other than 32 also writes `general.alignment` as a u32. 0 is treated as 1 for padding.
    pub fn alignment(mut self, n: u64) -> Self {
        self.alignment = n;
        self
    }

    /// Sets the version number written in the header (default 3), for crafting files.
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Adds a metadata key/value in place.
    pub fn push_kv(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.kvs.push((key.into(), value));
        self
    }

    /// Adds a tensor in place.
    pub fn push_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: u32,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(TensorEntry {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// The file image.
    ///
    /// # Panics
    /// If an array value mixes element types (GGUF arrays are homogeneous); see
    /// [`GgufWriter::try_to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.try_to_bytes() {
            Ok(b) => b,
            Err(e) => panic!("GgufWriter: {e}"),
        }
    }

    /// The file image, or `Error::InvalidArgument` if an array value mixes element types.
    pub fn try_to_bytes(&self) -> Result<Vec<u8>> {
        let align = self.alignment.max(1);
        let mut kvs: Vec<(&str, Value)> = self
            .kvs
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        if self.alignment != DEFAULT_ALIGNMENT && !self.kvs.iter().any(|(k, _)| k == ALIGNMENT_KEY)
        {
            let a = u32::try_from(self.alignment).map_err(|_| {
                Error::InvalidArgument(format!("alignment {} does not fit a u32", self.alignment))
            })?;
            kvs.push((ALIGNMENT_KEY, Value::U32(a)));
        }

        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (k, v) in &kvs {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v, k)?;
        }

        // Offsets relative to the data section: each tensor at the next multiple of the alignment.
        let mut rel = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            rel = rel.next_multiple_of(align);
            offsets.push(rel);
            rel += t.data.len() as u64;
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }

        if !self.tensors.is_empty() {
            let data_start = (out.len() as u64).next_multiple_of(align);
            out.resize(data_start as usize, 0);
            for (t, off) in self.tensors.iter().zip(&offsets) {
                out.resize((data_start + off) as usize, 0);
                out.extend_from_slice(&t.data);
            }
        }
        Ok(out)
    }

    /// Writes the file image to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.try_to_bytes()?).map_err(|e| Error::io(path, e))
    }
}

/// A gguf_string: u64 byte length, then the bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A value's bytes, without its type id.
fn put_value(out: &mut Vec<u8>, v: &Value, key: &str) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            // An empty array is written as an array of u8.
            let elem_ty = items.first().map(Value::type_id).unwrap_or(value_type::U8);
            out.extend_from_slice(&elem_ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (i, item) in items.iter().enumerate() {
                if item.type_id() != elem_ty {
                    return Err(Error::InvalidArgument(format!(
                        "GGUF key '{key}': array element {i} has value type {} but element 0 has {}",
                        item.type_id(),
                        elem_ty
                    )));
                }
                put_value(out, item, key)?;
            }
        }
    }
    Ok(())
}
