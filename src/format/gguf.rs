//! GGUF reader.
//!
//! Spec: ggml/docs/gguf.md (GGUF v2/v3, little-endian only). Layout of a file:
//!
//! ```text
//! magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//! metadata_kv_count x (gguf_string key, u32 value_type, value)
//! tensor_count x (gguf_string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
//! padding to `general.alignment` (default 32)
//! tensor data (each tensor at `data_offset + offset`, offset a multiple of the alignment)
//! ```
//!
//! where `gguf_string` is a u64 byte length followed by UTF-8 bytes (no terminator) and an array
//! value is a u32 element type, a u64 element count and the elements.
//!
//! The file is memory-mapped (native) or held in a `Vec<u8>` (tests, fuzzing, wasm). Every size,
//! offset, count and string length is checked against the bytes that remain before it is used or
//! allocated for, so a truncated, corrupt or hostile file gives an [`Error::Gguf`] naming the
//! problem, the key or tensor and the byte offset, never a panic, a huge allocation or a hang.

use crate::error::{Error, Result};
use crate::format::dtype::ggml_type_layout;
use crate::format::storage::Storage;
use crate::format::DType;
use std::collections::HashMap;
use std::path::Path;

/// The magic at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent (spec: `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most tensor dimensions accepted (ggml's `GGML_MAX_DIMS` is 4; some headroom for newer files).
pub const MAX_DIMS: u32 = 8;
/// Deepest nesting of array values accepted (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// GGUF metadata value type ids (spec: `enum gguf_metadata_value_type`).
pub mod value_type {
    /// `uint8`
    pub const U8: u32 = 0;
    /// `int8`
    pub const I8: u32 = 1;
    /// `uint16`
    pub const U16: u32 = 2;
    /// `int16`
    pub const I16: u32 = 3;
    /// `uint32`
    pub const U32: u32 = 4;
    /// `int32`
    pub const I32: u32 = 5;
    /// `float32`
    pub const F32: u32 = 6;
    /// `bool`: one byte, 0 or 1
    pub const BOOL: u32 = 7;
    /// `gguf_string`: u64 length, then UTF-8 bytes
    pub const STRING: u32 = 8;
    /// array: u32 element type, u64 count, then the elements
    pub const ARRAY: u32 = 9;
    /// `uint64`
    pub const U64: u32 = 10;
    /// `int64`
    pub const I64: u32 = 11;
    /// `float64`
    pub const F64: u32 = 12;
}

/// One metadata value, as GGUF types it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The GGUF value type id of this value (`value_type::*`).
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => value_type::U8,
            Value::I8(_) => value_type::I8,
            Value::U16(_) => value_type::U16,
            Value::I16(_) => value_type::I16,
            Value::U32(_) => value_type::U32,
            Value::I32(_) => value_type::I32,
            Value::U64(_) => value_type::U64,
            Value::I64(_) => value_type::I64,
            Value::F32(_) => value_type::F32,
            Value::F64(_) => value_type::F64,
            Value::Bool(_) => value_type::BOOL,
            Value::String(_) => value_type::STRING,
            Value::Array(_) => value_type::ARRAY,
        }
    }

    /// Any integer value, widened (`None` if not an integer or negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value as i64 (`None` if not an integer or a u64 above `i64::MAX`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any float or integer value as f32 (rounded to the nearest f32).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v as f32),
            Value::I32(v) => Some(v as f32),
            Value::U64(v) => Some(v as f32),
            Value::I64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bool, if this is a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The name of a GGUF value type id, for messages.
fn value_type_name(t: u32) -> String {
    let name = match t {
        value_type::U8 => "UINT8",
        value_type::I8 => "INT8",
        value_type::U16 => "UINT16",
        value_type::I16 => "INT16",
        value_type::U32 => "UINT32",
        value_type::I32 => "INT32",
        value_type::F32 => "FLOAT32",
        value_type::BOOL => "BOOL",
        value_type::STRING => "STRING",
        value_type::ARRAY => "ARRAY",
        value_type::U64 => "UINT64",
        value_type::I64 => "INT64",
        value_type::F64 => "FLOAT64",
        other => return format!("unknown value type {other}"),
    };
    name.to_string()
}

/// The fewest bytes a value of type `t` takes in the file (`None` for an unknown type).
/// Used to bound element counts by the bytes that remain before allocating.
fn min_value_size(t: u32) -> Option<u64> {
    Some(match t {
        value_type::U8 | value_type::I8 | value_type::BOOL => 1,
        value_type::U16 | value_type::I16 => 2,
        value_type::U32 | value_type::I32 | value_type::F32 => 4,
        value_type::U64 | value_type::I64 | value_type::F64 => 8,
        value_type::STRING => 8,    // u64 length, empty string
        value_type::ARRAY => 4 + 8, // u32 element type, u64 count, no elements
        _ => return None,
    })
}

/// Smallest metadata KV: empty key (u64 len), u32 type, 1-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Smallest tensor info: empty name (u64 len), u32 n_dims, one u64 dim, u32 type, u64 offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 8 + 4 + 8;

/// One tensor's description from the header. `dims[0]` is the fastest-varying (row length), as in ggml.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    /// Raw ggml type id as stored in the file.
    pub ggml_type: u32,
    /// Offset of the data from the start of the file (already validated to lie inside it).
    pub file_offset: u64,
    /// Byte size of the data (validated).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (saturating; the reader has checked that it does not overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
    /// The flint type, or `Error::UnsupportedType` naming this tensor and its ggml type.
    pub fn dtype(&self) -> Result<DType> {
        DType::from_ggml_id(self.ggml_type).ok_or_else(|| Error::UnsupportedType {
            tensor: self.name.clone(),
            dtype: match ggml_type_layout(self.ggml_type) {
                Some(l) => l.name.to_string(),
                None => format!("unknown ggml type {}", self.ggml_type),
            },
        })
    }
    /// The ggml name of the type ("Q4_K", "F32", ...), or `"?"` for an unknown id.
    pub fn type_name(&self) -> &'static str {
        ggml_type_layout(self.ggml_type)
            .map(|l| l.name)
            .unwrap_or("?")
    }
}

/// A parsed GGUF file: metadata, tensor directory and the (mapped) bytes.
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
    storage: Storage,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("bytes", &self.storage.as_slice().len())
            .finish()
    }
}

impl Gguf {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let storage = Storage::open(path)?;
        let file_len = storage.as_slice().len() as u64;
        Self::parse(storage, file_len)
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, the web loader's header bytes).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf> {
        let file_len = bytes.len() as u64;
        Self::parse(Storage::Owned(bytes), file_len)
    }

    /// Parses the first bytes of a GGUF file of `file_len` bytes in all (the web loader fetches
    /// the header only). Tensor bounds are checked against `file_len`; [`Gguf::tensor_data`]
    /// returns an empty slice for a tensor whose bytes are not held. A header cut short by
    /// `bytes` is an error, as with [`Gguf::from_bytes`].
    pub fn from_header_bytes(bytes: Vec<u8>, file_len: u64) -> Result<Gguf> {
        if file_len < bytes.len() as u64 {
            return Err(Error::Gguf(format!(
                "header bytes ({}) are longer than the declared file size {file_len}",
                bytes.len()
            )));
        }
        Self::parse(Storage::Owned(bytes), file_len)
    }

    fn parse(storage: Storage, file_len: u64) -> Result<Gguf> {
        let h = parse_header(storage.as_slice(), file_len)?;
        Ok(Gguf {
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            alignment: h.alignment,
            data_offset: h.data_offset,
            storage,
            key_index: h.key_index,
            tensor_index: h.tensor_index,
        })
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        // The fields are public: fall back to a scan if the index no longer matches them.
        match self.key_index.get(key).and_then(|&i| self.metadata.get(i)) {
            Some((k, v)) if k == key => Some(v),
            _ => self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        }
    }
    /// A string value (`None` if absent or of another type).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    /// Any integer value, widened (`None` if absent, not an integer, or negative).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }
    /// Any float (or integer) value as f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }
    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect()
    }
    /// An array of numbers as f32.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(Value::as_f32)
            .collect()
    }
    /// An array of integers as i64.
    pub fn get_i64_array(&self, key: &str) -> Option<Vec<i64>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(Value::as_i64)
            .collect()
    }
    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        match self
            .tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
        {
            Some(t) if t.name == name => Some(t),
            _ => self.tensors.iter().find(|t| t.name == name),
        }
    }
    /// The bytes of a tensor (bounds were checked at parse time).
    ///
    /// Returns an empty slice if `t` does not lie inside the held bytes (a `TensorInfo` from
    /// another file, one edited by the caller, or a header-only parse).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.storage.as_slice();
        let range = usize::try_from(t.file_offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(t.n_bytes).ok()?)?;
            Some(start..end)
        });
        range.and_then(|r| bytes.get(r)).unwrap_or(&[])
    }
    /// All the bytes held (the whole file, or the header for [`Gguf::from_header_bytes`]).
    pub fn bytes(&self) -> &[u8] {
        self.storage.as_slice()
    }
}

/// Everything parsed from the header; the storage is attached afterwards.
struct Header {
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    /// Takes `n` bytes, or fails naming `what` and the offset if fewer remain.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let short = || {
            Error::Gguf(format!(
                "{} at byte {}: needs {n} bytes but only {} remain (file truncated?)",
                what(),
                self.pos,
                self.remaining()
            ))
        };
        if n > self.remaining() {
            return Err(short());
        }
        let n = usize::try_from(n).map_err(|_| short())?;
        let end = self.pos.checked_add(n).ok_or_else(short)?;
        let s = self.buf.get(self.pos..end).ok_or_else(short)?;
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(u8::from_le_bytes(self.fixed(what)?))
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.fixed(what)?))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.fixed(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed(what)?))
    }

    /// A gguf_string: u64 length (checked against the remaining bytes) then UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&|| format!("{} (string length)", what()))?;
        if len > self.remaining() {
            return Err(Error::Gguf(format!(
                "{} at byte {at}: string length {len} exceeds the {} bytes that remain",
                what(),
                self.remaining()
            )));
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Error::Gguf(format!(
                "{} at byte {at}: string is not valid UTF-8 ({e})",
                what()
            ))),
        }
    }
}

/// Reads one value of GGUF type `ty`. `depth` counts enclosing arrays.
fn read_value(
    cur: &mut Cursor<'_>,
    ty: u32,
    what: &dyn Fn() -> String,
    depth: usize,
) -> Result<Value> {
    Ok(match ty {
        value_type::U8 => Value::U8(cur.u8(what)?),
        value_type::I8 => Value::I8(i8::from_le_bytes(cur.fixed(what)?)),
        value_type::U16 => Value::U16(cur.u16(what)?),
        value_type::I16 => Value::I16(i16::from_le_bytes(cur.fixed(what)?)),
        value_type::U32 => Value::U32(cur.u32(what)?),
        value_type::I32 => Value::I32(i32::from_le_bytes(cur.fixed(what)?)),
        value_type::F32 => Value::F32(f32::from_le_bytes(cur.fixed(what)?)),
        value_type::U64 => Value::U64(cur.u64(what)?),
        value_type::I64 => Value::I64(i64::from_le_bytes(cur.fixed(what)?)),
        value_type::F64 => Value::F64(f64::from_le_bytes(cur.fixed(what)?)),
        value_type::BOOL => {
            let at = cur.pos;
            match cur.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::Gguf(format!(
                        "{} at byte {at}: bool byte is {b}, expected 0 or 1",
                        what()
                    )))
                }
            }
        }
        value_type::STRING => Value::String(cur.string(what)?),
        value_type::ARRAY => {
            let at = cur.pos;
            if depth >= MAX_ARRAY_DEPTH {
                return Err(Error::Gguf(format!(
                    "{} at byte {at}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels",
                    what()
                )));
            }
            let elem_ty = cur.u32(&|| format!("{} (array element type)", what()))?;
            let count = cur.u64(&|| format!("{} (array length)", what()))?;
            let min = min_value_size(elem_ty).ok_or_else(|| {
                Error::Gguf(format!(
                    "{} at byte {at}: array of unknown value type {elem_ty}",
                    what()
                ))
            })?;
            // Bound the count by the bytes left before allocating anything.
            let fits = count.checked_mul(min).is_some_and(|n| n <= cur.remaining());
            if !fits {
                return Err(Error::Gguf(format!(
                    "{} at byte {at}: array length {count} of {} needs at least {count} x {min} \
                     bytes but only {} remain",
                    what(),
                    value_type_name(elem_ty),
                    cur.remaining()
                )));
            }
            let n = usize::try_from(count).map_err(|_| {
                Error::Gguf(format!(
                    "{} at byte {at}: array length {count} too large",
                    what()
                ))
            })?;
            let mut items = Vec::with_capacity(n);
            for i in 0..n {
                let elem_what = || format!("{}[{i}]", what());
                items.push(read_value(cur, elem_ty, &elem_what, depth + 1)?);
            }
            Value::Array(items)
        }
        other => {
            return Err(Error::Gguf(format!(
                "{} at byte {}: unknown value type {other}",
                what(),
                cur.pos.saturating_sub(4)
            )))
        }
    })
}

/// Parses and validates everything before the data section. `file_len` is the size of the whole
/// file (equal to `buf.len()` unless only the header is held).
fn parse_header(buf: &[u8], file_len: u64) -> Result<Header> {
    let mut cur = Cursor { buf, pos: 0 };

    // Header: magic, version, tensor count, KV count.
    let magic: [u8; 4] = cur.fixed(&|| "magic".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(Error::Gguf(format!(
            "bad magic {:?} at byte 0, expected \"GGUF\" (not a GGUF file)",
            String::from_utf8_lossy(&magic)
        )));
    }
    let version = cur.u32(&|| "version".to_string())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::Gguf(
                "version 1 at byte 4 is not supported (GGUF v1 used 32-bit counts; \
                 re-convert the model)"
                    .to_string(),
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::Gguf(format!(
            "version {v} at byte 4: this looks like a big-endian GGUF file, which is not supported"
        )))
        }
        v => {
            return Err(Error::Gguf(format!(
                "unsupported version {v} at byte 4 (expected 2 or 3)"
            )))
        }
    }
    let tensor_count = cur.u64(&|| "tensor count".to_string())?;
    let kv_count = cur.u64(&|| "metadata KV count".to_string())?;
    let need = kv_count.checked_mul(MIN_KV_SIZE).and_then(|a| {
        tensor_count
            .checked_mul(MIN_TENSOR_INFO_SIZE)?
            .checked_add(a)
    });
    if need.is_none_or(|n| n > cur.remaining()) {
        return Err(Error::Gguf(format!(
            "tensor count {tensor_count} (byte 8) and metadata KV count {kv_count} (byte 16) \
             cannot fit in the {} bytes that remain",
            cur.remaining()
        )));
    }
    // Both counts are now bounded by the file size.
    let kv_count = usize::try_from(kv_count)
        .map_err(|_| Error::Gguf(format!("metadata KV count {kv_count} too large")))?;
    let tensor_count = usize::try_from(tensor_count)
        .map_err(|_| Error::Gguf(format!("tensor count {tensor_count} too large")))?;

    // Metadata KVs.
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(kv_count);
    let mut key_index: HashMap<String, usize> = HashMap::with_capacity(kv_count);
    for i in 0..kv_count {
        let at = cur.pos;
        let key = cur.string(&|| format!("metadata key #{i}"))?;
        let kwhat = || format!("key '{key}'");
        let ty = cur.u32(&|| format!("key '{key}' (value type)"))?;
        if min_value_size(ty).is_none() {
            return Err(Error::Gguf(format!(
                "key '{key}' at byte {}: unknown value type {ty}",
                cur.pos.saturating_sub(4)
            )));
        }
        let value = read_value(&mut cur, ty, &kwhat, 0)?;
        if key_index.contains_key(&key) {
            return Err(Error::Gguf(format!(
                "duplicate metadata key '{key}' at byte {at}"
            )));
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    // Alignment (spec: `general.alignment`, uint32, a nonzero power of two; default 32).
    let alignment = match key_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let a = v.as_u64().ok_or_else(|| {
                Error::Gguf(format!(
                    "key '{ALIGNMENT_KEY}' has a {} value {v:?}, expected an unsigned integer",
                    value_type_name(v.type_id())
                ))
            })?;
            if a == 0 || !a.is_power_of_two() {
                return Err(Error::Gguf(format!(
                    "key '{ALIGNMENT_KEY}' is {a}, which is not a nonzero power of two"
                )));
            }
            a
        }
    };

    // Tensor infos.
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count);
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(tensor_count);
    let mut info_pos: Vec<usize> = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let at = cur.pos;
        let name = cur.string(&|| format!("tensor #{i} name"))?;
        let n_dims = cur.u32(&|| format!("tensor '{name}' (n_dims)"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::Gguf(format!(
                "tensor '{name}' at byte {at}: has {n_dims} dimensions (expected 1 to {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let dim = cur.u64(&|| format!("tensor '{name}' (dim {d})"))?;
            if dim == 0 {
                return Err(Error::Gguf(format!(
                    "tensor '{name}' at byte {at}: dimension {d} is 0"
                )));
            }
            dims.push(dim);
        }
        let ggml_type = cur.u32(&|| format!("tensor '{name}' (type)"))?;
        let offset = cur.u64(&|| format!("tensor '{name}' (offset)"))?;

        let layout = ggml_type_layout(ggml_type).ok_or_else(|| {
            Error::Gguf(format!(
                "tensor '{name}' at byte {at}: unknown ggml type id {ggml_type}"
            ))
        })?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                Error::Gguf(format!(
                    "tensor '{name}' at byte {at}: element count of dims {dims:?} overflows"
                ))
            })?;
        let block_elems = layout.block_elems as u64;
        let row = dims.first().copied().unwrap_or(1);
        if block_elems == 0 || row % block_elems != 0 {
            return Err(Error::Gguf(format!(
                "tensor '{name}' at byte {at}: row length {row} is not a multiple of the {} \
                 block size {block_elems}",
                layout.name
            )));
        }
        let n_bytes = (n_elements / block_elems)
            .checked_mul(layout.block_bytes as u64)
            .ok_or_else(|| {
                Error::Gguf(format!(
                    "tensor '{name}' at byte {at}: byte size of dims {dims:?} as {} overflows",
                    layout.name
                ))
            })?;
        if offset % alignment != 0 {
            return Err(Error::Gguf(format!(
                "tensor '{name}' at byte {at}: data offset {offset} is misaligned (not a \
                 multiple of the alignment {alignment})"
            )));
        }
        if tensor_index.contains_key(&name) {
            return Err(Error::Gguf(format!(
                "duplicate tensor name '{name}' at byte {at}"
            )));
        }
        tensor_index.insert(name.clone(), tensors.len());
        info_pos.push(at);
        // `file_offset` is relative for now; made absolute once the data section is known.
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            file_offset: offset,
            n_bytes,
        });
    }

    // Padding to the alignment, then the data section.
    let header_end = cur.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| {
            Error::Gguf(format!(
                "data section offset (header end {header_end} aligned to {alignment}) overflows"
            ))
        })?;
    for (t, &at) in tensors.iter_mut().zip(&info_pos) {
        let rel = t.file_offset;
        let start = data_offset.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => t.file_offset = start,
            (Some(start), Some(end)) => {
                return Err(Error::Gguf(format!(
                    "tensor '{}' data [{start}..{end}) lies outside the file (size {file_len}); \
                     described at byte {at}",
                    t.name
                )))
            }
            _ => {
                return Err(Error::Gguf(format!(
                    "tensor '{}' at byte {at}: data at {data_offset} + {rel} + {} bytes \
                     overflows, lies outside the file (size {file_len})",
                    t.name, t.n_bytes
                )))
            }
        }
    }
    Ok(Header {
        version,
        metadata,
        key_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gguf_write::GgufWriter;

    fn all_values() -> Vec<(&'static str, Value)> {
        vec![
            ("v.u8", Value::U8(200)),
            ("v.i8", Value::I8(-100)),
            ("v.u16", Value::U16(60000)),
            ("v.i16", Value::I16(-30000)),
            ("v.u32", Value::U32(4_000_000_000)),
            ("v.i32", Value::I32(-2_000_000_000)),
            ("v.u64", Value::U64(u64::MAX)),
            ("v.i64", Value::I64(i64::MIN)),
            ("v.f32", Value::F32(1.5e-5)),
            ("v.f64", Value::F64(-2.25e300)),
            ("v.true", Value::Bool(true)),
            ("v.false", Value::Bool(false)),
            ("v.str", Value::String("héllo ✓".into())),
            ("v.empty_str", Value::String(String::new())),
            ("v.empty_arr", Value::Array(vec![])),
            (
                "v.arr_str",
                Value::Array(vec![Value::String("a".into()), Value::String("Ġb".into())]),
            ),
            (
                "v.arr_i32",
                Value::Array(vec![Value::I32(-1), Value::I32(2), Value::I32(3)]),
            ),
            (
                "v.arr_f32",
                Value::Array(vec![Value::F32(0.5), Value::F32(-1.0)]),
            ),
            (
                "v.arr_bool",
                Value::Array(vec![Value::Bool(true), Value::Bool(false)]),
            ),
            (
                "v.nested",
                Value::Array(vec![
                    Value::Array(vec![Value::U8(1), Value::U8(2)]),
                    Value::Array(vec![Value::U8(3)]),
                    Value::Array(vec![]),
                ]),
            ),
            (
                "v.nested3",
                Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::String(
                    "deep".into(),
                )])])]),
            ),
        ]
    }

    fn sample(alignment: u64) -> GgufWriter {
        let mut w = GgufWriter::new().alignment(alignment);
        for (k, v) in all_values() {
            w.push_kv(k, v);
        }
        w.tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
            .tensor("q", &[64, 2], 8, (0..4 * 34).map(|i| i as u8).collect()) // Q8_0: 4 blocks
            .tensor("b", &[1, 1, 1, 2], 1, vec![0x00, 0x3c, 0x00, 0xc0]) // F16 [1, -2]
            .tensor("k", &[256], 10, vec![7; 84]) // Q2_K: known, unsupported
    }

    fn check_sample(g: &Gguf, alignment: u64) {
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, alignment);
        assert_eq!(g.data_offset % alignment, 0);
        let keys: Vec<&str> = g.metadata.iter().map(|(k, _)| k.as_str()).collect();
        let mut want: Vec<&str> = all_values().iter().map(|(k, _)| *k).collect();
        if alignment != 32 {
            want.push(ALIGNMENT_KEY);
        }
        assert_eq!(keys, want, "metadata keeps file order");
        for (k, v) in all_values() {
            assert_eq!(g.get(k), Some(&v), "{k}");
        }
        let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "q", "b", "k"]);
        for t in &g.tensors {
            assert_eq!(t.file_offset % alignment, 0, "{}", t.name);
            assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
        }
        let a = g.tensor("a").unwrap();
        assert_eq!(a.dtype().unwrap(), DType::F32);
        assert_eq!(a.n_elements(), 3);
        let floats: Vec<f32> = g
            .tensor_data(a)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, [1.0, 2.0, 3.0]);
        let q = g.tensor("q").unwrap();
        assert_eq!(
            (q.dtype().unwrap(), q.dims.as_slice(), q.n_bytes),
            (DType::Q8_0, &[64u64, 2][..], 136)
        );
        assert_eq!(g.tensor_data(q)[5], 5);
        let b = g.tensor("b").unwrap();
        assert_eq!((b.dtype().unwrap(), b.n_elements()), (DType::F16, 2));
        assert_eq!(g.tensor_data(b), [0x00, 0x3c, 0x00, 0xc0]);
        let k = g.tensor("k").unwrap();
        match k.dtype() {
            Err(Error::UnsupportedType { tensor, dtype }) => {
                assert_eq!((tensor.as_str(), dtype.as_str()), ("k", "Q2_K"))
            }
            other => panic!("expected UnsupportedType, got {other:?}"),
        }
        assert_eq!(k.type_name(), "Q2_K");
        // The last tensor ends the file.
        assert_eq!(k.file_offset + k.n_bytes, g.bytes().len() as u64);
        assert!(g.tensor("missing").is_none());
    }

    #[test]
    fn round_trip_every_value_type() {
        let g = Gguf::from_bytes(sample(32).to_bytes()).unwrap();
        check_sample(&g, 32);
    }

    #[test]
    fn round_trip_other_alignments() {
        for align in [1, 2, 8, 64, 256, 4096] {
            let g = Gguf::from_bytes(sample(align).to_bytes()).unwrap();
            check_sample(&g, align);
            assert_eq!(
                g.get_u64(ALIGNMENT_KEY),
                if align == 32 { None } else { Some(align) }
            );
        }
    }

    #[test]
    fn getters_convert_and_refuse() {
        let g = Gguf::from_bytes(sample(32).to_bytes()).unwrap();
        assert_eq!(g.get_str("v.str"), Some("héllo ✓"));
        assert_eq!(g.get_str("v.u8"), None);
        assert_eq!(g.get_str("nope"), None);
        assert_eq!(g.get_u64("v.u8"), Some(200));
        assert_eq!(g.get_u64("v.u64"), Some(u64::MAX));
        assert_eq!(g.get_u64("v.i8"), None, "negative");
        assert_eq!(g.get_u64("v.f32"), None, "not an integer");
        assert_eq!(g.get_u64("v.true"), None);
        assert_eq!(g.get_f32("v.f32"), Some(1.5e-5));
        assert_eq!(g.get_f32("v.i16"), Some(-30000.0));
        assert_eq!(g.get_f32("v.str"), None);
        assert_eq!(g.get_bool("v.true"), Some(true));
        assert_eq!(g.get_bool("v.false"), Some(false));
        assert_eq!(g.get_bool("v.u8"), None);
        assert_eq!(g.get_str_array("v.arr_str"), Some(vec!["a", "Ġb"]));
        assert_eq!(g.get_str_array("v.arr_i32"), None);
        assert_eq!(g.get_str_array("v.empty_arr"), Some(vec![]));
        assert_eq!(g.get_i64_array("v.arr_i32"), Some(vec![-1, 2, 3]));
        assert_eq!(g.get_i64_array("v.arr_f32"), None);
        assert_eq!(g.get_f32_array("v.arr_f32"), Some(vec![0.5, -1.0]));
        assert_eq!(g.get_f32_array("v.arr_i32"), Some(vec![-1.0, 2.0, 3.0]));
        assert_eq!(g.get_f32_array("v.nested"), None);
        assert_eq!(g.get_f32_array("v.str"), None);
    }

    #[test]
    fn index_survives_edits_to_public_fields() {
        let mut g = Gguf::from_bytes(sample(32).to_bytes()).unwrap();
        g.metadata.remove(0);
        g.tensors.remove(0);
        assert_eq!(g.get("v.u8"), None);
        assert_eq!(g.get_u64("v.u16"), Some(60000));
        assert!(g.tensor("a").is_none());
        assert_eq!(g.tensor("q").map(|t| t.n_bytes), Some(136));
    }

    #[test]
    fn tensor_data_of_a_foreign_tensor_is_empty() {
        let g = Gguf::from_bytes(sample(32).to_bytes()).unwrap();
        let mut t = g.tensor("a").unwrap().clone();
        t.file_offset = u64::MAX - 2;
        assert!(g.tensor_data(&t).is_empty());
        t.file_offset = 0;
        t.n_bytes = u64::MAX;
        assert!(g.tensor_data(&t).is_empty());
    }

    #[test]
    fn header_only_parse() {
        let bytes = sample(32).to_bytes();
        let total = bytes.len() as u64;
        let full = Gguf::from_bytes(bytes.clone()).unwrap();
        let head = bytes[..full.data_offset as usize].to_vec();
        let g = Gguf::from_header_bytes(head.clone(), total).unwrap();
        assert_eq!(g.tensors.len(), 4);
        assert!(g.tensor_data(g.tensor("a").unwrap()).is_empty());
        assert!(Gguf::from_bytes(head.clone()).is_err());
        assert!(Gguf::from_header_bytes(head, total - 1).is_err());
    }

    #[test]
    fn version_2_and_no_tensors() {
        let g = Gguf::from_bytes(
            GgufWriter::new()
                .version(2)
                .kv("x", Value::U8(1))
                .to_bytes(),
        )
        .unwrap();
        assert_eq!(
            (g.version, g.tensors.len(), g.get_u64("x")),
            (2, 0, Some(1))
        );
        let g = Gguf::from_bytes(GgufWriter::new().to_bytes()).unwrap();
        assert!(g.metadata.is_empty() && g.tensors.is_empty());
    }

    #[test]
    fn open_reads_a_written_file() {
        let path =
            std::env::temp_dir().join(format!("flint-gguf-unit-{}.gguf", std::process::id()));
        sample(64).write(&path).unwrap();
        let g = Gguf::open(&path);
        let _ = std::fs::remove_file(&path);
        check_sample(&g.unwrap(), 64);
        match Gguf::open("/nonexistent/flint/model.gguf") {
            Err(Error::Io { path, .. }) => assert!(path.contains("model.gguf")),
            other => panic!("expected Io error, got {other:?}"),
        }
    }

    #[test]
    fn writer_rejects_mixed_arrays() {
        let w = GgufWriter::new().kv("m", Value::Array(vec![Value::U8(1), Value::I8(1)]));
        assert!(matches!(w.try_to_bytes(), Err(Error::InvalidArgument(m)) if m.contains("'m'")));
    }
}
