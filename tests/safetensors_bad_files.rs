//! Crafted bad safetensors files and sharded folders: every one must be an error naming the file,
//! the tensor and the problem, never a panic or a huge allocation.
//!
//! Layout per the safetensors spec (github.com/huggingface/safetensors, "Format"): u64 LE header
//! length N, N bytes of JSON header, then the byte buffer the `data_offsets` index.

use flint::format::safetensors::{SafeTensors, SafeTensorsSet, MAX_HEADER_LEN};
use flint::format::DType;
use flint::Error;
use std::path::PathBuf;

/// A file image from a header text and a data section.
fn image(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A small valid file: `a` F32 [2, 3], `b` BF16 [4], `e` F16 [0, 5] (empty), `__metadata__`.
fn valid() -> Vec<u8> {
    let a: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = [1.0f32, -2.0, 0.5, 3.0]
        .iter()
        .flat_map(|f| ((f.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"e":{"dtype":"F16","shape":[0,5],"data_offsets":[32,32]}}   "#;
    image(header, &[a, b].concat())
}

fn err_of(bytes: Vec<u8>) -> String {
    match SafeTensors::from_bytes("bad.safetensors", bytes) {
        Ok(st) => panic!("accepted a bad file: {st:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("bad.safetensors"),
                "error does not name the file: {msg}"
            );
            msg
        }
    }
}

/// The data section of [`valid`], for headers that reuse it.
fn data() -> Vec<u8> {
    let v = valid();
    let n = u64::from_le_bytes(v[..8].try_into().unwrap()) as usize;
    v[8 + n..].to_vec()
}

#[test]
fn valid_file_parses() {
    let st = SafeTensors::from_bytes("ok.safetensors", valid()).unwrap();
    assert_eq!(st.metadata, vec![("format".into(), "pt".into())]);
    assert_eq!(st.tensors.len(), 3);
    let a = st.tensor("a").unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.ggml_dims(), vec![3, 2]);
    assert_eq!(a.flint_dtype().unwrap(), DType::F32);
    let bytes = st.tensor_data(a);
    assert_eq!(bytes.len(), 24);
    assert_eq!(f32::from_le_bytes(bytes[20..24].try_into().unwrap()), 5.0);
    let b = st.tensor("b").unwrap();
    assert_eq!(b.flint_dtype().unwrap(), DType::BF16);
    assert_eq!(st.tensor_data(b).len(), 8);
    assert_eq!(st.tensor_data(st.tensor("e").unwrap()).len(), 0);
}

#[test]
fn truncation_at_every_byte() {
    let v = valid();
    for n in 0..v.len() {
        err_of(v[..n].to_vec());
    }
    // And one byte too many (bytes no tensor covers).
    let mut long = v.clone();
    long.push(0);
    assert!(err_of(long).contains("trailing"));
}

#[test]
fn hostile_header_length() {
    for n in [u64::MAX, MAX_HEADER_LEN + 1, 1 << 40] {
        let mut v = n.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        assert!(err_of(v).contains("header length"));
    }
    // Within the limit but past the end of the file.
    let mut v = 1000u64.to_le_bytes().to_vec();
    v.extend_from_slice(b"{}");
    assert!(err_of(v).contains("exceeds"));
}

#[test]
fn bad_json() {
    for h in ["{", "[1,2]", "{\"a\":}", "nope", "{} x", ""] {
        let msg = err_of(image(h, &[]));
        assert!(msg.contains("header"), "{h}: {msg}");
    }
    let mut v = image("{\"\u{e9}\":1}", &[]);
    v[10] = 0xff; // break the UTF-8 of the key
    assert!(err_of(v).contains("UTF-8"));
}

#[test]
fn bad_entries() {
    let d = data();
    let cases: &[(&str, &str)] = &[
        (r#"{"a":{"dtype":"F32","shape":[2,3]}}"#, "data_offsets"),
        (r#"{"a":{"shape":[2,3],"data_offsets":[0,24]}}"#, "dtype"),
        (r#"{"a":{"dtype":"F32","data_offsets":[0,24]}}"#, "shape"),
        (
            r#"{"a":{"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]}}"#,
            "shape",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,24]}}"#,
            "shape",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[6],"data_offsets":[0]}}"#,
            "data_offsets",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24,32]}}"#,
            "data_offsets",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24],"x":1}}"#,
            "unknown field",
        ),
        (r#"{"a":[1]}"#, "not an object"),
        (
            r#"{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#,
            "__metadata__",
        ),
        (
            r#"{"__metadata__":[],"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#,
            "__metadata__",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#,
            "dimensions",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,32]}}"#,
            "overflows",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,32]}}"#,
            "overflows",
        ),
    ];
    for (h, want) in cases {
        let msg = err_of(image(h, &d));
        assert!(msg.contains(want), "{h}: expected `{want}` in: {msg}");
        if !h.contains("__metadata__") {
            assert!(
                msg.contains("`a`"),
                "{h}: error does not name the tensor: {msg}"
            );
        }
    }
}

#[test]
fn bad_offsets_and_sizes() {
    let d = data(); // 32 bytes
    let cases: &[(&str, &str)] = &[
        // out of range
        (
            r#"{"a":{"dtype":"F32","shape":[8],"data_offsets":[4,36]}}"#,
            "outside",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}"#,
            "outside",
        ),
        // reversed
        (
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
            "out of order",
        ),
        // wrong size for the shape
        (
            r#"{"a":{"dtype":"F32","shape":[7],"data_offsets":[0,32]}}"#,
            "needs 28",
        ),
        (
            r#"{"a":{"dtype":"BF16","shape":[8],"data_offsets":[0,32]}}"#,
            "needs 16",
        ),
        // overlap
        (
            r#"{"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
            "overlaps",
        ),
        // a hole
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}"#,
            "gap",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
            "gap",
        ),
        // bytes left over
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            "trailing",
        ),
        // the same tensor twice
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
            "duplicate tensor `a`",
        ),
    ];
    for (h, want) in cases {
        let msg = err_of(image(h, &d));
        assert!(msg.contains(want), "{h}: expected `{want}` in: {msg}");
        assert!(
            msg.contains("`a`") || msg.contains("`b`"),
            "{h}: no tensor named: {msg}"
        );
    }
}

#[test]
fn dtypes() {
    let d = data();
    // An unknown dtype name is rejected at parse time, naming tensor and type.
    match SafeTensors::from_bytes(
        "t.safetensors",
        image(
            r#"{"a":{"dtype":"Q9","shape":[8],"data_offsets":[0,32]}}"#,
            &d,
        ),
    ) {
        Err(Error::UnsupportedType { tensor, dtype }) => {
            assert!(tensor.contains('a') && tensor.contains("t.safetensors"));
            assert!(dtype.contains("Q9"));
        }
        other => panic!("expected UnsupportedType, got {other:?}"),
    }
    // A known non-float type parses (its size is checked) but cannot be used.
    let st = SafeTensors::from_bytes(
        "t.safetensors",
        image(
            r#"{"a":{"dtype":"I64","shape":[4],"data_offsets":[0,32]}}"#,
            &d,
        ),
    )
    .unwrap();
    match st.tensor("a").unwrap().flint_dtype() {
        Err(Error::UnsupportedType { tensor, dtype }) => {
            assert_eq!(tensor, "a");
            assert!(dtype.contains("I64"));
        }
        other => panic!("expected UnsupportedType, got {other:?}"),
    }
}

#[test]
fn byte_flips_never_panic() {
    let v = valid();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut w = v.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % w.len() as u64) as usize;
            w[i] = (state >> 32) as u8;
        }
        let _ = SafeTensors::from_bytes("flip.safetensors", w);
    }
}

/// A scratch folder, removed first.
fn folder(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flint-st-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn shard(tensors: &[&str]) -> Vec<u8> {
    let mut h = String::from("{");
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        h += &format!(
            r#""{t}":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}"#,
            4 * i,
            4 * i + 4
        );
    }
    h.push('}');
    image(&h, &vec![0u8; 4 * tensors.len()])
}

#[test]
fn sharded_folders() {
    let d = folder("shards");
    std::fs::write(d.join("s1.safetensors"), shard(&["x", "y"])).unwrap();
    std::fs::write(d.join("s2.safetensors"), shard(&["z"])).unwrap();
    let index = |map: &str| {
        std::fs::write(
            d.join("model.safetensors.index.json"),
            format!(r#"{{"metadata":{{}},"weight_map":{{{map}}}}}"#),
        )
        .unwrap()
    };
    index(r#""x":"s1.safetensors","y":"s1.safetensors","z":"s2.safetensors""#);
    let set = SafeTensorsSet::open_dir(&d).unwrap();
    assert!(set.get("z").is_some() && set.get("x").is_some());
    assert_eq!(set.total_bytes(), 12);

    let bad = |map: &str, want: &str| {
        index(map);
        let msg = SafeTensorsSet::open_dir(&d).unwrap_err().to_string();
        assert!(msg.contains(want), "{map}: expected `{want}` in: {msg}");
    };
    bad(
        r#""x":"s2.safetensors","y":"s1.safetensors""#,
        "does not hold it",
    );
    bad(r#""x":"../s1.safetensors""#, "same folder");
    bad(r#""x":"/etc/passwd""#, "same folder");
    bad(r#""x":"missing.safetensors""#, "missing.safetensors");
    bad(r#""x":3"#, "not a file name");
    bad("", "empty");
    std::fs::write(d.join("model.safetensors.index.json"), "{").unwrap();
    assert!(SafeTensorsSet::open_dir(&d)
        .unwrap_err()
        .to_string()
        .contains("JSON"));
    // The same tensor in two shards.
    std::fs::write(d.join("s2.safetensors"), shard(&["x"])).unwrap();
    bad(r#""x":"s1.safetensors","y":"s2.safetensors""#, "in both");
    // A bad shard is reported with its path.
    std::fs::write(d.join("s2.safetensors"), b"short").unwrap();
    bad(
        r#""x":"s1.safetensors","z":"s2.safetensors""#,
        "s2.safetensors",
    );
    // No checkpoint at all.
    let empty = folder("empty");
    assert!(SafeTensorsSet::open_dir(&empty)
        .unwrap_err()
        .to_string()
        .contains("model.safetensors"));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&empty);
}
