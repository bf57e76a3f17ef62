//! Crafted bad GGUF files: every one must give `Error::Gguf` naming the problem, never a panic,
//! a huge allocation or a hang. Plus the real model when it is present.
//!
//! Layout per ggml/docs/gguf.md: magic, u32 version, u64 tensor_count, u64 kv_count, KVs,
//! tensor infos, padding to the alignment, data.

use flint::format::gguf::{value_type as vt, Gguf, Value};
use flint::format::gguf_write::GgufWriter;
use flint::Error;

/// A raw little-endian byte builder for files the writer will not make.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    /// Magic, version and counts.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    /// A KV with a u32 value.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(vt::U32).u32(v)
    }
    /// A tensor info.
    fn tensor(&mut self, name: &[u8], dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads with zeros to `align`, then appends `n` data bytes.
    fn data(&mut self, align: usize, n: usize) -> &mut Self {
        let len = self.0.len().next_multiple_of(align);
        self.0.resize(len + n, 0xAB);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// Parses `bytes`, expecting `Error::Gguf`; returns its message (the Display form).
fn gguf_err(bytes: Vec<u8>) -> String {
    match Gguf::from_bytes(bytes) {
        Ok(g) => panic!("expected an error, parsed {g:?}"),
        Err(e @ Error::Gguf(_)) => e.to_string(),
        Err(e) => panic!("expected Error::Gguf, got {e:?}"),
    }
}

#[track_caller]
fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            msg.contains(p),
            "error message {msg:?} should contain {p:?}"
        );
    }
}

/// A small valid file with every kind of section, its last tensor ending the file.
fn small_valid() -> Vec<u8> {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(1))
        .kv("f", Value::F32(0.5))
        .kv("b", Value::Bool(true))
        .kv(
            "toks",
            Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
        )
        .kv(
            "nest",
            Value::Array(vec![Value::Array(vec![Value::I16(-1)])]),
        )
        .tensor_f32("x", &[2], &[1.0, 2.0])
        .tensor("q", &[32], 8, vec![1; 34])
        .to_bytes()
}

#[test]
fn small_valid_file_parses() {
    let g = Gguf::from_bytes(small_valid()).unwrap();
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.get_str_array("toks"), Some(vec!["a", "bc"]));
}

#[test]
fn bad_magic() {
    let mut b = small_valid();
    b[0] = b'X';
    assert_contains(&gguf_err(b), &["bad magic", "GGUF"]);
    assert_contains(&gguf_err(b"GGML\x03\0\0\0".to_vec()), &["bad magic"]);
    assert_contains(&gguf_err(Vec::new()), &["magic", "truncated"]);
    assert_contains(&gguf_err(b"GG".to_vec()), &["magic", "truncated"]);
}

#[test]
fn bad_versions() {
    assert_contains(
        &gguf_err(Raw::header(1, 0, 0).bytes()),
        &["version 1", "not supported"],
    );
    assert_contains(
        &gguf_err(Raw::header(99, 0, 0).bytes()),
        &["unsupported version 99"],
    );
    assert_contains(
        &gguf_err(Raw::header(0, 0, 0).bytes()),
        &["unsupported version 0"],
    );
    assert_contains(
        &gguf_err(Raw::header(3u32.swap_bytes(), 0, 0).bytes()),
        &["big-endian"],
    );
    assert!(Gguf::from_bytes(Raw::header(2, 0, 0).bytes()).is_ok());
    assert!(Gguf::from_bytes(Raw::header(3, 0, 0).bytes()).is_ok());
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let full = small_valid();
    for n in 0..full.len() {
        let r = std::panic::catch_unwind(|| Gguf::from_bytes(full[..n].to_vec()));
        match r {
            Ok(Err(Error::Gguf(_))) => {}
            Ok(Err(e)) => panic!("truncated at {n}: wrong error kind {e:?}"),
            Ok(Ok(_)) => panic!("truncated at {n} of {} parsed as valid", full.len()),
            Err(_) => panic!("truncated at {n}: panicked"),
        }
    }
    // Cutting into the header names the offset and says so.
    let header_end = Gguf::from_bytes(full.clone()).unwrap().data_offset as usize - 16;
    assert_contains(
        &gguf_err(full[..header_end].to_vec()),
        &["tensor 'q'", "at byte", "remain", "truncated"],
    );
    // Cutting into the data names the tensor.
    assert_contains(
        &gguf_err(full[..full.len() - 1].to_vec()),
        &["tensor 'q'", "outside the file"],
    );
}

#[test]
fn single_byte_corruptions_never_panic() {
    // A cheap deterministic stand-in for the fuzzer: flip every byte to a few values.
    let full = small_valid();
    for i in 0..full.len() {
        for v in [
            0x00,
            0x01,
            0x7F,
            0x80,
            0xFF,
            full[i] ^ 0x01,
            full[i].wrapping_add(8),
        ] {
            let mut b = full.clone();
            b[i] = v;
            let r = std::panic::catch_unwind(|| {
                if let Ok(g) = Gguf::from_bytes(b) {
                    for t in &g.tensors {
                        assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
                    }
                }
            });
            assert!(r.is_ok(), "byte {i} set to {v:#x} panicked");
        }
    }
}

#[test]
fn hostile_kv_count() {
    for n in [u64::MAX, 1 << 40, 1 << 20] {
        let msg = gguf_err(Raw::header(3, 0, n).bytes());
        assert_contains(&msg, &["metadata KV count", &n.to_string(), "cannot fit"]);
    }
}

#[test]
fn hostile_tensor_count() {
    for n in [u64::MAX, 1 << 40, 1 << 20] {
        let mut r = Raw::header(3, n, 1);
        r.kv_u32("a", 1);
        let msg = gguf_err(r.bytes());
        assert_contains(&msg, &["tensor count", &n.to_string(), "cannot fit"]);
    }
}

#[test]
fn hostile_string_lengths() {
    for n in [u64::MAX, 1 << 40] {
        // Key length.
        let mut r = Raw::header(3, 0, 1);
        r.u64(n).u32(0).u32(0).u32(0);
        assert_contains(
            &gguf_err(r.bytes()),
            &["metadata key #0", "string length", &n.to_string()],
        );
        // String value length.
        let mut r = Raw::header(3, 0, 1);
        r.str(b"name").u32(vt::STRING).u64(n).u64(0);
        assert_contains(
            &gguf_err(r.bytes()),
            &["key 'name'", "string length", &n.to_string()],
        );
        // String inside an array.
        let mut r = Raw::header(3, 0, 1);
        r.str(b"toks")
            .u32(vt::ARRAY)
            .u32(vt::STRING)
            .u64(1)
            .u64(n)
            .u64(0);
        assert_contains(&gguf_err(r.bytes()), &["key 'toks'[0]", "string length"]);
        // Tensor name length.
        let mut r = Raw::header(3, 1, 0);
        r.u64(n).u64(0).u64(0).u64(0).u64(0);
        assert_contains(&gguf_err(r.bytes()), &["tensor #0 name", "string length"]);
    }
}

#[test]
fn hostile_array_lengths() {
    for n in [u64::MAX, 1 << 40, u64::MAX / 8 + 1] {
        for elem in [vt::U8, vt::U64, vt::STRING, vt::ARRAY] {
            let mut r = Raw::header(3, 0, 1);
            r.str(b"arr").u32(vt::ARRAY).u32(elem).u64(n).u64(0).u64(0);
            assert_contains(
                &gguf_err(r.bytes()),
                &["key 'arr'", "array length", &n.to_string()],
            );
        }
    }
    // Nested: the inner array's length is checked too.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr")
        .u32(vt::ARRAY)
        .u32(vt::ARRAY)
        .u64(1)
        .u32(vt::U32)
        .u64(1 << 40)
        .u64(0);
    assert_contains(&gguf_err(r.bytes()), &["key 'arr'[0]", "array length"]);
}

#[test]
fn arrays_nested_too_deep() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"deep").u32(vt::ARRAY);
    for _ in 0..10_000 {
        r.u32(vt::ARRAY).u64(1);
    }
    r.u32(vt::U8).u64(0);
    assert_contains(&gguf_err(r.bytes()), &["key 'deep'", "nested deeper"]);
    // Depth 8 is fine.
    let mut v = Value::U8(1);
    for _ in 0..8 {
        v = Value::Array(vec![v]);
    }
    let g = Gguf::from_bytes(GgufWriter::new().kv("ok", v.clone()).to_bytes()).unwrap();
    assert_eq!(g.get("ok"), Some(&v));
    let v9 = Value::Array(vec![v]);
    assert_contains(
        &gguf_err(GgufWriter::new().kv("no", v9).to_bytes()),
        &["'no", "nested deeper"],
    );
}

#[test]
fn non_utf8_strings() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"bad").u32(vt::STRING).str(b"ok\xff\xfe");
    assert_contains(&gguf_err(r.bytes()), &["key 'bad'", "UTF-8"]);
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k\xc3").u32(vt::U8).u8(0);
    assert_contains(
        &gguf_err(r.bytes()),
        &["metadata key #0", "UTF-8", "at byte 24"],
    );
    let mut r = Raw::header(3, 0, 1);
    r.str(b"toks")
        .u32(vt::ARRAY)
        .u32(vt::STRING)
        .u64(2)
        .str(b"a")
        .str(b"\x80");
    assert_contains(&gguf_err(r.bytes()), &["key 'toks'[1]", "UTF-8"]);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"w\xff", &[1], 0, 0).data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor #0 name", "UTF-8"]);
}

#[test]
fn unknown_value_types() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"weird").u32(13).u64(0);
    assert_contains(
        &gguf_err(r.bytes()),
        &["key 'weird'", "unknown value type 13"],
    );
    let mut r = Raw::header(3, 0, 1);
    r.str(b"weird").u32(u32::MAX).u64(0);
    assert_contains(&gguf_err(r.bytes()), &["key 'weird'", "unknown value type"]);
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(vt::ARRAY).u32(77).u64(1).u64(0);
    assert_contains(
        &gguf_err(r.bytes()),
        &["key 'arr'", "unknown value type 77"],
    );
}

#[test]
fn bad_bool() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"flag").u32(vt::BOOL).u8(2);
    assert_contains(&gguf_err(r.bytes()), &["key 'flag'", "bool"]);
}

#[test]
fn duplicate_keys() {
    let b = GgufWriter::new()
        .kv("a", Value::U8(1))
        .kv("b", Value::U8(1))
        .kv("a", Value::U8(2))
        .to_bytes();
    assert_contains(&gguf_err(b), &["duplicate metadata key 'a'"]);
}

#[test]
fn unknown_ggml_type() {
    for ty in [4, 5, 31, 1000, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor(b"blk.0.w", &[32], ty, 0).data(32, 64);
        assert_contains(
            &gguf_err(r.bytes()),
            &["tensor 'blk.0.w'", &format!("unknown ggml type id {ty}")],
        );
    }
}

#[test]
fn bad_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"big", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
        .data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'big'", "overflows"]);
    // Element count fits, byte size does not.
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"big", &[1 << 62, 2], 0, 0).data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'big'", "overflows"]);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"zero", &[4, 0], 0, 0).data(32, 16);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'zero'", "dimension 1 is 0"]);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"scalar", &[], 0, 0).data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'scalar'", "0 dimensions"]);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"many", &[1; 9], 0, 0).data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'many'", "9 dimensions"]);
    let mut r = Raw::header(3, 1, 0);
    r.str(b"hostile").u32(u32::MAX).u64(1).u64(1).u64(1).u64(1);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'hostile'", "dimensions"]);
    // Q4_0 rows must be whole blocks of 32.
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"q", &[48, 2], 2, 0).data(32, 64);
    assert_contains(
        &gguf_err(r.bytes()),
        &["tensor 'q'", "not a multiple", "Q4_0"],
    );
}

#[test]
fn tensor_past_the_end() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"blk.0.attn_q.weight", &[8], 0, 0).data(32, 31); // 1 byte short of 8 x F32
    let msg = gguf_err(r.bytes());
    assert_contains(
        &msg,
        &[
            "tensor 'blk.0.attn_q.weight'",
            "lies outside the file",
            "[96..128)",
            "(size 127)",
        ],
    );
    // Offset far past the end.
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"w", &[1], 0, 1 << 40).data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'w'", "outside the file"]);
    // Offset + size overflows u64.
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"w", &[1 << 20], 0, u64::MAX - 31).data(32, 4);
    assert_contains(
        &gguf_err(r.bytes()),
        &["tensor 'w'", "overflows", "outside the file"],
    );
    // The second of two tensors overlaps the end.
    let b = GgufWriter::new()
        .tensor("a", &[1], 0, vec![0; 4])
        .tensor("b", &[4], 0, vec![0; 12])
        .to_bytes();
    assert_contains(&gguf_err(b), &["tensor 'b'", "outside the file"]);
}

#[test]
fn misaligned_offset() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor(b"w", &[1], 0, 4).data(32, 64);
    assert_contains(
        &gguf_err(r.bytes()),
        &["tensor 'w'", "misaligned", "alignment 32"],
    );
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor(b"w", &[1], 0, 32)
        .data(64, 128);
    assert_contains(
        &gguf_err(r.bytes()),
        &["tensor 'w'", "misaligned", "alignment 64"],
    );
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, u32::MAX] {
        let mut r = Raw::header(3, 1, 1);
        r.kv_u32("general.alignment", a)
            .tensor(b"w", &[1], 0, 0)
            .data(32, 4);
        assert_contains(
            &gguf_err(r.bytes()),
            &["general.alignment", &format!("is {a}"), "power of two"],
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(vt::STRING).str(b"32");
    assert_contains(
        &gguf_err(r.bytes()),
        &["general.alignment", "unsigned integer"],
    );
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(vt::I32).u32(-32i32 as u32);
    assert_contains(
        &gguf_err(r.bytes()),
        &["general.alignment", "unsigned integer"],
    );
    // A huge power of two: the data section offset is outside the file, so is the tensor.
    let mut r = Raw::header(3, 1, 1);
    r.str(b"general.alignment")
        .u32(vt::U64)
        .u64(1 << 63)
        .tensor(b"w", &[1], 0, 0)
        .data(32, 4);
    assert_contains(&gguf_err(r.bytes()), &["tensor 'w'", "outside the file"]);
}

#[test]
fn duplicate_tensor_names() {
    let b = GgufWriter::new()
        .tensor("w", &[1], 0, vec![0; 4])
        .tensor("w", &[1], 0, vec![0; 4])
        .to_bytes();
    assert_contains(&gguf_err(b), &["duplicate tensor name 'w'"]);
}

#[test]
fn real_model_when_present() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    if !std::path::Path::new(path).exists() {
        println!("note: {path} is absent; skipping the real-model GGUF test");
        return;
    }
    let g = Gguf::open(path).unwrap();
    // Counts checked with the Python `gguf` package (GGUFReader).
    assert_eq!(g.version, 3);
    assert_eq!(g.metadata.len(), 33);
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.data_offset, 1_785_664);
    assert_eq!(g.get_str("general.architecture"), Some("llama"));
    assert_eq!(g.get_u64("llama.block_count"), Some(30));
    assert_eq!(g.get_u64("llama.embedding_length"), Some(576));
    assert_eq!(g.get_u64("llama.attention.head_count_kv"), Some(3));
    assert_eq!(g.get_f32("llama.rope.freq_base"), Some(100000.0));
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
    let toks = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(
        (toks.len(), toks[0], toks[1]),
        (49152, "<|endoftext|>", "<|im_start|>")
    );
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges").map(|m| m.len()),
        Some(48900)
    );
    assert_eq!(
        g.get_i64_array("tokenizer.ggml.token_type")
            .map(|t| t.len()),
        Some(49152)
    );
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dtype().unwrap(), flint::format::DType::Q8_0);
    assert_eq!(emb.dims, [576, 49152]);
    assert_eq!((emb.file_offset, emb.n_bytes), (1_785_664, 30_081_024));
    assert_eq!(g.tensor_data(emb).len(), 30_081_024);
    let mut counts = std::collections::BTreeMap::new();
    for t in &g.tensors {
        *counts.entry(t.type_name()).or_insert(0) += 1;
        assert!(t.dtype().is_ok(), "{}", t.name);
        assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
    }
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("F32", 61), ("Q4_1", 210), ("Q8_0", 1)]
    );
    let last = g.tensors.iter().map(|t| t.file_offset + t.n_bytes).max();
    assert_eq!(last, Some(std::fs::metadata(path).unwrap().len()));
}
