//! safetensors reader, single files and sharded folders.
//!
//! Spec: the safetensors README (github.com/huggingface/safetensors, "Format"). Layout of a file:
//!
//! ```text
//! u64 N (little-endian) | N bytes of UTF-8 JSON header | byte buffer (the tensor data)
//! ```
//!
//! The header is a JSON object: `"__metadata__"` (optional, a map of strings to strings) and, for
//! each tensor, `"name": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}`
//! where the offsets are relative to the start of the byte buffer. The spec also says: the header
//! starts with `{` and may be padded with spaces; duplicate keys are disallowed; the byte buffer is
//! entirely indexed and holds no holes (which forbids polyglot files); data is little-endian and
//! row-major (C order); empty tensors (a zero dimension) are allowed and hold no bytes.
//!
//! Everything is checked before use, as strictly as the GGUF reader: the header length against the
//! file and [`MAX_HEADER_LEN`], the JSON, each entry's fields, the dtype, `end - begin ==
//! product(shape) * dtype size` (checked arithmetic), offsets in order, inside the buffer, with no
//! overlap or gap, duplicate names. A bad file gives an error naming the file, the tensor and the
//! problem, never a panic or a huge allocation. The file is memory-mapped (native) and tensor data
//! are slices of the map, so a weight is read from disk once, while it is uploaded.
//!
//! Sharded checkpoints (`model.safetensors.index.json`, whose `weight_map` maps each tensor name to
//! its shard file) are opened by [`SafeTensorsSet::open_dir`].

use crate::error::{Error, Result};
use crate::format::storage::Storage;
use crate::format::DType;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Largest header accepted (the reference implementation's `MAX_HEADER_SIZE`, 100 MB).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Most dimensions accepted for one tensor.
pub const MAX_DIMS: usize = 8;
/// The name of the index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The name of the single file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// Element size in bytes of each safetensors dtype (spec: `Dtype`); `None` for an unknown name.
///
/// Sizes are known for every spec type so that the reader can validate a file holding tensors flint
/// cannot compute with (an `I64` buffer, say); using one is an [`Error::UnsupportedType`].
pub fn dtype_size(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// One tensor's entry from the header. `shape` is as stored: row-major, last dimension fastest
/// (the reverse of ggml's `dims` order).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// The safetensors dtype name (`"F32"`, `"BF16"`, ...).
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Offset of the data from the start of the file (validated to lie inside it).
    pub file_offset: u64,
    /// Byte size of the data (validated against shape and dtype).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The flint type (F32, F16, BF16), or `Error::UnsupportedType` naming this tensor.
    pub fn flint_dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            "F32" => Ok(DType::F32),
            "F16" => Ok(DType::F16),
            "BF16" => Ok(DType::BF16),
            other => Err(Error::UnsupportedType {
                tensor: self.name.clone(),
                dtype: format!("safetensors {other}"),
            }),
        }
    }

    /// The shape in ggml order (fastest-varying first), as [`crate::format::gguf::TensorInfo::dims`].
    pub fn ggml_dims(&self) -> Vec<u64> {
        self.shape.iter().rev().copied().collect()
    }
}

/// A parsed safetensors file: metadata, tensor directory and the (mapped) bytes.
pub struct SafeTensors {
    /// The file's path (or the name given to [`SafeTensors::from_bytes`]), for messages.
    pub path: String,
    /// `__metadata__`, in header order.
    pub metadata: Vec<(String, String)>,
    /// Tensors in header order.
    pub tensors: Vec<TensorInfo>,
    /// Offset of the byte buffer from the start of the file (`8 + N`).
    pub data_offset: u64,
    storage: Storage,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("bytes", &self.storage.as_slice().len())
            .finish()
    }
}

impl SafeTensors {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors> {
        let path = path.as_ref();
        let storage = Storage::open(path)?;
        Self::parse(path.display().to_string(), storage)
    }

    /// Parses a file image held in memory (tests, fuzzing); `name` is used in messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<SafeTensors> {
        Self::parse(name.to_string(), Storage::Owned(bytes))
    }

    fn parse(path: String, storage: Storage) -> Result<SafeTensors> {
        let (data_offset, metadata, tensors) = parse_header(&path, storage.as_slice())?;
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SafeTensors {
            path,
            metadata,
            tensors,
            data_offset,
            storage,
            index,
        })
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        match self.index.get(name).and_then(|&i| self.tensors.get(i)) {
            Some(t) if t.name == name => Some(t),
            _ => self.tensors.iter().find(|t| t.name == name),
        }
    }

    /// The bytes of a tensor (bounds were checked at parse time); empty if `t` does not lie inside
    /// this file (a `TensorInfo` from another file or edited by the caller).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = usize::try_from(t.file_offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(t.n_bytes).ok()?)?;
            Some(start..end)
        });
        range
            .and_then(|r| self.storage.as_slice().get(r))
            .unwrap_or(&[])
    }
}

/// A safetensors error naming the file.
fn st_err(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("{path}: safetensors: {msg}"))
}

/// The header's top-level entries in file order, duplicates kept (serde_json's maps drop them).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses and validates the header of a file image; returns the data offset, metadata and tensors.
#[allow(clippy::type_complexity)]
fn parse_header(path: &str, bytes: &[u8]) -> Result<(u64, Vec<(String, String)>, Vec<TensorInfo>)> {
    let file_len = bytes.len() as u64;
    let n_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            st_err(
                path,
                format!("file of {file_len} bytes is too short for the 8-byte header length"),
            )
        })?;
    let n = u64::from_le_bytes(n_bytes);
    if n > MAX_HEADER_LEN {
        return Err(st_err(
            path,
            format!("header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes"),
        ));
    }
    if n > file_len - 8 {
        return Err(st_err(
            path,
            format!(
                "header length {n} exceeds the {} bytes that follow it (file truncated?)",
                file_len - 8
            ),
        ));
    }
    let data_offset = 8 + n;
    // n <= file_len - 8 and the file is in memory, so these fit usize.
    let header = &bytes[8..data_offset as usize];
    let text = std::str::from_utf8(header)
        .map_err(|e| st_err(path, format!("header is not valid UTF-8 ({e})")))?;
    if !text.starts_with('{') {
        return Err(st_err(path, "header does not start with `{`"));
    }
    let Entries(entries) = serde_json::from_str(text)
        .map_err(|e| st_err(path, format!("header is not a valid JSON object ({e})")))?;

    let data_len = file_len - data_offset;
    let mut metadata = Vec::new();
    let mut seen_metadata = false;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(entries.len());
    let mut names: HashSet<String> = HashSet::with_capacity(entries.len());
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(entries.len());
    for (name, v) in entries {
        if name == "__metadata__" {
            if seen_metadata {
                return Err(st_err(path, "duplicate `__metadata__`"));
            }
            seen_metadata = true;
            let obj = v
                .as_object()
                .ok_or_else(|| st_err(path, "`__metadata__` is not an object"))?;
            for (k, val) in obj {
                let s = val.as_str().ok_or_else(|| {
                    st_err(
                        path,
                        format!("`__metadata__` value of `{k}` is not a string"),
                    )
                })?;
                metadata.push((k.clone(), s.to_string()));
            }
            continue;
        }
        if !names.insert(name.clone()) {
            return Err(st_err(path, format!("duplicate tensor `{name}`")));
        }
        let t = parse_entry(path, &name, &v)?;
        let (begin, end, size) = t;
        let dtype_name = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string();
        let shape = shape_of(&v);
        if begin > end {
            return Err(st_err(
                path,
                format!("tensor `{name}`: data_offsets [{begin}, {end}] are out of order"),
            ));
        }
        if end > data_len {
            return Err(st_err(
                path,
                format!(
                    "tensor `{name}`: data_offsets [{begin}, {end}] lie outside the {data_len}-byte data section (file truncated?)"
                ),
            ));
        }
        if end - begin != size {
            return Err(st_err(
                path,
                format!(
                    "tensor `{name}`: data_offsets [{begin}, {end}] hold {} bytes, but shape {shape:?} of {dtype_name} needs {size}",
                    end - begin
                ),
            ));
        }
        ranges.push((begin, end, tensors.len()));
        tensors.push(TensorInfo {
            name,
            dtype: dtype_name,
            shape,
            file_offset: data_offset + begin,
            n_bytes: size,
        });
    }
    // The buffer must be covered exactly: sorted by start, each tensor begins where the previous
    // one ended (empty tensors may share a position), and the last ends at the end of the file.
    ranges.sort_unstable();
    let mut at = 0u64;
    let mut prev: Option<usize> = None;
    for &(begin, end, i) in &ranges {
        if begin != at {
            let what = if begin < at {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            let other = prev
                .map(|p| format!("tensor `{}`", tensors[p].name))
                .unwrap_or_else(|| "the start of the data section".into());
            return Err(st_err(
                path,
                format!(
                    "tensor `{}`: data_offsets [{begin}, {end}] {what} {other} (which ends at {at})",
                    tensors[i].name
                ),
            ));
        }
        at = end;
        if end > begin {
            prev = Some(i);
        }
    }
    if at != data_len {
        let last = prev
            .map(|p| format!(", the last being `{}`", tensors[p].name))
            .unwrap_or_default();
        return Err(st_err(
            path,
            format!(
                "the tensors cover {at} bytes of the {data_len}-byte data section{last} (trailing bytes)"
            ),
        ));
    }
    Ok((data_offset, metadata, tensors))
}

/// The shape of an entry already validated by [`parse_entry`].
fn shape_of(v: &serde_json::Value) -> Vec<u64> {
    v.get("shape")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
        .unwrap_or_default()
}

/// Validates one tensor entry; returns `(begin, end, expected byte size)`.
fn parse_entry(path: &str, name: &str, v: &serde_json::Value) -> Result<(u64, u64, u64)> {
    let err = |msg: String| st_err(path, format!("tensor `{name}`: {msg}"));
    let obj = v
        .as_object()
        .ok_or_else(|| err("entry is not an object".into()))?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "dtype" | "shape" | "data_offsets") {
            return Err(err(format!("unknown field `{k}`")));
        }
    }
    let dtype = obj
        .get("dtype")
        .ok_or_else(|| err("missing `dtype`".into()))?
        .as_str()
        .ok_or_else(|| err("`dtype` is not a string".into()))?;
    let elem = dtype_size(dtype).ok_or_else(|| Error::UnsupportedType {
        tensor: format!("{name}` in `{path}"),
        dtype: format!("unknown safetensors dtype `{dtype}`"),
    })?;
    let shape = obj
        .get("shape")
        .ok_or_else(|| err("missing `shape`".into()))?
        .as_array()
        .ok_or_else(|| err("`shape` is not an array".into()))?;
    if shape.len() > MAX_DIMS {
        return Err(err(format!(
            "{} dimensions (at most {MAX_DIMS} accepted)",
            shape.len()
        )));
    }
    let mut count = 1u64;
    for d in shape {
        let d = d
            .as_u64()
            .ok_or_else(|| err(format!("shape entry {d} is not a non-negative integer")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| err("element count overflows".into()))?;
    }
    let size = count
        .checked_mul(elem)
        .ok_or_else(|| err("byte size overflows".into()))?;
    let offs = obj
        .get("data_offsets")
        .ok_or_else(|| err("missing `data_offsets`".into()))?
        .as_array()
        .ok_or_else(|| err("`data_offsets` is not an array".into()))?;
    let off = |i: usize| {
        offs.get(i)
            .and_then(|o| o.as_u64())
            .ok_or_else(|| err("`data_offsets` is not two non-negative integers".into()))
    };
    if offs.len() != 2 {
        return Err(err("`data_offsets` is not two non-negative integers".into()));
    }
    Ok((off(0)?, off(1)?, size))
}

/// The tensors of a checkpoint, from one file or several shards, looked up by name.
#[derive(Debug)]
pub struct SafeTensorsSet {
    pub files: Vec<SafeTensors>,
    index: HashMap<String, (usize, usize)>,
}

impl SafeTensorsSet {
    /// Opens the checkpoint in `dir`: the shards listed by `model.safetensors.index.json` when it
    /// exists, else `model.safetensors`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<SafeTensorsSet> {
        let dir = dir.as_ref();
        let index_path = dir.join(INDEX_FILE);
        if index_path.is_file() {
            return Self::open_index(dir, &index_path);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::from_files(vec![SafeTensors::open(&single)?]);
        }
        Err(Error::Model(format!(
            "{}: neither `{SINGLE_FILE}` nor `{INDEX_FILE}` is there",
            dir.display()
        )))
    }

    /// Opens every shard named by the index's `weight_map` and checks that each tensor listed is
    /// in the shard it is listed in.
    fn open_index(dir: &Path, index_path: &Path) -> Result<SafeTensorsSet> {
        let ip = index_path.display().to_string();
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Model(format!("{ip}: not valid JSON ({e})")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Model(format!("{ip}: missing object `weight_map`")))?;
        let mut shard_names: Vec<&str> = Vec::new();
        let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(map.len());
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::Model(format!(
                    "{ip}: weight_map entry of `{tensor}` is not a file name"
                ))
            })?;
            // Shards live next to the index: no directories, no way out of the folder.
            if file.is_empty()
                || file.contains(['/', '\\'])
                || file == ".."
                || file == "."
                || !file.ends_with(".safetensors")
            {
                return Err(Error::Model(format!(
                    "{ip}: weight_map entry of `{tensor}` names `{file}`, not a .safetensors file in the same folder"
                )));
            }
            if !shard_names.contains(&file) {
                shard_names.push(file);
            }
            wanted.push((tensor, file));
        }
        if shard_names.is_empty() {
            return Err(Error::Model(format!("{ip}: `weight_map` is empty")));
        }
        let files = shard_names
            .iter()
            .map(|f| SafeTensors::open(dir.join(f)))
            .collect::<Result<Vec<_>>>()?;
        let set = Self::from_files(files)?;
        for (tensor, file) in wanted {
            let ok = set
                .index
                .get(tensor)
                .map(|&(f, _)| PathBuf::from(&set.files[f].path).file_name() == Some(file.as_ref()))
                .unwrap_or(false);
            if !ok {
                return Err(Error::Model(format!(
                    "{ip}: tensor `{tensor}` is listed in `{file}` but that shard does not hold it"
                )));
            }
        }
        Ok(set)
    }

    /// Indexes the tensors of already opened files; a name in two files is an error.
    pub fn from_files(files: Vec<SafeTensors>) -> Result<SafeTensorsSet> {
        let mut index = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            for (ti, t) in f.tensors.iter().enumerate() {
                if let Some((other, _)) = index.insert(t.name.clone(), (fi, ti)) {
                    return Err(Error::Model(format!(
                        "tensor `{}` is in both {} and {}",
                        t.name, files[other].path, f.path
                    )));
                }
            }
        }
        Ok(SafeTensorsSet { files, index })
    }

    /// The file holding a tensor and its entry.
    pub fn get(&self, name: &str) -> Option<(&SafeTensors, &TensorInfo)> {
        let &(f, t) = self.index.get(name)?;
        let file = self.files.get(f)?;
        Some((file, file.tensors.get(t)?))
    }

    /// Total bytes of tensor data in all files.
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|f| &f.tensors)
            .map(|t| t.n_bytes)
            .sum()
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}
