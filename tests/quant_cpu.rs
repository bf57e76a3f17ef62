//! CPU dequantization against gguf-py's reference values (tests/fixtures/quant, made by
//! scripts/make-quant-fixtures.py), quantize -> dequantize round trips, and the GPU layout's sizes.

use flint::format::DType;
use flint::ops::quant::{
    dequantize, dequantize_gpu_rows, dequantize_vec, gpu_block, gpu_row_words, quantize,
    random_gguf_bytes, to_gpu_rows,
};
use flint::Error;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Bitwise equality (so -0.0 != 0.0 and every ulp counts).
fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ, first at {}: got {} want {}",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

fn dtype_named(name: &str) -> DType {
    DType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn dequantize_matches_gguf_py_on_random_blocks() {
    let dir = fixtures();
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json")).expect("tests/fixtures/quant/index.json"),
    )
    .expect("index.json parses");
    let types = index["types"].as_object().expect("index.json: types");
    let mut seen = Vec::new();
    for (name, entry) in types {
        let t = dtype_named(name);
        let raw = std::fs::read(dir.join(entry["raw_file"].as_str().unwrap())).unwrap();
        let want = read_f32(&dir.join(entry["f32_file"].as_str().unwrap()));
        let got = dequantize_vec(t, &raw).unwrap();
        assert_bitwise(name, &got, &want);
        seen.push(t);
    }
    for t in DType::ALL {
        assert!(seen.contains(&t) || t == DType::F32, "no fixture for {t}");
    }
}

#[test]
fn dequantize_matches_gguf_py_on_real_smollm2_rows() {
    let dir = fixtures();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let real = index["real"].as_object().expect("index.json: real");
    assert!(
        !real.is_empty(),
        "no real-tensor fixtures (make-quant-fixtures.py ran without the model)"
    );
    for (tname, entry) in real {
        let t = dtype_named(entry["type_name"].as_str().unwrap());
        let raw = std::fs::read(dir.join(entry["raw_file"].as_str().unwrap())).unwrap();
        let want = read_f32(&dir.join(entry["f32_file"].as_str().unwrap()));
        let got = dequantize_vec(t, &raw).unwrap();
        assert_bitwise(tname, &got, &want);
        // the GPU layout of the same rows decodes to the same values
        let rows = entry["rows"].as_u64().unwrap() as usize;
        let cols = entry["row_elements"].as_u64().unwrap() as usize;
        let words = to_gpu_rows(t, &raw, rows, cols).unwrap();
        assert_bitwise(
            &format!("{tname} via GPU layout"),
            &dequantize_gpu_rows(t, &words, rows, cols).unwrap(),
            &want,
        );
    }
}

/// Normal-ish test data with the features quantizers trip on: outliers, all-zero and constant blocks,
/// all-negative and all-positive blocks.
fn test_data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..n)
        .map(|_| (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * 0.5)
        .collect();
    for i in (0..n).step_by(97) {
        x[i] *= 20.0; // outliers
    }
    if n >= 1024 {
        x[0..256].fill(0.0);
        x[256..512].fill(0.375);
        x[512..768].iter_mut().for_each(|v| *v = -v.abs() - 0.5);
        x[768..1024].iter_mut().for_each(|v| *v = v.abs() + 0.5);
    }
    x
}

#[test]
fn quantize_dequantize_round_trip_error_is_bounded() {
    let x = test_data(4096, 1);
    for t in DType::ALL {
        let raw = quantize(t, &x).unwrap();
        assert_eq!(
            raw.len() as u64,
            t.bytes_for(x.len() as u64).unwrap(),
            "{t}: size"
        );
        let y = dequantize_vec(t, &raw).unwrap();
        // per block (or per 256 for float types): allowed error as a fraction of the block's range
        let qk = t.block_elems().max(256);
        for (b, (xs, ys)) in x.chunks(qk).zip(y.chunks(qk)).enumerate() {
            let amax = xs.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let range = xs.iter().fold(f32::MIN, |a, &v| a.max(v))
                - xs.iter().fold(f32::MAX, |a, &v| a.min(v));
            let bound = match t {
                DType::F32 => 0.0,
                DType::F16 => amax / 1024.0,
                DType::BF16 => amax / 128.0,
                DType::Q4_0 => amax / 8.0, // the far end clamps at +7 (step amax/8)
                DType::Q5_0 => amax / 16.0, // likewise at +15
                DType::Q4_1 => range / 15.0 * 0.5,
                DType::Q5_1 => range / 31.0 * 0.5,
                DType::Q8_0 => amax / 127.0 * 0.5,
                DType::Q4_K => range / 15.0,
                DType::Q5_K => range / 31.0,
                DType::Q6_K => amax / 31.0,
            } * 1.01
                + amax * 1e-3 * (t != DType::F32) as u8 as f32;
            for (i, (a, b2)) in xs.iter().zip(ys).enumerate() {
                assert!(
                    (a - b2).abs() <= bound,
                    "{t} block {b} element {i}: {a} -> {b2} (bound {bound})"
                );
            }
        }
        // zero blocks stay exactly zero
        assert!(y[0..256].iter().all(|&v| v == 0.0), "{t}: zeros");
    }
}

#[test]
fn q8_0_quantizer_matches_ggml_reference_rounding() {
    // quantize_row_q8_0_ref: d = amax/127, q = roundf(x * (1/d)) (halves away from zero)
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.49;
    let raw = quantize(DType::Q8_0, &x).unwrap();
    assert_eq!(
        &raw[0..2],
        &half::f16::from_f32(1.0).to_bits().to_le_bytes()
    );
    assert_eq!(
        raw[2..6].iter().map(|&b| b as i8).collect::<Vec<_>>(),
        [127, 3, -3, 0]
    );
}

#[test]
fn gpu_layout_sizes_and_padding() {
    let expect = [
        (DType::F32, 8, 8),
        (DType::F16, 8, 4),
        (DType::BF16, 8, 4),
        (DType::Q4_0, 32, 5),
        (DType::Q4_1, 32, 5),
        (DType::Q5_0, 32, 6),
        (DType::Q5_1, 32, 6),
        (DType::Q8_0, 32, 9),
        (DType::Q4_K, 256, 36),
        (DType::Q5_K, 256, 44),
        (DType::Q6_K, 256, 56),
    ];
    for (t, qk, words) in expect {
        assert_eq!(gpu_block(t), (qk, words), "{t}");
        if t.is_quantized() {
            // a GPU block is the GGUF block rounded up to whole words (Q6_K: to whole vectors)
            let want = match t {
                DType::Q6_K => t.block_bytes().div_ceil(16) * 4,
                _ => t.block_bytes().div_ceil(4),
            };
            assert_eq!(words, want, "{t}: words");
        }
        let cols = 2 * t.block_elems().max(8);
        // rows are padded to whole 16-byte vectors
        assert_eq!(
            gpu_row_words(t, cols),
            (cols / qk * words).next_multiple_of(4),
            "{t}"
        );
        assert_eq!(gpu_row_words(t, cols) % 4, 0, "{t}");
        let raw = random_gguf_bytes(t, 3, cols, 5);
        assert_eq!(
            to_gpu_rows(t, &raw, 3, cols).unwrap().len(),
            3 * gpu_row_words(t, cols),
            "{t}"
        );
    }
    // float rows are padded to 8 elements with zeros
    let x: Vec<f32> = (1..=26).map(|i| i as f32).collect(); // 2 rows of 13
    for t in [DType::F32, DType::F16, DType::BF16] {
        let raw = quantize(t, &x).unwrap();
        let w = to_gpu_rows(t, &raw, 2, 13).unwrap();
        let rw = gpu_row_words(t, 13);
        assert_eq!(rw, (2 * gpu_block(t).1).next_multiple_of(4), "{t}");
        assert_eq!(w.len(), 2 * rw);
        let per_word = if t == DType::F32 { 1 } else { 2 };
        for r in 0..2 {
            let used = 13usize.div_ceil(per_word);
            assert!(
                w[r * rw + used..(r + 1) * rw].iter().all(|&v| v == 0),
                "{t} row {r} padding"
            );
            if t == DType::F16 {
                assert_eq!(w[r * rw + 6] >> 16, 0, "F16 odd tail");
            }
        }
        assert_eq!(dequantize_gpu_rows(t, &w, 2, 13).unwrap(), x, "{t}");
    }
}

#[test]
fn sizes_are_checked() {
    let bad = |r: flint::Result<_>| matches!(r, Err(Error::InvalidArgument(_)));
    // dequantize: partial block, wrong output length
    let raw = random_gguf_bytes(DType::Q4_0, 1, 64, 1);
    assert!(bad(dequantize(DType::Q4_0, &raw[..35], &mut [0.0; 32])));
    assert!(bad(dequantize(DType::Q4_0, &raw, &mut [0.0; 63])));
    assert!(bad(dequantize(DType::F32, &[0u8; 6], &mut [0.0; 1])));
    dequantize(DType::Q4_0, &raw, &mut [0.0; 64]).unwrap();
    // to_gpu_rows: K-quants need whole 256-element blocks, 32-blocks for the others; sizes must match
    assert!(bad(to_gpu_rows(DType::Q4_K, &[0u8; 144], 8, 32).map(|_| ())));
    assert!(bad(to_gpu_rows(DType::Q8_0, &[0u8; 34], 1, 16).map(|_| ())));
    assert!(bad(to_gpu_rows(DType::Q8_0, &[0u8; 34], 2, 32).map(|_| ())));
    assert!(bad(to_gpu_rows(DType::F16, &[0u8; 6], 1, 4).map(|_| ())));
    // quantize: whole blocks only
    assert!(bad(quantize(DType::Q6_K, &[0.0; 128]).map(|_| ())));
    assert!(bad(
        dequantize_gpu_rows(DType::Q4_0, &[0u32; 4], 1, 32).map(|_| ())
    ));
}

#[test]
fn random_blocks_are_valid_and_deterministic() {
    for t in DType::ALL {
        let cols = t.block_elems().max(8) * 2;
        let a = random_gguf_bytes(t, 4, cols, 9);
        assert_eq!(a, random_gguf_bytes(t, 4, cols, 9), "{t}");
        assert_ne!(a, random_gguf_bytes(t, 4, cols, 10), "{t}");
        assert_eq!(a.len() as u64, t.bytes_for((4 * cols) as u64).unwrap());
        let y = dequantize_vec(t, &a).unwrap();
        assert!(y.iter().all(|v| v.is_finite() && v.abs() < 20.0), "{t}");
        assert!(y.iter().any(|&v| v != 0.0), "{t}");
    }
}
