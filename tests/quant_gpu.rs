//! The WGSL `dq8` fragments (shaders/quant/*.wgsl) against the CPU reference, through the embedding
//! lookup op (`ops::embed`): for every type, GPU embed == CPU dequantize. Runs on any adapter
//! (Mesa lavapipe in CI: shapes stay small). FLINT_SKIP_GPU_TESTS=1 skips the GPU part where no
//! adapter can be had; the naga validation of the fragments runs everywhere.

use flint::format::DType;
use flint::gpu::{Gpu, GpuOptions, Weight};
use flint::ops::embed::{embed_cpu, Embed};
use flint::ops::matmul::dq8_fragment;
use flint::ops::quant::{dequantize_vec, random_gguf_bytes};
use flint::Error;
use std::path::Path;

/// Every fragment, in front of the embed kernel and in front of a minimal kernel, is valid core WGSL
/// (no f16 or subgroup capabilities) and defines QK, QWORDS and dq8 consistently with the Rust side.
#[test]
fn fragments_are_valid_core_wgsl() {
    let probe = "@group(0) @binding(1) var<storage, read> w: array<u32>;\n\
                 @group(0) @binding(2) var<storage, read_write> o: array<f32>;\n\
                 @compute @workgroup_size(1) fn main() {\n\
                   let v = dq8(0u, QK / 8u - 1u);\n\
                   o[0] = v[0].x + v[1].w + f32(QWORDS);\n\
                 }\n";
    for t in DType::ALL {
        for (what, kernel) in [
            ("probe", probe),
            ("embed", include_str!("../shaders/embed.wgsl")),
        ] {
            let src = format!("{}\n{}", dq8_fragment(t), kernel);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{t} + {what}: {}", e.emit_to_string(&src)));
            // unpack2x16float is core WGSL; naga gates it behind a capability that every WebGPU
            // adapter has (wgpu's downlevel flag SHADER_F16_IN_F32). Nothing else is allowed.
            let caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{t} + {what}: {e:?}"));
        }
        // the constants agree with quant::gpu_block
        let (qk, words) = flint::ops::quant::gpu_block(t);
        let frag = dq8_fragment(t);
        assert!(frag.contains(&format!("const QK: u32 = {qk}u;")), "{t}: QK");
        assert!(
            frag.contains(&format!("const QWORDS: u32 = {words}u;")),
            "{t}: QWORDS"
        );
    }
}

fn gpu(opts: &GpuOptions) -> Option<Gpu> {
    match Gpu::new(opts) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("FLINT_SKIP_GPU_TESTS").is_ok() => {
            eprintln!("note: no GPU ({e}); skipping (FLINT_SKIP_GPU_TESTS is set)");
            None
        }
        Err(e) => panic!("{e} (set FLINT_SKIP_GPU_TESTS=1 to skip GPU tests)"),
    }
}

/// Runs the GPU embed of `ids` over the table and returns the floats it wrote.
fn gpu_embed(gpu: &Gpu, t: DType, raw: &[u8], rows: usize, cols: usize, ids: &[u32]) -> Vec<f32> {
    let w = Weight::upload(gpu, "table", t, raw, rows, cols).unwrap();
    let n = ids.len() * cols;
    // NaN-filled, so that an element the kernel forgot shows up
    let out = gpu.upload("out", bytemuck::cast_slice(&vec![f32::NAN; n]));
    let mut enc = gpu.encoder();
    Embed { w: &w }.encode(gpu, &mut enc, ids, &out).unwrap();
    gpu.submit(enc);
    gpu.read_f32(&out, 0, n).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want
        .iter()
        .fold(0.0f32, |a, v| a.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * scale,
            "{what}: element {i}: GPU {g}, CPU {w} (max |x| {scale})"
        );
    }
}

/// Shapes per type: one row; a few rows with a row length not a multiple of 8 (floats) or of several
/// blocks; ids that repeat, come in any order and include the first and last row.
fn shapes(t: DType) -> Vec<(usize, usize, Vec<u32>)> {
    let b = t.block_elems();
    if t.is_quantized() {
        vec![
            (1, b, vec![0]),
            (37, 3 * b.min(64).max(b), vec![36, 0, 5, 5, 17, 36, 1]),
        ]
    } else {
        vec![
            (1, 13, vec![0]),
            (37, 21, vec![36, 0, 5, 5, 17, 36, 1]),
            (5, 8, vec![4, 3]),
        ]
    }
}

#[test]
fn embed_matches_cpu_dequantize_for_every_type() {
    let Some(gpu) = gpu(&GpuOptions::default()) else {
        return;
    };
    eprintln!("adapter: {}", gpu.describe());
    for t in DType::ALL {
        for (case, (rows, cols, ids)) in shapes(t).into_iter().enumerate() {
            let raw = random_gguf_bytes(t, rows, cols, 100 + case as u64);
            let want = embed_cpu(t, &raw, rows, cols, &ids).unwrap();
            let got = gpu_embed(&gpu, t, &raw, rows, cols, &ids);
            assert_close(&format!("{t} {rows}x{cols} ids {ids:?}"), &got, &want);
        }
    }
}

/// The gguf-py fixtures (tests/fixtures/quant) through the GPU: the random blocks as a small table,
/// and the real SmolLM2 rows, compared with gguf-py's own values.
#[test]
fn embed_matches_gguf_py_fixtures() {
    let Some(gpu) = gpu(&GpuOptions::default()) else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let read = |f: &serde_json::Value| std::fs::read(dir.join(f.as_str().unwrap())).unwrap();
    let f32s = |b: Vec<u8>| -> Vec<f32> { bytemuck::pod_collect_to_vec(&b) };
    for t in DType::ALL.into_iter().filter(|t| t.is_quantized()) {
        let e = &index["types"][t.name()];
        let (raw, want) = (read(&e["raw_file"]), f32s(read(&e["f32_file"])));
        let (rows, cols) = (4, want.len() / 4);
        let got = gpu_embed(&gpu, t, &raw, rows, cols, &[3, 0, 2, 1]);
        let want: Vec<f32> = [3, 0, 2, 1]
            .iter()
            .flat_map(|&r| want[r * cols..(r + 1) * cols].to_vec())
            .collect();
        assert_close(&format!("fixture {t}"), &got, &want);
    }
    for (name, e) in index["real"].as_object().unwrap() {
        let t = DType::ALL
            .into_iter()
            .find(|t| t.name() == e["type_name"].as_str().unwrap())
            .unwrap();
        let (raw, want) = (read(&e["raw_file"]), f32s(read(&e["f32_file"])));
        let cols = e["row_elements"].as_u64().unwrap() as usize;
        let got = gpu_embed(&gpu, t, &raw, 2, cols, &[0, 1]);
        assert_close(name, &got, &want);
    }
}

/// A table split across several buffers (a tiny binding limit forces it): each id is found in its part.
#[test]
fn embed_over_a_split_table() {
    for t in [DType::F16, DType::Q8_0, DType::Q6_K] {
        let cols = t.block_elems().max(16);
        let row_bytes = flint::ops::quant::gpu_row_words(t, cols) as u64 * 4;
        let opts = GpuOptions {
            max_binding_override: Some(row_bytes * 3),
            ..Default::default()
        };
        let Some(gpu) = gpu(&opts) else { return };
        let rows = 10;
        let raw = random_gguf_bytes(t, rows, cols, 3);
        let w = Weight::upload(&gpu, "table", t, &raw, rows, cols).unwrap();
        assert_eq!(w.parts.len(), 4, "{t}: 10 rows in parts of 3");
        let ids = [9, 0, 3, 2, 8, 4, 6, 5, 7, 1, 9];
        let got = gpu_embed(&gpu, t, &raw, rows, cols, &ids);
        let table = dequantize_vec(t, &raw).unwrap();
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&r| table[r as usize * cols..(r as usize + 1) * cols].to_vec())
            .collect();
        assert_close(&format!("split {t}"), &got, &want);
    }
}

#[test]
fn embed_rejects_out_of_range_ids() {
    let Some(gpu) = gpu(&GpuOptions::default()) else {
        return;
    };
    let raw = random_gguf_bytes(DType::Q4_0, 4, 32, 1);
    let w = Weight::upload(&gpu, "table", DType::Q4_0, &raw, 4, 32).unwrap();
    let out = gpu.zeros("out", 3 * 32 * 4).unwrap();
    let mut enc = gpu.encoder();
    match (Embed { w: &w }).encode(&gpu, &mut enc, &[0, 4, 1], &out) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("token id 4"), "{msg}"),
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
    // too small an output buffer
    assert!(matches!(
        Embed { w: &w }.encode(&gpu, &mut enc, &[0, 1, 2, 3], &out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        embed_cpu(DType::Q4_0, &raw, 4, 32, &[7]),
        Err(Error::InvalidArgument(_))
    ));
}

/// F16 and BF16 fixtures cover the whole finite range (±0, subnormals, max finite): the GPU decodes
/// them bit for bit, except that an adapter may flush subnormals to zero.
#[test]
fn float_fixtures_decode_bitwise() {
    let Some(gpu) = gpu(&GpuOptions::default()) else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant");
    for t in [DType::F16, DType::BF16] {
        let raw = std::fs::read(dir.join(format!("{}.raw", t.name()))).unwrap();
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(
            &std::fs::read(dir.join(format!("{}.f32", t.name()))).unwrap(),
        );
        let n = want.len();
        let got = gpu_embed(&gpu, t, &raw, 1, n, &[0]);
        for i in 0..n {
            let (g, w) = (got[i], want[i]);
            let flushed = w.abs() < 2f32.powi(-14) && g == 0.0 && t == DType::F16
                || w.is_subnormal() && g == 0.0;
            assert!(
                g.to_bits() == w.to_bits() || flushed,
                "{t} element {i}: GPU {g:e}, gguf-py {w:e}"
            );
        }
    }
}
